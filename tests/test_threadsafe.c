/* gfl_call_soon_threadsafe: from any thread, nothing lost, wakes the loop. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "globeflower.h"

#define THREADS 8
#define CALLS_PER_THREAD 100000

static gfl_loop *loop;
static atomic_long received;
static long per_thread_sum[THREADS];
static long per_thread_last[THREADS];
static bool per_thread_in_order[THREADS];

static void setup(void)
{
    loop = gfl_loop_new(NULL);
    cr_assert_not_null(loop);
    atomic_store(&received, 0);
    for (int i = 0; i < THREADS; i++) {
        per_thread_sum[i] = 0;
        per_thread_last[i] = -1;
        per_thread_in_order[i] = true;
    }
}

static void teardown(void)
{
    if (loop)
        gfl_loop_free(loop);
    loop = NULL;
}

TestSuite(threadsafe, .init = setup, .fini = teardown);

/* The argument packs (thread, sequence number). Runs on the loop thread. */
static void receive(void *arg)
{
    uintptr_t v = (uintptr_t)arg;
    int thread = (int)(v >> 32);
    long seq = (long)(v & 0xffffffffu);
    if (seq != per_thread_last[thread] + 1)
        per_thread_in_order[thread] = false;
    per_thread_last[thread] = seq;
    per_thread_sum[thread] += seq;
    atomic_fetch_add(&received, 1);
}

static void *producer(void *arg)
{
    uintptr_t thread = (uintptr_t)arg;
    for (uintptr_t i = 0; i < CALLS_PER_THREAD; i++) {
        int rc = gfl_call_soon_threadsafe(loop, receive, (void *)(thread << 32 | i));
        if (rc != 0)
            return (void *)(intptr_t)rc;
    }
    return NULL;
}

Test(threadsafe, eight_threads_times_100k_calls_lose_nothing, .timeout = 120)
{
    pthread_t threads[THREADS];
    for (uintptr_t t = 0; t < THREADS; t++)
        cr_assert_eq(pthread_create(&threads[t], NULL, producer, (void *)t), 0);
    long total = (long)THREADS * CALLS_PER_THREAD;
    double deadline = gfl_loop_time(loop) + 100;
    while (atomic_load(&received) < total && gfl_loop_time(loop) < deadline)
        cr_assert_geq(gfl_loop_run_once(loop, 0.1), 0);
    for (int t = 0; t < THREADS; t++) {
        void *rc;
        pthread_join(threads[t], &rc);
        cr_assert_null(rc, "gfl_call_soon_threadsafe failed in thread %d", t);
    }
    /* Nothing further may arrive. */
    gfl_loop_run_once(loop, 0);
    cr_assert_eq(atomic_load(&received), total);
    long expected_sum = (long)CALLS_PER_THREAD * (CALLS_PER_THREAD - 1) / 2;
    for (int t = 0; t < THREADS; t++) {
        cr_assert_eq(per_thread_sum[t], expected_sum, "thread %d", t);
        cr_assert(per_thread_in_order[t], "each thread's calls run in the order made");
    }
}

static void *call_after_delay(void *arg)
{
    (void)arg;
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL);
    gfl_call_soon_threadsafe(loop, receive, (void *)(uintptr_t)0);
    return NULL;
}

Test(threadsafe, wakes_a_loop_blocked_in_poll)
{
    pthread_t t;
    double start = gfl_loop_time(loop);
    pthread_create(&t, NULL, call_after_delay, NULL);
    /* Nothing else is scheduled: this would block forever without a wake-up. */
    for (int i = 0; i < 5 && atomic_load(&received) == 0; i++)
        gfl_loop_run_once(loop, -1);
    pthread_join(t, NULL);
    cr_assert_eq(atomic_load(&received), 1);
    cr_assert_lt(gfl_loop_time(loop) - start, 10.0);
}

static void stop_from_thread_call(void *arg)
{
    (void)arg;
    gfl_loop_stop(loop);
}

static void *stop_later(void *arg)
{
    (void)arg;
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
    gfl_call_soon_threadsafe(loop, stop_from_thread_call, NULL);
    return NULL;
}

Test(threadsafe, another_thread_can_stop_a_running_loop)
{
    pthread_t t;
    pthread_create(&t, NULL, stop_later, NULL);
    cr_assert_eq(gfl_loop_run(loop), 0);
    pthread_join(t, NULL);
}

Test(threadsafe, pending_calls_are_dropped_when_the_loop_closes)
{
    for (int i = 0; i < 1000; i++)
        cr_assert_eq(gfl_call_soon_threadsafe(loop, receive, (void *)(uintptr_t)i), 0);
    cr_assert_eq(gfl_loop_free(loop), 0);
    loop = NULL;
    cr_assert_eq(atomic_load(&received), 0);
}

Test(threadsafe, bad_arguments)
{
    cr_assert_eq(gfl_call_soon_threadsafe(NULL, receive, NULL), GFL_EINVAL);
    cr_assert_eq(gfl_call_soon_threadsafe(loop, NULL, NULL), GFL_EINVAL);
}
