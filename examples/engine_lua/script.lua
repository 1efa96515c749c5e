-- The engine's script: a TCP echo server, a client pinging it, a UDP
-- exchange (what game networking uses) and a timer, all running on the
-- engine's loop while it renders frames.
local gfl = require "globeflower"

result = "running"
local pongs, ticks = 0, 0
local udp_done = false

gfl.spawn(function()
    local srv = assert(gfl.udp({ local_host = "127.0.0.1" }))
    local host, port = srv:getsockname()
    gfl.spawn(function()
        while true do
            local data, h, p = srv:recvfrom()
            if not data then return end -- closed
            srv:sendto(data, h, p)
        end
    end)
    local c = assert(gfl.udp({ remote_host = host, remote_port = port }))
    for i = 1, 10 do
        c:send("state " .. i)
        assert(c:recv() == "state " .. i)
    end
    c:close()
    srv:close()
    udp_done = true
end)

local ticker
ticker = function()
    ticks = ticks + 1
    gfl.call_later(0.05, ticker)
end
gfl.call_later(0.05, ticker)

gfl.spawn(function()
    local srv = assert(gfl.start_server(function(s)
        while true do
            local line = s:readline()
            if line == "" then break end
            s:write("pong " .. line)
        end
        s:close()
    end, "127.0.0.1", 0))
    local c = assert(gfl.open_connection("127.0.0.1", srv:port()))
    for i = 1, 20 do
        c:write(i .. "\n")
        assert(c:readline() == "pong " .. i .. "\n")
        pongs = pongs + 1
        gfl.sleep(0.01)
    end
    c:close()
    srv:close()
    -- a task left waiting forever: the host's teardown must cope with it
    gfl.spawn(function() gfl.sleep(3600) end)
    while not udp_done do gfl.sleep(0.01) end
    result = ticks > 0 and "ok" or "no timer ticks"
end)

-- Called by the host once per frame; returning true stops the engine.
function frame(n)
    return result ~= "running"
end
