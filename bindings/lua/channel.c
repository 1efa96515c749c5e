/*
 * gfl.channel(): a queue of values between threads (and states), each
 * with its own loop. ch:send(v) copies v as a gfl_value (docs/hosts.md)
 * and never blocks; ch:recv() waits inside a task of any thread's loop.
 * A channel crosses to another state as itself (a gfl_value OBJECT of the
 * "globeflower.channel" class, see convert.c): pass it to gfl.thread.
 *
 * Thread safety: the queue and the list of waiting receivers are under one
 * mutex. A waiting receiver is a future of its own loop; a sender never
 * touches it, it only asks that loop (call_soon_threadsafe) to settle it,
 * and the receiver then looks at the queue again, so no value is ever
 * handed to a receiver that was cancelled meanwhile.
 */
#include "gfl_lua.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define CHANNEL_MT "globeflower.Channel"

struct chan_item {
    struct chan_item *next;
    gfl_value *value;
};

struct chan_waiter {
    struct chan_waiter *next;
    gfl_loop *loop;  /* one reference */
    gfl_future *f;   /* one reference, touched on its loop's thread only */
};

struct gfl_lua_chan {
    int refs; /* atomic */
    pthread_mutex_t lock;
    struct chan_item *head, *tail;
    size_t length;
    struct chan_waiter *waiters;
    int closed;
};

static void chan_ref(void *object)
{
    struct gfl_lua_chan *c = object;
    __atomic_add_fetch(&c->refs, 1, __ATOMIC_RELAXED);
}

/* On the loop thread of the waiter: settle and drop it. */
static void waiter_wake(void *arg)
{
    struct chan_waiter *w = arg;
    if (GFL->future_state_of(w->f) == GFL_FUTURE_PENDING)
        GFL->future_set_result(w->f, GFL->value_nil());
    GFL->future_unref(w->f);
    GFL->loop_unref(w->loop);
    free(w);
}

/* Wakes every waiter (called without the lock held). */
static void wake_all(struct chan_waiter *w)
{
    while (w) {
        struct chan_waiter *next = w->next;
        if (GFL->call_soon_threadsafe(w->loop, waiter_wake, w) < 0) {
            /* Its loop is closed: nobody waits on that future any more. */
            GFL->future_unref(w->f);
            GFL->loop_unref(w->loop);
            free(w);
        }
        w = next;
    }
}

static void chan_unref(void *object)
{
    struct gfl_lua_chan *c = object;
    if (__atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    while (c->head) {
        struct chan_item *next = c->head->next;
        GFL->value_unref(c->head->value);
        free(c->head);
        c->head = next;
    }
    wake_all(c->waiters);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

const gfl_host_class gfl_lua_channel_class = {sizeof(gfl_host_class), "globeflower.channel", chan_ref, chan_unref};

void gfl_lua_push_channel(lua_State *L, struct gfl_lua_chan *c)
{
    struct gfl_lua_chan **u = gfl_newuserdata(L, sizeof *u);
    chan_ref(c);
    *u = c;
    luaL_getmetatable(L, CHANNEL_MT);
    lua_setmetatable(L, -2);
}

struct gfl_lua_chan *gfl_lua_to_channel(lua_State *L, int idx)
{
    struct gfl_lua_chan **u = gfl_testudata(L, idx, CHANNEL_MT);
    return u ? *u : NULL;
}

static struct gfl_lua_chan *check_chan(lua_State *L)
{
    struct gfl_lua_chan **u = gfl_lua_checkself(L, 1, CHANNEL_MT);
    return *u;
}

/* ch:send(value) -> true | nil, msg, code (closed) */
static int ch_send(lua_State *L)
{
    struct gfl_lua_chan *c = check_chan(L);
    if (lua_gettop(L) != 2)
        return gfl_lua_argerror(L, 1, "send", "exactly one value expected, got %d", lua_gettop(L) - 1);
    char err[256];
    gfl_value *v = gfl_lua_to_value(L, 2, err, sizeof err);
    if (!v)
        return gfl_lua_argerror(L, 1, "send", "%s", err);
    struct chan_item *it = malloc(sizeof *it);
    if (!it) {
        GFL->value_unref(v);
        return luaL_error(L, "send: out of memory");
    }
    it->next = NULL;
    it->value = v;
    pthread_mutex_lock(&c->lock);
    if (c->closed) {
        pthread_mutex_unlock(&c->lock);
        GFL->value_unref(v);
        free(it);
        return gfl_lua_push_failure(L, GFL_ECLOSED, "ChannelClosed: the channel is closed");
    }
    if (c->tail)
        c->tail->next = it;
    else
        c->head = it;
    c->tail = it;
    c->length++;
    struct chan_waiter *w = c->waiters;
    c->waiters = NULL;
    pthread_mutex_unlock(&c->lock);
    wake_all(w);
    lua_pushboolean(L, 1);
    return 1;
}

/* internal: ch:_try_recv() -> true, value | false, future to wait for |
 * nil, msg, code (closed and empty) */
static int ch_try_recv(lua_State *L)
{
    struct gfl_lua_chan *c = check_chan(L);
    gfl_lua_rt *rt = gfl_lua_rt_get(L);
    pthread_mutex_lock(&c->lock);
    struct chan_item *it = c->head;
    if (it) {
        c->head = it->next;
        if (!c->head)
            c->tail = NULL;
        c->length--;
        pthread_mutex_unlock(&c->lock);
        gfl_value *v = it->value;
        free(it);
        char err[256];
        lua_pushboolean(L, 1);
        int ok = gfl_lua_push_value(L, v, err, sizeof err);
        GFL->value_unref(v);
        if (!ok)
            return luaL_error(L, "recv: %s", err);
        return 2;
    }
    if (c->closed) {
        pthread_mutex_unlock(&c->lock);
        return gfl_lua_push_failure(L, GFL_ECLOSED, "ChannelClosed: the channel is closed");
    }
    struct chan_waiter *w = malloc(sizeof *w);
    gfl_future *f = w ? GFL->future_new(rt->loop) : NULL;
    if (!f) {
        pthread_mutex_unlock(&c->lock);
        free(w);
        return luaL_error(L, "recv: out of memory or the loop is closed");
    }
    w->loop = GFL->loop_ref(rt->loop);
    w->f = f; /* the waiter's reference */
    w->next = c->waiters;
    c->waiters = w;
    pthread_mutex_unlock(&c->lock);
    lua_pushboolean(L, 0);
    gfl_lua_future_push(L, rt, f);
    return 2;
}

/* ch:close(): no more sends; receivers get what is queued, then nil, msg */
static int ch_close(lua_State *L)
{
    struct gfl_lua_chan *c = check_chan(L);
    pthread_mutex_lock(&c->lock);
    c->closed = 1;
    struct chan_waiter *w = c->waiters;
    c->waiters = NULL;
    pthread_mutex_unlock(&c->lock);
    wake_all(w);
    return 0;
}

/* ch:len() -> values queued */
static int ch_len(lua_State *L)
{
    struct gfl_lua_chan *c = check_chan(L);
    pthread_mutex_lock(&c->lock);
    size_t n = c->length;
    pthread_mutex_unlock(&c->lock);
    lua_pushinteger(L, (lua_Integer)n);
    return 1;
}

static int ch_is_closed(lua_State *L)
{
    struct gfl_lua_chan *c = check_chan(L);
    pthread_mutex_lock(&c->lock);
    int closed = c->closed;
    pthread_mutex_unlock(&c->lock);
    lua_pushboolean(L, closed);
    return 1;
}

static int ch_gc(lua_State *L)
{
    struct gfl_lua_chan **u = lua_touserdata(L, 1);
    if (*u)
        chan_unref(*u);
    *u = NULL;
    return 0;
}

/* gfl.channel() */
static int l_channel(lua_State *L)
{
    struct gfl_lua_chan *c = calloc(1, sizeof *c);
    if (!c || pthread_mutex_init(&c->lock, NULL) != 0) {
        free(c);
        return luaL_error(L, "channel: out of memory");
    }
    gfl_lua_push_channel(L, c); /* refs: 1 (the object's) */
    return 1;
}

static const luaL_Reg channel_methods[] = {
    {"send", ch_send},
    {"_try_recv", ch_try_recv},
    {"close", ch_close},
    {"len", ch_len},
    {"is_closed", ch_is_closed},
    {NULL, NULL},
};

void gfl_lua_open_channel(lua_State *L, int internal)
{
    gfl_lua_newclass(L, CHANNEL_MT, channel_methods, ch_gc);
    luaL_getmetatable(L, CHANNEL_MT);
    lua_getfield(L, -1, "__index");
    lua_setfield(L, internal, "Channel");
    lua_pop(L, 1);
    lua_pushcfunction(L, l_channel);
    lua_setfield(L, internal, "channel");
}
