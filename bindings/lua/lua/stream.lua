-- globeflower: streams, servers, protocol-style connections and DNS.
-- Expected I/O failures return nil, message, code; cancellation raises.
local gfl, C = ...

local yield = coroutine.yield
local WAIT = C.WAIT
local type, error, setmetatable = type, error, setmetatable
local wait = C.wait
local Stream, Server, Future = C.Stream, C.Server, C.Future

local function failure(err)
    if type(err) == "table" and err.message then
        return nil, tostring(err.type) .. ": " .. tostring(err.message), err.code
    end
    return nil, tostring(err), -4000
end

-- Wraps a C method that answers at once or returns false, waiter: the
-- coroutine waits for the waiter and asks again. No varargs (they cost
-- more than the rest of the call on 5.4): the methods answer with at most
-- 4 values, and the wrapper gives back exactly as many as they did (an
-- answer, or nil, msg, code [, partial]).
local function waiting(method)
    return function(self, a1, a2)
        local r, w, c, p = method(self, a1, a2)
        while r == false do
            local ok, err = yield(WAIT, w)
            if not ok then
                error(err, 0)
            end
            r, w, c, p = method(self, a1, a2)
        end
        if r then
            if w == nil then
                return r
            end
            return r, w, c
        end
        if p == nil then
            return r, w, c
        end
        return r, w, c, p
    end
end
C.waiting = waiting

--- stream:read([n]) -> up to n bytes ("" at EOF); n nil or < 0: until EOF
--- (written out rather than made by `waiting`: it is the hot path of
--- every coroutine-style server)
local _read = Stream._read
function Stream.read(self, n)
    local r, w, code = _read(self, n)
    if r then
        return r
    end
    while r == false do
        local ok, err = yield(WAIT, w)
        if not ok then
            error(err, 0)
        end
        r, w, code = _read(self, n)
    end
    if r then
        return r
    end
    return r, w, code
end
--- stream:readexactly(n) -> n bytes, or nil, msg, code, partial at EOF
Stream.readexactly = waiting(Stream._readexactly)
--- stream:readuntil([sep]) -> data ending with sep, or nil, msg, code, partial
Stream.readuntil = waiting(Stream._readuntil)
--- stream:readline() -> a line with its "\n" (the rest at EOF; "" after)
Stream.readline = waiting(Stream._readline)
--- stream:drain() -> true once the write buffer is below its high mark
local _drain = Stream._drain
function Stream.drain(self)
    local r, w, code = _drain(self)
    if r then
        return r
    end
    while r == false do
        local ok, err = yield(WAIT, w)
        if not ok then
            error(err, 0)
        end
        r, w, code = _drain(self)
    end
    if r then
        return r
    end
    return r, w, code
end
--- stream:wait_closed() -> true once the connection is gone
Stream.wait_closed = waiting(Stream._wait_closed)

--- stream:lines() -> iterator over lines (without "\n"); use only on Lua
--- 5.2+ and LuaJIT (Lua 5.1 cannot yield inside a for-in iterator)
function Stream:lines()
    return function()
        local line = self:readline()
        if not line or line == "" then
            return nil
        end
        return (line:gsub("\r?\n$", ""))
    end
end

local function connected(s, w)
    wait(w)
    local ok, msg, code = s:_connected()
    if not ok then
        return nil, msg, code
    end
    return s
end

--- gfl.open_connection(host, port [, opts]) -> stream | nil, msg, code
--- opts: family, local_host, local_port, happy_eyeballs_delay, limit, tls
function gfl.open_connection(host, port, opts)
    return connected(C.open_connection(host, port, opts))
end

--- gfl.open_unix_connection(path [, opts]) -> stream | nil, msg, code
function gfl.open_unix_connection(path, opts)
    return connected(C.open_unix_connection(path, opts))
end

--- gfl.wrap_fd(fd [, kind]) -> stream | nil, msg, code: takes over an open
--- socket ("socket", default) or pipe ("read_pipe", "write_pipe")
function gfl.wrap_fd(fd, kind)
    return connected(C.connect_fd(fd, kind))
end

local function started(srv, w)
    wait(w)
    local ok, msg, code = srv:_started()
    if not ok then
        return nil, msg, code
    end
    return srv
end

--- gfl.start_server(handler, host, port [, opts]) -> server | nil, msg, code
--- handler(stream) runs in a new task for every connection.
function gfl.start_server(handler, host, port, opts)
    if type(handler) ~= "function" then
        error("start_server: a handler function expected", 2)
    end
    return started(C.create_server(handler, false, host, port, opts))
end

--- gfl.start_unix_server(handler, path [, opts]) -> server | nil, msg, code
function gfl.start_unix_server(handler, path, opts)
    if type(handler) ~= "function" then
        error("start_unix_server: a handler function expected", 2)
    end
    return started(C.create_unix_server(handler, false, path, opts))
end

--- server:wait_closed(): until the server is closed and its connections gone
function Server:wait_closed()
    return self:_wait_closed_future():await()
end

--- server:serve_forever(): waits until the server is closed
Server.serve_forever = Server.wait_closed

---------------------------------------------------------------------------
-- Protocol style

-- A factory is a function returning a protocol table, or a table used as
-- the class of the protocol instances.
local function factory_of(p)
    if type(p) == "function" then
        return p
    end
    if type(p) == "table" then
        if type(p.new) == "function" then
            return function()
                return p:new()
            end
        end
        local mt = { __index = p }
        return function()
            return setmetatable({}, mt)
        end
    end
    error("a protocol factory (function or table) expected", 3)
end

local function proto_connected(f)
    local ok, err = wait(f)
    if not ok then
        return failure(err)
    end
    return C.proto_of(f)
end

--- gfl.create_connection(factory, host, port [, opts]) -> transport,
--- protocol | nil, msg, code
function gfl.create_connection(factory, host, port, opts)
    return proto_connected(C.create_connection(factory_of(factory), host, port, opts))
end

--- gfl.create_unix_connection(factory, path) -> transport, protocol | nil, msg, code
function gfl.create_unix_connection(factory, path)
    return proto_connected(C.create_unix_connection(factory_of(factory), path))
end

--- gfl.create_server(factory, host, port [, opts]) -> server | nil, msg, code
function gfl.create_server(factory, host, port, opts)
    return started(C.create_server(factory_of(factory), true, host, port, opts))
end

--- gfl.create_unix_server(factory, path [, opts]) -> server | nil, msg, code
function gfl.create_unix_server(factory, path, opts)
    return started(C.create_unix_server(factory_of(factory), true, path, opts))
end

---------------------------------------------------------------------------
-- DNS


--- gfl.getaddrinfo(host, port [, {family=, socktype=, protocol=, flags=}])
--- -> { {family, socktype, protocol, addr, port}, ... } | nil, msg, code
function gfl.getaddrinfo(host, port, opts)
    opts = opts or {}
    local f = C.getaddrinfo(host, port, opts.family, opts.socktype, opts.protocol, opts.flags)
    if not f:done() then
        wait(f)
    end
    return C.addrinfo_result(f)
end

--- gfl.getnameinfo(host, port [, flags]) -> host, service | nil, msg, code
function gfl.getnameinfo(host, port, flags)
    local f = C.getnameinfo(host, port, flags)
    if not f:done() then
        wait(f)
    end
    return C.nameinfo_result(f)
end

C.failure = failure
C.factory_of = factory_of
