/*
 * Table-driven configuration (redis config.c, nginx ngx_command_t).
 *
 * One option table per binary drives the defaults, the JSON config file, the
 * environment, the command-line flags, validation, --help, --check-config and
 * the sample config. Sources apply in this order, later wins:
 *
 *   defaults < JSON file (--config FILE) < environment < command-line flags
 *
 * Key "limits.user_rps" has the environment variable FLASHGATE_LIMITS_USER_RPS
 * (prefix + upper-case, '.' and '-' become '_') and the flag --limits-user-rps
 * ('.' and '_' become '-'); an option may also declare a shorter flag alias
 * (e.g. "--listen" for "server.listen"). In the JSON file the key may be
 * written flat ("limits.user_rps": 5) or nested ({"limits": {"user_rps": 5}}).
 *
 * Every problem found is reported, all at once, each with key, value, source
 * and the rule it broke:
 *   config: limits.user_rps=-1 (env FLASHGATE_LIMITS_USER_RPS): must be a number >= 0
 */
#ifndef CM_CONFIG_H
#define CM_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    CM_OPT_STR,      /* char[size] at offset; .size is the buffer size (value < size) */
    CM_OPT_UINT,     /* uint64_t; "123"; .min/.max */
    CM_OPT_BOOL,     /* bool; true/false/1/0/yes/no/on/off */
    CM_OPT_ENUM,     /* int index into .choices (NULL-terminated) */
    CM_OPT_MILLI,    /* uint64_t in thousandths: "2.5" -> 2500; .min/.max in thousandths */
    CM_OPT_SIZE,     /* uint64_t bytes: "4096", "4k", "64m", "1g" (powers of 1024) */
    CM_OPT_MS,       /* uint64_t milliseconds: "250", "250ms", "2s", "1m" */
    CM_OPT_KV,       /* char[size]: "k=v" pairs, one per line; repeatable flag appends,
                        JSON file takes an object {"k":"v",...}; env takes "k=v,k=v" */
} cm_opt_type_t;

/* Where a value came from; recorded per option for errors and --check-config. */
typedef enum { CM_SRC_DEFAULT = 0, CM_SRC_FILE, CM_SRC_ENV, CM_SRC_FLAG, CM_SRC_RUNTIME } cm_src_t;

#define CM_OPT_RUNTIME 0x1u /* may be changed at run time through the admin API */
#define CM_OPT_SECRET 0x2u  /* never printed (tokens, passwords) */

typedef struct cm_opt {
    const char *key;   /* "limits.user_rps" */
    cm_opt_type_t type;
    size_t offset;     /* offsetof() into the binary's config struct */
    size_t size;       /* CM_OPT_STR / CM_OPT_KV buffer size */
    const char *def;   /* default, as text in the option's own syntax ("" for empty) */
    uint64_t min, max; /* CM_OPT_UINT, CM_OPT_MILLI, CM_OPT_SIZE, CM_OPT_MS bounds (max 0 = none) */
    const char *const *choices; /* CM_OPT_ENUM */
    unsigned flags;
    const char *alias; /* optional short flag, e.g. "listen" for --listen */
    const char *metavar; /* "HOST:PORT" in --help */
    const char *help;  /* one line for --help and the sample config */
    /* Optional extra check after parsing: return NULL if fine, else the rule broken. */
    const char *(*validate)(const void *value);
} cm_opt_t;

/* A parsed configuration: the caller's struct plus the source of each value. */
typedef struct cm_conf {
    const cm_opt_t *opts;  /* terminated by an entry with key == NULL */
    void *base;            /* the binary's config struct */
    cm_src_t *src;         /* one per option, owned */
    const char *env_prefix;/* "FLASHGATE_" */
    const char *prog;      /* "flashgate" */
    char config_file[512]; /* the --config file used, if any */
    bool want_help, want_version, want_check;
    /* Non-option arguments left over (e.g. a sub-command), in order. */
    int nargs;
    char **args;
} cm_conf_t;

/*
 * Loads defaults, then `--config FILE` (found among argv, or from
 * <env_prefix>CONFIG), then the environment, then argv. --help, --version and
 * --check-config set the want_* flags. Unknown flags, unknown file keys,
 * malformed values and values out of range are all errors.
 *
 * On errors returns CM_EINVAL and writes one line per problem into errbuf
 * ("config: KEY=VALUE (SOURCE): RULE\n..."); otherwise 0.
 * Single-threaded init. `conf` must be released with cm_conf_free.
 */
int cm_conf_load(cm_conf_t *conf, const cm_opt_t *opts, void *base, const char *prog,
                 const char *env_prefix, int argc, char **argv, char *errbuf, size_t errlen);
void cm_conf_free(cm_conf_t *conf);

/*
 * Sets one option from text at run time (admin API) or in tests. Returns 0,
 * or CM_EINVAL with the rule broken in errbuf; on error nothing changes.
 */
int cm_conf_set(cm_conf_t *conf, const char *key, const char *value, cm_src_t src, char *errbuf,
                size_t errlen);

/* Looks an option up by key; NULL if unknown. */
const cm_opt_t *cm_conf_find(const cm_opt_t *opts, const char *key);

/* Formats the current value of one option as text (secrets as "<set>"/""). */
size_t cm_conf_format(const cm_conf_t *conf, const cm_opt_t *opt, char *buf, size_t len);

/* Prints "--flag METAVAR  help (default: X; env: VAR)" for every option. */
void cm_conf_print_help(const cm_conf_t *conf, const char *usage, int fd);

/* Prints the effective configuration, one "key = value  # source" line per option. */
void cm_conf_print_effective(const cm_conf_t *conf, int fd);

/*
 * Writes a sample config: JSON, every key at its default, each preceded by a
 * "// help" comment line. The loader accepts whole-line comments starting with
 * "//" or "#" in config files, so the sample is loadable as it is.
 */
void cm_conf_print_sample(const cm_conf_t *conf, int fd);

const char *cm_src_name(cm_src_t src);

#endif
