/* The loop's scheduling semantics: asyncio's, exactly. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include "globeflower.h"
#include "internal.h" /* white-box: timer heap compaction */

#define MAX_EVENTS 64

static gfl_loop *loop;
static int events[MAX_EVENTS];
static int nevents;

static void setup(void)
{
    loop = gfl_loop_new(NULL);
    cr_assert_not_null(loop);
    nevents = 0;
}

static void teardown(void)
{
    if (loop)
        cr_assert_eq(gfl_loop_free(loop), 0);
    loop = NULL;
}

static void record(void *arg)
{
    cr_assert_lt(nevents, MAX_EVENTS);
    events[nevents++] = (int)(intptr_t)arg;
}

#define TAG(n) ((void *)(intptr_t)(n))

static void assert_events(const int *expected, int n)
{
    cr_assert_eq(nevents, n, "expected %d events, got %d", n, nevents);
    for (int i = 0; i < n; i++)
        cr_assert_eq(events[i], expected[i], "event %d: expected %d, got %d", i, expected[i], events[i]);
}

/* Runs iterations (each bounded) until `n` events were recorded. */
static void run_until_events(int n, double max_seconds)
{
    double deadline = gfl_loop_time(loop) + max_seconds;
    while (nevents < n && gfl_loop_time(loop) < deadline)
        cr_assert_geq(gfl_loop_run_once(loop, 0.05), 0);
}

TestSuite(loop, .init = setup, .fini = teardown);

Test(loop, call_soon_runs_in_fifo_order)
{
    for (int i = 0; i < 10; i++)
        cr_assert_gt(gfl_call_soon(loop, record, TAG(i)), 0);
    cr_assert_eq(gfl_loop_run_once(loop, 0), 10);
    int expected[10] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    assert_events(expected, 10);
}

static void schedule_child(void *arg)
{
    record(arg);
    cr_assert_gt(gfl_call_soon(loop, record, TAG((int)(intptr_t)arg + 100)), 0);
}

Test(loop, callbacks_scheduled_while_running_wait_for_next_iteration)
{
    gfl_call_soon(loop, schedule_child, TAG(1));
    gfl_call_soon(loop, schedule_child, TAG(2));
    cr_assert_eq(gfl_loop_run_once(loop, 0), 2);
    int first[] = {1, 2};
    assert_events(first, 2);
    cr_assert_eq(gfl_loop_run_once(loop, 0), 2);
    int both[] = {1, 2, 101, 102};
    assert_events(both, 4);
    cr_assert_eq(gfl_loop_run_once(loop, 0), 0);
}

Test(loop, timers_fire_by_deadline_then_insertion_order)
{
    double now = gfl_loop_time(loop);
    /* All already due, so nothing sleeps; order must still be exact. */
    gfl_call_at(loop, now - 1.0, record, TAG(3));
    gfl_call_at(loop, now - 3.0, record, TAG(1));
    gfl_call_at(loop, now - 2.0, record, TAG(2));
    gfl_call_at(loop, now - 2.0, record, TAG(22)); /* same deadline: inserted later */
    gfl_call_at(loop, now - 3.0, record, TAG(11));
    cr_assert_eq(gfl_loop_run_once(loop, 0), 5);
    int expected[] = {1, 11, 2, 22, 3};
    assert_events(expected, 5);
}

Test(loop, due_timers_run_after_callbacks_already_ready)
{
    gfl_call_at(loop, gfl_loop_time(loop) - 1, record, TAG(2));
    gfl_call_soon(loop, record, TAG(1));
    gfl_loop_run_once(loop, 0);
    int expected[] = {1, 2};
    assert_events(expected, 2);
}

Test(loop, call_later_waits_for_its_delay)
{
    double start = gfl_loop_time(loop);
    gfl_call_later(loop, 0.05, record, TAG(2));
    gfl_call_later(loop, 0.02, record, TAG(1));
    run_until_events(2, 5.0);
    int expected[] = {1, 2};
    assert_events(expected, 2);
    cr_assert_geq(gfl_loop_time(loop) - start, 0.05);
}

Test(loop, blocking_iteration_sleeps_until_the_next_timer)
{
    double start = gfl_loop_time(loop);
    gfl_call_later(loop, 0.03, record, TAG(1));
    /* A negative timeout blocks until something happens: the timer. */
    for (int i = 0; i < 10 && nevents == 0; i++)
        gfl_loop_run_once(loop, -1);
    cr_assert_eq(nevents, 1);
    cr_assert_geq(gfl_loop_time(loop) - start, 0.03);
}

Test(loop, run_once_zero_never_blocks)
{
    gfl_call_later(loop, 30.0, record, TAG(1));
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    gfl_add_reader(loop, fds[0], record, TAG(2));
    double start = gfl_loop_time(loop);
    for (int i = 0; i < 1000; i++)
        cr_assert_eq(gfl_loop_run_once(loop, 0), 0);
    /* Generous: 1000 non-blocking iterations are far below a second even
     * under valgrind; one blocking poll would be 30 s. */
    cr_assert_lt(gfl_loop_time(loop) - start, 5.0);
    cr_assert_eq(nevents, 0);
    gfl_remove_reader(loop, fds[0]);
    close(fds[0]);
    close(fds[1]);
}

Test(loop, cancelled_soon_and_later_handles_never_run)
{
    gfl_handle a = gfl_call_soon(loop, record, TAG(1));
    gfl_handle b = gfl_call_soon(loop, record, TAG(2));
    gfl_handle c = gfl_call_later(loop, 0.0, record, TAG(3));
    gfl_handle d = gfl_call_at(loop, gfl_loop_time(loop) - 1, record, TAG(4));
    cr_assert_eq(gfl_handle_is_pending(loop, a), 1);
    cr_assert_eq(gfl_handle_is_pending(loop, c), 1);
    cr_assert_eq(gfl_handle_cancel(loop, a), 0);
    cr_assert_eq(gfl_handle_cancel(loop, c), 0);
    cr_assert_eq(gfl_handle_cancel(loop, a), GFL_ENOENT, "second cancel reports nothing to cancel");
    cr_assert_eq(gfl_handle_is_pending(loop, a), 0);
    for (int i = 0; i < 3; i++)
        gfl_loop_run_once(loop, 0);
    int expected[] = {2, 4};
    assert_events(expected, 2);
    /* Handles whose callbacks ran name nothing any more. */
    cr_assert_eq(gfl_handle_cancel(loop, b), GFL_ENOENT);
    cr_assert_eq(gfl_handle_cancel(loop, d), GFL_ENOENT);
    cr_assert_eq(gfl_handle_is_pending(loop, b), 0);
}

Test(loop, stale_handle_never_names_a_reused_slot)
{
    gfl_handle old = gfl_call_soon(loop, record, TAG(1));
    gfl_loop_run_once(loop, 0);
    /* The freed slot is reused by the next callback. */
    gfl_handle fresh = gfl_call_soon(loop, record, TAG(2));
    cr_assert_neq(old, fresh);
    cr_assert_eq(old & 0xffffffff, fresh & 0xffffffff, "slot reused");
    cr_assert_eq(gfl_handle_cancel(loop, old), GFL_ENOENT);
    cr_assert_eq(gfl_handle_is_pending(loop, fresh), 1);
    gfl_loop_run_once(loop, 0);
    int expected[] = {1, 2};
    assert_events(expected, 2);
    /* Garbage handles are just "nothing". */
    cr_assert_eq(gfl_handle_cancel(loop, 0), GFL_ENOENT);
    cr_assert_eq(gfl_handle_cancel(loop, -5), GFL_ENOENT);
    cr_assert_eq(gfl_handle_cancel(loop, INT64_MAX), GFL_ENOENT);
}

static gfl_handle self_handle;
static void cancel_self(void *arg)
{
    (void)arg;
    /* Cancelling a callback while it runs is a no-op, as in asyncio. */
    cr_assert_eq(gfl_handle_cancel(loop, self_handle), GFL_ENOENT);
    record(TAG(1));
}

Test(loop, cancel_from_inside_own_callback)
{
    self_handle = gfl_call_soon(loop, cancel_self, NULL);
    gfl_loop_run_once(loop, 0);
    cr_assert_eq(nevents, 1);
}

static gfl_handle victim;
static void cancel_victim(void *arg)
{
    (void)arg;
    cr_assert_eq(gfl_handle_cancel(loop, victim), 0);
}

Test(loop, callback_cancels_a_later_one_in_the_same_iteration)
{
    gfl_call_soon(loop, cancel_victim, NULL);
    victim = gfl_call_soon(loop, record, TAG(1));
    gfl_call_soon(loop, record, TAG(2));
    gfl_loop_run_once(loop, 0);
    int expected[] = {2};
    assert_events(expected, 1);
}

Test(loop, cancelled_timers_are_compacted)
{
    gfl_handle h[10000];
    double now = gfl_loop_time(loop);
    for (int i = 0; i < 10000; i++)
        h[i] = gfl_call_at(loop, now + 100 + i, record, TAG(i));
    for (int i = 0; i < 9000; i++)
        cr_assert_eq(gfl_handle_cancel(loop, h[i]), 0);
    /* Memory stays bounded by the live timers, not the cancelled ones. */
    cr_assert_leq(loop->ntimers, 2000);
    for (int i = 9000; i < 10000; i++)
        cr_assert_eq(gfl_handle_is_pending(loop, h[i]), 1);
    cr_assert_eq(gfl_handle_cancel(loop, h[9000]), 0);
}

static void stop_loop(void *arg)
{
    record(arg);
    gfl_loop_stop(loop);
}

Test(loop, stop_ends_run_after_the_current_iteration)
{
    gfl_call_soon(loop, stop_loop, TAG(1));
    gfl_call_soon(loop, record, TAG(2)); /* same iteration: still runs */
    gfl_call_later(loop, 0.3, record, TAG(3)); /* far enough even under valgrind */
    cr_assert_eq(gfl_loop_run(loop), 0);
    int expected[] = {1, 2};
    assert_events(expected, 2);
    cr_assert_eq(gfl_loop_is_running(loop), 0);
    /* The loop can run again; the timer is still there. */
    gfl_call_later(loop, 0.35, stop_loop, TAG(4));
    cr_assert_eq(gfl_loop_run(loop), 0);
    int all[] = {1, 2, 3, 4};
    assert_events(all, 4);
}

Test(loop, stop_before_run_runs_one_iteration)
{
    gfl_call_soon(loop, schedule_child, TAG(1));
    gfl_loop_stop(loop);
    cr_assert_eq(gfl_loop_run(loop), 0);
    int expected[] = {1};
    assert_events(expected, 1);
}

static void nested_run(void *arg)
{
    (void)arg;
    cr_assert_eq(gfl_loop_run_once(loop, 0), GFL_ESTATE);
    cr_assert_eq(gfl_loop_run(loop), GFL_ESTATE);
    cr_assert_eq(gfl_loop_is_running(loop), 1);
    cr_assert_eq(gfl_loop_free(loop), GFL_EBUSY);
    record(TAG(1));
}

Test(loop, running_loop_cannot_be_reentered_or_freed)
{
    gfl_call_soon(loop, nested_run, NULL);
    gfl_loop_run_once(loop, 0);
    cr_assert_eq(nevents, 1);
}

static const char *handled_message;
static gfl_value *handled_error;
static void capture_exception(gfl_loop *l, const char *message, gfl_value *error, void *ud)
{
    cr_assert_eq(l, loop);
    cr_assert_eq(ud, TAG(42));
    handled_message = message;
    handled_error = error ? gfl_value_ref(error) : NULL;
}

static void raising_callback(void *arg)
{
    (void)arg;
    gfl_value *err = gfl_value_error(GFL_EINVAL, "ValueError", "bad thing", "traceback line\n");
    gfl_loop_call_exception_handler(loop, "Exception in callback", err);
    gfl_value_unref(err);
    record(TAG(1));
}

Test(loop, errors_raised_by_callbacks_reach_the_exception_handler)
{
    cr_assert_eq(gfl_loop_set_exception_handler(loop, capture_exception, TAG(42)), 0);
    gfl_call_soon(loop, raising_callback, NULL);
    gfl_call_soon(loop, record, TAG(2)); /* the loop keeps running */
    gfl_loop_run_once(loop, 0);
    int expected[] = {1, 2};
    assert_events(expected, 2);
    cr_assert_str_eq(handled_message, "Exception in callback");
    cr_assert_not_null(handled_error);
    cr_assert_str_eq(gfl_value_error_type(handled_error), "ValueError");
    cr_assert_str_eq(gfl_value_error_message(handled_error), "bad thing");
    gfl_value_unref(handled_error);
    /* Restoring the default handler is allowed. */
    cr_assert_eq(gfl_loop_set_exception_handler(loop, NULL, NULL), 0);
}

static double slow_seconds;
static gfl_callback slow_cb;
static void capture_slow(gfl_loop *l, gfl_callback cb, void *arg, double seconds, void *ud)
{
    (void)l;
    (void)arg;
    (void)ud;
    slow_cb = cb;
    slow_seconds = seconds;
}

static void sleepy(void *arg)
{
    (void)arg;
    struct timespec ts = {0, 30 * 1000 * 1000};
    nanosleep(&ts, NULL);
}

Test(loop, debug_mode_reports_slow_callbacks_with_their_duration)
{
    cr_assert_eq(gfl_loop_get_debug(loop), 0);
    cr_assert_eq(gfl_loop_set_debug(loop, 1), 0);
    cr_assert_eq(gfl_loop_get_debug(loop), 1);
    cr_assert_eq(gfl_loop_set_slow_callback_duration(loop, 0.01), 0);
    cr_assert_eq(gfl_loop_set_slow_callback_handler(loop, capture_slow, NULL), 0);
    gfl_call_soon(loop, record, TAG(1)); /* fast: not reported */
    gfl_loop_run_once(loop, 0);
    cr_assert_eq(slow_seconds, 0);
    gfl_call_soon(loop, sleepy, NULL);
    gfl_loop_run_once(loop, 0);
    cr_assert_eq(slow_cb, sleepy);
    cr_assert_geq(slow_seconds, 0.03);
}

Test(loop, debug_mode_from_options)
{
    gfl_loop_options opts = {.size = sizeof opts, .debug = 1, .slow_callback_duration = 0.5};
    gfl_loop *l = gfl_loop_new(&opts);
    cr_assert_not_null(l);
    cr_assert_eq(gfl_loop_get_debug(l), 1);
    cr_assert_eq(gfl_loop_free(l), 0);
}

static void *current_in_thread(void *arg)
{
    (void)arg;
    return gfl_loop_current();
}

Test(loop, current_loop_is_per_thread)
{
    cr_assert_null(gfl_loop_current());
    cr_assert_eq(gfl_loop_set_current(loop), 0);
    cr_assert_eq(gfl_loop_current(), loop);
    pthread_t t;
    void *seen = TAG(1);
    pthread_create(&t, NULL, current_in_thread, NULL);
    pthread_join(t, &seen);
    cr_assert_null(seen);
    /* Freeing the loop clears it. */
    cr_assert_eq(gfl_loop_free(loop), 0);
    loop = NULL;
    cr_assert_null(gfl_loop_current());
}

Test(loop, references_keep_a_closed_loop_safe_to_ask)
{
    gfl_loop *extra = gfl_loop_ref(loop);
    cr_assert_eq(extra, loop);
    gfl_call_soon(loop, record, TAG(1));
    cr_assert_eq(gfl_loop_free(loop), 0); /* closes now, memory stays */
    cr_assert_eq(gfl_loop_is_closed(extra), 1);
    cr_assert_eq(gfl_call_soon(extra, record, TAG(2)), GFL_ECLOSED);
    cr_assert_eq(gfl_loop_run_once(extra, 0), GFL_ECLOSED);
    cr_assert_eq(gfl_loop_unref(extra), 0);
    loop = NULL;
    cr_assert_eq(nevents, 0, "dropped callbacks never run");
}

Test(loop, last_unref_closes)
{
    gfl_loop *l = gfl_loop_new(NULL);
    gfl_loop *again = gfl_loop_ref(l);
    cr_assert_eq(gfl_loop_unref(l), 0);
    cr_assert_eq(gfl_loop_is_closed(again), 0);
    gfl_call_soon(again, record, TAG(1));
    cr_assert_eq(gfl_loop_unref(again), 0); /* closes and frees */
}

Test(loop, time_is_monotonic_seconds)
{
    double a = gfl_loop_time(loop);
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
    double b = gfl_loop_time(loop);
    cr_assert_gt(a, 0);
    cr_assert_geq(b - a, 0.009);
    cr_assert_lt(b - a, 5.0);
}

static void *run_in_other_thread(void *arg)
{
    gfl_loop *l = arg;
    /* Not yet this thread's loop; running it makes it so. */
    if (gfl_call_soon(l, record, TAG(6)) != GFL_EWRONGTHREAD)
        return (void *)(intptr_t)-1;
    gfl_loop_run_once(l, 0);
    gfl_call_soon(l, record, TAG(7));
    return (void *)(intptr_t)gfl_loop_run_once(l, 0);
}

Test(loop, an_idle_loop_can_move_to_another_thread)
{
    /* A host may create the loop in one thread and pump it in another. */
    pthread_t t;
    void *ran;
    pthread_create(&t, NULL, run_in_other_thread, loop);
    pthread_join(t, &ran);
    cr_assert_eq((intptr_t)ran, 1);
    int expected[] = {7};
    assert_events(expected, 1);
    /* This thread is no longer the owner until it runs the loop again. */
    cr_assert_eq(gfl_call_soon(loop, record, TAG(8)), GFL_EWRONGTHREAD);
    cr_assert_eq(gfl_loop_run_once(loop, 0), 0);
    cr_assert_gt(gfl_call_soon(loop, record, TAG(8)), 0);
}

static void do_nothing(void *arg)
{
    (void)arg;
}

Test(loop, a_million_fire_and_forget_callbacks_leak_nothing)
{
    for (int round = 0; round < 10; round++) {
        for (int i = 0; i < 100000; i++)
            cr_assert_gt(gfl_call_soon(loop, do_nothing, NULL), 0);
        cr_assert_eq(gfl_loop_run_once(loop, 0), 100000);
    }
    /* Slots are reused: the table never grew past one round's worth. */
    cr_assert_leq(loop->slots_cap, 131072);
}

static int released[4];
static void count_release(void *arg)
{
    released[(intptr_t)arg]++;
}

Test(loop, release_runs_only_for_callbacks_that_never_run)
{
    gfl_call_soon_ex(loop, record, TAG(0), count_release);                          /* runs */
    gfl_handle h = gfl_call_soon_ex(loop, record, TAG(1), count_release);           /* cancelled */
    gfl_handle t = gfl_call_at_ex(loop, gfl_loop_time(loop) + 100, record, TAG(2), count_release);
    gfl_call_at_ex(loop, gfl_loop_time(loop) + 100, record, TAG(3), count_release); /* dropped at close */
    cr_assert_eq(gfl_handle_cancel(loop, h), 0);
    cr_assert_eq(gfl_handle_cancel(loop, t), 0);
    cr_assert_eq(released[1], 1, "released when cancelled, not later");
    cr_assert_eq(released[2], 1, "a cancelled timer is released at once");
    gfl_loop_run_once(loop, 0);
    cr_assert_eq(released[0], 0, "a callback that ran owns its argument");
    cr_assert_eq(released[3], 0);
    cr_assert_eq(gfl_loop_free(loop), 0);
    loop = NULL;
    cr_assert_eq(released[3], 1, "dropped at close");
    cr_assert_eq(released[1], 1, "never twice");
    cr_assert_eq(nevents, 1);
}

static int polls_before, polls_after;
static void count_before(gfl_loop *l, void *ud)
{
    cr_assert_eq(ud, TAG(9));
    cr_assert_eq(polls_before, polls_after, "hooks come in pairs");
    (void)l;
    polls_before++;
}
static void count_after(gfl_loop *l, void *ud)
{
    (void)l;
    (void)ud;
    polls_after++;
}

Test(loop, poll_hooks_surround_only_polls_that_may_block)
{
    gfl_loop_options opts = {.size = sizeof opts, .before_poll = count_before, .after_poll = count_after,
                             .poll_hook_ud = TAG(9)};
    gfl_loop *l = gfl_loop_new(&opts);
    cr_assert_not_null(l);
    gfl_loop_run_once(l, 0); /* never blocks: no hooks */
    cr_assert_eq(polls_before, 0);
    gfl_call_later(l, 0.01, do_nothing, NULL);
    gfl_loop_run_once(l, -1); /* sleeps until the timer */
    cr_assert_eq(polls_before, 1);
    cr_assert_eq(polls_after, 1);
    gfl_call_soon(l, do_nothing, NULL);
    gfl_loop_run_once(l, 1.0); /* work is ready: does not block */
    cr_assert_eq(polls_before, 1);
    cr_assert_eq(gfl_loop_free(l), 0);
}

/* ------------------------------------------------------------------ */
/* gfl_loop_run_for, interrupts, gfl_loop_acquire (ABI 1.3)            */

static int chain_left;
static void chain(void *arg)
{
    record(arg);
    if (--chain_left > 0)
        cr_assert_gt(gfl_call_soon(loop, chain, TAG((int)(intptr_t)arg + 1)), 0);
}

Test(loop, run_for_runs_until_nothing_is_ready, .init = setup, .fini = teardown)
{
    /* Ten hops, each scheduled by the previous one: one run_for runs all
     * of them (run_once would take ten calls). */
    chain_left = 10;
    cr_assert_gt(gfl_call_soon(loop, chain, TAG(1)), 0);
    cr_assert_eq(gfl_call_later(loop, 10.0, record, TAG(99)) > 0, 1);
    cr_assert_eq(gfl_loop_run_for(loop, 1.0), 10);
    cr_assert_eq(nevents, 10);
    /* Idle: one iteration that runs nothing, never waits for the timer. */
    double t0 = gfl_loop_time(loop);
    cr_assert_eq(gfl_loop_run_for(loop, 1.0), 0);
    cr_assert_lt(gfl_loop_time(loop) - t0, 0.5);
    cr_assert_eq(gfl_loop_run_for(loop, -1), GFL_EINVAL);
    cr_assert_eq(gfl_loop_run_for(NULL, 0), GFL_EINVAL);
}

static void respawn(void *arg)
{
    (void)arg;
    nevents++;
    gfl_call_soon(loop, respawn, NULL);
}

Test(loop, run_for_stops_at_its_budget, .init = setup, .fini = teardown)
{
    /* A callback that always reschedules itself would run forever. */
    cr_assert_gt(gfl_call_soon(loop, respawn, NULL), 0);
    double t0 = gfl_loop_time(loop);
    int n = gfl_loop_run_for(loop, 0.02);
    double took = gfl_loop_time(loop) - t0;
    cr_assert_gt(n, 1);
    cr_assert_geq(took, 0.02);
    cr_assert_lt(took, 2.0);
}

static int handler_calls;
static gfl_value *handler_error;
static void note_exception(gfl_loop *l, const char *message, gfl_value *error, void *ud)
{
    (void)l, (void)ud;
    cr_assert_str_eq(message, "KeyboardInterrupt in a callback");
    handler_calls++;
    handler_error = error;
}

static void interrupter(void *arg)
{
    record(arg);
    gfl_value *e = gfl_value_error(GFL_EINTR, "KeyboardInterrupt", "", NULL);
    cr_assert_eq(gfl_loop_interrupt(loop, "KeyboardInterrupt in a callback", e), 0);
    gfl_value_unref(e);
}

Test(loop, interrupt_ends_the_run_and_keeps_the_rest_queued, .init = setup, .fini = teardown)
{
    handler_calls = 0;
    cr_assert_eq(gfl_loop_set_exception_handler(loop, note_exception, NULL), 0);
    gfl_call_soon(loop, record, TAG(1));
    gfl_call_soon(loop, interrupter, TAG(2));
    gfl_call_soon(loop, record, TAG(3));
    cr_assert_eq(gfl_loop_run_once(loop, 0), GFL_EINTR);
    cr_assert_eq(handler_calls, 1);
    cr_assert_eq(nevents, 2);
    gfl_value *e = gfl_loop_take_interrupt(loop);
    cr_assert_eq(e, handler_error);
    cr_assert_str_eq(gfl_value_error_type(e), "KeyboardInterrupt");
    gfl_value_unref(e);
    cr_assert_null(gfl_loop_take_interrupt(loop), "taken once");
    /* The loop keeps working: the third callback runs next. */
    cr_assert_eq(gfl_loop_run_once(loop, 0), 1);
    int expected[] = {1, 2, 3};
    assert_events(expected, 3);

    /* gfl_loop_run and run_for end the same way. */
    gfl_call_soon(loop, interrupter, TAG(4));
    cr_assert_eq(gfl_loop_run(loop), GFL_EINTR);
    gfl_call_soon(loop, interrupter, TAG(5));
    cr_assert_eq(gfl_loop_run_for(loop, 1.0), GFL_EINTR);
    cr_assert_eq(handler_calls, 3);
    gfl_value_unref(gfl_loop_take_interrupt(loop));
}

Test(loop, acquire_tells_live_loops_from_stale_pointers)
{
    gfl_loop *a = gfl_loop_new(NULL);
    gfl_loop *b = gfl_loop_acquire(a);
    cr_assert_eq(a, b);
    cr_assert_eq(gfl_loop_unref(b), 0);
    int local;
    cr_assert_null(gfl_loop_acquire(&local), "not a loop");
    cr_assert_null(gfl_loop_acquire(NULL));
    cr_assert_eq(gfl_loop_free(a), 0);
    /* Freed: the address is refused without being read (valgrind checks). */
    cr_assert_null(gfl_loop_acquire(a));

    /* A closed loop kept alive by another reference is refused too. */
    gfl_loop *c = gfl_loop_new(NULL);
    gfl_loop *extra = gfl_loop_ref(c);
    cr_assert_eq(gfl_loop_free(c), 0);
    cr_assert_null(gfl_loop_acquire(c));
    cr_assert_eq(gfl_loop_unref(extra), 0);
}

/* gfl_loop_at_run_end (ABI 1.4) */
static void at_end(void *arg)
{
    record(arg);
    if ((intptr_t)arg == 1) /* one registered from a run-end callback runs too */
        cr_assert_eq(gfl_loop_at_run_end(loop, at_end, TAG(3)), 0);
}

static void registers_at_end(void *arg)
{
    record(arg);
    cr_assert_eq(gfl_loop_at_run_end(loop, at_end, TAG(1)), 0);
    cr_assert_eq(gfl_loop_at_run_end(loop, at_end, TAG(2)), 0);
}

Test(loop, run_end_callbacks_run_once_as_each_run_returns, .init = setup, .fini = teardown)
{
    cr_assert_eq(gfl_loop_at_run_end(loop, at_end, TAG(9)), GFL_ESTATE, "not running");
    cr_assert_eq(gfl_loop_at_run_end(NULL, at_end, NULL), GFL_EINVAL);
    gfl_call_soon(loop, registers_at_end, TAG(0));
    cr_assert_eq(gfl_loop_run_once(loop, 0), 1);
    int expected[] = {0, 1, 2, 3};
    assert_events(expected, 4);
    /* Once: the next run calls nothing. */
    cr_assert_eq(gfl_loop_run_once(loop, 0), 0);
    assert_events(expected, 4);
    /* run_for and run too. */
    nevents = 0;
    gfl_call_soon(loop, registers_at_end, TAG(0));
    cr_assert_geq(gfl_loop_run_for(loop, 1.0), 1);
    assert_events(expected, 4);
}
