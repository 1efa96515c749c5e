-- Streams over TCP and Unix sockets, servers, protocol style, DNS, and
-- the garbage collection of abandoned streams.
local gfl = require "globeflower"
local T = {}

local function echo_server(opts)
    return assert(gfl.start_server(function(s)
        while true do
            local data = s:read(65536)
            if not data or data == "" then break end
            s:write(data)
            s:drain()
        end
        s:close()
    end, "127.0.0.1", 0, opts))
end

function T.tcp_echo_and_reads()
    local srv = echo_server()
    local c = assert(gfl.open_connection("127.0.0.1", srv:port()))
    c:write("line one\nline two\nabcdefXYZ")
    assert(c:readline() == "line one\n")
    assert(c:readuntil("two\n") == "line two\n")
    assert(c:readexactly(6) == "abcdef")
    assert(c:read(2) == "XY")
    assert(c:read(10) == "Z")
    local host, port = c:getpeername()
    assert(host == "127.0.0.1" and port == srv:port())
    assert(c:get_extra_info("peername"))
    c:write_eof()
    assert(c:read() == "", "EOF after write_eof")
    assert(c:at_eof())
    c:close()
    assert(c:wait_closed())
    srv:close()
    srv:wait_closed()
    assert(not srv:is_serving())
end

function T.readexactly_incomplete()
    local srv = assert(gfl.start_server(function(s)
        s:write("abc")
        s:close()
    end, "127.0.0.1", 0))
    local c = assert(gfl.open_connection("127.0.0.1", srv:port()))
    local data, msg, code, partial = c:readexactly(10)
    assert(data == nil and msg:match("IncompleteReadError") and code < 0 and partial == "abc", msg)
    assert(c:readline() == "")
    c:close()
    srv:close()
end

function T.connection_refused_is_a_value()
    local s, msg, code = gfl.open_connection("127.0.0.1", 1)
    assert(s == nil and msg:match("refused") and code == -111, msg)
    local t, msg2 = gfl.create_connection(function() return {} end, "127.0.0.1", 1)
    assert(t == nil and msg2:match("refused"))
end

function T.ports_above_65535_are_refused()
    -- glibc would take 73616 as 8080 (modulo 65536). A number out of range
    -- is a bad argument (raised); as a string it reaches the core, which
    -- refuses it (nil, message, code).
    local srv = echo_server()
    local wrapped = srv:port() + 65536
    local ok, err = gfl.pcall(gfl.open_connection, "127.0.0.1", wrapped)
    assert(not ok and tostring(err):match("bad argument #2 to 'open_connection'"), tostring(err))
    ok, err = gfl.pcall(gfl.start_server, function() end, "127.0.0.1", 99999)
    assert(not ok and tostring(err):match("bad argument"), tostring(err))
    local s, msg, code = gfl.open_connection("127.0.0.1", tostring(wrapped))
    assert(s == nil and msg:match("port must be 0%-65535") and code == -22, tostring(msg)) -- GFL_EINVAL
    local t, msg2 = gfl.create_connection(function() return {} end, "127.0.0.1", tostring(wrapped))
    assert(t == nil and msg2:match("port must be 0%-65535"), tostring(msg2))
    local listener, msg3, code3 = gfl.start_server(function() end, "127.0.0.1", "99999")
    assert(listener == nil and msg3:match("port must be 0%-65535") and code3 == -22, tostring(msg3))
    local list, msg4 = gfl.getaddrinfo("127.0.0.1", "70000")
    assert(list == nil and msg4:match("port must be 0%-65535"), tostring(msg4))
    srv:close()
    srv:wait_closed()
end

function T.accept_errors_reach_the_exception_handler()
    -- accept() failing with EMFILE goes to gfl.set_exception_handler.
    local got = gfl.future()
    gfl.set_exception_handler(function(msg, err)
        if not got:done() then got:set_result(msg, err) end
    end)
    local srv = echo_server()
    -- every descriptor in use but one, for the client's socket: the
    -- connection completes in the kernel and the server's accept() fails
    local files = {}
    while #files < 100000 do
        local f = io.open("/dev/null")
        if not f then break end
        files[#files + 1] = f
    end
    table.remove(files):close()
    local client = gfl.spawn(function()
        return gfl.create_connection(function() return {} end, "127.0.0.1", srv:port())
    end)
    local ok, msg, err = gfl.pcall(gfl.wait_for, got, 5) -- gfl.pcall: yields on 5.1 too
    for _, f in ipairs(files) do f:close() end
    assert(ok, msg)
    local queued = gfl.wait_for(client, 5)
    gfl.set_exception_handler(nil)
    assert(msg == "socket.accept() out of system resource", msg)
    assert(err.code == -24 and tostring(err):match("Too many open files"), tostring(err)) -- GFL_EMFILE
    if queued then queued:close() end
    srv:close()
    srv:wait_closed()
end

function T.write_after_close_is_a_value()
    local srv = echo_server()
    local c = assert(gfl.open_connection("127.0.0.1", srv:port()))
    c:close()
    c:wait_closed()
    local ok, msg = c:write("x")
    assert(ok == nil and type(msg) == "string")
    srv:close()
end

function T.cancel_mid_read()
    local srv = assert(gfl.start_server(function(s) gfl.sleep(5) s:close() end, "127.0.0.1", 0))
    local c = assert(gfl.open_connection("127.0.0.1", srv:port()))
    local reader = gfl.spawn(function() return c:read(10) end)
    gfl.sleep(0.01)
    reader:cancel()
    local ok, e = gfl.pcall(reader.await, reader)
    assert(not ok and gfl.is_cancelled(e))
    -- the stream is still usable after a cancelled read
    local ok2, e2 = gfl.pcall(gfl.wait_for, function() return c:read(1) end, 0.02)
    assert(not ok2 and gfl.is_timeout(e2))
    c:close()
    srv:abort_clients()
    srv:close()
end

function T.large_transfer_with_flow_control()
    local srv = echo_server()
    local c = assert(gfl.open_connection("127.0.0.1", srv:port()))
    local chunk = string.rep("x", 65536)
    local writer = gfl.spawn(function()
        for _ = 1, 64 do
            c:write(chunk)
            assert(c:drain())
        end
    end)
    local total = 0
    while total < 64 * 65536 do
        total = total + #c:read(1048576)
    end
    writer:await()
    assert(total == 64 * 65536)
    c:close()
    srv:close()
end

function T.unix_sockets()
    local path = os.tmpname()
    os.remove(path)
    local srv = assert(gfl.start_unix_server(function(s)
        s:write("hi " .. s:readline())
        s:close()
    end, path))
    local c = assert(gfl.open_unix_connection(path))
    c:write("unix\n")
    assert(c:read() == "hi unix\n")
    c:close()
    srv:close()
    srv:wait_closed()
    os.remove(path)
end

function T.many_concurrent_clients()
    local srv = echo_server()
    local tasks = {}
    for i = 1, 100 do
        tasks[i] = gfl.spawn(function()
            local c = assert(gfl.open_connection("127.0.0.1", srv:port()))
            for _ = 1, 10 do
                c:write("ping" .. i .. "\n")
                assert(c:readline() == "ping" .. i .. "\n")
            end
            c:close()
            return true
        end)
    end
    local r = gfl.gather((table.unpack or unpack)(tasks))
    assert(r.n == 100)
    srv:close()
end

function T.protocol_style()
    local made, lost = gfl.future(), gfl.future()
    local Echo = {}
    function Echo:connection_made(t) self.t = t made:set_result(true) end
    function Echo:data_received(d) self.t:write(d:upper()) end
    function Echo:eof_received() return false end
    function Echo:connection_lost(err) lost:set_result(err == nil) end
    local srv = assert(gfl.create_server(Echo, "127.0.0.1", 0))
    local got = gfl.future()
    local buf = {}
    local t, p = gfl.create_connection(function()
        return { data_received = function(self, d)
            buf[#buf + 1] = d
            if #table.concat(buf) == 5 then got:set_result(table.concat(buf)) end
        end }
    end, "127.0.0.1", srv:port())
    assert(t and p)
    assert(made:await())
    t:write("he", "llo")
    assert(got:await() == "HELLO")
    t:write_eof()
    assert(lost:await() == true)
    t:close()
    srv:close()
end

function T.protocol_callback_errors_keep_running()
    local reports = 0
    gfl.set_exception_handler(function() reports = reports + 1 end)
    local srv = assert(gfl.create_server(function()
        return { data_received = function() error("protocol bug") end }
    end, "127.0.0.1", 0))
    local c = assert(gfl.open_connection("127.0.0.1", srv:port()))
    c:write("x")
    gfl.sleep(0.05)
    c:write("y")
    gfl.sleep(0.05)
    gfl.set_exception_handler(nil)
    assert(reports == 2, reports)
    c:close()
    srv:abort_clients()
    srv:close()
end

function T.getaddrinfo()
    local list = assert(gfl.getaddrinfo("127.0.0.1", 80, { socktype = gfl.SOCK_STREAM }))
    assert(list[1].addr == "127.0.0.1" and list[1].port == 80 and list[1].family == gfl.AF_INET)
    local none, msg, code = gfl.getaddrinfo("nonexistent.invalid", 80)
    assert(none == nil and type(msg) == "string" and code < 0)
end

local function count_fds()
    local p = io.popen("ls /proc/" .. (io.open("/proc/self/stat"):read("*l"):match("^(%d+)")) .. "/fd 2>/dev/null | wc -l")
    local n = tonumber(p:read("*l"))
    p:close()
    return n
end

local function settle()
    for _ = 1, 3 do
        collectgarbage()
        gfl.sleep(0.02)
    end
    collectgarbage()
end

function T.gc_abandoned_streams_and_futures()
    local srv = echo_server()
    local port = srv:port()
    local function cycle(streams, futures)
        for i = 1, streams do
            local c = assert(gfl.open_connection("127.0.0.1", port))
            c:write("x")
            assert(c:read(1) == "x")
            -- dropped without close: __gc aborts it
            if i % 100 == 0 then
                collectgarbage()
            end
        end
        for i = 1, futures do
            local f = gfl.future()
            if i % 2 == 0 then f:set_result(i, {}) end
            if i % 3 == 0 then f:cancel() end
        end
    end
    -- The first rounds size the registry and the binding's tables (to the
    -- peak of live objects, which depends on the collector's pace); later
    -- rounds must not grow them.
    local pause = collectgarbage("setpause", 100)
    cycle(500, 50000)
    cycle(500, 50000)
    settle()
    local fds0, mem0 = count_fds(), collectgarbage("count")
    cycle(1000, 50000)
    cycle(1000, 50000)
    settle()
    local fds1, mem1 = count_fds(), collectgarbage("count")
    collectgarbage("setpause", pause)
    assert(fds1 <= fds0 + 2, "fds leaked: " .. fds0 .. " -> " .. fds1)
    assert(mem1 < mem0 + 256, "Lua memory grew: " .. mem0 .. " -> " .. mem1 .. " KiB")
    assert(srv:connection_count() <= 2, srv:connection_count())
    srv:close()
end

function T.gc_abandoned_tasks()
    collectgarbage()
    local mem0 = collectgarbage("count")
    for _ = 1, 100 do
        for _ = 1, 1000 do
            local t = gfl.spawn(function() gfl.sleep(0) return {} end)
            if math.random() < 0.3 then t:cancel() end
        end
        gfl.sleep(0)
        gfl.sleep(0)
        collectgarbage()
    end
    collectgarbage()
    local mem1 = collectgarbage("count")
    assert(mem1 < mem0 + 512, "Lua memory grew: " .. mem0 .. " -> " .. mem1 .. " KiB")
end

return T
