"""flashgate-spool relay: the orders a gateway left unsent in its data dir reach
Kafka once, and the command exits (docs/runbook.md, "Volumes left after a
scale-down"; deploy/k8s/flashgate-spool-relay.yaml runs it as a Job).

A. A gateway whose Kafka is unreachable (kafka.brokers a closed port) accepts
   orders into its spool; while it runs, the relay refuses its data dir (the
   spool's lock) and leaves it alone.
B. The gateway stopped (SIGTERM: its relay cannot flush), `flashgate-spool stats`
   shows every order unreleased; the relay to a broker that does not answer
   gives up after --timeout with exit 1 and the records still there.
C. The relay against a real broker (the embedded one of a second gateway: a
   librdkafka mock cluster on 127.0.0.1) exits 0 with nothing unreleased; kcat
   reads the orders topic: every 202's order exactly once, nothing else.
D. The relay run again has nothing to send: exit 0, the topic unchanged.
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import BIN, Gateway, check, eq, finish, free_port, need_binary  # noqa: E402
import fgq  # noqa: E402

need_binary("flashgate")
need_binary("flashgate-spool")
fgq.need_tool("kcat")

N = 40
NO_LIMITS = ["--set", "limits.user_rps=0", "--set", "limits.ip_rps=0", "--set",
             "limits.subnet_rps=0", "--set", "limits.sale_rps=0"]


def spool(*args, timeout=120):
    out = subprocess.run([os.path.join(BIN, "flashgate-spool")] + list(args),
                         capture_output=True, text=True, timeout=timeout)
    return out.returncode, out.stdout, out.stderr


def stats(data_dir):
    rc, out, err = spool("stats", "--data-dir", data_dir)
    eq(rc, 0, "flashgate-spool stats: " + err)
    return json.loads(out) if rc == 0 else {}


dead = "127.0.0.1:%d" % free_port()  # nothing listens there
a = Gateway("--kafka-brokers", dead, "--set", "server.drain_timeout=1s", *NO_LIMITS, threads=1)
b = None
try:
    # ---- A: orders accepted while Kafka is unreachable ----
    a.start()
    a.put_sale("s1", stock=1000, per_user_limit=1)
    accepted = []
    for i in range(N):
        r = a.buy("s1", "u%d" % i)
        eq(r.status, 202, "buy %d accepted into the spool with Kafka down" % i)
        if r.status == 202:
            accepted.append(r.json["order_id"])
    rc, out, err = spool("relay", "--data-dir", a.data_dir, "--kafka-brokers", dead,
                         "--timeout", "1s", timeout=30)
    eq(rc, 1, "the relay refuses a data dir a gateway holds: %s %s" % (out, err))
    check("lock" in err.lower() or "busy" in err.lower() or "held" in err.lower(),
          "it says why (the spool's lock): %s" % err.strip())

    # ---- B: the gateway gone, its orders unsent ----
    a.stop()
    st = stats(a.data_dir)
    check(st.get("unreleased_bytes", 0) > 0, "the stopped gateway left unsent orders: %r" % st)
    eq(sorted(a.spool_ids()), sorted(accepted), "the spool holds every 202's order")
    rc, out, err = spool("relay", "--data-dir", a.data_dir, "--kafka-brokers", dead,
                         "--timeout", "2s", timeout=60)
    eq(rc, 1, "the relay to an unreachable broker gives up after --timeout: %s %s" % (out, err))
    eq(stats(a.data_dir).get("unreleased_bytes"), st.get("unreleased_bytes"),
       "nothing released when nothing was acknowledged")

    # ---- C: to a real broker ----
    b = Gateway(threads=1)  # its embedded broker stands for the cluster's Kafka
    b.start()
    boot = fgq.bootstrap(b.data_dir)
    rc, out, err = spool("relay", "--data-dir", a.data_dir, "--kafka-brokers", boot,
                         "--timeout", "60s")
    eq(rc, 0, "flashgate-spool relay exits 0: %s %s" % (out, err[-800:]))
    res = json.loads(out) if rc == 0 else {}
    print("relay: %s" % out.strip())
    eq(res.get("unreleased_bytes"), 0, "nothing left unreleased")
    eq(res.get("relayed_bytes"), st.get("unreleased_bytes"), "it relayed what was unreleased")
    eq(stats(a.data_dir).get("unreleased_bytes"), 0, "the spool's release point moved (stats)")
    ids = fgq.topic_order_ids(boot)
    eq(sorted(ids), sorted(accepted), "every 202's order is in Kafka exactly once, nothing else")

    # ---- D: again, nothing to send ----
    rc, out, err = spool("relay", "--data-dir", a.data_dir, "--kafka-brokers", boot,
                         "--timeout", "10s")
    eq(rc, 0, "a second relay exits 0: %s %s" % (out, err))
    eq(json.loads(out).get("relayed_bytes") if rc == 0 else None, 0, "and sends nothing")
    eq(sorted(fgq.topic_order_ids(boot)), sorted(accepted), "the topic is unchanged")

    # usage: the embedded broker is not a destination
    rc, _, err = spool("relay", "--data-dir", a.data_dir)
    eq(rc, 2, "relay without --kafka-brokers is a usage error: %s" % err)
finally:
    for g in (a, b):
        if g:
            g.cleanup()
finish()
