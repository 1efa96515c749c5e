/*
 * gfl_task: a generic coroutine driver with asyncio's Task semantics.
 *
 * The host's step function resumes its coroutine; the step reports what the
 * coroutine did (await a future, return, raise, or a bare yield) and, once
 * it returned, the task acts on it, as asyncio's Task.__step does.
 *
 * Who keeps whom alive (no cycles, so nothing leaks when a loop closes with
 * tasks pending):
 *  - a scheduled step holds a reference to the task (a GFL_SLOT_FUTURE slot
 *    on the task's own future; dropping the slot releases it);
 *  - an awaited future holds the waiting task (its waiter registration owns
 *    a task reference), while the task points back at it weakly: whatever
 *    can complete the awaited future keeps the task alive, as in asyncio.
 *    If the awaited future dies still pending, the registration is dropped
 *    and the task, now waiting on nothing, lives as long as its owners.
 */
#include "internal.h"

#include <string.h>

enum step_outcome {
    STEP_YIELDED = 0, /* the step called nothing: a bare yield */
    STEP_AWAITED,
    STEP_RETURNED,
    STEP_FAILED,
};

struct gfl_task {
    struct gfl_future future; /* first: a task is its own future */

    gfl_task_step_fn step;
    void *ud;
    gfl_release_fn release;
    bool released; /* release(ud) ran (or there is nothing to release) */

    gfl_future *awaiting; /* weak: its waiter list owns a reference to us */
    bool step_scheduled;
    gfl_value *wake_value; /* the next step's input (owned); NULL: nil */
    bool wake_is_error;

    bool must_cancel;         /* throw a CancelledError into the next step */
    gfl_value *cancel_error;  /* that CancelledError (owned) */

    /* Filled in by gfl_task_await/return/fail during a step. */
    bool in_step;
    enum step_outcome outcome;
    gfl_value *outcome_value;   /* returned value or raised error (owned) */
    gfl_future *outcome_future; /* awaited future (owned until registered) */
};

static bool task_done(const gfl_task *t)
{
    return t->future.state != GFL_FUTURE_PENDING;
}

static void report(gfl_loop *loop, const char *message, int code)
{
    if (loop->closed)
        return;
    gfl_value *error = code < 0 ? gfl_value_error(code, NULL, NULL, NULL) : NULL;
    gfl_loop_call_exception_handler(loop, message, error);
    gfl_value_unref(error);
}

/* Gives the coroutine back to its host, exactly once. */
static void release_coroutine(gfl_task *t)
{
    if (t->released)
        return;
    t->released = true;
    if (t->release)
        t->release(t->ud);
}

static void clear_must_cancel(gfl_task *t)
{
    t->must_cancel = false;
    gfl_value_unref(t->cancel_error);
    t->cancel_error = NULL;
}

static void run_step(gfl_future *f, void *unused);

static int schedule_step(gfl_task *t)
{
    int rc = gfl__call_soon_future(t->future.loop, run_step, &t->future, NULL);
    if (rc < 0)
        return rc;
    t->step_scheduled = true;
    return GFL_OK;
}

gfl_task *gfl_task_new(gfl_loop *loop, gfl_task_step_fn step, void *ud, gfl_release_fn release)
{
    if (gfl__check_loop(loop) != GFL_OK || !step)
        return NULL;
    gfl_task *t = gfl__calloc(loop, 1, sizeof *t);
    if (!t)
        return NULL;
    gfl__future_init(&t->future, loop, true);
    t->step = step;
    t->ud = ud;
    t->release = release;
    if (schedule_step(t) < 0) {
        /* Never started: the caller keeps `ud` (release is not called). */
        gfl__future_destroy(&t->future);
        gfl__free(loop, t);
        return NULL;
    }
    return t;
}

gfl_task *gfl_task_ref(gfl_task *t)
{
    return t && gfl_future_ref(&t->future) ? t : NULL;
}

void gfl_task_unref(gfl_task *t)
{
    if (t)
        gfl_future_unref(&t->future);
}

gfl_future *gfl_task_future(gfl_task *t)
{
    return t ? &t->future : NULL;
}

void gfl__task_destroy(gfl_task *t)
{
    gfl_loop *loop = t->future.loop;
    if (!task_done(t))
        report(loop, "Task was destroyed but it is pending!", 0);
    gfl_value_unref(t->wake_value);
    gfl_value_unref(t->cancel_error);
    gfl_value_unref(t->outcome_value);
    gfl_future_unref(t->outcome_future);
    release_coroutine(t);
    gfl__future_destroy(&t->future);
    gfl__free(loop, t);
}

/* ---- the step trampoline ---- */

/* The awaited future could not take our registration: throw the error into
 * the coroutine on the next step (asyncio does so for a bad yield). */
static void resume_with_error(gfl_task *t, int code)
{
    if (t->future.loop->closed)
        return; /* nothing will ever run: the task stays pending */
    gfl_value *error = gfl_value_error(code, NULL, NULL, NULL);
    if (error) {
        gfl_value_unref(t->wake_value);
        t->wake_value = error;
        t->wake_is_error = true;
        if (schedule_step(t) == GFL_OK)
            return;
    }
    report(t->future.loop, "Task could not be resumed", code);
}

/* The coroutine finished: complete the task's future and let go of it. */
static void finish(gfl_task *t, int state, gfl_value *value)
{
    gfl__future_complete(&t->future, state, value);
    clear_must_cancel(t);
    release_coroutine(t);
}

/* A raised error ends the task cancelled when it is a cancellation. */
static void finish_failed(gfl_task *t, gfl_value *error)
{
    if (gfl_value_error_code(error) != GFL_ECANCELED) {
        finish(t, GFL_FUTURE_ERROR, error);
        return;
    }
    const char *type = gfl_value_error_type(error);
    if (strcmp(type, "CancelledError") == 0) {
        finish(t, GFL_FUTURE_CANCELLED, error);
        return;
    }
    /* Keep the documented shape of a cancelled future's value. */
    gfl_value *cancelled = gfl__cancelled_error(gfl_value_error_message(error));
    finish(t, GFL_FUTURE_CANCELLED, cancelled ? cancelled : error);
    gfl_value_unref(cancelled);
}

static void finish_awaited(gfl_task *t, gfl_future *awaited)
{
    /* Cancelled during this step: pass it on to what we now wait for. */
    if (t->must_cancel &&
        gfl_future_cancel(awaited, gfl_value_error_message(t->cancel_error)) == 1)
        clear_must_cancel(t);
    t->awaiting = awaited;
    int rc = gfl__future_add_waiter(awaited, t); /* a done future wakes us at once */
    if (rc < 0) {
        t->awaiting = NULL;
        resume_with_error(t, rc);
    }
}

/* Acts on what the step did, like the tail of asyncio's Task.__step. */
static void finish_step(gfl_task *t)
{
    gfl_value *value = t->outcome_value;
    gfl_future *awaited = t->outcome_future;
    t->outcome_value = NULL;
    t->outcome_future = NULL;

    switch (t->outcome) {
    case STEP_RETURNED:
        /* A cancel requested during the final step still wins. */
        if (t->must_cancel)
            finish(t, GFL_FUTURE_CANCELLED, t->cancel_error);
        else
            finish(t, GFL_FUTURE_RESULT, value);
        break;
    case STEP_FAILED:
        finish_failed(t, value);
        break;
    case STEP_AWAITED:
        finish_awaited(t, awaited);
        break;
    case STEP_YIELDED: {
        int rc = schedule_step(t);
        if (rc < 0)
            resume_with_error(t, rc);
        break;
    }
    }
    gfl_value_unref(value);
    gfl_future_unref(awaited);
}

static void run_step(gfl_future *f, void *unused)
{
    (void)unused;
    gfl_task *t = (gfl_task *)f;
    gfl_loop *loop = f->loop;
    t->step_scheduled = false;

    gfl_value *input = t->wake_value;
    bool is_error = t->wake_is_error;
    t->wake_value = NULL;
    t->wake_is_error = false;
    if (task_done(t)) {
        gfl_value_unref(input);
        return;
    }
    if (t->must_cancel) {
        /* The CancelledError replaces whatever the step would have got. */
        gfl_value_unref(input);
        input = t->cancel_error;
        is_error = true;
        t->cancel_error = NULL;
        t->must_cancel = false;
    }
    if (!input) {
        input = gfl_value_nil();
        is_error = false;
    }

    gfl_future_ref(f); /* the step may drop every other reference */
    gfl_task *previous = loop->current_task;
    loop->current_task = t;
    t->in_step = true;
    t->outcome = STEP_YIELDED;
    t->step(t, t->ud, is_error ? NULL : input, is_error ? input : NULL);
    t->in_step = false;
    loop->current_task = previous;
    gfl_value_unref(input);

    finish_step(t);
    gfl_future_unref(f);
}

/* ---- waking up when the awaited future is done ---- */

void gfl__task_wake(gfl_task *t, gfl_future *done)
{
    t->awaiting = NULL;
    if (!task_done(t)) {
        /* The error is delivered to the coroutine: that counts as read. */
        gfl_value *outcome = gfl_future_value(done);
        gfl_value_unref(t->wake_value);
        t->wake_value = gfl_value_ref(outcome);
        t->wake_is_error = done->state != GFL_FUTURE_RESULT;
        int rc = schedule_step(t);
        if (rc < 0) {
            gfl_value_unref(t->wake_value);
            t->wake_value = NULL;
            t->wake_is_error = false;
            report(t->future.loop, "Task could not be resumed", rc);
        }
    }
    gfl_future_unref(&t->future); /* the waiter registration's reference */
}

void gfl__task_waiter_dropped(gfl_task *t)
{
    t->awaiting = NULL;
    gfl_future_unref(&t->future);
}

/* ---- what a step may call ---- */

/* GFL_OK if `t` is inside its own step and has not chosen an outcome. */
static int check_in_step(const gfl_task *t)
{
    if (!t->in_step || t->future.loop->current_task != t)
        return GFL_ESTATE;
    if (t->outcome != STEP_YIELDED)
        return GFL_ESTATE; /* at most one of await/return/fail per step */
    return GFL_OK;
}

int gfl_task_await(gfl_task *t, gfl_future *awaited)
{
    if (!t || !awaited)
        return GFL_EINVAL;
    int rc = check_in_step(t);
    if (rc < 0)
        return rc;
    if (awaited == &t->future || awaited->loop != t->future.loop)
        return GFL_EINVAL; /* a task cannot await itself or another loop's future */
    t->outcome = STEP_AWAITED;
    t->outcome_future = gfl_future_ref(awaited);
    return GFL_OK;
}

int gfl_task_return(gfl_task *t, gfl_value *value)
{
    if (!t || !value)
        return GFL_EINVAL;
    int rc = check_in_step(t);
    if (rc < 0)
        return rc;
    t->outcome = STEP_RETURNED;
    t->outcome_value = gfl_value_ref(value);
    return GFL_OK;
}

int gfl_task_fail(gfl_task *t, gfl_value *error)
{
    if (!t || !error)
        return GFL_EINVAL;
    if (gfl_value_type_of(error) != GFL_VALUE_ERROR)
        return GFL_ETYPE;
    int rc = check_in_step(t);
    if (rc < 0)
        return rc;
    t->outcome = STEP_FAILED;
    t->outcome_value = gfl_value_ref(error);
    return GFL_OK;
}

/* ---- cancellation (asyncio's Task.cancel) ---- */

int gfl_task_cancel(gfl_task *t, const char *message)
{
    if (!t)
        return GFL_EINVAL;
    int rc = gfl__check_loop(t->future.loop);
    if (rc < 0 && rc != GFL_ECLOSED)
        return rc;
    if (task_done(t))
        return 0;
    /* Cancelling what we wait for wakes us with its CancelledError. */
    if (t->awaiting && gfl_future_cancel(t->awaiting, message) == 1)
        return 1;
    gfl_value *cancelled = gfl__cancelled_error(message);
    if (!cancelled)
        return GFL_ENOMEM;
    gfl_value_unref(t->cancel_error);
    t->cancel_error = cancelled;
    t->must_cancel = true;
    /* Waiting on nothing (its awaited future died): nothing would ever
     * deliver the cancellation, so step now. */
    if (!t->in_step && !t->step_scheduled && !t->awaiting && !t->future.loop->closed)
        schedule_step(t);
    return 1;
}

gfl_task *gfl_task_current(gfl_loop *loop)
{
    if (gfl__check_loop(loop) != GFL_OK)
        return NULL;
    return loop->current_task;
}
