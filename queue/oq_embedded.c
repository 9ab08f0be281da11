/*
 * The embedded broker: librdkafka's mock cluster on a dedicated rd_kafka_t.
 * See oq_embedded.h for what it is and what it is not.
 */
#include "queue/oq_embedded.h"

#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_log.h"

#include <errno.h>
#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct oq_embedded {
    rd_kafka_t *rk;                /* owns the mock cluster's thread */
    rd_kafka_mock_cluster_t *mcluster;
    char bootstrap[128];
};

/* Writes path atomically: temp file in the same directory, fsync, rename. */
static int write_atomic(const char *path, const char *text, char *errbuf, size_t errlen)
{
    char tmp[4200];
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= sizeof(tmp)) {
        snprintf(errbuf, errlen, "path too long: %s", path);
        return CM_EINVAL;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(errbuf, errlen, "open %s: %s", tmp, strerror(errno));
        return CM_EIO;
    }
    size_t len = strlen(text);
    ssize_t w = write(fd, text, len);
    if (w != (ssize_t)len || fsync(fd) != 0) {
        snprintf(errbuf, errlen, "write %s: %s", tmp, w < 0 ? strerror(errno) : "short write");
        close(fd);
        unlink(tmp);
        return CM_EIO;
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        snprintf(errbuf, errlen, "rename %s: %s", path, strerror(errno));
        unlink(tmp);
        return CM_EIO;
    }
    return 0;
}

int oq_embedded_start(oq_embedded_t **out, const oq_embedded_opts_t *opts, char *errbuf,
                      size_t errlen)
{
    char kerr[512];
    *out = NULL;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    /* The handle only hosts the cluster; keep its own logging quiet. */
    if (rd_kafka_conf_set(conf, "client.id", "flashgate-embedded", kerr, sizeof(kerr)) !=
            RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "log_level", "3", kerr, sizeof(kerr)) != RD_KAFKA_CONF_OK) {
        snprintf(errbuf, errlen, "embedded broker: %s", kerr);
        rd_kafka_conf_destroy(conf);
        return CM_EBACKEND;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, kerr, sizeof(kerr));
    if (!rk) {
        snprintf(errbuf, errlen, "embedded broker: %s", kerr);
        rd_kafka_conf_destroy(conf);
        return CM_EBACKEND;
    }
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, 1);
    if (!mc) {
        snprintf(errbuf, errlen, "embedded broker: rd_kafka_mock_cluster_new failed");
        rd_kafka_destroy(rk);
        return CM_EBACKEND;
    }
    oq_embedded_t *e = cm_xcalloc(1, sizeof(*e));
    e->rk = rk;
    e->mcluster = mc;
    snprintf(e->bootstrap, sizeof(e->bootstrap), "%s", rd_kafka_mock_cluster_bootstraps(mc));

    int parts = opts && opts->partitions > 0 ? opts->partitions : 4;
    for (const char *const *t = opts ? opts->topics : NULL; t && *t; t++) {
        rd_kafka_resp_err_t err = rd_kafka_mock_topic_create(mc, *t, parts, 1);
        if (err) {
            snprintf(errbuf, errlen, "embedded broker: create topic %s: %s", *t,
                     rd_kafka_err2str(err));
            oq_embedded_stop(e);
            return CM_EBACKEND;
        }
    }
    if (opts && opts->data_dir && *opts->data_dir) {
        char path[4096], line[160];
        if ((size_t)snprintf(path, sizeof(path), "%s/kafka.bootstrap", opts->data_dir) >=
            sizeof(path)) {
            snprintf(errbuf, errlen, "embedded broker: data dir path too long");
            oq_embedded_stop(e);
            return CM_EINVAL;
        }
        snprintf(line, sizeof(line), "%s\n", e->bootstrap);
        int rc = write_atomic(path, line, errbuf, errlen);
        if (rc) {
            oq_embedded_stop(e);
            return rc;
        }
    }
    cm_log_warn("oq", "embedded kafka broker started: in memory only, drops the oldest messages "
                      "past ~5 MiB or 100000 batches per partition; the spool keeps every order "
                      "until settled; the address changes at every start",
                "bootstrap=%s partitions=%d data_dir=%s", e->bootstrap, parts,
                opts && opts->data_dir ? opts->data_dir : "(none)");
    *out = e;
    return 0;
}

const char *oq_embedded_bootstrap(const oq_embedded_t *e)
{
    return e->bootstrap;
}

int oq_embedded_set_down(oq_embedded_t *e, bool down)
{
    /* The single broker has id 1. */
    rd_kafka_resp_err_t err = down ? rd_kafka_mock_broker_set_down(e->mcluster, 1)
                                   : rd_kafka_mock_broker_set_up(e->mcluster, 1);
    if (err) {
        cm_log_error("oq", "embedded broker set_down failed", "down=%d err=\"%s\"", (int)down,
                     rd_kafka_err2str(err));
        return CM_EBACKEND;
    }
    cm_log_warn("oq", down ? "embedded broker set down" : "embedded broker set up", NULL);
    return 0;
}

int oq_embedded_set_rtt(oq_embedded_t *e, int rtt_ms)
{
    rd_kafka_resp_err_t err = rd_kafka_mock_broker_set_rtt(e->mcluster, 1, rtt_ms);
    if (err) {
        cm_log_error("oq", "embedded broker set_rtt failed", "rtt_ms=%d err=\"%s\"", rtt_ms,
                     rd_kafka_err2str(err));
        return CM_EBACKEND;
    }
    cm_log_warn("oq", "embedded broker round trip set", "rtt_ms=%d", rtt_ms);
    return 0;
}

void oq_embedded_stop(oq_embedded_t *e)
{
    if (!e)
        return;
    rd_kafka_mock_cluster_destroy(e->mcluster);
    rd_kafka_destroy(e->rk);
    free(e);
}
