-- TLS on streams and protocol-style connections, against the real
-- `openssl s_server` / `openssl s_client` and against ourselves:
-- verification (on by default, failures with a clear error), insecure
-- mode only when named, client certificates, ALPN, SNI, start_tls, extra
-- info. Certificates are generated at setup by tests/tls/make-certs.sh
-- into a temporary directory removed at teardown. Every openssl process
-- is started through `setpriv --pdeathsig KILL` (it dies with the test
-- process, however that ends, as the C tests' PR_SET_PDEATHSIG) and is
-- terminated and reaped by the test that started it, or at teardown.
local gfl = require "globeflower"
local T = {}

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local dir
local peers = {}

local function cert(name)
    return dir .. "/" .. name
end

function T.setup()
    dir = os.tmpname()
    os.remove(dir)
    local p = assert(gfl.subprocess({ "sh", here .. "/../tls/make-certs.sh", dir }, { stdout = "devnull" }))
    assert(p:wait() == 0, "make-certs.sh failed")
end

function T.teardown()
    for p in pairs(peers) do
        p:kill()
        p:wait()
    end
    local p = assert(gfl.subprocess({ "rm", "-rf", dir }))
    p:wait()
end

local function have(program)
    local p = gfl.subprocess({ "sh", "-c", "command -v " .. program }, { stdout = "devnull" })
    return p and p:wait() == 0
end

local function peer(args)
    local argv = { "openssl" }
    if have("setpriv") then
        argv = { "setpriv", "--pdeathsig", "KILL", "openssl" }
    end
    for _, a in ipairs(args) do argv[#argv + 1] = a end
    local p = assert(gfl.subprocess(argv, { stdin = "pipe", stdout = "pipe", stderr = "stdout" }))
    peers[p] = true
    return p
end

local function stop(p)
    p:terminate()
    local rc = p:wait()
    peers[p] = nil
    return rc
end

-- openssl s_server (reversing each line) with dir/<name>.pem; -> process, port
local function s_server(name, extra)
    local args = { "s_server", "-accept", "127.0.0.1:0", "-cert", cert(name .. ".pem"), "-key", cert(name .. ".key"), "-rev" }
    for _, a in ipairs(extra or {}) do args[#args + 1] = a end
    local p = peer(args)
    while true do
        local line = p.stdout:readline()
        assert(line ~= "", "s_server exited before listening")
        local port = line:match("^ACCEPT 127%.0%.0%.1:(%d+)")
        if port then return p, tonumber(port) end
    end
end

-- Reads a process's output until `pattern` appears; -> everything read.
local function read_until(s, pattern)
    local seen = ""
    while not seen:find(pattern) do
        local data = s:read(4096)
        assert(data and data ~= "", "EOF before " .. pattern .. " in:\n" .. seen)
        seen = seen .. data
    end
    return seen
end

local function client_opts(extra)
    local t = { cafile = cert("ca.pem"), default_cas = false }
    for k, v in pairs(extra or {}) do t[k] = v end
    return { tls = t }
end

function T.client_against_s_server_with_extra_info()
    local srv, port = s_server("server")
    local c = assert(gfl.open_connection("127.0.0.1", port, client_opts({ server_hostname = "localhost" })))
    c:write("hello world\n")
    assert(c:readline() == "dlrow olleh\n")
    local info = c:tls_info()
    assert(info.version:match("^TLSv1%.[23]$"), info.version)
    assert(type(info.cipher) == "string" and #info.cipher > 0)
    assert(info.server_hostname == "localhost")
    assert(info.peercert_pem:match("BEGIN CERTIFICATE"))
    assert(type(info.peercert) == "string" and #info.peercert > 100, "DER bytes")
    assert(info.alpn == nil and info.session_reused == false)
    assert(c:get_extra_info("cipher") == info.cipher)
    assert(select(2, c:getpeername()) == port, "the stream's own names pass through")
    c:close()
    assert(c:wait_closed())
    stop(srv)
end

function T.ip_address_is_verified_by_default()
    local srv, port = s_server("server")
    -- server_hostname defaults to the host connected to: 127.0.0.1 is in the certificate
    local c = assert(gfl.open_connection("127.0.0.1", port, client_opts()))
    c:write("ab\n")
    assert(c:readline() == "ba\n")
    c:close()
    stop(srv)
end

local function expect_failure(name, tls, reason)
    local srv, port = s_server(name)
    local c, msg, code = gfl.open_connection("127.0.0.1", port, { tls = tls })
    stop(srv)
    assert(c == nil, "the handshake must fail")
    assert(code == gfl.ETLSVERIFY, tostring(code))
    assert(msg:find("SSLCertVerificationError: certificate verify failed: " .. reason, 1, true), msg)
end

function T.self_signed_rejected_by_default()
    -- tls = true: the system CA store only
    expect_failure("self", true, "self-signed certificate")
end

function T.wrong_hostname_rejected()
    expect_failure("server", { cafile = cert("ca.pem"), server_hostname = "wrong.example" },
        "Hostname mismatch, certificate is not valid for 'wrong.example'")
end

function T.expired_and_untrusted_rejected()
    expect_failure("expired", { cafile = cert("ca.pem"), server_hostname = "localhost" }, "certificate has expired")
    expect_failure("server", { server_hostname = "localhost" }, "unable to get local issuer certificate")
end

function T.insecure_only_when_named()
    local ok, err = pcall(gfl.open_connection, "127.0.0.1", 1, { tls = { verify = false } })
    assert(not ok and tostring(err):match("insecure_skip_verify"), tostring(err))
    local srv, port = s_server("self")
    local c = assert(gfl.open_connection("127.0.0.1", port, { tls = { insecure_skip_verify = true, server_hostname = "anything.example" } }))
    c:write("ok\n")
    assert(c:readline() == "ko\n")
    c:close()
    stop(srv)
end

function T.alpn_with_s_server()
    local srv, port = s_server("server", { "-alpn", "foo,bar" })
    local c = assert(gfl.open_connection("127.0.0.1", port,
        client_opts({ server_hostname = "localhost", alpn = { "bar", "baz" } })))
    assert(c:tls_info().alpn == "bar", tostring(c:tls_info().alpn))
    assert(c:get_extra_info("alpn_protocol") == "bar")
    c:close()
    stop(srv)
end

function T.sni_with_s_server()
    -- s_server answers "other.test" with the second certificate
    local srv, port = s_server("server", { "-servername", "other.test",
        "-cert2", cert("other.pem"), "-key2", cert("other.key") })
    local c = assert(gfl.open_connection("127.0.0.1", port, client_opts({ server_hostname = "other.test" })))
    local info = c:tls_info()
    assert(info.server_hostname == "other.test")
    c:write("sni\n")
    assert(c:readline() == "ins\n")
    c:close()
    stop(srv)
end

function T.protocol_style_client_with_s_server()
    local srv, port = s_server("server")
    local got = gfl.future()
    local P = {}
    function P:connection_made(t) t:write("protocol\n") end
    function P:data_received(d) if not got:done() then got:set_result(d) end end
    local ctx = gfl.tls_context({ cafile = cert("ca.pem"), default_cas = false })
    local t = assert(gfl.create_connection(P, "127.0.0.1", port, { tls = { context = ctx, server_hostname = "localhost" } }))
    assert(got:await() == "locotorp\n")
    assert(t:tls_info().version)
    t:close()
    stop(srv)
end

function T.our_server_against_s_client()
    local handled = gfl.future()
    local server = assert(gfl.start_server(function(s)
        local line = s:readline()
        s:write("echo: " .. line)
        local info = s:tls_info()
        -- s_client sends close_notify at stdin EOF: a clean EOF here
        local rest = s:read()
        handled:set_result(line, info.alpn, info.server_hostname, rest)
        s:close()
    end, "127.0.0.1", 0, { tls = { cert = cert("server.pem"), key = cert("server.key"), alpn = { "gfl", "http/1.1" } } }))
    local cl = peer({ "s_client", "-connect", "127.0.0.1:" .. server:port(), "-CAfile", cert("ca.pem"),
        "-verify_return_error", "-servername", "localhost", "-alpn", "gfl" })
    cl.stdin:write("ping-from-s_client\n")
    local out = read_until(cl.stdout, "echo: ping%-from%-s_client")
    assert(out:match("Verify return code: 0"), out)
    cl.stdin:close()
    local line, alpn, sni, rest = gfl.wait_for(handled, 10)
    assert(line == "ping-from-s_client\n" and alpn == "gfl" and sni == "localhost" and rest == "", tostring(alpn))
    assert(cl:wait() == 0)
    peers[cl] = nil
    server:close()
end

function T.ourselves_with_client_certificates()
    local Echo = {}
    function Echo:connection_made(t) self.t = t end
    function Echo:data_received(d) self.t:write(d) end
    local server = assert(gfl.create_server(Echo, "127.0.0.1", 0, { tls = {
        cert = cert("server.pem"), key = cert("server.key"), cafile = cert("ca.pem"), verify = "required" } }))
    local port = server:port()
    local c = assert(gfl.open_connection("127.0.0.1", port, client_opts({
        cert = cert("client.pem"), key = cert("client.key"), server_hostname = "localhost" })))
    c:write("with a certificate\n")
    assert(c:readline() == "with a certificate\n")
    c:close()
    -- without one: refused by our server (TLS 1.3 reports it at the first read)
    local c2, msg = gfl.open_connection("127.0.0.1", port, client_opts({ server_hostname = "localhost" }))
    if c2 then
        c2:write("x\n")
        local data, msg2 = c2:readline()
        assert(data == nil, "no echo without a certificate")
        msg = msg2
        c2:close()
    end
    assert(msg:match("SSLError") and msg:match("certificate required"), msg)
    server:close()
end

function T.start_tls_on_open_streams()
    local sctx = gfl.tls_context({ server = true, cert = cert("server.pem"), key = cert("server.key") })
    local server = assert(gfl.start_server(function(s)
        assert(s:readline() == "STARTTLS\n")
        s:write("GO\n")
        assert(s:start_tls({ context = sctx, server_side = true }))
        local line = s:readline()
        s:write("secure " .. line)
        s:close()
    end, "127.0.0.1", 0))
    local c = assert(gfl.open_connection("127.0.0.1", server:port()))
    assert(not c:tls_info(), "plain text first")
    c:write("STARTTLS\n")
    assert(c:readline() == "GO\n")
    assert(not pcall(c.start_tls, c, { cafile = cert("ca.pem") }), "server_hostname is required")
    assert(c:start_tls({ cafile = cert("ca.pem"), default_cas = false, server_hostname = "localhost" }))
    assert(c:tls_info().version)
    c:write("hello\n")
    assert(c:readline() == "secure hello\n")
    c:close()
    server:close()
end

function T.start_tls_protocol_style()
    local sctx = gfl.tls_context({ server = true, cert = cert("server.pem"), key = cert("server.key") })
    local server = assert(gfl.start_server(function(s)
        assert(s:readline() == "STARTTLS\n")
        s:write("GO\n")
        assert(s:start_tls({ context = sctx, server_side = true }))
        s:write("secure " .. s:readline())
        s:close()
    end, "127.0.0.1", 0))
    local P = {}
    function P:connection_made() self.got = gfl.future() end
    function P:data_received(d)
        local f = self.got
        self.got = gfl.future()
        f:set_result(d)
    end
    local t, proto = assert(gfl.create_connection(P, "127.0.0.1", server:port()))
    local first = proto.got
    t:write("STARTTLS\n")
    assert(first:await() == "GO\n")
    local next_data = proto.got
    assert(t:start_tls({ cafile = cert("ca.pem"), default_cas = false, server_hostname = "localhost" }))
    assert(t:tls_info().version and t:get_extra_info("peercert_pem"))
    t:write("hello\n")
    assert(next_data:await() == "secure hello\n")
    t:close()
    server:close()
end

function T.start_tls_failure_is_a_value()
    local server = assert(gfl.start_server(function(s)
        s:write("not tls at all\r\n\r\n")
        gfl.sleep(0.5)
        s:close()
    end, "127.0.0.1", 0))
    local c = assert(gfl.open_connection("127.0.0.1", server:port()))
    local ok, msg, code = c:start_tls({ cafile = cert("ca.pem"), server_hostname = "localhost" })
    assert(ok == nil and type(msg) == "string" and code < 0, tostring(msg))
    local w, wmsg = c:write("x")
    assert(w == nil and type(wmsg) == "string")
    server:close()
end

function T.bad_configuration_raises()
    local ok, err = pcall(gfl.tls_context, { server = true, cert = "/nonexistent.pem" })
    assert(not ok and tostring(err):match("nonexistent"), tostring(err))
    ok, err = pcall(gfl.start_server, function() end, "127.0.0.1", 0, { tls = true })
    assert(not ok and tostring(err):match("certificate"), tostring(err))
    local cctx = gfl.tls_context({})
    ok, err = pcall(gfl.start_server, function() end, "127.0.0.1", 0, { tls = cctx })
    assert(not ok and tostring(err):match("client context"), tostring(err))
    ok, err = pcall(gfl.open_connection, "127.0.0.1", 1, { tls = { alpn = "h2" } })
    assert(not ok and tostring(err):match("alpn"), tostring(err))
end

function T.session_resumption_with_one_context()
    local srv, port = s_server("server", { "-naccept", "2" })
    local ctx = gfl.tls_context({ cafile = cert("ca.pem"), default_cas = false })
    local reused = {}
    for i = 1, 2 do
        local c = assert(gfl.open_connection("127.0.0.1", port, { tls = { context = ctx, server_hostname = "localhost" } }))
        c:write("r\n")
        assert(c:readline() == "r\n")
        reused[i] = c:tls_info().session_reused
        c:close()
        c:wait_closed()
    end
    assert(reused[1] == false and reused[2] == true, tostring(reused[2]))
    stop(srv)
end

return T
