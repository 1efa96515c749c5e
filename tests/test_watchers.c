/* fd watchers (add/remove reader/writer) and the backend fd for foreign
 * main loops, on real pipes and socketpairs. Every wait is a bounded number
 * of loop iterations; timings are only generous sanity bounds. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "globeflower.h"

/* ---- a counting allocator: everything the loop allocates comes back ---- */

static atomic_long live_blocks;
static atomic_int fail_after = -1; /* >= 0: that many more allocations succeed */

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

static void setup(void)
{
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

TestSuite(watchers, .init = setup, .fini = teardown, .timeout = 20);
TestSuite(backend, .init = setup, .fini = teardown, .timeout = 20);

/* ---- helpers ---- */

struct counter {
    int calls;
    int fd;         /* read from it (drain) when >= 0 and `drain` is set */
    bool drain;
    char last[16];
};

static void count_cb(void *arg)
{
    struct counter *c = arg;
    c->calls++;
    if (c->drain && c->fd >= 0) {
        ssize_t n = read(c->fd, c->last, sizeof c->last - 1);
        c->last[n > 0 ? n : 0] = '\0';
    }
}

/* Runs iterations (each blocking at most 50 ms) until *flag >= want. */
static void pump_until(const int *flag, int want, int max_iterations)
{
    for (int i = 0; i < max_iterations && *flag < want; i++)
        cr_assert_geq(gfl_loop_run_once(loop, 0.05), 0);
}

static void make_pipe(int p[2])
{
    cr_assert_eq(pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
}

static void make_socketpair(int s[2])
{
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, s), 0);
}

static void write_byte(int fd, char c)
{
    cr_assert_eq(write(fd, &c, 1), 1);
}

static int timer_ran;
static void timer_cb(void *arg)
{
    (void)arg;
    timer_ran++;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* With nothing ready, run_once(0.05) must block. Counts the calls that
 * return early over a fixed 0.3 s (not a timing measurement: a spinning loop
 * returns early every time, tens of thousands of calls; a blocking one makes
 * about six calls, none early) and the CPU spent meanwhile. */
#define IDLE_WINDOW 0.3
static void assert_loop_blocks_at(const char *where)
{
    int calls = 0, early = 0;
    double start = now_s(), cpu0 = cpu_s();
    while (now_s() - start < IDLE_WINDOW) {
        double t0 = now_s();
        gfl_loop_run_once(loop, 0.05);
        if (now_s() - t0 < 0.02)
            early++;
        calls++;
    }
    double cpu = cpu_s() - cpu0;
    cr_log_info("%s: %d run_once(0.05) calls in %.1f s, %d returned early, %.3f s CPU",
                where, calls, IDLE_WINDOW, early, cpu);
    cr_assert_leq(early, 2, "%s: the loop spins: %d of %d run_once(0.05) returned at once (%.3f s CPU)",
                  where, early, calls, cpu);
    cr_assert_lt(cpu, IDLE_WINDOW / 2, "%s: %.3f s CPU in %.1f s idle", where, cpu, IDLE_WINDOW);
}
#define cr_assert_loop_blocks() assert_loop_blocks_at(__func__)

/* ---- readers and writers ---- */

Test(watchers, reader_called_when_data_arrives)
{
    int p[2];
    make_pipe(p);
    struct counter c = { .fd = p[0], .drain = true };
    cr_assert_eq(gfl_add_reader(loop, p[0], count_cb, &c), 0);

    for (int i = 0; i < 3; i++)
        gfl_loop_run_once(loop, 0);
    cr_assert_eq(c.calls, 0, "no data yet: the reader must not run");

    cr_assert_eq(write(p[1], "hello", 5), 5);
    pump_until(&c.calls, 1, 100);
    cr_assert_eq(c.calls, 1);
    cr_assert_str_eq(c.last, "hello");

    /* Drained: no more calls until more data. */
    for (int i = 0; i < 3; i++)
        gfl_loop_run_once(loop, 0);
    cr_assert_eq(c.calls, 1);

    cr_assert_eq(gfl_remove_reader(loop, p[0]), 1);
    close(p[0]);
    close(p[1]);
}

Test(watchers, reader_runs_once_per_iteration_while_ready)
{
    int p[2];
    make_pipe(p);
    struct counter c = { .fd = -1 }; /* never drains: stays readable */
    write_byte(p[1], 'x');
    cr_assert_eq(gfl_add_reader(loop, p[0], count_cb, &c), 0);
    for (int i = 1; i <= 5; i++) {
        gfl_loop_run_once(loop, 0);
        cr_assert_eq(c.calls, i, "level-triggered, exactly once per iteration");
    }
    cr_assert_eq(gfl_remove_reader(loop, p[0]), 1);
    close(p[0]);
    close(p[1]);
}

static int order[8];
static int norder;
static void record_1(void *arg) { (void)arg; order[norder++] = 1; }
static void record_3(void *arg) { (void)arg; order[norder++] = 3; }
static void reader_schedules(void *arg)
{
    (void)arg;
    order[norder++] = 2;
    /* Queued from a ready callback: runs next iteration, not this one. */
    cr_assert_gt(gfl_call_soon(loop, record_3, NULL), 0);
}

Test(watchers, callback_is_queued_with_the_ready_callbacks)
{
    int p[2];
    make_pipe(p);
    write_byte(p[1], 'x');
    norder = 0;
    cr_assert_gt(gfl_call_soon(loop, record_1, NULL), 0);
    cr_assert_eq(gfl_add_reader(loop, p[0], reader_schedules, NULL), 0);
    cr_assert_eq(gfl_loop_run_once(loop, 0), 2, "call_soon + reader in one iteration");
    cr_assert_eq(norder, 2);
    cr_assert_eq(order[0], 1, "callbacks ready before the poll run first");
    cr_assert_eq(order[1], 2);
    cr_assert_eq(gfl_remove_reader(loop, p[0]), 1);
    gfl_loop_run_once(loop, 0);
    cr_assert_eq(norder, 3);
    cr_assert_eq(order[2], 3);
    close(p[0]);
    close(p[1]);
}

Test(watchers, writer_called_when_writable)
{
    int s[2];
    make_socketpair(s);
    struct counter c = { .fd = -1 };
    cr_assert_eq(gfl_add_writer(loop, s[0], count_cb, &c), 0);
    pump_until(&c.calls, 1, 100);
    cr_assert_eq(c.calls, 1);
    cr_assert_eq(gfl_remove_writer(loop, s[0]), 1);
    cr_assert_eq(gfl_remove_writer(loop, s[0]), 0, "already removed");
    for (int i = 0; i < 3; i++)
        gfl_loop_run_once(loop, 0);
    cr_assert_eq(c.calls, 1, "removed: no more calls");
    close(s[0]);
    close(s[1]);
}

Test(watchers, writer_waits_for_space)
{
    int s[2];
    make_socketpair(s);
    /* Fill the socket buffer so it is not writable. */
    char buf[4096];
    memset(buf, 'z', sizeof buf);
    while (write(s[0], buf, sizeof buf) > 0)
        ;
    cr_assert_eq(errno, EAGAIN);
    struct counter c = { .fd = -1 };
    cr_assert_eq(gfl_add_writer(loop, s[0], count_cb, &c), 0);
    for (int i = 0; i < 3; i++)
        gfl_loop_run_once(loop, 0);
    cr_assert_eq(c.calls, 0, "full buffer: not writable");
    /* Drain the peer: space appears. */
    while (read(s[1], buf, sizeof buf) > 0)
        ;
    pump_until(&c.calls, 1, 100);
    cr_assert_geq(c.calls, 1);
    cr_assert_eq(gfl_remove_writer(loop, s[0]), 1);
    close(s[0]);
    close(s[1]);
}

Test(watchers, reader_and_writer_on_one_fd)
{
    int s[2];
    make_socketpair(s);
    struct counter r = { .fd = s[0], .drain = true }, w = { .fd = -1 };
    cr_assert_eq(gfl_add_reader(loop, s[0], count_cb, &r), 0);
    cr_assert_eq(gfl_add_writer(loop, s[0], count_cb, &w), 0);
    write_byte(s[1], 'a');
    gfl_loop_run_once(loop, 0.05);
    cr_assert_eq(r.calls, 1);
    cr_assert_eq(w.calls, 1);

    /* Removing the writer leaves the reader working. */
    cr_assert_eq(gfl_remove_writer(loop, s[0]), 1);
    write_byte(s[1], 'b');
    pump_until(&r.calls, 2, 100);
    cr_assert_eq(r.calls, 2);
    cr_assert_str_eq(r.last, "b");
    cr_assert_eq(w.calls, 1);

    /* And the reader alone can go too. */
    cr_assert_eq(gfl_remove_reader(loop, s[0]), 1);
    write_byte(s[1], 'c');
    for (int i = 0; i < 3; i++)
        gfl_loop_run_once(loop, 0);
    cr_assert_eq(r.calls, 2);
    close(s[0]);
    close(s[1]);
}

Test(watchers, remove_stops_calls)
{
    int p[2];
    make_pipe(p);
    struct counter c = { .fd = p[0], .drain = true };
    cr_assert_eq(gfl_add_reader(loop, p[0], count_cb, &c), 0);
    cr_assert_eq(gfl_remove_reader(loop, p[0]), 1);
    cr_assert_eq(gfl_remove_reader(loop, p[0]), 0);
    write_byte(p[1], 'x');
    for (int i = 0; i < 5; i++)
        gfl_loop_run_once(loop, 0.01);
    cr_assert_eq(c.calls, 0);
    close(p[0]);
    close(p[1]);
}

Test(watchers, adding_again_replaces)
{
    int p[2];
    make_pipe(p);
    struct counter a = { .fd = p[0], .drain = true }, b = { .fd = p[0], .drain = true };
    cr_assert_eq(gfl_add_reader(loop, p[0], count_cb, &a), 0);
    cr_assert_eq(gfl_add_reader(loop, p[0], count_cb, &b), 0);
    write_byte(p[1], 'x');
    pump_until(&b.calls, 1, 100);
    cr_assert_eq(b.calls, 1);
    cr_assert_eq(a.calls, 0, "the replaced reader never runs");
    cr_assert_eq(gfl_remove_reader(loop, p[0]), 1, "one reader per fd");
    cr_assert_eq(gfl_remove_reader(loop, p[0]), 0);
    close(p[0]);
    close(p[1]);
}

/* Two readers queued in one iteration; whichever runs first removes the
 * other, whose queued callback must then never run. */
static int pipes[2][2];
static int ran[2];
static void remove_other(void *arg)
{
    int me = (int)(intptr_t)arg;
    ran[me]++;
    /* The first call removes it; later ones find nothing to remove. */
    cr_assert_eq(gfl_remove_reader(loop, pipes[!me][0]), ran[me] == 1 ? 1 : 0);
}

Test(watchers, remove_cancels_a_queued_callback)
{
    make_pipe(pipes[0]);
    make_pipe(pipes[1]);
    ran[0] = ran[1] = 0;
    for (int k = 0; k < 2; k++) {
        write_byte(pipes[k][1], 'x');
        cr_assert_eq(gfl_add_reader(loop, pipes[k][0], remove_other, (void *)(intptr_t)k), 0);
    }
    cr_assert_geq(gfl_loop_run_once(loop, 0.05), 1);
    cr_assert_eq(ran[0] + ran[1], 1, "the removed reader's queued callback did not run");
    int survivor = ran[0] ? 0 : 1;
    for (int i = 0; i < 3; i++)
        gfl_loop_run_once(loop, 0);
    cr_assert_eq(ran[!survivor], 0);
    cr_assert_eq(ran[survivor], 4, "the survivor still fires (never drained)");
    cr_assert_eq(gfl_remove_reader(loop, pipes[survivor][0]), 1);
    for (int k = 0; k < 2; k++) {
        close(pipes[k][0]);
        close(pipes[k][1]);
    }
}

/* Same, but the first to run replaces the other's reader: the old queued
 * callback is cancelled and the replacement fires in later iterations. */
static struct counter replacement;
static void replace_other(void *arg)
{
    int me = (int)(intptr_t)arg;
    ran[me]++;
    if (ran[!me] == 0 && replacement.calls == 0 && replacement.fd < 0) {
        replacement.fd = pipes[!me][0];
        cr_assert_eq(gfl_add_reader(loop, pipes[!me][0], count_cb, &replacement), 0);
    }
}

Test(watchers, replace_cancels_a_queued_callback)
{
    make_pipe(pipes[0]);
    make_pipe(pipes[1]);
    ran[0] = ran[1] = 0;
    replacement = (struct counter){ .fd = -1, .drain = true };
    for (int k = 0; k < 2; k++) {
        write_byte(pipes[k][1], 'x');
        cr_assert_eq(gfl_add_reader(loop, pipes[k][0], replace_other, (void *)(intptr_t)k), 0);
    }
    gfl_loop_run_once(loop, 0.05);
    cr_assert_eq(ran[0] + ran[1], 1);
    cr_assert_eq(replacement.calls, 0, "a replacement is not queued retroactively");
    int replaced = replacement.fd == pipes[0][0] ? 0 : 1;
    pump_until(&replacement.calls, 1, 100);
    cr_assert_eq(replacement.calls, 1);
    cr_assert_eq(ran[replaced], 0, "the replaced reader's queued callback never ran");
    cr_assert_geq(ran[!replaced], 2, "the other one keeps firing (never drained)");
    for (int k = 0; k < 2; k++) {
        gfl_remove_reader(loop, pipes[k][0]);
        close(pipes[k][0]);
        close(pipes[k][1]);
    }
}

static void remove_self(void *arg)
{
    struct counter *c = arg;
    c->calls++;
    cr_assert_eq(gfl_remove_reader(loop, c->fd), 1);
}

Test(watchers, callback_may_remove_itself)
{
    int p[2];
    make_pipe(p);
    struct counter c = { .fd = p[0] };
    write_byte(p[1], 'x');
    cr_assert_eq(gfl_add_reader(loop, p[0], remove_self, &c), 0);
    for (int i = 0; i < 5; i++)
        gfl_loop_run_once(loop, 0.01);
    cr_assert_eq(c.calls, 1);
    close(p[0]);
    close(p[1]);
}

Test(watchers, high_fd_numbers)
{
    int p[2];
    make_pipe(p);
    int high = fcntl(p[0], F_DUPFD_CLOEXEC, 300);
    cr_assert_geq(high, 300);
    struct counter c = { .fd = high, .drain = true };
    cr_assert_eq(gfl_add_reader(loop, high, count_cb, &c), 0);
    write_byte(p[1], 'q');
    pump_until(&c.calls, 1, 100);
    cr_assert_eq(c.calls, 1);
    cr_assert_eq(gfl_remove_reader(loop, high), 1);
    close(high);
    close(p[0]);
    close(p[1]);
}

Test(watchers, bad_arguments)
{
    int p[2];
    make_pipe(p);
    struct counter c = { .fd = -1 };
    cr_assert_eq(gfl_add_reader(loop, -1, count_cb, &c), GFL_EBADF);
    cr_assert_eq(gfl_add_writer(loop, -5, count_cb, &c), GFL_EBADF);
    cr_assert_eq(gfl_add_reader(NULL, p[0], count_cb, &c), GFL_EINVAL);
    cr_assert_eq(gfl_add_reader(loop, p[0], NULL, &c), GFL_EINVAL);
    cr_assert_eq(gfl_add_writer(loop, p[1], NULL, &c), GFL_EINVAL);
    cr_assert_eq(gfl_remove_reader(NULL, p[0]), GFL_EINVAL);
    cr_assert_eq(gfl_remove_reader(loop, -1), GFL_EBADF);
    cr_assert_eq(gfl_remove_writer(loop, -1), GFL_EBADF);
    cr_assert_eq(gfl_remove_reader(loop, p[0]), 0, "never watched");
    cr_assert_eq(gfl_remove_writer(loop, 100000), 0, "beyond the table");

    /* A closed fd. */
    int closed = dup(p[0]);
    close(closed);
    cr_assert_eq(gfl_add_reader(loop, closed, count_cb, &c), GFL_EBADF);
    cr_assert_eq(gfl_add_writer(loop, closed, count_cb, &c), GFL_EBADF);
    cr_assert_eq(gfl_add_reader(loop, 1 << 30, count_cb, &c), GFL_EBADF);
    close(p[0]);
    close(p[1]);
}

Test(watchers, regular_file_is_refused_cleanly)
{
    char path[] = "/tmp/gfl-watchers-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    unlink(path);
    struct counter c = { .fd = -1 };
    int rc = gfl_add_reader(loop, fd, count_cb, &c);
    /* epoll cannot watch regular files (asyncio: PermissionError); other
     * backends can. Either way it is a clean answer. */
    cr_assert(rc == GFL_EPERM || rc == 0, "rc = %d", rc);
    if (rc == 0)
        cr_assert_eq(gfl_remove_reader(loop, fd), 1);
    else
        cr_assert_eq(gfl_remove_reader(loop, fd), 0, "nothing was left registered");
    close(fd);
}

static gfl_loop *shared_loop;
static void *add_from_thread(void *arg)
{
    int fd = *(int *)arg;
    struct counter c = { .fd = -1 };
    intptr_t rc1 = gfl_add_reader(shared_loop, fd, count_cb, &c);
    intptr_t rc2 = gfl_remove_reader(shared_loop, fd);
    return (void *)(rc1 == GFL_EWRONGTHREAD && rc2 == GFL_EWRONGTHREAD ? (intptr_t)1 : 0);
}

Test(watchers, wrong_thread)
{
    int p[2];
    make_pipe(p);
    shared_loop = loop;
    pthread_t t;
    void *ok;
    cr_assert_eq(pthread_create(&t, NULL, add_from_thread, &p[0]), 0);
    pthread_join(t, &ok);
    cr_assert_eq((intptr_t)ok, 1);
    close(p[0]);
    close(p[1]);
}

Test(watchers, after_close_is_an_error)
{
    gfl_loop *l = gfl_loop_new(NULL);
    cr_assert_not_null(l);
    gfl_loop_ref(l); /* keep the memory so the closed loop can be asked */
    cr_assert_eq(gfl_loop_free(l), 0);
    int p[2];
    make_pipe(p);
    struct counter c = { .fd = -1 };
    cr_assert_eq(gfl_add_reader(l, p[0], count_cb, &c), GFL_ECLOSED);
    cr_assert_eq(gfl_remove_reader(l, p[0]), GFL_ECLOSED);
    cr_assert_eq(gfl_loop_unref(l), 0);
    close(p[0]);
    close(p[1]);
}

/* Closing the loop with watchers registered (and readiness pending) frees
 * everything: the teardown checks the allocator balance, valgrind libevent's. */
Test(watchers, closing_the_loop_leaks_nothing)
{
    int p[4][2];
    struct counter c = { .fd = -1 };
    for (int k = 0; k < 4; k++) {
        make_socketpair(p[k]);
        write_byte(p[k][1], 'x');
        cr_assert_eq(gfl_add_reader(loop, p[k][0], count_cb, &c), 0);
        cr_assert_eq(gfl_add_writer(loop, p[k][0], count_cb, &c), 0);
    }
    int high = fcntl(p[0][0], F_DUPFD_CLOEXEC, 200);
    cr_assert_eq(gfl_add_reader(loop, high, count_cb, &c), 0);
    gfl_loop_run_once(loop, 0);
    cr_assert_gt(c.calls, 0);
    cr_assert_gt(atomic_load(&live_blocks), 0);
    cr_assert_eq(gfl_loop_free(loop), 0);
    loop = NULL;
    cr_assert_eq(atomic_load(&live_blocks), 0);
    for (int k = 0; k < 4; k++) {
        close(p[k][0]);
        close(p[k][1]);
    }
    close(high);
}

static void quiet_handler(gfl_loop *l, const char *message, gfl_value *error, void *ud)
{
    (void)l;
    (void)message;
    (void)error;
    (*(int *)ud)++;
}

/* Every allocation the watchers make may fail: a clean GFL_ENOMEM, nothing
 * half-registered, and the loop keeps working. */
Test(watchers, out_of_memory_is_clean)
{
    int p[2];
    make_pipe(p);
    int high = fcntl(p[0], F_DUPFD_CLOEXEC, 100);
    cr_assert_geq(high, 100);
    struct counter c = { .fd = -1 };
    bool succeeded = false;
    for (int n = 0; n < 10 && !succeeded; n++) {
        atomic_store(&fail_after, n);
        int rc = gfl_add_reader(loop, high, count_cb, &c);
        atomic_store(&fail_after, -1);
        cr_assert(rc == 0 || rc == GFL_ENOMEM, "rc = %d", rc);
        succeeded = rc == 0;
        if (!succeeded)
            cr_assert_eq(gfl_remove_reader(loop, high), 0, "nothing half-registered");
    }
    cr_assert(succeeded);
    write_byte(p[1], 'x');
    /* Queuing the callback may fail too (reported to the exception
     * handler): it is retried next iteration. */
    int reports = 0;
    cr_assert_eq(gfl_loop_set_exception_handler(loop, quiet_handler, &reports), 0);
    atomic_store(&fail_after, 0);
    gfl_loop_run_once(loop, 0.05);
    atomic_store(&fail_after, -1);
    cr_assert_eq(c.calls, 0);
    cr_assert_eq(reports, 1, "the failure was reported");
    pump_until(&c.calls, 1, 100);
    cr_assert_geq(c.calls, 1);
    cr_assert_eq(gfl_remove_reader(loop, high), 1);
    close(high);
    close(p[0]);
    close(p[1]);
}

/* ---- backend fd: a foreign main loop ---- */

static bool fd_readable(int fd, int timeout_ms)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    return poll(&p, 1, timeout_ms) == 1 && (p.revents & POLLIN);
}

/* One iteration of a foreign main loop: poll the backend fd for as long as
 * the loop allows (capped), then let the loop run without blocking. */
static int foreign_iteration(int bfd, int cap_ms)
{
    double t = gfl_loop_backend_timeout(loop);
    cr_assert(t == -1 || t >= 0, "timeout %f", t);
    int ms = t < 0 ? cap_ms : (int)ceil(t * 1000);
    if (ms > cap_ms)
        ms = cap_ms;
    fd_readable(bfd, ms);
    return gfl_loop_run_once(loop, 0);
}

Test(backend, fd_is_stable_and_idle)
{
    int bfd = gfl_loop_backend_fd(loop);
    cr_assert_geq(bfd, 0, "backend fd: %d (%s)", bfd, gfl_strerror(bfd));
    cr_assert_eq(gfl_loop_backend_fd(loop), bfd, "the same fd every time");
    cr_assert(fcntl(bfd, F_GETFD) & FD_CLOEXEC);
    cr_assert_not(fd_readable(bfd, 0), "an idle loop's backend fd is not readable");
    cr_assert_eq(gfl_loop_backend_timeout(loop), -1, "nothing scheduled");
}

Test(backend, reader_readiness)
{
    int bfd = gfl_loop_backend_fd(loop);
    cr_assert_geq(bfd, 0);
    int p[2];
    make_pipe(p);
    struct counter c = { .fd = p[0], .drain = true };
    cr_assert_eq(gfl_add_reader(loop, p[0], count_cb, &c), 0);
    cr_assert_not(fd_readable(bfd, 0));
    write_byte(p[1], 'r');
    cr_assert(fd_readable(bfd, 2000), "data on a watched fd wakes the foreign loop");
    gfl_loop_run_once(loop, 0);
    cr_assert_eq(c.calls, 1);
    cr_assert_str_eq(c.last, "r");
    cr_assert_not(fd_readable(bfd, 0), "drained: idle again");
    cr_assert_eq(gfl_remove_reader(loop, p[0]), 1);
    close(p[0]);
    close(p[1]);
}

/* The fd is found even when the loop has other ready fds at that moment. */
Test(backend, found_while_other_fds_are_ready)
{
    int p[2];
    make_pipe(p);
    struct counter c = { .fd = -1 };
    write_byte(p[1], 'x');
    cr_assert_eq(gfl_add_reader(loop, p[0], count_cb, &c), 0);
    gfl_loop_run_once(loop, 0); /* registered in epoll, still ready */
    int bfd = gfl_loop_backend_fd(loop);
    cr_assert_geq(bfd, 0, "%s", gfl_strerror(bfd));
    cr_assert(fd_readable(bfd, 0));
    cr_assert_eq(gfl_remove_reader(loop, p[0]), 1);
    close(p[0]);
    close(p[1]);
}

static atomic_int ts_ran;
static void ts_cb(void *arg)
{
    (void)arg;
    atomic_fetch_add(&ts_ran, 1);
}

static void *call_later_from_thread(void *arg)
{
    struct timespec ts = { 0, 50 * 1000 * 1000 };
    nanosleep(&ts, NULL);
    intptr_t rc = gfl_call_soon_threadsafe(arg, ts_cb, NULL);
    return (void *)rc;
}

Test(backend, threadsafe_wakeup)
{
    int bfd = gfl_loop_backend_fd(loop);
    cr_assert_geq(bfd, 0);
    atomic_store(&ts_ran, 0);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, call_later_from_thread, loop), 0);
    cr_assert(fd_readable(bfd, 5000), "call_soon_threadsafe wakes the foreign loop");
    for (int i = 0; i < 50 && atomic_load(&ts_ran) == 0; i++)
        foreign_iteration(bfd, 100);
    void *rc;
    pthread_join(t, &rc);
    cr_assert_eq((intptr_t)rc, 0);
    cr_assert_eq(atomic_load(&ts_ran), 1);
}


Test(backend, timers_through_the_timeout)
{
    int bfd = gfl_loop_backend_fd(loop);
    cr_assert_geq(bfd, 0);
    timer_ran = 0;
    double start = gfl_loop_time(loop);
    cr_assert_gt(gfl_call_later(loop, 0.05, timer_cb, NULL), 0);
    double t = gfl_loop_backend_timeout(loop);
    cr_assert(t > 0 && t <= 0.05, "timeout %f", t);
    cr_assert_not(fd_readable(bfd, 0), "a timer is not I/O");
    for (int i = 0; i < 100 && !timer_ran; i++)
        foreign_iteration(bfd, 1000);
    cr_assert_eq(timer_ran, 1);
    cr_assert_geq(gfl_loop_time(loop) - start, 0.045, "not early");
    cr_assert_eq(gfl_loop_backend_timeout(loop), -1);
}

Test(backend, timeout_values)
{
    cr_assert_eq(gfl_loop_backend_timeout(loop), -1);
    gfl_handle h = gfl_call_soon(loop, timer_cb, NULL);
    cr_assert_gt(h, 0);
    cr_assert_eq(gfl_loop_backend_timeout(loop), 0, "callbacks ready: do not wait");
    gfl_loop_run_once(loop, 0);
    cr_assert_eq(gfl_loop_backend_timeout(loop), -1);
    gfl_handle later = gfl_call_later(loop, 1000, timer_cb, NULL);
    double t = gfl_loop_backend_timeout(loop);
    cr_assert(t > 990 && t <= 1000, "timeout %f", t);
    cr_assert_gt(gfl_call_later(loop, 0, timer_cb, NULL), 0);
    cr_assert_eq(gfl_loop_backend_timeout(loop), 0, "a due timer: no wait");
    gfl_loop_run_once(loop, 0);
    cr_assert_eq(gfl_handle_cancel(loop, later), 0);
    cr_assert_eq(gfl_loop_backend_timeout(loop), -1, "cancelled timers do not count");
    cr_assert_eq(gfl_loop_stop(loop), 0);
    cr_assert_eq(gfl_loop_backend_timeout(loop), 0, "stopping: run now");
}

Test(backend, bad_loop)
{
    cr_assert_eq(gfl_loop_backend_fd(NULL), GFL_EINVAL);
    double t = gfl_loop_backend_timeout(NULL);
    cr_assert(t < 0 && t != -1, "an error, not 'nothing scheduled': %f", t);
    gfl_loop *l = gfl_loop_new(NULL);
    gfl_loop_ref(l);
    gfl_loop_free(l);
    cr_assert_eq(gfl_loop_backend_fd(l), GFL_ECLOSED);
    cr_assert_eq(gfl_loop_backend_timeout(l), (double)GFL_ECLOSED);
    gfl_loop_unref(l);
}

Test(backend, two_loops_are_told_apart)
{
    gfl_loop *other = gfl_loop_new(NULL);
    cr_assert_not_null(other);
    int a = gfl_loop_backend_fd(loop);
    int b = gfl_loop_backend_fd(other);
    cr_assert_geq(a, 0);
    cr_assert_geq(b, 0);
    cr_assert_neq(a, b);

    int p[2];
    make_pipe(p);
    struct counter c = { .fd = p[0], .drain = true };
    cr_assert_eq(gfl_add_reader(other, p[0], count_cb, &c), 0);
    write_byte(p[1], 'o');
    cr_assert(fd_readable(b, 2000));
    cr_assert_not(fd_readable(a, 0), "the other loop's I/O does not wake this one");
    gfl_loop_run_once(other, 0);
    cr_assert_eq(c.calls, 1);
    cr_assert_eq(gfl_remove_reader(other, p[0]), 1);
    cr_assert_eq(gfl_loop_free(other), 0);
    close(p[0]);
    close(p[1]);
}

Test(backend, closed_with_the_loop)
{
    int bfd = gfl_loop_backend_fd(loop);
    cr_assert_geq(bfd, 0);
    cr_assert_eq(gfl_loop_free(loop), 0);
    loop = NULL;
    cr_assert_eq(fcntl(bfd, F_GETFD), -1, "the backend fd was closed");
    cr_assert_eq(errno, EBADF);
}

/* Stream transports may be polled apart from libevent (core/iopoll.c): their
 * readiness must wake a foreign loop all the same. */
struct stream_seen {
    gfl_transport *t;
    char data[16];
    size_t len;
};

static void stream_made(gfl_transport *t, void *ud)
{
    ((struct stream_seen *)ud)->t = t;
}

static void stream_data(gfl_transport *t, const void *data, size_t len, void *ud)
{
    struct stream_seen *s = ud;
    (void)t;
    size_t n = len < sizeof s->data - s->len ? len : sizeof s->data - s->len;
    memcpy(s->data + s->len, data, n);
    s->len += n;
}

static const gfl_protocol stream_proto = {
    .size = sizeof(gfl_protocol),
    .connection_made = stream_made,
    .data_received = stream_data,
};

static int stream_factory(void *fud, gfl_transport *t, const gfl_protocol **proto, void **ud)
{
    (void)t;
    *proto = &stream_proto;
    *ud = fud;
    return 0;
}

Test(backend, stream_readiness)
{
    int bfd = gfl_loop_backend_fd(loop);
    cr_assert_geq(bfd, 0);
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct stream_seen s = { 0 };
    gfl_future *f = gfl_connect_socket(loop, stream_factory, &s, NULL, sv[0]);
    cr_assert_not_null(f);
    for (int i = 0; i < 50 && !s.t; i++)
        foreign_iteration(bfd, 100);
    cr_assert_not_null(s.t, "connection_made ran");
    cr_assert_eq(gfl_future_state_of(f), GFL_FUTURE_RESULT);
    gfl_future_unref(f);
    for (int i = 0; i < 10 && gfl_loop_backend_timeout(loop) == 0; i++)
        gfl_loop_run_once(loop, 0); /* nothing left over */
    cr_assert_not(fd_readable(bfd, 0), "an idle stream does not wake the foreign loop");

    cr_assert_eq(write(sv[1], "ping", 4), 4);
    cr_assert(fd_readable(bfd, 2000), "data on a stream wakes the foreign loop");
    gfl_loop_run_once(loop, 0);
    cr_assert_eq(s.len, 4);
    cr_assert_eq(memcmp(s.data, "ping", 4), 0);
    cr_assert_not(fd_readable(bfd, 0), "read: idle again");

    cr_assert_eq(gfl_transport_write(s.t, "pong", 4), 0);
    char buf[8];
    cr_assert_eq(read(sv[1], buf, sizeof buf), 4);
    cr_assert_eq(memcmp(buf, "pong", 4), 0);
    cr_assert_eq(gfl_transport_close(s.t), 0);
    for (int i = 0; i < 10; i++)
        gfl_loop_run_once(loop, 0);
    cr_assert_eq(read(sv[1], buf, sizeof buf), 0, "closed: EOF at the peer");
    close(sv[1]);
}

/* Misuse: the fd of a stream closed behind its transport while a duplicate
 * keeps the file open. The kernel keeps the file in the poll set after the
 * transport is gone; its readiness must reach nothing (valgrind run: no
 * invalid read), and the loop keeps working. */
Test(backend, stream_fd_closed_behind_the_transport)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct stream_seen s = { 0 };
    gfl_future *f = gfl_connect_socket(loop, stream_factory, &s, NULL, sv[0]);
    cr_assert_not_null(f);
    for (int i = 0; i < 10 && !s.t; i++)
        gfl_loop_run_once(loop, 0);
    cr_assert_not_null(s.t);
    gfl_future_unref(f);

    int dup_fd = dup(sv[0]);
    cr_assert_geq(dup_fd, 0);
    close(sv[0]); /* behind the transport's back */
    cr_assert_eq(gfl_transport_abort(s.t), 0);
    for (int i = 0; i < 5; i++)
        gfl_loop_run_once(loop, 0); /* connection_lost; the transport is freed */

    cr_assert_eq(write(sv[1], "late", 4), 4); /* the orphaned file turns readable */
    for (int i = 0; i < 5; i++)
        gfl_loop_run_once(loop, 0);
    cr_assert_eq(s.len, 0, "nothing delivered after the transport was lost");

    /* The orphaned entry must not make the loop spin: with nothing of ours
     * ready, run_once(0.05) blocks (it returned at once 358,079 times a
     * second before the fix). */
    cr_assert_loop_blocks();

    /* The loop still works: a timer runs (bounded by wall time, not by a
     * number of iterations, so a loaded machine cannot make it flake). */
    timer_ran = 0;
    cr_assert_gt(gfl_call_later(loop, 0.001, timer_cb, NULL), 0);
    double deadline = now_s() + 5;
    while (!timer_ran && now_s() < deadline)
        gfl_loop_run_once(loop, 0.01);
    cr_assert_eq(timer_ran, 1);
    close(dup_fd);
    close(sv[1]);
}

/* The same misuse for an fd watcher: the watched fd is closed (a duplicate
 * keeps the file open), then the watcher removed. The poller may keep the
 * file registered; its readiness must neither call anything nor make the
 * loop spin. */
Test(watchers, fd_closed_behind_the_watcher)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct counter c = { .fd = sv[0], .drain = false };
    cr_assert_eq(gfl_add_reader(loop, sv[0], count_cb, &c), 0);
    for (int i = 0; i < 3; i++)
        gfl_loop_run_once(loop, 0);
    int dup_fd = dup(sv[0]);
    cr_assert_geq(dup_fd, 0);
    close(sv[0]);
    cr_assert_eq(gfl_remove_reader(loop, sv[0]), 1);
    cr_assert_eq(write(sv[1], "late", 4), 4);
    for (int i = 0; i < 5; i++)
        gfl_loop_run_once(loop, 0);
    cr_assert_eq(c.calls, 0, "nothing called after the watcher was removed");
    cr_assert_loop_blocks();
    close(dup_fd);
    close(sv[1]);
}

/* And a datagram endpoint's socket. */
static void dgram_received(gfl_transport *t, const void *data, size_t len,
                           const struct sockaddr *addr, socklen_t addrlen, void *ud)
{
    (void)t; (void)data; (void)len; (void)addr; (void)addrlen;
    (*(int *)ud)++;
}
static const gfl_datagram_protocol dgram_proto = {
    .size = sizeof dgram_proto,
    .datagram_received = dgram_received,
};
static int dgram_factory(void *fud, gfl_transport *t, const gfl_datagram_protocol **proto, void **ud)
{
    (void)t;
    *proto = &dgram_proto;
    *ud = fud;
    return 0;
}

Test(backend, datagram_fd_closed_behind_the_transport)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_DGRAM, 0, sv), 0);
    int got = 0;
    gfl_future *f = gfl_datagram_from_socket(loop, dgram_factory, &got, NULL, sv[0]);
    cr_assert_not_null(f);
    for (int i = 0; i < 10 && gfl_future_state_of(f) == GFL_FUTURE_PENDING; i++)
        gfl_loop_run_once(loop, 0);
    cr_assert_eq(gfl_future_state_of(f), GFL_FUTURE_RESULT);
    void *obj = NULL;
    cr_assert_eq(gfl_value_get_object(gfl_future_value(f), gfl_transport_class(), &obj), 0);
    gfl_transport *t = obj;
    gfl_future_unref(f);

    int dup_fd = dup(sv[0]);
    cr_assert_geq(dup_fd, 0);
    close(sv[0]);
    cr_assert_eq(gfl_transport_abort(t), 0);
    for (int i = 0; i < 5; i++)
        gfl_loop_run_once(loop, 0);
    cr_assert_eq(write(sv[1], "late", 4), 4);
    for (int i = 0; i < 5; i++)
        gfl_loop_run_once(loop, 0);
    cr_assert_eq(got, 0, "nothing delivered after the transport was lost");
    cr_assert_loop_blocks();
    close(dup_fd);
    close(sv[1]);
}

/* A foreign main loop polls the backend fd: an orphaned entry must not keep
 * it readable (the host's loop would spin) once the loop renewed its sets,
 * and readiness still reaches it afterwards. */
Test(backend, orphans_do_not_keep_the_backend_fd_readable)
{
    int bfd = gfl_loop_backend_fd(loop);
    cr_assert_geq(bfd, 0);

    /* A stream (our own set) and a watcher (libevent's), both closed behind. */
    int ss[2], ws[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, ss), 0);
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, ws), 0);
    struct stream_seen s = { 0 };
    gfl_future *f = gfl_connect_socket(loop, stream_factory, &s, NULL, ss[0]);
    cr_assert_not_null(f);
    for (int i = 0; i < 10 && !s.t; i++)
        gfl_loop_run_once(loop, 0);
    cr_assert_not_null(s.t);
    gfl_future_unref(f);
    struct counter c = { .fd = ws[0], .drain = false };
    cr_assert_eq(gfl_add_reader(loop, ws[0], count_cb, &c), 0);

    int sdup = dup(ss[0]), wdup = dup(ws[0]);
    close(ss[0]);
    close(ws[0]);
    cr_assert_eq(gfl_transport_abort(s.t), 0);
    cr_assert_eq(gfl_remove_reader(loop, ws[0]), 1);
    cr_assert_eq(write(ss[1], "late", 4), 4);
    cr_assert_eq(write(ws[1], "late", 4), 4);
    for (int i = 0; i < 10; i++)
        gfl_loop_run_once(loop, 0);
    cr_assert_eq(s.len, 0);
    cr_assert_eq(c.calls, 0);
    cr_assert_not(fd_readable(bfd, 0), "the backend fd stays readable for an orphan");

    /* Still wired: a new watcher's readiness wakes the foreign loop. */
    int p[2];
    make_pipe(p);
    struct counter r = { .fd = p[0], .drain = true };
    cr_assert_eq(gfl_add_reader(loop, p[0], count_cb, &r), 0);
    cr_assert_eq(write(p[1], "x", 1), 1);
    cr_assert(fd_readable(bfd, 2000), "a ready watcher wakes the foreign loop");
    for (int i = 0; i < 10 && r.calls == 0; i++)
        gfl_loop_run_once(loop, 0);
    cr_assert_eq(r.calls, 1);
    cr_assert_eq(gfl_remove_reader(loop, p[0]), 1);
    close(p[0]);
    close(p[1]);
    close(sdup);
    close(wdup);
    close(ss[1]);
    close(ws[1]);
}
