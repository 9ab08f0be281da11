"""169d8da's reserve script against the header's, for bench/script_steps.py."""
OLD = open(os.path.join(SRC, "bench", "lua", "reserve_169d8da.lua")).read()
v("169d8da", OLD)
v("169d8da, with an idempotency key", OLD, STD[:7] + ["k__rand_int__"] + STD[8:])
v("169d8da, one user over the limit (refusals)", OLD, STD[:5] + ["u1"] + STD[6:])
