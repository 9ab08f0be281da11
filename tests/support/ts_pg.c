/*
 * Starts and stops a throwaway PostgreSQL server for tests. See ts_pg.h.
 */
#include "tests/support/ts_pg.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *pg_bindir(void)
{
    static char dir[256];
    const char *env = getenv("FLASHGATE_PG_BIN");
    if (env && *env) {
        snprintf(dir, sizeof(dir), "%s", env);
        return dir;
    }
    static const char *const cands[] = {"/usr/lib/postgresql/17/bin", "/usr/lib/postgresql/16/bin",
                                        "/usr/lib/postgresql/15/bin", NULL};
    for (int i = 0; cands[i]; i++) {
        char p[300];
        snprintf(p, sizeof(p), "%s/postgres", cands[i]);
        if (access(p, X_OK) == 0) {
            snprintf(dir, sizeof(dir), "%s", cands[i]);
            return dir;
        }
    }
    return NULL;
}

bool ts_pg_available(void)
{
    return pg_bindir() != NULL;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

/* Forks and execs argv as "nobody" when running as root, output to logpath. */
static pid_t spawn(char *const argv[], const char *logpath)
{
    struct passwd *pw = geteuid() == 0 ? getpwnam("nobody") : NULL;
    uid_t uid = pw ? pw->pw_uid : 0;
    gid_t gid = pw ? pw->pw_gid : 0;
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    int fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
    }
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0)
        dup2(devnull, 0);
    setsid(); /* out of the test's process group: a ^C reaches us through ts_pg_stop */
    if (pw && (setgroups(0, NULL) != 0 || setgid(gid) != 0 || setuid(uid) != 0)) {
        perror("ts_pg: drop privileges");
        _exit(126);
    }
    execv(argv[0], argv);
    perror("ts_pg: exec");
    _exit(127);
}

static void rm_rf(const char *dir)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "ts_pg: could not remove %s\n", dir);
}

static void dump_log(const char *dir, const char *name)
{
    char cmd[200];
    snprintf(cmd, sizeof(cmd), "tail -n 30 '%s/%s' >&2", dir, name);
    if (system(cmd) != 0)
        fprintf(stderr, "ts_pg: no %s\n", name);
}

int ts_pg_start(ts_pg_t *pg)
{
    memset(pg, 0, sizeof(*pg));
    const char *bin = pg_bindir();
    if (!bin) {
        fprintf(stderr, "ts_pg: PostgreSQL server binaries not found\n");
        return -1;
    }
    snprintf(pg->dir, sizeof(pg->dir), "/tmp/ts_pg.XXXXXX");
    if (!mkdtemp(pg->dir)) {
        perror("ts_pg: mkdtemp");
        return -1;
    }
    if (geteuid() == 0) {
        struct passwd *pw = getpwnam("nobody");
        if (!pw || chown(pg->dir, pw->pw_uid, pw->pw_gid) != 0) {
            fprintf(stderr, "ts_pg: cannot give %s to nobody\n", pg->dir);
            rm_rf(pg->dir);
            return -1;
        }
    }
    char initdb[300], postgres[300], data[100], log1[100], log2[100];
    snprintf(initdb, sizeof(initdb), "%s/initdb", bin);
    snprintf(postgres, sizeof(postgres), "%s/postgres", bin);
    snprintf(data, sizeof(data), "%s/data", pg->dir);
    snprintf(log1, sizeof(log1), "%s/initdb.log", pg->dir);
    snprintf(log2, sizeof(log2), "%s/postgres.log", pg->dir);
    char *iargv[] = {initdb,  "-D", data,   "-U",        "postgres",          "-A",
                     "trust", "-E", "UTF8", "--no-sync", "--no-instructions", NULL};
    pid_t ip = spawn(iargv, log1);
    int status = 0;
    if (ip < 0 || waitpid(ip, &status, 0) != ip || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "ts_pg: initdb failed\n");
        dump_log(pg->dir, "initdb.log");
        rm_rf(pg->dir);
        return -1;
    }
    for (int attempt = 0; attempt < 3; attempt++) {
        pg->port = free_port();
        char port[16];
        snprintf(port, sizeof(port), "%d", pg->port);
        char *pargv[] = {postgres,    "-D",
                         data,        "-k",
                         pg->dir,     "-p",
                         port,        "-h",
                         "127.0.0.1", "-F",
                         "-c",        "max_connections=50",
                         "-c",        "shared_buffers=32MB",
                         NULL};
        pg->pid = spawn(pargv, log2);
        snprintf(pg->url, sizeof(pg->url), "postgresql://postgres@127.0.0.1:%d/postgres", pg->port);
        for (int i = 0; i < 300; i++) { /* 30 s */
            if (PQping(pg->url) == PQPING_OK)
                return 0;
            if (waitpid(pg->pid, &status, WNOHANG) == pg->pid) {
                pg->pid = 0;
                break;
            }
            struct timespec ts = {0, 100 * 1000000L};
            nanosleep(&ts, NULL);
        }
        if (pg->pid > 0) {
            kill(pg->pid, SIGKILL);
            waitpid(pg->pid, &status, 0);
            pg->pid = 0;
        }
    }
    fprintf(stderr, "ts_pg: postgres did not start\n");
    dump_log(pg->dir, "postgres.log");
    rm_rf(pg->dir);
    return -1;
}

void ts_pg_stop(ts_pg_t *pg)
{
    if (pg->pid > 0) {
        kill(pg->pid, SIGINT);
        int status;
        bool done = false;
        for (int i = 0; i < 100 && !done; i++) {
            if (waitpid(pg->pid, &status, WNOHANG) == pg->pid) {
                done = true;
                break;
            }
            struct timespec ts = {0, 100 * 1000000L};
            nanosleep(&ts, NULL);
        }
        if (!done) {
            kill(pg->pid, SIGKILL);
            waitpid(pg->pid, &status, 0);
        }
        pg->pid = 0;
    }
    if (pg->dir[0])
        rm_rf(pg->dir);
    pg->dir[0] = 0;
}
