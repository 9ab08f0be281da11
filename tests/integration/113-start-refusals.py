"""Configurations the start refuses, through --check-config and a real start:

- a Redis inventory (a fleet) with identity.mode=jwt and no shared JWK set
  (neither identity.jwks_file nor identity.jwks_url): each gateway would
  verify only the tokens of its own data dir's key, so the fleet would refuse
  most buyers. Refused, naming the way out; identity.own_key_on_redis=true
  (one gateway on Redis) or a JWK set passes;
- the test seams debug.wall_offset_ms and debug.fleet_tick (also through their
  environment variables) without server.admin_debug_routes: refused; with it:
  accepted;
- server.liveness_timeout below 1 s (an idle loop turns every 0.5 s): refused.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fg import BIN, check, eq, finish, need_binary  # noqa: E402

need_binary("flashgate")
tmp = tempfile.mkdtemp(prefix="fg-refusals-")
REDIS = "redis://127.0.0.1:1"  # --check-config does not connect


def check_config(*args, env=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith("FLASHGATE_")}
    e.update(env or {})
    out = subprocess.run([os.path.join(BIN, "flashgate"), "--check-config", "--data-dir",
                          os.path.join(tmp, "data"), "--admin-token", "t" * 32] + list(args),
                         capture_output=True, text=True, timeout=30, env=e)
    return out.returncode, out.stdout + out.stderr


try:
    # --- a fleet verifying with its own key ---
    rc, out = check_config("--inventory", REDIS)
    eq(rc, 2, "jwt with the data dir's key on a Redis inventory is refused")
    check("identity.mode" in out and "identity.own_key_on_redis" in out and "JWK set" in out,
          "the refusal names the key, the shared JWK set and the opt-out: %s" % out[-600:])
    rc, out = check_config("--inventory", REDIS, "--set", "identity.own_key_on_redis=true")
    eq(rc, 0, "one gateway on Redis says so: accepted (%s)" % out[-300:])
    jwks = os.path.join(tmp, "jwks.json")
    with open(jwks, "w") as f:
        json.dump({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256",
                             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}, f)
    rc, out = check_config("--inventory", REDIS, "--set", "identity.jwks_file=" + jwks)
    eq(rc, 0, "a shared JWK set on Redis: accepted (%s)" % out[-300:])
    rc, out = check_config("--inventory", REDIS, "--set", "identity.mode=none")
    eq(rc, 0, "identity.mode=none on Redis: accepted (%s)" % out[-300:])
    rc, out = check_config()
    eq(rc, 0, "the memory inventory with the data dir's key: accepted (%s)" % out[-300:])

    # --- the test seams ---
    for key, val, var in (("debug.wall_offset_ms", "-3600000", "FLASHGATE_DEBUG_WALL_OFFSET_MS"),
                          ("debug.fleet_tick", "1h", "FLASHGATE_DEBUG_FLEET_TICK")):
        rc, out = check_config("--set", "%s=%s" % (key, val))
        eq(rc, 2, "%s without the debug routes is refused" % key)
        check(key in out and "server.admin_debug_routes" in out,
              "the refusal names %s and the debug routes: %s" % (key, out[-400:]))
        rc, out = check_config(env={var: val})
        eq(rc, 2, "%s from the environment (%s) without the debug routes is refused" % (key, var))
        rc, out = check_config("--enable-debug-routes", "--set", "%s=%s" % (key, val))
        eq(rc, 0, "%s with the debug routes is accepted (%s)" % (key, out[-300:]))
    rc, out = check_config("--enable-debug-routes", "--set", "debug.wall_offset_ms=soon")
    eq(rc, 2, "debug.wall_offset_ms must be a number")

    # --- the liveness bound ---
    rc, out = check_config("--set", "server.liveness_timeout=500ms")
    eq(rc, 2, "server.liveness_timeout under 1 s is refused")
    rc, out = check_config("--set", "server.liveness_timeout=0")
    eq(rc, 0, "server.liveness_timeout=0 (off) is accepted")
finally:
    shutil.rmtree(tmp, ignore_errors=True)
finish()
