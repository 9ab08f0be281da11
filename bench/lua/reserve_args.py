"""ed847e4's reserve script (the sale id sent as ARGV[5]) against the header's (the
sale id cut out of KEYS[1]), and a tried step further (the order record "user qty idem" and the
idempotency entry handed over ready-made by the gateway instead of concatenated in Lua), for
bench/script_steps.py; CALLGRIND=1 N=20000 ROUNDS=1 counts redis-server's instructions."""
OLD = open(os.path.join(SRC, "bench", "lua", "reserve_ed847e4.lua")).read()
A = OLD_ARGS


def rep(t, a, b):
    assert a in t, a
    return t.replace(a, b)


v("ed847e4", OLD, A)
v("ed847e4, with an idempotency key", OLD, A[:7] + ["k__rand_int__"] + A[8:])
v("ed847e4, one user over the limit (refusals)", OLD, A[:5] + ["u1"] + A[6:])
REC = rep(FULL, "redis.call('HSET', KEYS[3], ARGV[4], ARGV[1] .. ' ' .. ARGV[2] .. ' ' .. ARGV[3])",
          "redis.call('HSET', KEYS[3], ARGV[4], ARGV[5])")
v("tried: the order record from the gateway (ARGV[5])", REC, STD + ["u__rand_int__ 1 "])
IK = rep(rep(REC, "  ik = ARGV[1] .. '\\n' .. ARGV[3]\n", "  ik = ARGV[6]\n"),
         "redis.call('HSET', KEYS[4], ik, ARGV[4] .. ' ' .. ARGV[2])",
         "redis.call('HSET', KEYS[4], ik, ARGV[7])")
v("tried: + the idem field and value from the gateway, with a key", IK,
  STD[:7] + ["k__rand_int__", STD[8], "u__rand_int__ 1 k__rand_int__",
             "u__rand_int__\nk__rand_int__", "o__rand_int__ 1"])
