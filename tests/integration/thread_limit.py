"""A worker thread that cannot be created fails the start, with the reason,
and a clean exit: the gateway must not serve with fewer workers than asked
(their share of the SO_REUSEPORT traffic would go unserved) nor crash while
stopping the ones that did start (they were stopped twice).

Address space capped (RLIMIT_AS 400 MB, 8 MiB thread stacks) and 64 workers
asked for: the stacks alone need 512 MiB, so a pthread_create fails.
Registered for the dev build only (tests/CMakeLists.txt): ASan needs far more
address space than any such cap.
"""
import os
import resource
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import Gateway, check, die_with_parent, eq, finish, need_binary  # noqa: E402

need_binary("flashgate")


def capped():
    die_with_parent()
    resource.setrlimit(resource.RLIMIT_STACK, (8 << 20, 8 << 20))
    resource.setrlimit(resource.RLIMIT_AS, (400 << 20, 400 << 20))


g = Gateway("--kafka-brokers", "none", threads=64)
try:
    with open(g.log_path, "ab") as log:
        p = subprocess.run(g.cmd(), stdout=log, stderr=subprocess.STDOUT, preexec_fn=capped,
                           timeout=60)
    eq(p.returncode, 1, "the start fails with exit 1 (not a crash, not a gateway serving)")
    check("cannot start worker thread" in g.logs(),
          "and says why: %s" % g.logs()[-400:])
finally:
    g.cleanup()
finish()
