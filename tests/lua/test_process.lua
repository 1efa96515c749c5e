-- Subprocesses: pipes as streams, exit codes, signals, env/cwd, spawn
-- errors, communicate, the protocol style.
local gfl = require "globeflower"
local T = {}

local PIPES = { stdin = "pipe", stdout = "pipe", stderr = "pipe" }

function T.echo_through_cat()
    local p = assert(gfl.subprocess({ "cat" }, PIPES))
    assert(type(p:pid()) == "number" and p:pid() > 0)
    assert(p:returncode() == nil, "running")
    p.stdin:write("hello\n", "world\n")
    assert(p.stdin:drain())
    assert(p.stdout:readline() == "hello\n")
    assert(p.stdout:readline() == "world\n")
    p.stdin:close()
    assert(p.stdout:read() == "", "EOF once stdin is closed")
    assert(p:wait() == 0)
    assert(p:returncode() == 0)
    assert(p.stderr:read() == "")
end

function T.large_data_both_ways()
    local p = assert(gfl.subprocess({ "cat" }, { stdin = "pipe", stdout = "pipe" }))
    local chunk = string.rep("0123456789abcdef", 4096) -- 64 KiB
    local writer = gfl.spawn(function()
        for _ = 1, 32 do
            p.stdin:write(chunk)
            p.stdin:drain()
        end
        p.stdin:close()
    end)
    local total = 0
    while true do
        local data = p.stdout:read(65536)
        if data == "" then break end
        total = total + #data
    end
    writer:await()
    assert(total == 32 * #chunk, total)
    assert(p:wait() == 0)
end

function T.exit_codes()
    for _, code in ipairs({ 0, 1, 3, 255 }) do
        local p = assert(gfl.subprocess({ "sh", "-c", "exit " .. code }))
        assert(p:wait() == code)
        assert(p.stdin == nil and p.stdout == nil, "inherit by default: no pipes")
    end
    local p = assert(gfl.subprocess_shell("exit 7"))
    assert(p:wait() == 7)
    p = assert(gfl.subprocess({ "sh", "-c", 'exit "$1"', "sh", 5 }), "numbers in argv are converted")
    assert(p:wait() == 5)
end

function T.signals_terminate_kill_send_signal()
    local p = assert(gfl.subprocess({ "sleep", "30" }))
    gfl.sleep(0.02)
    assert(p:terminate())
    assert(p:wait() == -15, p:returncode())

    p = assert(gfl.subprocess({ "sleep", "30" }))
    assert(p:kill())
    assert(p:wait() == -9)

    p = assert(gfl.subprocess({ "sleep", "30" }))
    assert(p:send_signal("SIGINT"))
    assert(p:wait() == -2)

    -- a child that handles the signal itself
    p = assert(gfl.subprocess({ "sh", "-c", "trap 'echo got-usr1; exit 4' USR1; echo ready; while :; do sleep 0.01; done" },
        { stdout = "pipe" }))
    assert(p.stdout:readline() == "ready\n")
    assert(p:send_signal(gfl.signals.SIGUSR1))
    assert(p.stdout:readline() == "got-usr1\n")
    assert(p:wait() == 4)

    -- after the child is gone: a value, never a crash
    local ok, msg = p:send_signal("TERM")
    assert(ok == nil and msg:match("ProcessLookupError"), msg)
    assert(not pcall(p.send_signal, p, "NOSUCHSIGNAL"))
end

function T.env_and_cwd()
    local p = assert(gfl.subprocess({ "sh", "-c", 'echo "$GFL_A|$GFL_B|$HOME"; pwd' },
        { stdout = "pipe", env = { GFL_A = "one", "GFL_B=two", PATH = "/usr/bin:/bin" }, cwd = "/tmp" }))
    local out = p.stdout:read()
    assert(out == "one|two|\n/tmp\n", out)
    assert(p:wait() == 0)
    -- the parent's environment is inherited by default
    p = assert(gfl.subprocess({ "sh", "-c", 'echo "$HOME"' }, { stdout = "pipe" }))
    assert(p.stdout:read() == (os.getenv("HOME") or "") .. "\n")
    p:wait()
end

function T.stderr_separate_merged_and_devnull()
    local cmd = { "sh", "-c", "echo out; echo err >&2" }
    local p = assert(gfl.subprocess(cmd, { stdout = "pipe", stderr = "pipe" }))
    local out, err = p:communicate()
    assert(out == "out\n" and err == "err\n", tostring(out) .. tostring(err))
    p = assert(gfl.subprocess(cmd, { stdout = "pipe", stderr = "stdout" }))
    out = p.stdout:read()
    assert(out == "out\nerr\n", out)
    p:wait()
    p = assert(gfl.subprocess(cmd, { stdout = "pipe", stderr = "devnull" }))
    assert(p.stdout:read() == "out\n")
    assert(p.stderr == nil)
    p:wait()
end

function T.communicate_with_input()
    local p = assert(gfl.subprocess({ "tr", "a-z", "A-Z" }, PIPES))
    local out, err = p:communicate("make me loud\n")
    assert(out == "MAKE ME LOUD\n" and err == "")
    assert(p:returncode() == 0)
end

function T.spawn_errors_are_values()
    local p, msg, code = gfl.subprocess({ "/nonexistent/program" })
    assert(p == nil and msg:match("FileNotFoundError") and code == -2, msg)
    p, msg = gfl.subprocess({ "true" }, { cwd = "/nonexistent/dir" })
    assert(p == nil and msg:match("FileNotFoundError"), msg)
    p, msg = gfl.subprocess({ "/tmp" }) -- a directory
    assert(p == nil and msg:match("PermissionError"), msg)
    assert(not pcall(gfl.subprocess, {}), "an empty argv raises")
    assert(not pcall(gfl.subprocess, { "true" }, { stdin = "bogus" }))
    assert(not pcall(gfl.subprocess, { "true" }, { stdout = "stdout" }))
end

function T.close_kills_a_running_child()
    local p = assert(gfl.subprocess({ "sleep", "30" }, { stdout = "pipe" }))
    p:close()
    assert(p:wait() == -9)
    assert(p.stdout:read() == "")
end

function T.wait_can_time_out_and_be_retried()
    local p = assert(gfl.subprocess({ "sleep", "0.2" }))
    local ok, e = gfl.pcall(gfl.wait_for, function() return p:wait() end, 0.02)
    assert(not ok and gfl.is_timeout(e))
    assert(p:returncode() == nil)
    assert(p:wait() == 0, "the child was not affected")
end

function T.dropped_process_keeps_running()
    local path = os.tmpname()
    do
        gfl.subprocess({ "sh", "-c", "sleep 0.05; echo done > " .. path })
    end
    collectgarbage()
    collectgarbage()
    gfl.sleep(0.3)
    local f = io.open(path)
    local text = f and f:read("*a")
    if f then f:close() end
    os.remove(path)
    assert(text == "done\n", "the child ran to its end")
end

function T.protocol_style()
    local events = {}
    local done = gfl.future()
    local P = {}
    function P:connection_made(t)
        self.t = t
        events[#events + 1] = "made"
        t:write("via protocol\n")
        t:write_eof()
    end
    function P:pipe_data_received(fd, data)
        events[#events + 1] = fd .. ":" .. data
    end
    function P:pipe_connection_lost(fd)
        events[#events + 1] = "pipe-lost:" .. fd
    end
    function P:process_exited()
        events[#events + 1] = "exited:" .. tostring(self.t:returncode())
    end
    function P:connection_lost(err)
        events[#events + 1] = "lost"
        done:set_result(err)
    end
    local t, proto = assert(gfl.subprocess_exec(P, { "cat" }))
    assert(proto.t == t and t:pid() > 0)
    assert(done:await() == nil)
    assert(t:wait() == 0)
    assert(events[1] == "made", events[1])
    assert(events[#events] == "lost")
    local text = table.concat(events, ",")
    assert(text:find("1:via protocol\n", 1, true), text)
    assert(text:find("exited:0", 1, true), text)
    assert(text:find("pipe-lost:0", 1, true) and text:find("pipe-lost:1", 1, true), text)
end

function T.many_children_no_leaks()
    local procs = {}
    for i = 1, 20 do
        procs[i] = assert(gfl.subprocess({ "sh", "-c", "echo " .. i }, { stdout = "pipe" }))
    end
    for i = 1, 20 do
        assert(procs[i].stdout:read() == i .. "\n")
        assert(procs[i]:wait() == 0)
    end
end

return T
