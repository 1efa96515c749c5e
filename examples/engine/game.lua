-- The engine's Lua half: a TCP server Python connects to, two exports,
-- and a task that calls Python's exports and the plugin every 100 ms,
-- reporting each checked exchange to the engine (engine.report).
local gfl = require "globeflower"

local example = gfl.plugin("example") -- the engine's instance: loaded once
local running = true

local function frame()
    return gfl.call("engine.frame")
end

local function report(kind, start, ok, detail)
    gfl.call("engine.report", {
        kind = kind, start = start, finish = frame(), ok = ok and true or false,
        detail = detail or "",
    })
end

-- The TCP server Python's asyncio streams talk to: "lua:" + each line.
-- Starting it waits, so it runs in a task; lua.port appears once it listens.
local server
gfl.spawn(function()
    server = assert(gfl.start_server(function(s)
        while true do
            local line = s:readline()
            if line == "" then break end
            s:write("lua:" .. line)
        end
        s:close()
    end, "127.0.0.1", 0))
    gfl.export("lua.port", function() return server:port() end)
end)

-- Data in, data out: the argument comes back inside the result, so a
-- Python object in it must come home as the very same object.
gfl.export("lua.greet", function(who)
    return { greeting = "hello " .. who.name, seen = who, list = gfl.array({ 1, 2, 3 }) }
end)

-- Calls Python's failing export and lets its error go back up: Python
-- must catch its own original exception.
gfl.export("lua.relay", function(...)
    return gfl.call("py.fail", ...)
end)

local function has_export(name)
    for _, n in ipairs(gfl.exports()) do
        if n == name then return true end
    end
    return false
end

local function same_nested(a, b)
    return a[1] == b[1] and a[2].deep[1] == b[2].deep[1]
end

gfl.spawn(function()
    while running and not has_export("py.square") do gfl.sleep(0.01) end
    local marker = setmetatable({}, { __name = "lua marker" }) -- crosses opaque
    local i = 0
    while running do
        i = i + 1
        -- Lua -> Python: a coroutine export, awaited here.
        local t0 = frame()
        local sq = gfl.call("py.square", { n = i })
        report("lua->python", t0, sq == i * i, "py.square gave " .. tostring(sq))

        -- A Lua object through Python and back: the same table.
        t0 = frame()
        local back = gfl.call("py.echo", marker)
        report("lua obj->python->lua", t0, rawequal(back, marker), "py.echo returned another object")

        -- Python's error in Lua: its type and message.
        t0 = frame()
        local ok, err = gfl.pcall(gfl.call, "py.fail", "from lua") -- gfl.pcall: yields across it on 5.1
        report("python error->lua", t0, not ok and err.type == "ValueError" and err.message == "from lua",
            "py.fail raised " .. tostring(err))

        -- Lua -> plugin: a sync and an async function.
        t0 = frame()
        local nested = { i, { deep = { "x" } } }
        local sum = example.add(i, 1)
        local echoed = example.sleep_then_echo(0, nested)
        report("lua->plugin", t0, sum == i + 1 and same_nested(echoed, nested), "example.add/sleep_then_echo")

        gfl.sleep(0.1)
    end
end)

function finish()
    running = false
    if server then server:close() end
end
