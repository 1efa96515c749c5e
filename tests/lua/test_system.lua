-- Raw fd readiness watchers (gfl.poll, wait_readable/writable), pipes,
-- terminals (raw mode and window size on a pty) and work on the thread
-- pool in a Lua state of its own (gfl.work).
local gfl = require "globeflower"
local T = {}

local function fails_with(want, f, ...)
    local ok, err = gfl.pcall(f, ...)
    assert(not ok, "no error (expected: " .. want .. ")")
    assert(tostring(err):find(want, 1, true), "got: " .. tostring(err))
end

---------------------------------------------------------------------------
-- gfl.poll

function T.poll_reports_readable_and_writable()
    local r, w = assert(gfl.pipe_fds())
    local seen = {}
    local got = gfl.future()
    local pr = gfl.poll(r)
    local pw = gfl.poll(w)
    assert(pw:start("w", function(p, ev)
        seen[#seen + 1] = "w"
        assert(p == pw and ev == "w")
        p:stop()
        -- make r readable: a child writes to w (its stdout)
        gfl.spawn(function() assert(gfl.subprocess({ "printf", "x" }, { stdout = w })):wait() end)
    end))
    assert(pr:start("r", function(p, ev)
        assert(p == pr and ev == "r")
        seen[#seen + 1] = "r"
        p:stop()
        if not got:done() then got:set_result(true) end
    end))
    assert(pr:is_active())
    gfl.wait_for(got, 5)
    assert(seen[1] == "w" and seen[2] == "r", table.concat(seen, ","))
    assert(not pr:is_active() and not pw:is_active())
    assert(pr:fileno() == r)
    pr:close()
    pw:close()
    assert(gfl.close_fd(r) and gfl.close_fd(w))
end

function T.poll_level_triggered_until_stopped()
    local r, w = assert(gfl.pipe_fds())
    assert(gfl.subprocess({ "printf", "y" }, { stdout = w })):wait()
    local n = 0
    local p = gfl.poll(r)
    p:start("r", function() n = n + 1 end) -- nobody reads: ready every iteration
    for _ = 1, 5 do gfl.sleep(0) end
    p:stop()
    local at_stop = n
    for _ = 1, 3 do gfl.sleep(0) end
    assert(at_stop >= 3 and n == at_stop, n .. " " .. at_stop)
    p:close()
    gfl.close_fd(r)
    gfl.close_fd(w)
end

function T.poll_callback_errors_go_to_the_handler()
    local r, w = assert(gfl.pipe_fds())
    local got = gfl.future()
    gfl.set_exception_handler(function(msg, err)
        if not got:done() then got:set_result(msg, err) end
    end)
    local p = gfl.poll(w)
    p:start("w", function() p:stop() error("poll boom", 0) end)
    local msg, err = gfl.wait_for(got, 5)
    gfl.set_exception_handler(nil)
    assert(msg:find("poll callback", 1, true), msg)
    assert(tostring(err):find("poll boom", 1, true), tostring(err))
    p:close()
    gfl.close_fd(r)
    gfl.close_fd(w)
end

function T.poll_bad_arguments()
    fails_with("bad argument #1 to 'poll' (integer expected, got string)", gfl.poll, "x")
    fails_with("bad argument #1 to 'poll' (a file descriptor >= 0 expected)", gfl.poll, -1)
    local p = gfl.poll(0)
    fails_with([[bad argument #1 to 'start' ("r", "w" or "rw" expected, got "x")]], p.start, p, "x", print)
    fails_with("bad argument #2 to 'start' (function expected, got no value)", p.start, p, "r")
    p:close()
    fails_with("the poll handle is closed", p.start, p, "r", print)
end

function T.poll_dropped_while_started_is_safe()
    local r, w = assert(gfl.pipe_fds())
    do
        local p = gfl.poll(w)
        p:start("w", function(self) self:stop() end) -- anchored while started
    end
    collectgarbage()
    gfl.sleep(0)
    gfl.sleep(0)
    collectgarbage()
    gfl.close_fd(r)
    gfl.close_fd(w)
end

function T.wait_readable_and_timeout()
    local r, w = assert(gfl.pipe_fds())
    local ok, msg = gfl.wait_readable(r, 0.05)
    assert(ok == nil and msg:find("TimeoutError", 1, true), tostring(msg))
    assert(gfl.wait_writable(w, 1) == true)
    local child = assert(gfl.subprocess({ "printf", "z" }, { stdout = w }))
    assert(gfl.wait_readable(r, 5) == true)
    child:wait()
    gfl.close_fd(r)
    gfl.close_fd(w)
end

---------------------------------------------------------------------------
-- gfl.pipe

function T.pipe_streams()
    local r, w = assert(gfl.pipe())
    assert(w:write("hello\n", "world\n"))
    assert(w:drain())
    assert(r:readline() == "hello\n")
    w:close()
    assert(r:read() == "world\n")
    assert(r:read() == "")
    r:close()
end

function T.pipe_large_transfer()
    local r, w = assert(gfl.pipe())
    local chunk = string.rep("0123456789abcdef", 4096) -- 64 KiB, more than a pipe holds
    local writer = gfl.spawn(function()
        for _ = 1, 8 do
            assert(w:write(chunk))
            assert(w:drain())
        end
        w:close()
    end)
    local total = #r:read()
    writer:await()
    assert(total == 8 * #chunk, total)
    r:close()
end

---------------------------------------------------------------------------
-- Terminals, on a pseudo-terminal pair

function T.tty_raw_mode_and_back()
    local master, slave = assert(gfl.openpty())
    assert(gfl.isatty(slave) and not gfl.isatty(select(1, gfl.pipe_fds())))
    local tty = assert(gfl.tty(slave))
    local mode, flags = tty:get_mode()
    assert(mode == "normal" and flags.echo and flags.canonical and flags.signals)
    assert(tty:set_mode("raw"))
    mode, flags = tty:get_mode()
    assert(mode == "raw" and not flags.echo and not flags.canonical and not flags.signals)
    assert(tty:set_mode("normal"))
    mode, flags = tty:get_mode()
    assert(mode == "normal" and flags.echo and flags.canonical)
    -- reset and collection also restore
    assert(tty:set_mode("raw"))
    assert(tty:reset())
    assert(select(2, tty:get_mode()).echo)
    assert(tty:set_mode("raw"))
    tty = nil
    collectgarbage()
    collectgarbage()
    local again = assert(gfl.tty(slave))
    assert(select(2, again:get_mode()).canonical, "collection restored the mode")
    gfl.close_fd(master)
    gfl.close_fd(slave)
end

function T.tty_raw_mode_passes_bytes_through()
    local master, slave = assert(gfl.openpty())
    local tty = assert(gfl.tty(slave))
    assert(tty:set_mode("raw"))
    local m = assert(gfl.wrap_fd(master, "write_pipe"))
    local s = assert(gfl.wrap_fd(slave, "read_pipe"))
    assert(m:write("a\3b")) -- no line editing, ^C is a byte, no echo back
    assert(s:readexactly(3) == "a\3b")
    m:close()
    s:close()
end

function T.tty_window_size()
    local master, slave = assert(gfl.openpty())
    local mt, st = assert(gfl.tty(master)), assert(gfl.tty(slave))
    assert(mt:set_winsize(132, 43))
    local cols, rows = st:get_winsize()
    assert(cols == 132 and rows == 43, cols .. "x" .. rows)
    fails_with("bad argument #1 to 'set_winsize' (a column count from 0 to 65535 expected)", mt.set_winsize, mt, -1, 3)
    gfl.close_fd(master)
    gfl.close_fd(slave)
end

function T.tty_not_a_terminal()
    local r, w = assert(gfl.pipe_fds())
    local t, msg, code = gfl.tty(r)
    assert(t == nil and msg:find("tty: ", 1, true) and code < 0, tostring(msg))
    fails_with([[bad argument #1 to 'set_mode' ("raw" or "normal" expected, got "cooked")]], function()
        local master, slave = gfl.openpty()
        local ok, err = pcall(function() gfl.tty(slave):set_mode("cooked") end)
        gfl.close_fd(master)
        gfl.close_fd(slave)
        if not ok then error(err, 0) end
    end)
    gfl.close_fd(r)
    gfl.close_fd(w)
end

---------------------------------------------------------------------------
-- gfl.work: a function on a pool thread, in a state of its own

function T.work_runs_with_copied_arguments_and_results()
    local a, b, t = gfl.work(function(x, y, tbl)
        -- a state of its own: nothing of the caller's globals
        assert(rawget(_G, "gfl") == nil)
        return x + y, y .. "!", { sum = tbl[1] + tbl[2], list = { tbl[1], tbl[2] } }
    end, 40, 2, { 3, 4 })
    assert(a == 42 and b == "2!", tostring(a) .. " " .. tostring(b))
    assert(t.sum == 7 and t.list[2] == 4)
end

function T.work_runs_concurrently_off_the_loop_thread()
    local started = gfl.time()
    local ticks = 0
    local ticker = gfl.spawn(function()
        while true do
            gfl.sleep(0.01)
            ticks = ticks + 1
        end
    end)
    local spin = function(seconds)
        local t0 = os.clock()
        local n = 0
        while os.clock() - t0 < seconds do n = n + 1 end
        return n > 0
    end
    local res = gfl.gather(
        function() return gfl.work(spin, 0.2) end,
        function() return gfl.work(spin, 0.2) end)
    ticker:cancel()
    assert(res[1] == true and res[2] == true)
    -- (at least once: valgrind runs one thread at a time)
    assert(ticks >= 1, "the loop kept running while workers spun: " .. ticks)
    assert(gfl.time() - started < 5)
end

function T.work_errors_are_raised()
    local ok, err = gfl.pcall(gfl.work, function() error("worker boom") end)
    assert(not ok and tostring(err):find("worker boom", 1, true), tostring(err))
    assert(err.type == "LuaError", tostring(err.type))
end

function T.work_from_code_string_and_nil_results()
    local a, b, c = gfl.work("return ..., nil, 3", 1)
    assert(a == 1 and b == nil and c == 3)
    assert(select("#", gfl.work(function() end)) == 0)
end

function T.work_refuses_upvalues_and_objects()
    local captured = 5
    fails_with("bad argument #1 to 'work' (the function uses the upvalue 'captured'", gfl.work, function()
        return captured
    end)
    fails_with("cannot cross to a worker thread", gfl.work, function(f) return f end, function() end)
    fails_with("cannot cross back from a worker thread", gfl.work, function() return print end)
    fails_with("bad argument #1 to 'work' (function or code string expected, got number)", gfl.work, 42)
    fails_with("bad argument #1 to 'work' (a Lua function expected, got a C function)", gfl.work, print)
end

function T.work_cancel_before_it_runs()
    local futs = {}
    for i = 1, 20 do
        futs[i] = gfl.queue_work(function(x) local t0 = os.clock() while os.clock() - t0 < 0.01 do end return x end, i)
    end
    for i = 11, 20 do futs[i]:cancel() end
    for i = 1, 10 do
        assert(futs[i]:await()[2] == i)
    end
    for i = 11, 20 do
        local ok = pcall(futs[i].await, futs[i])
        assert(futs[i]:cancelled() or ok)
    end
end

---------------------------------------------------------------------------
-- gfl.thread and channels

function T.thread_talks_over_channels()
    local inbox, outbox = gfl.channel(), gfl.channel()
    local th = gfl.thread(function(inq, outq, k)
        local sum = 0
        while true do
            local v = inq:recv()
            if v == nil then break end
            sum = sum + v
            assert(outq:send({ v, v * k }))
        end
        return sum, "done"
    end, inbox, outbox, 10)
    for i = 1, 50 do assert(inbox:send(i)) end
    inbox:close()
    for i = 1, 50 do
        local t = outbox:recv()
        assert(t[1] == i and t[2] == i * 10)
    end
    local sum, word = th:join()
    assert(sum == 1275 and word == "done", tostring(sum))
    assert(th:done())
end

function T.thread_has_its_own_loop()
    local ticks = 0
    local ticker = gfl.spawn(function()
        while true do gfl.sleep(0.01) ticks = ticks + 1 end
    end)
    -- the thread's gfl.sleep runs on its loop; ours keeps ticking
    local slept = gfl.thread(function()
        local gfl = require "globeflower"
        local t0 = gfl.time()
        gfl.sleep(0.2)
        return gfl.time() - t0
    end):join()
    ticker:cancel()
    assert(slept >= 0.19 and ticks >= 5, slept .. " " .. ticks)
end

function T.thread_error_is_raised_by_join()
    local th = gfl.thread(function() error({ type = "KeyError", message = "no such key" }) end)
    local ok, err = gfl.pcall(th.join, th)
    assert(not ok and err.type == "KeyError" and err.message == "no such key", tostring(err))
    th = gfl.thread(function() error("plain", 0) end)
    ok, err = gfl.pcall(th.join, th)
    assert(not ok and tostring(err):find("plain", 1, true), tostring(err))
end

function T.thread_refuses_upvalues()
    local x = 1
    fails_with("bad argument #1 to 'thread' (the function uses the upvalue 'x'", gfl.thread, function() return x end)
end

function T.channel_closed_and_bad_sends()
    local ch = gfl.channel()
    assert(ch:send("a") and ch:len() == 1)
    ch:close()
    assert(ch:is_closed())
    local v, msg = ch:send("b")
    assert(v == nil and msg:find("ChannelClosed", 1, true))
    assert(ch:recv() == "a")
    v, msg = ch:recv()
    assert(v == nil and msg:find("ChannelClosed", 1, true))
    fails_with("bad argument #1 to 'send' (exactly one value expected, got 2)", ch.send, ch, 1, 2)
end

function T.channel_cancelled_receiver_loses_nothing()
    local ch = gfl.channel()
    local waiter = gfl.spawn(function() return ch:recv() end)
    gfl.sleep(0)
    waiter:cancel()
    gfl.sleep(0)
    assert(waiter:cancelled())
    ch:send(42)
    assert(ch:recv() == 42)
end

---------------------------------------------------------------------------
-- gfl.idle

function T.idle_runs_once_per_iteration_until_stopped()
    local n = 0
    local idle = gfl.idle()
    assert(idle:start(function(h) n = n + 1 assert(h == idle) end))
    assert(idle:is_active())
    for _ = 1, 5 do gfl.sleep(0) end
    idle:stop()
    local at_stop = n
    for _ = 1, 3 do gfl.sleep(0) end
    assert(at_stop >= 4 and at_stop <= 6 and n == at_stop, n .. " " .. at_stop)
    -- restart after a stop: one chain, not two
    idle:start(function() n = n + 1 end)
    idle:stop()
    idle:start(function() n = n + 1 end)
    local before = n
    for _ = 1, 4 do gfl.sleep(0) end
    idle:stop()
    assert(n - before <= 5, n - before)
    fails_with("bad argument #1 to 'start' (function expected, got nil)", idle.start, idle)
end

function T.idle_keeps_the_loop_from_blocking()
    local idle = gfl.idle()
    local n = 0
    idle:start(function() n = n + 1 end)
    local t0 = gfl.time()
    gfl.sleep(0.05) -- iterations keep running while we sleep
    idle:stop()
    assert(n > 5 and gfl.time() - t0 < 1, n)
end

return T
