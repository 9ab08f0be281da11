/*
 * What each part of the PostgreSQL sink's batch insert costs the server
 * (bench/README.md "Settlement" under "Findings that hold"): one connection per variant, each
 * with its own table of PREFILL rows, then BATCHES batches of 500 orders
 * (time-ordered ids, as the gateway makes them) interleaved across the
 * variants so that the machine's noise falls on all of them alike. Prints the
 * backend's utime+stime (from /proc, so run it on the database's host) and the
 * wall time per order for each.
 *
 *   flashgate-bench-settle-stmt CONNINFO [BATCHES]
 *
 * bench/settle.py runs it against its private cluster: BENCH_ONLY=settle-stmt.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BATCH 500
#define PREFILL 200000

enum kind { K_CONFLICT, K_COPY, K_PROBE, K_PLAIN, K_CONFLICT_NORET };
enum index2 { IDX_NONE, IDX_SALE_USER, IDX_SALE };

typedef struct variant {
    const char *name;
    enum kind kind;
    bool collate_c;
    enum index2 idx;
    PGconn *conn;
    int pid;
    long ticks;
    double wall;
} variant_t;

static variant_t variants[] = {
    {"before: unnest ON CONFLICT RETURNING, idx (sale,user)", K_CONFLICT, false, IDX_SALE_USER},
    {"COPY to TEMP table, INSERT SELECT ON CONFLICT", K_COPY, false, IDX_SALE_USER},
    {"without RETURNING", K_CONFLICT_NORET, false, IDX_SALE_USER},
    {"without the secondary index", K_CONFLICT, false, IDX_NONE},
    {"secondary index on (sale_id)", K_CONFLICT, false, IDX_SALE},
    {"ids COLLATE \"C\"", K_CONFLICT, true, IDX_SALE_USER},
    {"C + index on (sale_id)", K_CONFLICT, true, IDX_SALE},
    {"now: C + (sale_id) + key probe, no ON CONFLICT", K_PROBE, true, IDX_SALE},
    {"plain INSERT (no duplicate check), idx (sale,user)", K_PLAIN, false, IDX_SALE_USER},
};
#define NVARIANTS (sizeof(variants) / sizeof(variants[0]))

static char ids[BATCH][16], users[BATCH][24];
static char arrays[6][BATCH * 24];
static char copybuf[BATCH * 96];

static void die(PGconn *c, const char *what)
{
    fprintf(stderr, "settle_stmt: %s: %s", what, PQerrorMessage(c));
    exit(1);
}

static void exec_ok(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        die(c, sql);
    PQclear(r);
}

static long proc_ticks(int pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');
    long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %ld %ld", &ut, &st) != 2)
        return -1;
    return ut + st;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void setup(variant_t *v, int n, const char *conninfo)
{
    v->conn = PQconnectdb(conninfo);
    if (PQstatus(v->conn) != CONNECTION_OK)
        die(v->conn, "connect");
    exec_ok(v->conn, "SET client_min_messages = warning");
    const char *c = v->collate_c ? " COLLATE \"C\"" : "";
    char sql[2048];
    snprintf(sql, sizeof(sql),
             "DROP TABLE IF EXISTS st%d; CREATE TABLE st%d (order_id TEXT%s PRIMARY KEY,"
             " sale_id TEXT%s NOT NULL, user_id TEXT%s NOT NULL, qty INTEGER NOT NULL,"
             " accepted_at BIGINT NOT NULL, node INT, status TEXT NOT NULL CHECK (status IN"
             " ('settled','failed','cancelled')), reason TEXT, settled_at BIGINT NOT NULL,"
             " updated_at BIGINT NOT NULL) WITH (autovacuum_enabled = off)",
             n, n, c, c, c);
    exec_ok(v->conn, sql);
    if (v->idx != IDX_NONE) {
        snprintf(sql, sizeof(sql), "CREATE INDEX ON st%d (%s)", n,
                 v->idx == IDX_SALE_USER ? "sale_id, user_id" : "sale_id");
        exec_ok(v->conn, sql);
    }
    snprintf(sql, sizeof(sql),
             "INSERT INTO st%d SELECT lpad(upper(to_hex(i)), 13, '0'), 'salepre', 'u' || i, 1, 1,"
             " 1, 'settled', NULL, 1, 1 FROM generate_series(1, %d) i",
             n, PREFILL);
    exec_ok(v->conn, sql);
    snprintf(sql, sizeof(sql), "VACUUM ANALYZE st%d", n);
    exec_ok(v->conn, sql);
    const char *cols = "order_id, sale_id, user_id, qty, accepted_at, node, status, reason,"
                       " settled_at, updated_at";
    const char *from = "FROM unnest($1::text[], $2::text[], $3::text[], $4::int4[], $5::int8[],"
                       " $6::int4[]) WITH ORDINALITY AS b(o, sa, u, q, a, n, i)";
    const char *tail = "ORDER BY i ON CONFLICT (order_id) DO NOTHING RETURNING order_id";
    char probe[128];
    snprintf(probe, sizeof(probe),
             "WHERE (SELECT 1 FROM st%d x WHERE x.order_id = b.o) IS NULL RETURNING order_id", n);
    int nparams = 7;
    if (v->kind == K_COPY) {
        exec_ok(v->conn, v->collate_c
                             ? "CREATE TEMP TABLE stage (i int, o text COLLATE \"C\", sa text"
                               " COLLATE \"C\", u text COLLATE \"C\", q int4, a int8, n int4)"
                               " ON COMMIT DELETE ROWS"
                             : "CREATE TEMP TABLE stage (i int, o text, sa text, u text, q int4,"
                               " a int8, n int4) ON COMMIT DELETE ROWS");
        from = "FROM stage";
        nparams = 1;
    } else if (v->kind == K_PROBE) {
        tail = probe;
    } else if (v->kind == K_PLAIN) {
        tail = "";
    } else if (v->kind == K_CONFLICT_NORET) {
        tail = "ORDER BY i ON CONFLICT (order_id) DO NOTHING";
    }
    snprintf(sql, sizeof(sql),
             "INSERT INTO st%d (%s) SELECT o, sa, u, q, a, n, 'settled', NULL, $%d, $%d %s %s", n,
             cols, nparams, nparams, from, tail);
    static const Oid many[] = {1009, 1009, 1009, 1007, 1016, 1007, 20};
    static const Oid one[] = {20};
    PGresult *r = PQprepare(v->conn, "ins", sql, nparams, nparams == 1 ? one : many);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        die(v->conn, sql);
    PQclear(r);
    r = PQexec(v->conn, "SELECT pg_backend_pid()");
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        die(v->conn, "pid");
    v->pid = atoi(PQgetvalue(r, 0, 0));
    PQclear(r);
}

/* The batch's orders: ids above the prefill's, random users of one sale. */
static void make_batch(int b)
{
    for (int i = 0; i < BATCH; i++) {
        long k = (long)b * BATCH + i;
        snprintf(ids[i], sizeof(ids[i]), "%013llX", 0x100000000000ull + (unsigned long long)k);
        snprintf(users[i], sizeof(users[i]), "user-%ld", k * 7919 % 1000003);
    }
    for (int c = 0; c < 6; c++) {
        char *p = arrays[c];
        *p++ = '{';
        for (int i = 0; i < BATCH; i++) {
            if (c == 0)
                p += sprintf(p, "\"%s\",", ids[i]);
            else if (c == 1)
                p += sprintf(p, "\"sale1\",");
            else if (c == 2)
                p += sprintf(p, "\"%s\",", users[i]);
            else if (c == 4)
                p += sprintf(p, "%lld,", 1763830000000LL + i);
            else
                p += sprintf(p, "1,");
        }
        p[-1] = '}';
    }
    char *p = copybuf;
    for (int i = 0; i < BATCH; i++)
        p += sprintf(p, "%d\t%s\tsale1\t%s\t1\t%lld\t1\n", i + 1, ids[i], users[i],
                     1763830000000LL + i);
}

static PGresult *insert_copy(PGconn *c)
{
    PGresult *r = PQexec(c, "COPY stage FROM STDIN");
    if (PQresultStatus(r) != PGRES_COPY_IN)
        die(c, "copy");
    PQclear(r);
    if (PQputCopyData(c, copybuf, (int)strlen(copybuf)) != 1 || PQputCopyEnd(c, NULL) != 1)
        die(c, "copy data");
    r = PQgetResult(c);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        die(c, "copy end");
    PQclear(r);
    const char *now[1] = {"1763830000000"};
    return PQexecPrepared(c, "ins", 1, now, NULL, NULL, 0);
}

static void run_batch(variant_t *v)
{
    double t0 = now_s();
    exec_ok(v->conn, "BEGIN");
    PGresult *r;
    if (v->kind == K_COPY) {
        r = insert_copy(v->conn);
    } else {
        const char *vals[7] = {arrays[0], arrays[1], arrays[2], arrays[3],
                               arrays[4], arrays[5], "1763830000000"};
        r = PQexecPrepared(v->conn, "ins", 7, vals, NULL, NULL, 0);
    }
    if (PQresultStatus(r) != PGRES_TUPLES_OK && PQresultStatus(r) != PGRES_COMMAND_OK)
        die(v->conn, "insert");
    if (atoi(PQcmdTuples(r)) != BATCH) {
        fprintf(stderr, "settle_stmt: %s inserted %s of %d\n", v->name, PQcmdTuples(r), BATCH);
        exit(1);
    }
    PQclear(r);
    exec_ok(v->conn, "COMMIT");
    v->wall += now_s() - t0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s CONNINFO [BATCHES]\n", argv[0]);
        return 2;
    }
    int batches = argc > 2 ? atoi(argv[2]) : 100;
    for (size_t k = 0; k < NVARIANTS; k++)
        setup(&variants[k], (int)k, argv[1]);
    for (size_t k = 0; k < NVARIANTS; k++)
        variants[k].ticks = -proc_ticks(variants[k].pid);
    for (int b = 0; b < batches; b++) {
        make_batch(b);
        for (size_t k = 0; k < NVARIANTS; k++)
            run_batch(&variants[(k + (size_t)b) % NVARIANTS]);
    }
    double per = 1e6 / ((double)batches * BATCH);
    printf("%-54s %22s %16s\n", "statement (500-order batches)", "postgres cpu us/order",
           "wall us/order");
    for (size_t k = 0; k < NVARIANTS; k++) {
        variant_t *v = &variants[k];
        v->ticks += proc_ticks(v->pid);
        printf("%-54s %22.2f %16.2f\n", v->name, (double)v->ticks / 100.0 * per, v->wall * per);
        PQfinish(v->conn);
    }
    return 0;
}
