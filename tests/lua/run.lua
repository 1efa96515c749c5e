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
    for n, f in pairs(tests) do
        -- setup/teardown run once around a file's tests; UPPERCASE keys
        -- are settings (TIMEOUT)
        if type(f) == "function" and n ~= "setup" and n ~= "teardown" and not n:match("^%u") then
            names[#names + 1] = n
        end
    end
    table.sort(names)
    local short = file:match("([^/]*)%.lua$")
    if tests.setup then
        local ok, err = pcall(gfl.run, tests.setup)
        if not ok then
            failed = failed + 1
            print("FAIL " .. short .. ".setup: " .. tostring(err))
            names = {}
        end
    end
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
    if tests.teardown then
        local ok, err = pcall(gfl.run, tests.teardown)
        if not ok then
            failed = failed + 1
            print("FAIL " .. short .. ".teardown: " .. tostring(err))
        end
    end
end
print(string.format("%s: %d passed, %d failed", name, passed, failed))
-- close the state (5.2+): the module's teardown runs too
os.exit(failed == 0 and 0 or 1, true)
