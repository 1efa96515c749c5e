-- Echo servers for bench/lua/run: the same server in four styles.
--   lua5.4 bench/lua/echo_server.lua IMPL [port]
-- IMPL: gfl-coro (globeflower streams: a task per connection,
-- read/write/drain), gfl-proto (globeflower protocol style:
-- data_received writes back), luv (libuv: read_start/write), cqueues (a
-- coroutine per connection: xread/xwrite). Prints "READY <port>" once it
-- listens on 127.0.0.1, then serves until killed (SIGTERM/SIGINT).
local impl = arg[1] or "gfl-coro"
local port = tonumber(arg[2] or "0")

local function ready(p)
    io.stdout:write("READY ", p, "\n")
    io.stdout:flush()
end

if impl == "gfl-coro" then
    local gfl = require "globeflower"
    gfl.run(function()
        local srv = assert(gfl.start_server(function(s)
            while true do
                local data = s:read(65536)
                if not data or data == "" then break end
                s:write(data)
                s:drain()
            end
            s:close()
        end, "127.0.0.1", port, { backlog = 1024 }))
        ready(srv:port())
        srv:serve_forever()
    end)
elseif impl == "gfl-proto" then
    local gfl = require "globeflower"
    local Echo = {}
    Echo.__index = Echo
    function Echo:connection_made(t) self.t = t end
    function Echo:data_received(data) self.t:write(data) end
    -- A peer that does not read: stop reading until what we wrote back
    -- drains, or the write buffer grows without bound.
    function Echo:pause_writing() self.t:pause_reading() end
    function Echo:resume_writing() self.t:resume_reading() end
    gfl.run(function()
        local srv = assert(gfl.create_server(function() return setmetatable({}, Echo) end,
            "127.0.0.1", port, { backlog = 1024 }))
        ready(srv:port())
        srv:serve_forever()
    end)
elseif impl == "luv" then
    local uv = require "luv"
    local server = uv.new_tcp()
    assert(server:bind("127.0.0.1", port))
    assert(server:listen(1024, function(err)
        assert(not err, err)
        local c = uv.new_tcp()
        server:accept(c)
        c:nodelay(true) -- as globeflower (and asyncio) do for every TCP connection
        -- The same bound for libuv: past 64 KiB queued, stop reading until
        -- the queue drains (libuv has no high-water mark of its own).
        local on_read
        on_read = function(rerr, data)
            if not data then
                c:close()
                return
            end
            c:write(data, function()
                if c:get_write_queue_size() == 0 and not c:is_closing() then
                    c:read_start(on_read)
                end
            end)
            if c:get_write_queue_size() > 65536 then
                c:read_stop()
            end
        end
        c:read_start(on_read)
    end))
    ready(server:getsockname().port)
    uv.run()
elseif impl == "cqueues" then
    local cqueues = require "cqueues"
    local socket = require "cqueues.socket"
    local cq = cqueues.new()
    local srv = socket.listen({ host = "127.0.0.1", port = port, nodelay = true })
    srv:listen()
    local _, _, p = srv:localname()
    cq:wrap(function()
        for c in srv:clients() do
            cq:wrap(function()
                c:setmode("b", "bn")
                -- a reset peer (the load generator stopping) ends this
                -- connection, not the server
                pcall(function()
                    while true do
                        local data = c:xread(-65536, "b")
                        if not data then break end
                        c:xwrite(data, "bn")
                    end
                end)
                c:close()
            end)
        end
    end)
    ready(p)
    assert(cq:loop())
else
    error("IMPL: gfl-coro, gfl-proto, luv or cqueues")
end
