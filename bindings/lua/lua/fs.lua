-- gfl.fs: file-system operations on the loop's thread pool (bindings/lua/fs.c
-- checks the arguments and starts them; this waits inside the task).
local gfl, C = ...

if not C.fs_start then
    return -- the core predates ABI 1.5 (bindings/lua/fs.c registered nothing)
end

local fs = {}
gfl.fs = fs

local start, result, wait = C.fs_start, C.fs_result, C.wait
local check_task_for, where_user = C.check_task_for, C.where_user

-- Each operation: a result (true when there is none) or nil, message, code.
-- Errors name the caller's line (where_user), as the rest of the module.
local function run(op, ...)
    check_task_for("fs." .. op)
    local f, err = start(op, ...)
    if not f then
        error(where_user() .. err, 0)
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
    fs[op] = function(...)
        return run(op, ...)
    end
end

--- gfl.fs.watch(path, fn) -> watcher | nil, msg, code; fn(name, kind) runs
--- on the loop for each event until watcher:close()
function fs.watch(...)
    local w, msg, code = C.fs_watch(...)
    if w == false then
        error(where_user() .. msg, 0)
    end
    return w, msg, code
end
