-- Futures, tasks, errors, cancellation, combinators, callbacks, the loop.
local gfl = require "globeflower"
local T = {}

-- The module loaded is the one built for this interpreter, and says which
-- release it is.
function T.module_build_and_version()
    local want = (type(jit) == "table" and "luajit") or _VERSION:match("%d+%.%d+")
    assert(gfl.LUA_BUILD == want, "built for " .. tostring(gfl.LUA_BUILD) .. ", running " .. want)
    assert(type(gfl.version) == "string" and gfl.version:match("^%d+%.%d+%.%d+"), tostring(gfl.version))
    assert(gfl.LUA_VERSION == (_VERSION:match("^Lua 5%.[1-4]$") and _VERSION))
end

function T.future_result()
    local f = gfl.future()
    assert(not f:done() and f:state() == "pending")
    gfl.call_soon(function() f:set_result(1, "two", { 3 }) end)
    local a, b, c = f:await()
    assert(a == 1 and b == "two" and c[1] == 3)
    assert(f:done() and not f:cancelled())
    local x = f:result()
    assert(x == 1)
    assert(not pcall(f.set_result, f, 2), "setting twice raises")
end

function T.future_nil_and_multiple_results()
    local f = gfl.future()
    f:set_result(nil, nil, 3)
    local n = select("#", f:await())
    assert(n == 3)
    local g = gfl.future()
    g:set_result()
    assert(select("#", g:await()) == 0 or g:await() == nil)
end

function T.future_error_identity()
    local f = gfl.future()
    local obj = { code = 7 }
    f:set_error(obj)
    local ok, e = gfl.pcall(f.await, f)
    assert(not ok and e == obj, "the raised object comes back as is")
    assert(f:error() == obj)
end

function T.future_cancel()
    local f = gfl.future()
    assert(f:cancel("why"))
    assert(f:cancelled() and f:done())
    local ok, e = gfl.pcall(f.await, f)
    assert(not ok and gfl.is_cancelled(e) and e.message == "why", tostring(e))
end

function T.done_callback()
    local f = gfl.future()
    local seen
    f:add_done_callback(function(x) seen = x end)
    f:set_result(5)
    gfl.sleep(0)
    gfl.sleep(0)
    assert(seen == f, "the callback gets the same object")
end

function T.task_returns_values()
    local t = gfl.spawn(function(a, b)
        gfl.sleep(0.001)
        return a + b, "x"
    end, 2, 3)
    assert(t:is_task())
    local s, x = t:await()
    assert(s == 5 and x == "x")
    assert(gfl.current_task() ~= t)
end

function T.task_error_has_traceback()
    local function inner() error("deep failure") end
    local t = gfl.spawn(function() gfl.sleep(0) inner() end)
    local ok, e = gfl.pcall(t.await, t)
    assert(not ok and tostring(e):match("deep failure"))
    local tb = t:traceback()
    assert(tb and tb:match("stack traceback") and tb:match("inner"), tb)
end

function T.task_cancel_mid_sleep()
    local reached = false
    local t = gfl.spawn(function()
        gfl.sleep(30)
        reached = true
    end)
    gfl.sleep(0.01)
    assert(t:cancel())
    local ok, e = gfl.pcall(t.await, t)
    assert(not ok and gfl.is_cancelled(e))
    assert(t:cancelled() and not reached)
end

function T.task_catches_cancellation()
    local t = gfl.spawn(function()
        local ok, e = gfl.pcall(gfl.sleep, 30)
        assert(not ok and gfl.is_cancelled(e))
        return "cleaned up"
    end)
    gfl.sleep(0)
    t:cancel()
    assert(t:await() == "cleaned up")
end

function T.cancel_before_start()
    local ran = false
    local t = gfl.spawn(function() ran = true end)
    t:cancel()
    assert(not gfl.pcall(t.await, t))
    assert(t:cancelled() and not ran)
end

function T.bad_yield_is_an_error()
    local t = gfl.spawn(function() coroutine.yield("nonsense") end)
    local ok, e = gfl.pcall(t.await, t)
    assert(not ok and tostring(e):match("not a future"), tostring(e))
end

function T.gather_results_and_errors()
    local r = gfl.gather(function() gfl.sleep(0.01) return 1 end, function() return 2 end, gfl.spawn(function() return 3 end))
    assert(r[1] == 1 and r[2] == 2 and r[3] == 3 and r.n == 3)
    local slow = gfl.spawn(function() gfl.sleep(5) end)
    local ok, e = gfl.pcall(gfl.gather, slow, function() error("fast fail", 0) end)
    assert(not ok and e == "fast fail")
    slow:cancel()
    local r2 = gfl.gather({ return_exceptions = true }, function() error("x", 0) end, function() return 1 end)
    assert(r2[1] == "x" and r2[2] == 1)
end

function T.gather_cancel_cancels_children()
    local child = gfl.spawn(function() gfl.sleep(30) end)
    local g = gfl.spawn(function() return gfl.gather(child) end)
    gfl.sleep(0.01)
    g:cancel()
    gfl.pcall(g.await, g)
    gfl.sleep(0)
    gfl.sleep(0)
    assert(child:cancelled())
end

function T.wait_for_and_timeout()
    assert(gfl.wait_for(function() gfl.sleep(0.001) return 9 end, 1) == 9)
    local slow = gfl.spawn(function() gfl.sleep(5) end)
    local ok, e = gfl.pcall(gfl.wait_for, slow, 0.02)
    assert(not ok and gfl.is_timeout(e), tostring(e))
    gfl.sleep(0)
    assert(slow:cancelled(), "wait_for cancels what timed out")
    local t0 = gfl.time()
    local ok2, e2 = gfl.pcall(gfl.timeout, 0.02, function() gfl.sleep(5) end)
    assert(not ok2 and gfl.is_timeout(e2))
    assert(gfl.time() - t0 < 1)
    assert(gfl.timeout(1, function(x) return x end, 4) == 4)
end

function T.shield_and_wait()
    local inner = gfl.spawn(function() gfl.sleep(0.02) return "kept" end)
    local ok = gfl.pcall(gfl.wait_for, gfl.shield(inner), 0.001)
    assert(not ok)
    assert(inner:await() == "kept")
    local a = gfl.spawn(function() gfl.sleep(0.001) return 1 end)
    local b = gfl.spawn(function() gfl.sleep(5) end)
    local done, pending = gfl.wait({ a, b }, { return_when = "FIRST_COMPLETED" })
    assert(#done == 1 and done[1] == a and #pending == 1)
    b:cancel()
end

function T.call_soon_order_and_handles()
    local seen = {}
    gfl.call_soon(function(x) seen[#seen + 1] = x end, 1)
    gfl.call_soon(function(x) seen[#seen + 1] = x end, 2)
    local h = gfl.call_soon(function() seen[#seen + 1] = "cancelled" end)
    assert(h:cancel())
    local l = gfl.call_later(0.01, function() seen[#seen + 1] = "later" end)
    assert(l:pending() and l:when() > 0)
    gfl.sleep(0.03)
    assert(table.concat(seen, ",") == "1,2,later", table.concat(seen, ","))
    assert(not h:cancel(), "cancelling twice is harmless")
end

function T.time_is_monotonic()
    local a = gfl.time()
    gfl.sleep(0.01)
    local b = gfl.loop():time()
    assert(b - a >= 0.009)
end

function T.thousand_tasks()
    local n, tasks = 0, {}
    for i = 1, 1000 do
        tasks[i] = gfl.spawn(function(k)
            gfl.sleep(0.001 * (k % 10))
            n = n + 1
            return k
        end, i)
    end
    local r = gfl.gather((table.unpack or unpack)(tasks))
    assert(n == 1000 and r[1000] == 1000)
end

function T.unawaited_error_reaches_handler()
    local got = gfl.future()
    gfl.set_exception_handler(function(msg, err)
        if not got:done() then got:set_result(msg, err) end
    end)
    do
        gfl.spawn(function() error("nobody awaits me") end)
    end
    gfl.sleep(0)
    gfl.sleep(0)
    collectgarbage()
    collectgarbage()
    local msg, err = gfl.wait_for(got, 2)
    gfl.set_exception_handler(nil)
    assert(msg:match("never retrieved"), msg)
    assert(tostring(err):match("nobody awaits me"), tostring(err))
end

function T.callback_error_reaches_handler()
    local got = gfl.future()
    gfl.set_exception_handler(function(msg, err) if not got:done() then got:set_result(msg, err) end end)
    gfl.call_soon(function() error("callback boom") end)
    local msg, err = gfl.wait_for(got, 2)
    gfl.set_exception_handler(nil)
    assert(msg:match("callback"), msg)
    assert(tostring(err):match("callback boom"))
    assert(err.traceback and err.traceback:match("stack traceback"))
end

function T.pcall_yields_across()
    local ok, v = gfl.pcall(function(x)
        gfl.sleep(0.001)
        return x * 2
    end, 21)
    assert(ok and v == 42)
    local ok2, e = gfl.xpcall(function()
        gfl.sleep(0.001)
        error("inside")
    end, debug.traceback)
    assert(not ok2 and e:match("inside") and e:match("stack traceback"))
end

function T.loop_object()
    local loop = gfl.loop()
    assert(loop == gfl.loop())
    assert(loop:is_running() and not loop:is_closed())
    assert(type(loop:time()) == "number")
    assert(not pcall(gfl.run, function() end), "gfl.run inside a task raises")
end


return T
