"""accept4 failing with an error the next call would repeat (ENOBUFS: the
kernel out of memory for the socket) must not spin the worker.

The listening socket is level-triggered and the failed connection stays in
the queue, so a worker that just waits for the next readiness calls accept4
again at once, forever, at 100% of a core. The gateway stops polling the
socket for a while instead (as it does when out of descriptors) and warns
once a second.

The error is real, not simulated in the binary: strace attaches to the running
gateway and makes every accept4 fail with ENOBUFS (-e inject), for about a
second while one connection waits in the queue; then strace detaches and the
same connection is served. The checks are counts, not timings: how many
accept4 calls the worker made in that second (a spinning one makes tens of
thousands even under strace; one that pauses 100 ms at a time about ten), and
how many warnings it printed. Loopback only, bounded (one connection, ~1 s).
"""
import os
import shutil
import signal
import socket
import subprocess
import time

from fg import Gateway, check, finish, need_binary

need_binary("flashgate")
check(shutil.which("strace") is not None, "strace is installed (deploy/install-deps.sh)")

g = Gateway(threads=1)
tracer = None
try:
    g.start()
    trace = os.path.join(g.tmp, "accept4.trace")
    tracer = subprocess.Popen(
        ["strace", "-f", "-qq", "-p", str(g.proc.pid), "-o", trace, "-e", "trace=accept4",
         "-e", "inject=accept4:error=ENOBUFS"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # strace is attached when its output file exists and the gateway's threads
    # are traced (TracerPid); nothing is decided by time here
    deadline = time.time() + 10
    while time.time() < deadline:
        tids = os.listdir("/proc/%d/task" % g.proc.pid)
        traced = 0
        for t in tids:
            try:
                with open("/proc/%d/task/%s/status" % (g.proc.pid, t)) as f:
                    traced += any(ln.startswith("TracerPid:") and ln.split()[1] != "0"
                                  for ln in f)
            except OSError:
                pass
        if traced == len(tids) and os.path.exists(trace):
            break
        if tracer.poll() is not None:
            raise RuntimeError("strace exited: %s" % tracer.stderr.read().decode())
        time.sleep(0.05)
    check(traced == len(tids), "strace attached to all %d threads (%d)" % (len(tids), traced))

    c = socket.create_connection(("127.0.0.1", g.port), timeout=10)
    c.sendall(b"GET /readyz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    time.sleep(1.0)  # accept4 fails meanwhile (the counts below decide, not this time)
    tracer.send_signal(signal.SIGINT)  # detaches; the gateway runs on untraced
    tracer.wait(10)
    tracer = None

    with open(trace) as f:
        lines = f.read().splitlines()
    failed = sum(1 for ln in lines if "accept4(" in ln and "ENOBUFS" in ln and "INJECTED" in ln)
    print("accept4 calls failed with ENOBUFS in ~1 s: %d" % failed)
    check(failed >= 1, "accept4 was called and failed with the injected ENOBUFS (%d)" % failed)
    check(failed <= 50, "the worker paused instead of spinning: %d failed accept4 calls in ~1 s "
          "(a pause of 100 ms makes about 10)" % failed)

    # the connection that waited through it is served once accept4 works again
    with c, c.makefile("rb") as f:
        data = f.read()  # to the end: the request asked to close
    check(data.startswith(b"HTTP/1.1 200"), "the waiting connection was served: %r" % data[:60])

    log = g.logs(100000)
    warned = log.count("accept: out of kernel memory")
    print("warnings: %d" % warned)
    check(1 <= warned <= 3, "the warning once a second, naming the cause (%d)" % warned)
    check("error=No buffer space available" in log, "the warning names the error")
    check(g.alive(), "the gateway is still running")
except Exception:
    print(g.logs())
    raise
finally:
    if tracer is not None:
        tracer.kill()
        tracer.wait(5)
    g.cleanup()

finish()
