-- The cost of pumping an idle loop once from Lua (what a game engine does
-- every frame): gfl.loop():run_once(0) against luv's uv.run("nowait") and
-- cqueues' cq:step(0), with the same number of idle registered sockets on
-- every side (N loopback connections: both ends watched for reading, plus
-- the listener). With N = 0 luv has no active handle and uv.run("nowait")
-- returns without polling at all; with N > 0 every side really polls.
--
--   lua5.4 bench/lua/idle.lua gfl|luv|cqueues [N] [iterations]
-- prints one line:
--   RESULT bench=idle impl=gfl lua=Lua 5.4 n=1000000 conns=500 wall_ns=... cpu_ns=...
local impl = arg[1] or "gfl"
local nconn = tonumber(arg[2] or "500")
local iters = tonumber(arg[3] or "1000000")
local lua = type(jit) == "table" and jit.version or _VERSION

local pump, now

if impl == "gfl" then
    local gfl = require "globeflower"
    local conns = {}
    gfl.run(function()
        local srv = assert(gfl.start_server(function(s) s:read() end, "127.0.0.1", 0, { backlog = 1024 }))
        for i = 1, nconn do
            conns[i] = assert(gfl.open_connection("127.0.0.1", srv:port()))
        end
        while srv:connection_count() < nconn do gfl.sleep(0.001) end
        gfl.sleep(0.05)
        conns.srv = srv
    end)
    local loop = gfl.loop()
    local run_once = loop.run_once
    pump = function(n)
        for _ = 1, n do run_once(loop, 0) end
    end
    now = gfl.time
elseif impl == "luv" then
    local uv = require "luv"
    local handles, connected, accepted = {}, 0, 0
    local server = uv.new_tcp()
    assert(server:bind("127.0.0.1", 0))
    local port = server:getsockname().port
    assert(server:listen(1024, function()
        local c = uv.new_tcp()
        server:accept(c)
        c:read_start(function() end)
        handles[#handles + 1] = c
        accepted = accepted + 1
    end))
    for _ = 1, nconn do
        local c = uv.new_tcp()
        c:connect("127.0.0.1", port, function(err)
            assert(not err, err)
            c:read_start(function() end)
            connected = connected + 1
        end)
        handles[#handles + 1] = c
    end
    if nconn == 0 then
        server:close() -- nothing active at all: the case luv does not poll
    end
    while connected < nconn or accepted < nconn do uv.run("once") end
    pump = function(n)
        local run = uv.run
        for _ = 1, n do run("nowait") end
    end
    now = function() return uv.hrtime() / 1e9 end
elseif impl == "cqueues" then
    local cqueues = require "cqueues"
    local socket = require "cqueues.socket"
    local cq = cqueues.new()
    local srv = socket.listen({ host = "127.0.0.1", port = 0 })
    srv:listen()
    local _, _, port = srv:localname()
    local accepted, connected = 0, 0
    cq:wrap(function()
        for _ = 1, nconn do
            local c = srv:accept()
            accepted = accepted + 1
            cq:wrap(function() c:xread("*a") end)
        end
    end)
    for _ = 1, nconn do
        cq:wrap(function()
            local c = socket.connect({ host = "127.0.0.1", port = port })
            c:connect()
            connected = connected + 1
            c:xread("*a")
        end)
    end
    while connected < nconn or accepted < nconn do assert(cq:step(1)) end
    pump = function(n)
        local step = cq.step
        for _ = 1, n do step(cq, 0) end
    end
    now = cqueues.monotime
else
    error("impl: gfl, luv or cqueues")
end

pump(math.floor(iters / 10)) -- warm up
local w0, c0 = now(), os.clock()
pump(iters)
local w1, c1 = now(), os.clock()
print(string.format("RESULT bench=idle impl=%s lua=%s n=%d conns=%d wall_ns=%.1f cpu_ns=%.1f",
    impl, lua:gsub(" ", "_"), iters, nconn, (w1 - w0) * 1e9 / iters, (c1 - c0) * 1e9 / iters))
os.exit(0)
