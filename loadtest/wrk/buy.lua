-- wrk: closed-loop buy storm, a distinct user per request.
--   wrk -t1 -c64 -d5s -s loadtest/wrk/buy.lua http://127.0.0.1:8080 -- SALE_ID
-- Each request is POST /v1/sales/SALE_ID/orders for a new user_id (thread
-- number + counter), from one of 10,000 X-Forwarded-For addresses (the gateway
-- believes them only from --server-trusted-proxies). Prints the answer mix at
-- the end. Closed loop: wrk waits for each answer before sending again, so its
-- latencies hide queueing (coordinated omission); use flashgate-load for numbers.
local counter = 0
local threads = {}
local sale = "wrk"

function setup(thread)
   thread:set("thread_id", #threads)
   table.insert(threads, thread)
end

function init(args)
   if args[1] then sale = args[1] end
   wrk.method = "POST"
   wrk.path = "/v1/sales/" .. sale .. "/orders"
   wrk.headers["Content-Type"] = "application/json"
   statuses = {}
end

function request()
   counter = counter + 1
   local user = string.format("wrk-%d-%d", thread_id, counter)
   local a = counter % 10000
   wrk.headers["X-Forwarded-For"] = string.format("198.18.%d.%d", math.floor(a / 256), a % 256)
   return wrk.format(nil, nil, nil, string.format('{"user_id":"%s","qty":1}', user))
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
   local total = {}
   for _, t in ipairs(threads) do
      local s = t:get("statuses")
      for code, n in pairs(s or {}) do total[code] = (total[code] or 0) + n end
   end
   io.write("answers:")
   for code, n in pairs(total) do io.write(string.format(" %d=%d", code, n)) end
   io.write("\n")
end
