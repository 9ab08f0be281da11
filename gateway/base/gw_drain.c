/*
 * The graceful stop's HTTP rules (gw_drain.h).
 */
#include "gateway/base/gw_drain.h"

#include "common/cm_plant.h"

gw_drain_phase_t gw_drain_phase(bool leaving, bool draining)
{
    return draining ? GW_DRAIN_DRAINING : leaving ? GW_DRAIN_LEAVING : GW_DRAIN_SERVING;
}

bool gw_drain_ready(bool started, gw_drain_phase_t ph, bool keys_stale)
{
    /* planted: /readyz stays 200 through the grace (the load balancer keeps sending) */
    if (CM_PLANT(READY_WHILE_LEAVING) && ph == GW_DRAIN_LEAVING)
        return started && !keys_stale;
    return started && ph == GW_DRAIN_SERVING && !keys_stale;
}

bool gw_drain_refuses(gw_drain_phase_t ph)
{
    /* planted: a request after the grace served on its kept-alive connection */
    return ph == GW_DRAIN_DRAINING && !CM_PLANT(DRAIN_KEEPS_SERVING);
}

uint64_t gw_drain_grace_ms(uint64_t grace_ms, bool second_signal)
{
    return second_signal ? 0 : grace_ms;
}
