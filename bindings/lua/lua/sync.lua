-- globeflower: synchronisation primitives (asyncio's Event, Lock,
-- Semaphore, BoundedSemaphore, Condition, Queue, LifoQueue, PriorityQueue)
-- built on futures. Waiting raises only on cancellation.
local gfl, C = ...

local yield = coroutine.yield
local error, setmetatable, getmetatable, type, table_remove = error, setmetatable, getmetatable, type, table.remove
local new_future = C.future
local argerror, typeof, V = C.argerror, C.typeof, C.V

-- A method called with a dot, or on something else: one clear message.
local function check_self(self, class, cname, method)
    if getmetatable(self) ~= class then
        error(C.where_user() .. "calling '" .. method .. "' on bad self (" .. cname .. " expected, got " ..
            typeof(self) .. "): use x:" .. method .. "(...)", 0)
    end
end

-- Removes the future `f` from the list `t` (if present).
local function remove(t, f)
    for i = 1, #t do
        if t[i] == f then
            table_remove(t, i)
            return
        end
    end
end

-- Waits on a new future queued in `waiters`; on cancellation it leaves
-- the queue (handing a wake-up it got on to `on_lost`) and re-raises.
local function park(waiters, on_lost, self)
    local f = new_future()
    waiters[#waiters + 1] = f
    local ok, err = yield(f)
    if not ok then
        if f:done() and not f:cancelled() then
            on_lost(self) -- we were woken, but will not take our turn
        else
            remove(waiters, f)
        end
        error(err, 0)
    end
    return f
end

-- Wakes the first waiter still waiting; true if there was one.
local function wake_first(waiters, ...)
    while #waiters > 0 do
        local f = table_remove(waiters, 1)
        if not f:done() then
            f:set_result(...)
            return true
        end
    end
    return false
end

---------------------------------------------------------------------------
-- Event

local Event = {}
Event.__index = Event

--- gfl.Event() -> event (initially clear)
function gfl.Event()
    return setmetatable({ _flag = false, _waiters = {} }, Event)
end

function Event:is_set()
    return self._flag
end

function Event:set()
    if self._flag then
        return
    end
    self._flag = true
    local waiters = self._waiters
    self._waiters = {}
    for i = 1, #waiters do
        if not waiters[i]:done() then
            waiters[i]:set_result(true)
        end
    end
end

function Event:clear()
    self._flag = false
end

--- event:wait() -> true once the event is set
function Event:wait()
    check_self(self, Event, "Event", "wait")
    if self._flag then
        return true
    end
    park(self._waiters, function() end, self)
    return true
end

---------------------------------------------------------------------------
-- Lock (FIFO; release hands the lock straight to the next waiter)

local Lock = {}
Lock.__index = Lock

function gfl.Lock()
    return setmetatable({ _locked = false, _waiters = {} }, Lock)
end

function Lock:locked()
    return self._locked
end

--- lock:acquire() -> true
function Lock:acquire()
    if not self._locked then
        self._locked = true
        return true
    end
    park(self._waiters, Lock.release, self)
    return true
end

function Lock:release()
    if not self._locked then
        error("Lock.release: the lock is not acquired", 2)
    end
    if not wake_first(self._waiters, true) then
        self._locked = false
    end
end

--- lock:with(fn, ...) -> fn's results, holding the lock while fn runs
function Lock:with(fn, ...)
    if type(fn) ~= "function" then
        argerror(1, "with", "function expected, got " .. typeof(fn))
    end
    self:acquire()
    local res = C.pack(gfl.pcall(fn, ...))
    self:release()
    if not res[1] then
        error(res[2], 0)
    end
    return (table.unpack or unpack)(res, 2, res.n)
end

---------------------------------------------------------------------------
-- Semaphore / BoundedSemaphore

local Semaphore = {}
Semaphore.__index = Semaphore

function gfl.Semaphore(value)
    if value ~= nil and V.natural(value) then
        argerror(1, "Semaphore", "initial value (an integer >= 0) expected, got " ..
            (type(value) == "number" and tostring(value) or typeof(value)))
    end
    value = value or 1
    return setmetatable({ _value = value, _waiters = {} }, Semaphore)
end

function gfl.BoundedSemaphore(value)
    local s = gfl.Semaphore(value)
    s._bound = value or 1
    return s
end

function Semaphore:locked()
    return self._value == 0
end

function Semaphore:value()
    return self._value
end

function Semaphore:acquire()
    if self._value > 0 then
        self._value = self._value - 1
        return true
    end
    park(self._waiters, Semaphore.release, self)
    return true
end

function Semaphore:release()
    if wake_first(self._waiters, true) then
        return -- the permit goes straight to the waiter
    end
    if self._bound and self._value >= self._bound then
        error("BoundedSemaphore released too many times", 2)
    end
    self._value = self._value + 1
end

Semaphore.with = Lock.with

---------------------------------------------------------------------------
-- Condition

local Condition = {}
Condition.__index = Condition

function gfl.Condition(lock)
    return setmetatable({ _lock = lock or gfl.Lock(), _waiters = {} }, Condition)
end

function Condition:acquire()
    return self._lock:acquire()
end

function Condition:release()
    return self._lock:release()
end

function Condition:locked()
    return self._lock:locked()
end

Condition.with = Lock.with

--- cond:wait(): releases the lock, waits for notify, re-acquires it
function Condition:wait()
    if not self._lock:locked() then
        error("Condition.wait: the lock is not acquired", 2)
    end
    self._lock:release()
    local ok, err = gfl.pcall(park, self._waiters, function(c)
        c:notify(1)
    end, self)
    -- Always re-acquire, even when cancelled (asyncio does the same).
    while true do
        local aok, aerr = gfl.pcall(self._lock.acquire, self._lock)
        if aok then
            break
        end
        err, ok = err or aerr, false
    end
    if not ok then
        error(err, 0)
    end
    return true
end

--- cond:wait_for(predicate) -> the predicate's true value
function Condition:wait_for(predicate)
    local r = predicate()
    while not r do
        self:wait()
        r = predicate()
    end
    return r
end

function Condition:notify(n)
    n = n or 1
    local woken = 0
    while woken < n and wake_first(self._waiters, true) do
        woken = woken + 1
    end
end

function Condition:notify_all()
    self:notify(math.huge)
end

---------------------------------------------------------------------------
-- Queues

local Queue = {}
Queue.__index = Queue

local function new_queue(maxsize, kind, fname)
    if maxsize ~= nil and V.natural(maxsize) then
        argerror(1, fname, "maximum size (an integer >= 0, 0: unbounded) expected, got " ..
            (type(maxsize) == "number" and tostring(maxsize) or typeof(maxsize)))
    end
    return setmetatable({
        _maxsize = maxsize or 0,
        _items = {},
        _head = 1,
        _tail = 0,
        _kind = kind,
        _getters = {},
        _putters = {},
        _unfinished = 0,
        _finished = gfl.Event(),
    }, Queue)
end

--- gfl.Queue([maxsize]) -> FIFO queue (maxsize 0: unbounded)
function gfl.Queue(maxsize)
    local q = new_queue(maxsize, "fifo", "Queue")
    q._finished:set()
    return q
end

--- gfl.LifoQueue([maxsize]) -> LIFO queue
function gfl.LifoQueue(maxsize)
    local q = new_queue(maxsize, "lifo", "LifoQueue")
    q._finished:set()
    return q
end

--- gfl.PriorityQueue([maxsize [, less]]) -> smallest item first
function gfl.PriorityQueue(maxsize, less)
    if less ~= nil and type(less) ~= "function" then
        argerror(2, "PriorityQueue", "function expected, got " .. typeof(less))
    end
    local q = new_queue(maxsize, "heap", "PriorityQueue")
    q._less = less or function(a, b)
        return a < b
    end
    q._finished:set()
    return q
end

function Queue:qsize()
    return self._tail - self._head + 1
end

function Queue:maxsize()
    return self._maxsize
end

function Queue:empty()
    return self:qsize() == 0
end

function Queue:full()
    return self._maxsize > 0 and self:qsize() >= self._maxsize
end

local function heap_push(q, item)
    local items, less = q._items, q._less
    q._tail = q._tail + 1
    local i = q._tail
    items[i] = item
    while i > 1 do
        local p = (i - i % 2) / 2
        if less(items[i], items[p]) then
            items[i], items[p] = items[p], items[i]
            i = p
        else
            break
        end
    end
end

local function heap_pop(q)
    local items, less, n = q._items, q._less, q._tail
    local top = items[1]
    items[1] = items[n]
    items[n] = nil
    n = n - 1
    q._tail = n
    local i = 1
    while true do
        local l, r, m = 2 * i, 2 * i + 1, i
        if l <= n and less(items[l], items[m]) then
            m = l
        end
        if r <= n and less(items[r], items[m]) then
            m = r
        end
        if m == i then
            break
        end
        items[i], items[m] = items[m], items[i]
        i = m
    end
    return top
end

--- queue:put_nowait(item): raises QueueFull when full
function Queue:put_nowait(item)
    if self:full() then
        error(C.new_error("QueueFull", "the queue is full"), 2)
    end
    if self._kind == "heap" then
        heap_push(self, item)
    else
        self._tail = self._tail + 1
        self._items[self._tail] = item
    end
    self._unfinished = self._unfinished + 1
    self._finished:clear()
    wake_first(self._getters, true)
end

--- queue:get_nowait() -> item: raises QueueEmpty when empty
function Queue:get_nowait()
    if self:empty() then
        error(C.new_error("QueueEmpty", "the queue is empty"), 2)
    end
    local item
    if self._kind == "heap" then
        item = heap_pop(self)
    elseif self._kind == "lifo" then
        item = self._items[self._tail]
        self._items[self._tail] = nil
        self._tail = self._tail - 1
    else
        item = self._items[self._head]
        self._items[self._head] = nil
        self._head = self._head + 1
        if self._head > self._tail then
            self._head, self._tail = 1, 0
        end
    end
    wake_first(self._putters, true)
    return item
end

local function pass_getter(q)
    if not q:empty() then
        wake_first(q._getters, true)
    end
end

local function pass_putter(q)
    if not q:full() then
        wake_first(q._putters, true)
    end
end

--- queue:put(item): waits while the queue is full
function Queue:put(item)
    while self:full() do
        park(self._putters, pass_putter, self)
    end
    self:put_nowait(item)
end

--- queue:get() -> item: waits while the queue is empty
function Queue:get()
    while self:empty() do
        park(self._getters, pass_getter, self)
    end
    return self:get_nowait()
end

function Queue:task_done()
    if self._unfinished <= 0 then
        error("task_done() called too many times", 2)
    end
    self._unfinished = self._unfinished - 1
    if self._unfinished == 0 then
        self._finished:set()
    end
end

--- queue:join(): waits until every item put was marked task_done()
function Queue:join()
    if self._unfinished > 0 then
        self._finished:wait()
    end
end
