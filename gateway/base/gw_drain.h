/*
 * The graceful stop's HTTP rules, without I/O (server.drain_grace, gw_server_stop):
 * SIGTERM makes the gateway leave (/readyz answers 503 so that load balancers
 * and orchestrators stop sending) while every other route serves on for
 * server.drain_grace; then it drains (gw_server_stop): a request that still
 * comes on a connection opened before is answered 503 "shutting down" and its
 * connection closed after the answer, so that the client's next request opens
 * one to another gateway instead of meeting a closed socket. The shells
 * (gw_http.c /readyz, gw_buy.c, main.c's signal handler) and the simulator
 * (sim/sim_world.c gw_stop) call these. No syscall, lock or clock inside.
 */
#ifndef GW_DRAIN_H
#define GW_DRAIN_H

#include <stdbool.h>
#include <stdint.h>

typedef enum {
    GW_DRAIN_SERVING = 0, /* no stop asked */
    GW_DRAIN_LEAVING,     /* SIGTERM seen: the drain grace, /readyz 503, the rest serves */
    GW_DRAIN_DRAINING,    /* the grace is over: gw_server_stop runs */
} gw_drain_phase_t;

/* The phase from the server's flags (gw_server_t.leaving, .draining). */
gw_drain_phase_t gw_drain_phase(bool leaving, bool draining);

/* GET /readyz: true for 200 "ready" (the server started, not leaving or
 * draining, its identity keys not stale), false for 503 not_ready. */
bool gw_drain_ready(bool started, gw_drain_phase_t ph, bool keys_stale);

/* A request other than a probe: true if it is refused (503 "shutting down")
 * and its connection closed once the answer is out. */
bool gw_drain_refuses(gw_drain_phase_t ph);

/* How long the leaving phase lasts after a stop signal: the drain grace
 * (server.drain_grace) for the first, none for a second one (the operator
 * insists) or when no grace is configured. 0: drain at once. */
uint64_t gw_drain_grace_ms(uint64_t grace_ms, bool second_signal);

#endif
