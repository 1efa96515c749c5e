-- Event, Lock, Semaphore, Condition and the queues.
local gfl = require "globeflower"
local T = {}

function T.event()
    local e = gfl.Event()
    local woke = 0
    for _ = 1, 3 do
        gfl.spawn(function() e:wait() woke = woke + 1 end)
    end
    gfl.sleep(0.01)
    assert(woke == 0 and not e:is_set())
    e:set()
    gfl.sleep(0)
    gfl.sleep(0)
    assert(woke == 3 and e:wait())
end

function T.lock_is_fifo_and_survives_cancellation()
    local lock = gfl.Lock()
    local order = {}
    lock:acquire()
    local tasks = {}
    for i = 1, 3 do
        tasks[i] = gfl.spawn(function()
            lock:acquire()
            order[#order + 1] = i
            gfl.sleep(0.001)
            lock:release()
        end)
    end
    gfl.sleep(0.01)
    tasks[2]:cancel()
    lock:release()
    gfl.pcall(gfl.gather, { return_exceptions = true }, tasks[1], tasks[2], tasks[3])
    assert(table.concat(order, ",") == "1,3", table.concat(order, ","))
    assert(not lock:locked())
    assert(lock:with(function(x) return x end, 5) == 5)
end

function T.semaphore_limits_concurrency()
    local sem = gfl.Semaphore(2)
    local active, peak = 0, 0
    local tasks = {}
    for i = 1, 6 do
        tasks[i] = gfl.spawn(function()
            sem:with(function()
                active = active + 1
                peak = math.max(peak, active)
                gfl.sleep(0.005)
                active = active - 1
            end)
        end)
    end
    gfl.gather((table.unpack or unpack)(tasks))
    assert(peak == 2 and sem:value() == 2)
    local b = gfl.BoundedSemaphore(1)
    assert(not pcall(b.release, b))
end

function T.condition()
    local c = gfl.Condition()
    local ready = false
    local t = gfl.spawn(function()
        c:acquire()
        c:wait_for(function() return ready end)
        c:release()
        return "done"
    end)
    gfl.sleep(0.01)
    c:acquire()
    ready = true
    c:notify_all()
    c:release()
    assert(t:await() == "done")
end

function T.queue_producer_consumer()
    local q = gfl.Queue(2)
    local got = {}
    local consumer = gfl.spawn(function()
        while true do
            local item = q:get()
            if item == "stop" then q:task_done() return end
            got[#got + 1] = item
            q:task_done()
        end
    end)
    for i = 1, 10 do
        q:put(i)
        assert(q:qsize() <= 2)
    end
    q:put("stop")
    q:join()
    consumer:await()
    assert(#got == 10 and got[10] == 10)
    local ok, e = pcall(q.get_nowait, q)
    assert(not ok and e.type == "QueueEmpty")
end

function T.queue_get_cancelled()
    local q = gfl.Queue()
    local t = gfl.spawn(function() return q:get() end)
    gfl.sleep(0.01)
    t:cancel()
    assert(not gfl.pcall(t.await, t))
    q:put_nowait("x")
    assert(q:get() == "x")
end

function T.lifo_and_priority()
    local l = gfl.LifoQueue()
    l:put_nowait(1) l:put_nowait(2)
    assert(l:get_nowait() == 2)
    local p = gfl.PriorityQueue()
    for _, v in ipairs({ 5, 1, 4, 2, 3 }) do p:put_nowait(v) end
    local out = {}
    while not p:empty() do out[#out + 1] = p:get_nowait() end
    assert(table.concat(out, ",") == "1,2,3,4,5")
end

return T
