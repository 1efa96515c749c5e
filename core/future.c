/*
 * gfl_future: pending -> result | error | cancelled, with asyncio's rules.
 *
 * Done callbacks never run re-entrantly: completing a future only schedules
 * them on the ready queue (gfl__call_soon_future keeps the future alive until
 * each one ran or was dropped). Futures belong to one loop and are used from
 * its thread; their reference count is therefore plain.
 *
 * A future's memory comes from its loop's allocation hook and it holds a loop
 * memref, so it outlives gfl_loop_free safely: a closed loop's future still
 * changes state, but nothing can be scheduled on it any more (GFL_ECLOSED).
 */
#include "internal.h"

#include <string.h>

/* Thread check that tolerates a closed loop: state changes on a closed
 * loop's future are allowed, they just schedule nothing. */
static int check_future_thread(const gfl_future *f)
{
    int rc = gfl__check_loop(f->loop);
    return rc == GFL_ECLOSED ? GFL_OK : rc;
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

/* Takes the callback list off the future (so callbacks run or dropped below
 * never see a half-processed list). */
static struct gfl_future_cb *detach_callbacks(gfl_future *f, size_t *count)
{
    struct gfl_future_cb *callbacks = f->callbacks;
    *count = f->ncallbacks;
    f->callbacks = NULL;
    f->ncallbacks = 0;
    f->callbacks_cap = 0;
    return callbacks;
}

void gfl__future_destroy(gfl_future *f)
{
    gfl_loop *loop = f->loop;
    size_t count;
    struct gfl_future_cb *callbacks = detach_callbacks(f, &count);
    /* Plain callbacks of a future that never completed simply never run;
     * waiting tasks must give back the reference their registration holds. */
    for (size_t i = 0; i < count; i++)
        if (!callbacks[i].cb)
            gfl__task_waiter_dropped(callbacks[i].arg);
    gfl__free(loop, callbacks);
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
    size_t count;
    struct gfl_future_cb *callbacks = detach_callbacks(f, &count);
    for (size_t i = 0; i < count; i++) {
        if (!callbacks[i].cb) {
            gfl__task_wake(callbacks[i].arg, f);
            continue;
        }
        int rc = gfl__call_soon_future(f->loop, callbacks[i].cb, f, callbacks[i].arg);
        if (rc < 0)
            report(f->loop, "Future done callback could not be scheduled", rc);
    }
    gfl__free(f->loop, callbacks);
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
    int rc = check_future_thread(f);
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
    int rc = check_future_thread(f);
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

/* Appends (cb, arg) to the pending future's list; GFL_ENOMEM leaves it as
 * it was. */
static int append_callback(gfl_future *f, gfl_future_callback cb, void *arg)
{
    if (f->ncallbacks == f->callbacks_cap) {
        size_t cap = f->callbacks_cap ? f->callbacks_cap * 2 : 4;
        if (cap > SIZE_MAX / sizeof *f->callbacks)
            return GFL_ENOMEM;
        struct gfl_future_cb *grown = gfl__realloc(f->loop, f->callbacks, cap * sizeof *grown);
        if (!grown)
            return GFL_ENOMEM;
        f->callbacks = grown;
        f->callbacks_cap = cap;
    }
    f->callbacks[f->ncallbacks].cb = cb;
    f->callbacks[f->ncallbacks].arg = arg;
    f->ncallbacks++;
    return GFL_OK;
}

int gfl_future_add_done_callback(gfl_future *f, gfl_future_callback cb, void *arg)
{
    if (!f || !cb)
        return GFL_EINVAL;
    /* On a closed loop a callback could never run: refuse it. */
    int rc = gfl__check_loop(f->loop);
    if (rc < 0)
        return rc;
    if (f->state != GFL_FUTURE_PENDING) {
        rc = gfl__call_soon_future(f->loop, cb, f, arg);
        return rc < 0 ? rc : GFL_OK;
    }
    return append_callback(f, cb, arg);
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
    rc = append_callback(f, NULL, t);
    if (rc < 0)
        gfl_future_unref(task_future);
    return rc;
}

int gfl_future_remove_done_callback(gfl_future *f, gfl_future_callback cb, void *arg)
{
    if (!f || !cb)
        return GFL_EINVAL;
    int rc = check_future_thread(f);
    if (rc < 0)
        return rc;
    /* Compact in place, keeping the order of the survivors. */
    size_t kept = 0;
    for (size_t i = 0; i < f->ncallbacks; i++) {
        if (f->callbacks[i].cb == cb && f->callbacks[i].arg == arg)
            continue;
        f->callbacks[kept++] = f->callbacks[i];
    }
    int removed = (int)(f->ncallbacks - kept);
    f->ncallbacks = kept;
    return removed;
}
