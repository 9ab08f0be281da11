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

# The answer count by kind, for scripts whose answers share a status: as ANSWERS_LUA, but
# each answer is counted under "STATUS-WHAT", WHAT the body's "status" for a 202
# ("202-entered", "202-queued"; "-duplicate" added for a lottery entry given back) and its
# "reason", else its "error", for any other status ("403-admission_spent", "429-rate_limited").
# done() prints "answers: 202-queued=N 403-admission_spent=M" (profile.answer_kinds reads
# it). Defines setup, response and done as ANSWERS_LUA does.
KINDS_LUA = r"""
statuses = {}
local kind_threads = {}
function setup(thread) table.insert(kind_threads, thread) end
function response(status, headers, body)
   local k = tostring(status)
   body = body or ""
   if status == 202 then
      k = k .. "-" .. (string.match(body, '"status":"([%w_]+)"') or "none")
      if string.find(body, '"duplicate":true', 1, true) then k = k .. "-duplicate" end
   else
      local why = string.match(body, '"reason":"([%w_]+)"') or
                  string.match(body, '"error":"([%w_]+)"')
      if why then k = k .. "-" .. why end
   end
   statuses[k] = (statuses[k] or 0) + 1
end
function done(summary, latency, requests)
   local total = {}
   for _, t in ipairs(kind_threads) do
      for k, n in pairs(t:get("statuses") or {}) do total[k] = (total[k] or 0) + n end
   end
   io.write("answers:")
   for k, n in pairs(total) do io.write(string.format(" %s=%d", k, n)) end
   io.write("\n")
end
"""
