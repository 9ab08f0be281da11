/*
 * Minting the crowd's tokens before the run: ES256 signs at ~30k/s per core
 * (identity/id_keys.c), so 100,000 accounts take a few seconds over two
 * threads and nothing is signed while the run's clock is going.
 */
#include "loadtest/lt_ident.h"

#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_rand.h"
#include "common/cm_time.h"
#include "identity/id.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void lt_user_id(uint64_t seed, uint64_t u, char *out, size_t len)
{
    snprintf(out, len, "u%llu-%llu", (unsigned long long)seed, (unsigned long long)u);
}

void lt_person_id(uint64_t seed, uint64_t p, char *out, size_t len)
{
    snprintf(out, len, "p%llu-%llu", (unsigned long long)seed, (unsigned long long)p);
}

void lt_crowd_persons(const lt_scenario_t *sc, uint32_t *persons)
{
    uint64_t accounts = lt_scenario_accounts(sc);
    /* mark the operators' slots (UINT32_MAX), shuffle them among the crowd's */
    for (uint64_t i = 0; i < accounts; i++)
        persons[i] = i < sc->users ? 0 : UINT32_MAX;
    if (sc->operators) {
        cm_rand_t shuf;
        cm_rand_seed(&shuf, sc->seed ^ 0x0be7a70bull);
        for (uint64_t i = accounts - 1; i > 0; i--) {
            uint64_t j = cm_rand_below(&shuf, i + 1);
            uint32_t t = persons[i];
            persons[i] = persons[j];
            persons[j] = t;
        }
    }
    uint64_t single = 0, op_account = 0;
    for (uint64_t i = 0; i < accounts; i++) {
        if (persons[i] != UINT32_MAX) {
            persons[i] = (uint32_t)single++;
            continue;
        }
        uint64_t o = op_account / sc->accounts_per_operator;
        uint64_t j = op_account % sc->accounts_per_operator;
        op_account++;
        persons[i] = (uint32_t)(sc->users + o * sc->persons_per_operator +
                                j % sc->persons_per_operator);
    }
}

static const char *person_claim(const lt_scenario_t *sc)
{
    return sc->identity_person_claim[0] ? sc->identity_person_claim : "person";
}

typedef struct job {
    lt_tokens_t *t;
    const lt_scenario_t *sc;
    const id_signer_t *s;
    const uint32_t *persons;
    uint64_t from, to;
    int64_t iat, exp;
    int rc;
    char err[200];
} job_t;

static void *mint_range(void *arg)
{
    job_t *j = arg;
    for (uint64_t u = j->from; u < j->to; u++) {
        char uid[64], pid[64];
        lt_user_id(j->sc->seed, u, uid, sizeof(uid));
        lt_person_id(j->sc->seed, j->persons ? j->persons[u] : u, pid, sizeof(pid));
        id_claims_t cl = {.user = uid,
                          .person = pid,
                          .person_claim = person_claim(j->sc),
                          .issuer = j->sc->identity_issuer[0] ? j->sc->identity_issuer : NULL,
                          .audience = j->sc->identity_audience[0] ? j->sc->identity_audience : NULL,
                          .iat = j->iat,
                          .exp = j->exp};
        int n = id_signer_mint(j->s, &cl, j->t->arena + u * j->t->stride, j->t->stride, j->err,
                               sizeof(j->err));
        if (n < 0) {
            j->rc = n;
            return NULL;
        }
    }
    return NULL;
}

int lt_tokens_mint(lt_tokens_t *t, const lt_scenario_t *sc, const uint32_t *persons,
                   unsigned threads, char *eb, size_t el)
{
    memset(t, 0, sizeof(*t));
    char err[300];
    id_signer_t *s = id_signer_open(sc->identity_key, err, sizeof(err));
    if (!s) {
        snprintf(eb, el, "identity.key: %s", err);
        return CM_EINVAL;
    }
    uint64_t t0 = cm_mono_ns();
    int64_t now = (int64_t)time(NULL);
    uint64_t accounts = lt_scenario_accounts(sc);
    job_t proto = {.t = t, .sc = sc, .s = s, .persons = persons, .iat = now,
                   .exp = now + (int64_t)(sc->duration_s + sc->drain_s) + 3600};
    /* the longest user and person ids set the stride: mint them once to learn the length */
    char probe[ID_TOKEN_LIMIT], uid[64], pid[64];
    lt_user_id(sc->seed, accounts ? accounts - 1 : 0, uid, sizeof(uid));
    lt_person_id(sc->seed, lt_scenario_persons(sc), pid, sizeof(pid)); /* no id is longer */
    id_claims_t cl = {.user = uid,
                      .person = pid,
                      .person_claim = person_claim(sc),
                      .issuer = sc->identity_issuer[0] ? sc->identity_issuer : NULL,
                      .audience = sc->identity_audience[0] ? sc->identity_audience : NULL,
                      .iat = proto.iat, .exp = proto.exp};
    int n = id_signer_mint(s, &cl, probe, sizeof(probe), err, sizeof(err));
    if (n < 0) {
        snprintf(eb, el, "identity: cannot mint: %s", err);
        id_signer_free(s);
        return CM_EINVAL;
    }
    if (n > LT_TOKEN_MAX) {
        snprintf(eb, el, "identity: a token of %d bytes (at most %d: it rides in every request head)",
                 n, LT_TOKEN_MAX);
        id_signer_free(s);
        return CM_EINVAL;
    }
    t->stride = (size_t)n + 16; /* ECDSA and RSA signatures have a fixed encoded length */
    t->n = accounts;
    t->arena = cm_xmalloc(t->stride * (t->n ? t->n : 1));
    if (threads < 1)
        threads = 1;
    if (threads > 16)
        threads = 16;
    if (t->n < 1000)
        threads = 1;
    job_t jobs[16] = {0};
    pthread_t th[16];
    uint64_t per = (t->n + threads - 1) / threads;
    for (unsigned k = 0; k < threads; k++) {
        jobs[k] = proto;
        jobs[k].from = k * per < t->n ? k * per : t->n;
        jobs[k].to = (k + 1) * per < t->n ? (k + 1) * per : t->n;
        if (k > 0 && pthread_create(&th[k], NULL, mint_range, &jobs[k]) != 0)
            mint_range(&jobs[k]);
    }
    mint_range(&jobs[0]);
    int rc = 0;
    for (unsigned k = 0; k < threads; k++) {
        if (k > 0)
            pthread_join(th[k], NULL);
        if (jobs[k].rc < 0 && !rc) {
            snprintf(eb, el, "identity: cannot mint: %s", jobs[k].err);
            rc = CM_EINVAL;
        }
    }
    id_signer_free(s);
    t->mint_s = (double)(cm_mono_ns() - t0) / 1e9;
    if (rc < 0)
        lt_tokens_free(t);
    return rc;
}

const char *lt_tokens_get(const lt_tokens_t *t, uint64_t u)
{
    return t->arena + u * t->stride;
}

void lt_tokens_free(lt_tokens_t *t)
{
    free(t->arena);
    memset(t, 0, sizeof(*t));
}
