/*
 * flashgate-settle's configuration: the struct main_settle.c fills and its
 * option table (st_config.c), in the library so that the unit tests parse it
 * exactly as the binary does (tests/unit/settle/test_st_config.c).
 */
#ifndef ST_CONFIG_H
#define ST_CONFIG_H

#include "common/cm_config.h"

#include <stdint.h>

typedef struct st_config {
    char kafka_brokers[1024];
    char kafka_topic[256];
    char outcomes_topic[256];
    char kafka_properties[4096];
    char group[256];
    char data_dir[1024];
    char db[1024];
    char sql[4096];
    uint64_t max_rate_milli;
    uint64_t batch;
    uint64_t batch_wait_ms;
    uint64_t stop_grace_ms; /* settle.stop_grace; 0 = none (ST_STOP_GRACE_NONE for the loop) */
    char metrics_listen[128];
    int log_level;
} st_config_t;

/* The option table; terminated by {NULL}. */
extern const cm_opt_t st_config_opts[];

/*
 * Zeroes cfg and parses it from defaults, file, environment and argv
 * (cm_conf_load with prefix FLASHGATE_). Returns 0, or CM_EINVAL with every
 * problem in errbuf, one "config: KEY=VALUE (SOURCE): RULE" line each. The
 * caller answers --help/--version/--check-config, then cm_conf_check_args.
 * `conf` is released with cm_conf_free, also after an error. Single-threaded.
 */
int st_config_load(st_config_t *cfg, cm_conf_t *conf, int argc, char **argv, char *errbuf,
                   size_t errlen);

#endif
