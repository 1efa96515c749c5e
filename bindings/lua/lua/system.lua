-- globeflower: file descriptors (readiness watchers, pipes), terminals and
-- work on the thread pool.
local gfl, C = ...

local type, error, select, pcall, getmetatable = type, error, select, pcall, getmetatable
local unpack = table.unpack or unpack
local argerror, typeof, check_task_for, V = C.argerror, C.typeof, C.check_task_for, C.V

---------------------------------------------------------------------------
-- Readiness of a file descriptor you own

gfl.poll = C.poll

-- Waits (inside a task) until fd is ready for `events`; true, or nil,
-- "TimeoutError: ...", code after `timeout` seconds.
local function wait_ready(fname, events, fd, timeout)
    if timeout ~= nil then
        C.check_arg(fname, 2, timeout, V.seconds, "number of seconds >= 0")
    end
    check_task_for(fname)
    local p = C.poll(fd)
    local f = C.future()
    local ok, msg, code = p:start(events, function()
        p:stop()
        if not f:done() then
            f:set_result(true)
        end
    end)
    if not ok then
        p:close()
        return nil, msg, code
    end
    local res = C.pack(gfl.pcall(gfl.wait_for, f, timeout))
    p:close()
    if res[1] then
        return true
    end
    if gfl.is_timeout(res[2]) then
        return nil, "TimeoutError: fd " .. fd .. " not ready after " .. timeout .. " s", res[2].code
    end
    error(res[2], 0)
end

--- gfl.wait_readable(fd [, timeout]) -> true | nil, msg, code
function gfl.wait_readable(fd, timeout)
    return wait_ready("wait_readable", "r", fd, timeout)
end

--- gfl.wait_writable(fd [, timeout]) -> true | nil, msg, code
function gfl.wait_writable(fd, timeout)
    return wait_ready("wait_writable", "w", fd, timeout)
end

---------------------------------------------------------------------------
-- Pipes

gfl.pipe_fds = C.pipe_fds
gfl.close_fd = C.close_fd

--- gfl.pipe() -> read stream, write stream | nil, msg, code (inside a task)
function gfl.pipe()
    check_task_for("pipe")
    local r, w, code = C.pipe_fds()
    if not r then
        return nil, w, code
    end
    local rs, msg
    rs, msg, code = gfl.wrap_fd(r, "read_pipe")
    if not rs then
        C.close_fd(r)
        C.close_fd(w)
        return nil, msg, code
    end
    local ws
    ws, msg, code = gfl.wrap_fd(w, "write_pipe")
    if not ws then
        rs:close()
        C.close_fd(w)
        return nil, msg, code
    end
    return rs, ws
end

---------------------------------------------------------------------------
-- Terminals

gfl.tty = C.tty
gfl.isatty = C.isatty
gfl.openpty = C.openpty

---------------------------------------------------------------------------
-- Work on the thread pool, in a Lua state of its own

-- The function crosses as bytecode: it cannot keep upvalues (5.2+: _ENV,
-- the globals, is fine; it is the worker state's).
local function dump(fname, fn)
    if type(fn) == "string" then
        local chunk, err = (loadstring or load)(fn, "=work")
        if not chunk then
            argerror(1, fname, "the code does not compile: " .. tostring(err))
        end
        return string.dump(chunk), "=work"
    end
    if type(fn) ~= "function" then
        argerror(1, fname, "function or code string expected, got " .. typeof(fn))
    end
    local info = debug.getinfo(fn, "S")
    if info.what == "C" then
        argerror(1, fname, "a Lua function expected, got a C function")
    end
    for i = 1, math.huge do
        local name = debug.getupvalue(fn, i)
        if name == nil then
            break
        end
        if name ~= "_ENV" then
            argerror(1, fname, "the function uses the upvalue '" .. name ..
                "': it runs in another Lua state, so pass what it needs as arguments")
        end
    end
    return string.dump(fn), "=" .. (info.short_src or "work") .. ":" .. (info.linedefined or 0)
end

--- gfl.queue_work(fn, ...) -> future of fn(...)'s results run on a worker
--- thread (its results as one array {n, ...}: use gfl.work to wait)
function gfl.queue_work(fn, ...)
    local code, name = dump("queue_work", fn)
    return C.work(code, name, ...)
end

--- gfl.work(fn, ...) -> fn(...)'s results, run on a worker thread in a
--- Lua state of its own (waits, inside a task); raises its error
function gfl.work(fn, ...)
    local code, name = dump("work", fn)
    check_task_for("work")
    local t = C.work(code, name, ...):await()
    return unpack(t, 2, t[1] + 1)
end

---------------------------------------------------------------------------
-- Threads with a loop of their own, and channels between them

local Channel = C.Channel

--- gfl.channel() -> a channel: ch:send(v) (never blocks), ch:recv() (waits
--- inside a task), ch:close(), ch:len(), ch:is_closed(); it crosses to
--- other threads (gfl.thread arguments) as itself
gfl.channel = C.channel

--- ch:recv() -> the next value (sent in order) | nil, msg, code once the
--- channel is closed and empty
function Channel:recv()
    check_task_for("recv")
    while true do
        local ok, v, code = self:_try_recv()
        if ok then
            return v
        end
        if ok == nil then
            return nil, v, code
        end
        v:await()
    end
end

local Thread = {}
Thread.__index = Thread

--- gfl.thread(fn, ...) -> a thread running fn(...) as the main task of a
--- new Lua state with its own loop (gfl.run) on a new OS thread
function gfl.thread(fn, ...)
    local code, name = dump("thread", fn)
    return setmetatable({ _f = C.thread(code, name, ...) }, Thread)
end

--- thread:join() -> fn's results (waits, inside a task); raises its error
function Thread:join()
    check_task_for("join")
    local t = self._f:await()
    return unpack(t, 2, t[1] + 1)
end

--- thread:done() -> true once the thread finished
function Thread:done()
    return self._f:done()
end

---------------------------------------------------------------------------
-- Idle callbacks (luv's idle handle): fn(idle) once per loop iteration
-- while started; the loop does not block meanwhile.

local Idle = {}
Idle.__index = Idle

--- gfl.idle() -> a stopped idle handle: :start(fn), :stop(), :is_active()
function gfl.idle()
    return setmetatable({ _active = false, _gen = 0 }, Idle)
end

function Idle:start(fn)
    if getmetatable(self) ~= Idle then
        error(C.where_user() .. "calling 'start' on bad self: use idle:start(fn)", 0)
    end
    if type(fn) ~= "function" then
        argerror(1, "start", "function expected, got " .. typeof(fn))
    end
    self._fn = fn
    if self._active then
        return true
    end
    self._active = true
    self._gen = self._gen + 1
    local gen = self._gen
    local function tick()
        -- a stop (and a later start) ends this chain
        if not self._active or self._gen ~= gen then
            return
        end
        C.call_soon(tick)
        self._fn(self)
    end
    C.call_soon(tick)
    return true
end

function Idle:stop()
    self._active = false
end

function Idle:is_active()
    return self._active
end
