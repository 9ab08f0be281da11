"""169d8da's reserve script against the header's, for bench/script_steps.py."""
OLD = open(os.path.join(SRC, "bench", "lua", "reserve_169d8da.lua")).read()
A = OLD_ARGS  # 169d8da's text takes the sale id as a fifth argument
v("169d8da", OLD, A)
v("169d8da, with an idempotency key", OLD, A[:7] + ["k__rand_int__"] + A[8:])
v("169d8da, one user over the limit (refusals)", OLD, A[:5] + ["u1"] + A[6:])
