/*
 * globeflower side of the loop benchmarks (public API only).
 * See bench_common.h for the output format and bench/run for the driver;
 * bench_libevent.c does the same work directly on libevent.
 *
 *   batch         N x gfl_call_soon, then one gfl_loop_run_once(0) runs them
 *   chain         each callback gfl_call_soon()s the next: one iteration
 *                 (one real poll) per callback, under gfl_loop_run
 *   timers        N x gfl_call_later(uniform [0,1s)), fixed seed; the wait
 *                 until all are due is NOT timed, then the loop fires them:
 *                 scheduling + firing cost per timer, no sleeping
 *   timers_spread the same, but the loop runs at once through the 1 s spread
 *                 (wall includes sleeping; read the CPU column)
 *   cancel        N timers at [1,2s) scheduled untimed; timed: cancel each,
 *                 then one run_once(0) that discards what is left
 *   future        gfl_future_new + add_done_callback + set_result + unref,
 *                 callback run by run_once(0) (in batches of 1024)
 *   idle          gfl_loop_run_once(loop, 0) with nothing to do
 *
 * Every loop has --fds (default 1000) idle socket ends watched with
 * gfl_add_reader. Each benchmark runs once untimed (warm-up: arrays grown,
 * allocator primed) and then once timed.
 */
#include "globeflower.h"
#include "bench_common.h"

#define IMPL "globeflower"

static gfl_loop *loop;
static long counter;
static long target;

static void check(long rc, const char *what)
{
    if (rc < 0) {
        fprintf(stderr, "bench_loop: %s: %s\n", what, gfl_strerror((int)rc));
        exit(2);
    }
}

static void never(void *arg)
{
    (void)arg;
    fprintf(stderr, "bench_loop: an idle fd became readable\n");
    exit(2);
}

static void count_cb(void *arg)
{
    (void)arg;
    counter++;
}

static void setup(int nfds)
{
    loop = gfl_loop_new(NULL);
    if (!loop)
        bench_die("gfl_loop_new");
    int *fds = bench_idle_fds(nfds);
    for (int i = 0; i < nfds; i++)
        check(gfl_add_reader(loop, fds[i], never, NULL), "gfl_add_reader");
    free(fds); /* left open until exit */
}

static void expect(long want, const char *bench)
{
    if (counter != want) {
        fprintf(stderr, "bench_loop: %s: %ld callbacks ran, expected %ld\n", bench, counter, want);
        exit(2);
    }
}

/* ---- batch ---- */

static void batch_round(long n, struct bench_acc *acc)
{
    counter = 0;
    if (acc)
        bench_begin(acc);
    for (long i = 0; i < n; i++)
        gfl_call_soon(loop, count_cb, NULL);
    long ran = gfl_loop_run_once(loop, 0);
    if (acc)
        bench_end(acc);
    check(ran, "run_once");
    expect(n, "batch");
}

/* ---- chain ---- */

static void chain_cb(void *arg)
{
    (void)arg;
    if (++counter < target)
        gfl_call_soon(loop, chain_cb, NULL);
    else
        gfl_loop_stop(loop);
}

static void chain_round(long n, struct bench_acc *acc)
{
    counter = 0;
    target = n;
    if (acc)
        bench_begin(acc);
    check(gfl_call_soon(loop, chain_cb, NULL), "call_soon");
    check(gfl_loop_run(loop), "run");
    if (acc)
        bench_end(acc);
    expect(n, "chain");
}

/* ---- timers ---- */

static void fire_all(long n)
{
    while (counter < n)
        check(gfl_loop_run_once(loop, -1), "run_once");
}

static void timers_warmup(long n)
{
    counter = 0;
    for (long i = 0; i < n; i++)
        check(gfl_call_later(loop, 0, count_cb, NULL), "call_later");
    fire_all(n);
}

static void timers_round(long n, const double *delays, int spread, struct bench_acc *acc)
{
    counter = 0;
    double t0 = gfl_loop_time(loop);
    struct bench_acc sched = {0}, fire = {0};
    bench_begin(&sched);
    for (long i = 0; i < n; i++)
        gfl_call_later(loop, delays[i], count_cb, NULL);
    bench_end(&sched);
    if (!spread) {
        /* Untimed: wait until every deadline (all < t0 + 1 s) has passed. */
        double left = t0 + 1.0 + 0.005 - gfl_loop_time(loop);
        if (left > 0)
            bench_sleep(left);
    }
    bench_begin(&fire);
    fire_all(n);
    bench_end(&fire);
    bench_phase("schedule", n, &sched);
    bench_phase("fire", n, &fire);
    acc->wall = sched.wall + fire.wall;
    acc->user = sched.user + fire.user;
    acc->sys = sched.sys + fire.sys;
    expect(n, "timers");
}

/* ---- cancel ---- */

static void cancel_round(long n, const double *delays, gfl_handle *h, struct bench_acc *acc)
{
    counter = 0;
    for (long i = 0; i < n; i++) {
        h[i] = gfl_call_later(loop, delays[i], count_cb, NULL);
        check(h[i], "call_later");
    }
    long bad = 0;
    if (acc)
        bench_begin(acc);
    for (long i = 0; i < n; i++)
        bad += gfl_handle_cancel(loop, h[i]) != 0;
    long ran = gfl_loop_run_once(loop, 0);
    if (acc)
        bench_end(acc);
    if (bad || ran != 0 || gfl_loop_backend_timeout(loop) != -1.0) {
        fprintf(stderr, "bench_loop: cancel: %ld failed cancels, %ld ran, timeout %g\n", bad, ran,
                gfl_loop_backend_timeout(loop));
        exit(2);
    }
    expect(0, "cancel");
}

/* ---- future ---- */

#define FUTURE_BATCH 1024

static void future_cb(gfl_future *f, void *arg)
{
    (void)f;
    (void)arg;
    counter++;
}

static void future_round(long n, gfl_value *v, struct bench_acc *acc)
{
    counter = 0;
    if (acc)
        bench_begin(acc);
    for (long done = 0; done < n;) {
        long b = n - done < FUTURE_BATCH ? n - done : FUTURE_BATCH;
        for (long i = 0; i < b; i++) {
            gfl_future *f = gfl_future_new(loop);
            gfl_future_add_done_callback(f, future_cb, NULL);
            gfl_future_set_result(f, v);
            gfl_future_unref(f);
        }
        gfl_loop_run_once(loop, 0);
        done += b;
    }
    if (acc)
        bench_end(acc);
    expect(n, "future");
}

/* ---- idle ---- */

static void idle_round(long n, struct bench_acc *acc)
{
    long ran = 0;
    if (acc)
        bench_begin(acc);
    for (long i = 0; i < n; i++)
        ran += gfl_loop_run_once(loop, 0);
    if (acc)
        bench_end(acc);
    if (ran != 0) {
        fprintf(stderr, "bench_loop: idle: %ld callbacks ran\n", ran);
        exit(2);
    }
}

int main(int argc, char **argv)
{
    struct bench_args a;
    if (bench_parse(argc, argv, &a, "batch chain timers timers_spread cancel future idle") < 0)
        return 2;
    long n = a.n ? a.n : 1000000;
    struct bench_acc acc = {0};
    setup(a.fds);

    if (strcmp(a.bench, "batch") == 0) {
        batch_round(n, NULL);
        batch_round(n, &acc);
    } else if (strcmp(a.bench, "chain") == 0) {
        chain_round(n / 10 > 0 ? n / 10 : 1, NULL);
        chain_round(n, &acc);
    } else if (strcmp(a.bench, "timers") == 0 || strcmp(a.bench, "timers_spread") == 0) {
        double *d = bench_delays(n, 0.0, 1.0);
        timers_warmup(n);
        timers_round(n, d, strcmp(a.bench, "timers_spread") == 0, &acc);
        free(d);
    } else if (strcmp(a.bench, "cancel") == 0) {
        double *d = bench_delays(n, 1.0, 1.0);
        gfl_handle *h = malloc((size_t)n * sizeof *h);
        if (!h)
            bench_die("malloc");
        cancel_round(n, d, h, NULL);
        cancel_round(n, d, h, &acc);
        free(h);
        free(d);
    } else if (strcmp(a.bench, "future") == 0) {
        gfl_value *v = gfl_value_int(42);
        future_round(n, v, NULL);
        future_round(n, v, &acc);
        gfl_value_unref(v);
    } else if (strcmp(a.bench, "idle") == 0) {
        idle_round(n / 10 > 0 ? n / 10 : 1, NULL);
        idle_round(n, &acc);
    } else {
        fprintf(stderr, "bench_loop: unknown benchmark %s\n", a.bench);
        return 2;
    }
    bench_report(a.bench, IMPL, n, a.fds, &acc);
    gfl_loop_free(loop);
    return 0;
}
