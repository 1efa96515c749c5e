-- globeflower: UDP endpoints, subprocesses, TLS (contexts and start_tls).
-- Expected I/O failures return nil, message, code; cancellation raises.
local gfl, C = ...

local type, error, setmetatable, select = type, error, setmetatable, select
local wait, factory_of, failure = C.wait, C.factory_of, C.failure
local Stream, Datagram, Process = C.Stream, C.Datagram, C.Process

local waiting = C.waiting

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
Datagram.recvfrom = waiting(Datagram._recvfrom)
--- ep:recv() -> data | nil, msg, code
Datagram.recv = waiting(Datagram._recv)
--- ep:drain() -> true once the queue of unsent datagrams is below its high mark
Datagram.drain = waiting(Datagram._drain)
--- ep:wait_closed() -> true once the endpoint is closed
Datagram.wait_closed = waiting(Datagram._wait_closed)
--- ep:send(data): to the connected peer (remote_host/remote_port)
function Datagram:send(data)
    return self:sendto(data)
end

--- gfl.udp([opts]) -> endpoint | nil, msg, code (coroutine style)
--- opts: local_host, local_port, remote_host, remote_port, family,
--- reuse_port, allow_broadcast, local_path, remote_path, queue
function gfl.udp(opts)
    return started(C.create_datagram_endpoint(false, opts))
end
gfl.open_datagram_endpoint = gfl.udp

--- gfl.create_datagram_endpoint(factory, opts) -> transport, protocol | nil, msg, code
function gfl.create_datagram_endpoint(factory, opts)
    local ep, msg, code = started(C.create_datagram_endpoint(factory_of(factory), opts))
    if not ep then
        return nil, msg, code
    end
    return ep, ep:get_protocol()
end

--- gfl.wrap_datagram_fd(fd) -> endpoint | nil, msg, code: takes over a datagram socket
function gfl.wrap_datagram_fd(fd)
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
function gfl.subprocess(argv, opts)
    if type(argv) ~= "table" then
        error("subprocess: argv must be a list of strings", 2)
    end
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
        error("subprocess_shell: a command string expected", 2)
    end
    return gfl.subprocess({ "/bin/sh", "-c", cmd }, opts)
end

--- gfl.subprocess_exec(factory, argv [, opts]) -> transport, protocol |
--- nil, msg, code (protocol style; stdio defaults to pipes)
function gfl.subprocess_exec(factory, argv, opts)
    if type(argv) ~= "table" then
        error("subprocess_exec: argv must be a list of strings", 2)
    end
    local p, msg, code = started(C.subprocess(factory_of(factory), argv, opts))
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

gfl.tls_context = C.tls_context
gfl.ETLS = C.ETLS
gfl.ETLSVERIFY = C.ETLSVERIFY

--- stream:start_tls(opts) -> true | nil, msg, code: upgrades the open
--- connection in place (opts as the tls option, plus server_side = true)
function Stream:start_tls(opts)
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
