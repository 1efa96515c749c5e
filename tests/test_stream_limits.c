/*
 * Streams at their limits: many simultaneous connections, no fd leak over
 * thousands of connect/close cycles, accept() under fd exhaustion, and
 * closing the loop with everything still open.
 */
#include "stream_util.h"

#include <fcntl.h>
#include <sys/resource.h>

static gfl_loop *loop;

static void setup(void)
{
    loop = gfl_loop_new(NULL);
    cr_assert_not_null(loop);
}

static void teardown(void)
{
    if (loop)
        cr_assert_eq(gfl_loop_free(loop), 0);
}

TestSuite(limits, .init = setup, .fini = teardown, .timeout = 300);

static bool long_tests(void)
{
    const char *v = getenv("GFL_LONG_TESTS");
    return !v || strcmp(v, "0") != 0;
}

Test(limits, thousand_simultaneous_connections)
{
    enum { N = 1000 };
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < 2 * N + 100)
        cr_skip_test("RLIMIT_NOFILE %lu is too low for %d connections", (unsigned long)rl.rlim_cur, N);
    struct srv s = {.tmpl = {.echo = true}};
    /* A backlog for the burst: otherwise the kernel drops SYNs and ACKs
     * and the handshakes crawl through retransmissions. */
    const char *hosts[] = {"127.0.0.1", NULL};
    gfl_server_options so = {.size = sizeof so, .hosts = hosts, .backlog = N};
    gfl_future *sf = gfl_create_server(loop, srv_factory, &s, NULL, &so);
    gfl_server *server = gfl_server_ref(await_object(loop, sf, gfl_server_class()));
    gfl_future_unref(sf);
    struct sockaddr_in a;
    size_t al = sizeof a;
    gfl_server_get_sockaddr(server, 0, &a, &al);
    char ps[16];
    snprintf(ps, sizeof ps, "%d", ntohs(a.sin_port));
    static struct rec c[N];
    static gfl_future *f[N];
    memset(c, 0, sizeof c);
    gfl_connect_options co = {.size = sizeof co, .host = "127.0.0.1", .port = ps};
    for (int i = 0; i < N; i++) {
        f[i] = gfl_create_connection(loop, one_rec_factory, &c[i], NULL, &co);
        cr_assert_not_null(f[i]);
    }
    int done = 0;
    double deadline = now_s() + 60;
    while (done < N) {
        cr_assert_lt(now_s(), deadline, "%d of %d connected", done, N);
        gfl_loop_run_once(loop, 0.05);
        done = 0;
        for (int i = 0; i < N; i++)
            if (future_done(f[i])) {
                cr_assert_eq(gfl_future_state_of(f[i]), GFL_FUTURE_RESULT, "connection %d: %s", i, gfl_value_error_message(gfl_future_value(f[i])));
                done++;
            }
    }
    RUN_UNTIL(loop, gfl_server_connection_count(server) == N, 30);
    /* All open at once: every one echoes its own bytes. */
    for (int i = 0; i < N; i++) {
        char msg[16];
        int n = snprintf(msg, sizeof msg, "%d", i);
        cr_assert_eq(gfl_transport_write(c[i].t, msg, (size_t)n), 0);
    }
    bool all;
    deadline = now_s() + 30;
    do {
        cr_assert_lt(now_s(), deadline);
        gfl_loop_run_once(loop, 0.05);
        all = true;
        for (int i = 0; i < N && all; i++) {
            char msg[16];
            all = c[i].len == (size_t)snprintf(msg, sizeof msg, "%d", i);
        }
    } while (!all);
    for (int i = 0; i < N; i++)
        cr_assert_eq(gfl_transport_close(c[i].t), 0);
    RUN_UNTIL(loop, gfl_server_connection_count(server) == 0, 30);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(c[i].lost, 1);
        gfl_future_unref(f[i]);
    }
    gfl_server_close(server);
    gfl_server_unref(server);
    srv_finish(loop, &s);
}

Test(limits, no_fd_leak_over_10000_cycles)
{
    int cycles = long_tests() ? 10000 : 1000;
    struct srv s = {0};
    int port;
    gfl_server *server = start_server(loop, &s, NULL, &port);
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    gfl_connect_options co = {.size = sizeof co, .host = "127.0.0.1", .port = ps};
    /* Warm up once (lazy allocations, the read buffer). */
    int before = -1, accepted = 0;
    enum { BATCH = 50 };
    for (int done = 0; done < cycles + BATCH; done += BATCH) {
        if (done == BATCH)
            before = count_fds();
        struct rec c[BATCH];
        gfl_future *f[BATCH];
        memset(c, 0, sizeof c);
        for (int i = 0; i < BATCH; i++)
            f[i] = gfl_create_connection(loop, one_rec_factory, &c[i], NULL, &co);
        for (int i = 0; i < BATCH; i++) {
            RUN_UNTIL(loop, future_done(f[i]), 10);
            cr_assert_eq(gfl_future_state_of(f[i]), GFL_FUTURE_RESULT);
            /* Half of them close, half abort. */
            if (i & 1)
                gfl_transport_abort(c[i].t);
            else
                gfl_transport_close(c[i].t);
        }
        for (int i = 0; i < BATCH; i++) {
            RUN_UNTIL(loop, c[i].lost == 1, 10);
            gfl_future_unref(f[i]); /* the last reference to the transport */
        }
        RUN_UNTIL(loop, gfl_server_connection_count(server) == 0, 10);
        accepted += s.n;
        srv_finish(loop, &s);
    }
    cr_assert_eq(accepted, cycles + BATCH, "every cycle was a real connection");
    cr_assert_eq(count_fds(), before, "fds leaked over %d connect/close cycles", cycles);
    gfl_server_close(server);
    gfl_server_unref(server);
}

static int exc_calls;
static int exc_code;

static void exc_handler(gfl_loop *l, const char *message, gfl_value *error, void *ud)
{
    (void)l;
    (void)message;
    (void)ud;
    exc_calls++;
    if (error)
        exc_code = gfl_value_error_code(error);
}

/* accept() failing with EMFILE: no busy spin, no crash, and accepting
 * resumes once descriptors are free. */
Test(limits, accept_under_fd_exhaustion)
{
    gfl_loop_set_exception_handler(loop, exc_handler, NULL);
    struct srv s = {.tmpl = {.echo = true}};
    const char *hosts[] = {"127.0.0.1", NULL};
    gfl_server_options so = {.size = sizeof so, .hosts = hosts, .accept_retry_delay = 0.1};
    gfl_future *sf = gfl_create_server(loop, srv_factory, &s, NULL, &so);
    gfl_server *server = gfl_server_ref(await_object(loop, sf, gfl_server_class()));
    gfl_future_unref(sf);
    struct sockaddr_in a;
    size_t al = sizeof a;
    gfl_server_get_sockaddr(server, 0, &a, &al);

    /* A blocking client connect completes in the kernel (backlog). */
    int client = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_eq(connect(client, (struct sockaddr *)&a, sizeof a), 0);

    /* Use up every descriptor (a lower soft limit keeps this quick). */
    struct rlimit old, rl;
    getrlimit(RLIMIT_NOFILE, &old);
    rl = old;
    if (rl.rlim_cur > 1024)
        rl.rlim_cur = 1024;
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
    static int hog[4096];
    int nhog = 0;
    for (;;) {
        int fd = dup(0 <= client ? client : 0);
        if (fd < 0) {
            cr_assert_eq(errno, EMFILE);
            break;
        }
        cr_assert_lt(nhog, 4096);
        hog[nhog++] = fd;
    }
    /* Run for 0.5 s: accept fails; the listener is paused between retries. */
    int callbacks = 0;
    double end = now_s() + 0.5;
    while (now_s() < end) {
        int n = gfl_loop_run_once(loop, 0.05);
        cr_assert_geq(n, 0);
        callbacks += n;
    }
    cr_assert_geq(exc_calls, 1, "the exception handler heard about EMFILE");
    cr_assert_eq(exc_code, GFL_EMFILE);
    cr_assert_leq(exc_calls, 10, "retried every 0.1 s, not in a spin (%d)", exc_calls);
    cr_assert_lt(callbacks, 100, "no busy spin: %d callbacks in 0.5 s", callbacks);
    cr_assert_eq(gfl_server_connection_count(server), 0);

    /* Free the descriptors: accepting resumes. Valgrind emulates
     * RLIMIT_NOFILE: the kernel's accept4 succeeds and valgrind closes the
     * new fd to report EMFILE, consuming the pending connection; so under
     * valgrind only a fresh connection can show the recovery. */
    for (int i = 0; i < nhog; i++)
        close(hog[i]);
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
    bool valgrind = getenv("GFL_UNDER_VALGRIND") != NULL;
    if (valgrind) {
        close(client);
        client = socket(AF_INET, SOCK_STREAM, 0);
        cr_assert_eq(connect(client, (struct sockaddr *)&a, sizeof a), 0);
    }
    RUN_UNTIL(loop, s.n >= 1 && gfl_server_connection_count(server) >= 1, 5);
    struct rec *r = s.recs[s.n - 1];
    cr_assert_eq(write(client, "ok", 2), 2);
    char buf[2];
    RUN_UNTIL(loop, r->len == 2, 5);
    cr_assert_eq(read(client, buf, 2), 2);
    cr_assert(memcmp(buf, "ok", 2) == 0);
    close(client);
    RUN_UNTIL(loop, gfl_server_connection_count(server) == 0, 5);
    gfl_server_close(server);
    gfl_server_unref(server);
    srv_finish(loop, &s);
}

/* Closing the loop with a server, connections and a pending connect:
 * every protocol hears connection_lost, nothing leaks (valgrind). */
Test(limits, loop_close_with_open_transports)
{
    struct srv s = {.tmpl = {.echo = true}};
    int port;
    gfl_server *server = start_server(loop, &s, NULL, &port);
    struct rec c = {0};
    gfl_transport *t = connect_to(loop, &c, "127.0.0.1", port);
    RUN_UNTIL(loop, s.n == 1 && s.recs[0]->made, 5);
    cr_assert_eq(gfl_transport_write(t, "x", 1), 0);
    /* A connect still pending (resolved later) and a wait_closed. */
    struct rec c2 = {0};
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    gfl_connect_options co = {.size = sizeof co, .host = "127.0.0.1", .port = ps};
    gfl_future *pending = gfl_create_connection(loop, one_rec_factory, &c2, NULL, &co);
    gfl_future *w = gfl_server_wait_closed(server);
    int fds_during = count_fds();
    cr_assert_eq(gfl_loop_free(loop), 0);
    loop = NULL;
    cr_assert_eq(c.lost, 1, "the client heard connection_lost at loop close");
    cr_assert_eq(c.lost_code, GFL_ECLOSED);
    cr_assert_eq(s.recs[0]->lost, 1);
    cr_assert_lt(count_fds(), fds_during - 2, "sockets were closed");
    /* Objects the caller still holds stay safe to use. */
    cr_assert_eq(gfl_transport_write(t, "x", 1), GFL_ECLOSED);
    cr_assert_eq(gfl_server_close(server), GFL_ECLOSED);
    gfl_transport_unref(t);
    gfl_server_unref(server);
    gfl_future_unref(pending);
    gfl_future_unref(w);
    srv_free(&s); /* every connection_lost ran inside gfl_loop_free */
}
