-- globeflower: streams, servers, protocol-style connections and DNS.
-- Expected I/O failures return nil, message, code; cancellation raises.
local gfl, C = ...

local yield = coroutine.yield
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
-- coroutine waits for the waiter and asks again (proper tail calls keep
-- the exact number of results).
local function waiting(method)
    local function again(self, a1, a2, r, ...)
        if r ~= false then
            return r, ...
        end
        local ok, err = yield((...))
        if not ok then
            error(err, 0)
        end
        return again(self, a1, a2, method(self, a1, a2))
    end
    return function(self, a1, a2)
        return again(self, a1, a2, method(self, a1, a2))
    end
end

--- stream:read([n]) -> up to n bytes ("" at EOF); n nil or < 0: until EOF
Stream.read = waiting(Stream._read)
--- stream:readexactly(n) -> n bytes, or nil, msg, code, partial at EOF
Stream.readexactly = waiting(Stream._readexactly)
--- stream:readuntil([sep]) -> data ending with sep, or nil, msg, code, partial
Stream.readuntil = waiting(Stream._readuntil)
--- stream:readline() -> a line with its "\n" (the rest at EOF; "" after)
Stream.readline = waiting(Stream._readline)
--- stream:drain() -> true once the write buffer is below its high mark
Stream.drain = waiting(Stream._drain)
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
