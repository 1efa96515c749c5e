-- gfl.fs: file-system operations waiting inside tasks, nil, msg, code for
-- I/O failures, raised errors for bad arguments and outside tasks, and
-- watchers calling a function on the loop.
local gfl = require "globeflower"
local fs = gfl.fs
local T = {}

-- A fresh directory per test, removed afterwards.
local function with_dir(fn)
    return function()
        local dir = assert(fs.mkdtemp((os.getenv("TMPDIR") or "/tmp") .. "/gfl-lua-fs-"))
        local ok, err = gfl.pcall(fn, dir)
        os.execute("rm -rf '" .. dir .. "'")
        if not ok then
            error(err, 0)
        end
    end
end

local function raises(pattern, fn, ...)
    local ok, err = pcall(fn, ...)
    assert(not ok, "expected an error matching " .. pattern)
    assert(tostring(err):find(pattern, 1, true), "got: " .. tostring(err))
end

T.open_write_read_close = with_dir(function(dir)
    local path = dir .. "/a"
    local fd = assert(fs.open(path, "w+", tonumber("640", 8)))
    assert(type(fd) == "number" and fd >= 0)
    assert(fs.write(fd, "hello world") == 11)
    assert(fs.write(fd, "W", 6) == 1, "at an offset")
    assert(fs.read(fd, 5, 6) == "World")
    assert(fs.read(fd, 100, 0) == "hello World")
    assert(fs.read(fd, 100) == "", "end of file at the position")
    local st = assert(fs.fstat(fd))
    assert(st.size == 11 and st.type == "file", st.type)
    assert(fs.ftruncate(fd, 5) == true)
    assert(fs.fsync(fd) == true and fs.fdatasync(fd) == true)
    assert(fs.close(fd) == true)
    local none, msg, code = fs.close(fd)
    assert(none == nil and msg:find("Bad file descriptor") and code == -9, msg)
    assert(fs.readfile(path) == "hello")

    local fd2 = assert(fs.open(path, "a"))
    assert(fs.write(fd2, "!") == 1)
    assert(fs.close(fd2))
    assert(fs.readfile(path) == "hello!")
    local fd3 = assert(fs.open(path)) -- "r" by default
    assert(fs.read(fd3, 2) == "he")
    assert(fs.close(fd3))

    local n, m, c = fs.open(path, "wx")
    assert(n == nil and m:find("^FileExistsError: ") and c == -17, m)
    n, m, c = fs.open(dir .. "/missing")
    assert(n == nil and c == -2, m)
    assert(m == "FileNotFoundError: [Errno 2] No such file or directory: '" .. dir .. "/missing'", m)
end)

T.stat_lstat_links_times = with_dir(function(dir)
    assert(fs.writefile(dir .. "/f", "12345") == 5)
    assert(fs.symlink("f", dir .. "/l"))
    local st = assert(fs.stat(dir .. "/l"))
    assert(st.type == "file" and st.size == 5 and st.nlink == 1)
    assert(type(st.mtime) == "number" and type(st.mode) == "number" and st.perm == st.mode % 4096)
    assert(assert(fs.lstat(dir .. "/l")).type == "link")
    assert(fs.readlink(dir .. "/l") == "f")
    assert(fs.realpath(dir .. "/l") == fs.realpath(dir) .. "/f")
    assert(fs.link(dir .. "/f", dir .. "/h"))
    assert(assert(fs.stat(dir .. "/f")).nlink == 2)
    assert(fs.utime(dir .. "/f", 1000000000.5, 1234567890.25))
    st = assert(fs.stat(dir .. "/f"))
    assert(math.abs(st.mtime - 1234567890.25) < 1e-6 and math.abs(st.atime - 1000000000.5) < 1e-6)
    assert(fs.chmod(dir .. "/f", tonumber("604", 8)))
    assert(assert(fs.stat(dir .. "/f")).perm == tonumber("604", 8))
    assert(fs.chown(dir .. "/f", -1, -1))
    local n, m, c = fs.stat(dir .. "/f/x")
    assert(n == nil and m:find("^NotADirectoryError") and c == -20, m)
    n, m, c = fs.readlink(dir .. "/f")
    assert(n == nil and c == -22, m)
end)

T.directories_and_scandir = with_dir(function(dir)
    assert(fs.mkdir(dir .. "/d"))
    local n, m, c = fs.mkdir(dir .. "/d")
    assert(n == nil and c == -17, m)
    assert(fs.writefile(dir .. "/d/b", "b"))
    assert(fs.writefile(dir .. "/d/a", "a"))
    assert(fs.mkdir(dir .. "/d/sub", tonumber("700", 8)))
    local list = assert(fs.scandir(dir .. "/d"))
    assert(#list == 3 and gfl.is_array(list))
    assert(list[1].name == "a" and list[1].type == "file")
    assert(list[2].name == "b" and list[3].name == "sub" and list[3].type == "directory")
    local empty = assert(fs.scandir(dir .. "/d/sub"))
    assert(#empty == 0 and gfl.is_array(empty))
    assert(fs.rename(dir .. "/d/b", dir .. "/d/sub/c"))
    assert(fs.readfile(dir .. "/d/sub/c") == "b")
    n, m, c = fs.rmdir(dir .. "/d/sub")
    assert(n == nil and c == -39, m)
    assert(fs.unlink(dir .. "/d/sub/c"))
    assert(fs.rmdir(dir .. "/d/sub"))
    n, m, c = fs.scandir(dir .. "/d/sub")
    assert(n == nil and m:find("^FileNotFoundError") and c == -2, m)
end)

T.whole_files_copyfile_mkdtemp = with_dir(function(dir)
    local data = {}
    for i = 1, 5000 do
        data[i] = string.char(i % 256, (i * 7) % 256)
    end
    data = table.concat(data) .. "\0tail"
    assert(fs.writefile(dir .. "/bin", data) == #data)
    assert(fs.readfile(dir .. "/bin") == data, "binary data survives")
    assert(fs.writefile(dir .. "/bin", "+", { append = true }) == 1)
    assert(fs.readfile(dir .. "/bin") == data .. "+")
    local n, m, c = fs.writefile(dir .. "/bin", "x", { excl = true })
    assert(n == nil and c == -17, m)
    assert(fs.copyfile(dir .. "/bin", dir .. "/copy"))
    assert(fs.readfile(dir .. "/copy") == data .. "+")
    n, m, c = fs.copyfile(dir .. "/bin", dir .. "/copy", { excl = true })
    assert(n == nil and c == -17, m)
    n, m, c = fs.readfile(dir)
    assert(n == nil and m:find("^IsADirectoryError") and c == -21, m)
    local tmp = assert(fs.mkdtemp(dir .. "/t-"))
    assert(#tmp == #dir + 9 and assert(fs.stat(tmp)).type == "directory")
end)

T.bad_arguments_raise = with_dir(function(dir)
    raises("bad argument #1 to 'fs.stat' (string expected, got number)", fs.stat, 42)
    raises("bad argument #1 to 'fs.stat' (a path must not contain NUL bytes)", fs.stat, "a\0b")
    raises("bad argument #2 to 'fs.open' (unknown flags", fs.open, dir .. "/x", "rw")
    raises("bad argument #3 to 'fs.open' (out of range", fs.open, dir .. "/x", "w", -1)
    raises("bad argument #1 to 'fs.read' (number expected, got string)", fs.read, "3", 1)
    raises("bad argument #2 to 'fs.read' (number has no integer representation)", fs.read, 0, 1.5)
    raises("bad argument #1 to 'fs.close' (out of range", fs.close, -1)
    raises("bad argument #2 to 'fs.write' (string expected, got no value)", fs.write, 1)
    raises("bad argument #3 to 'fs.writefile' (unknown option 'apend')", fs.writefile, dir .. "/x", "", { apend = true })
    raises("bad argument #3 to 'fs.writefile' (option 'excl' must be a boolean)", fs.writefile, dir .. "/x", "", { excl = 1 })
    raises("bad argument #3 to 'fs.copyfile' (options table expected, got string)", fs.copyfile, "a", "b", "excl")
    raises("bad argument #3 to 'fs.utime' (a finite time in seconds expected)", fs.utime, dir, 0, 0 / 0)
    raises("bad argument #2 to 'fs.ftruncate' (out of range", fs.ftruncate, 0, -1)
    raises("bad argument #2 to 'fs.unlink' (no value expected, got string)", fs.unlink, "a", "b")
    raises("bad argument #2 to 'fs.watch' (function expected, got no value)", fs.watch, dir)
    -- the caller's line, not the module's
    local ok, err = pcall(function()
        return fs.stat({}) -- a tail call too
    end)
    assert(not ok and err:find("test_fs.lua:%d+: bad argument #1 to 'fs.stat'"), err)
    -- nothing was created by the refused calls
    assert(#assert(fs.scandir(dir)) == 0)
end)

function T.outside_a_task_raises()
    -- a callback runs outside any task: like gfl.sleep, fs calls raise there
    local res
    gfl.call_soon(function()
        res = { pcall(fs.stat, "/") }
    end)
    for _ = 1, 100 do
        if res then break end
        gfl.sleep(0)
    end
    assert(res and res[1] == false, "raised")
    assert(res[2]:find("'fs.stat' waits, so it must be called inside a task (run the code with gfl.run or gfl.spawn)", 1, true), res[2])
    local t = gfl.spawn(function() return fs.stat("/") end)
    assert(t:await().type == "directory")
end

T.many_operations_at_once = with_dir(function(dir)
    local fns = {}
    for i = 1, 50 do
        fns[i] = function()
            local p = dir .. "/f" .. i
            assert(fs.writefile(p, string.rep("x", i)))
            return assert(fs.stat(p)).size
        end
    end
    local r = gfl.gather((unpack or table.unpack)(fns))
    for i = 1, 50 do
        assert(r[i] == i)
    end
    assert(#assert(fs.scandir(dir)) == 50)
end)

T.cancelling_a_waiting_task = with_dir(function(dir)
    local t = gfl.spawn(function() return fs.readfile(dir .. "/none") end)
    t:cancel()
    local ok, err = gfl.pcall(t.await, t)
    assert(not ok and gfl.is_cancelled(err))
end)

local function wait_until(pred)
    for _ = 1, 200 do
        if pred() then return true end
        gfl.sleep(0.01)
    end
    return false
end

T.watch_a_directory = with_dir(function(dir)
    local seen = {}
    local w = assert(fs.watch(dir, function(name, kind)
        seen[#seen + 1] = kind .. ":" .. tostring(name)
    end))
    assert(w:path() == dir and not w:is_closed())
    assert(tostring(w):find("FsWatcher", 1, true))
    local function has(e)
        for _, s in ipairs(seen) do
            if s == e then return true end
        end
    end
    assert(fs.writefile(dir .. "/new", "x"))
    assert(fs.rename(dir .. "/new", dir .. "/moved"))
    assert(fs.unlink(dir .. "/moved"))
    assert(wait_until(function() return has("delete:moved") end), table.concat(seen, " "))
    assert(has("create:new") and has("change:new") and has("rename:new") and has("rename:moved"), table.concat(seen, " "))
    assert(w:close() == true and w:is_closed() and w:close() == true)
    local n = #seen
    assert(fs.mkdir(dir .. "/later"))
    gfl.sleep(0.05)
    assert(#seen == n, "nothing after close")
end)

T.watch_a_file_close_in_callback_and_errors = with_dir(function(dir)
    assert(fs.writefile(dir .. "/f", ""))
    local calls, w = 0, nil
    w = assert(fs.watch(dir .. "/f", function(name, kind)
        calls = calls + 1
        assert(name == nil and kind == "change")
        w:close()
    end))
    for _ = 1, 3 do
        assert(fs.writefile(dir .. "/f", "more", { append = true }))
    end
    assert(wait_until(function() return calls > 0 end))
    gfl.sleep(0.05)
    assert(calls == 1 and w:is_closed())
    local n, m, c = fs.watch(dir .. "/missing", function() end)
    assert(n == nil and m:find("^FileNotFoundError") and c == -2, m)
    -- an error in the callback goes to the exception handler; the watcher stays
    local reported
    gfl.set_exception_handler(function(msg, err) reported = tostring(err) end)
    local w2 = assert(fs.watch(dir, function() error("boom") end))
    assert(fs.writefile(dir .. "/g", ""))
    local ok = wait_until(function() return reported end)
    gfl.set_exception_handler(nil)
    assert(ok and reported:find("boom", 1, true), tostring(reported))
    assert(not w2:is_closed())
    w2:close()
end)

-- Left open on purpose: dropping the object does not stop it (it is
-- anchored), and closing the state at exit closes it (valgrind-checked).
function T.watch_left_open_until_the_state_closes()
    local dir = (os.getenv("TMPDIR") or "/tmp")
    local events = 0
    do
        assert(fs.watch(dir, function() events = events + 1 end))
    end
    collectgarbage()
    collectgarbage()
    local probe = assert(fs.mkdtemp(dir .. "/gfl-lua-fs-probe-"))
    assert(fs.rmdir(probe))
    for _ = 1, 200 do
        if events >= 2 then break end
        gfl.sleep(0.01)
    end
    assert(events >= 2, "still watching after the object was dropped")
end

return T
