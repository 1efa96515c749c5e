-- gfl.fs: file-system operations on the loop's thread pool (bindings/lua/fs.c
-- checks the arguments and starts them; this waits inside the task).
local gfl, C = ...

local fs = {}
gfl.fs = fs

local start, result, in_task, wait = C.fs_start, C.fs_result, C.in_task, C.wait

-- Each operation: a result (true when there is none) or nil, message, code.
-- Errors are raised at level 3: run <- the gfl.fs function <- the caller.
local function run(op, ...)
    if not in_task() then
        error("gfl.fs." .. op .. ": outside a task: run the code with gfl.run or gfl.spawn", 3)
    end
    local f, err = start(op, ...)
    if not f then
        error(err, 3)
    end
    if not f:done() then
        wait(f)
    end
    return result(f)
end

for _, op in ipairs({
    "open", "close", "read", "write", "stat", "lstat", "fstat", "rename",
    "unlink", "mkdir", "rmdir", "scandir", "readlink", "symlink", "link",
    "fsync", "fdatasync", "ftruncate", "chmod", "chown", "utime", "copyfile",
    "mkdtemp", "realpath", "readfile", "writefile",
}) do
    -- not a tail call, so the caller is always two levels above run
    fs[op] = function(...)
        local a, b, c = run(op, ...)
        return a, b, c
    end
end

--- gfl.fs.watch(path, fn) -> watcher | nil, msg, code; fn(name, kind) runs
--- on the loop for each event until watcher:close()
function fs.watch(...)
    local w, msg, code = C.fs_watch(...)
    if w == false then
        error(msg, 2)
    end
    return w, msg, code
end
