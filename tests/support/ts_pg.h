/*
 * A real PostgreSQL server for tests: initdb in a fresh temp dir, postgres on
 * 127.0.0.1 at a free port (socket in the temp dir), stopped by PID.
 *
 * Running as root (as CI does), initdb and postgres refuse to start, so both
 * run as the unprivileged user "nobody" (setpriv), and the temp dir is given
 * to that user. Startup takes ~1-2 s (initdb --no-sync, fsync=off).
 */
#ifndef TS_PG_H
#define TS_PG_H

#include <stdbool.h>
#include <sys/types.h>

typedef struct ts_pg {
    char dir[64]; /* temp dir: data/ and the socket */
    int port;
    pid_t pid;     /* the postmaster */
    char url[128]; /* "postgresql://postgres@127.0.0.1:PORT/postgres" */
} ts_pg_t;

/* true when the PostgreSQL 15 server binaries are installed. */
bool ts_pg_available(void);

/*
 * Starts a server and waits until it accepts connections (at most 30 s).
 * Returns 0, or -1 with a message on stderr (everything started is stopped).
 */
int ts_pg_start(ts_pg_t *pg);

/* Stops the server (SIGINT: fast shutdown; SIGKILL after 10 s) and removes the dir. */
void ts_pg_stop(ts_pg_t *pg);

#endif
