-- Signal handlers: delivered as ordinary callbacks on the loop. The
-- signals come from a child process (`kill -SIG $PPID`), so this process
-- really receives them while its loop waits.
local gfl = require "globeflower"
local T = {}

local function kill_me(sig, delay)
    local p = assert(gfl.subprocess({ "sh", "-c", (delay and ("sleep " .. delay .. "; ") or "") .. "kill -" .. sig .. " $PPID" }))
    return p
end

function T.handler_runs_with_its_arguments()
    local got = gfl.future()
    gfl.add_signal_handler("SIGUSR1", function(a, b) got:set_result(a, b) end, "x", 42)
    local p = kill_me("USR1")
    local a, b = gfl.wait_for(got, 5)
    assert(a == "x" and b == 42)
    assert(p:wait() == 0)
    assert(gfl.remove_signal_handler("SIGUSR1") == true)
    assert(gfl.remove_signal_handler("SIGUSR1") == false, "nothing left to remove")
end

function T.wakes_a_waiting_loop()
    -- the main task sleeps far longer than the signal takes to come
    local got = gfl.future()
    gfl.add_signal_handler(gfl.signals.SIGUSR2, function() got:set_result(gfl.time()) end)
    local t0 = gfl.time()
    kill_me("USR2", 0.05)
    local t1 = gfl.wait_for(got, 5)
    assert(t1 - t0 < 2, "woken by the signal")
    gfl.remove_signal_handler("USR2")
end

function T.replace_and_names()
    local first, second = 0, 0
    gfl.add_signal_handler("HUP", function() first = first + 1 end)
    local got = gfl.future()
    gfl.add_signal_handler(gfl.signals.SIGHUP, function()
        second = second + 1
        if not got:done() then got:set_result() end
    end)
    kill_me("HUP"):wait()
    gfl.wait_for(got, 5)
    assert(first == 0 and second == 1, "the second handler replaced the first")
    assert(gfl.remove_signal_handler("SIGHUP"))
end

function T.errors_go_to_the_exception_handler()
    local reported = gfl.future()
    gfl.set_exception_handler(function(message, err)
        if not reported:done() then reported:set_result(message, err) end
    end)
    gfl.add_signal_handler("USR1", function() error("boom in handler") end)
    kill_me("USR1")
    local message, err = gfl.wait_for(reported, 5)
    gfl.set_exception_handler(nil)
    gfl.remove_signal_handler("USR1")
    assert(message:match("signal handler"), message)
    assert(tostring(err):match("boom in handler"), tostring(err))
end

function T.handler_can_start_tasks_and_resolve_futures()
    local done = gfl.future()
    gfl.add_signal_handler("USR2", function()
        gfl.spawn(function()
            gfl.sleep(0.01)
            done:set_result("from a task")
        end)
    end)
    kill_me("USR2")
    assert(gfl.wait_for(done, 5) == "from a task")
    gfl.remove_signal_handler("USR2")
end

function T.bad_signals_raise()
    assert(not pcall(gfl.add_signal_handler, "NOSUCH", function() end))
    assert(not pcall(gfl.add_signal_handler, "SIGKILL", function() end), "SIGKILL cannot be handled")
    assert(not pcall(gfl.add_signal_handler, "SIGUSR1", "not a function"))
end

return T
