-- bench/hosts: the Lua half. Times sequential round trips from Lua, then
-- asks Python to time its own (py.run_bench), then stops the host.
local gfl = require "globeflower"

local example = gfl.plugin("example")
gfl.export("lua.echo", function(x) return x end)

local function has_export(name)
    for _, n in ipairs(gfl.exports()) do
        if n == name then return true end
    end
    return false
end

local only = os.getenv("BENCH_HOSTS_ONLY") -- a Lua pattern: run matching cases only

local function measure(name, n, fn)
    if only and not name:find(only) then return end
    for i = 1, math.floor(n / 10) do fn(i) end -- warm up (JIT, allocator, caches)
    local t0, c0 = gfl.time(), os.clock()
    for i = 1, n do
        if fn(i) ~= i and name:find("echo", 1, true) then error(name .. ": wrong result") end
    end
    local seconds, cpu = gfl.time() - t0, os.clock() - c0
    gfl.call("bench.result", { name = name, caller = "lua", calls = n, seconds = seconds, cpu = cpu })
end

local function echo(x) return x end

gfl.spawn(function()
    local n = gfl.call("bench.calls")
    while not has_export("py.run_bench") do gfl.sleep(0.01) end
    measure("Lua task -> Lua task", n, function(i)
        return gfl.await(gfl.spawn(function() return echo(i) end))
    end)
    measure("Lua -> Lua export", n, function(i) return gfl.call("lua.echo", i) end)
    measure("Lua -> Python export (coroutine)", n, function(i) return gfl.call("py.echo_async", i) end)
    measure("Lua -> Python export (function)", n, function(i) return gfl.call("py.echo", i) end)
    measure("Lua -> plugin async echo", n, function(i) return example.sleep_then_echo(0, i) end)
    measure("Lua -> plugin sync add (no await)", n, function(i) return example.add(i, 0) end)
    gfl.call("py.run_bench")
    gfl.call("bench.done")
end)
