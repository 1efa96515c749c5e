/*
 * Shared by bench_loop.c (globeflower) and bench_libevent.c (the libevent
 * peer): timing, the idle descriptors, the fixed-seed random deadlines and
 * the result line.
 *
 * Every benchmark program prints exactly one line per measurement:
 *
 *   RESULT bench=<name> impl=<impl> n=<ops> wall_ns=<per op> cpu_ns=<per op> \
 *          user_ns=<per op> sys_ns=<per op> fds=<idle fds>
 *
 * wall is CLOCK_MONOTONIC, cpu is getrusage(RUSAGE_SELF) user+sys, both
 * divided by the number of operations. Anything else printed is a comment.
 */
#ifndef GFL_BENCH_COMMON_H
#define GFL_BENCH_COMMON_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BENCH_DEFAULT_FDS 1000
#define BENCH_SEED UINT64_C(0x9e3779b97f4a7c15)

struct bench_clock {
    double wall; /* seconds */
    double user, sys; /* seconds of CPU */
};

static inline void bench_now(struct bench_clock *c)
{
    struct timespec ts;
    struct rusage ru;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    getrusage(RUSAGE_SELF, &ru);
    c->wall = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
    c->user = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6;
    c->sys = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

/* Accumulates timed phases (a benchmark may exclude an untimed gap). */
struct bench_acc {
    double wall, user, sys;
    struct bench_clock start;
};

static inline void bench_begin(struct bench_acc *a)
{
    bench_now(&a->start);
}

static inline void bench_end(struct bench_acc *a)
{
    struct bench_clock e;
    bench_now(&e);
    a->wall += e.wall - a->start.wall;
    a->user += e.user - a->start.user;
    a->sys += e.sys - a->start.sys;
}

static inline void bench_report(const char *bench, const char *impl, long n, int fds, const struct bench_acc *a)
{
    double k = 1e9 / (double)n;
    printf("RESULT bench=%s impl=%s n=%ld wall_ns=%.3f cpu_ns=%.3f user_ns=%.3f sys_ns=%.3f fds=%d\n",
           bench, impl, n, a->wall * k, (a->user + a->sys) * k, a->user * k, a->sys * k, fds);
    fflush(stdout);
}

/* A comment line with one phase of a benchmark (bench/run ignores it). */
static inline void bench_phase(const char *phase, long n, const struct bench_acc *a)
{
    double k = 1e9 / (double)n;
    printf("# phase %s: wall_ns=%.3f cpu_ns=%.3f\n", phase, a->wall * k, (a->user + a->sys) * k);
}

static inline void bench_die(const char *what)
{
    fprintf(stderr, "bench: %s failed (errno %d: %s)\n", what, errno, strerror(errno));
    exit(2);
}

/* splitmix64: the same sequence in both programs for the same seed. */
static inline uint64_t bench_rand(uint64_t *state)
{
    uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

/* n delays uniform in [lo, lo + span) seconds, rounded to whole microseconds
 * (libevent's timeval resolution) so both sides sort the same keys. */
static inline double *bench_delays(long n, double lo, double span)
{
    double *d = malloc((size_t)n * sizeof *d);
    if (!d)
        bench_die("malloc");
    uint64_t s = BENCH_SEED;
    long us_span = (long)(span * 1e6);
    for (long i = 0; i < n; i++)
        d[i] = lo + (double)(bench_rand(&s) % (uint64_t)us_span) * 1e-6;
    return d;
}

/* `count` idle descriptors: both ends of count/2 socketpairs. Nothing is
 * ever written, so none becomes readable; they only make the poll real. */
static inline int *bench_idle_fds(int count)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)count + 64) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    int *fds = malloc(((size_t)count + 1) * sizeof *fds);
    if (!fds)
        bench_die("malloc");
    for (int i = 0; i + 1 < count; i += 2) {
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds + i) < 0)
            bench_die("socketpair");
    }
    if (count % 2) {
        int sp[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sp) < 0)
            bench_die("socketpair");
        fds[count - 1] = sp[0]; /* sp[1] stays open, unwatched */
    }
    return fds;
}

static inline void bench_sleep(double seconds)
{
    struct timespec ts = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* Command line: <program> <bench> [n] [--fds N] */
struct bench_args {
    const char *bench;
    long n;
    int fds;
};

static inline int bench_parse(int argc, char **argv, struct bench_args *a, const char *usage)
{
    a->bench = NULL;
    a->n = 0;
    a->fds = BENCH_DEFAULT_FDS;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--fds") == 0 && i + 1 < argc)
            a->fds = atoi(argv[++i]);
        else if (!a->bench)
            a->bench = argv[i];
        else if (!a->n)
            a->n = atol(argv[i]);
        else
            goto bad;
    }
    if (!a->bench || a->n < 0 || a->fds < 0)
        goto bad;
    return 0;
bad:
    fprintf(stderr, "usage: %s <bench> [n] [--fds N]\nbenches: %s\n", argv[0], usage);
    return -1;
}

#endif
