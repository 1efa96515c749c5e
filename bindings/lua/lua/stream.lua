-- globeflower: streams, servers, protocol-style connections and DNS.
-- Expected I/O failures return nil, message, code; cancellation raises.
local gfl, C = ...

local yield = coroutine.yield
local WAIT = C.WAIT
local type, error, setmetatable, getmetatable, pairs = type, error, setmetatable, getmetatable, pairs
local wait = C.wait
local Stream, Server, Future = C.Stream, C.Server, C.Future

local V, check_options, check_task_for, argerror, typeof =
    C.V, C.check_options, C.check_task_for, C.argerror, C.typeof

---------------------------------------------------------------------------
-- Option tables (C.check_options): every key known, every value checked.

local function is_tls_context(v)
    local mt = getmetatable(v)
    return type(v) == "userdata" and type(mt) == "table" and mt.__name == "globeflower.TLSContext"
end
C.is_tls_context = is_tls_context

local tls_version = V.one_of("TLSv1.2", "TLSv1.3", "1.2", "1.3")
-- gfl.tls_context(opts)
local TLS_CONTEXT = {
    server = V.boolean, cafile = V.file, ca_file = V.file, capath = V.string, ca_path = V.string,
    default_cas = V.boolean, cert = V.file, certfile = V.file, cert_file = V.file,
    key = V.file, keyfile = V.file, key_file = V.file, password = V.string,
    verify = V.one_of(true, false, "required", "optional", "none"),
    insecure_skip_verify = V.boolean, check_hostname = V.boolean, alpn = V.string_list,
    min_version = tls_version, max_version = tls_version, ciphers = V.string,
    ciphersuites = V.string, session_cache = V.boolean,
}
C.TLS_CONTEXT = TLS_CONTEXT
-- the `tls` option's table: a context's options plus the connection's
local TLS_CONNECTION = {
    server_hostname = V.string, handshake_timeout = V.seconds, shutdown_timeout = V.seconds,
    context = function(v)
        if not is_tls_context(v) then return "a TLS context (gfl.tls_context)" end
    end,
}
for k, v in pairs(TLS_CONTEXT) do
    if k ~= "server" then
        TLS_CONNECTION[k] = v
    end
end
C.TLS_CONNECTION = TLS_CONNECTION

-- The `tls` (or `ssl`) option: true/false, a context or a table.
local function tls_option(v, fname, argn)
    if type(v) == "boolean" or is_tls_context(v) then
        return
    end
    if type(v) ~= "table" then
        return "true, a TLS context or a table of TLS options"
    end
    check_options(fname, argn, v, TLS_CONNECTION, "tls option")
end
C.tls_option = tls_option

local family = function(v)
    if v ~= C.constants.AF_INET and v ~= C.constants.AF_INET6 and v ~= C.constants.AF_UNSPEC and
        v ~= C.constants.AF_UNIX then
        return "gfl.AF_INET, gfl.AF_INET6, gfl.AF_UNIX or gfl.AF_UNSPEC"
    end
end
C.V.family = family

local CONNECT = {
    family = family, local_host = V.string, local_port = V.port, happy_eyeballs_delay = V.seconds,
    interleave = V.natural, limit = V.count, tls = tls_option, ssl = tls_option,
    server_hostname = V.string, ssl_handshake_timeout = V.seconds, ssl_shutdown_timeout = V.seconds,
}
local UNIX_CONNECT = { limit = V.count }
local SERVE = {
    family = family, backlog = V.count, reuse_address = V.boolean, reuse_port = V.boolean,
    start_serving = V.boolean, limit = V.count, tls = tls_option, ssl = tls_option,
    ssl_handshake_timeout = V.seconds, ssl_shutdown_timeout = V.seconds,
}
local UNIX_SERVE = {
    backlog = V.count, start_serving = V.boolean, limit = V.count, tls = tls_option, ssl = tls_option,
    ssl_handshake_timeout = V.seconds, ssl_shutdown_timeout = V.seconds,
}
local GETADDRINFO = { family = family, socktype = V.natural, protocol = V.natural, flags = V.natural }

local function check_host(fname, argn, host)
    if type(host) ~= "string" and host ~= nil then
        argerror(argn, fname, "host name or address expected, got " .. typeof(host))
    end
end

local function check_port(fname, argn, port)
    local bad = V.port(port)
    if bad then
        argerror(argn, fname, bad .. " expected, got " .. typeof(port))
    end
end

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
local function waiting(method, name)
    return function(self, a1, a2)
        if type(self) ~= "userdata" then
            error(C.where_user() .. "calling '" .. name .. "' on bad self (" .. type(self) ..
                "): use x:" .. name .. "(...)", 0)
        end
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
    if type(self) ~= "userdata" then
        error(C.where_user() .. "calling 'read' on bad self (" .. type(self) .. "): use x:read(...)", 0)
    end
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
Stream.readexactly = waiting(Stream._readexactly, "readexactly")
--- stream:readuntil([sep]) -> data ending with sep, or nil, msg, code, partial
Stream.readuntil = waiting(Stream._readuntil, "readuntil")
--- stream:readline() -> a line with its "\n" (the rest at EOF; "" after)
Stream.readline = waiting(Stream._readline, "readline")
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
Stream.wait_closed = waiting(Stream._wait_closed, "wait_closed")

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
    check_host("open_connection", 1, host)
    check_port("open_connection", 2, port)
    check_options("open_connection", 3, opts, CONNECT)
    check_task_for("open_connection")
    return connected(C.open_connection(host, port, opts))
end

--- gfl.open_unix_connection(path [, opts]) -> stream | nil, msg, code
function gfl.open_unix_connection(path, opts)
    check_options("open_unix_connection", 2, opts, UNIX_CONNECT)
    check_task_for("open_unix_connection")
    return connected(C.open_unix_connection(path, opts))
end

--- gfl.wrap_fd(fd [, kind]) -> stream | nil, msg, code: takes over an open
--- socket ("socket", default) or pipe ("read_pipe", "write_pipe")
function gfl.wrap_fd(fd, kind)
    check_task_for("wrap_fd")
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
        argerror(1, "start_server", "handler function expected, got " .. typeof(handler))
    end
    check_host("start_server", 2, host)
    check_port("start_server", 3, port)
    check_options("start_server", 4, opts, SERVE)
    check_task_for("start_server")
    return started(C.create_server(handler, false, host, port, opts))
end

--- gfl.start_unix_server(handler, path [, opts]) -> server | nil, msg, code
function gfl.start_unix_server(handler, path, opts)
    if type(handler) ~= "function" then
        argerror(1, "start_unix_server", "handler function expected, got " .. typeof(handler))
    end
    check_options("start_unix_server", 3, opts, UNIX_SERVE)
    check_task_for("start_unix_server")
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
    return nil
end

local function check_factory(fname, p)
    local f = factory_of(p)
    if not f then
        argerror(1, fname, "protocol factory (function or table) expected, got " .. typeof(p))
    end
    return f
end
C.check_factory = check_factory

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
    factory = check_factory("create_connection", factory)
    check_host("create_connection", 2, host)
    check_port("create_connection", 3, port)
    check_options("create_connection", 4, opts, CONNECT)
    check_task_for("create_connection")
    return proto_connected(C.create_connection(factory, host, port, opts))
end

--- gfl.create_unix_connection(factory, path) -> transport, protocol | nil, msg, code
function gfl.create_unix_connection(factory, path)
    factory = check_factory("create_unix_connection", factory)
    if type(path) ~= "string" then
        argerror(2, "create_unix_connection", "socket path expected, got " .. typeof(path))
    end
    check_task_for("create_unix_connection")
    return proto_connected(C.create_unix_connection(factory, path))
end

--- gfl.create_server(factory, host, port [, opts]) -> server | nil, msg, code
function gfl.create_server(factory, host, port, opts)
    factory = check_factory("create_server", factory)
    check_host("create_server", 2, host)
    check_port("create_server", 3, port)
    check_options("create_server", 4, opts, SERVE)
    check_task_for("create_server")
    return started(C.create_server(factory, true, host, port, opts))
end

--- gfl.create_unix_server(factory, path [, opts]) -> server | nil, msg, code
function gfl.create_unix_server(factory, path, opts)
    factory = check_factory("create_unix_server", factory)
    check_options("create_unix_server", 3, opts, UNIX_SERVE)
    check_task_for("create_unix_server")
    return started(C.create_unix_server(factory, true, path, opts))
end

---------------------------------------------------------------------------
-- DNS


--- gfl.getaddrinfo(host, port [, {family=, socktype=, protocol=, flags=}])
--- -> { {family, socktype, protocol, addr, port}, ... } | nil, msg, code
function gfl.getaddrinfo(host, port, opts)
    check_host("getaddrinfo", 1, host)
    if port ~= nil then
        check_port("getaddrinfo", 2, port)
    end
    check_options("getaddrinfo", 3, opts, GETADDRINFO)
    check_task_for("getaddrinfo")
    opts = opts or {}
    local f = C.getaddrinfo(host, port, opts.family, opts.socktype, opts.protocol, opts.flags)
    if not f:done() then
        wait(f)
    end
    return C.addrinfo_result(f)
end

--- gfl.getnameinfo(host, port [, flags]) -> host, service | nil, msg, code
function gfl.getnameinfo(host, port, flags)
    if type(host) ~= "string" then
        argerror(1, "getnameinfo", "numeric address expected, got " .. typeof(host))
    end
    check_port("getnameinfo", 2, port)
    if flags ~= nil and V.natural(flags) then
        argerror(3, "getnameinfo", "flags (an integer >= 0) expected, got " .. typeof(flags))
    end
    check_task_for("getnameinfo")
    local f = C.getnameinfo(host, port, flags)
    if not f:done() then
        wait(f)
    end
    return C.nameinfo_result(f)
end

C.failure = failure
C.factory_of = factory_of
