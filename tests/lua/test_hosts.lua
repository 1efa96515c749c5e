-- Many hosts on one loop (docs/hosts.md) from Lua: values crossing as
-- gfl values (through a Lua export and the example plugin), errors,
-- exports and calls by name, plugins, cancellation both ways, run_for.
-- The example plugin is found through GFL_PLUGIN_PATH (make check sets it).
local gfl = require "globeflower"
local T = {}

local unpack = table.unpack or unpack
local integers = math.type ~= nil -- 5.3+: integer and float subtypes

-- Values go through the loop's registry: Lua -> gfl -> Lua, as any
-- other host would send them.
gfl.export("test.echo", function(...) return ... end)
gfl.export("test.count", function(...) return select("#", ...) end)
-- Left registered on purpose: the state's close must unexport it (and
-- valgrind must see nothing leak).
gfl.export("test.left_at_close", function() return "still here" end)

-- gfl.run_for from outside any task (the file is loaded outside one).
local run_for_result
do
    local ran = false
    gfl.call_soon(function() ran = true end)
    run_for_result = { n = gfl.run_for(0.05), ran = ran }
end

local function echo(...)
    return gfl.call("test.echo", ...)
end

local function errmsg(f, ...)
    local ok, e = gfl.pcall(f, ...)
    assert(not ok, "expected an error")
    return tostring(e), e
end

---------------------------------------------------------------------------
-- Values

function T.scalars_roundtrip()
    local r = echo(nil)
    assert(r == nil)
    assert(echo(true) == true and echo(false) == false)
    assert(echo(42) == 42 and echo(-7) == -7 and echo(0.5) == 0.5)
    assert(echo("text") == "text")
    local bin = "\0\1\255\254 binary \128"
    assert(echo(bin) == bin, "binary strings cross byte for byte")
    assert(echo("h\195\169llo") == "h\195\169llo")
end

function T.integers_and_floats()
    local ex = gfl.plugin("example")
    -- add() takes INTs only: what becomes an INT shows there.
    assert(ex.add(2, 3) == 5)
    assert(ex.add(-1099511627776, 1) == -1099511627775)
    if integers then
        assert(math.type(echo(3)) == "integer")
        assert(math.type(echo(3.0)) == "float", "a float stays a float")
        assert(errmsg(ex.add, 3.0, 1):match("TypeError"))
        assert(ex.add(math.maxinteger, 0) == math.maxinteger)
    else
        -- 5.1/LuaJIT: integral numbers within +-2^53 are INTs
        assert(ex.add(3.0, 1) == 4)
        assert(ex.add(2 ^ 53, 0) == 2 ^ 53)
        assert(errmsg(ex.add, 2 ^ 53 + 2, 0):match("TypeError"), "beyond 2^53: a double")
        assert(errmsg(ex.add, 0.5, 1):match("TypeError"))
    end
end

function T.nested_arrays_and_maps()
    local v = {
        list = { 1, "two", { 3, { 4 } } },
        map = { a = 1, b = { c = true } },
        [10] = "ten",
        [true] = "yes",
    }
    local r = echo(v)
    assert(r ~= v, "tables are deep copies")
    assert(gfl.is_array(r.list) and not gfl.is_array(r.map) and not gfl.is_array(r))
    assert(r.list[1] == 1 and r.list[2] == "two" and r.list[3][1] == 3 and r.list[3][2][1] == 4)
    assert(#r.list == 3 and gfl.is_array(r.list[3][2]))
    assert(r.map.a == 1 and r.map.b.c == true)
    assert(r[10] == "ten" and r[true] == "yes")
    -- a shared (not cyclic) table is copied twice
    local shared = { 1 }
    local two = echo({ shared, shared })
    assert(two[1][1] == 1 and two[2][1] == 1 and two[1] ~= two[2])
end

function T.arrays_stay_arrays()
    local empty = echo(gfl.array {})
    assert(gfl.is_array(empty) and next(empty) == nil, "an empty array stays an array")
    assert(getmetatable(empty) == gfl.array_mt)
    local again = echo(empty)
    assert(gfl.is_array(again), "and on the way back")
    local plain = echo({})
    assert(not gfl.is_array(plain) and next(plain) == nil, "an empty table is a map")
    -- keys 1..n make an array; holes make a map unless marked
    assert(gfl.is_array(echo({ 1, 2, 3 })))
    local holey = echo({ [1] = 1, [3] = 3 })
    assert(not gfl.is_array(holey) and holey[1] == 1 and holey[3] == 3)
    local marked = echo(gfl.array { 1, nil, 3 })
    assert(gfl.is_array(marked) and marked[1] == 1 and marked[2] == nil and marked[3] == 3)
    -- several results: an array of them, nils kept in place
    local many = echo(1, nil, "x")
    assert(gfl.is_array(many) and many[1] == 1 and many[2] == nil and many[3] == "x")
    assert(gfl.call("test.count", 1, nil, nil) == 3, "nil arguments arrive")
    -- gfl.array refuses tables with behaviour, and non-integer keys
    assert(errmsg(gfl.array, setmetatable({}, {})):match("metatable"))
    assert(errmsg(echo, gfl.array { 1, x = 2 }):match("only have the keys 1%.%.n"))
end

function T.objects_keep_identity()
    local f = function() end
    local obj = setmetatable({}, { __index = {} })
    local co = coroutine.create(function() end)
    local fut = gfl.future()
    assert(echo(f) == f and echo(obj) == obj and echo(co) == co and echo(fut) == fut)
    local r = echo({ fn = f, list = { obj } })
    assert(r.fn == f and r.list[1] == obj, "objects inside data too")
    -- and through a plugin holding the value for a while
    local ex = gfl.plugin("example")
    assert(ex.sleep_then_echo(0.001, f) == f)
    local data = ex.sleep_then_echo(0, { x = { 1, 2 } })
    assert(data.x[2] == 2 and gfl.is_array(data.x))
end

function T.cycles_are_errors()
    local t = {}
    t.self = t
    local msg = errmsg(echo, t)
    assert(msg:match("contains itself") and msg:match("%.self"), msg)
    local a = {}
    a[1] = { a }
    msg = errmsg(echo, a)
    assert(msg:match("contains itself") and msg:match("%[1%]%[1%]"), msg)
    msg = errmsg(echo, 1, { k = t })
    assert(msg:match("argument 2"), msg)
    -- a cyclic key
    local k = {}
    k[k] = 1
    assert(errmsg(echo, k):match("contains itself"))
    -- to a plugin, and in an export's result
    assert(errmsg(gfl.plugin("example").concat, t):match("contains itself"))
    gfl.export("test.cyclic_result", function() return t end)
    local m, e = errmsg(gfl.call, "test.cyclic_result")
    gfl.unexport("test.cyclic_result")
    assert(e.type == "ValueError" and m:match("contains itself"), m)
end

local function nested(levels)
    local top = {}
    local t = top
    for _ = 2, levels do
        t.n = {}
        t = t.n
    end
    return top
end

function T.depth_limit()
    local r = echo(nested(64))
    local d = 0
    while r do
        d, r = d + 1, r.n
    end
    assert(d == 64, "64 levels cross")
    local msg = errmsg(echo, nested(65))
    assert(msg:match("deeper than 64"), msg)
    local arrays = {}
    for _ = 1, 100 do
        arrays = { arrays }
    end
    assert(errmsg(echo, arrays):match("deeper than 64"))
end

---------------------------------------------------------------------------
-- Errors

function T.lua_errors_come_back_as_themselves()
    gfl.export("test.raise", function(kind)
        if kind == "string" then
            error("plain failure", 0)
        end
        error({ type = "KeyError", message = "no such key" })
    end)
    local _, e = errmsg(gfl.call, "test.raise", "string")
    assert(e == "plain failure", tostring(e))
    _, e = errmsg(gfl.call, "test.raise", "table")
    assert(type(e) == "table" and e.type == "KeyError" and e.message == "no such key")
    gfl.unexport("test.raise")
end

function T.error_values_keep_their_value()
    local ex = gfl.plugin("example")
    local msg, e = errmsg(ex.fail, "broken")
    assert(msg == "ExampleError: broken", msg)
    assert(e.type == "ExampleError" and e.message == "broken" and e.code == -5)
    assert(getmetatable(e) == gfl.Error)
    -- re-raised through an export: the very same value (so the same object)
    local seen
    gfl.export("test.relay", function()
        local _, err = gfl.pcall(ex.fail, "relayed")
        seen = err
        error(err, 0)
    end)
    local _, back = errmsg(gfl.call, "test.relay")
    gfl.unexport("test.relay")
    assert(back == seen, "the error object made from a value is that value")
    -- a sync function's error
    msg, e = errmsg(ex.add, "a", 1)
    assert(e.type == "TypeError" and msg:match("add%(%) takes two ints"), msg)
end

function T.error_as_data()
    -- an error value that is data, not raised
    local f = gfl.future()
    f:set_result(1)
    local _, e = errmsg(gfl.plugin("example").fail)
    local r = echo({ err = e })
    assert(r.err == e, "an error object crosses as its value and comes back the same")
end

---------------------------------------------------------------------------
-- Exports and calls

function T.export_and_call()
    gfl.export("test.add", function(a, b)
        gfl.sleep(0.001) -- a real task: it may wait
        return a + b
    end)
    gfl.export("test.none", function() end)
    gfl.export("test.pair", function() return "a", "b" end)
    assert(gfl.call("test.add", 2, 3) == 5)
    assert(gfl.call("test.none") == nil)
    local pair = gfl.call("test.pair")
    assert(gfl.is_array(pair) and pair[1] == "a" and pair[2] == "b")
    local names = table.concat(gfl.exports(), " ")
    assert(names:match("test%.add") and names:match("test%.echo"), names)
    -- concurrent calls are separate tasks
    local r = gfl.gather(function() return gfl.call("test.add", 1, 1) end,
        function() return gfl.call("test.add", 2, 2) end)
    assert(r[1] == 2 and r[2] == 4)
    gfl.unexport("test.add")
    gfl.unexport("test.none")
    gfl.unexport("test.pair")
    local msg, e = errmsg(gfl.call, "test.add", 1, 2)
    assert(e.type == "LookupError" and msg:match("nothing is exported under the name 'test%.add'"), msg)
end

function T.export_errors()
    assert(errmsg(gfl.call, "no.such.name"):match("LookupError: nothing is exported"))
    assert(errmsg(gfl.export, "test.echo", print):match("already exported"))
    assert(errmsg(gfl.export, "", print):match("invalid name"))
    assert(errmsg(gfl.export, "has space", print):match("invalid name"))
    assert(errmsg(gfl.export, "nul\0byte", print):match("NUL"))
    assert(errmsg(gfl.export, string.rep("x", 129), print):match("invalid name"))
    assert(errmsg(gfl.export, "test.notfn", 42):match("function expected"))
    assert(errmsg(gfl.unexport, "never.exported"):match("nothing is exported"))
    assert(errmsg(gfl.call, "bad name!"):match("LookupError"))
end

function T.wrong_arity_reaches_the_export()
    gfl.export("test.strict", function(...)
        local n = select("#", ...)
        if n ~= 2 then
            error({ type = "TypeError", message = "strict() takes 2 arguments (" .. n .. " given)" })
        end
        return "fine"
    end)
    local _, e = errmsg(gfl.call, "test.strict", 1)
    assert(e.type == "TypeError" and e.message == "strict() takes 2 arguments (1 given)")
    assert(gfl.call("test.strict", 1, 2) == "fine")
    gfl.unexport("test.strict")
end

function T.call_outside_a_task()
    local got = gfl.future()
    gfl.call_soon(function() -- a callback: outside any task
        local _, call_err = pcall(gfl.call, "test.echo", 1)
        local _, plugin_err = pcall(gfl.plugin("example").sleep_then_echo, 0, 1)
        local _, sleep_err = pcall(gfl.sleep, 0)
        got:set_result(tostring(call_err), tostring(plugin_err), tostring(sleep_err))
    end)
    local call_err, plugin_err, sleep_err = got:await()
    -- each names the function that waits
    assert(sleep_err:find("'sleep' waits, so it must be called inside a task", 1, true), sleep_err)
    assert(call_err:find("'call' waits, so it must be called inside a task", 1, true), call_err)
    assert(plugin_err:find("'sleep_then_echo' waits, so it must be called inside a task", 1, true), plugin_err)
end

function T.cancel_caller_cancels_export()
    local state = "idle"
    gfl.export("test.slow", function()
        state = "running"
        local ok, err = gfl.pcall(gfl.sleep, 10)
        state = gfl.is_cancelled(err) and "cancelled" or "other"
        error(err, 0)
    end)
    local caller = gfl.spawn(function() return gfl.call("test.slow") end)
    gfl.sleep(0.01)
    assert(state == "running")
    caller:cancel()
    local ok, e = gfl.pcall(caller.await, caller)
    assert(not ok and gfl.is_cancelled(e))
    gfl.sleep(0)
    assert(state == "cancelled", state)
    -- a timeout is a cancellation too
    state = "idle"
    local ok2, e2 = gfl.pcall(gfl.wait_for, function() return gfl.call("test.slow") end, 0.01)
    assert(not ok2 and gfl.is_timeout(e2))
    gfl.sleep(0)
    assert(state == "cancelled", state)
    gfl.unexport("test.slow")
end

function T.export_cancelled_cancels_caller()
    gfl.export("test.gives_up", function()
        gfl.current_task():cancel("no thanks")
        gfl.sleep(1)
    end)
    local ok, e = gfl.pcall(gfl.call, "test.gives_up")
    gfl.unexport("test.gives_up")
    assert(not ok and gfl.is_cancelled(e), tostring(e))
end

function T.unexport_from_inside_a_call()
    gfl.export("test.once", function()
        gfl.unexport("test.once")
        gfl.sleep(0)
        return "done"
    end)
    assert(gfl.call("test.once") == "done")
    assert(errmsg(gfl.call, "test.once"):match("LookupError"))
end

---------------------------------------------------------------------------
-- Plugins

function T.plugin_functions()
    local ex = gfl.plugin("example")
    assert(tostring(ex) == "globeflower.plugin: example")
    assert(gfl.plugin("example") == ex, "one object per plugin")
    assert(ex.concat("a", "b", "c") == "abc")
    assert(ex.concat("\255", "x") == "\255x")
    assert(ex.sleep_then_echo(0.001, "later") == "later")
    assert(ex.no_such_function == nil)
    local msg, e = errmsg(ex.fail)
    assert(e.type == "ExampleError", msg)
    assert(errmsg(ex.sleep_then_echo, -1, 1):match("TypeError"))
    -- a function outlives the object it came from
    local add = gfl.plugin("example").add
    ex = nil
    collectgarbage()
    collectgarbage()
    assert(add(20, 22) == 42)
end

function T.plugin_load_errors()
    local msg = errmsg(gfl.plugin, "no_such_plugin")
    assert(msg:match("plugin no_such_plugin not found"), msg)
    assert(errmsg(gfl.plugin, "../evil"):match("invalid plugin name"))
    assert(errmsg(gfl.plugin, ""):match("invalid plugin name"))
    assert(errmsg(gfl.plugin, 42):match("a plugin name"))
    assert(errmsg(gfl.plugin, "example\0x"):match("NUL"))
    assert(errmsg(gfl.plugin, "other", "/nonexistent/other.so"):match("other"))
end

function T.plugin_cancel_async()
    local ex = gfl.plugin("example")
    local t = gfl.spawn(function() return ex.sleep_then_echo(10, 1) end)
    gfl.sleep(0.01)
    t:cancel()
    local ok, e = gfl.pcall(t.await, t)
    assert(not ok and gfl.is_cancelled(e))
end

---------------------------------------------------------------------------
-- Pumping, and what scripts cannot reach

function T.run_for()
    assert(run_for_result.ran and run_for_result.n >= 1, "run_for ran the callback")
    assert(errmsg(gfl.run_for, 0.01):match("already running"), "not from inside a task")
    assert(errmsg(gfl.run_for, -1):match("seconds"))
    assert(errmsg(gfl.loop().run_once, gfl.loop(), 0):match("already running"))
end

function T.no_raw_pointers()
    assert(gfl.wrap_future == nil)
    assert(gfl.future().pointer == nil)
    assert(gfl.loop().pointer == nil)
end

function T.yielding_a_pointer_is_refused()
    -- internal waiters are light userdata; a script that gets one (here
    -- from the method wait_closed wraps) cannot make a task await it
    local srv = assert(gfl.start_server(function(s) s:read() s:close() end, "127.0.0.1", 0))
    local c = assert(gfl.open_connection("127.0.0.1", srv:port()))
    local busy, w = c:_wait_closed()
    assert(busy == false and type(w) == "userdata")
    local t = gfl.spawn(function() coroutine.yield(w) end)
    local ok, e = gfl.pcall(t.await, t)
    assert(not ok and tostring(e):match("not a future"), tostring(e))
    c:close()
    srv:close()
    srv:wait_closed()
end

return T
