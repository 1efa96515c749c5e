-- Messages (issue 13, item 6): every mistake gets a message naming the
-- public function and the argument as the user wrote them, the same on
-- every Lua; bad options are refused, not ignored; gfl.run raises exactly
-- the value raised. One test per message.
local gfl = require "globeflower"
local T = {}

-- Runs f(...) expecting an error whose text contains `want` (plain), and
-- none of the internal names the binding used to leak.
local function fails_with(want, f, ...)
    local ok, err = pcall(f, ...)
    assert(not ok, "no error (expected: " .. want .. ")")
    err = tostring(err)
    assert(err:find(want, 1, true), "got: " .. err .. "\nwant: " .. want)
    for _, leak in ipairs({ "'?'", "'method'", "'_", "globeflower/", "stack traceback" }) do
        assert(not err:find(leak, 1, true), "leaks " .. leak .. ": " .. err)
    end
    return err
end

-- positioned at the caller's line (this file), not inside the module
local function here(err)
    assert(err:match("^[^:]*test_messages%.lua:%d+: "), "not positioned at the caller: " .. err)
end

-- A pipe pair as streams (a child `cat`: its stdout and stdin).
local function streams()
    local p = assert(gfl.subprocess({ "cat" }, { stdin = "pipe", stdout = "pipe" }))
    return p.stdout, p.stdin, p
end

---------------------------------------------------------------------------
-- gfl.run returns/raises the raised value untouched

-- gfl.run drives the loop, so it is tried in a child interpreter (the
-- test runs inside a task): the same Lua, the same module.
local function lua_child(code)
    local interp = arg and arg[-1] or "lua"
    local env = { "LUA_CPATH=" .. (os.getenv("LUA_CPATH") or package.cpath), "PATH=" .. (os.getenv("PATH") or "") }
    -- a sanitizer build preloads ASan into the interpreters: the child too
    for _, name in ipairs({ "LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS" }) do
        if os.getenv(name) then env[#env + 1] = name .. "=" .. os.getenv(name) end
    end
    local p = assert(gfl.subprocess({ interp, "-e", code }, { stdout = "pipe", env = env }))
    local out = p.stdout:read()
    assert(p:wait() == 0, "child failed: " .. out)
    return out
end

function T.run_raises_the_string_untouched()
    local out = lua_child([[
        local gfl = require "globeflower"
        local ok, err = pcall(gfl.run, function() gfl.sleep(0) error("boom", 0) end)
        io.write(tostring(ok), "|", err)]])
    assert(out == "false|boom", out)
end

function T.run_raises_the_table_untouched()
    local out = lua_child([[
        local gfl = require "globeflower"
        local e = { code = 7 }
        local ok, err = pcall(gfl.run, function() error(e) end)
        io.write(tostring(ok), "|", tostring(err == e))]])
    assert(out == "false|true", out)
end

function T.run_keeps_the_traceback_for_the_handler()
    local out = lua_child([[
        local gfl = require "globeflower"
        local task
        local ok, err = pcall(gfl.run, function() task = gfl.current_task(); error("kaput", 0) end)
        io.write(err, "|", tostring(task:traceback():find("stack traceback", 1, true) ~= nil))]])
    assert(out == "kaput|true", out)
end

---------------------------------------------------------------------------
-- argument types

function T.sleep_string()
    here(fails_with("bad argument #1 to 'sleep' (number expected, got string)", gfl.sleep, "x"))
end

function T.sleep_nan()
    fails_with("bad argument #1 to 'sleep' (number expected, got nan)", gfl.sleep, 0 / 0)
end

function T.await_number()
    here(fails_with("bad argument #1 to 'await' (future or task expected, got number)", gfl.await, 42))
end

function T.call_later_nan()
    fails_with("bad argument #1 to 'call_later' (number expected, got nan)", gfl.call_later, 0 / 0, print)
end

function T.call_later_string()
    fails_with("bad argument #1 to 'call_later' (number expected, got string)", gfl.call_later, "x", print)
end

function T.call_at_nan()
    fails_with("bad argument #1 to 'call_at' (number expected, got nan)", gfl.call_at, 0 / 0, print)
end

function T.call_soon_not_a_function()
    fails_with("bad argument #1 to 'call_soon' (function expected, got number)", gfl.call_soon, 42)
end

function T.spawn_not_a_function()
    fails_with("bad argument #1 to 'spawn' (function expected, got nil)", gfl.spawn, nil)
end

function T.run_not_a_function()
    fails_with("bad argument #1 to 'run' (function expected, got string)", gfl.run, "main")
end

function T.timeout_bad_delay()
    fails_with("bad argument #1 to 'timeout' (number of seconds >= 0 expected, got string)", gfl.timeout, "x", print)
end

function T.wait_for_not_a_future()
    fails_with("bad argument #1 to 'wait_for' (future, task or function expected, got number)", gfl.wait_for, 42, 1)
end

function T.gather_not_a_future()
    fails_with("bad argument #2 to 'gather' (future, task or function expected, got string)",
        gfl.gather, gfl.spawn(function() end), "x")
end

function T.wait_bad_return_when()
    fails_with("bad argument #2 to 'wait' (option 'return_when': one of", gfl.wait, {}, { return_when = "ANY" })
end

function T.signal_unknown_name()
    fails_with("bad argument #1 to 'add_signal_handler' (unknown signal name 'SIGNOPE')",
        gfl.add_signal_handler, "SIGNOPE", print)
end

function T.queue_string()
    here(fails_with("bad argument #1 to 'Queue' (maximum size (an integer >= 0, 0: unbounded) expected, got string)",
        gfl.Queue, "x"))
end

function T.queue_negative()
    fails_with("bad argument #1 to 'LifoQueue' (maximum size (an integer >= 0, 0: unbounded) expected, got -1)",
        gfl.LifoQueue, -1)
end

function T.semaphore_negative()
    fails_with("bad argument #1 to 'Semaphore' (initial value (an integer >= 0) expected, got -1)", gfl.Semaphore, -1)
end

function T.lock_with_not_a_function()
    local lock = gfl.Lock()
    fails_with("bad argument #1 to 'with' (function expected, got number)", lock.with, lock, 42)
end

function T.event_wait_with_a_dot()
    fails_with("calling 'wait' on bad self (Event expected, got nil)", gfl.Event().wait)
end

---------------------------------------------------------------------------
-- stream methods (C functions behind the prelude: no '?', 'method', '_read')

function T.stream_read_string()
    local r, w, p = streams()
    here(fails_with("bad argument #1 to 'read' (integer expected, got string)", r.read, r, "x"))
    w:close()
    p:close()
end

function T.stream_readexactly_negative()
    local r, w, p = streams()
    fails_with("bad argument #1 to 'readexactly' (a byte count >= 0 expected, got -1)", r.readexactly, r, -1)
    w:close()
    p:close()
end

function T.stream_readuntil_empty()
    local r, w, p = streams()
    fails_with("bad argument #1 to 'readuntil' (the separator must not be empty)", r.readuntil, r, "")
    w:close()
    p:close()
end

function T.stream_write_table()
    local r, w, p = streams()
    fails_with("bad argument #2 to 'write' (string expected, got table)", w.write, w, "ok", {})
    w:close()
    p:close()
    assert(r)
end

function T.process_send_signal_unknown()
    local p = assert(gfl.subprocess({ "sleep", "5" }))
    fails_with("bad argument #1 to 'send_signal' (unknown signal name 'FOO')", p.send_signal, p, "FOO")
    p:kill()
    p:wait()
end

function T.process_method_with_a_dot()
    local p = assert(gfl.subprocess({ "true" }))
    fails_with("calling 'pid' on bad self", p.pid)
    p:wait()
end

---------------------------------------------------------------------------
-- waiting outside a task

function T.open_connection_outside_a_task()
    local got = gfl.future()
    gfl.call_soon(function()
        got:set_result(select(2, pcall(gfl.open_connection, "127.0.0.1", 1)))
    end)
    local err = got:await()
    assert(err:find("'open_connection' waits, so it must be called inside a task (run the code with gfl.run or gfl.spawn)",
        1, true), err)
end

---------------------------------------------------------------------------
-- addresses

function T.unix_path_too_long()
    fails_with("bad argument #1 to 'open_unix_connection' (socket path too long: 200 bytes, at most 107)",
        gfl.open_unix_connection, string.rep("a", 200))
end

function T.unix_server_path_too_long()
    fails_with("bad argument #2 to 'start_unix_server' (socket path too long: 120 bytes, at most 107)",
        gfl.start_unix_server, function() end, string.rep("b", 120))
end

function T.port_out_of_range()
    fails_with("bad argument #2 to 'open_connection' (a port (0 to 65535, or a service name) expected, got number)",
        gfl.open_connection, "127.0.0.1", 70000)
end

function T.wrap_fd_bad_kind()
    fails_with([[bad argument #2 to 'wrap_fd' ("socket", "read_pipe" or "write_pipe" expected, got "pipe")]],
        gfl.wrap_fd, 0, "pipe")
end

---------------------------------------------------------------------------
-- options

function T.options_not_a_table()
    fails_with("bad argument #3 to 'open_connection' (options table expected, got string)",
        gfl.open_connection, "127.0.0.1", 1, "x")
end

function T.options_unknown_key()
    fails_with([[bad argument #4 to 'start_server' (unknown option "reuse_adress")]],
        gfl.start_server, function() end, "127.0.0.1", 0, { reuse_adress = true })
end

function T.options_limit_zero()
    fails_with("bad argument #3 to 'open_connection' (option 'limit': an integer >= 1 expected, got 0)",
        gfl.open_connection, "127.0.0.1", 1, { limit = 0 })
end

function T.options_limit_negative()
    fails_with("bad argument #4 to 'start_server' (option 'limit': an integer >= 1 expected, got -1)",
        gfl.start_server, function() end, "127.0.0.1", 0, { limit = -1 })
end

function T.options_wrong_type()
    fails_with([[bad argument #1 to 'udp' (option 'local_port': a port (0 to 65535, or a service name) expected, got "")]],
        gfl.udp, { local_port = "" })
end

function T.options_subprocess_stdio()
    fails_with("bad argument #2 to 'subprocess' (option 'stdout': \"pipe\", \"inherit\", \"devnull\", false or a file descriptor expected, got \"pipes\")",
        gfl.subprocess, { "true" }, { stdout = "pipes" })
end

function T.options_subprocess_empty_argv()
    fails_with("bad argument #1 to 'subprocess' (non-empty list of strings expected, got an empty table)",
        gfl.subprocess, {})
end

function T.tls_context_unknown_key()
    fails_with([[bad argument #1 to 'tls_context' (unknown option "verfy")]],
        gfl.tls_context, { server = true, verfy = "required" })
end

function T.tls_context_bad_verify()
    fails_with([[bad argument #1 to 'tls_context' (option 'verify': one of true, false, "required", "optional", "none" expected, got "yes")]],
        gfl.tls_context, { verify = "yes" })
end

function T.tls_context_missing_certificate()
    fails_with("bad argument #1 to 'tls_context' (option 'cert': cannot open /nonexistent/cert.pem: No such file or directory)",
        gfl.tls_context, { server = true, cert = "/nonexistent/cert.pem" })
end

function T.tls_option_unknown_key()
    fails_with([[bad argument #3 to 'open_connection' (unknown tls option "verfy")]],
        gfl.open_connection, "127.0.0.1", 1, { tls = { verfy = "required" } })
end

function T.tls_option_wrong_type()
    fails_with("bad argument #3 to 'open_connection' (option 'tls': true, a TLS context or a table of TLS options expected, got \"yes\")",
        gfl.open_connection, "127.0.0.1", 1, { tls = "yes" })
end

function T.tls_option_bad_timeout()
    fails_with("bad argument #4 to 'start_server' (tls option 'handshake_timeout': a number of seconds >= 0 expected, got -1)",
        gfl.start_server, function() end, "127.0.0.1", 0, { tls = { handshake_timeout = -1 } })
end

function T.start_tls_unknown_key()
    local r, w, p = streams()
    fails_with([[bad argument #1 to 'start_tls' (unknown option "sever_side")]], w.start_tls, w, { sever_side = true })
    w:close()
    p:close()
    assert(r)
end

function T.getaddrinfo_unknown_key()
    fails_with([[bad argument #3 to 'getaddrinfo' (unknown option "famly")]], gfl.getaddrinfo, "localhost", 80, { famly = 2 })
end

function T.getnameinfo_bad_host()
    fails_with("bad argument #1 to 'getnameinfo' (numeric address expected, got table)", gfl.getnameinfo, {}, 80)
end

function T.start_server_bad_host()
    fails_with("bad argument #2 to 'start_server' (host name or address expected, got table)",
        gfl.start_server, function() end, {}, 0)
end

function T.wrap_datagram_fd_not_an_fd()
    fails_with("bad argument #1 to 'wrap_datagram_fd' (file descriptor expected, got string)", gfl.wrap_datagram_fd, "x")
end

function T.waiting_method_with_a_dot()
    local r, w, p = streams()
    fails_with("calling 'readline' on bad self (nil): use x:readline(...)", r.readline)
    fails_with("calling 'read' on bad self (nil): use x:read(...)", r.read)
    w:close()
    p:close()
end

function T.run_for_and_array_names()
    fails_with("bad argument #1 to 'run_for' (number expected, got string)", gfl.run_for, "x")
    fails_with("bad argument #1 to 'array' (table expected, got number)", gfl.array, 1)
    fails_with("bad argument #1 to 'call' (string expected, got number)", gfl.call, 42)
    fails_with("bad argument #2 to 'export' (function expected, got no value)", gfl.export, "x.y")
end

function T.subprocess_bad_env()
    fails_with("bad argument #2 to 'subprocess' (option 'env': a table of environment variables",
        gfl.subprocess, { "true" }, { env = { 1, 2 } })
end

-- A DNS failure's message never names a number other than its code.
function T.dns_code_agrees_with_message()
    local r, msg, code = gfl.getaddrinfo("localhost", "no-such-service-name")
    assert(r == nil and type(code) == "number" and code < 0, tostring(msg))
    assert(msg:find("^gaierror: "), msg)
    local n = msg:match("%[Errno (%-?%d+)%]")
    assert(n == nil or tonumber(n) == code, msg .. " / " .. code)
end

-- Nothing of a refused call is left behind: the loop goes on and a later
-- valid call works.
function T.refused_calls_leave_nothing()
    for _ = 1, 100 do
        pcall(gfl.open_connection, "127.0.0.1", 1, { limit = 0 })
        pcall(gfl.call_later, 0 / 0, print)
        pcall(gfl.open_unix_connection, string.rep("a", 200))
    end
    assert(gfl.sleep(0, "alive") == "alive")
end

return T
