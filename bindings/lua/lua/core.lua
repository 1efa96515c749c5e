-- globeflower: errors, awaiting, tasks, running, gather / wait_for /
-- timeout, and a coroutine-safe pcall. Loaded by the C module with the
-- module table and the table of C internals.
local gfl, C = ...

local yield = coroutine.yield
local select, type, error, setmetatable, getmetatable, tostring =
    select, type, error, setmetatable, getmetatable, tostring
local unpack = table.unpack or unpack
local Future = C.Future
local WAIT = C.WAIT -- yielded before a waiter (light userdata): task.c

local function pack(...)
    return { n = select("#", ...), ... }
end

---------------------------------------------------------------------------
-- Errors: table objects with type, message, code (negative) and, when the
-- core captured one, traceback. Errors raised by Lua code keep their own
-- value (string, table...) end to end; these objects are what the core
-- and the binding raise themselves (CancelledError, TimeoutError, ...).

local Error = {}
Error.__index = Error
Error.__tostring = function(e)
    return tostring(e.type) .. ": " .. tostring(e.message)
end
gfl.Error = Error

local EUNKNOWN, ECANCELED, ETIMEDOUT = -4000, -125, -110

local function new_error(etype, message, code, traceback)
    return setmetatable({
        type = etype or "Error",
        message = message or "",
        code = code or EUNKNOWN,
        traceback = traceback,
    }, Error)
end
C.error_new = new_error

-- What the core records of a Lua error object: code, type, message
-- (docs/hosts.md: type is the table's string field `type`, else
-- "LuaError"; message its `message` string, else its text). Runs from C
-- where an error must not escape: a __tostring or __index that fails
-- gives a plain description instead.
local function error_info(err)
    if type(err) == "table" then
        local etype, message, code = err.type, err.message, tonumber(err.code)
        if type(etype) ~= "string" then
            etype = "LuaError"
        end
        if type(message) ~= "string" then
            message = tostring(err)
        end
        if not (code and code < 0 and code >= -2147483647 and code == math.floor(code)) then
            code = EUNKNOWN
        end
        return code, etype, message
    end
    return EUNKNOWN, "LuaError", tostring(err)
end

function C.error_info(err)
    local ok, code, etype, message = pcall(error_info, err)
    if ok then
        return code, etype, message
    end
    return EUNKNOWN, "LuaError", "(a " .. type(err) .. " error object that cannot be described)"
end

--- gfl.new_error(type, message [, code]) -> an Error object to raise
function gfl.new_error(etype, message, code)
    return new_error(etype, message, code)
end

--- true when `err` is a cancellation (a CancelledError)
function gfl.is_cancelled(err)
    return getmetatable(err) == Error and err.type == "CancelledError"
end

--- true when `err` is a TimeoutError (gfl.timeout, gfl.wait_for)
function gfl.is_timeout(err)
    return getmetatable(err) == Error and err.type == "TimeoutError"
end

function gfl.CancelledError(message)
    return new_error("CancelledError", message or "", ECANCELED)
end

function gfl.TimeoutError(message)
    return new_error("TimeoutError", message or "timed out", ETIMEDOUT)
end

local is_cancelled = gfl.is_cancelled

---------------------------------------------------------------------------
-- Argument and option checks: errors name the public function and the
-- argument as the user wrote them ("bad argument #1 to 'sleep' (number
-- expected, got string)"), positioned at the user's code (C.argerror
-- skips the module's frames).

local argerror = C.argerror

-- type(v), with NaN told apart (it is a number nothing accepts)
local function typeof(v)
    if v ~= v then
        return "nan"
    end
    return type(v)
end
C.typeof = typeof

local function isnumber(v)
    return type(v) == "number" and v == v
end

local function isinteger(v)
    return isnumber(v) and v == math.floor(v) and v > -math.huge and v < math.huge
end

-- Validators of option values: nil when fine, else what is expected.
local V = {}
function V.any() end
function V.string(v)
    if type(v) ~= "string" then return "a string" end
end
function V.boolean(v)
    if type(v) ~= "boolean" then return "a boolean" end
end
function V.number(v)
    if not isnumber(v) then return "a number" end
end
function V.seconds(v)
    if not isnumber(v) or v < 0 then return "a number of seconds >= 0" end
end
function V.count(v) -- a positive integer (limits, queue sizes)
    if not isinteger(v) or v < 1 then return "an integer >= 1" end
end
function V.integer(v)
    if not isinteger(v) then return "an integer" end
end
function V.natural(v)
    if not isinteger(v) or v < 0 then return "an integer >= 0" end
end
function V.port(v)
    if type(v) == "string" and v ~= "" then return end
    if not isinteger(v) or v < 0 or v > 65535 then return "a port (0 to 65535, or a service name)" end
end
function V.string_list(v)
    if type(v) ~= "table" then return "a list of strings" end
    for _, x in pairs(v) do
        if type(x) ~= "string" then return "a list of strings" end
    end
end
-- A file that must be readable now (certificates, keys, CA files): the
-- system's reason beats OpenSSL's "system lib" later. A validator may
-- return (nil or expected, problem) to give the whole message.
function V.file(v)
    if type(v) ~= "string" then return "a file name" end
    if io and io.open then
        local f, err = io.open(v, "rb")
        if not f then
            return "a readable file", "cannot open " .. tostring(err)
        end
        f:close()
    end
end
function V.one_of(...)
    local allowed, names = {}, {}
    for i = 1, select("#", ...) do
        local x = select(i, ...)
        allowed[x] = true
        names[#names + 1] = type(x) == "string" and ('"' .. x .. '"') or tostring(x)
    end
    local text = "one of " .. table.concat(names, ", ")
    return function(v)
        if not allowed[v] then return text end
    end
end
function V.either(a, b, text)
    return function(v)
        if a(v) and b(v) then return text end
    end
end
C.V = V

local function describe(v)
    if type(v) == "string" then
        return string.format("%q", v)
    end
    return typeof(v) == "nan" and "nan" or (type(v) == "number" and tostring(v)) or type(v)
end

-- check_options(fname, argn, opts, spec [, what]): opts is nil or a table
-- whose every key is in spec (key -> validator) with a valid value.
local function check_options(fname, argn, opts, spec, what)
    if opts == nil then
        return
    end
    what = what or "option"
    if type(opts) ~= "table" or getmetatable(opts) ~= nil then
        argerror(argn, fname, (what == "option" and "options table" or what .. "s table") ..
            " expected, got " .. typeof(opts))
    end
    for k, v in pairs(opts) do
        local check = type(k) == "string" and spec[k]
        if not check then
            argerror(argn, fname, "unknown " .. what .. " " .. describe(k))
        end
        local expected, problem = check(v, fname, argn)
        if problem then
            argerror(argn, fname, what .. " '" .. k .. "': " .. problem)
        elseif expected then
            argerror(argn, fname, what .. " '" .. k .. "': " .. expected .. " expected, got " .. describe(v))
        end
    end
end
C.check_options = check_options

-- The checks of a plain argument.
local function check_arg(fname, argn, v, validator, expected)
    local e = validator(v)
    if e then
        argerror(argn, fname, (expected or e) .. " expected, got " .. typeof(v))
    end
end
C.check_arg = check_arg

-- A function that waits, called outside a task: one clear message (Lua
-- would say "attempt to yield from outside a coroutine", or "across a
-- C-call boundary").
local function check_task_for(fname)
    if not C.in_task() then
        error(C.where_user() .. "'" .. fname .. "' waits, so it must be called inside a task " ..
            "(run the code with gfl.run or gfl.spawn)", 0)
    end
end
C.check_task_for = check_task_for

---------------------------------------------------------------------------
-- Awaiting: yield the future to the task's step; it resumes us with true
-- (done: read it) or false, err (raise err: a cancellation, or the error
-- of a future the binding awaits internally).

local function check_task(fname)
    if not C.in_task() then
        error(C.where_user() .. "'" .. (fname or "await") .. "' waits, so it must be called inside a task " ..
            "(run the code with gfl.run or gfl.spawn)", 0)
    end
end

function Future:await()
    if not self:done() then
        check_task("await")
        local ok, err = yield(self)
        if not ok then
            error(err, 0)
        end
    end
    return self:result()
end

-- Waits for a light-userdata waiter; raises only cancellations.
local function wait(w)
    local ok, err = yield(WAIT, w)
    if not ok and is_cancelled(err) then
        error(err, 0)
    end
    return ok, err
end
C.wait = wait

--- gfl.await(f): f:await() for futures and tasks
function gfl.await(f)
    if not C.is_future(f) then
        argerror(1, "await", "future or task expected, got " .. typeof(f))
    end
    return f:await()
end

--- gfl.sleep(seconds [, ...]) -> ...: suspends the task
function gfl.sleep(s, ...)
    if s == nil then
        s = 0
    elseif not isnumber(s) then
        argerror(1, "sleep", "number expected, got " .. typeof(s))
    end
    check_task("sleep")
    if s <= 0 then
        local ok, err = yield() -- a bare yield: next iteration
        if not ok then
            error(err, 0)
        end
        return ...
    end
    local f, h = C.sleep_timer(s)
    local ok, err = yield(WAIT, f)
    if not ok then
        C.cancel_handle(h)
        error(err, 0)
    end
    return ...
end

gfl.future = C.future
gfl.is_future = C.is_future
gfl.spawn = C.spawn
gfl.create_task = C.spawn
gfl.current_task = C.current_task
gfl.call_soon = C.call_soon
gfl.call_later = C.call_later
gfl.call_at = C.call_at
gfl.add_signal_handler = C.add_signal_handler
gfl.remove_signal_handler = C.remove_signal_handler
gfl.signals = C.signals
for k, v in pairs(C.constants) do
    gfl[k] = v
end

---------------------------------------------------------------------------
-- Many hosts on one loop (docs/hosts.md): values, exports, plugins.

gfl.array = C.array
gfl.is_array = C.is_array
gfl.is_foreign = C.is_foreign
gfl.export = C.export
gfl.unexport = C.unexport
gfl.exports = C.exports

--- gfl.call(name, ...) -> the result of the export `name` (any host's);
--- waits inside a task, raises its error.
function gfl.call(name, ...)
    check_task("call")
    return C.call(name, ...):await()
end

-- Plugin objects: one per name and state while reachable; their
-- functions keep the plugin loaded (its handle), even taken out of it.
local plugin_info = setmetatable({}, { __mode = "k" }) -- object -> info
local plugin_cache = setmetatable({}, { __mode = "v" }) -- name -> object
local Plugin = {}
Plugin.__tostring = function(p)
    return "globeflower.plugin: " .. plugin_info[p].name
end

--- gfl.plugin(name [, path]) -> an object whose fields are the plugin's
--- functions: sync ones return their result, async ones wait (inside a
--- task); both raise the function's error.
function gfl.plugin(name, path)
    if type(name) ~= "string" then
        error("gfl.plugin: a plugin name (a string) expected, got " .. type(name), 2)
    end
    if path ~= nil and type(path) ~= "string" then
        error("gfl.plugin: the path must be a string, got " .. type(path), 2)
    end
    local p = plugin_cache[name]
    if p then
        return p
    end
    local handle, functions = C.plugin_load(name, path)
    p = {}
    for fname, async in pairs(functions) do
        if async then
            p[fname] = function(...)
                check_task(fname)
                return C.plugin_call_async(handle, fname, ...):await()
            end
        else
            p[fname] = function(...)
                return C.plugin_call(handle, fname, ...)
            end
        end
    end
    plugin_info[p] = { handle = handle, name = C.plugin_name(handle) }
    plugin_cache[name] = setmetatable(p, Plugin)
    return p
end

---------------------------------------------------------------------------
-- A coroutine-safe pcall/xpcall. Lua 5.2+ and LuaJIT can yield across
-- pcall; Lua 5.1 cannot, so there the function runs in a coroutine of its
-- own whose awaits are forwarded to the task.

local yieldable_pcall = (function()
    if type(jit) == "table" then
        return true
    end
    return _VERSION ~= "Lua 5.1"
end)()

local function forward(co, res)
    while true do
        if not res[1] then
            return res
        end
        if coroutine.status(co) == "dead" then
            return res
        end
        res = pack(coroutine.resume(co, yield(unpack(res, 2, res.n))))
    end
end

if yieldable_pcall then
    gfl.pcall = pcall
    gfl.xpcall = function(f, handler, ...)
        if select("#", ...) == 0 then
            return xpcall(f, handler)
        end
        local args = pack(...)
        return xpcall(function()
            return f(unpack(args, 1, args.n))
        end, handler)
    end
else
    -- coroutine.create takes Lua functions only: C functions get a wrapper.
    local function lua_function(f)
        if type(f) == "function" and debug.getinfo(f, "S").what == "C" then
            return function(...) return f(...) end
        end
        return f
    end
    gfl.pcall = function(f, ...)
        local co = coroutine.create(lua_function(f))
        return unpack(forward(co, pack(coroutine.resume(co, ...))))
    end
    -- The handler runs after the stack unwound; debug.traceback as the
    -- handler still gets the failing coroutine's traceback.
    gfl.xpcall = function(f, handler, ...)
        local co = coroutine.create(lua_function(f))
        local res = forward(co, pack(coroutine.resume(co, ...)))
        if res[1] then
            return unpack(res, 1, res.n)
        end
        if handler == debug.traceback then
            return false, debug.traceback(co, res[2])
        end
        return false, handler(res[2], co)
    end
end
local gpcall = gfl.pcall

---------------------------------------------------------------------------
-- Running

--- gfl.run(fn, ...) -> fn's results: runs fn as the main task, driving the
--- loop until it finishes; raises exactly the value it raised (the
--- traceback is task:traceback(), given to the exception handler).
function gfl.run(fn, ...)
    if type(fn) ~= "function" then
        argerror(1, "run", "function expected, got " .. typeof(fn))
    end
    if C.loop_running() or C.in_task() then
        error("gfl.run: the loop is already running (use gfl.spawn and await)", 2)
    end
    local task = C.spawn(fn, ...)
    while not task:done() do
        C.run_once(-1)
    end
    if task:state() == "result" then
        return task:result()
    end
    local _, err = pcall(task.result, task)
    error(err, 0)
end

---------------------------------------------------------------------------
-- Combinators

local function as_future(f, fname, argn, ...)
    if type(f) == "function" then
        return C.spawn(f, ...)
    end
    if not C.is_future(f) then
        argerror(argn or 1, fname or "?", "future, task or function expected, got " .. typeof(f))
    end
    return f
end

--- gfl.gather(f1, f2, ...) -> {r1, r2, ..., n = k}: waits for every future
--- (functions are spawned as tasks). The first error is raised at once
--- (the others keep running); cancelling the gather cancels them all.
--- gfl.gather({return_exceptions = true}, ...) puts errors in the list.
function gfl.gather(...)
    local first = ...
    local opts
    local futs = {}
    local n = select("#", ...)
    local start = 1
    if type(first) == "table" and not C.is_future(first) then
        opts, start = first, 2
        check_options("gather", 1, opts, { return_exceptions = V.boolean })
    end
    for i = start, n do
        futs[#futs + 1] = as_future((select(i, ...)), "gather", i)
    end
    local count = #futs
    local results = { n = count }
    if count == 0 then
        return results
    end
    local outer = C.future()
    local left = count
    local return_exceptions = opts and opts.return_exceptions
    for i, f in ipairs(futs) do
        f:add_done_callback(function(done)
            if outer:done() then
                return
            end
            local ok, r = pcall(done.result, done)
            if not ok and not return_exceptions then
                outer:set_error(r)
                return
            end
            results[i] = r
            left = left - 1
            if left == 0 then
                outer:set_result(results)
            end
        end)
    end
    outer:add_done_callback(function(o)
        if o:cancelled() then
            for _, f in ipairs(futs) do
                f:cancel()
            end
        end
    end)
    return outer:await()
end

--- gfl.timeout(seconds, fn, ...) -> fn's results: runs fn(...) in the
--- current task, cancelling it after `seconds` (nil: no limit); then
--- raises a TimeoutError (gfl.is_timeout). asyncio.timeout.
function gfl.timeout(delay, fn, ...)
    if delay ~= nil then
        check_arg("timeout", 1, delay, V.seconds, "number of seconds >= 0")
    end
    check_arg("timeout", 2, fn, function(v) if type(v) ~= "function" then return "function" end end)
    local task = C.current_task()
    if not task then
        check_task("timeout")
    end
    if delay == nil then
        return fn(...)
    end
    local expired = false
    local h = C.call_later(delay, function()
        expired = true
        task:cancel("timeout")
    end)
    local res = pack(gpcall(fn, ...))
    h:cancel()
    if res[1] then
        return unpack(res, 2, res.n)
    end
    local err = res[2]
    if expired and is_cancelled(err) then
        error(new_error("TimeoutError", "timed out after " .. tostring(delay) .. " s", ETIMEDOUT), 0)
    end
    error(err, 0)
end

--- gfl.wait_for(fut, seconds) -> fut's results, or raises TimeoutError
--- after cancelling fut (a function is spawned as a task first).
function gfl.wait_for(fut, delay, ...)
    if delay ~= nil then
        check_arg("wait_for", 2, delay, V.seconds, "number of seconds >= 0")
    end
    fut = as_future(fut, "wait_for", 1, ...)
    if delay == nil then
        return fut:await()
    end
    if fut:done() then
        return fut:result()
    end
    return gfl.timeout(delay, fut.await, fut)
end

--- gfl.shield(fut) -> a future that cancelling does not pass on to fut
function gfl.shield(fut)
    fut = as_future(fut, "shield", 1)
    local outer = C.future()
    fut:add_done_callback(function(done)
        if outer:done() then
            return
        end
        local res = pack(pcall(done.result, done))
        if res[1] then
            outer:set_result(unpack(res, 2, res.n))
        else
            outer:set_error(res[2])
        end
    end)
    return outer
end

--- gfl.wait(futs [, {timeout = s, return_when = "ALL_COMPLETED" |
--- "FIRST_COMPLETED" | "FIRST_EXCEPTION"}]) -> done, pending (lists)
function gfl.wait(futs, opts)
    if type(futs) ~= "table" then
        argerror(1, "wait", "list of futures expected, got " .. typeof(futs))
    end
    for i, f in ipairs(futs) do
        if not C.is_future(f) then
            argerror(1, "wait", "item " .. i .. " is not a future or task (" .. typeof(f) .. ")")
        end
    end
    check_options("wait", 2, opts, {
        timeout = V.seconds,
        return_when = V.one_of("ALL_COMPLETED", "FIRST_COMPLETED", "FIRST_EXCEPTION"),
    })
    opts = opts or {}
    local when = opts.return_when or "ALL_COMPLETED"
    local waiter = C.future()
    local function check()
        local done_n, failed = 0, false
        for _, f in ipairs(futs) do
            if f:done() then
                done_n = done_n + 1
                if not f:cancelled() and f:error() ~= nil then
                    failed = true
                end
            end
        end
        if done_n == #futs or (when == "FIRST_COMPLETED" and done_n > 0) or
            (when == "FIRST_EXCEPTION" and failed) then
            if not waiter:done() then
                waiter:set_result(true)
            end
        end
    end
    for _, f in ipairs(futs) do
        f:add_done_callback(check)
    end
    check()
    local h
    if opts.timeout then
        h = C.call_later(opts.timeout, function()
            if not waiter:done() then
                waiter:set_result(false)
            end
        end)
    end
    local ok, err = gpcall(waiter.await, waiter)
    if h then
        h:cancel()
    end
    if not ok then
        error(err, 0)
    end
    local done, pending = {}, {}
    for _, f in ipairs(futs) do
        if f:done() then
            done[#done + 1] = f
        else
            pending[#pending + 1] = f
        end
    end
    return done, pending
end

C.pack = pack
C.new_error = new_error
C.as_future = as_future
