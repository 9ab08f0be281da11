"""wrk Lua shared by the benches (bench/bench.py, bench/profile.py, bench/bench_identity.py)."""

# The answer count, appended to a wrk script: every thread counts its answers by status
# in the global `statuses`, and done() prints their sum as one line,
# "answers: 202=N 429=M" (bench.run_wrk parses it into r["answers"]). It defines
# setup, response and done: a script that appends it must define none of them.
ANSWERS_LUA = r"""
statuses = {}
local answer_threads = {}
function setup(thread) table.insert(answer_threads, thread) end
function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
end
function done(summary, latency, requests)
   local total = {}
   for _, t in ipairs(answer_threads) do
      for code, n in pairs(t:get("statuses") or {}) do total[code] = (total[code] or 0) + n end
   end
   io.write("answers:")
   for code, n in pairs(total) do io.write(string.format(" %d=%d", code, n)) end
   io.write("\n")
end
"""
