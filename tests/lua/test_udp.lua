-- UDP (and Unix datagram) endpoints: coroutine style and protocol style.
local gfl = require "globeflower"
local T = {}

local function echo_endpoint()
    local srv = assert(gfl.udp({ local_host = "127.0.0.1", local_port = 0 }))
    local task = gfl.spawn(function()
        while true do
            local data, host, port = srv:recvfrom()
            if not data then return end
            srv:sendto(data, host, port)
        end
    end)
    return srv, task
end

function T.echo_coroutine_style()
    local srv, task = echo_endpoint()
    local shost, sport = srv:getsockname()
    assert(shost == "127.0.0.1" and sport > 0)
    local c = assert(gfl.udp({ local_host = "127.0.0.1" }))
    for i = 1, 20 do
        assert(c:sendto("ping " .. i, shost, sport))
        local data, host, port = c:recvfrom()
        assert(data == "ping " .. i, data)
        assert(host == shost and port == sport)
    end
    -- empty datagrams are datagrams too
    assert(c:sendto("", shost, sport))
    assert(c:recvfrom() == "")
    c:close()
    srv:close()
    assert(srv:wait_closed())
    task:await()
    local data, msg = srv:recvfrom()
    assert(data == nil and type(msg) == "string")
end

function T.echo_protocol_style()
    local Echo = {}
    function Echo:connection_made(tr) self.tr = tr end
    function Echo:datagram_received(data, host, port) self.tr:sendto(data:upper(), host, port) end
    local tr, proto = assert(gfl.create_datagram_endpoint(Echo, { local_host = "127.0.0.1", local_port = 0 }))
    assert(proto.tr == tr, "connection_made got the transport")
    local host, port = tr:getsockname()

    local got = gfl.future()
    local lost = gfl.future()
    local Client = {}
    function Client:connection_made(t) t:send("hello") end
    function Client:datagram_received(data, h, p) got:set_result(data, h, p) end
    function Client:connection_lost(err) lost:set_result(err == nil) end
    local ct = assert(gfl.create_datagram_endpoint(function() return setmetatable({}, { __index = Client }) end,
        { remote_host = host, remote_port = port }))
    local data, h, p = got:await()
    assert(data == "HELLO" and h == host and p == port)
    assert(select(2, ct:getpeername()) == port)
    assert(ct:get_extra_info("peername"))
    ct:close()
    assert(lost:await() == true)
    tr:close()
    tr:wait_closed()
end

function T.connected_errors_are_values()
    -- A connected socket to a closed port: ICMP port unreachable comes
    -- back as an error (never a crash, the endpoint stays open).
    local probe = assert(gfl.udp({ local_host = "127.0.0.1" }))
    local _, free = probe:getsockname()
    probe:close()
    local c = assert(gfl.udp({ remote_host = "127.0.0.1", remote_port = free }))
    c:send("x")
    local data, msg, code = c:recvfrom()
    assert(data == nil and msg:match("ConnectionRefused") and code == -111, msg)
    assert(not c:is_closing())
    c:close()
    -- error_received in protocol style
    local errs = gfl.future()
    local tr = assert(gfl.create_datagram_endpoint(function()
        return { error_received = function(_, e) if not errs:done() then errs:set_result(e) end end }
    end, { remote_host = "127.0.0.1", remote_port = free }))
    tr:send("x")
    local e = errs:await()
    assert(e.type == "ConnectionRefusedError" and e.code == -111, tostring(e))
    tr:close()
end

function T.bad_arguments_raise_and_io_failures_return()
    assert(not pcall(gfl.udp, { remote_host = "127.0.0.1" }), "a remote address needs a port")
    local ep = assert(gfl.udp({ local_host = "127.0.0.1" }))
    assert(not pcall(ep.sendto, ep, "x", "not an address", 53), "names are not resolved by sendto")
    local ok, msg = ep:send("x")
    assert(ok == nil and msg:match("not connected"), msg)
    ep:close()
    ep:wait_closed()
    local ok2, msg2 = ep:sendto("x", "127.0.0.1", 9)
    assert(ok2 == nil and type(msg2) == "string")
    local s, m = gfl.udp({ local_host = "127.0.0.1", local_port = 1 })
    assert(s == nil and m:match("Permission") or s, m) -- port 1 needs root
    if s then s:close() end
    local bad, m2 = gfl.udp({ local_host = "no-such-host.invalid" })
    assert(bad == nil and type(m2) == "string")
end

function T.queue_pauses_reading()
    local srv = assert(gfl.udp({ local_host = "127.0.0.1", queue = 4 }))
    local host, port = srv:getsockname()
    local c = assert(gfl.udp({ local_host = "127.0.0.1" }))
    for i = 1, 10 do c:sendto(tostring(i), host, port) end
    gfl.sleep(0.05)
    assert(srv:pending() == 4, srv:pending())
    assert(not srv:is_reading())
    -- reading drains the queue and lets the kernel's datagrams in again
    for i = 1, 10 do assert(srv:recvfrom() == tostring(i)) end
    c:close()
    srv:close()
end

function T.recvfrom_can_be_cancelled_and_timed_out()
    local ep = assert(gfl.udp({ local_host = "127.0.0.1" }))
    local ok, e = gfl.pcall(gfl.wait_for, function() return ep:recvfrom() end, 0.02)
    assert(not ok and gfl.is_timeout(e))
    local host, port = ep:getsockname()
    local c = assert(gfl.udp({ local_host = "127.0.0.1" }))
    c:sendto("after", host, port)
    assert(ep:recvfrom() == "after")
    c:close()
    ep:close()
end

function T.unix_datagram_endpoints()
    local path = os.tmpname()
    os.remove(path)
    local srv = assert(gfl.udp({ local_path = path }))
    local cpath = path .. ".c"
    local c = assert(gfl.udp({ local_path = cpath, remote_path = path }))
    assert(c:send("over unix"))
    local data, from = srv:recvfrom()
    assert(data == "over unix" and from == cpath, tostring(from))
    assert(srv:sendto("back", from))
    assert(c:recvfrom() == "back")
    c:close()
    srv:close()
    os.remove(path)
    os.remove(cpath)
end

function T.ipv6_when_available()
    local srv = gfl.udp({ local_host = "::1" })
    if not srv then return end -- no IPv6 loopback here
    local host, port = srv:getsockname()
    assert(host == "::1")
    local c = assert(gfl.udp({ family = gfl.AF_INET6 }))
    assert(c:sendto("six", "::1", port))
    local data, h = srv:recvfrom()
    assert(data == "six" and h == "::1")
    c:close()
    srv:close()
end

function T.collected_endpoint_is_closed()
    local host, port
    do
        local ep = assert(gfl.udp({ local_host = "127.0.0.1" }))
        host, port = ep:getsockname()
    end
    collectgarbage()
    collectgarbage()
    gfl.sleep(0)
    -- the port is free again
    local again = assert(gfl.udp({ local_host = host, local_port = port }))
    again:close()
end

return T
