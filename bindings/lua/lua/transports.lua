-- globeflower: UDP endpoints, subprocesses, TLS (contexts and start_tls).
-- Expected I/O failures return nil, message, code; cancellation raises.
local gfl, C = ...

local type, error, setmetatable, getmetatable, select, pairs = type, error, setmetatable, getmetatable, select, pairs
local wait, factory_of, failure = C.wait, C.factory_of, C.failure
local Stream, Datagram, Process = C.Stream, C.Datagram, C.Process

local waiting = C.waiting
local V, check_options, check_task_for, argerror, typeof, check_factory =
    C.V, C.check_options, C.check_task_for, C.argerror, C.typeof, C.check_factory

local function started(obj, w)
    wait(w)
    local ok, msg, code = obj:_started()
    if not ok then
        return nil, msg, code
    end
    return obj
end

---------------------------------------------------------------------------
-- UDP

--- ep:recvfrom() -> data, host, port (Unix: data, path) | nil, msg, code
Datagram.recvfrom = waiting(Datagram._recvfrom, "recvfrom")
--- ep:recv() -> data | nil, msg, code
Datagram.recv = waiting(Datagram._recv, "recv")
--- ep:drain() -> true once the queue of unsent datagrams is below its high mark
Datagram.drain = waiting(Datagram._drain, "drain")
--- ep:wait_closed() -> true once the endpoint is closed
Datagram.wait_closed = waiting(Datagram._wait_closed, "wait_closed")
--- ep:send(data): to the connected peer (remote_host/remote_port)
function Datagram:send(data)
    return self:sendto(data)
end

--- gfl.udp([opts]) -> endpoint | nil, msg, code (coroutine style)
--- opts: local_host, local_port, remote_host, remote_port, family,
--- reuse_port, allow_broadcast, local_path, remote_path, queue
local DATAGRAM = {
    local_host = V.string, local_port = V.port, remote_host = V.string, remote_port = V.port,
    family = V.family, proto = V.natural, reuse_port = V.boolean, allow_broadcast = V.boolean,
    local_path = V.string, remote_path = V.string, queue = V.count,
}

function gfl.udp(opts)
    check_options("udp", 1, opts, DATAGRAM)
    check_task_for("udp")
    return started(C.create_datagram_endpoint(false, opts))
end
gfl.open_datagram_endpoint = gfl.udp

--- gfl.create_datagram_endpoint(factory, opts) -> transport, protocol | nil, msg, code
function gfl.create_datagram_endpoint(factory, opts)
    factory = check_factory("create_datagram_endpoint", factory)
    check_options("create_datagram_endpoint", 2, opts, DATAGRAM)
    check_task_for("create_datagram_endpoint")
    local ep, msg, code = started(C.create_datagram_endpoint(factory, opts))
    if not ep then
        return nil, msg, code
    end
    return ep, ep:get_protocol()
end

--- gfl.wrap_datagram_fd(fd) -> endpoint | nil, msg, code: takes over a datagram socket
function gfl.wrap_datagram_fd(fd)
    if V.natural(fd) then
        argerror(1, "wrap_datagram_fd", "file descriptor expected, got " .. typeof(fd))
    end
    check_task_for("wrap_datagram_fd")
    return started(C.wrap_datagram_fd(fd))
end

---------------------------------------------------------------------------
-- Subprocesses

local ProcessObject = {}
ProcessObject.__index = ProcessObject
gfl.Process = ProcessObject

for _, name in ipairs({ "pid", "returncode", "send_signal", "terminate", "kill", "close", "is_closing" }) do
    local m = Process[name]
    ProcessObject[name] = function(self, ...)
        if getmetatable(self) ~= ProcessObject then
            error(C.where_user() .. "calling '" .. name .. "' on bad self (" .. typeof(self) ..
                "): use p:" .. name .. "(...)", 0)
        end
        return m(self._p, ...)
    end
end

--- p:wait() -> returncode (-signal when killed by one), once the child
--- exited and its pipes closed
function ProcessObject:wait()
    return self._p:_wait_future():await()
end

--- p:communicate([input]) -> stdout data, stderr data (nil for what is
--- not a pipe): writes input (then closes stdin), reads to EOF, waits
function ProcessObject:communicate(input)
    local stdin, stdout, stderr = self.stdin, self.stdout, self.stderr
    local function feed()
        if stdin then
            if input and #input > 0 then
                stdin:write(input)
                stdin:drain()
            end
            stdin:close()
        end
    end
    local function read_all(s)
        return function()
            if s then
                return (s:read())
            end
        end
    end
    local r = gfl.gather(feed, read_all(stdout), read_all(stderr))
    self:wait()
    return r[2], r[3]
end

function ProcessObject:__tostring()
    return tostring(self._p)
end

--- gfl.subprocess(argv [, opts]) -> process | nil, msg, code
--- opts: stdin, stdout, stderr ("pipe", "inherit" (default), "devnull",
--- an fd; stderr also "stdout"), env, cwd, file, start_new_session,
--- process_group, pass_fds, close_fds, limit
local stdio = function(v)
    if v == "pipe" or v == "inherit" or v == "devnull" or v == false or
        (type(v) == "number" and v >= 0 and v == math.floor(v)) then
        return
    end
    return '"pipe", "inherit", "devnull", false or a file descriptor'
end
local SUBPROCESS = {
    stdin = stdio, stdout = stdio,
    stderr = function(v)
        if v ~= "stdout" and stdio(v) then
            return '"pipe", "inherit", "devnull", "stdout", false or a file descriptor'
        end
    end,
    env = function(v)
        local what = 'a table of environment variables ({NAME = "value"} or {"NAME=value"})'
        if type(v) ~= "table" then return what end
        for k, x in pairs(v) do
            if type(x) ~= "string" or (type(k) ~= "string" and (type(k) ~= "number" or not x:find("=", 1, true))) then
                return what
            end
        end
    end,
    cwd = V.string, file = V.string, start_new_session = V.boolean, process_group = V.integer,
    pass_fds = function(v)
        if type(v) ~= "table" then return "a list of file descriptors" end
        for _, fd in pairs(v) do
            if V.natural(fd) then return "a list of file descriptors" end
        end
    end,
    close_fds = V.boolean, limit = V.count,
}

local function check_argv(fname, argv, argn)
    if type(argv) ~= "table" or #argv == 0 then
        argerror(argn, fname, "non-empty list of strings expected, got " ..
            (type(argv) == "table" and "an empty table" or typeof(argv)))
    end
    for i = 1, #argv do
        if type(argv[i]) ~= "string" and type(argv[i]) ~= "number" then
            argerror(argn, fname, "item " .. i .. " of argv: string expected, got " .. typeof(argv[i]))
        end
    end
end

function gfl.subprocess(argv, opts)
    check_argv("subprocess", argv, 1)
    check_options("subprocess", 2, opts, SUBPROCESS)
    check_task_for("subprocess")
    local p, msg, code = started(C.subprocess(false, argv, opts))
    if not p then
        return nil, msg, code
    end
    return setmetatable({ _p = p, stdin = p:_pipe(0), stdout = p:_pipe(1), stderr = p:_pipe(2) }, ProcessObject)
end
gfl.create_subprocess_exec = gfl.subprocess

--- gfl.subprocess_shell(cmd [, opts]): gfl.subprocess({"/bin/sh", "-c", cmd}, opts)
function gfl.subprocess_shell(cmd, opts)
    if type(cmd) ~= "string" then
        argerror(1, "subprocess_shell", "command string expected, got " .. typeof(cmd))
    end
    check_options("subprocess_shell", 2, opts, SUBPROCESS)
    return gfl.subprocess({ "/bin/sh", "-c", cmd }, opts)
end

--- gfl.subprocess_exec(factory, argv [, opts]) -> transport, protocol |
--- nil, msg, code (protocol style; stdio defaults to pipes)
function gfl.subprocess_exec(factory, argv, opts)
    factory = check_factory("subprocess_exec", factory)
    check_argv("subprocess_exec", argv, 2)
    check_options("subprocess_exec", 3, opts, SUBPROCESS)
    check_task_for("subprocess_exec")
    local p, msg, code = started(C.subprocess(factory, argv, opts))
    if not p then
        return nil, msg, code
    end
    return p, p:get_protocol()
end

--- transport:wait() (protocol style) -> returncode
function Process:wait()
    return self:_wait_future():await()
end

---------------------------------------------------------------------------
-- TLS

--- gfl.tls_context([opts]) -> a reusable TLS context
function gfl.tls_context(opts)
    check_options("tls_context", 1, opts, C.TLS_CONTEXT)
    return C.tls_context(opts)
end

local START_TLS = { server_side = V.boolean }
for k, v in pairs(C.TLS_CONNECTION) do
    START_TLS[k] = v
end
gfl.ETLS = C.ETLS
gfl.ETLSVERIFY = C.ETLSVERIFY

--- stream:start_tls(opts) -> true | nil, msg, code: upgrades the open
--- connection in place (opts as the tls option, plus server_side = true)
function Stream:start_tls(opts)
    if type(opts) == "table" then
        check_options("start_tls", 1, opts, START_TLS)
    elseif opts ~= nil and opts ~= true and not C.is_tls_context(opts) then
        argerror(1, "start_tls", "options table, true or a TLS context expected, got " .. typeof(opts))
    end
    check_task_for("start_tls")
    local ok, w, code = self:_start_tls(opts)
    if ok == nil then
        return nil, w, code
    end
    wait(w)
    return self:_tls_result()
end

--- transport:start_tls(opts) (protocol style) -> true | nil, msg, code
C.Transport.start_tls = Stream.start_tls

--- stream:tls_info() -> {version, cipher, alpn, server_hostname,
--- session_reused, peercert (DER), peercert_pem} or nil without TLS
local function tls_info(self)
    local version = self:get_extra_info("tls_version")
    if not version then
        return nil
    end
    return {
        version = version,
        cipher = self:get_extra_info("cipher"),
        alpn = self:get_extra_info("alpn_protocol"),
        server_hostname = self:get_extra_info("server_hostname"),
        session_reused = self:get_extra_info("session_reused"),
        peercert = self:get_extra_info("peercert"),
        peercert_pem = self:get_extra_info("peercert_pem"),
    }
end
Stream.tls_info = tls_info
C.Transport.tls_info = tls_info
