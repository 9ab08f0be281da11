"""An idle worker's overload tick slows down, and traffic brings it back at once.

The tick (gateway/overload/gw_overload.c) runs every 10 ms while the worker has work; after
a second with no connection, no read and nothing in progress (door open, level 0)
it runs every 100 ms, so an idle gateway no longer wakes 100 times a second.
Counted here as the worker thread's voluntary context switches (each timer
wakeup is one): about 100/s before the change, about 13/s after (the tick, plus
the connection guard's and the buffer sweeps). A request puts the 10 ms tick back
before it is served; the next idle second slows it again. The same for the
lottery thread, which sleeps 100 ms instead of 20 ms while no sale has a lottery."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import Gateway, check, eq, finish, need_binary  # noqa: E402

need_binary("flashgate")


def switches(pid, name):
    """Voluntary context switches of the thread(s) of pid named name."""
    n = 0
    for t in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/comm" % (pid, t)) as f:
                if f.read().strip() != name:
                    continue
            with open("/proc/%d/task/%s/status" % (pid, t)) as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        n += int(line.split()[1])
        except OSError:
            pass
    return n


def rate(pid, name, seconds):
    a = switches(pid, name)
    time.sleep(seconds)
    return (switches(pid, name) - a) / seconds


g = Gateway("--kafka-brokers", "none", threads=1).start()
try:
    pid = g.proc.pid
    g.put_sale("idle", stock=10, per_user_limit=1)
    time.sleep(2.0)  # past the idle second
    slow = rate(pid, "fg-worker-0", 2.0)
    check(slow < 40, "an idle worker wakes less than 40 times a second: %.0f/s" % slow)
    eq(g.buy("idle", "u1").status, 202, "the first buy after the idle time is served")
    fast = rate(pid, "fg-worker-0", 0.5)  # within the next idle second: the 10 ms tick
    check(fast > 60, "traffic brings the 10 ms tick back: %.0f wakeups/s" % fast)
    time.sleep(1.5)
    again = rate(pid, "fg-worker-0", 2.0)
    check(again < 40, "and the next idle second slows it again: %.0f/s" % again)
    st = g.admin("GET", "/admin/v1/stats").json["overload"]
    eq(st["level"], 0, "level 0 throughout")
    lottery = rate(pid, "flashgate", 2.0)  # the main thread sleeps; the lottery thread shares its name
    check(lottery < 30, "no lottery: its thread wakes less than 30 times a second: %.0f/s" % lottery)
finally:
    g.cleanup()
finish()
