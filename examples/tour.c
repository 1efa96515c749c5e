/*
 * A short tour of the globeflower loop: what `./quickstart.sh` runs.
 *
 *   1. timers fire in deadline order, whatever order they were scheduled in
 *   2. a worker thread hands its result back with gfl_call_soon_threadsafe
 *   3. a task (a C coroutine driven by the core) awaits a future that a
 *      timer resolves, then a job run in the thread pool
 *   4. a signal is caught and delivered as an ordinary loop callback
 */
#include <globeflower.h>

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static gfl_loop *loop;
static double started;

static void say(const char *what)
{
    printf("  [%6.3f s] %s\n", gfl_loop_time(loop) - started, what);
    fflush(stdout);
}

/* ---- 1. timers ---- */

static int timers_fired;

static void timer_fired(void *arg)
{
    say(arg);
    timers_fired++;
}

/* ---- 2. a thread hands work back ---- */

static char thread_result[64];
static int thread_result_arrived; /* only touched on the loop thread */

static void thread_done(void *arg)
{
    (void)arg;
    say(thread_result);
    thread_result_arrived = 1;
}

static void *worker_thread(void *arg)
{
    (void)arg;
    long sum = 0;
    for (long i = 1; i <= 1000000; i++)
        sum += i;
    snprintf(thread_result, sizeof thread_result, "thread: sum(1..1e6) = %ld, handed back safely", sum);
    /* The only call allowed from another thread; it wakes the loop. */
    gfl_call_soon_threadsafe(loop, thread_done, NULL);
    return NULL;
}

/* ---- 3. a task awaiting futures ---- */

static void resolve_with_answer(void *arg)
{
    gfl_future *f = arg;
    gfl_value *v = gfl_value_int(42);
    gfl_future_set_result(f, v);
    gfl_value_unref(v);
    gfl_future_unref(f);
}

static gfl_value *count_primes(void *arg)
{
    (void)arg;
    int64_t count = 0;
    for (int n = 2; n < 200000; n++) {
        int prime = 1;
        for (int d = 2; d * d <= n; d++)
            if (n % d == 0) {
                prime = 0;
                break;
            }
        count += prime;
    }
    return gfl_value_int(count);
}

/* The coroutine's state: which await it is at. */
struct tour_coroutine {
    int stage;
    char line[96];
};

static void tour_step(gfl_task *task, void *ud, gfl_value *value, gfl_value *error)
{
    struct tour_coroutine *co = ud;
    int64_t n = 0;
    if (error) {
        gfl_task_fail(task, error);
        return;
    }
    switch (co->stage++) {
    case 0: {
        say("task: started, awaiting a future that a timer resolves in 0.3 s");
        gfl_future *f = gfl_future_new(loop);
        gfl_call_later(loop, 0.3, resolve_with_answer, gfl_future_ref(f));
        gfl_task_await(task, f);
        gfl_future_unref(f); /* the task holds its own reference while waiting */
        return;
    }
    case 1: {
        gfl_value_get_int(value, &n);
        snprintf(co->line, sizeof co->line, "task: the future resolved with %lld", (long long)n);
        say(co->line);
        say("task: awaiting a job in the thread pool (counting primes below 200000)");
        gfl_future *job = gfl_run_in_executor(loop, count_primes, NULL, NULL);
        gfl_task_await(task, job);
        gfl_future_unref(job);
        return;
    }
    default:
        gfl_value_get_int(value, &n);
        snprintf(co->line, sizeof co->line, "task: the pool found %lld primes; returning", (long long)n);
        say(co->line);
        gfl_task_return(task, value);
        return;
    }
}

static void task_finished(gfl_future *f, void *arg)
{
    (void)arg;
    int64_t n = 0;
    gfl_value_get_int(gfl_future_value(f), &n);
    char line[80];
    snprintf(line, sizeof line, "done callback: the task's result is %lld", (long long)n);
    say(line);
}

/* ---- 4. a signal ---- */

static void on_sigusr1(void *arg)
{
    (void)arg;
    say("signal: SIGUSR1 caught, delivered as a normal callback (not in signal context)");
    gfl_loop_stop(loop);
}

static void send_signal(void *arg)
{
    (void)arg;
    say("sending SIGUSR1 to ourselves");
    kill(getpid(), SIGUSR1);
}

int main(void)
{
    loop = gfl_loop_new(NULL);
    if (!loop) {
        fprintf(stderr, "tour: cannot create a loop\n");
        return 1;
    }
    started = gfl_loop_time(loop);
    printf("globeflower tour\n");

    printf("1. timers, scheduled as 0.2 s, 0.1 s, 0.15 s, fire in deadline order:\n");
    gfl_call_later(loop, 0.2, timer_fired, "timer: 0.2 s");
    gfl_call_later(loop, 0.1, timer_fired, "timer: 0.1 s");
    gfl_call_later(loop, 0.15, timer_fired, "timer: 0.15 s");
    gfl_handle cancelled = gfl_call_later(loop, 0.12, timer_fired, "timer: cancelled (never printed)");
    gfl_handle_cancel(loop, cancelled);
    while (timers_fired < 3)
        gfl_loop_run_once(loop, -1); /* sleeps until the next timer */

    printf("2. a worker thread hands its result back:\n");
    pthread_t thread;
    pthread_create(&thread, NULL, worker_thread, NULL);
    while (!thread_result_arrived)
        gfl_loop_run_once(loop, 1.0);
    pthread_join(thread, NULL);

    printf("3. a task awaits a future, then the thread pool:\n");
    struct tour_coroutine co = {0};
    gfl_task *task = gfl_task_new(loop, tour_step, &co, NULL);
    gfl_future_add_done_callback(gfl_task_future(task), task_finished, NULL);
    while (gfl_future_state_of(gfl_task_future(task)) == GFL_FUTURE_PENDING)
        gfl_loop_run_once(loop, 1.0);
    gfl_loop_run_once(loop, 0); /* the done callback */
    gfl_task_unref(task);

    printf("4. signals:\n");
    gfl_add_signal_handler(loop, SIGUSR1, on_sigusr1, NULL);
    gfl_call_later(loop, 0.05, send_signal, NULL);
    gfl_loop_run(loop); /* until the signal handler stops it */

    gfl_loop_free(loop);
    printf("tour finished.\n");
    return 0;
}
