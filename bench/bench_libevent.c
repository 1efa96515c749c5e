/*
 * The libevent peer of bench_loop.c: the same work written directly on
 * libevent 2.1, the way a libevent program would do it.
 *
 *   batch         N x (event_new + event_active); one
 *                 event_base_loop(EVLOOP_NONBLOCK) runs them; each callback
 *                 event_free()s its event (a one-shot deferred call, which is
 *                 also what event_base_once does internally)
 *   chain         one event re-activated from its own callback; the base is
 *                 configured with max_dispatch_callbacks = 1 so that, like
 *                 asyncio, every callback is followed by a real poll
 *   timers        one evtimer per timer: event_new + evtimer_add (same
 *                 deadlines as bench_loop), untimed wait until all are due,
 *                 then the loop fires them; each callback event_free()s
 *   timers_spread the same, run at once through the 1 s spread
 *   cancel        event_del + event_free for each of N pending timers, then
 *                 one event_base_loop(EVLOOP_NONBLOCK)
 *   idle          event_base_loop(EVLOOP_NONBLOCK) with nothing to do
 *
 * The same --fds idle socket ends are registered (EV_READ | EV_PERSIST).
 */
#include <event2/event.h>

#include "bench_common.h"

#define IMPL "libevent"

static struct event_base *base;
static long counter;
static long target;

static void never(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    fprintf(stderr, "bench_libevent: an idle fd became readable\n");
    exit(2);
}

static void setup(int nfds, int one_callback_per_poll)
{
    struct event_config *cfg = event_config_new();
    if (!cfg)
        bench_die("event_config_new");
    /* The same flag globeflower uses: one thread per base, no locking. */
    event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK);
    if (one_callback_per_poll && event_config_set_max_dispatch_interval(cfg, NULL, 1, 0) < 0)
        bench_die("event_config_set_max_dispatch_interval");
    base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    if (!base)
        bench_die("event_base_new_with_config");
    int *fds = bench_idle_fds(nfds);
    for (int i = 0; i < nfds; i++) {
        struct event *ev = event_new(base, fds[i], EV_READ | EV_PERSIST, never, NULL);
        if (!ev || event_add(ev, NULL) < 0)
            bench_die("event_add");
    }
    free(fds);
}

static void expect(long want, const char *bench)
{
    if (counter != want) {
        fprintf(stderr, "bench_libevent: %s: %ld callbacks ran, expected %ld\n", bench, counter, want);
        exit(2);
    }
}

/* A one-shot callback that frees its own event. */
static void count_free_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    counter++;
    event_free(arg);
}

/* ---- batch ---- */

static void batch_round(long n, struct bench_acc *acc)
{
    counter = 0;
    if (acc)
        bench_begin(acc);
    for (long i = 0; i < n; i++) {
        struct event *ev = event_new(base, -1, 0, count_free_cb, event_self_cbarg());
        event_active(ev, EV_TIMEOUT, 0);
    }
    event_base_loop(base, EVLOOP_NONBLOCK);
    if (acc)
        bench_end(acc);
    expect(n, "batch");
}

/* ---- chain ---- */

static void chain_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    if (++counter < target)
        event_active(arg, EV_TIMEOUT, 0);
    else
        event_base_loopbreak(base);
}

static void chain_round(long n, struct bench_acc *acc)
{
    counter = 0;
    target = n;
    if (acc)
        bench_begin(acc);
    struct event *ev = event_new(base, -1, 0, chain_cb, event_self_cbarg());
    event_active(ev, EV_TIMEOUT, 0);
    event_base_dispatch(base);
    event_free(ev);
    if (acc)
        bench_end(acc);
    expect(n, "chain");
}

/* ---- timers ---- */

static void fire_all(long n)
{
    while (counter < n)
        if (event_base_loop(base, EVLOOP_ONCE) < 0)
            bench_die("event_base_loop");
}

static struct timeval tv_of(double s)
{
    struct timeval tv;
    long us = (long)(s * 1e6 + 0.5);
    tv.tv_sec = us / 1000000;
    tv.tv_usec = us % 1000000;
    return tv;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void timers_warmup(long n)
{
    counter = 0;
    struct timeval zero = {0, 0};
    for (long i = 0; i < n; i++) {
        struct event *ev = evtimer_new(base, count_free_cb, event_self_cbarg());
        if (!ev || evtimer_add(ev, &zero) < 0)
            bench_die("evtimer_add");
    }
    fire_all(n);
}

static void timers_round(long n, const double *delays, int spread, struct bench_acc *acc)
{
    counter = 0;
    double t0 = now();
    struct bench_acc sched = {0}, fire = {0};
    bench_begin(&sched);
    for (long i = 0; i < n; i++) {
        struct timeval tv = tv_of(delays[i]);
        struct event *ev = evtimer_new(base, count_free_cb, event_self_cbarg());
        evtimer_add(ev, &tv);
    }
    bench_end(&sched);
    if (!spread) {
        double left = t0 + 1.0 + 0.005 - now();
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

static void cancel_round(long n, const double *delays, struct event **evs, struct bench_acc *acc)
{
    counter = 0;
    for (long i = 0; i < n; i++) {
        struct timeval tv = tv_of(delays[i]);
        evs[i] = evtimer_new(base, count_free_cb, event_self_cbarg());
        if (!evs[i] || evtimer_add(evs[i], &tv) < 0)
            bench_die("evtimer_add");
    }
    long bad = 0;
    if (acc)
        bench_begin(acc);
    for (long i = 0; i < n; i++) {
        bad += event_del(evs[i]) != 0;
        event_free(evs[i]);
    }
    event_base_loop(base, EVLOOP_NONBLOCK);
    if (acc)
        bench_end(acc);
    if (bad) {
        fprintf(stderr, "bench_libevent: cancel: %ld failed\n", bad);
        exit(2);
    }
    expect(0, "cancel");
}

/* ---- idle ---- */

static void idle_round(long n, struct bench_acc *acc)
{
    if (acc)
        bench_begin(acc);
    for (long i = 0; i < n; i++)
        event_base_loop(base, EVLOOP_NONBLOCK);
    if (acc)
        bench_end(acc);
}

int main(int argc, char **argv)
{
    struct bench_args a;
    if (bench_parse(argc, argv, &a, "batch chain timers timers_spread cancel idle") < 0)
        return 2;
    long n = a.n ? a.n : 1000000;
    struct bench_acc acc = {0};
    setup(a.fds, strcmp(a.bench, "chain") == 0);

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
        struct event **evs = malloc((size_t)n * sizeof *evs);
        if (!evs)
            bench_die("malloc");
        cancel_round(n, d, evs, NULL);
        cancel_round(n, d, evs, &acc);
        free(evs);
        free(d);
    } else if (strcmp(a.bench, "idle") == 0) {
        idle_round(n / 10 > 0 ? n / 10 : 1, NULL);
        idle_round(n, &acc);
    } else {
        fprintf(stderr, "bench_libevent: unknown or unsupported benchmark %s\n", a.bench);
        return 2;
    }
    bench_report(a.bench, IMPL, n, a.fds, &acc);
    return 0;
}
