/*
 * gfl_future: states, done callbacks through the ready queue, the
 * never-retrieved report, and leak-free teardown of a loop with futures.
 *
 * Every loop here allocates through a counting hook, so "leaks nothing" is
 * checked exactly: the count of live allocations returns to zero.
 */
#include <criterion/criterion.h>

#include <globeflower.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- a counting, optionally failing allocator ---- */

static atomic_long live_allocations;
static atomic_bool fail_allocations;

static void *counting_realloc(void *ud, void *ptr, size_t size)
{
    (void)ud;
    if (size == 0) {
        if (ptr)
            atomic_fetch_sub(&live_allocations, 1);
        free(ptr);
        return NULL;
    }
    if (atomic_load(&fail_allocations))
        return NULL;
    void *p = realloc(ptr, size);
    if (p && !ptr)
        atomic_fetch_add(&live_allocations, 1);
    return p;
}

static gfl_loop *new_counted_loop(void)
{
    gfl_loop_options opts = {0};
    opts.size = sizeof opts;
    opts.realloc = counting_realloc;
    gfl_loop *loop = gfl_loop_new(&opts);
    cr_assert_not_null(loop);
    return loop;
}

static gfl_loop *loop;

static void setup(void)
{
    atomic_store(&live_allocations, 0);
    atomic_store(&fail_allocations, false);
    loop = new_counted_loop();
}

/* Frees the loop (unless the test did) and checks that every allocation
 * went back: run inside the test, where a failed assertion counts
 * (Criterion ignores assertions in .fini). */
static void free_loop_and_check_leaks(void)
{
    if (loop)
        gfl_loop_free(loop);
    loop = NULL;
    cr_assert_eq(atomic_load(&live_allocations), 0, "leaked %ld allocations",
                 (long)atomic_load(&live_allocations));
}

/* A test whose body is followed by the leak check. */
#define FUTURE_TEST(name)                                                      \
    static void name##_body(void);                                             \
    Test(future, name, .init = setup)                                          \
    {                                                                          \
        name##_body();                                                         \
        free_loop_and_check_leaks();                                           \
    }                                                                          \
    static void name##_body(void)

/* ---- recording callbacks ---- */

#define MAX_CALLS 16

struct record {
    int calls;
    int order[MAX_CALLS]; /* tags, in call order */
    gfl_future *futures[MAX_CALLS];
    int states[MAX_CALLS];
};

struct tagged {
    struct record *record;
    int tag;
};

static void record_call(gfl_future *f, void *arg)
{
    struct tagged *t = arg;
    struct record *r = t->record;
    cr_assert_lt(r->calls, MAX_CALLS);
    r->order[r->calls] = t->tag;
    r->futures[r->calls] = f;
    r->states[r->calls] = gfl_future_state_of(f);
    r->calls++;
}

/* ---- exception handler ---- */

struct handler_log {
    int calls;
    char message[128];
    int error_code;
    char error_type[64];
};

static void log_exception(gfl_loop *l, const char *message, gfl_value *error, void *ud)
{
    (void)l;
    struct handler_log *log = ud;
    log->calls++;
    snprintf(log->message, sizeof log->message, "%s", message ? message : "");
    log->error_code = error ? gfl_value_error_code(error) : 0;
    const char *type = gfl_value_error_type(error);
    snprintf(log->error_type, sizeof log->error_type, "%s", type ? type : "");
}

/* ---- states ---- */

FUTURE_TEST(starts_pending)
{
    gfl_future *f = gfl_future_new(loop);
    cr_assert_not_null(f);
    cr_assert_eq(gfl_future_state_of(f), GFL_FUTURE_PENDING);
    cr_assert_null(gfl_future_value(f));
    cr_assert_eq(gfl_future_loop(f), loop);
    gfl_future_unref(f);
}

FUTURE_TEST(result)
{
    gfl_future *f = gfl_future_new(loop);
    gfl_value *v = gfl_value_int(42);
    cr_assert_eq(gfl_future_set_result(f, v), 0);
    gfl_value_unref(v); /* the future keeps its own reference */
    cr_assert_eq(gfl_future_state_of(f), GFL_FUTURE_RESULT);
    int64_t out = 0;
    cr_assert_eq(gfl_value_get_int(gfl_future_value(f), &out), 0);
    cr_assert_eq(out, 42);
    gfl_future_unref(f);
}

FUTURE_TEST(error)
{
    struct handler_log log = {0};
    gfl_loop_set_exception_handler(loop, log_exception, &log);
    gfl_future *f = gfl_future_new(loop);
    gfl_value *e = gfl_value_error(GFL_ECONNRESET, "ConnectionResetError", "peer left", NULL);
    cr_assert_eq(gfl_future_set_error(f, e), 0);
    gfl_value_unref(e);
    cr_assert_eq(gfl_future_state_of(f), GFL_FUTURE_ERROR);
    gfl_value *got = gfl_future_value(f);
    cr_assert_eq(gfl_value_error_code(got), GFL_ECONNRESET);
    cr_assert_str_eq(gfl_value_error_message(got), "peer left");
    gfl_future_unref(f);
    cr_assert_eq(log.calls, 0, "a retrieved error is not reported");
}

FUTURE_TEST(set_error_needs_an_error_value)
{
    gfl_future *f = gfl_future_new(loop);
    gfl_value *v = gfl_value_int(1);
    cr_assert_eq(gfl_future_set_error(f, v), GFL_ETYPE);
    cr_assert_eq(gfl_future_set_error(f, gfl_value_nil()), GFL_ETYPE);
    cr_assert_eq(gfl_future_state_of(f), GFL_FUTURE_PENDING);
    gfl_value_unref(v);
    gfl_future_unref(f);
}

FUTURE_TEST(cancel)
{
    gfl_future *f = gfl_future_new(loop);
    cr_assert_eq(gfl_future_cancel(f, "stop it"), 1);
    cr_assert_eq(gfl_future_state_of(f), GFL_FUTURE_CANCELLED);
    gfl_value *v = gfl_future_value(f);
    cr_assert_eq(gfl_value_error_code(v), GFL_ECANCELED);
    cr_assert_str_eq(gfl_value_error_type(v), "CancelledError");
    cr_assert_str_eq(gfl_value_error_message(v), "stop it");
    cr_assert_eq(gfl_future_cancel(f, NULL), 0, "already done");
    gfl_future_unref(f);

    f = gfl_future_new(loop);
    cr_assert_eq(gfl_future_cancel(f, NULL), 1);
    cr_assert_str_eq(gfl_value_error_message(gfl_future_value(f)), "cancelled");
    gfl_future_unref(f);
}

FUTURE_TEST(completing_twice_is_a_state_error)
{
    gfl_future *f = gfl_future_new(loop);
    gfl_value *one = gfl_value_int(1), *two = gfl_value_int(2);
    gfl_value *e = gfl_value_error(GFL_EIO, NULL, NULL, NULL);
    cr_assert_eq(gfl_future_set_result(f, one), 0);
    cr_assert_eq(gfl_future_set_result(f, two), GFL_ESTATE);
    cr_assert_eq(gfl_future_set_error(f, e), GFL_ESTATE);
    cr_assert_eq(gfl_future_cancel(f, NULL), 0);
    int64_t out = 0;
    gfl_value_get_int(gfl_future_value(f), &out);
    cr_assert_eq(out, 1, "the first outcome stays");

    gfl_future *c = gfl_future_new(loop);
    gfl_future_cancel(c, NULL);
    cr_assert_eq(gfl_future_set_result(c, one), GFL_ESTATE);
    cr_assert_eq(gfl_future_set_error(c, e), GFL_ESTATE);

    gfl_value_unref(one);
    gfl_value_unref(two);
    gfl_value_unref(e);
    gfl_future_unref(f);
    gfl_future_unref(c);
}

FUTURE_TEST(refcounting)
{
    gfl_future *f = gfl_future_new(loop);
    cr_assert_eq(gfl_future_ref(f), f);
    gfl_future_unref(f);
    cr_assert_eq(gfl_future_state_of(f), GFL_FUTURE_PENDING, "still alive");
    gfl_future_unref(f);
}

/* ---- done callbacks ---- */

FUTURE_TEST(callbacks_run_from_the_ready_queue_not_reentrantly)
{
    struct record r = {0};
    struct tagged a = {&r, 1};
    gfl_future *f = gfl_future_new(loop);
    cr_assert_eq(gfl_future_add_done_callback(f, record_call, &a), 0);
    gfl_value *v = gfl_value_int(5);
    gfl_future_set_result(f, v);
    gfl_value_unref(v);
    cr_assert_eq(r.calls, 0, "not called inside set_result");
    cr_assert_eq(gfl_loop_run_once(loop, 0), 1);
    cr_assert_eq(r.calls, 1);
    cr_assert_eq(r.futures[0], f);
    cr_assert_eq(r.states[0], GFL_FUTURE_RESULT);
    cr_assert_eq(gfl_loop_run_once(loop, 0), 0, "runs once only");
    cr_assert_eq(r.calls, 1);
    gfl_future_unref(f);
}

FUTURE_TEST(callbacks_run_in_registration_order)
{
    struct record r = {0};
    struct tagged tags[5];
    gfl_future *f = gfl_future_new(loop);
    for (int i = 0; i < 5; i++) {
        tags[i] = (struct tagged){&r, i};
        cr_assert_eq(gfl_future_add_done_callback(f, record_call, &tags[i]), 0);
    }
    gfl_future_cancel(f, NULL);
    cr_assert_eq(gfl_loop_run_once(loop, 0), 5);
    cr_assert_eq(r.calls, 5);
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(r.order[i], i);
        cr_assert_eq(r.states[i], GFL_FUTURE_CANCELLED);
    }
    gfl_future_unref(f);
}

static void plain_record(void *arg)
{
    struct tagged *t = arg;
    t->record->order[t->record->calls++] = t->tag;
}

FUTURE_TEST(callbacks_queue_behind_callbacks_already_ready)
{
    struct record r = {0};
    struct tagged before = {&r, 1}, done = {&r, 2}, after = {&r, 3};
    gfl_future *f = gfl_future_new(loop);
    gfl_future_add_done_callback(f, record_call, &done);
    gfl_call_soon(loop, plain_record, &before);
    gfl_future_cancel(f, NULL);
    gfl_call_soon(loop, plain_record, &after);
    gfl_loop_run_once(loop, 0);
    cr_assert_eq(r.calls, 3);
    cr_assert_eq(r.order[0], 1);
    cr_assert_eq(r.order[1], 2);
    cr_assert_eq(r.order[2], 3);
    gfl_future_unref(f);
}

FUTURE_TEST(callback_added_after_completion_is_scheduled_at_once)
{
    struct record r = {0};
    struct tagged a = {&r, 7};
    gfl_future *f = gfl_future_new(loop);
    gfl_future_set_result(f, gfl_value_nil());
    cr_assert_eq(gfl_future_add_done_callback(f, record_call, &a), 0);
    cr_assert_eq(r.calls, 0, "still not re-entrant");
    gfl_loop_run_once(loop, 0);
    cr_assert_eq(r.calls, 1);
    cr_assert_eq(r.order[0], 7);
    gfl_future_unref(f);
}

static void schedule_another(gfl_future *f, void *arg)
{
    /* Added from a callback: waits for the next iteration. */
    cr_assert_eq(gfl_future_add_done_callback(f, record_call, arg), 0);
}

FUTURE_TEST(callback_added_from_a_callback_runs_next_iteration)
{
    struct record r = {0};
    struct tagged a = {&r, 1};
    gfl_future *f = gfl_future_new(loop);
    gfl_future_add_done_callback(f, schedule_another, &a);
    gfl_future_set_result(f, gfl_value_nil());
    gfl_loop_run_once(loop, 0);
    cr_assert_eq(r.calls, 0);
    gfl_loop_run_once(loop, 0);
    cr_assert_eq(r.calls, 1);
    gfl_future_unref(f);
}

FUTURE_TEST(remove_done_callback)
{
    struct record r = {0};
    struct tagged a = {&r, 1}, b = {&r, 2};
    gfl_future *f = gfl_future_new(loop);
    gfl_future_add_done_callback(f, record_call, &a);
    gfl_future_add_done_callback(f, record_call, &b);
    gfl_future_add_done_callback(f, record_call, &a);
    gfl_future_add_done_callback(f, record_call, &b);
    cr_assert_eq(gfl_future_remove_done_callback(f, record_call, &a), 2);
    cr_assert_eq(gfl_future_remove_done_callback(f, record_call, &a), 0);
    cr_assert_eq(gfl_future_remove_done_callback(f, schedule_another, &b), 0, "cb and arg must both match");
    gfl_future_set_result(f, gfl_value_nil());
    gfl_loop_run_once(loop, 0);
    cr_assert_eq(r.calls, 2);
    cr_assert_eq(r.order[0], 2);
    cr_assert_eq(r.order[1], 2);
    cr_assert_eq(gfl_future_remove_done_callback(f, record_call, &b), 0, "the list was cleared");
    gfl_future_unref(f);
}

static void count_call(gfl_future *f, void *arg)
{
    (void)f;
    (*(int *)arg)++;
}

FUTURE_TEST(many_callbacks_run_in_one_iteration)
{
    int count = 0;
    gfl_future *f = gfl_future_new(loop);
    for (int i = 0; i < 1000; i++)
        cr_assert_eq(gfl_future_add_done_callback(f, count_call, &count), 0);
    gfl_future_set_result(f, gfl_value_nil());
    cr_assert_eq(count, 0);
    cr_assert_eq(gfl_loop_run_once(loop, 0), 1000);
    cr_assert_eq(count, 1000);
    gfl_future_unref(f);
}

FUTURE_TEST(a_pending_callback_keeps_the_future_alive)
{
    struct record r = {0};
    struct tagged a = {&r, 1};
    gfl_future *f = gfl_future_new(loop);
    gfl_future_add_done_callback(f, record_call, &a);
    gfl_value *v = gfl_value_string("kept", 4);
    gfl_future_set_result(f, v);
    gfl_value_unref(v);
    gfl_future_unref(f); /* the scheduled callback still holds it */
    gfl_loop_run_once(loop, 0);
    cr_assert_eq(r.calls, 1);
    cr_assert_eq(r.states[0], GFL_FUTURE_RESULT);
}

/* ---- never-retrieved errors ---- */

FUTURE_TEST(never_retrieved_error_reaches_the_exception_handler)
{
    struct handler_log log = {0};
    cr_assert_eq(gfl_loop_set_exception_handler(loop, log_exception, &log), 0);
    gfl_future *f = gfl_future_new(loop);
    gfl_value *e = gfl_value_error(GFL_EPIPE, "BrokenPipeError", "gone", NULL);
    gfl_future_set_error(f, e);
    gfl_value_unref(e);
    gfl_future_ref(f);
    gfl_future_unref(f);
    cr_assert_eq(log.calls, 0, "only the last reference reports");
    gfl_future_unref(f);
    cr_assert_eq(log.calls, 1);
    cr_assert_str_eq(log.message, "Future exception was never retrieved");
    cr_assert_eq(log.error_code, GFL_EPIPE);
    cr_assert_str_eq(log.error_type, "BrokenPipeError");
}

FUTURE_TEST(results_and_cancellations_are_not_reported)
{
    struct handler_log log = {0};
    gfl_loop_set_exception_handler(loop, log_exception, &log);
    gfl_future *a = gfl_future_new(loop), *b = gfl_future_new(loop), *c = gfl_future_new(loop);
    gfl_future_set_result(a, gfl_value_nil());
    gfl_future_cancel(b, NULL);
    gfl_future_unref(a);
    gfl_future_unref(b);
    gfl_future_unref(c); /* pending */
    cr_assert_eq(log.calls, 0);
}

FUTURE_TEST(error_seen_by_a_callback_is_retrieved)
{
    struct handler_log log = {0};
    gfl_loop_set_exception_handler(loop, log_exception, &log);
    gfl_future *f = gfl_future_new(loop);
    gfl_value *e = gfl_value_error(GFL_EIO, NULL, NULL, NULL);
    gfl_future_set_error(f, e);
    gfl_value_unref(e);
    /* What a host's done callback does: read the value. */
    cr_assert_not_null(gfl_future_value(f));
    gfl_future_unref(f);
    cr_assert_eq(log.calls, 0);
}

/* ---- allocation failures ---- */

FUTURE_TEST(callback_array_growth_failure_leaves_the_future_unchanged)
{
    struct record r = {0};
    struct tagged tags[6];
    gfl_future *f = gfl_future_new(loop);
    for (int i = 0; i < 5; i++) { /* the inline entry and the first block hold five */
        tags[i] = (struct tagged){&r, i};
        cr_assert_eq(gfl_future_add_done_callback(f, record_call, &tags[i]), 0);
    }
    atomic_store(&fail_allocations, true);
    tags[5] = (struct tagged){&r, 5};
    cr_assert_eq(gfl_future_add_done_callback(f, record_call, &tags[5]), GFL_ENOMEM);
    atomic_store(&fail_allocations, false);
    cr_assert_eq(gfl_future_state_of(f), GFL_FUTURE_PENDING);
    gfl_future_set_result(f, gfl_value_nil());
    gfl_loop_run_once(loop, 0);
    cr_assert_eq(r.calls, 5, "the registered callbacks all run");
    for (int i = 0; i < 5; i++)
        cr_assert_eq(r.order[i], i);
    gfl_future_unref(f);
}

FUTURE_TEST(unschedulable_callback_is_reported_not_lost)
{
    struct handler_log log = {0};
    struct record r = {0};
    struct tagged a = {&r, 1};
    gfl_loop_set_exception_handler(loop, log_exception, &log);
    gfl_future *f = gfl_future_new(loop);
    gfl_future_add_done_callback(f, record_call, &a);
    /* A fresh loop has no slots yet: scheduling needs memory. */
    atomic_store(&fail_allocations, true);
    cr_assert_eq(gfl_future_set_result(f, gfl_value_nil()), 0);
    atomic_store(&fail_allocations, false);
    cr_assert_eq(gfl_future_state_of(f), GFL_FUTURE_RESULT);
    cr_assert_eq(log.calls, 1);
    cr_assert_eq(log.error_code, GFL_ENOMEM);
    gfl_loop_run_once(loop, 0);
    cr_assert_eq(r.calls, 0);
    gfl_future_unref(f);
}

FUTURE_TEST(new_fails_cleanly_without_memory)
{
    atomic_store(&fail_allocations, true);
    cr_assert_null(gfl_future_new(loop));
    atomic_store(&fail_allocations, false);
}

/* ---- closed loops ---- */

FUTURE_TEST(freeing_the_loop_with_pending_work_leaks_nothing)
{
    struct record r = {0};
    struct tagged a = {&r, 1}, b = {&r, 2};
    gfl_future *pending = gfl_future_new(loop);
    gfl_future *done = gfl_future_new(loop);
    gfl_future *errored = gfl_future_new(loop);
    gfl_future_add_done_callback(pending, record_call, &a);
    gfl_future_add_done_callback(done, record_call, &b);
    gfl_value *v = gfl_value_string("payload", 7);
    gfl_future_set_result(done, v); /* its callback is now in the ready queue */
    gfl_value_unref(v);
    gfl_future_unref(done);         /* only the scheduled callback holds it */
    gfl_value *e = gfl_value_error(GFL_EIO, NULL, NULL, NULL);
    gfl_future_set_error(errored, e);
    gfl_value_unref(e);

    struct handler_log log = {0};
    gfl_loop_set_exception_handler(loop, log_exception, &log);
    cr_assert_eq(gfl_loop_free(loop), 0);
    cr_assert_eq(r.calls, 0, "dropped callbacks never run");

    /* The futures outlive the loop; they still work as objects. */
    cr_assert_eq(gfl_future_loop(pending), loop);
    cr_assert_eq(gfl_loop_is_closed(loop), 1);
    cr_assert_eq(gfl_future_add_done_callback(pending, record_call, &b), GFL_ECLOSED);
    /* Settling it is refused, as the header says (it returned 0 before). */
    cr_assert_eq(gfl_future_set_result(pending, gfl_value_nil()), GFL_ECLOSED);
    gfl_value *late = gfl_value_error(GFL_EIO, NULL, NULL, NULL);
    cr_assert_eq(gfl_future_set_error(pending, late), GFL_ECLOSED);
    gfl_value_unref(late);
    cr_assert_eq(gfl_future_cancel(pending, "late"), GFL_ECLOSED);
    cr_assert_eq(gfl_future_state_of(pending), GFL_FUTURE_PENDING);
    cr_assert_eq(gfl_future_remove_done_callback(pending, record_call, &a), 1,
                 "dropping a callback still works");
    cr_assert_eq(gfl_future_add_done_callback(pending, record_call, &b), GFL_ECLOSED);
    cr_assert_null(gfl_future_new(loop));
    gfl_future_unref(pending);
    gfl_future_unref(errored);
    cr_assert_eq(log.calls, 0, "a closed loop reports nothing");
    cr_assert_eq(r.calls, 0);
    loop = NULL; /* the leak check then sees that the loop itself is gone */
}

FUTURE_TEST(cancel_after_the_loop_closed)
{
    gfl_future *f = gfl_future_new(loop);
    struct record r = {0};
    struct tagged a = {&r, 1};
    gfl_future_add_done_callback(f, record_call, &a);
    gfl_loop_free(loop);
    /* The header's GFL_ECLOSED (it cancelled and returned 1 before). */
    cr_assert_eq(gfl_future_cancel(f, "late"), GFL_ECLOSED);
    cr_assert_eq(gfl_future_state_of(f), GFL_FUTURE_PENDING);
    gfl_future_unref(f);
    cr_assert_eq(r.calls, 0);
    loop = NULL;
}

/* ---- misuse ---- */

FUTURE_TEST(null_arguments)
{
    gfl_future *f = gfl_future_new(loop);
    cr_assert_null(gfl_future_new(NULL));
    cr_assert_null(gfl_future_ref(NULL));
    gfl_future_unref(NULL);
    cr_assert_eq(gfl_future_set_result(NULL, gfl_value_nil()), GFL_EINVAL);
    cr_assert_eq(gfl_future_set_result(f, NULL), GFL_EINVAL);
    cr_assert_eq(gfl_future_set_error(NULL, NULL), GFL_EINVAL);
    cr_assert_eq(gfl_future_set_error(f, NULL), GFL_EINVAL);
    cr_assert_eq(gfl_future_cancel(NULL, NULL), GFL_EINVAL);
    cr_assert_eq(gfl_future_state_of(NULL), GFL_EINVAL);
    cr_assert_null(gfl_future_value(NULL));
    cr_assert_null(gfl_future_loop(NULL));
    cr_assert_eq(gfl_future_add_done_callback(NULL, record_call, NULL), GFL_EINVAL);
    cr_assert_eq(gfl_future_add_done_callback(f, NULL, NULL), GFL_EINVAL);
    cr_assert_eq(gfl_future_remove_done_callback(NULL, record_call, NULL), GFL_EINVAL);
    cr_assert_eq(gfl_future_remove_done_callback(f, NULL, NULL), GFL_EINVAL);
    cr_assert_eq(gfl_future_state_of(f), GFL_FUTURE_PENDING);
    gfl_future_unref(f);
}

struct cross_thread {
    gfl_future *future;
    int set_result, cancel, add_callback;
};

static void *use_from_another_thread(void *arg)
{
    struct cross_thread *c = arg;
    c->set_result = gfl_future_set_result(c->future, gfl_value_nil());
    c->cancel = gfl_future_cancel(c->future, NULL);
    c->add_callback = gfl_future_add_done_callback(c->future, record_call, NULL);
    return NULL;
}

FUTURE_TEST(other_threads_are_refused)
{
    struct cross_thread c = {gfl_future_new(loop), 0, 0, 0};
    pthread_t thread;
    cr_assert_eq(pthread_create(&thread, NULL, use_from_another_thread, &c), 0);
    pthread_join(thread, NULL);
    cr_assert_eq(c.set_result, GFL_EWRONGTHREAD);
    cr_assert_eq(c.cancel, GFL_EWRONGTHREAD);
    cr_assert_eq(c.add_callback, GFL_EWRONGTHREAD);
    cr_assert_eq(gfl_future_state_of(c.future), GFL_FUTURE_PENDING);
    gfl_future_unref(c.future);
}

/* ---- a timer resolves a future ---- */

static void resolve_later(void *arg)
{
    gfl_value *v = gfl_value_double(0.5);
    gfl_future_set_result(arg, v);
    gfl_value_unref(v);
}

static void note_done(gfl_future *f, void *arg)
{
    (void)f;
    *(bool *)arg = true;
}

FUTURE_TEST(resolved_by_a_timer)
{
    bool done = false;
    gfl_future *f = gfl_future_new(loop);
    gfl_future_add_done_callback(f, note_done, &done);
    cr_assert_gt(gfl_call_later(loop, 0.01, resolve_later, f), 0);
    int iterations = 0;
    while (!done && iterations++ < 100)
        gfl_loop_run_once(loop, 0.05);
    cr_assert(done);
    double d = 0;
    cr_assert_eq(gfl_value_get_double(gfl_future_value(f), &d), 0);
    cr_assert_eq(d, 0.5);
    gfl_future_unref(f);
}

/* ---- the first callback is kept inline ---- */

FUTURE_TEST(a_single_callback_costs_no_allocation)
{
    struct record r = {0};
    struct tagged a = {&r, 1}, b = {&r, 2};
    gfl_future *f = gfl_future_new(loop);
    long before = atomic_load(&live_allocations);
    cr_assert_eq(gfl_future_add_done_callback(f, record_call, &a), 0);
    cr_assert_eq(atomic_load(&live_allocations), before, "the first callback is stored in the future");
    cr_assert_eq(gfl_future_add_done_callback(f, record_call, &b), 0);
    cr_assert_eq(atomic_load(&live_allocations), before + 1, "the second one needs the array");
    gfl_future_set_result(f, gfl_value_nil());
    gfl_loop_run_once(loop, 0);
    cr_assert_eq(r.calls, 2);
    cr_assert_eq(r.order[0], 1);
    cr_assert_eq(r.order[1], 2);
    gfl_future_unref(f);
}

FUTURE_TEST(removing_keeps_the_order_across_the_inline_entry)
{
    struct record r = {0};
    struct tagged t[6];
    for (int i = 0; i < 6; i++)
        t[i] = (struct tagged){&r, i};
    gfl_future *f = gfl_future_new(loop);
    for (int i = 0; i < 4; i++)
        gfl_future_add_done_callback(f, record_call, &t[i]);
    cr_assert_eq(gfl_future_remove_done_callback(f, record_call, &t[0]), 1, "the inline entry");
    cr_assert_eq(gfl_future_remove_done_callback(f, record_call, &t[2]), 1);
    gfl_future_add_done_callback(f, record_call, &t[4]);
    cr_assert_eq(gfl_future_remove_done_callback(f, record_call, &t[1]), 1);
    cr_assert_eq(gfl_future_remove_done_callback(f, record_call, &t[3]), 1);
    cr_assert_eq(gfl_future_remove_done_callback(f, record_call, &t[4]), 1, "empty now");
    gfl_future_add_done_callback(f, record_call, &t[5]);
    gfl_future_add_done_callback(f, record_call, &t[1]);
    gfl_future_add_done_callback(f, record_call, &t[3]);
    gfl_future_cancel(f, NULL);
    gfl_loop_run_once(loop, 0);
    cr_assert_eq(r.calls, 3);
    cr_assert_eq(r.order[0], 5);
    cr_assert_eq(r.order[1], 1);
    cr_assert_eq(r.order[2], 3);
    gfl_future_unref(f);
}

/* ---- gfl_future_add_done_callback_ex: releasing the argument ---- */

struct owned {
    struct record *record;
    int tag;
    int runs, releases;
    gfl_future *future; /* a reference the argument owns, or NULL */
};

static void owned_run(gfl_future *f, void *arg)
{
    struct owned *o = arg;
    (void)f;
    cr_assert_eq(o->releases, 0, "never released before running");
    o->runs++;
    if (o->record)
        o->record->order[o->record->calls++] = o->tag;
}

static void owned_release(void *arg)
{
    struct owned *o = arg;
    cr_assert_eq(o->runs, 0, "a callback that ran is not released");
    o->releases++;
    if (o->future) {
        gfl_future *f = o->future;
        o->future = NULL;
        gfl_future_unref(f);
    }
}

FUTURE_TEST(release_is_not_called_when_the_callback_runs)
{
    struct record r = {0};
    struct owned a = {&r, 1, 0, 0, NULL}, b = {&r, 2, 0, 0, NULL};
    struct tagged plain = {&r, 3};
    gfl_future *f = gfl_future_new(loop);
    cr_assert_eq(gfl_future_add_done_callback_ex(f, owned_run, &a, owned_release), 0);
    cr_assert_eq(gfl_future_add_done_callback(f, record_call, &plain), 0);
    cr_assert_eq(gfl_future_add_done_callback_ex(f, owned_run, &b, NULL), 0);
    gfl_future_set_result(f, gfl_value_nil());
    cr_assert_eq(gfl_loop_run_once(loop, 0), 3);
    cr_assert_eq(r.calls, 3);
    cr_assert_eq(r.order[0], 1, "order kept with plain callbacks");
    cr_assert_eq(r.order[1], 3);
    cr_assert_eq(r.order[2], 2);
    cr_assert_eq(a.runs, 1);
    cr_assert_eq(a.releases, 0);

    /* Added to a done future: scheduled at once, runs, not released. */
    struct owned c = {&r, 4, 0, 0, NULL};
    cr_assert_eq(gfl_future_add_done_callback_ex(f, owned_run, &c, owned_release), 0);
    gfl_loop_run_once(loop, 0);
    cr_assert_eq(c.runs, 1);
    cr_assert_eq(c.releases, 0);
    gfl_future_unref(f);
}

FUTURE_TEST(release_runs_when_the_registration_is_removed)
{
    struct record r = {0};
    struct owned a = {&r, 1, 0, 0, NULL}, b = {&r, 2, 0, 0, NULL};
    gfl_future *f = gfl_future_new(loop);
    gfl_future_add_done_callback_ex(f, owned_run, &a, owned_release);
    gfl_future_add_done_callback_ex(f, owned_run, &b, owned_release);
    gfl_future_add_done_callback_ex(f, owned_run, &a, owned_release);
    cr_assert_eq(gfl_future_remove_done_callback(f, owned_run, &a), 2);
    cr_assert_eq(a.releases, 2, "once per registration");
    cr_assert_eq(gfl_future_remove_done_callback(f, owned_run, &a), 0);
    cr_assert_eq(a.releases, 2);
    gfl_future_set_result(f, gfl_value_nil());
    gfl_loop_run_once(loop, 0);
    cr_assert_eq(a.runs, 0);
    cr_assert_eq(b.runs, 1);
    cr_assert_eq(b.releases, 0);
    gfl_future_unref(f);
}

FUTURE_TEST(release_may_drop_the_last_reference_while_being_removed)
{
    /* The argument owns the only reference to the future (a binding's
     * userdata often does): removing the callback frees both. */
    gfl_future *f = gfl_future_new(loop);
    struct owned a = {NULL, 1, 0, 0, f};
    gfl_future_add_done_callback_ex(f, owned_run, &a, owned_release);
    struct owned b = {NULL, 2, 0, 0, NULL};
    gfl_future_add_done_callback_ex(f, owned_run, &b, owned_release);
    cr_assert_eq(gfl_future_remove_done_callback(f, owned_run, &a), 1);
    cr_assert_eq(a.releases, 1);
    cr_assert_null(a.future);
    cr_assert_eq(b.releases, 1, "the future is gone: b's callback can never run");
}

FUTURE_TEST(release_runs_when_a_pending_future_is_destroyed)
{
    struct owned a = {NULL, 1, 0, 0, NULL}, b = {NULL, 2, 0, 0, NULL};
    gfl_future *f = gfl_future_new(loop);
    gfl_future_add_done_callback_ex(f, owned_run, &a, owned_release);
    gfl_future_add_done_callback_ex(f, owned_run, &b, owned_release);
    gfl_future_add_done_callback(f, owned_run, &b); /* no release: nothing to do */
    gfl_future_unref(f);
    cr_assert_eq(a.releases, 1);
    cr_assert_eq(b.releases, 1);
    cr_assert_eq(a.runs + b.runs, 0);
}

FUTURE_TEST(release_runs_when_the_loop_drops_the_scheduled_callback)
{
    struct owned a = {NULL, 1, 0, 0, NULL}, b = {NULL, 2, 0, 0, NULL}, c = {NULL, 3, 0, 0, NULL};
    gfl_future *f = gfl_future_new(loop);
    gfl_future_add_done_callback_ex(f, owned_run, &a, owned_release);
    gfl_future_add_done_callback_ex(f, owned_run, &b, owned_release);
    gfl_future_set_result(f, gfl_value_nil()); /* both are in the ready queue */
    gfl_future_add_done_callback_ex(f, owned_run, &c, owned_release); /* scheduled at once */
    gfl_future_unref(f); /* the scheduled callbacks hold it */
    cr_assert_eq(gfl_loop_free(loop), 0);
    loop = NULL;
    cr_assert_eq(a.releases + b.releases + c.releases, 3);
    cr_assert_eq(a.runs + b.runs + c.runs, 0);
}

FUTURE_TEST(release_runs_when_a_closed_loop_cannot_schedule)
{
    /* The loop closed with the future pending: the callback can never run;
     * settling is refused, and the release runs when the future goes. */
    struct owned a = {NULL, 1, 0, 0, NULL};
    gfl_future *f = gfl_future_new(loop);
    gfl_future_add_done_callback_ex(f, owned_run, &a, owned_release);
    cr_assert_eq(gfl_loop_free(loop), 0);
    cr_assert_eq(a.releases, 0, "still registered on the pending future");
    cr_assert_eq(gfl_future_set_result(f, gfl_value_nil()), GFL_ECLOSED);
    cr_assert_eq(a.releases, 0);
    /* Refused on a closed loop: the caller keeps its argument. */
    struct owned b = {NULL, 2, 0, 0, NULL};
    cr_assert_eq(gfl_future_add_done_callback_ex(f, owned_run, &b, owned_release), GFL_ECLOSED);
    cr_assert_eq(b.releases, 0);
    gfl_future_unref(f);
    cr_assert_eq(a.releases, 1);
    loop = NULL;
}

FUTURE_TEST(release_runs_when_scheduling_fails)
{
    struct handler_log log = {0};
    gfl_loop_set_exception_handler(loop, log_exception, &log);
    struct owned a = {NULL, 1, 0, 0, NULL};
    gfl_future *f = gfl_future_new(loop);
    gfl_future_add_done_callback_ex(f, owned_run, &a, owned_release);
    atomic_store(&fail_allocations, true);
    cr_assert_eq(gfl_future_set_result(f, gfl_value_nil()), 0);
    atomic_store(&fail_allocations, false);
    cr_assert_eq(log.calls, 1, "reported");
    cr_assert_eq(a.releases, 1, "and released");
    gfl_loop_run_once(loop, 0);
    cr_assert_eq(a.runs, 0);

    /* Failing to add to a done future: the caller keeps the argument. */
    struct owned b = {NULL, 2, 0, 0, NULL};
    atomic_store(&fail_allocations, true);
    cr_assert_eq(gfl_future_add_done_callback_ex(f, owned_run, &b, owned_release), GFL_ENOMEM);
    atomic_store(&fail_allocations, false);
    gfl_loop_run_once(loop, 0);
    cr_assert_eq(b.releases + b.runs, 0);
    gfl_future_unref(f);
}

FUTURE_TEST(add_done_callback_ex_checks_its_arguments)
{
    gfl_future *f = gfl_future_new(loop);
    struct owned a = {0};
    cr_assert_eq(gfl_future_add_done_callback_ex(NULL, owned_run, &a, owned_release), GFL_EINVAL);
    cr_assert_eq(gfl_future_add_done_callback_ex(f, NULL, &a, owned_release), GFL_EINVAL);
    cr_assert_eq(a.releases, 0);
    gfl_future_unref(f);
}
