/*
 * The per-loop thread pool behind gfl_run_in_executor.
 *
 * Created on first use; up to loop->executor_threads workers are started as
 * jobs arrive. Workers only touch jobs and the executor's lock: futures are
 * loop-thread objects, so a finished job is handed back through
 * gfl_call_soon_threadsafe, in batches (one wakeup drains every job finished
 * meanwhile), and resolved on the loop thread.
 *
 * Throughput: thread switches, not the work, dominate short jobs such as a
 * stat. So a worker that finishes a job takes the next one without
 * sleeping; one worker that runs out of work watches the queue for a few
 * microseconds before sleeping; and submission signals a sleeper only when
 * no worker (spinning or already signalled) is on its way. A worker that
 * takes a job and sees more waiting wakes the next sleeper itself, so the
 * loop thread pays for one signal per burst, not one per job.
 *
 * Ownership: every job lives in ex->jobs (loop thread only) from submission
 * until it is freed, and is freed only from there, when both
 *   - it is settled: its value was handed over or dropped and release(arg)
 *     ran (on completion, or when its cancelled job was dropped), and
 *   - our done callback on its future ran (it holds the job as its arg).
 * gfl__executor_close frees whatever is left, so jobs whose completion
 * callback is dropped with the closing loop's threadsafe queue do not leak.
 *
 * Cancellation: a cancelled future's done callback (loop thread) removes its
 * job from the queue under the lock if no worker took it yet, and releases
 * it. That is the "cancelled flag" a worker sees, made exact: a job is
 * either still queued (then dropped) or already running (then it finishes
 * and its value is dropped).
 */
#include "internal.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <time.h>

enum job_state { JOB_QUEUED, JOB_RUNNING, JOB_FINISHED, JOB_DROPPED };

struct gfl_job {
    gfl_work_fn work;
    void *arg;
    gfl_release_fn release;
    gfl_future *future;  /* our reference */
    gfl_value *result;   /* set by the worker (under the lock) */
    int state;           /* enum job_state, under the lock */
    bool settled;        /* loop thread: value handled, release ran */
    bool cb_pending;     /* loop thread: our done callback may still run */
    struct gfl_job *qnext, *qprev; /* queue or done list, under the lock */
    struct gfl_job *next, *prev;   /* ex->jobs, loop thread */
    struct gfl_executor *ex;
};

struct gfl_executor {
    gfl_loop *loop;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_t *threads;
    /* Under the lock. A worker is in exactly one of: running or about to
     * look at the queue (counted by neither), asleep and unclaimed (idle),
     * or asleep and already signalled (wakes). Submission signals only
     * when the queue holds more jobs than wakes already on their way, and
     * only an idle worker: a busy one takes the next job itself, without
     * sleeping, and a second signal to the same sleeper is a wasted
     * syscall. */
    unsigned nthreads, max_threads, idle, wakes;
    /* Under the lock: a worker that just ran out of work watches the queue
     * for a few microseconds before sleeping (at most one does), so the
     * next job of a steady stream needs neither a signal nor a context
     * switch. It counts as a wake already on its way. */
    unsigned spinning;
    atomic_size_t queued_hint; /* = queued, readable without the lock */
    bool stopping;     /* under the lock */
    bool post_pending; /* under the lock: a drain is on its way to the loop */
    struct gfl_job *q_head, *q_tail; /* waiting for a worker */
    size_t queued;
    struct gfl_job *done_head, *done_tail; /* finished, not yet drained */
    struct gfl_job *jobs; /* every live job (loop thread only) */
    /* Freed job blocks kept for reuse (loop thread only), so a steady
     * stream of jobs does not go through the allocator for each one. */
    struct gfl_job *spare;
    unsigned nspare;
    gfl_value *enomem;    /* the error for work() returning NULL */
};

/* ---- lists ---- */

static void queue_unlink(struct gfl_executor *ex, struct gfl_job *j)
{
    if (j->qprev)
        j->qprev->qnext = j->qnext;
    else
        ex->q_head = j->qnext;
    if (j->qnext)
        j->qnext->qprev = j->qprev;
    else
        ex->q_tail = j->qprev;
    j->qnext = j->qprev = NULL;
    ex->queued--;
    atomic_store_explicit(&ex->queued_hint, ex->queued, memory_order_relaxed);
}

static void queue_append(struct gfl_executor *ex, struct gfl_job *j)
{
    j->qnext = NULL;
    j->qprev = ex->q_tail;
    if (ex->q_tail)
        ex->q_tail->qnext = j;
    else
        ex->q_head = j;
    ex->q_tail = j;
    ex->queued++;
    atomic_store_explicit(&ex->queued_hint, ex->queued, memory_order_relaxed);
}

static void jobs_unlink(struct gfl_executor *ex, struct gfl_job *j)
{
    if (j->prev)
        j->prev->next = j->next;
    else
        ex->jobs = j->next;
    if (j->next)
        j->next->prev = j->prev;
    j->next = j->prev = NULL;
}

/* ---- loop thread: settling and freeing jobs ---- */

/* Enough for a few bursts of in-flight requests; beyond that, blocks go
 * back to the allocator so a one-off spike does not pin memory. */
#define SPARE_JOBS_MAX 64

static struct gfl_job *job_take(struct gfl_executor *ex)
{
    struct gfl_job *j = ex->spare;
    if (!j)
        return gfl__calloc(ex->loop, 1, sizeof *j);
    ex->spare = j->next;
    ex->nspare--;
    memset(j, 0, sizeof *j);
    return j;
}

static void job_recycle(struct gfl_executor *ex, struct gfl_job *j)
{
    if (ex->nspare >= SPARE_JOBS_MAX) {
        gfl__free(ex->loop, j);
        return;
    }
    j->next = ex->spare;
    ex->spare = j;
    ex->nspare++;
}

static void on_future_done(gfl_future *f, void *arg);

static void maybe_free(struct gfl_job *j)
{
    if (!j->settled || j->cb_pending)
        return;
    struct gfl_executor *ex = j->ex;
    jobs_unlink(ex, j);
    gfl_future_unref(j->future);
    job_recycle(ex, j);
}

/* Hands the job's value to its future (unless it is done already: then the
 * value is dropped) and releases the argument. */
static void settle(struct gfl_job *j)
{
    gfl_value *v = j->result;
    j->result = NULL;
    if (j->state == JOB_FINISHED) {
        if (!v)
            v = gfl_value_ref(j->ex->enomem);
        if (gfl_future_state_of(j->future) == GFL_FUTURE_PENDING) {
            if (gfl_value_type_of(v) == GFL_VALUE_ERROR)
                (void)gfl_future_set_error(j->future, v);
            else
                (void)gfl_future_set_result(j->future, v);
        }
    }
    gfl_value_unref(v);
    j->settled = true;
    if (j->release)
        j->release(j->arg);
}

static void on_future_done(gfl_future *f, void *arg)
{
    struct gfl_job *j = arg;
    struct gfl_executor *ex = j->ex;
    j->cb_pending = false;
    if (gfl_future_state_of(f) == GFL_FUTURE_CANCELLED) {
        pthread_mutex_lock(&ex->lock);
        bool dropped = j->state == JOB_QUEUED;
        if (dropped) {
            queue_unlink(ex, j);
            j->state = JOB_DROPPED;
        }
        pthread_mutex_unlock(&ex->lock);
        if (dropped)
            settle(j);
    }
    maybe_free(j);
}

/* Threadsafe callback: resolves every job finished since the last drain.
 * Its arg is the loop, not the executor, so that it can never see a freed
 * executor. */
static void on_completions(void *arg)
{
    gfl_loop *loop = arg;
    struct gfl_executor *ex = loop->executor;
    if (!ex)
        return;
    pthread_mutex_lock(&ex->lock);
    struct gfl_job *j = ex->done_head;
    ex->done_head = ex->done_tail = NULL;
    ex->post_pending = false;
    pthread_mutex_unlock(&ex->lock);
    while (j) {
        struct gfl_job *next = j->qnext;
        j->qnext = j->qprev = NULL;
        settle(j);
        maybe_free(j);
        j = next;
    }
}

/* ---- workers ---- */

/* Asks the loop to drain finished jobs. Out of memory is retried (nothing
 * else would ever deliver them); a closing loop is left to
 * gfl__executor_close, which frees what is left. */
static void post_completions(struct gfl_executor *ex)
{
    for (;;) {
        int rc = gfl_call_soon_threadsafe(ex->loop, on_completions, ex->loop);
        if (rc != GFL_ENOMEM)
            return;
        pthread_mutex_lock(&ex->lock);
        bool stop = ex->stopping;
        pthread_mutex_unlock(&ex->lock);
        if (stop)
            return;
        struct timespec ts = { 0, 1000000 };
        nanosleep(&ts, NULL);
    }
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* How long an idle worker keeps watching the queue before it sleeps: a
 * few pool round trips, so a loop thread that resubmits as soon as it sees
 * a result finds this worker still awake; short enough that an idle pool
 * stops burning CPU almost at once. */
#define SPIN_NS 50000

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Without the lock: returns when a job may be queued or the spin ran out.
 * The caller rechecks under the lock, so a stale read only costs a loop. */
static void spin_for_work(struct gfl_executor *ex)
{
    int64_t deadline = now_ns() + SPIN_NS;
    for (;;) {
        for (int i = 0; i < 64; i++) {
            if (atomic_load_explicit(&ex->queued_hint, memory_order_relaxed) > 0)
                return;
            cpu_relax();
        }
        if (now_ns() >= deadline)
            return;
        /* On a busy machine the loop thread may be waiting for this very
         * CPU to deliver the next job: let it run. */
        sched_yield();
    }
}

static void *worker_main(void *arg)
{
    struct gfl_executor *ex = arg;
    pthread_mutex_lock(&ex->lock);
    for (;;) {
        if (!ex->stopping && !ex->q_head && ex->spinning == 0) {
            ex->spinning = 1;
            pthread_mutex_unlock(&ex->lock);
            spin_for_work(ex);
            pthread_mutex_lock(&ex->lock);
            ex->spinning = 0;
        }
        while (!ex->stopping && !ex->q_head) {
            ex->idle++;
            pthread_cond_wait(&ex->cond, &ex->lock);
            /* Whoever returns first consumes a pending wake; a spurious
             * return with none pending takes itself off the idle count.
             * Either way idle + wakes drops by one per return. */
            if (ex->wakes > 0)
                ex->wakes--;
            else
                ex->idle--;
        }
        if (ex->stopping)
            break; /* queued jobs are dropped by gfl__executor_close */
        struct gfl_job *j = ex->q_head;
        queue_unlink(ex, j);
        j->state = JOB_RUNNING;
        /* Pass the wake on: more work than workers on their way wakes one
         * more sleeper, from here rather than from the loop thread, which
         * thus pays for at most one signal per burst. */
        bool wake_another = ex->queued > ex->wakes + ex->spinning && ex->idle > 0;
        if (wake_another) {
            ex->idle--;
            ex->wakes++;
        }
        pthread_mutex_unlock(&ex->lock);
        if (wake_another)
            pthread_cond_signal(&ex->cond);

        gfl_value *v = j->work(j->arg);

        pthread_mutex_lock(&ex->lock);
        j->result = v;
        j->state = JOB_FINISHED;
        j->qnext = NULL;
        j->qprev = ex->done_tail;
        if (ex->done_tail)
            ex->done_tail->qnext = j;
        else
            ex->done_head = j;
        ex->done_tail = j;
        if (!ex->post_pending) {
            ex->post_pending = true;
            pthread_mutex_unlock(&ex->lock);
            post_completions(ex);
            pthread_mutex_lock(&ex->lock);
        }
    }
    pthread_mutex_unlock(&ex->lock);
    return NULL;
}

/* Under the lock. Workers block every signal: signals belong to the loop
 * (signals.c), never to a pool thread in the middle of someone's work. */
static int spawn_worker(struct gfl_executor *ex)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&ex->threads[ex->nthreads], NULL, worker_main, ex);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0)
        return rc == EAGAIN ? GFL_EAGAIN : GFL_ENOMEM;
    ex->nthreads++;
    return GFL_OK;
}

static struct gfl_executor *get_executor(gfl_loop *loop)
{
    if (loop->executor)
        return loop->executor;
    struct gfl_executor *ex = gfl__calloc(loop, 1, sizeof *ex);
    if (!ex)
        return NULL;
    ex->loop = loop;
    ex->max_threads = loop->executor_threads ? loop->executor_threads : 4;
    ex->threads = gfl__calloc(loop, ex->max_threads, sizeof *ex->threads);
    ex->enomem = gfl_value_error(GFL_ENOMEM, "MemoryError", "the work function returned no value", NULL);
    if (!ex->threads || !ex->enomem)
        goto fail;
    /* Adaptive: the critical sections are a few list operations, so a
     * contender spins briefly instead of sleeping in the kernel. */
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
#ifdef PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ADAPTIVE_NP);
#endif
    int mrc = pthread_mutex_init(&ex->lock, &attr);
    pthread_mutexattr_destroy(&attr);
    if (mrc != 0)
        goto fail;
    if (pthread_cond_init(&ex->cond, NULL) != 0) {
        pthread_mutex_destroy(&ex->lock);
        goto fail;
    }
    loop->executor = ex;
    return ex;

fail:
    gfl_value_unref(ex->enomem);
    gfl__free(loop, ex->threads);
    gfl__free(loop, ex);
    return NULL;
}

/* NULL on failure; then release(arg) is not called (the caller still owns
 * arg). */
GFL_EXPORT gfl_future *gfl_run_in_executor(gfl_loop *loop, gfl_work_fn work, void *arg, gfl_release_fn release)
{
    if (gfl__check_loop(loop) < 0 || !work)
        return NULL;
    struct gfl_executor *ex = get_executor(loop);
    if (!ex)
        return NULL;
    struct gfl_job *j = job_take(ex);
    if (!j)
        return NULL;
    gfl_future *f = gfl_future_new(loop);
    if (!f)
        goto fail_job;
    if (gfl_future_add_done_callback(f, on_future_done, j) < 0)
        goto fail_future;
    j->work = work;
    j->arg = arg;
    j->release = release;
    j->future = gfl_future_ref(f);
    j->cb_pending = true;
    j->ex = ex;
    j->state = JOB_QUEUED;

    pthread_mutex_lock(&ex->lock);
    queue_append(ex, j);
    if (ex->queued > ex->wakes + ex->spinning) {
        /* Some queued job has no worker on its way: wake a sleeper unless
         * one is on its way already (it wakes the next: see worker_main),
         * or grow the pool; busy workers will come back for the rest. */
        if (ex->idle > 0) {
            if (ex->wakes + ex->spinning == 0) {
                ex->idle--;
                ex->wakes++;
                pthread_cond_signal(&ex->cond);
            }
        } else if (ex->nthreads < ex->max_threads && spawn_worker(ex) < 0 && ex->nthreads == 0) {
            queue_unlink(ex, j); /* no worker at all: fail now, not hang */
            pthread_mutex_unlock(&ex->lock);
            gfl_future_remove_done_callback(f, on_future_done, j);
            gfl_future_unref(j->future);
            goto fail_future;
        }
    }
    pthread_mutex_unlock(&ex->lock);

    j->next = ex->jobs;
    if (ex->jobs)
        ex->jobs->prev = j;
    ex->jobs = j;
    return f;

fail_future:
    gfl_future_unref(f);
fail_job:
    job_recycle(ex, j);
    return NULL;
}

/* Loop closing (loop->closed is already set, so no new jobs and no more
 * threadsafe deliveries): running jobs finish, queued ones are dropped,
 * every job left is released and freed, whatever stage it reached. */
void gfl__executor_close(gfl_loop *loop)
{
    struct gfl_executor *ex = loop->executor;
    if (!ex)
        return;
    pthread_mutex_lock(&ex->lock);
    ex->stopping = true;
    pthread_cond_broadcast(&ex->cond);
    pthread_mutex_unlock(&ex->lock);
    for (unsigned i = 0; i < ex->nthreads; i++)
        pthread_join(ex->threads[i], NULL);

    /* Single-threaded from here. A finished job's value is dropped: its
     * future would schedule callbacks on a closed loop. */
    while (ex->jobs) {
        struct gfl_job *j = ex->jobs;
        jobs_unlink(ex, j);
        if (!j->settled) {
            gfl_value_unref(j->result);
            j->result = NULL;
            j->settled = true;
            if (j->release)
                j->release(j->arg);
        }
        if (j->cb_pending) /* the future may outlive us: forget the job */
            (void)gfl_future_remove_done_callback(j->future, on_future_done, j);
        gfl_future_unref(j->future);
        gfl__free(loop, j);
    }
    while (ex->spare) {
        struct gfl_job *j = ex->spare;
        ex->spare = j->next;
        gfl__free(loop, j);
    }
    loop->executor = NULL;
    gfl_value_unref(ex->enomem);
    pthread_cond_destroy(&ex->cond);
    pthread_mutex_destroy(&ex->lock);
    gfl__free(loop, ex->threads);
    gfl__free(loop, ex);
}
