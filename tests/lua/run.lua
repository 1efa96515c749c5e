-- The Lua test runner: runs every test file given on the command line (or
-- all test_*.lua next to this file), each test in its own gfl.run with a
-- time limit, and ends with a plain line "<lua>: N passed, N failed".
--   lua5.4 tests/lua/run.lua [file.lua ...]
local gfl = require "globeflower"

local here = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
package.path = here .. "/?.lua;" .. package.path

local name = (type(jit) == "table" and "luajit") or ("lua" .. _VERSION:match("%d+%.%d+"))
local files = {}
for i = 1, #arg do
    files[#files + 1] = arg[i]
end
if #files == 0 then
    local p = io.popen('ls "' .. here .. '"/test_*.lua')
    for f in p:lines() do
        files[#files + 1] = f
    end
    p:close()
end

local only = os.getenv("GFL_LUA_TEST")
local passed, failed = 0, 0
for _, file in ipairs(files) do
    local chunk = assert(loadfile(file))
    local tests = chunk()
    local names = {}
    for n in pairs(tests) do
        names[#names + 1] = n
    end
    table.sort(names)
    local short = file:match("([^/]*)%.lua$")
    for _, n in ipairs(names) do
        if not only or (short .. "." .. n):find(only, 1, true) then
            local ok, err = pcall(gfl.run, function()
                return gfl.wait_for(tests[n], tests.TIMEOUT or 30)
            end)
            collectgarbage()
            if ok then
                passed = passed + 1
                print("ok   " .. short .. "." .. n)
            else
                failed = failed + 1
                print("FAIL " .. short .. "." .. n .. ": " .. tostring(err))
            end
        end
    end
end
print(string.format("%s: %d passed, %d failed", name, passed, failed))
os.exit(failed == 0 and 0 or 1)
