-- wrk: closed-loop check of the cheapest rejection, the sold-out answer.
--   (create a sale with stock 0 or sell it out first)
--   wrk -t1 -c64 -d5s -s loadtest/wrk/sold_out.lua http://127.0.0.1:8080 -- SALE_ID
-- Every request must get 410 sold_out; anything else is counted and printed at
-- the end, and wrk's own numbers then show the rejection path's throughput.
local sale = "wrk-sold-out"
local counter = 0
local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   if args[1] then sale = args[1] end
   wrk.method = "POST"
   wrk.path = "/v1/sales/" .. sale .. "/orders"
   wrk.headers["Content-Type"] = "application/json"
   wrong = 0
   last_wrong = ""
end

function request()
   counter = counter + 1
   return wrk.format(nil, nil, nil, string.format('{"user_id":"so-%d","qty":1}', counter))
end

function response(status, headers, body)
   if status ~= 410 then
      wrong = wrong + 1
      last_wrong = tostring(status) .. " " .. body
   end
end

function done(summary, latency, requests)
   local bad, example = 0, ""
   for _, t in ipairs(threads) do
      bad = bad + (t:get("wrong") or 0)
      if (t:get("wrong") or 0) > 0 then example = t:get("last_wrong") end
   end
   if bad == 0 then
      io.write("sold_out: every answer was 410\n")
   else
      io.write(string.format("sold_out: %d answers were not 410, e.g. %s\n", bad, example))
   end
end
