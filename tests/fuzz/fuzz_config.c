/*
 * Fuzz target: the config file (gw_config_load with --config FILE: the file
 * parser, every option's value parser and the cross-key rules).
 * Promises: never crashes; an error names a key or the file in errbuf; a
 * loaded config passes its own cross-key check.
 */
#include "common/cm_err.h"
#include "gateway/base/gw_config.h"
#include "tests/fuzz/fuzz.h"

#include <string.h>
#include <unistd.h>

static char path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    snprintf(path, sizeof(path), "/tmp/fg-fuzz-config-%d.conf", (int)getpid());
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 16384)
        return 0;
    FILE *f = fopen(path, "wb");
    FZ_CHECK(f);
    fwrite(data, 1, size, f);
    fclose(f);
    gw_config_t *cfg = calloc(1, sizeof(*cfg));
    cm_conf_t conf;
    memset(&conf, 0, sizeof(conf));
    char *argv[] = {"flashgate", "--config", path, NULL};
    char err[8192];
    err[0] = '\0';
    int rc = gw_config_load(cfg, &conf, 3, argv, err, sizeof(err));
    if (rc == 0) {
        char err2[4096];
        err2[0] = '\0';
        FZ_CHECK(gw_config_check(cfg, &conf, err2, sizeof(err2)) == 0);
    } else {
        FZ_CHECK(rc == CM_EINVAL || rc == CM_EIO || rc == CM_ENOTFOUND);
        FZ_CHECK(err[0] != '\0');
    }
    cm_conf_free(&conf);
    free(cfg);
    unlink(path);
    return 0;
}
