-- bench: the nginx + Lua peer (OpenResty style, on Debian 12's libnginx-mod-http-lua),
-- what a team would build instead of flashgate. bench/nginx-lua.conf.in loads it;
-- bench/bench.py runs it beside flashgate in the same run (bench/README.md "What runs").
--
-- POST /v1/sales/SALE/orders with {"user_id":"...","qty":1}:
--   memory mode: stock in a shared dict (one atomic incr), the per-user mark
--     in another (add fails for a second buy), one write(2) per order;
--   redis mode: one EVALSHA per request of the usual SISMEMBER/GET/DECR/SADD
--     script over a keep-alive cosocket pool (no pipelining across requests:
--     each request uses its own pooled connection), then one write(2) per order.
-- Answers 202 {"order_id":...}, 409 (this user bought), 410 (sold out), 400, 404.
-- The order record (one line appended to orders.log, unbuffered: one write(2)
-- per order) is what flashgate's spool record is in `write` durability. It is opened
-- in init_by_lua (the master, as nginx opens its own logs): the worker inherits it.
--
-- Debian 12 packages no lua-resty-redis, so the few lines of RESP it needs are here.
local _M = {}

local ngx = ngx
local tcp = ngx.socket.tcp
local str_match = string.match
local str_format = string.format
local concat = table.concat

local stock = ngx.shared.peer_stock
local users = ngx.shared.peer_users

-- KEYS[1] stock left (a string counter), KEYS[2] set of users who bought.
-- Returns the stock left after this order, -1 if this user bought already,
-- -2 if sold out (or unknown sale).
local SCRIPT = [[
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then return -1 end
local left = tonumber(redis.call('GET', KEYS[1]) or '0')
if left <= 0 then return -2 end
left = redis.call('DECR', KEYS[1])
redis.call('SADD', KEYS[2], ARGV[1])
return left
]]
_M.SCRIPT = SCRIPT

local cfg = { redis_host = "127.0.0.1", redis_port = 6379, pool = 1024, log = nil }
local sha = nil        -- set by the first NOSCRIPT round trip
local logf = nil       -- orders.log, unbuffered
local seq = 0

function _M.init(opts)
    for k, v in pairs(opts) do cfg[k] = v end
    logf = assert(io.open(cfg.log, "a"))
    logf:setvbuf("no")
end

local function next_order_id()
    seq = seq + 1
    return str_format("p%d-%d", ngx.worker.pid(), seq)
end

-- RESP -----------------------------------------------------------------------

local function resp_cmd(args)
    local out = { "*", #args, "\r\n" }
    for i = 1, #args do
        local a = tostring(args[i])
        out[#out + 1] = "$"
        out[#out + 1] = #a
        out[#out + 1] = "\r\n"
        out[#out + 1] = a
        out[#out + 1] = "\r\n"
    end
    return concat(out)
end

-- Reads one reply; integers and status/error lines are all the script needs.
-- Returns value or nil, err ("-ERR..." text for Redis errors).
local function resp_read(sock)
    local line, err = sock:receive("*l")
    if not line then return nil, err end
    local t = line:sub(1, 1)
    if t == ":" then return tonumber(line:sub(2)) end
    if t == "+" then return line:sub(2) end
    if t == "-" then return nil, line:sub(2) end
    if t == "$" then
        local n = tonumber(line:sub(2))
        if n < 0 then return ngx.null end
        local data, e = sock:receive(n + 2)
        if not data then return nil, e end
        return data:sub(1, n)
    end
    return nil, "unexpected reply " .. line
end

local function redis_call(sock, args)
    local ok, err = sock:send(resp_cmd(args))
    if not ok then return nil, err end
    return resp_read(sock)
end

local function reserve_redis(sale, user)
    local sock = tcp()
    sock:settimeout(1000)
    local ok, err = sock:connect(cfg.redis_host, cfg.redis_port)
    if not ok then return nil, err end
    local k1, k2 = "{peer:" .. sale .. "}:left", "{peer:" .. sale .. "}:users"
    local res
    if sha then
        res, err = redis_call(sock, { "EVALSHA", sha, 2, k1, k2, user })
    end
    if not sha or (not res and err and err:sub(1, 8) == "NOSCRIPT") then
        local s
        s, err = redis_call(sock, { "SCRIPT", "LOAD", SCRIPT })
        if not s then sock:close(); return nil, err end
        sha = s
        res, err = redis_call(sock, { "EVALSHA", sha, 2, k1, k2, user })
    end
    if not res then
        sock:close()
        return nil, err
    end
    sock:setkeepalive(60000, cfg.pool)
    return res
end

local function reserve_memory(sale, user)
    if not users:add(sale .. "\n" .. user, true) then
        return -1
    end
    local left = stock:incr(sale, -1)
    if not left or left < 0 then
        users:delete(sale .. "\n" .. user)
        if left then stock:incr(sale, 1) end
        return -2
    end
    return left
end

local function answer(status, body)
    ngx.status = status
    ngx.header["Content-Length"] = #body -- else chunked; Content-Type is default_type
    ngx.print(body)
    return ngx.exit(status)
end

-- POST /v1/sales/SALE/orders
function _M.buy(mode)
    local sale = ngx.var.peer_sale
    ngx.req.read_body()
    local body = ngx.req.get_body_data()
    local user = body and str_match(body, '"user_id"%s*:%s*"([%w%._%-]+)"')
    if not user or #user > 64 then
        return answer(400, '{"error":"bad_request","message":"user_id missing or invalid"}\n')
    end
    local left, err
    if mode == "redis" then
        left, err = reserve_redis(sale, user)
        if not left then
            ngx.log(ngx.ERR, "redis: ", err)
            return answer(503, '{"error":"unavailable"}\n')
        end
    else
        left = reserve_memory(sale, user)
    end
    if left == -1 then
        return answer(409, '{"error":"limit_per_user"}\n')
    elseif left == -2 then
        return answer(410, '{"error":"sold_out"}\n')
    end
    local id = next_order_id()
    -- one string, so one write(2): unbuffered, every argument of write() would be its own
    logf:write(concat({ id, sale, user, "1", ngx.now() }, " ") .. "\n")
    return answer(202, str_format('{"order_id":"%s","status":"queued","sale_id":"%s","qty":1}\n',
                                   id, sale))
end

-- PUT /admin/sales/SALE?stock=N (memory mode's stock; redis mode's keys are set by the bench)
function _M.put_sale()
    local sale = ngx.var.peer_sale
    local n = tonumber(ngx.var.arg_stock)
    if not n then return answer(400, '{"error":"stock"}\n') end
    stock:set(sale, n)
    return answer(200, '{"ok":true}\n')
end

return _M
