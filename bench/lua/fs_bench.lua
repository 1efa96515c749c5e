-- File-system operations per second on the thread pool: gfl.fs.stat and
-- 4 KiB gfl.fs.read (pread at offset 0) against luv's uv.fs_stat and
-- uv.fs_read (libuv's thread pool) on the same files, in the same run
-- (luv only where `require "luv"` works). Each is measured with 1 request
-- in flight (latency: one pool round trip per operation) and with 16
-- (throughput: 16 tasks / callback chains). Both pools are 4 threads
-- (globeflower's default; UV_THREADPOOL_SIZE defaults to 4).
--
--   LUA_CPATH='bindings/lua/5.1/.libs/?.so;;' lua5.1 bench/lua/fs_bench.lua [seconds]
-- prints a table: operation, in flight, ops/s per implementation.
local gfl = require "globeflower"
local seconds = tonumber(arg and arg[1] or "1") or 1
local lua = type(jit) == "table" and jit.version or _VERSION

local NFILES = 64
local dir, files = nil, {}

-- Setup: NFILES files of 4 KiB in a temporary directory.
gfl.run(function()
    dir = assert(gfl.fs.mkdtemp((os.getenv("TMPDIR") or "/tmp") .. "/gfl-fs-bench-"))
    local block = string.rep("x", 4096)
    for i = 1, NFILES do
        files[i] = dir .. "/f" .. i
        assert(gfl.fs.writefile(files[i], block))
    end
end)

local results = {}

local function gfl_bench(op, inflight)
    local count = 0
    gfl.run(function()
        local fds = {}
        if op == "read" then
            for i = 1, NFILES do fds[i] = assert(gfl.fs.open(files[i])) end
        end
        local deadline = gfl.time() + seconds
        local workers = {}
        for w = 1, inflight do
            workers[w] = function()
                local i = w
                while gfl.time() < deadline do
                    if op == "stat" then
                        assert(gfl.fs.stat(files[i % NFILES + 1]))
                    else
                        assert(#assert(gfl.fs.read(fds[i % NFILES + 1], 4096, 0)) == 4096)
                    end
                    count = count + 1
                    i = i + 1
                end
            end
        end
        local start = gfl.time()
        gfl.gather((unpack or table.unpack)(workers))
        count = count / (gfl.time() - start)
        for _, fd in ipairs(fds) do gfl.fs.close(fd) end
    end)
    return count
end

local ok, uv = pcall(require, "luv")
if not ok then uv = nil end

local function luv_bench(op, inflight)
    local fds = {}
    if op == "read" then
        for i = 1, NFILES do fds[i] = assert(uv.fs_open(files[i], "r", 0)) end
    end
    local count = 0
    local start = uv.hrtime()
    local deadline = start + seconds * 1e9
    local function chain(i)
        if uv.hrtime() >= deadline then return end
        if op == "stat" then
            uv.fs_stat(files[i % NFILES + 1], function(err, st)
                assert(not err and st)
                count = count + 1
                chain(i + 1)
            end)
        else
            uv.fs_read(fds[i % NFILES + 1], 4096, 0, function(err, data)
                assert(not err and #data == 4096)
                count = count + 1
                chain(i + 1)
            end)
        end
    end
    for w = 1, inflight do chain(w) end
    uv.run()
    local rate = count / ((uv.hrtime() - start) / 1e9)
    for _, fd in ipairs(fds) do uv.fs_close(fd) end
    return rate
end

print(("fs benchmark, %s, %.1f s per cell, %d files of 4 KiB"):format(lua, seconds, NFILES))
print(("%-12s %9s %14s %14s %8s"):format("operation", "in flight", "gfl ops/s", "luv ops/s", "gfl/luv"))
for _, op in ipairs({ "stat", "read" }) do
    for _, inflight in ipairs({ 1, 16 }) do
        local g = gfl_bench(op, inflight)
        local l = uv and luv_bench(op, inflight)
        print(("%-12s %9d %14.0f %14s %8s"):format(op == "read" and "read 4 KiB" or op, inflight, g,
            l and ("%.0f"):format(l) or "-", l and ("%.2fx"):format(g / l) or "-"))
    end
end

os.execute("rm -rf '" .. dir .. "'")
