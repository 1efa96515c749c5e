/*
 * gfl_task driven by C step functions: each test's "coroutine" is a little
 * state machine (a program counter in its ud) resumed by the task.
 *
 * Loops allocate through a counting hook; every test ends by freeing the loop
 * and checking that all allocations went back.
 */
#include <criterion/criterion.h>

#include <globeflower.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- counting allocator and fixture ---- */

static atomic_long live_allocations;

static void *counting_realloc(void *ud, void *ptr, size_t size)
{
    (void)ud;
    if (size == 0) {
        if (ptr)
            atomic_fetch_sub(&live_allocations, 1);
        free(ptr);
        return NULL;
    }
    void *p = realloc(ptr, size);
    if (p && !ptr)
        atomic_fetch_add(&live_allocations, 1);
    return p;
}

static gfl_loop *loop;

static gfl_loop *new_counted_loop(void)
{
    gfl_loop_options opts = {0};
    opts.size = sizeof opts;
    opts.realloc = counting_realloc;
    gfl_loop *l = gfl_loop_new(&opts);
    cr_assert_not_null(l);
    return l;
}

static void setup(void)
{
    atomic_store(&live_allocations, 0);
    loop = new_counted_loop();
}

/* Inside the test (Criterion ignores assertions in .fini). */
static void free_loop_and_check_leaks(void)
{
    if (loop)
        gfl_loop_free(loop);
    loop = NULL;
    cr_assert_eq(atomic_load(&live_allocations), 0, "leaked %ld allocations",
                 (long)atomic_load(&live_allocations));
}

#define TASK_TEST(name)                                                        \
    static void name##_body(void);                                             \
    Test(task, name, .init = setup)                                            \
    {                                                                          \
        name##_body();                                                         \
        free_loop_and_check_leaks();                                           \
    }                                                                          \
    static void name##_body(void)

/* Runs iterations until `f` is done; never more than `limit`. */
static void run_until_done(gfl_future *f, int limit)
{
    for (int i = 0; i < limit && gfl_future_state_of(f) == GFL_FUTURE_PENDING; i++)
        cr_assert_geq(gfl_loop_run_once(loop, 0.05), 0);
    cr_assert_neq(gfl_future_state_of(f), GFL_FUTURE_PENDING, "not done after %d iterations", limit);
}

static void run_iterations(int n)
{
    for (int i = 0; i < n; i++)
        cr_assert_geq(gfl_loop_run_once(loop, 0), 0);
}

/* ---- the coroutines' state ---- */

struct coro {
    int pc;            /* which step comes next */
    int steps;         /* steps taken */
    int releases;      /* release(ud) calls */
    gfl_future *awaits; /* a future to await (borrowed from the test) */
    gfl_task *other;   /* another task, for chains */
    int64_t number;    /* a number to return or that was received */
    /* What the last step received. */
    bool got_value;
    int error_code;
    char error_type[32];
    char error_message[64];
    gfl_task *current; /* gfl_task_current() seen inside the step */
};

static void release_coro(void *ud)
{
    ((struct coro *)ud)->releases++;
}

static void note_input(gfl_task *t, struct coro *c, gfl_value *value, gfl_value *error)
{
    cr_assert((value == NULL) != (error == NULL), "exactly one of value and error");
    c->steps++;
    c->current = gfl_task_current(loop);
    cr_assert_eq(c->current, t);
    c->got_value = value != NULL;
    c->error_code = 0;
    c->error_type[0] = c->error_message[0] = '\0';
    if (error) {
        c->error_code = gfl_value_error_code(error);
        snprintf(c->error_type, sizeof c->error_type, "%s", gfl_value_error_type(error));
        snprintf(c->error_message, sizeof c->error_message, "%s", gfl_value_error_message(error));
    } else {
        gfl_value_get_int(value, &c->number);
    }
}

static int64_t result_int(gfl_task *t)
{
    int64_t n = -1;
    cr_assert_eq(gfl_future_state_of(gfl_task_future(t)), GFL_FUTURE_RESULT);
    cr_assert_eq(gfl_value_get_int(gfl_future_value(gfl_task_future(t)), &n), 0);
    return n;
}

static void return_int(gfl_task *t, int64_t n)
{
    gfl_value *v = gfl_value_int(n);
    cr_assert_eq(gfl_task_return(t, v), 0);
    gfl_value_unref(v);
}

/* ---- exception handler ---- */

struct handler_log {
    int calls;
    char message[128];
    int error_code;
};

static void log_exception(gfl_loop *l, const char *message, gfl_value *error, void *ud)
{
    (void)l;
    struct handler_log *log = ud;
    log->calls++;
    snprintf(log->message, sizeof log->message, "%s", message);
    log->error_code = error ? gfl_value_error_code(error) : 0;
}

/* ---- a first step, a result ---- */

static void return_seven(gfl_task *t, void *ud, gfl_value *value, gfl_value *error)
{
    struct coro *c = ud;
    note_input(t, c, value, error);
    cr_assert_eq(gfl_value_type_of(value), GFL_VALUE_NIL, "the first step gets nil");
    return_int(t, 7);
}

TASK_TEST(first_step_gets_nil_and_return_sets_the_result)
{
    struct coro c = {0};
    gfl_task *t = gfl_task_new(loop, return_seven, &c, release_coro);
    cr_assert_not_null(t);
    cr_assert_eq(c.steps, 0, "the first step is scheduled, not run");
    cr_assert_null(gfl_task_current(loop));
    cr_assert_eq(gfl_loop_run_once(loop, 0), 1);
    cr_assert_eq(c.steps, 1);
    cr_assert_eq(c.current, t, "gfl_task_current inside the step");
    cr_assert_null(gfl_task_current(loop), "and NULL outside");
    cr_assert_eq(result_int(t), 7);
    cr_assert_eq(c.releases, 1, "released after the final step");
    gfl_task_unref(t);
    cr_assert_eq(c.releases, 1, "exactly once");
}

/* ---- an await chain: A awaits B, B awaits a future a timer resolves ---- */

static void resolve_with_21(void *arg)
{
    gfl_value *v = gfl_value_int(21);
    cr_assert_eq(gfl_future_set_result(arg, v), 0);
    gfl_value_unref(v);
}

static void chain_inner(gfl_task *t, void *ud, gfl_value *value, gfl_value *error)
{
    struct coro *c = ud;
    note_input(t, c, value, error);
    switch (c->pc++) {
    case 0:
        cr_assert_gt(gfl_call_later(loop, 0.01, resolve_with_21, c->awaits), 0);
        cr_assert_eq(gfl_task_await(t, c->awaits), 0);
        break;
    case 1:
        cr_assert(c->got_value);
        return_int(t, c->number * 2);
        break;
    default:
        cr_assert_fail("too many steps");
    }
}

static void chain_outer(gfl_task *t, void *ud, gfl_value *value, gfl_value *error)
{
    struct coro *c = ud;
    note_input(t, c, value, error);
    switch (c->pc++) {
    case 0:
        cr_assert_eq(gfl_task_await(t, gfl_task_future(c->other)), 0);
        break;
    case 1:
        cr_assert(c->got_value);
        return_int(t, c->number + 1);
        break;
    default:
        cr_assert_fail("too many steps");
    }
}

TASK_TEST(await_chain_through_a_timer)
{
    gfl_future *timer_future = gfl_future_new(loop);
    struct coro inner = {.awaits = timer_future};
    gfl_task *b = gfl_task_new(loop, chain_inner, &inner, release_coro);
    struct coro outer = {.other = b};
    gfl_task *a = gfl_task_new(loop, chain_outer, &outer, release_coro);

    run_until_done(gfl_task_future(a), 200);
    cr_assert_eq(result_int(b), 42);
    cr_assert_eq(result_int(a), 43);
    cr_assert_eq(inner.steps, 2);
    cr_assert_eq(outer.steps, 2);
    cr_assert_eq(inner.releases, 1);
    cr_assert_eq(outer.releases, 1);
    gfl_task_unref(a);
    gfl_task_unref(b);
    gfl_future_unref(timer_future);
}

/* ---- errors ---- */

static void raise_eio(gfl_task *t, void *ud, gfl_value *value, gfl_value *error)
{
    note_input(t, ud, value, error);
    gfl_value *e = gfl_value_error(GFL_EIO, "OSError", "Boom", "inner.lua:3");
    cr_assert_eq(gfl_task_fail(t, e), 0);
    gfl_value_unref(e);
}

/* Awaits c->other; then re-raises (pc 1) or, with number 1, recovers. */
static void await_then_reraise_or_recover(gfl_task *t, void *ud, gfl_value *value, gfl_value *error)
{
    struct coro *c = ud;
    bool recover = c->number == 1;
    note_input(t, c, value, error);
    if (c->pc++ == 0) {
        cr_assert_eq(gfl_task_await(t, c->awaits ? c->awaits : gfl_task_future(c->other)), 0);
        return;
    }
    if (error && !recover) {
        cr_assert_eq(gfl_task_fail(t, error), 0);
        return;
    }
    gfl_value *s = gfl_value_string("recovered", 9);
    gfl_task_return(t, s);
    gfl_value_unref(s);
}

TASK_TEST(error_propagates_through_an_await)
{
    struct handler_log log = {0};
    gfl_loop_set_exception_handler(loop, log_exception, &log);
    struct coro inner = {0};
    gfl_task *b = gfl_task_new(loop, raise_eio, &inner, release_coro);
    struct coro outer = {.other = b};
    gfl_task *a = gfl_task_new(loop, await_then_reraise_or_recover, &outer, release_coro);

    run_until_done(gfl_task_future(a), 20);
    cr_assert_eq(outer.error_code, GFL_EIO, "the awaiting step was thrown the error");
    cr_assert_str_eq(outer.error_message, "Boom");
    cr_assert_eq(gfl_future_state_of(gfl_task_future(b)), GFL_FUTURE_ERROR);
    cr_assert_eq(gfl_future_state_of(gfl_task_future(a)), GFL_FUTURE_ERROR);
    gfl_value *e = gfl_future_value(gfl_task_future(a));
    cr_assert_eq(gfl_value_error_code(e), GFL_EIO);
    cr_assert_str_eq(gfl_value_error_type(e), "OSError");
    cr_assert_str_eq(gfl_value_error_traceback(e), "inner.lua:3");
    gfl_task_unref(a);
    gfl_task_unref(b);
    cr_assert_eq(log.calls, 0, "both errors were retrieved (by A and by the test)");
    cr_assert_eq(inner.releases + outer.releases, 2);
}

TASK_TEST(an_error_can_be_caught)
{
    struct coro inner = {0};
    gfl_task *b = gfl_task_new(loop, raise_eio, &inner, release_coro);
    struct coro outer = {.other = b, .number = 1};
    gfl_task *a = gfl_task_new(loop, await_then_reraise_or_recover, &outer, release_coro);
    run_until_done(gfl_task_future(a), 20);
    const char *text = NULL;
    cr_assert_eq(gfl_value_get_bytes(gfl_future_value(gfl_task_future(a)), &text, NULL), 0);
    cr_assert_str_eq(text, "recovered");
    gfl_task_unref(a);
    gfl_task_unref(b);
}

TASK_TEST(never_retrieved_task_error_is_reported)
{
    struct handler_log log = {0};
    gfl_loop_set_exception_handler(loop, log_exception, &log);
    struct coro c = {0};
    gfl_task *t = gfl_task_new(loop, raise_eio, &c, release_coro);
    run_until_done(gfl_task_future(t), 5);
    cr_assert_eq(log.calls, 0);
    gfl_task_unref(t);
    cr_assert_eq(log.calls, 1);
    cr_assert_str_eq(log.message, "Task exception was never retrieved");
    cr_assert_eq(log.error_code, GFL_EIO);
}

/* ---- bare yields interleave with call_soon like asyncio's ---- */

#define TRACE_MAX 32
static char trace[TRACE_MAX][8];
static int ntrace;

static void trace_add(const char *what)
{
    cr_assert_lt(ntrace, TRACE_MAX);
    snprintf(trace[ntrace++], sizeof trace[0], "%s", what);
}

static void yield_three_times(gfl_task *t, void *ud, gfl_value *value, gfl_value *error)
{
    struct coro *c = ud;
    note_input(t, c, value, error);
    cr_assert_eq(gfl_value_type_of(value), GFL_VALUE_NIL, "a bare yield resumes with nil");
    char name[8];
    snprintf(name, sizeof name, "T%d", c->pc);
    trace_add(name);
    if (c->pc++ == 3)
        return_int(t, 0);
    /* else: call nothing -> bare yield */
}

static void soon_chain(void *arg)
{
    int *left = arg;
    char name[8];
    snprintf(name, sizeof name, "S%d", *left);
    trace_add(name);
    if (--*left > 0)
        gfl_call_soon(loop, soon_chain, arg);
}

TASK_TEST(bare_yield_steps_again_next_iteration)
{
    ntrace = 0;
    struct coro c = {0};
    gfl_task *t = gfl_task_new(loop, yield_three_times, &c, release_coro);
    int left = 3;
    gfl_call_soon(loop, soon_chain, &left);
    run_until_done(gfl_task_future(t), 10);
    const char *expected[] = {"T0", "S3", "T1", "S2", "T2", "S1", "T3"};
    cr_assert_eq(ntrace, 7);
    for (int i = 0; i < 7; i++)
        cr_assert_str_eq(trace[i], expected[i], "trace[%d]", i);
    gfl_task_unref(t);
}

/* ---- cancellation ---- */

TASK_TEST(cancel_mid_await_cancels_the_awaited_future)
{
    gfl_future *f = gfl_future_new(loop);
    struct coro c = {.awaits = f};
    gfl_task *t = gfl_task_new(loop, await_then_reraise_or_recover, &c, release_coro);
    run_iterations(1);
    cr_assert_eq(c.steps, 1, "now awaiting");
    cr_assert_eq(gfl_task_cancel(t, "bye"), 1);
    cr_assert_eq(gfl_future_state_of(f), GFL_FUTURE_CANCELLED, "the awaited future is cancelled at once");
    cr_assert_str_eq(gfl_value_error_message(gfl_future_value(f)), "bye");
    cr_assert_eq(gfl_future_state_of(gfl_task_future(t)), GFL_FUTURE_PENDING, "the task ends in its step");
    run_until_done(gfl_task_future(t), 5);
    cr_assert_eq(c.steps, 2);
    cr_assert_eq(c.error_code, GFL_ECANCELED);
    cr_assert_str_eq(c.error_type, "CancelledError");
    cr_assert_str_eq(c.error_message, "bye");
    cr_assert_eq(gfl_future_state_of(gfl_task_future(t)), GFL_FUTURE_CANCELLED);
    gfl_value *v = gfl_future_value(gfl_task_future(t));
    cr_assert_eq(gfl_value_error_code(v), GFL_ECANCELED);
    cr_assert_str_eq(gfl_value_error_type(v), "CancelledError");
    cr_assert_eq(gfl_task_cancel(t, NULL), 0, "done");
    cr_assert_eq(c.releases, 1);
    gfl_task_unref(t);
    gfl_future_unref(f);
}

TASK_TEST(cancellation_caught_by_the_coroutine_returns_normally)
{
    gfl_future *f = gfl_future_new(loop);
    struct coro c = {.awaits = f, .number = 1 /* recover */};
    gfl_task *t = gfl_task_new(loop, await_then_reraise_or_recover, &c, release_coro);
    run_iterations(1);
    cr_assert_eq(gfl_task_cancel(t, NULL), 1);
    run_until_done(gfl_task_future(t), 5);
    cr_assert_eq(c.error_code, GFL_ECANCELED, "the coroutine saw the CancelledError");
    cr_assert_str_eq(c.error_message, "cancelled");
    cr_assert_eq(gfl_future_state_of(gfl_task_future(t)), GFL_FUTURE_RESULT,
                 "asyncio: a coroutine that catches the cancellation and returns is not cancelled");
    gfl_task_unref(t);
    gfl_future_unref(f);
}

/* Returns 5 unless thrown an error, which it re-raises. */
static void return_five_or_reraise(gfl_task *t, void *ud, gfl_value *value, gfl_value *error)
{
    note_input(t, ud, value, error);
    if (error)
        gfl_task_fail(t, error);
    else
        return_int(t, 5);
}

/* Catches anything and returns 5. */
static void always_return_five(gfl_task *t, void *ud, gfl_value *value, gfl_value *error)
{
    note_input(t, ud, value, error);
    return_int(t, 5);
}

TASK_TEST(cancel_before_the_first_step)
{
    struct coro c = {0};
    gfl_task *t = gfl_task_new(loop, return_five_or_reraise, &c, release_coro);
    cr_assert_eq(gfl_task_cancel(t, "early"), 1);
    run_until_done(gfl_task_future(t), 5);
    cr_assert_eq(c.steps, 1);
    cr_assert_eq(c.error_code, GFL_ECANCELED, "the first step is thrown the CancelledError");
    cr_assert_str_eq(c.error_message, "early");
    cr_assert_eq(gfl_future_state_of(gfl_task_future(t)), GFL_FUTURE_CANCELLED);
    cr_assert_str_eq(gfl_value_error_message(gfl_future_value(gfl_task_future(t))), "early");
    gfl_task_unref(t);
}

TASK_TEST(cancel_before_the_first_step_caught)
{
    struct coro c = {0};
    gfl_task *t = gfl_task_new(loop, always_return_five, &c, release_coro);
    cr_assert_eq(gfl_task_cancel(t, NULL), 1);
    run_until_done(gfl_task_future(t), 5);
    cr_assert_eq(c.error_code, GFL_ECANCELED);
    cr_assert_eq(result_int(t), 5, "must_cancel was consumed when the error was thrown");
    gfl_task_unref(t);
}

/* Cancels itself, then (by pc) returns, awaits, or yields. */
static void cancel_self_then(gfl_task *t, void *ud, gfl_value *value, gfl_value *error)
{
    struct coro *c = ud;
    note_input(t, c, value, error);
    if (c->steps > 1) { /* the step after the cancellation */
        if (error)
            gfl_task_fail(t, error);
        else
            return_int(t, 1);
        return;
    }
    cr_assert_eq(gfl_task_cancel(t, "self"), 1);
    switch (c->pc) {
    case 0:
        return_int(t, 5);
        break;
    case 1:
        gfl_task_await(t, c->awaits);
        break;
    case 2:
        break; /* bare yield */
    }
}

TASK_TEST(cancel_during_the_final_step_wins)
{
    struct coro c = {.pc = 0};
    gfl_task *t = gfl_task_new(loop, cancel_self_then, &c, release_coro);
    run_until_done(gfl_task_future(t), 5);
    cr_assert_eq(c.steps, 1);
    cr_assert_eq(gfl_future_state_of(gfl_task_future(t)), GFL_FUTURE_CANCELLED,
                 "asyncio: returning after cancel() was requested still cancels");
    cr_assert_str_eq(gfl_value_error_message(gfl_future_value(gfl_task_future(t))), "self");
    cr_assert_eq(c.releases, 1);
    gfl_task_unref(t);
}

TASK_TEST(cancel_during_a_step_cancels_what_it_then_awaits)
{
    gfl_future *f = gfl_future_new(loop);
    struct coro c = {.pc = 1, .awaits = f};
    gfl_task *t = gfl_task_new(loop, cancel_self_then, &c, release_coro);
    run_until_done(gfl_task_future(t), 5);
    cr_assert_eq(gfl_future_state_of(f), GFL_FUTURE_CANCELLED);
    cr_assert_eq(c.steps, 2);
    cr_assert_eq(c.error_code, GFL_ECANCELED);
    cr_assert_eq(gfl_future_state_of(gfl_task_future(t)), GFL_FUTURE_CANCELLED);
    gfl_task_unref(t);
    gfl_future_unref(f);
}

TASK_TEST(cancel_during_a_step_then_yield_throws_next_step)
{
    struct coro c = {.pc = 2};
    gfl_task *t = gfl_task_new(loop, cancel_self_then, &c, release_coro);
    run_until_done(gfl_task_future(t), 5);
    cr_assert_eq(c.steps, 2);
    cr_assert_eq(c.error_code, GFL_ECANCELED);
    cr_assert_str_eq(c.error_message, "self");
    cr_assert_eq(gfl_future_state_of(gfl_task_future(t)), GFL_FUTURE_CANCELLED);
    gfl_task_unref(t);
}

TASK_TEST(cancel_propagates_down_an_await_chain)
{
    gfl_future *f = gfl_future_new(loop);
    struct coro inner = {.awaits = f};
    gfl_task *b = gfl_task_new(loop, await_then_reraise_or_recover, &inner, release_coro);
    struct coro outer = {.other = b};
    gfl_task *a = gfl_task_new(loop, await_then_reraise_or_recover, &outer, release_coro);
    run_iterations(2);
    cr_assert_eq(inner.steps + outer.steps, 2, "both awaiting");
    cr_assert_eq(gfl_task_cancel(a, "down"), 1);
    cr_assert_eq(gfl_future_state_of(f), GFL_FUTURE_CANCELLED, "cancel reached the innermost future");
    run_until_done(gfl_task_future(a), 10);
    cr_assert_eq(gfl_future_state_of(gfl_task_future(b)), GFL_FUTURE_CANCELLED);
    cr_assert_eq(gfl_future_state_of(gfl_task_future(a)), GFL_FUTURE_CANCELLED);
    cr_assert_str_eq(inner.error_message, "down");
    cr_assert_eq(outer.error_code, GFL_ECANCELED);
    gfl_task_unref(a);
    gfl_task_unref(b);
    gfl_future_unref(f);
}

TASK_TEST(cancelling_the_task_future_cancels_the_task)
{
    gfl_future *f = gfl_future_new(loop);
    struct coro c = {.awaits = f};
    gfl_task *t = gfl_task_new(loop, await_then_reraise_or_recover, &c, release_coro);
    run_iterations(1);
    cr_assert_eq(gfl_future_cancel(gfl_task_future(t), "via future"), 1);
    cr_assert_eq(gfl_future_state_of(f), GFL_FUTURE_CANCELLED);
    run_until_done(gfl_task_future(t), 5);
    cr_assert_eq(gfl_future_state_of(gfl_task_future(t)), GFL_FUTURE_CANCELLED);
    cr_assert_str_eq(c.error_message, "via future");
    /* A task's outcome comes from its coroutine only. */
    gfl_task *u = gfl_task_new(loop, return_seven, &(struct coro){0}, NULL);
    cr_assert_eq(gfl_future_set_result(gfl_task_future(u), gfl_value_nil()), GFL_EPERM);
    gfl_value *e = gfl_value_error(GFL_EIO, NULL, NULL, NULL);
    cr_assert_eq(gfl_future_set_error(gfl_task_future(u), e), GFL_EPERM);
    gfl_value_unref(e);
    gfl_task_unref(u);
    gfl_task_unref(t);
    gfl_future_unref(f);
}

static void raise_ecanceled_other_type(gfl_task *t, void *ud, gfl_value *value, gfl_value *error)
{
    note_input(t, ud, value, error);
    gfl_value *e = gfl_value_error(GFL_ECANCELED, "Whatever", "gave up", NULL);
    gfl_task_fail(t, e);
    gfl_value_unref(e);
}

TASK_TEST(raising_a_cancellation_ends_cancelled)
{
    struct coro c = {0};
    gfl_task *t = gfl_task_new(loop, raise_ecanceled_other_type, &c, release_coro);
    run_until_done(gfl_task_future(t), 5);
    cr_assert_eq(gfl_future_state_of(gfl_task_future(t)), GFL_FUTURE_CANCELLED);
    gfl_value *v = gfl_future_value(gfl_task_future(t));
    cr_assert_str_eq(gfl_value_error_type(v), "CancelledError");
    cr_assert_str_eq(gfl_value_error_message(v), "gave up");
    gfl_task_unref(t);
}

/* ---- awaiting a future that is already done ---- */

TASK_TEST(awaiting_a_done_future_resumes_next_iteration)
{
    gfl_future *f = gfl_future_new(loop);
    gfl_value *v = gfl_value_int(11);
    gfl_future_set_result(f, v);
    gfl_value_unref(v);
    struct coro c = {.awaits = f, .number = 1};
    gfl_task *t = gfl_task_new(loop, await_then_reraise_or_recover, &c, release_coro);
    run_iterations(1);
    cr_assert_eq(c.steps, 1);
    run_iterations(1);
    cr_assert_eq(c.steps, 2);
    cr_assert(c.got_value);
    cr_assert_eq(c.number, 11);
    gfl_task_unref(t);
    gfl_future_unref(f);
}

static void note_task_done(gfl_future *f, void *arg)
{
    *(int *)arg = gfl_future_state_of(f);
}

TASK_TEST(task_future_done_callbacks)
{
    int seen = -1;
    struct coro c = {0};
    gfl_task *t = gfl_task_new(loop, return_seven, &c, release_coro);
    cr_assert_eq(gfl_future_add_done_callback(gfl_task_future(t), note_task_done, &seen), 0);
    gfl_task_unref(t); /* fire and forget: the scheduled step keeps it alive */
    run_iterations(1);
    cr_assert_eq(seen, -1, "the done callback waits for the next iteration");
    run_iterations(1);
    cr_assert_eq(seen, GFL_FUTURE_RESULT);
    cr_assert_eq(c.releases, 1);
}

/* ---- misuse ---- */

static gfl_future *other_loop_future;
static int await_codes[6];

static void misuse_inside(gfl_task *t, void *ud, gfl_value *value, gfl_value *error)
{
    struct coro *c = ud;
    note_input(t, c, value, error);
    await_codes[0] = gfl_task_await(t, gfl_task_future(t));    /* itself */
    await_codes[1] = gfl_task_await(t, other_loop_future);     /* another loop's */
    await_codes[2] = gfl_task_await(c->other, c->awaits);      /* another task's step */
    await_codes[3] = gfl_task_fail(t, gfl_value_nil());        /* not an error */
    return_int(t, 1);
    await_codes[4] = gfl_task_await(t, c->awaits);             /* a second outcome */
    await_codes[5] = gfl_task_return(t, gfl_value_nil());
}

TASK_TEST(misuse)
{
    gfl_future *f = gfl_future_new(loop);
    gfl_value *e = gfl_value_error(GFL_EIO, NULL, NULL, NULL);

    cr_assert_null(gfl_task_new(NULL, return_seven, NULL, NULL));
    cr_assert_null(gfl_task_new(loop, NULL, NULL, NULL));
    cr_assert_null(gfl_task_ref(NULL));
    gfl_task_unref(NULL);
    cr_assert_null(gfl_task_future(NULL));
    cr_assert_null(gfl_task_current(NULL));
    cr_assert_eq(gfl_task_cancel(NULL, NULL), GFL_EINVAL);
    cr_assert_eq(gfl_task_await(NULL, f), GFL_EINVAL);
    cr_assert_eq(gfl_task_return(NULL, gfl_value_nil()), GFL_EINVAL);
    cr_assert_eq(gfl_task_fail(NULL, e), GFL_EINVAL);

    struct coro idle = {0};
    gfl_task *other = gfl_task_new(loop, return_seven, &idle, NULL);
    cr_assert_eq(gfl_task_await(other, NULL), GFL_EINVAL);
    cr_assert_eq(gfl_task_return(other, NULL), GFL_EINVAL);
    cr_assert_eq(gfl_task_fail(other, NULL), GFL_EINVAL);
    /* Outside a step. */
    cr_assert_eq(gfl_task_await(other, f), GFL_ESTATE);
    cr_assert_eq(gfl_task_return(other, gfl_value_nil()), GFL_ESTATE);
    cr_assert_eq(gfl_task_fail(other, e), GFL_ESTATE);

    gfl_loop *second = gfl_loop_new(NULL);
    other_loop_future = gfl_future_new(second);
    struct coro c = {.awaits = f, .other = other};
    gfl_task *t = gfl_task_new(loop, misuse_inside, &c, release_coro);
    run_until_done(gfl_task_future(t), 5);
    cr_assert_eq(await_codes[0], GFL_EINVAL, "awaiting itself");
    cr_assert_eq(await_codes[1], GFL_EINVAL, "another loop's future");
    cr_assert_eq(await_codes[2], GFL_ESTATE, "only inside the task's own step");
    cr_assert_eq(await_codes[3], GFL_ETYPE);
    cr_assert_eq(await_codes[4], GFL_ESTATE, "at most one outcome per step");
    cr_assert_eq(await_codes[5], GFL_ESTATE);
    cr_assert_eq(result_int(t), 1);

    gfl_future_unref(other_loop_future);
    gfl_loop_free(second);
    gfl_task_unref(t);
    gfl_task_unref(other);
    gfl_future_unref(f);
    gfl_value_unref(e);
}

/* ---- many tasks ---- */

/* Awaits the shared future, then returns its value plus this task's number. */
static void add_mine(gfl_task *t, void *ud, gfl_value *value, gfl_value *error)
{
    struct coro *c = ud;
    cr_assert_null(error);
    if (c->pc++ == 0) {
        gfl_task_await(t, c->awaits);
        return;
    }
    int64_t base = 0;
    gfl_value_get_int(value, &base);
    return_int(t, base + c->number);
}

TASK_TEST(a_thousand_tasks)
{
    enum { N = 1000 };
    static struct coro coros[N];
    static gfl_task *tasks[N];
    gfl_future *start = gfl_future_new(loop);
    for (int i = 0; i < N; i++) {
        coros[i] = (struct coro){.awaits = start, .number = i};
        tasks[i] = gfl_task_new(loop, add_mine, &coros[i], release_coro);
        cr_assert_not_null(tasks[i]);
    }
    cr_assert_eq(gfl_loop_run_once(loop, 0), N, "every first step in one iteration");
    gfl_value *v = gfl_value_int(1000000);
    gfl_future_set_result(start, v);
    gfl_value_unref(v);
    cr_assert_eq(gfl_loop_run_once(loop, 0), N, "every second step in the next");
    for (int i = 0; i < N; i++) {
        cr_assert_eq(result_int(tasks[i]), 1000000 + i);
        cr_assert_eq(coros[i].releases, 1);
        gfl_task_unref(tasks[i]);
    }
    gfl_future_unref(start);
}

/* Task i awaits task i-1; task 0 awaits a future. */
static void await_previous(gfl_task *t, void *ud, gfl_value *value, gfl_value *error)
{
    struct coro *c = ud;
    cr_assert_null(error);
    if (c->pc++ == 0) {
        gfl_task_await(t, c->other ? gfl_task_future(c->other) : c->awaits);
        return;
    }
    int64_t n = 0;
    gfl_value_get_int(value, &n);
    return_int(t, n + 1);
}

TASK_TEST(a_chain_of_a_thousand_tasks)
{
    enum { N = 1000 };
    static struct coro coros[N];
    static gfl_task *tasks[N];
    gfl_future *start = gfl_future_new(loop);
    for (int i = 0; i < N; i++) {
        coros[i] = (struct coro){.awaits = start, .other = i ? tasks[i - 1] : NULL};
        tasks[i] = gfl_task_new(loop, await_previous, &coros[i], release_coro);
    }
    /* Only the last one is kept: each task is kept alive by the next's
     * await, and the first by the start future. */
    for (int i = 0; i < N - 1; i++)
        gfl_task_unref(tasks[i]);
    run_iterations(1);
    gfl_value *zero = gfl_value_int(0);
    gfl_future_set_result(start, zero);
    gfl_value_unref(zero);
    run_until_done(gfl_task_future(tasks[N - 1]), 3 * N);
    cr_assert_eq(result_int(tasks[N - 1]), N);
    for (int i = 0; i < N; i++)
        cr_assert_eq(coros[i].releases, 1);
    gfl_task_unref(tasks[N - 1]);
    gfl_future_unref(start);
}

/* ---- lifetimes: nothing leaks, release runs exactly once ---- */

TASK_TEST(loop_freed_before_the_first_step)
{
    struct coro c = {0};
    gfl_task *t = gfl_task_new(loop, return_seven, &c, release_coro);
    gfl_task_unref(t); /* the scheduled step still holds it */
    cr_assert_eq(c.releases, 0);
    gfl_loop_free(loop);
    loop = NULL;
    cr_assert_eq(c.steps, 0);
    cr_assert_eq(c.releases, 1, "the dropped step released the task");
}

TASK_TEST(loop_freed_while_a_task_awaits)
{
    struct handler_log log = {0};
    gfl_loop_set_exception_handler(loop, log_exception, &log);
    gfl_future *f = gfl_future_new(loop);
    struct coro c = {.awaits = f};
    gfl_task *t = gfl_task_new(loop, await_then_reraise_or_recover, &c, release_coro);
    run_iterations(1);
    gfl_loop_free(loop);
    loop = NULL;
    cr_assert_eq(gfl_future_state_of(gfl_task_future(t)), GFL_FUTURE_PENDING);
    gfl_task_unref(t); /* f's waiter list still holds it */
    cr_assert_eq(c.releases, 0);
    gfl_future_unref(f);
    cr_assert_eq(c.releases, 1);
    cr_assert_eq(log.calls, 0);
}

TASK_TEST(future_completed_after_the_loop_closed)
{
    gfl_future *f = gfl_future_new(loop);
    struct coro c = {.awaits = f};
    gfl_task *t = gfl_task_new(loop, await_then_reraise_or_recover, &c, release_coro);
    run_iterations(1);
    gfl_loop_free(loop);
    loop = NULL;
    cr_assert_eq(gfl_future_set_result(f, gfl_value_nil()), GFL_ECLOSED, "the loop is closed");
    cr_assert_eq(gfl_task_cancel(t, NULL), 1);
    cr_assert_eq(c.steps, 1);
    gfl_future_unref(f);
    gfl_task_unref(t);
    cr_assert_eq(c.releases, 1);
}

TASK_TEST(awaited_future_dropped_by_everyone)
{
    struct handler_log log = {0};
    gfl_loop_set_exception_handler(loop, log_exception, &log);
    gfl_future *f = gfl_future_new(loop);
    struct coro c = {.awaits = f};
    gfl_task *t = gfl_task_new(loop, await_then_reraise_or_recover, &c, release_coro);
    run_iterations(1);
    /* Nothing can ever complete f now; the task waits on nothing but can
     * still be cancelled. */
    gfl_future_unref(f);
    c.awaits = NULL;
    run_iterations(2);
    cr_assert_eq(c.steps, 1);
    cr_assert_eq(gfl_task_cancel(t, "orphan"), 1);
    run_until_done(gfl_task_future(t), 5);
    cr_assert_eq(gfl_future_state_of(gfl_task_future(t)), GFL_FUTURE_CANCELLED);
    cr_assert_str_eq(c.error_message, "orphan");
    gfl_task_unref(t);
    cr_assert_eq(log.calls, 0);
}

TASK_TEST(pending_task_destroyed_is_reported)
{
    struct handler_log log = {0};
    gfl_loop_set_exception_handler(loop, log_exception, &log);
    gfl_future *f = gfl_future_new(loop);
    struct coro c = {.awaits = f};
    gfl_task *t = gfl_task_new(loop, await_then_reraise_or_recover, &c, release_coro);
    run_iterations(1);
    gfl_task_unref(t);   /* f still holds it */
    cr_assert_eq(log.calls, 0);
    gfl_future_unref(f); /* now nothing does */
    cr_assert_eq(log.calls, 1);
    cr_assert_str_eq(log.message, "Task was destroyed but it is pending!");
    cr_assert_eq(c.releases, 1);
}
