/*
 * gfl_future: pending -> result | error | cancelled, with asyncio's rules.
 *
 * Done callbacks never run re-entrantly: completing a future only schedules
 * them on the ready queue (gfl__call_soon_future keeps the future alive until
 * each one ran or was dropped). Futures belong to one loop and are used from
 * its thread; their reference count is therefore plain.
 *
 * A future's memory comes from its loop's allocation hook and it holds a loop
 * memref, so it outlives gfl_loop_free safely. While the loop closes, what
 * it releases may still settle futures (operations are cancelled "the event
 * loop was closed"); once gfl_loop_free returned, set_result, set_error and
 * cancel refuse with GFL_ECLOSED, as the header says: nothing could ever
 * observe the outcome through a callback.
 */
#include "internal.h"

#include <string.h>

/* Thread check that tolerates a closed loop (dropping a callback from a
 * closed loop's future is fine). */
static int check_future_thread(const gfl_future *f)
{
    int rc = gfl__check_loop(f->loop);
    return rc == GFL_ECLOSED ? GFL_OK : rc;
}

/* For settling: tolerates a loop being closed (its teardown cancels
 * futures), not one that is closed. */
static int check_settle_thread(const gfl_future *f)
{
    int rc = gfl__check_loop(f->loop);
    return rc == GFL_ECLOSED && f->loop->tearing_down ? GFL_OK : rc;
}

static void report(gfl_loop *loop, const char *message, int code)
{
    if (loop->closed)
        return;
    gfl_value *error = code < 0 ? gfl_value_error(code, NULL, NULL, NULL) : NULL;
    gfl_loop_call_exception_handler(loop, message, error);
    gfl_value_unref(error);
}

void gfl__future_init(gfl_future *f, gfl_loop *loop, bool is_task)
{
    memset(f, 0, sizeof *f);
    f->loop = loop;
    f->refs = 1;
    f->state = GFL_FUTURE_PENDING;
    f->is_task = is_task;
    gfl__loop_memref(loop);
}

/* Entry i of the callback list (i < ncallbacks). */
static inline struct gfl_future_cb *cb_at(gfl_future *f, uint32_t i)
{
    return i == 0 ? &f->cb0 : &f->callbacks[i - 1];
}

/* A callback list taken off its future (so callbacks run or dropped below
 * never see a half-processed list). */
struct detached {
    struct gfl_future_cb first;
    struct gfl_future_cb *rest; /* to gfl__free */
    uint32_t count;
};

static void detach_callbacks(gfl_future *f, struct detached *d)
{
    d->first = f->cb0;
    d->rest = f->callbacks;
    d->count = f->ncallbacks;
    f->callbacks = NULL;
    f->ncallbacks = 0;
    f->callbacks_cap = 0;
}

static inline struct gfl_future_cb *detached_at(struct detached *d, uint32_t i)
{
    return i == 0 ? &d->first : &d->rest[i - 1];
}

void gfl__future_destroy(gfl_future *f)
{
    gfl_loop *loop = f->loop;
    struct detached d;
    detach_callbacks(f, &d);
    /* Callbacks of a future that never completed never run: their
     * arguments are released, and waiting tasks give back the reference
     * their registration holds. */
    for (uint32_t i = 0; i < d.count; i++) {
        struct gfl_future_cb *e = detached_at(&d, i);
        if (!e->cb)
            gfl__task_waiter_dropped(e->arg);
        else if (e->release)
            e->release(e->arg);
    }
    gfl__free(loop, d.rest);
    gfl_value_unref(f->value);
    f->value = NULL;
    gfl__loop_memunref(loop);
}

gfl_future *gfl_future_new(gfl_loop *loop)
{
    if (gfl__check_loop(loop) != GFL_OK)
        return NULL;
    gfl_future *f = gfl__alloc(loop, sizeof *f);
    if (!f)
        return NULL;
    gfl__future_init(f, loop, false);
    return f;
}

gfl_future *gfl_future_ref(gfl_future *f)
{
    if (!f || f->refs <= 0)
        return NULL;
    f->refs++;
    return f;
}

void gfl_future_unref(gfl_future *f)
{
    if (!f || f->refs <= 0)
        return;
    if (--f->refs > 0)
        return;

    gfl_loop *loop = f->loop;
    if (f->state == GFL_FUTURE_ERROR && !f->retrieved && !loop->closed)
        gfl_loop_call_exception_handler(loop,
                                        f->is_task ? "Task exception was never retrieved"
                                                   : "Future exception was never retrieved",
                                        f->value);
    /* Destroying releases the future's loop memref; hold one more so the
     * loop (and its allocator) outlives freeing the struct itself. */
    gfl__loop_memref(loop);
    if (f->is_task) {
        gfl__task_destroy((gfl_task *)f);
    } else {
        gfl__future_destroy(f);
        gfl__free(loop, f);
    }
    gfl__loop_memunref(loop);
}

/* asyncio's __schedule_callbacks: every registered callback, in order. */
static void schedule_done_callbacks(gfl_future *f)
{
    struct detached d;
    detach_callbacks(f, &d);
    bool held = false;
    for (uint32_t i = 0; i < d.count; i++) {
        struct gfl_future_cb *e = detached_at(&d, i);
        if (!e->cb) {
            gfl__task_wake(e->arg, f);
            continue;
        }
        int rc = gfl__call_soon_future_rel(f->loop, e->cb, f, e->arg, e->release);
        if (rc < 0) {
            report(f->loop, "Future done callback could not be scheduled", rc);
            if (e->release) {
                /* It will never run. The release may drop references to
                 * f: keep it alive until the list is processed. */
                if (!held) {
                    f->refs++;
                    held = true;
                }
                e->release(e->arg);
            }
        }
    }
    gfl__free(f->loop, d.rest);
    if (held)
        gfl_future_unref(f);
}

int gfl__future_complete(gfl_future *f, int state, gfl_value *value)
{
    if (!f || !value)
        return GFL_EINVAL;
    if (f->state != GFL_FUTURE_PENDING)
        return GFL_ESTATE;
    f->value = gfl_value_ref(value);
    f->state = (uint8_t)state;
    f->retrieved = false;
    schedule_done_callbacks(f);
    return GFL_OK;
}

/* The checks shared by the public setters. */
static int check_settable(gfl_future *f, gfl_value *value)
{
    if (!f || !value)
        return GFL_EINVAL;
    int rc = check_settle_thread(f);
    if (rc < 0)
        return rc;
    /* A task's outcome comes from its coroutine only (asyncio raises on
     * Task.set_result too). */
    if (f->is_task)
        return GFL_EPERM;
    if (f->state != GFL_FUTURE_PENDING)
        return GFL_ESTATE;
    return GFL_OK;
}

int gfl_future_set_result(gfl_future *f, gfl_value *value)
{
    int rc = check_settable(f, value);
    if (rc < 0)
        return rc;
    return gfl__future_complete(f, GFL_FUTURE_RESULT, value);
}

int gfl_future_set_error(gfl_future *f, gfl_value *error)
{
    int rc = check_settable(f, error);
    if (rc < 0)
        return rc;
    if (gfl_value_type_of(error) != GFL_VALUE_ERROR)
        return GFL_ETYPE;
    return gfl__future_complete(f, GFL_FUTURE_ERROR, error);
}

int gfl_future_cancel(gfl_future *f, const char *message)
{
    if (!f)
        return GFL_EINVAL;
    int rc = check_settle_thread(f);
    if (rc < 0)
        return rc;
    /* Cancelling a task's future cancels the task (asyncio's Task.cancel). */
    if (f->is_task)
        return gfl_task_cancel((gfl_task *)f, message);
    if (f->state != GFL_FUTURE_PENDING)
        return 0;
    gfl_value *cancelled = gfl__cancelled_error(message);
    if (!cancelled)
        return GFL_ENOMEM;
    rc = gfl__future_complete(f, GFL_FUTURE_CANCELLED, cancelled);
    gfl_value_unref(cancelled);
    return rc < 0 ? rc : 1;
}

int gfl_future_state_of(const gfl_future *f)
{
    return f ? f->state : GFL_EINVAL;
}

gfl_value *gfl_future_value(gfl_future *f)
{
    if (!f || f->state == GFL_FUTURE_PENDING)
        return NULL;
    if (f->state == GFL_FUTURE_ERROR)
        f->retrieved = true;
    return f->value;
}

gfl_loop *gfl_future_loop(const gfl_future *f)
{
    return f ? f->loop : NULL;
}

/* Appends (cb, arg, release) to the pending future's list; GFL_ENOMEM
 * leaves it as it was. */
static int append_callback(gfl_future *f, gfl_future_callback cb, void *arg, gfl_release_fn release)
{
    struct gfl_future_cb *e;
    if (f->ncallbacks == 0) {
        e = &f->cb0; /* the common case: no allocation */
    } else {
        uint32_t extra = f->ncallbacks - 1;
        if (extra == f->callbacks_cap) {
            uint32_t cap = f->callbacks_cap ? f->callbacks_cap * 2 : 4;
            size_t bytes = (size_t)cap * sizeof *f->callbacks;
            if (cap <= f->callbacks_cap || bytes / sizeof *f->callbacks != cap)
                return GFL_ENOMEM;
            struct gfl_future_cb *grown = gfl__realloc(f->loop, f->callbacks, bytes);
            if (!grown)
                return GFL_ENOMEM;
            f->callbacks = grown;
            f->callbacks_cap = cap;
        }
        e = &f->callbacks[extra];
    }
    e->cb = cb;
    e->arg = arg;
    e->release = release;
    f->ncallbacks++;
    return GFL_OK;
}

int gfl_future_add_done_callback_ex(gfl_future *f, gfl_future_callback cb, void *arg, gfl_release_fn release)
{
    if (!f || !cb)
        return GFL_EINVAL;
    /* On a closed loop a callback could never run: refuse it. */
    int rc = gfl__check_loop(f->loop);
    if (rc < 0)
        return rc;
    if (f->state != GFL_FUTURE_PENDING) {
        rc = gfl__call_soon_future_rel(f->loop, cb, f, arg, release);
        return rc < 0 ? rc : GFL_OK;
    }
    return append_callback(f, cb, arg, release);
}

int gfl_future_add_done_callback(gfl_future *f, gfl_future_callback cb, void *arg)
{
    return gfl_future_add_done_callback_ex(f, cb, arg, NULL);
}

int gfl__future_add_waiter(gfl_future *f, gfl_task *t)
{
    if (!f || !t)
        return GFL_EINVAL;
    int rc = gfl__check_loop(f->loop);
    if (rc < 0)
        return rc;
    gfl_future *task_future = gfl_task_future(t);
    gfl_future_ref(task_future); /* owned by the registration */
    if (f->state != GFL_FUTURE_PENDING) {
        gfl__task_wake(t, f);
        return GFL_OK;
    }
    rc = append_callback(f, NULL, t, NULL);
    if (rc < 0)
        gfl_future_unref(task_future);
    return rc;
}

/* Removes entry i, keeping the order of the others. */
static void erase_callback(gfl_future *f, uint32_t i)
{
    for (uint32_t j = i; j + 1 < f->ncallbacks; j++)
        *cb_at(f, j) = *cb_at(f, j + 1);
    f->ncallbacks--;
}

int gfl_future_remove_done_callback(gfl_future *f, gfl_future_callback cb, void *arg)
{
    if (!f || !cb)
        return GFL_EINVAL;
    int rc = check_future_thread(f);
    if (rc < 0)
        return rc;
    /* Only the registrations present now: a release that adds the same
     * (cb, arg) again does not make this loop endless. */
    uint32_t matching = 0;
    for (uint32_t i = 0; i < f->ncallbacks; i++)
        if (cb_at(f, i)->cb == cb && cb_at(f, i)->arg == arg)
            matching++;
    int removed = 0;
    bool held = false;
    uint32_t i = 0;
    while (i < f->ncallbacks && (uint32_t)removed < matching) {
        struct gfl_future_cb *e = cb_at(f, i);
        if (e->cb != cb || e->arg != arg) {
            i++;
            continue;
        }
        gfl_release_fn release = e->release;
        erase_callback(f, i);
        removed++;
        if (release) {
            /* It will never run. The release may drop references to f
             * or change its list: keep f alive and look again. */
            if (!held) {
                f->refs++;
                held = true;
            }
            release(arg);
            i = 0;
        }
    }
    if (held)
        gfl_future_unref(f);
    return removed;
}
