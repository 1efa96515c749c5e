/* gfl_run_in_executor: the per-loop thread pool. Results come back as
 * futures resolved on the loop thread; release(arg) runs there exactly once;
 * closing the loop joins the pool and leaks nothing. Waits are bounded loops
 * of gfl_loop_run_once; timings are only generous sanity bounds. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

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
static pthread_t loop_thread;

static gfl_loop *new_loop(unsigned threads)
{
    gfl_loop_options o = { .size = sizeof o, .realloc = counting_realloc, .executor_threads = threads };
    gfl_loop *l = gfl_loop_new(&o);
    cr_assert_not_null(l);
    return l;
}

/* Values that count their own destruction (host objects), so a value the
 * pool dropped is seen to be freed. */
static atomic_int objects_alive;
static void obj_ref(void *o) { (void)o; atomic_fetch_add(&objects_alive, 1); }
static void obj_unref(void *o) { (void)o; atomic_fetch_sub(&objects_alive, 1); }
static const gfl_host_class counted = { sizeof counted, "test", obj_ref, obj_unref };

/* Jobs may wait on a gate that the test opens. */
static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static bool gate_open;
static atomic_int running_now, max_running, work_started, work_finished;

static void setup(void)
{
    atomic_store(&live_blocks, 0);
    atomic_store(&fail_after, -1);
    atomic_store(&objects_alive, 0);
    atomic_store(&running_now, 0);
    atomic_store(&max_running, 0);
    atomic_store(&work_started, 0);
    atomic_store(&work_finished, 0);
    gate_open = false;
    loop_thread = pthread_self();
    loop = new_loop(0);
}

static void teardown(void)
{
    if (loop)
        cr_expect_eq(gfl_loop_free(loop), 0);
    loop = NULL;
    cr_expect_eq(atomic_load(&live_blocks), 0, "%ld blocks leaked", atomic_load(&live_blocks));
    cr_expect_eq(atomic_load(&objects_alive), 0, "%d values leaked", atomic_load(&objects_alive));
}

TestSuite(executor, .init = setup, .fini = teardown, .timeout = 60);

static void open_gate(void)
{
    pthread_mutex_lock(&gate_lock);
    gate_open = true;
    pthread_cond_broadcast(&gate_cond);
    pthread_mutex_unlock(&gate_lock);
}

static void wait_gate(void)
{
    pthread_mutex_lock(&gate_lock);
    while (!gate_open)
        pthread_cond_wait(&gate_cond, &gate_lock);
    pthread_mutex_unlock(&gate_lock);
}

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

struct job {
    int64_t input;
    int mode; /* see work() */
    bool ran_in_pool;
    int released;
    bool released_on_loop_thread;
};

enum { MODE_SQUARE, MODE_ERROR, MODE_NULL, MODE_GATED_OBJECT, MODE_SLEEP_OBJECT };

static gfl_value *work(void *arg)
{
    struct job *j = arg;
    atomic_fetch_add(&work_started, 1);
    int now = atomic_fetch_add(&running_now, 1) + 1;
    int seen = atomic_load(&max_running);
    while (now > seen && !atomic_compare_exchange_weak(&max_running, &seen, now))
        ;
    j->ran_in_pool = !pthread_equal(pthread_self(), loop_thread);
    gfl_value *v = NULL;
    switch (j->mode) {
    case MODE_SQUARE:
        v = gfl_value_int(j->input * j->input);
        break;
    case MODE_ERROR:
        v = gfl_value_error(GFL_EIO, "OSError", "disk on fire", NULL);
        break;
    case MODE_NULL:
        break;
    case MODE_GATED_OBJECT:
        wait_gate();
        v = gfl_value_object(&counted, j);
        break;
    case MODE_SLEEP_OBJECT:
        sleep_ms(20);
        v = gfl_value_object(&counted, j);
        break;
    }
    atomic_fetch_sub(&running_now, 1);
    atomic_fetch_add(&work_finished, 1);
    return v;
}

static void release(void *arg)
{
    struct job *j = arg;
    j->released++;
    j->released_on_loop_thread = pthread_equal(pthread_self(), loop_thread);
}

/* Runs iterations until every future is done (bounded). */
static void pump_until_done(gfl_future **f, int n, int max_iterations)
{
    for (int i = 0; i < max_iterations; i++) {
        int pending = 0;
        for (int k = 0; k < n; k++)
            pending += gfl_future_state_of(f[k]) == GFL_FUTURE_PENDING;
        if (!pending)
            return;
        cr_assert_geq(gfl_loop_run_once(loop, 0.05), 0);
    }
}

Test(executor, one_job)
{
    struct job j = { .input = 7, .mode = MODE_SQUARE };
    gfl_future *f = gfl_run_in_executor(loop, work, &j, release);
    cr_assert_not_null(f);
    cr_assert_eq(gfl_future_state_of(f), GFL_FUTURE_PENDING);
    pump_until_done(&f, 1, 200);
    cr_assert_eq(gfl_future_state_of(f), GFL_FUTURE_RESULT);
    int64_t v = 0;
    cr_assert_eq(gfl_value_get_int(gfl_future_value(f), &v), 0);
    cr_assert_eq(v, 49);
    cr_assert(j.ran_in_pool, "work() runs in a pool thread");
    /* release runs in the same loop callback that resolves the future. */
    cr_assert_eq(j.released, 1);
    cr_assert(j.released_on_loop_thread);
    gfl_future_unref(f);
}

#define MANY 1000

Test(executor, thousand_jobs)
{
    static struct job jobs[MANY];
    static gfl_future *f[MANY];
    for (int k = 0; k < MANY; k++) {
        jobs[k] = (struct job){ .input = k, .mode = MODE_SQUARE };
        f[k] = gfl_run_in_executor(loop, work, &jobs[k], release);
        cr_assert_not_null(f[k]);
    }
    pump_until_done(f, MANY, 2000);
    for (int k = 0; k < MANY; k++) {
        cr_assert_eq(gfl_future_state_of(f[k]), GFL_FUTURE_RESULT, "job %d", k);
        int64_t v;
        cr_assert_eq(gfl_value_get_int(gfl_future_value(f[k]), &v), 0);
        cr_assert_eq(v, (int64_t)k * k);
        cr_assert_eq(jobs[k].released, 1);
        cr_assert(jobs[k].released_on_loop_thread);
        gfl_future_unref(f[k]);
    }
    cr_assert_eq(atomic_load(&work_started), MANY);
    int peak = atomic_load(&max_running);
    cr_assert(peak >= 1 && peak <= 4, "default pool of 4 threads, peak %d", peak);
}

Test(executor, pool_size_is_respected)
{
    gfl_loop_free(loop);
    loop = new_loop(2);
    struct job jobs[8];
    gfl_future *f[8];
    for (int k = 0; k < 8; k++) {
        jobs[k] = (struct job){ .mode = MODE_SLEEP_OBJECT };
        f[k] = gfl_run_in_executor(loop, work, &jobs[k], release);
        cr_assert_not_null(f[k]);
    }
    pump_until_done(f, 8, 400);
    for (int k = 0; k < 8; k++) {
        cr_assert_eq(gfl_future_state_of(f[k]), GFL_FUTURE_RESULT);
        gfl_future_unref(f[k]);
    }
    cr_assert_leq(atomic_load(&max_running), 2);
}

Test(executor, error_values_propagate)
{
    struct job j = { .mode = MODE_ERROR };
    gfl_future *f = gfl_run_in_executor(loop, work, &j, release);
    cr_assert_not_null(f);
    pump_until_done(&f, 1, 200);
    cr_assert_eq(gfl_future_state_of(f), GFL_FUTURE_ERROR);
    gfl_value *e = gfl_future_value(f);
    cr_assert_eq(gfl_value_error_code(e), GFL_EIO);
    cr_assert_str_eq(gfl_value_error_type(e), "OSError");
    cr_assert_str_eq(gfl_value_error_message(e), "disk on fire");
    cr_assert_eq(j.released, 1);
    gfl_future_unref(f);
}

Test(executor, null_result_is_enomem)
{
    struct job j = { .mode = MODE_NULL };
    gfl_future *f = gfl_run_in_executor(loop, work, &j, NULL); /* no release */
    cr_assert_not_null(f);
    pump_until_done(&f, 1, 200);
    cr_assert_eq(gfl_future_state_of(f), GFL_FUTURE_ERROR);
    cr_assert_eq(gfl_value_error_code(gfl_future_value(f)), GFL_ENOMEM);
    cr_assert_eq(j.released, 0);
    gfl_future_unref(f);
}

Test(executor, caller_may_drop_the_future)
{
    struct job j = { .input = 3, .mode = MODE_SQUARE };
    gfl_future *f = gfl_run_in_executor(loop, work, &j, release);
    cr_assert_not_null(f);
    gfl_future_unref(f); /* fire and forget */
    for (int i = 0; i < 200 && j.released == 0; i++)
        gfl_loop_run_once(loop, 0.05);
    cr_assert_eq(j.released, 1);
    gfl_loop_run_once(loop, 0); /* the done callback frees the job */
}

/* One worker, blocked on the gate; a second job waits in the queue and is
 * cancelled: it must never run, and its release still runs (loop thread). */
Test(executor, cancel_before_start_drops_the_job)
{
    gfl_loop_free(loop);
    loop = new_loop(1);
    struct job blocker = { .mode = MODE_GATED_OBJECT }, victim = { .input = 5, .mode = MODE_SQUARE };
    gfl_future *fb = gfl_run_in_executor(loop, work, &blocker, release);
    cr_assert_not_null(fb);
    for (int i = 0; i < 400 && atomic_load(&work_started) == 0; i++)
        sleep_ms(5);
    cr_assert_eq(atomic_load(&work_started), 1, "the worker is busy");
    gfl_future *fv = gfl_run_in_executor(loop, work, &victim, release);
    cr_assert_not_null(fv);
    cr_assert_eq(gfl_future_cancel(fv, "not needed"), 1);
    for (int i = 0; i < 20 && victim.released == 0; i++)
        gfl_loop_run_once(loop, 0.01);
    cr_assert_eq(victim.released, 1, "a dropped job is released");
    cr_assert(victim.released_on_loop_thread);

    open_gate();
    pump_until_done(&fb, 1, 200);
    cr_assert_eq(gfl_future_state_of(fb), GFL_FUTURE_RESULT);
    for (int i = 0; i < 5; i++)
        gfl_loop_run_once(loop, 0.01);
    cr_assert_eq(atomic_load(&work_started), 1, "the cancelled job never ran");
    cr_assert_eq(gfl_future_state_of(fv), GFL_FUTURE_CANCELLED);
    cr_assert_eq(victim.released, 1, "released exactly once");
    cr_assert_eq(blocker.released, 1);
    gfl_future_unref(fb);
    gfl_future_unref(fv);
}

/* Cancelled while running: the work finishes, its value is dropped (and
 * freed), the future stays cancelled, release runs once. */
Test(executor, cancel_while_running_drops_the_value)
{
    struct job j = { .mode = MODE_GATED_OBJECT };
    gfl_future *f = gfl_run_in_executor(loop, work, &j, release);
    cr_assert_not_null(f);
    for (int i = 0; i < 400 && atomic_load(&work_started) == 0; i++)
        sleep_ms(5);
    cr_assert_eq(gfl_future_cancel(f, NULL), 1);
    gfl_loop_run_once(loop, 0); /* the done callback sees the job running */
    cr_assert_eq(j.released, 0, "still running: not released yet");
    open_gate();
    for (int i = 0; i < 200 && j.released == 0; i++)
        gfl_loop_run_once(loop, 0.05);
    cr_assert_eq(j.released, 1);
    cr_assert_eq(gfl_future_state_of(f), GFL_FUTURE_CANCELLED);
    cr_assert_eq(atomic_load(&objects_alive), 0, "the dropped value was freed");
    gfl_future_unref(f);
}

static void *open_gate_later(void *arg)
{
    (void)arg;
    sleep_ms(100);
    open_gate();
    return NULL;
}

/* Closing with jobs running and queued: running ones finish (the close
 * joins them), queued ones are dropped, all are released once, nothing
 * leaks and nothing hangs. */
Test(executor, close_with_jobs_running_and_queued)
{
    gfl_loop_free(loop);
    loop = new_loop(2);
    enum { N = 20 };
    struct job jobs[N];
    gfl_future *f[N];
    for (int k = 0; k < N; k++) {
        jobs[k] = (struct job){ .mode = MODE_GATED_OBJECT };
        f[k] = gfl_run_in_executor(loop, work, &jobs[k], release);
        cr_assert_not_null(f[k]);
    }
    for (int i = 0; i < 400 && atomic_load(&work_started) < 2; i++)
        sleep_ms(5);
    cr_assert_eq(atomic_load(&work_started), 2);
    pthread_t opener;
    cr_assert_eq(pthread_create(&opener, NULL, open_gate_later, NULL), 0);
    cr_assert_eq(gfl_loop_free(loop), 0); /* waits for the two running jobs */
    loop = NULL;
    pthread_join(opener, NULL);
    cr_assert_eq(atomic_load(&work_finished), 2, "the running jobs finished");
    cr_assert_eq(atomic_load(&work_started), 2, "queued jobs were dropped");
    for (int k = 0; k < N; k++) {
        cr_assert_eq(jobs[k].released, 1, "job %d", k);
        cr_assert(jobs[k].released_on_loop_thread);
        /* The caller's references outlive the loop safely. */
        cr_assert_eq(gfl_future_state_of(f[k]), GFL_FUTURE_PENDING);
        gfl_future_unref(f[k]);
    }
    cr_assert_eq(atomic_load(&objects_alive), 0, "finished jobs' values were freed");
}

/* Jobs finished in the pool but never delivered (their completion callback
 * is dropped with the closing loop's threadsafe queue) are freed too. */
Test(executor, close_with_undelivered_results)
{
    enum { N = 50 };
    struct job jobs[N];
    for (int k = 0; k < N; k++) {
        jobs[k] = (struct job){ .mode = MODE_SLEEP_OBJECT };
        gfl_future *f = gfl_run_in_executor(loop, work, &jobs[k], release);
        cr_assert_not_null(f);
        gfl_future_unref(f);
    }
    gfl_loop_run_once(loop, 0); /* some may be delivered, most not */
    for (int i = 0; i < 2000 && atomic_load(&work_finished) < N; i++)
        sleep_ms(5);
    cr_assert_eq(atomic_load(&work_finished), N);
    cr_assert_eq(gfl_loop_free(loop), 0);
    loop = NULL;
    for (int k = 0; k < N; k++)
        cr_assert_eq(jobs[k].released, 1, "job %d", k);
}

/* Closing right after submitting: whatever stage each job reached. */
Test(executor, close_immediately)
{
    enum { N = 100 };
    struct job jobs[N];
    for (int k = 0; k < N; k++) {
        jobs[k] = (struct job){ .input = k, .mode = k % 3 ? MODE_SQUARE : MODE_SLEEP_OBJECT };
        gfl_future *f = gfl_run_in_executor(loop, work, &jobs[k], release);
        cr_assert_not_null(f);
        if (k % 4 == 0)
            cr_assert_eq(gfl_future_cancel(f, NULL), 1);
        gfl_future_unref(f);
    }
    cr_assert_eq(gfl_loop_free(loop), 0);
    loop = NULL;
    for (int k = 0; k < N; k++)
        cr_assert_eq(jobs[k].released, 1, "job %d", k);
}

Test(executor, bad_arguments)
{
    struct job j = { .mode = MODE_SQUARE };
    cr_assert_null(gfl_run_in_executor(NULL, work, &j, release));
    cr_assert_null(gfl_run_in_executor(loop, NULL, &j, release));
    cr_assert_eq(j.released, 0, "a refused job's argument stays the caller's");

    gfl_loop *l = new_loop(0);
    gfl_loop_ref(l);
    gfl_loop_free(l);
    cr_assert_null(gfl_run_in_executor(l, work, &j, release), "closed loop");
    gfl_loop_unref(l);
}

static void *submit_from_thread(void *arg)
{
    static struct job j = { .mode = MODE_SQUARE };
    return gfl_run_in_executor(arg, work, &j, release);
}

Test(executor, wrong_thread)
{
    pthread_t t;
    void *f;
    cr_assert_eq(pthread_create(&t, NULL, submit_from_thread, loop), 0);
    pthread_join(t, &f);
    cr_assert_null(f);
}

/* A job may be submitted from a done callback and from release. */
static gfl_future *chained;
static struct job chained_job = { .input = 9, .mode = MODE_SQUARE };
static void resubmit(gfl_future *f, void *arg)
{
    (void)f;
    (void)arg;
    chained = gfl_run_in_executor(loop, work, &chained_job, release);
}

Test(executor, submit_from_a_done_callback)
{
    struct job j = { .input = 2, .mode = MODE_SQUARE };
    gfl_future *f = gfl_run_in_executor(loop, work, &j, release);
    cr_assert_eq(gfl_future_add_done_callback(f, resubmit, NULL), 0);
    pump_until_done(&f, 1, 200);
    for (int i = 0; i < 200 && !chained; i++)
        gfl_loop_run_once(loop, 0.01);
    cr_assert_not_null(chained);
    pump_until_done(&chained, 1, 200);
    int64_t v;
    cr_assert_eq(gfl_value_get_int(gfl_future_value(chained), &v), 0);
    cr_assert_eq(v, 81);
    gfl_future_unref(chained);
    gfl_future_unref(f);
}

/* Each allocation of a submission may fail: NULL, nothing leaked, release
 * not called, and the next submission works. */
Test(executor, out_of_memory_is_clean)
{
    bool succeeded = false;
    for (int n = 0; n < 20 && !succeeded; n++) {
        struct job j = { .input = n, .mode = MODE_SQUARE };
        atomic_store(&fail_after, n);
        gfl_future *f = gfl_run_in_executor(loop, work, &j, release);
        atomic_store(&fail_after, -1);
        if (!f) {
            cr_assert_eq(j.released, 0);
            continue;
        }
        succeeded = true;
        pump_until_done(&f, 1, 200);
        cr_assert_eq(gfl_future_state_of(f), GFL_FUTURE_RESULT);
        cr_assert_eq(j.released, 1);
        gfl_future_unref(f);
    }
    cr_assert(succeeded);
}

/* ---- wake accounting, the spinning worker and reused job blocks ---- */

static void close_gate(void)
{
    pthread_mutex_lock(&gate_lock);
    gate_open = false;
    pthread_mutex_unlock(&gate_lock);
}

static void wait_started(int n)
{
    for (int i = 0; i < 400 && atomic_load(&work_started) < n; i++)
        sleep_ms(5);
}

/* Every worker must get going when there are enough jobs, both when the pool
 * grows and later when its workers are asleep: submission skips a signal
 * when a wake is already on its way, and must never skip one too many. */
Test(executor, every_worker_wakes_for_a_burst)
{
    gfl_loop_free(loop);
    loop = new_loop(3);
    for (int round = 0; round < 3; round++) {
        close_gate();
        atomic_store(&work_started, 0);
        struct job jobs[3];
        gfl_future *f[3];
        for (int k = 0; k < 3; k++) {
            jobs[k] = (struct job){ .mode = MODE_GATED_OBJECT };
            f[k] = gfl_run_in_executor(loop, work, &jobs[k], release);
            cr_assert_not_null(f[k]);
        }
        /* All three block on the gate, so only three workers running at
         * once can start them all. */
        wait_started(3);
        cr_assert_eq(atomic_load(&work_started), 3, "round %d: %d of 3 jobs started", round,
                     atomic_load(&work_started));
        open_gate();
        pump_until_done(f, 3, 400);
        for (int k = 0; k < 3; k++) {
            cr_assert_eq(gfl_future_state_of(f[k]), GFL_FUTURE_RESULT);
            cr_assert_eq(jobs[k].released, 1);
            gfl_future_unref(f[k]);
        }
        sleep_ms(20); /* long past the spin: the workers are asleep now */
    }
    cr_assert_leq(atomic_load(&max_running), 3, "the pool never exceeds its size");
}

/* One job at a time with pauses of different lengths, so each submission
 * meets the worker in a different state: still finishing, spinning, or
 * asleep. None may be missed. */
Test(executor, one_at_a_time_after_every_kind_of_pause)
{
    static const int pause_us[] = { 0, 1, 10, 30, 60, 100, 1000, 5000 };
    int n = 0;
    for (int round = 0; round < 4; round++) {
        for (size_t p = 0; p < sizeof pause_us / sizeof *pause_us; p++) {
            struct timespec ts = { 0, pause_us[p] * 1000L };
            nanosleep(&ts, NULL);
            struct job j = { .input = n, .mode = MODE_SQUARE };
            gfl_future *f = gfl_run_in_executor(loop, work, &j, release);
            cr_assert_not_null(f);
            pump_until_done(&f, 1, 200);
            cr_assert_eq(gfl_future_state_of(f), GFL_FUTURE_RESULT, "pause %d us", pause_us[p]);
            int64_t v = 0;
            cr_assert_eq(gfl_value_get_int(gfl_future_value(f), &v), 0);
            cr_assert_eq(v, (int64_t)n * n);
            cr_assert_eq(j.released, 1);
            gfl_future_unref(f);
            n++;
        }
    }
    cr_assert_eq(atomic_load(&work_started), n);
}

/* Jobs asked for by several threads at once (through
 * gfl_call_soon_threadsafe: only the loop thread may submit), while earlier
 * ones complete: each runs once, is released once, on the loop thread. */
enum { FEEDERS = 4, PER_FEEDER = 250 };
static struct job fed_jobs[FEEDERS * PER_FEEDER];
static gfl_future *fed_futures[FEEDERS * PER_FEEDER];
static atomic_int fed_next;
static atomic_int fed_submitted;

static void submit_fed_job(void *arg)
{
    struct job *j = arg;
    int k = (int)(j - fed_jobs);
    fed_futures[k] = gfl_run_in_executor(loop, work, j, release);
    cr_assert_not_null(fed_futures[k]);
    atomic_fetch_add(&fed_submitted, 1);
}

static void *feeder(void *arg)
{
    (void)arg;
    for (int i = 0; i < PER_FEEDER; i++) {
        int k = atomic_fetch_add(&fed_next, 1);
        fed_jobs[k] = (struct job){ .input = k, .mode = MODE_SQUARE };
        while (gfl_call_soon_threadsafe(loop, submit_fed_job, &fed_jobs[k]) == GFL_ENOMEM)
            sleep_ms(1);
        if (i % 16 == 0)
            sched_yield();
    }
    return NULL;
}

Test(executor, jobs_requested_from_several_threads)
{
    enum { N = FEEDERS * PER_FEEDER };
    atomic_store(&fed_next, 0);
    atomic_store(&fed_submitted, 0);
    pthread_t t[FEEDERS];
    for (int i = 0; i < FEEDERS; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, feeder, NULL), 0);
    for (int i = 0; i < 4000 && atomic_load(&fed_submitted) < N; i++)
        cr_assert_geq(gfl_loop_run_once(loop, 0.01), 0);
    for (int i = 0; i < FEEDERS; i++)
        pthread_join(t[i], NULL);
    cr_assert_eq(atomic_load(&fed_submitted), N);
    pump_until_done(fed_futures, N, 4000);
    for (int k = 0; k < N; k++) {
        cr_assert_eq(gfl_future_state_of(fed_futures[k]), GFL_FUTURE_RESULT, "job %d", k);
        int64_t v = 0;
        cr_assert_eq(gfl_value_get_int(gfl_future_value(fed_futures[k]), &v), 0);
        cr_assert_eq(v, (int64_t)k * k);
        cr_assert_eq(fed_jobs[k].released, 1);
        cr_assert(fed_jobs[k].released_on_loop_thread);
        gfl_future_unref(fed_futures[k]);
    }
    cr_assert_eq(atomic_load(&work_started), N);
}

/* Many queued jobs cancelled behind a busy worker: the cancelled ones never
 * run, the rest do, and the pool still answers afterwards (its wake count
 * may exceed what is left in the queue: a woken worker that finds nothing
 * just goes back to sleep). */
Test(executor, cancelling_many_queued_jobs)
{
    gfl_loop_free(loop);
    loop = new_loop(2);
    enum { N = 40 };
    struct job blockers[2] = { { .mode = MODE_GATED_OBJECT }, { .mode = MODE_GATED_OBJECT } };
    gfl_future *fb[2];
    for (int k = 0; k < 2; k++) {
        fb[k] = gfl_run_in_executor(loop, work, &blockers[k], release);
        cr_assert_not_null(fb[k]);
    }
    wait_started(2);
    cr_assert_eq(atomic_load(&work_started), 2, "both workers are busy");
    struct job jobs[N];
    gfl_future *f[N];
    for (int k = 0; k < N; k++) {
        jobs[k] = (struct job){ .input = k, .mode = MODE_SQUARE };
        f[k] = gfl_run_in_executor(loop, work, &jobs[k], release);
        cr_assert_not_null(f[k]);
    }
    for (int k = 0; k < N; k += 2)
        cr_assert_eq(gfl_future_cancel(f[k], NULL), 1);
    for (int i = 0; i < 5; i++)
        gfl_loop_run_once(loop, 0.001);
    for (int k = 0; k < N; k += 2)
        cr_assert_eq(jobs[k].released, 1, "cancelled job %d released at once", k);
    open_gate();
    pump_until_done(f, N, 2000);
    pump_until_done(fb, 2, 400);
    for (int k = 0; k < N; k++) {
        if (k % 2 == 0) {
            cr_assert_eq(gfl_future_state_of(f[k]), GFL_FUTURE_CANCELLED);
        } else {
            cr_assert_eq(gfl_future_state_of(f[k]), GFL_FUTURE_RESULT, "job %d", k);
            int64_t v = 0;
            cr_assert_eq(gfl_value_get_int(gfl_future_value(f[k]), &v), 0);
            cr_assert_eq(v, (int64_t)k * k);
        }
        cr_assert_eq(jobs[k].released, 1);
        gfl_future_unref(f[k]);
    }
    for (int k = 0; k < 2; k++)
        gfl_future_unref(fb[k]);
    cr_assert_eq(atomic_load(&work_started), 2 + N / 2, "cancelled jobs never ran");

    sleep_ms(20);
    struct job after = { .input = 9, .mode = MODE_SQUARE };
    gfl_future *fa = gfl_run_in_executor(loop, work, &after, release);
    cr_assert_not_null(fa);
    pump_until_done(&fa, 1, 200);
    cr_assert_eq(gfl_future_state_of(fa), GFL_FUTURE_RESULT);
    gfl_future_unref(fa);
}

/* Waves larger than the pool's stock of spare job blocks: blocks are reused
 * and the surplus freed, and none is left when the loop closes (teardown
 * counts every allocation). */
Test(executor, waves_of_jobs_reuse_and_free_blocks)
{
    enum { WAVE = 150 };
    static struct job jobs[WAVE];
    static gfl_future *f[WAVE];
    for (int wave = 0; wave < 4; wave++) {
        int n = wave % 2 ? WAVE : 10;
        for (int k = 0; k < n; k++) {
            jobs[k] = (struct job){ .input = k + wave, .mode = MODE_SQUARE };
            f[k] = gfl_run_in_executor(loop, work, &jobs[k], release);
            cr_assert_not_null(f[k]);
        }
        pump_until_done(f, n, 2000);
        for (int k = 0; k < n; k++) {
            int64_t v = 0;
            cr_assert_eq(gfl_value_get_int(gfl_future_value(f[k]), &v), 0);
            cr_assert_eq(v, (int64_t)(k + wave) * (k + wave));
            cr_assert_eq(jobs[k].released, 1);
            gfl_future_unref(f[k]);
        }
        for (int i = 0; i < 3; i++) /* let the done callbacks free the jobs */
            gfl_loop_run_once(loop, 0);
    }
}

/* Closing right after a job finished, while a worker may be spinning for the
 * next one: the close stops and joins it promptly. */
Test(executor, close_while_a_worker_spins)
{
    for (int round = 0; round < 20; round++) {
        struct job j = { .input = 3, .mode = MODE_SQUARE };
        gfl_future *f = gfl_run_in_executor(loop, work, &j, release);
        cr_assert_not_null(f);
        pump_until_done(&f, 1, 200);
        cr_assert_eq(gfl_future_state_of(f), GFL_FUTURE_RESULT);
        gfl_future_unref(f);
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        cr_assert_eq(gfl_loop_free(loop), 0);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double took = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
        cr_assert_lt(took, 2.0, "close took %.3f s", took);
        cr_assert_eq(j.released, 1);
        loop = new_loop(0);
    }
}
