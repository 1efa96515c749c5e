/* Signal handlers delivered as loop callbacks, in any number of loops.
 * Criterion runs each test in its own process; signals the test raises are
 * ignored (SIG_IGN) before a handler is added, so that when the dispatcher
 * restores the previous disposition a late signal cannot kill the test. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "globeflower.h"

static atomic_long live_blocks;
static atomic_int fail_after = -1; /* >= 0: the allocation after that many fails */

static void *counting_realloc(void *ud, void *ptr, size_t size)
{
    (void)ud;
    if (size != 0 && atomic_load(&fail_after) >= 0 && atomic_fetch_sub(&fail_after, 1) <= 0)
        return NULL;
    if (size == 0) {
        if (ptr)
            atomic_fetch_sub(&live_blocks, 1);
        free(ptr);
        return NULL;
    }
    void *p = realloc(ptr, size);
    if (p && !ptr)
        atomic_fetch_add(&live_blocks, 1);
    return p;
}

static gfl_loop *loop;

static void ignore(int signum)
{
    struct sigaction sa = { .sa_handler = SIG_IGN };
    sigemptyset(&sa.sa_mask);
    cr_assert_eq(sigaction(signum, &sa, NULL), 0);
}

static void setup(void)
{
    ignore(SIGUSR1);
    ignore(SIGUSR2);
    atomic_store(&live_blocks, 0);
    atomic_store(&fail_after, -1);
    gfl_loop_options o = { .size = sizeof o, .realloc = counting_realloc };
    loop = gfl_loop_new(&o);
    cr_assert_not_null(loop);
}

static void teardown(void)
{
    if (loop)
        cr_expect_eq(gfl_loop_free(loop), 0);
    loop = NULL;
    cr_expect_eq(atomic_load(&live_blocks), 0, "%ld blocks leaked", atomic_load(&live_blocks));
}

TestSuite(signals, .init = setup, .fini = teardown, .timeout = 20);

struct hits {
    int calls;
    int running;    /* gfl_loop_is_running() seen by the callback */
    gfl_handle follow_up; /* what gfl_call_soon returned inside it */
    int follow_up_ran;
};

static void follow_up(void *arg)
{
    ((struct hits *)arg)->follow_up_ran++;
}

/* A signal handler could do none of this: it runs as a loop callback. */
static void on_signal(void *arg)
{
    struct hits *h = arg;
    h->calls++;
    h->running = gfl_loop_is_running(loop);
    h->follow_up = gfl_call_soon(loop, follow_up, h);
}

static void pump_until(const int *flag, int want, int max_iterations)
{
    for (int i = 0; i < max_iterations && *flag < want; i++)
        cr_assert_geq(gfl_loop_run_once(loop, 0.05), 0);
}

static void settle(int iterations)
{
    for (int i = 0; i < iterations; i++)
        gfl_loop_run_once(loop, 0.01);
}

Test(signals, raise_is_delivered_as_a_loop_callback)
{
    struct hits h = { 0 };
    cr_assert_eq(gfl_add_signal_handler(loop, SIGUSR1, on_signal, &h), 0);
    cr_assert_eq(raise(SIGUSR1), 0);
    cr_assert_eq(h.calls, 0, "not called from the signal handler");
    pump_until(&h.calls, 1, 100);
    cr_assert_eq(h.calls, 1);
    cr_assert_eq(h.running, 1, "called while the loop runs");
    cr_assert_gt(h.follow_up, 0, "and may schedule callbacks");
    pump_until(&h.follow_up_ran, 1, 10);
    cr_assert_eq(h.follow_up_ran, 1);
    cr_assert_eq(gfl_remove_signal_handler(loop, SIGUSR1), 1);
}

Test(signals, kill_getpid)
{
    struct hits h = { 0 };
    cr_assert_eq(gfl_add_signal_handler(loop, SIGUSR2, on_signal, &h), 0);
    cr_assert_eq(kill(getpid(), SIGUSR2), 0);
    pump_until(&h.calls, 1, 100);
    cr_assert_eq(h.calls, 1);
    cr_assert_eq(gfl_remove_signal_handler(loop, SIGUSR2), 1);
}

Test(signals, every_delivery_after_the_callback_ran)
{
    struct hits h = { 0 };
    cr_assert_eq(gfl_add_signal_handler(loop, SIGUSR1, on_signal, &h), 0);
    for (int i = 1; i <= 3; i++) {
        raise(SIGUSR1);
        pump_until(&h.calls, i, 100);
        cr_assert_eq(h.calls, i);
    }
    cr_assert_eq(gfl_remove_signal_handler(loop, SIGUSR1), 1);
}

/* Every delivery is a call, also those that arrive while the loop is not
 * running (5 raised, 1 delivered before: issue 12, item 4). */
Test(signals, every_delivery_counts_while_the_loop_is_not_running)
{
    struct hits h = { 0 };
    cr_assert_eq(gfl_add_signal_handler(loop, SIGUSR1, on_signal, &h), 0);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(raise(SIGUSR1), 0);
    cr_assert_eq(h.calls, 0);
    pump_until(&h.calls, 5, 100);
    settle(3);
    cr_assert_eq(h.calls, 5, "5 raised, %d delivered", h.calls);
    cr_assert_eq(gfl_remove_signal_handler(loop, SIGUSR1), 1);
}

Test(signals, remove_stops_delivery)
{
    struct hits h = { 0 };
    cr_assert_eq(gfl_add_signal_handler(loop, SIGUSR1, on_signal, &h), 0);
    cr_assert_eq(gfl_remove_signal_handler(loop, SIGUSR1), 1);
    cr_assert_eq(gfl_remove_signal_handler(loop, SIGUSR1), 0, "already removed");
    /* The previous disposition (SIG_IGN) is back: the signal is ignored. */
    struct sigaction sa;
    cr_assert_eq(sigaction(SIGUSR1, NULL, &sa), 0);
    cr_assert_eq(sa.sa_handler, SIG_IGN);
    raise(SIGUSR1);
    settle(5);
    cr_assert_eq(h.calls, 0);
}

Test(signals, adding_again_replaces)
{
    struct hits a = { 0 }, b = { 0 };
    cr_assert_eq(gfl_add_signal_handler(loop, SIGUSR1, on_signal, &a), 0);
    cr_assert_eq(gfl_add_signal_handler(loop, SIGUSR1, on_signal, &b), 0);
    raise(SIGUSR1);
    pump_until(&b.calls, 1, 100);
    settle(2);
    cr_assert_eq(b.calls, 1);
    cr_assert_eq(a.calls, 0);
    cr_assert_eq(gfl_remove_signal_handler(loop, SIGUSR1), 1, "one handler per signal");
    cr_assert_eq(gfl_remove_signal_handler(loop, SIGUSR1), 0);
}

/* Both signals' callbacks are queued in one iteration; whichever runs first
 * removes the other, whose queued callback must then never run. */
static int ran[2];
static const int sigs[2] = { SIGUSR1, SIGUSR2 };
static void remove_other(void *arg)
{
    int me = (int)(intptr_t)arg;
    ran[me]++;
    cr_assert_eq(gfl_remove_signal_handler(loop, sigs[!me]), 1);
}

Test(signals, remove_cancels_a_queued_callback)
{
    for (int k = 0; k < 2; k++)
        cr_assert_eq(gfl_add_signal_handler(loop, sigs[k], remove_other, (void *)(intptr_t)k), 0);
    raise(SIGUSR1);
    raise(SIGUSR2);
    for (int i = 0; i < 100 && ran[0] + ran[1] == 0; i++)
        gfl_loop_run_once(loop, 0.05);
    settle(3);
    cr_assert_eq(ran[0] + ran[1], 1, "ran: %d %d", ran[0], ran[1]);
    int survivor = ran[0] ? 0 : 1;
    cr_assert_eq(gfl_remove_signal_handler(loop, sigs[survivor]), 1);
}

Test(signals, invalid_arguments)
{
    struct hits h = { 0 };
    int bad[] = { 0, -1, NSIG, NSIG + 10, SIGKILL, SIGSTOP };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(gfl_add_signal_handler(loop, bad[i], on_signal, &h), GFL_EINVAL, "signum %d", bad[i]);
        cr_assert_eq(gfl_remove_signal_handler(loop, bad[i]), GFL_EINVAL, "signum %d", bad[i]);
    }
    cr_assert_eq(gfl_add_signal_handler(loop, SIGUSR1, NULL, &h), GFL_EINVAL);
    cr_assert_eq(gfl_add_signal_handler(NULL, SIGUSR1, on_signal, &h), GFL_EINVAL);
    cr_assert_eq(gfl_remove_signal_handler(NULL, SIGUSR1), GFL_EINVAL);
    cr_assert_eq(gfl_remove_signal_handler(loop, SIGUSR1), 0, "none registered");
}

static void *add_from_thread(void *arg)
{
    struct hits h;
    intptr_t rc1 = gfl_add_signal_handler(arg, SIGUSR1, on_signal, &h);
    intptr_t rc2 = gfl_remove_signal_handler(arg, SIGUSR1);
    return (void *)(rc1 == GFL_EWRONGTHREAD && rc2 == GFL_EWRONGTHREAD ? (intptr_t)1 : 0);
}

Test(signals, wrong_thread)
{
    pthread_t t;
    void *ok;
    cr_assert_eq(pthread_create(&t, NULL, add_from_thread, loop), 0);
    pthread_join(t, &ok);
    cr_assert_eq((intptr_t)ok, 1);
}

static struct sigaction disposition(int signum)
{
    struct sigaction sa;
    cr_assert_eq(sigaction(signum, NULL, &sa), 0);
    return sa;
}

static void pump_other(gfl_loop *l, const int *flag, int want)
{
    for (int i = 0; i < 100 && *flag < want; i++)
        cr_assert_geq(gfl_loop_run_once(l, 0.05), 0);
}

/* Any loop may watch any signal (a second loop got GFL_EBUSY before), and
 * several loops the same one: each delivery reaches each of them, also
 * while neither runs. */
Test(signals, two_loops_watch_the_same_and_other_signals)
{
    struct hits a = { 0 }, b = { 0 }, b2 = { 0 };
    gfl_loop *other = gfl_loop_new(NULL);
    cr_assert_not_null(other);
    cr_assert_eq(gfl_add_signal_handler(loop, SIGUSR1, on_signal, &a), 0);
    cr_assert_eq(gfl_add_signal_handler(other, SIGUSR1, on_signal, &b), 0);
    cr_assert_eq(gfl_add_signal_handler(other, SIGUSR2, on_signal, &b2), 0);

    for (int i = 0; i < 3; i++)
        raise(SIGUSR1); /* neither loop is running */
    raise(SIGUSR2);
    pump_until(&a.calls, 3, 100);
    pump_other(other, &b.calls, 3);
    pump_other(other, &b2.calls, 1);
    settle(2);
    for (int i = 0; i < 3; i++)
        gfl_loop_run_once(other, 0.01);
    cr_assert_eq(a.calls, 3);
    cr_assert_eq(b.calls, 3);
    cr_assert_eq(b2.calls, 1, "SIGUSR2 reached the loop watching it");

    /* One loop letting go leaves the other's handler (and ours installed). */
    cr_assert_eq(gfl_remove_signal_handler(loop, SIGUSR1), 1);
    cr_assert_neq(disposition(SIGUSR1).sa_handler, SIG_IGN, "still watched by the other loop");
    raise(SIGUSR1);
    pump_other(other, &b.calls, 4);
    settle(2);
    cr_assert_eq(b.calls, 4);
    cr_assert_eq(a.calls, 3);

    /* Closing the last watcher restores what was there (SIG_IGN). */
    cr_assert_eq(gfl_loop_free(other), 0);
    cr_assert_eq(disposition(SIGUSR1).sa_handler, SIG_IGN);
    cr_assert_eq(disposition(SIGUSR2).sa_handler, SIG_IGN);
}

struct thread_loop {
    atomic_int ready, go;
    int calls;
    int rc;
};

static void count_in_thread(void *arg)
{
    ((struct thread_loop *)arg)->calls++;
}

static void *watch_in_thread(void *arg)
{
    struct thread_loop *tl = arg;
    gfl_loop *l = gfl_loop_new(NULL);
    tl->rc = gfl_add_signal_handler(l, SIGUSR1, count_in_thread, tl);
    atomic_store(&tl->ready, 1);
    while (!atomic_load(&tl->go)) /* the signals come while l is not running */
        sched_yield();
    for (int i = 0; i < 200 && tl->calls < 2; i++)
        gfl_loop_run_once(l, 0.05);
    for (int i = 0; i < 3; i++)
        gfl_loop_run_once(l, 0.01);
    gfl_loop_free(l);
    return NULL;
}

Test(signals, loops_in_other_threads_get_their_signals)
{
    struct hits h = { 0 };
    cr_assert_eq(gfl_add_signal_handler(loop, SIGUSR1, on_signal, &h), 0);
    struct thread_loop tl = { 0 };
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, watch_in_thread, &tl), 0);
    while (!atomic_load(&tl.ready))
        sched_yield();
    kill(getpid(), SIGUSR1);
    kill(getpid(), SIGUSR1);
    atomic_store(&tl.go, 1);
    pump_until(&h.calls, 2, 100);
    pthread_join(t, NULL);
    cr_assert_eq(tl.rc, 0);
    cr_assert_eq(tl.calls, 2);
    settle(2);
    cr_assert_eq(h.calls, 2);
    cr_assert_eq(gfl_remove_signal_handler(loop, SIGUSR1), 1);
}

/* A disposition someone else set after ours is theirs: letting go does not
 * undo it. */
static void user_handler(int signum)
{
    (void)signum;
}

Test(signals, a_handler_installed_after_ours_is_left_alone)
{
    struct hits h = { 0 };
    cr_assert_eq(gfl_add_signal_handler(loop, SIGUSR1, on_signal, &h), 0);
    struct sigaction mine = { .sa_handler = user_handler };
    sigemptyset(&mine.sa_mask);
    cr_assert_eq(sigaction(SIGUSR1, &mine, NULL), 0);
    cr_assert_eq(gfl_remove_signal_handler(loop, SIGUSR1), 1);
    cr_assert_eq(disposition(SIGUSR1).sa_handler, user_handler);
}

Test(signals, closing_the_loop_leaks_nothing_and_restores)
{
    struct hits h = { 0 };
    cr_assert_eq(gfl_add_signal_handler(loop, SIGUSR1, on_signal, &h), 0);
    cr_assert_eq(gfl_add_signal_handler(loop, SIGUSR2, on_signal, &h), 0);
    raise(SIGUSR2); /* pending delivery at close time */
    cr_assert_eq(gfl_loop_free(loop), 0);
    loop = NULL;
    cr_assert_eq(atomic_load(&live_blocks), 0);
    struct sigaction sa;
    cr_assert_eq(sigaction(SIGUSR1, NULL, &sa), 0);
    cr_assert_eq(sa.sa_handler, SIG_IGN, "the previous disposition is restored");
    cr_assert_eq(h.calls, 0);

    /* And a new loop may own signals again. */
    gfl_loop *l = gfl_loop_new(NULL);
    cr_assert_eq(gfl_add_signal_handler(l, SIGUSR1, on_signal, &h), 0);
    cr_assert_eq(gfl_loop_free(l), 0);
}

/* Each allocation of add_signal_handler may fail: GFL_ENOMEM, nothing
 * registered, no disposition left changed. */
Test(signals, out_of_memory_is_clean)
{
    struct hits h = { 0 };
    bool succeeded = false;
    for (int n = 0; n < 10 && !succeeded; n++) {
        atomic_store(&fail_after, n);
        int rc = gfl_add_signal_handler(loop, SIGUSR1, on_signal, &h);
        atomic_store(&fail_after, -1);
        cr_assert(rc == 0 || rc == GFL_ENOMEM, "rc = %d", rc);
        succeeded = rc == 0;
        if (!succeeded) {
            cr_assert_eq(gfl_remove_signal_handler(loop, SIGUSR1), 0);
            cr_assert_eq(disposition(SIGUSR1).sa_handler, SIG_IGN, "nothing left installed");
            gfl_loop *other = gfl_loop_new(NULL);
            cr_assert_eq(gfl_add_signal_handler(other, SIGUSR1, on_signal, &h), 0, "not owned after a failure");
            gfl_loop_free(other);
        }
    }
    cr_assert(succeeded);
    raise(SIGUSR1);
    pump_until(&h.calls, 1, 100);
    cr_assert_eq(h.calls, 1);
    cr_assert_eq(gfl_remove_signal_handler(loop, SIGUSR1), 1);
}
