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
    /*
     * Optional extra check after parsing: return NULL if fine, else the rule
     * broken (a static string). `value` points to the parsed value in the
     * option's own representation: const char * text for CM_OPT_STR and
     * CM_OPT_KV (KV as "k=v\n" lines), const uint64_t * for UINT, MILLI,
     * SIZE and MS, const bool * for BOOL, const int * for ENUM.
     */
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
    char **args;           /* owned array; the strings are borrowed from argv */
    /* Per option: the env variable or flag that set it ("FLASHGATE_LISTEN",
     * "--listen"); empty for defaults and the file. Owned. */
    char (*src_detail)[96];
} cm_conf_t;

/*
 * Flags: --KEY-WITH-DASHES VALUE, --KEY=VALUE, the option's alias the same
 * way, --set KEY=VALUE, --config FILE (also -c FILE), --help (-h), --version
 * (-V), --check-config, and "--" to end options. A CM_OPT_BOOL flag without
 * "=VALUE" means true, unless the next argument is a boolean word
 * (true/false/yes/no/on/off/1/0), which is then its value. A CM_OPT_KV flag is repeatable and appends one "k=v".
 * An option with an alias also reads <env_prefix><ALIAS> (upper case, '-' ->
 * '_'); when both that and the key's own variable are set, the key's own
 * variable wins. Unknown <env_prefix>* variables are ignored (the process
 * environment is shared with other tools), unknown flags and file keys are not.
 *
 * Loads defaults, then `--config FILE` (found among argv, or from
 * <env_prefix>CONFIG), then the environment, then argv. --help, --version and
 * --check-config set the want_* flags. Unknown flags, unknown file keys,
 * malformed values and values out of range are all errors.
 *
 * On errors returns CM_EINVAL and writes one line per problem into errbuf
 * ("config: KEY=VALUE (SOURCE): RULE\n..."); otherwise 0.
 * The want_* flags and args are filled in even when errors are returned.
 * Single-threaded init. `conf` must be released with cm_conf_free, also after
 * an error.
 */
int cm_conf_load(cm_conf_t *conf, const cm_opt_t *opts, void *base, const char *prog,
                 const char *env_prefix, int argc, char **argv, char *errbuf, size_t errlen);
/*
 * Refuses arguments left over after the flags beyond the first `max_args`
 * (0 for a binary without sub-commands): CM_EINVAL with one line per extra
 * argument in errbuf (appended after what it holds), the caller exits 2.
 * Every binary on this engine calls it: a stray word ("--flag value" for a
 * flag that takes none) must never be silently ignored. Thread-safe on a
 * loaded conf.
 */
int cm_conf_check_args(const cm_conf_t *conf, int max_args, char *errbuf, size_t errlen);
/* Frees what cm_conf_load allocated; safe on a zeroed or already freed conf. */
void cm_conf_free(cm_conf_t *conf);

/*
 * Sets one option from text at run time (admin API) or in tests, with the
 * same parsing and per-key validation as cm_conf_load (cross-key rules are
 * the binary's: see gw_config_check). With src CM_SRC_RUNTIME a key without
 * CM_OPT_RUNTIME is refused. Returns 0, CM_ENOTFOUND for an unknown key, or
 * CM_EINVAL; on error errbuf holds one "config: KEY=VALUE (SOURCE): RULE"
 * line (no newline) and nothing changes. A KV value replaces the old one.
 * Not thread-safe: the caller serialises writers, and readers of RUNTIME
 * fields read them through their own atomics.
 */
int cm_conf_set(cm_conf_t *conf, const char *key, const char *value, cm_src_t src, char *errbuf,
                size_t errlen);

/* Looks an option up by key; NULL if unknown (borrowed from the table). Thread-safe. */
const cm_opt_t *cm_conf_find(const cm_opt_t *opts, const char *key);

/*
 * Formats the current value of one option as text that cm_conf_set accepts
 * back (secrets as "<set>" or ""; KV as "k=v,k=v" with values of keys that
 * contain "password" or "secret" as "<set>"). Returns the length written
 * (truncated to len - 1). Thread-safety as for reading the struct.
 */
size_t cm_conf_format(const cm_conf_t *conf, const cm_opt_t *opt, char *buf, size_t len);

/* Where the current value of `opt` came from, as text: "default", "file PATH",
 * "env FLASHGATE_X", "flag --x", "runtime". Returns the length written. */
size_t cm_conf_describe_source(const cm_conf_t *conf, const cm_opt_t *opt, char *buf, size_t len);

/* The source of key's current value, or CM_ENOTFOUND for an unknown key. */
int cm_conf_source(const cm_conf_t *conf, const char *key);

/*
 * Appends "config: KEY=VALUE (SOURCE): RULE\n" for the current value of `key`
 * to the NUL-terminated text in errbuf (cross-key checks use it). Secrets are
 * shown as <set>. Never overflows errbuf.
 */
void cm_conf_report(const cm_conf_t *conf, const char *key, const char *rule, char *errbuf,
                    size_t errlen);

/* The environment variable of `opt`: <prefix><KEY> or, with `alias`, <prefix><ALIAS>
 * (0 and "" when the option has no alias). Returns the length. */
size_t cm_conf_env_name(const cm_opt_t *opt, const char *env_prefix, bool alias, char *buf,
                        size_t len);
/* The flag of `opt` without "--": the key with '.'/'_' as '-', or its alias. */
size_t cm_conf_flag_name(const cm_opt_t *opt, bool alias, char *buf, size_t len);

/*
 * Prints `usage`, the general flags, then one line per option:
 * "--flag METAVAR  help [key; default X; env ALIAS_VAR, KEY_VAR; runtime]".
 * Secrets show no default. Writes to fd with write(2); single-threaded.
 */
void cm_conf_print_help(const cm_conf_t *conf, const char *usage, int fd);

/*
 * The two informational flags every binary shares: --help prints `usage` and
 * the options (cm_conf_print_help), --version prints "PROG VERSION". Returns
 * true when one of them was asked for and answered on stdout: the caller frees
 * the conf and exits 0. --check-config stays with each binary, which must
 * validate before it says "ok".
 */
bool cm_conf_answer_info(const cm_conf_t *conf, const char *prog, const char *usage);

/*
 * Prints the effective configuration (--check-config), one
 * "key = value  # source" line per option, e.g.
 * "server.threads = 4  # flag --threads"; secrets print as <set>, empty
 * values as "". Writes to fd; single-threaded.
 */
void cm_conf_print_effective(const cm_conf_t *conf, int fd);

/*
 * Writes a sample config: JSON, every key at its default, each preceded by a
 * "// help" comment line. The loader accepts whole-line comments starting with
 * "//" or "#" in config files, so the sample is loadable as it is. Keys are
 * nested by their first component; each comment names the flag, the env
 * variable, the range and whether the key can change at run time.
 * deploy/flashgate.conf.example is this output for gw_config_opts and
 * deploy/flashgate-settle.conf.example for st_config_opts; unit.gw_config and
 * unit.st_config fail when theirs is out of date (FLASHGATE_REGEN_SAMPLE=1
 * rewrites it: tests/unit/conf_fixture.h). Writes to fd; single-threaded.
 */
void cm_conf_print_sample(const cm_conf_t *conf, int fd);

/* "default", "file", "env", "flag", "runtime". Thread-safe. */
const char *cm_src_name(cm_src_t src);

#endif
