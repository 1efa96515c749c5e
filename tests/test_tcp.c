/*
 * TCP transports on real loopback sockets: echo round trips, flow control,
 * half-close, resets, misuse after close, servers, Happy Eyeballs.
 */
#include "stream_util.h"

#include <fcntl.h>
#include <netinet/tcp.h>
#include <poll.h>

static gfl_loop *loop;

static void setup(void)
{
    loop = gfl_loop_new(NULL);
    cr_assert_not_null(loop);
}

static void teardown(void)
{
    cr_assert_eq(gfl_loop_free(loop), 0);
}

TestSuite(tcp, .init = setup, .fini = teardown, .timeout = 120);

static unsigned char *pattern(size_t n)
{
    unsigned char *p = malloc(n ? n : 1);
    cr_assert_not_null(p);
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(i * 31 + (i >> 11));
    return p;
}

static void echo_round_trip(const gfl_protocol *server_proto, size_t size)
{
    struct srv s = {.tmpl = {.echo = true}, .proto = server_proto};
    int port;
    gfl_server *server = start_server(loop, &s, NULL, &port);
    struct rec c = {.store = true};
    gfl_transport *t = connect_to(loop, &c, "127.0.0.1", port);

    unsigned char *data = pattern(size);
    /* Several writes of odd sizes: exercises the buffer's coalescing. */
    size_t off = 0, step = size / 3 + 1;
    while (off < size) {
        size_t n = size - off < step ? size - off : step;
        cr_assert_eq(gfl_transport_write(t, data + off, n), 0);
        off += n;
    }
    RUN_UNTIL(loop, c.len >= size, 60);
    cr_assert_eq(c.len, size);
    cr_assert(memcmp(c.buf, data, size) == 0, "echoed bytes differ (size %zu)", size);

    cr_assert_eq(gfl_transport_close(t), 0);
    RUN_UNTIL(loop, c.lost == 1 && s.n == 1 && s.recs[0]->lost == 1, 10);
    cr_assert_eq(c.lost_code, 0);
    cr_assert_eq(s.recs[0]->eof, 1);
    gfl_transport_unref(t);
    gfl_server_close(server);
    gfl_server_unref(server);
    cr_assert_eq(s.released, 1, "the server released its factory");
    free(data);
    free(c.buf);
    srv_finish(loop, &s);
}

Test(tcp, echo_1_byte) { echo_round_trip(NULL, 1); }
Test(tcp, echo_1_kib) { echo_round_trip(NULL, 1024); }
Test(tcp, echo_64_kib) { echo_round_trip(NULL, 64 * 1024); }
Test(tcp, echo_1_mib) { echo_round_trip(NULL, 1024 * 1024); }
Test(tcp, echo_16_mib) { echo_round_trip(NULL, 16 * 1024 * 1024); }
Test(tcp, echo_buffered_protocol) { echo_round_trip(&rec_buffered_protocol, 300 * 1000 + 7); }

Test(tcp, writev_and_extra_info)
{
    struct srv s = {.tmpl = {.echo = true}};
    int port;
    gfl_server *server = start_server(loop, &s, NULL, &port);
    struct rec c = {.store = true};
    gfl_transport *t = connect_to(loop, &c, "127.0.0.1", port);

    gfl_iovec iov[3] = {{"ab", 2}, {"", 0}, {"cdef", 4}};
    cr_assert_eq(gfl_transport_writev(t, iov, 3), 0);
    RUN_UNTIL(loop, c.len == 6, 5);
    cr_assert(memcmp(c.buf, "abcdef", 6) == 0);

    gfl_value *peer = gfl_transport_get_extra_info(t, "peername");
    gfl_value *sock = gfl_transport_get_extra_info(t, "sockname");
    gfl_value *fd = gfl_transport_get_extra_info(t, "socket");
    cr_assert_not_null(peer);
    cr_assert_not_null(sock);
    const char *p;
    size_t len;
    char want[32];
    snprintf(want, sizeof want, "127.0.0.1:%d", port);
    cr_assert_eq(gfl_value_get_bytes(peer, &p, &len), 0);
    cr_assert_str_eq(p, want);
    cr_assert_eq(gfl_value_get_bytes(sock, &p, &len), 0);
    cr_assert(strncmp(p, "127.0.0.1:", 10) == 0);
    int64_t fdv;
    cr_assert_eq(gfl_value_get_int(fd, &fdv), 0);
    cr_assert_eq(fdv, gfl_transport_fileno(t));
    int nodelay = 0;
    socklen_t sl = sizeof nodelay;
    cr_assert_eq(getsockopt((int)fdv, IPPROTO_TCP, TCP_NODELAY, &nodelay, &sl), 0);
    cr_assert(nodelay, "TCP_NODELAY is on, as asyncio does");
    int fl = fcntl((int)fdv, F_GETFL), fdfl = fcntl((int)fdv, F_GETFD);
    cr_assert(fl & O_NONBLOCK);
    cr_assert(fdfl & FD_CLOEXEC);
    cr_assert_null(gfl_transport_get_extra_info(t, "no-such-thing"));
    gfl_value_unref(peer);
    gfl_value_unref(sock);
    gfl_value_unref(fd);

    const gfl_protocol *proto;
    void *ud;
    cr_assert_eq(gfl_transport_get_protocol(t, &proto, &ud), 0);
    cr_assert_eq(proto, &rec_protocol);
    cr_assert_eq(ud, &c);
    cr_assert_eq(gfl_transport_can_write_eof(t), 1);
    cr_assert_eq(gfl_transport_is_reading(t), 1);
    cr_assert_eq(gfl_transport_is_closing(t), 0);
    cr_assert_eq(gfl_server_connection_count(server), 1);

    cr_assert_eq(gfl_transport_abort(t), 0);
    RUN_UNTIL(loop, c.lost == 1 && s.recs[0]->lost == 1, 5);
    cr_assert_eq(gfl_server_connection_count(server), 0);
    gfl_transport_unref(t);
    gfl_server_close(server);
    gfl_server_unref(server);
    free(c.buf);
    srv_finish(loop, &s);
}

/* A reader that does not read makes the writer see pause_writing; once it
 * reads again, resume_writing; the buffer never grows past high + a chunk. */
Test(tcp, flow_control)
{
    struct srv s = {.tmpl = {.pause_on_made = true}};
    int port;
    gfl_server *server = start_server(loop, &s, NULL, &port);
    struct rec c = {0};
    gfl_transport *t = connect_to(loop, &c, "127.0.0.1", port);
    cr_assert_eq(gfl_transport_set_write_buffer_limits(t, 256 * 1024, -1), 0);
    size_t high, low;
    cr_assert_eq(gfl_transport_get_write_buffer_limits(t, &high, &low), 0);
    cr_assert_eq(high, 256 * 1024);
    cr_assert_eq(low, 64 * 1024);
    cr_assert_eq(gfl_transport_set_write_buffer_limits(t, 10, 20), GFL_EINVAL);

    const size_t chunk = 64 * 1024, total = 32 * 1024 * 1024;
    unsigned char *data = pattern(chunk);
    size_t sent = 0, max_buf = 0;
    RUN_UNTIL(loop, s.n == 1 && s.recs[0]->made, 5);
    /* A well-behaved writer: write while not paused. */
    while (sent < total && c.paused == c.resumed) {
        cr_assert_eq(gfl_transport_write(t, data, chunk), 0);
        sent += chunk;
        int64_t b = gfl_transport_get_write_buffer_size(t);
        if ((size_t)b > max_buf)
            max_buf = (size_t)b;
        gfl_loop_run_once(loop, 0);
    }
    cr_assert_eq(c.paused, 1, "pause_writing once the socket buffers filled");
    cr_assert_lt(sent, total, "the kernel cannot hold 32 MiB: we must have paused");
    cr_assert_leq(max_buf, high + chunk, "memory stays bounded");
    /* Let the reader go; the writer resumes and finishes. */
    cr_assert_eq(gfl_transport_resume_reading(s.recs[0]->t), 0);
    while (sent < total) {
        RUN_UNTIL(loop, c.paused == c.resumed, 10);
        while (sent < total && c.paused == c.resumed) {
            cr_assert_eq(gfl_transport_write(t, data, chunk), 0);
            sent += chunk;
            int64_t b = gfl_transport_get_write_buffer_size(t);
            cr_assert_leq((size_t)b, high + chunk);
        }
    }
    RUN_UNTIL(loop, s.recs[0]->len == total, 30);
    cr_assert_geq(c.resumed, 1);
    cr_assert_eq(gfl_transport_get_write_buffer_size(t), 0);
    gfl_transport_close(t);
    RUN_UNTIL(loop, c.lost && s.recs[0]->lost, 5);
    gfl_transport_unref(t);
    gfl_server_close(server);
    gfl_server_unref(server);
    free(data);
    srv_finish(loop, &s);
}

/* Half-close: the client shuts down its side; the server still answers. */
static void halfclose_eof_reply(gfl_transport *t, void *ud)
{
    struct rec *r = ud;
    (void)t;
    r->eof++;
}

static int server_eof_keep(gfl_transport *t, void *ud)
{
    struct rec *r = ud;
    halfclose_eof_reply(t, ud);
    cr_assert_eq(r->len, 5);
    cr_assert_eq(gfl_transport_is_reading(t), 1);
    cr_assert_eq(gfl_transport_write(t, "bye", 3), 0);
    cr_assert_eq(gfl_transport_close(t), 0);
    return 1;
}

static const gfl_protocol halfclose_server_proto = {
    .size = sizeof(gfl_protocol),
    .connection_made = rec_made,
    .data_received = rec_data,
    .eof_received = server_eof_keep,
    .connection_lost = rec_lost,
};

Test(tcp, half_close)
{
    struct srv s = {.tmpl = {.store = true}, .proto = &halfclose_server_proto};
    int port;
    gfl_server *server = start_server(loop, &s, NULL, &port);
    struct rec c = {.store = true}; /* its eof_received answers 0: close at EOF */
    gfl_transport *t = connect_to(loop, &c, "127.0.0.1", port);
    cr_assert_eq(gfl_transport_write(t, "hello", 5), 0);
    cr_assert_eq(gfl_transport_write_eof(t), 0);
    cr_assert_eq(gfl_transport_write(t, "x", 1), GFL_ESTATE, "no write after write_eof");
    RUN_UNTIL(loop, c.lost == 1, 5);
    cr_assert_eq(c.len, 3);
    cr_assert(memcmp(c.buf, "bye", 3) == 0);
    cr_assert_eq(c.eof, 1, "the client saw the server's EOF");
    cr_assert_eq(c.lost_code, 0);
    RUN_UNTIL(loop, s.recs[0]->lost == 1, 5);
    cr_assert_eq(s.recs[0]->eof, 1);
    gfl_transport_unref(t);
    gfl_server_close(server);
    gfl_server_unref(server);
    free(c.buf);
    srv_finish(loop, &s);
}

/* The server resets the connection while the client writes. */
static void reset_on_made(gfl_transport *t, void *ud)
{
    rec_made(t, ud);
    struct linger lg = {1, 0}; /* close() then sends RST */
    int fd = gfl_transport_fileno(t);
    cr_assert_geq(fd, 0);
    cr_assert_eq(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
}

static const gfl_protocol reset_proto = {
    .size = sizeof(gfl_protocol),
    .connection_made = reset_on_made,
    .data_received = rec_data,
    .connection_lost = rec_lost,
};

Test(tcp, peer_reset_mid_write)
{
    struct srv s = {.proto = &reset_proto};
    int port;
    gfl_server *server = start_server(loop, &s, NULL, &port);
    struct rec c = {0};
    gfl_transport *t = connect_to(loop, &c, "127.0.0.1", port);
    RUN_UNTIL(loop, s.n == 1 && s.recs[0]->made, 5);
    unsigned char *data = pattern(1 << 20);
    cr_assert_eq(gfl_transport_write(t, data, 1 << 20), 0);
    gfl_loop_run_once(loop, 0.01);
    cr_assert_eq(gfl_transport_abort(s.recs[0]->t), 0); /* RST */
    int rc = 0;
    double deadline = now_s() + 10;
    while (!c.lost) {
        cr_assert_lt(now_s(), deadline);
        rc = gfl_transport_write(t, data, 1 << 16);
        cr_assert(rc == 0 || rc == GFL_ECONNRESET || rc == GFL_EPIPE || rc == GFL_ECLOSED, "write: %d", rc);
        gfl_loop_run_once(loop, 0.01);
    }
    cr_assert(c.lost_code == GFL_ECONNRESET || c.lost_code == GFL_EPIPE, "lost with %d", c.lost_code);
    cr_assert(strcmp(c.lost_type, "ConnectionResetError") == 0 || strcmp(c.lost_type, "BrokenPipeError") == 0, "%s", c.lost_type);
    cr_assert_eq(gfl_transport_write(t, "x", 1), GFL_ECLOSED);
    gfl_transport_unref(t);
    RUN_UNTIL(loop, s.recs[0]->lost, 5);
    gfl_server_close(server);
    gfl_server_unref(server);
    free(data);
    srv_finish(loop, &s);
}

Test(tcp, write_after_close_is_an_error)
{
    struct srv s = {.tmpl = {.echo = true}};
    int port;
    gfl_server *server = start_server(loop, &s, NULL, &port);
    struct rec c = {0};
    gfl_transport *t = connect_to(loop, &c, "127.0.0.1", port);
    cr_assert_eq(gfl_transport_close(t), 0);
    cr_assert_eq(gfl_transport_is_closing(t), 1);
    cr_assert_eq(gfl_transport_write(t, "x", 1), GFL_ECLOSED);
    cr_assert_eq(gfl_transport_close(t), 0, "close twice is fine");
    cr_assert_eq(c.lost, 0, "connection_lost is never called from inside close()");
    RUN_UNTIL(loop, c.lost == 1, 5);
    /* After connection_lost: every call says closed, none crashes. */
    cr_assert_eq(gfl_transport_write(t, "x", 1), GFL_ECLOSED);
    cr_assert_eq(gfl_transport_write_eof(t), GFL_ECLOSED);
    cr_assert_eq(gfl_transport_pause_reading(t), GFL_ECLOSED);
    cr_assert_eq(gfl_transport_resume_reading(t), GFL_ECLOSED);
    cr_assert_eq(gfl_transport_get_write_buffer_size(t), GFL_ECLOSED);
    cr_assert_eq(gfl_transport_fileno(t), GFL_ECLOSED);
    cr_assert_eq(gfl_transport_abort(t), GFL_ECLOSED);
    cr_assert_eq(gfl_transport_is_closing(t), 1);
    cr_assert_null(gfl_transport_get_extra_info(t, "peername"));
    cr_assert_eq(c.lost, 1, "connection_lost exactly once");
    gfl_transport_unref(t);
    RUN_UNTIL(loop, s.n == 1 && s.recs[0]->lost, 5);
    gfl_server_close(server);
    gfl_server_unref(server);
    srv_finish(loop, &s);
}

Test(tcp, bad_arguments)
{
    gfl_connect_options co = {.size = sizeof co, .host = "127.0.0.1", .port = "1"};
    cr_assert_null(gfl_create_connection(NULL, one_rec_factory, NULL, NULL, &co));
    cr_assert_null(gfl_create_connection(loop, NULL, NULL, NULL, &co));
    cr_assert_null(gfl_create_connection(loop, one_rec_factory, NULL, NULL, NULL));
    gfl_connect_options bad = co;
    bad.happy_eyeballs_delay = -1;
    cr_assert_null(gfl_create_connection(loop, one_rec_factory, NULL, NULL, &bad));
    bad = co;
    bad.host = NULL;
    cr_assert_null(gfl_create_connection(loop, one_rec_factory, NULL, NULL, &bad));
    cr_assert_null(gfl_create_server(loop, srv_factory, NULL, NULL, NULL));
    cr_assert_null(gfl_connect_socket(loop, one_rec_factory, NULL, NULL, -1));
    cr_assert_eq(gfl_transport_write(NULL, "x", 1), GFL_EINVAL);
    cr_assert_eq(gfl_transport_close(NULL), GFL_EINVAL);
    cr_assert_eq(gfl_transport_get_write_buffer_size(NULL), GFL_EINVAL);
    cr_assert_null(gfl_transport_ref(NULL));
    gfl_transport_unref(NULL);
    cr_assert_eq(gfl_server_close(NULL), GFL_EINVAL);
    cr_assert_null(gfl_server_wait_closed(NULL));
    /* A datagram socket is not a stream. */
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    cr_assert_null(gfl_connect_socket(loop, one_rec_factory, NULL, NULL, u));
    close(u);
}

Test(tcp, connection_refused)
{
    /* A port nobody listens on: bind one, then close it. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t sl = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &sl);
    close(fd);
    char port[16];
    snprintf(port, sizeof port, "%d", ntohs(a.sin_port));
    struct rec c = {0};
    gfl_connect_options co = {.size = sizeof co, .host = "127.0.0.1", .port = port};
    gfl_future *f = gfl_create_connection(loop, one_rec_factory, &c, NULL, &co);
    cr_assert_not_null(f);
    RUN_UNTIL(loop, future_done(f), 5);
    cr_assert_eq(gfl_future_state_of(f), GFL_FUTURE_ERROR);
    gfl_value *e = gfl_future_value(f);
    cr_assert_eq(gfl_value_error_code(e), GFL_ECONNREFUSED);
    cr_assert_str_eq(gfl_value_error_type(e), "ConnectionRefusedError");
    cr_assert_eq(c.made, 0);
    gfl_future_unref(f);
}

static void cancel_cb(gfl_future *f, void *arg)
{
    (void)f;
    (*(int *)arg)++;
}

Test(tcp, cancel_pending_connect)
{
    /* Blackholed by a full backlog (see happy_eyeballs_blackhole). */
    int l = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(l, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(listen(l, 0), 0);
    socklen_t sl = sizeof a;
    getsockname(l, (struct sockaddr *)&a, &sl);
    int filler = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_eq(connect(filler, (struct sockaddr *)&a, sizeof a), 0);
    char port[16];
    snprintf(port, sizeof port, "%d", ntohs(a.sin_port));
    int fds_before = count_fds();
    struct rec c = {0};
    int called = 0;
    gfl_connect_options co = {.size = sizeof co, .host = "127.0.0.1", .port = port};
    gfl_future *f = gfl_create_connection(loop, one_rec_factory, &c, NULL, &co);
    cr_assert_not_null(f);
    gfl_future_add_done_callback(f, cancel_cb, &called);
    for (int i = 0; i < 5; i++)
        gfl_loop_run_once(loop, 0.02);
    cr_assert_eq(gfl_future_state_of(f), GFL_FUTURE_PENDING, "the connect hangs");
    cr_assert_eq(gfl_future_cancel(f, NULL), 1);
    RUN_UNTIL(loop, called == 1, 5);
    gfl_loop_run_once(loop, 0);
    cr_assert_eq(count_fds(), fds_before, "the attempt's socket was closed");
    gfl_future_unref(f);
    close(filler);
    close(l);
}

/* ---- servers ---- */

Test(tcp, server_ipv4_and_ipv6)
{
    int probe = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    bool have_v6 = probe >= 0 && bind(probe, (struct sockaddr *)&a6, sizeof a6) == 0;
    if (probe >= 0)
        close(probe);
    if (!have_v6)
        cr_skip_test("no IPv6 loopback");
    struct srv s = {.tmpl = {.echo = true}};
    const char *hosts[] = {"127.0.0.1", "::1", NULL};
    gfl_server_options so = {.size = sizeof so, .hosts = hosts, .port = "0", .backlog = 10};
    gfl_future *f = gfl_create_server(loop, srv_factory, &s, srv_release, &so);
    gfl_server *server = gfl_server_ref(await_object(loop, f, gfl_server_class()));
    gfl_future_unref(f);
    cr_assert_eq(gfl_server_socket_count(server), 2);
    for (int i = 0; i < 2; i++) {
        struct sockaddr_storage ss;
        size_t len = sizeof ss;
        cr_assert_eq(gfl_server_get_sockaddr(server, i, &ss, &len), 0);
        int port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port : ((struct sockaddr_in6 *)&ss)->sin6_port);
        struct rec c = {.store = true};
        gfl_transport *t = connect_to(loop, &c, ss.ss_family == AF_INET ? "127.0.0.1" : "::1", port);
        cr_assert_eq(gfl_transport_write(t, "ping", 4), 0);
        RUN_UNTIL(loop, c.len == 4, 5);
        gfl_value *peer = gfl_transport_get_extra_info(t, "peername");
        const char *p;
        size_t pl;
        gfl_value_get_bytes(peer, &p, &pl);
        cr_assert(ss.ss_family == AF_INET ? p[0] == '1' : p[0] == '[', "%s", p);
        gfl_value_unref(peer);
        gfl_transport_close(t);
        RUN_UNTIL(loop, c.lost, 5);
        gfl_transport_unref(t);
        free(c.buf);
    }
    gfl_server_close(server);
    gfl_server_unref(server);
    srv_finish(loop, &s);
}

Test(tcp, server_wait_closed_waits_for_connections)
{
    struct srv s = {.tmpl = {.echo = true}};
    int port;
    gfl_server *server = start_server(loop, &s, NULL, &port);
    cr_assert_eq(gfl_server_is_serving(server), 1);
    struct rec c = {0};
    gfl_transport *t = connect_to(loop, &c, "127.0.0.1", port);
    RUN_UNTIL(loop, s.n == 1 && s.recs[0]->made, 5);
    gfl_future *w = gfl_server_wait_closed(server);
    cr_assert_not_null(w);
    cr_assert_eq(gfl_server_close(server), 0);
    cr_assert_eq(gfl_server_is_serving(server), 0);
    cr_assert_eq(gfl_server_socket_count(server), 0);
    for (int i = 0; i < 5; i++)
        gfl_loop_run_once(loop, 0.01);
    cr_assert_eq(gfl_future_state_of(w), GFL_FUTURE_PENDING, "a connection is still open");
    /* Still served: the connection outlives the listening socket. */
    cr_assert_eq(gfl_transport_write(t, "x", 1), 0);
    RUN_UNTIL(loop, c.len == 1, 5);
    gfl_transport_close(t);
    RUN_UNTIL(loop, future_done(w), 5);
    cr_assert_eq(gfl_future_state_of(w), GFL_FUTURE_RESULT);
    gfl_future_unref(w);
    /* A new connection is refused now. */
    struct rec c2 = {0};
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    gfl_connect_options co = {.size = sizeof co, .host = "127.0.0.1", .port = ps};
    gfl_future *f = gfl_create_connection(loop, one_rec_factory, &c2, NULL, &co);
    RUN_UNTIL(loop, future_done(f), 5);
    cr_assert_eq(gfl_value_error_code(gfl_future_value(f)), GFL_ECONNREFUSED);
    gfl_future_unref(f);
    gfl_transport_unref(t);
    gfl_server_unref(server);
    srv_finish(loop, &s);
}

Test(tcp, server_start_serving_later_and_close_clients)
{
    struct srv s = {0};
    const char *hosts[] = {"127.0.0.1", NULL};
    gfl_server_options so = {.size = sizeof so, .hosts = hosts, .start_serving = -1, .reuse_port = 1};
    gfl_future *f = gfl_create_server(loop, srv_factory, &s, NULL, &so);
    gfl_server *server = gfl_server_ref(await_object(loop, f, gfl_server_class()));
    gfl_future_unref(f);
    cr_assert_eq(gfl_server_is_serving(server), 0);
    int fd = gfl_server_socket_fd(server, 0);
    int v = 0;
    socklen_t vl = sizeof v;
    getsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &v, &vl);
    cr_assert(v, "SO_REUSEPORT set");
    getsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &v, &vl);
    cr_assert(v, "SO_REUSEADDR is on by default");
    struct sockaddr_in a;
    size_t al = sizeof a;
    gfl_server_get_sockaddr(server, 0, &a, &al);
    int port = ntohs(a.sin_port);
    struct rec c = {0};
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    gfl_connect_options co = {.size = sizeof co, .host = "127.0.0.1", .port = ps};
    gfl_future *cf = gfl_create_connection(loop, one_rec_factory, &c, NULL, &co);
    for (int i = 0; i < 5; i++)
        gfl_loop_run_once(loop, 0.01);
    cr_assert_eq(s.n, 0, "not accepting before start_serving");
    cr_assert_eq(gfl_server_start_serving(server), 0);
    gfl_transport *t = gfl_transport_ref(await_object(loop, cf, gfl_transport_class()));
    gfl_future_unref(cf);
    RUN_UNTIL(loop, s.n == 1, 5);
    cr_assert_eq(gfl_server_close_clients(server), 0);
    RUN_UNTIL(loop, c.lost && s.recs[0]->lost, 5);
    gfl_transport_unref(t);
    gfl_server_close(server);
    gfl_server_unref(server);
    srv_finish(loop, &s);
}

Test(tcp, server_from_socket_and_connect_socket)
{
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(l, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(listen(l, 5), 0);
    socklen_t sl = sizeof a;
    getsockname(l, (struct sockaddr *)&a, &sl);
    struct srv s = {.tmpl = {.echo = true}};
    gfl_server *server = gfl_server_from_socket(loop, srv_factory, &s, srv_release, l, NULL);
    cr_assert_not_null(server);
    cr_assert_eq(gfl_server_socket_fd(server, 0), l);

    /* An already-connected socket handed in. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    struct rec c = {.store = true};
    gfl_future *f = gfl_connect_socket(loop, one_rec_factory, &c, NULL, fd);
    gfl_transport *t = gfl_transport_ref(await_object(loop, f, gfl_transport_class()));
    gfl_future_unref(f);
    cr_assert_eq(gfl_transport_fileno(t), fd);
    cr_assert_eq(gfl_transport_write(t, "hey", 3), 0);
    RUN_UNTIL(loop, c.len == 3, 5);
    gfl_transport_close(t);
    RUN_UNTIL(loop, c.lost, 5);
    cr_assert_eq(fcntl(fd, F_GETFD), -1, "the transport closed the fd it was given");
    gfl_transport_unref(t);
    RUN_UNTIL(loop, s.recs[0]->lost, 5);
    gfl_server_close(server);
    cr_assert_eq(fcntl(l, F_GETFD), -1, "the server closed its listening socket");
    gfl_server_unref(server);
    cr_assert_eq(s.released, 1);
    free(c.buf);
    srv_finish(loop, &s);
}

Test(tcp, local_address_binding)
{
    struct srv s = {0};
    int port;
    gfl_server *server = start_server(loop, &s, NULL, &port);
    /* Pick a free local port. */
    int p = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(p, (struct sockaddr *)&a, sizeof a);
    socklen_t sl = sizeof a;
    getsockname(p, (struct sockaddr *)&a, &sl);
    close(p);
    char lport[16], ps[16], want[32];
    snprintf(lport, sizeof lport, "%d", ntohs(a.sin_port));
    snprintf(ps, sizeof ps, "%d", port);
    snprintf(want, sizeof want, "127.0.0.1:%d", ntohs(a.sin_port));
    struct rec c = {0};
    gfl_connect_options co = {.size = sizeof co, .host = "127.0.0.1", .port = ps, .local_host = "127.0.0.1", .local_port = lport};
    gfl_future *f = gfl_create_connection(loop, one_rec_factory, &c, NULL, &co);
    gfl_transport *t = gfl_transport_ref(await_object(loop, f, gfl_transport_class()));
    gfl_future_unref(f);
    RUN_UNTIL(loop, s.n == 1 && s.recs[0]->made, 5);
    gfl_value *peer = gfl_transport_get_extra_info(s.recs[0]->t, "peername");
    const char *pp;
    size_t pl;
    gfl_value_get_bytes(peer, &pp, &pl);
    cr_assert_str_eq(pp, want);
    gfl_value_unref(peer);
    gfl_transport_abort(t);
    RUN_UNTIL(loop, c.lost && s.recs[0]->lost, 5);
    gfl_transport_unref(t);
    gfl_server_close(server);
    gfl_server_unref(server);
    srv_finish(loop, &s);
}

/* ---- Happy Eyeballs ----
 *
 * What "never answers" on loopback without external network: a listening
 * socket with listen(fd, 0) whose accept queue is already full (one
 * connection completed and never accepted). Linux then DROPS incoming SYNs
 * (tcp_conn_request: sk_acceptq_is_full -> drop; this does not depend on
 * SYN cookies, which only concern the SYN queue), so the client's connect()
 * stays in SYN_SENT and retransmits for minutes: exactly a blackholed
 * address. The test probes this first and fails loudly if the kernel
 * behaves differently, rather than passing by accident. Alternatives were
 * rejected: unroutable addresses (10.255.255.1, TEST-NET) fail at once
 * with ENETUNREACH when there is no default route; firewall rules need
 * root and iptables; a fake connect() hook would not test the real path.
 *
 * Both addresses use the same port: the blackhole listens on 127.0.0.2
 * (all of 127/8 is loopback on Linux), the real server on 127.0.0.1.
 */
struct blackhole {
    int listener, filler;
    int port;
};

static bool make_blackhole(struct blackhole *b, int port)
{
    b->listener = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.2", &a.sin_addr);
    if (bind(b->listener, (struct sockaddr *)&a, sizeof a) < 0 || listen(b->listener, 0) < 0)
        return false;
    b->filler = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_eq(connect(b->filler, (struct sockaddr *)&a, sizeof a), 0);
    /* Probe: a non-blocking connect must not complete within 300 ms. */
    int probe = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int rc = connect(probe, (struct sockaddr *)&a, sizeof a);
    cr_assert(rc < 0 && errno == EINPROGRESS);
    struct pollfd pfd = {.fd = probe, .events = POLLOUT};
    int n = poll(&pfd, 1, 300);
    close(probe);
    cr_assert_eq(n, 0, "the full-backlog listener answered: this kernel does not drop SYNs on a full accept queue");
    return true;
}

static gfl_addrinfo *two_addrs(const char *first, const char *second, int port)
{
    gfl_addrinfo *ai = gfl_addrinfo_new();
    const char *hosts[2] = {first, second};
    for (int i = 0; i < 2; i++) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        inet_pton(AF_INET, hosts[i], &a.sin_addr);
        cr_assert_eq(gfl_addrinfo_add(ai, AF_INET, SOCK_STREAM, IPPROTO_TCP, &a, sizeof a), 0);
    }
    return ai;
}

Test(tcp, happy_eyeballs_blackhole)
{
    struct srv s = {0};
    int port;
    gfl_server *server = start_server(loop, &s, "127.0.0.1", &port);
    struct blackhole b = {-1, -1, 0};
    cr_assert(make_blackhole(&b, port), "could not bind 127.0.0.2:%d", port);
    gfl_addrinfo *ai = two_addrs("127.0.0.2", "127.0.0.1", port);
    struct rec c = {0};
    gfl_connect_options co = {.size = sizeof co, .addrs = ai, .happy_eyeballs_delay = 0.1};
    double start = now_s();
    gfl_future *f = gfl_create_connection(loop, one_rec_factory, &c, NULL, &co);
    gfl_transport *t = gfl_transport_ref(await_object(loop, f, gfl_transport_class()));
    double took = now_s() - start;
    gfl_future_unref(f);
    cr_assert_geq(took, 0.09, "the second attempt waited for the delay (%.3f s)", took);
    cr_assert_lt(took, 2.0, "and did not wait for the blackholed one (%.3f s)", took);
    gfl_value *peer = gfl_transport_get_extra_info(t, "peername");
    const char *p;
    size_t pl;
    gfl_value_get_bytes(peer, &p, &pl);
    cr_assert(strncmp(p, "127.0.0.1:", 10) == 0, "connected to %s", p);
    gfl_value_unref(peer);

    /* Without Happy Eyeballs the same list hangs on the blackhole. */
    struct rec c2 = {0};
    gfl_connect_options seq = {.size = sizeof seq, .addrs = ai};
    gfl_future *f2 = gfl_create_connection(loop, one_rec_factory, &c2, NULL, &seq);
    for (int i = 0; i < 10; i++)
        gfl_loop_run_once(loop, 0.03);
    cr_assert_eq(gfl_future_state_of(f2), GFL_FUTURE_PENDING);
    gfl_future_cancel(f2, NULL);
    gfl_loop_run_once(loop, 0);
    gfl_future_unref(f2);

    gfl_addrinfo_unref(ai);
    gfl_transport_abort(t);
    RUN_UNTIL(loop, c.lost, 5);
    gfl_transport_unref(t);
    gfl_server_close(server);
    gfl_server_unref(server);
    close(b.filler);
    close(b.listener);
    srv_finish(loop, &s);
}

Test(tcp, happy_eyeballs_failure_starts_next_at_once)
{
    struct srv s = {0};
    int port;
    gfl_server *server = start_server(loop, &s, "127.0.0.1", &port);
    /* 127.0.0.3 refuses (nothing listens there on that port). */
    gfl_addrinfo *ai = two_addrs("127.0.0.3", "127.0.0.1", port);
    struct rec c = {0};
    gfl_connect_options co = {.size = sizeof co, .addrs = ai, .happy_eyeballs_delay = 5.0};
    double start = now_s();
    gfl_future *f = gfl_create_connection(loop, one_rec_factory, &c, NULL, &co);
    gfl_transport *t = gfl_transport_ref(await_object(loop, f, gfl_transport_class()));
    cr_assert_lt(now_s() - start, 2.0, "a refused attempt does not wait for the delay");
    gfl_future_unref(f);
    gfl_addrinfo_unref(ai);
    gfl_transport_abort(t);
    RUN_UNTIL(loop, c.lost, 5);
    gfl_transport_unref(t);
    gfl_server_close(server);
    gfl_server_unref(server);
    srv_finish(loop, &s);
}

Test(tcp, all_attempts_fail)
{
    int port = 1; /* privileged, nobody listens on loopback */
    gfl_addrinfo *ai = two_addrs("127.0.0.3", "127.0.0.4", port);
    struct rec c = {0};
    gfl_connect_options co = {.size = sizeof co, .addrs = ai, .happy_eyeballs_delay = 0.05};
    gfl_future *f = gfl_create_connection(loop, one_rec_factory, &c, NULL, &co);
    RUN_UNTIL(loop, future_done(f), 5);
    gfl_value *e = gfl_future_value(f);
    cr_assert_eq(gfl_value_error_code(e), GFL_ECONNREFUSED);
    cr_assert_str_eq(gfl_value_error_type(e), "OSError");
    cr_assert(strstr(gfl_value_error_message(e), "Multiple exceptions") != NULL, "%s", gfl_value_error_message(e));
    gfl_future_unref(f);
    gfl_addrinfo_unref(ai);
}

Test(tcp, connect_by_name)
{
    struct srv s = {.tmpl = {.echo = true}};
    int port;
    gfl_server *server = start_server(loop, &s, "127.0.0.1", &port);
    struct rec c = {.store = true};
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    /* "localhost" goes through the thread pool; it may also give ::1,
     * which refuses: Happy Eyeballs moves on. */
    gfl_connect_options co = {.size = sizeof co, .host = "localhost", .port = ps, .family = AF_INET, .happy_eyeballs_delay = 0.25};
    gfl_future *f = gfl_create_connection(loop, one_rec_factory, &c, NULL, &co);
    gfl_transport *t = gfl_transport_ref(await_object(loop, f, gfl_transport_class()));
    gfl_future_unref(f);
    cr_assert_eq(gfl_transport_write(t, "name", 4), 0);
    RUN_UNTIL(loop, c.len == 4, 5);
    gfl_transport_close(t);
    RUN_UNTIL(loop, c.lost, 5);
    gfl_transport_unref(t);
    gfl_server_close(server);
    gfl_server_unref(server);
    free(c.buf);
    srv_finish(loop, &s);
}

static int refusing_factory(void *fud, gfl_transport *t, const gfl_protocol **p, void **ud)
{
    (void)fud;
    (void)t;
    (void)p;
    (void)ud;
    return GFL_EPERM;
}

Test(tcp, factory_refusal)
{
    struct srv s = {0};
    int port;
    gfl_server *server = start_server(loop, &s, NULL, &port);
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    gfl_connect_options co = {.size = sizeof co, .host = "127.0.0.1", .port = ps};
    gfl_future *f = gfl_create_connection(loop, refusing_factory, NULL, NULL, &co);
    RUN_UNTIL(loop, future_done(f), 5);
    cr_assert_eq(gfl_value_error_code(gfl_future_value(f)), GFL_EPERM);
    gfl_future_unref(f);
    RUN_UNTIL(loop, s.n == 1 && s.recs[0]->lost, 5);
    cr_assert_eq(s.recs[0]->eof, 1, "the server saw the refused connection close");
    gfl_server_close(server);
    gfl_server_unref(server);
    srv_finish(loop, &s);
}

/* ---- caller-owned options (the Lua binding builds them on its stack) ---- */

/* The port of a server's listening socket `i`. */
static int server_port(gfl_server *server, int i)
{
    struct sockaddr_storage ss;
    size_t len = sizeof ss;
    cr_assert_eq(gfl_server_get_sockaddr(server, i, &ss, &len), 0);
    return ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port : ((struct sockaddr_in6 *)&ss)->sin6_port);
}

Test(tcp, server_options_are_copied)
{
    /* The hosts after the first and the port are looked up after
     * gfl_create_server returned: they must be the core's copies. */
    struct scratch m = scratch_new();
    gfl_server_options *so = scratch_alloc(&m, sizeof *so);
    so->size = sizeof *so;
    so->hosts = scratch_strv(&m, (const char *const[]){"127.0.0.1", "localhost", "127.0.0.1", NULL});
    so->port = scratch_str(&m, "0");
    so->family = AF_INET;
    struct srv s = {.tmpl = {.echo = true}};
    gfl_future *f = gfl_create_server(loop, srv_factory, &s, srv_release, so);
    cr_assert_not_null(f);
    scratch_free(&m);

    gfl_server *server = gfl_server_ref(await_object(loop, f, gfl_server_class()));
    gfl_future_unref(f);
    cr_assert_eq(gfl_server_socket_count(server), 1, "127.0.0.1 three times: bound once");
    struct rec c = {.store = true};
    gfl_transport *t = connect_to(loop, &c, "127.0.0.1", server_port(server, 0));
    cr_assert_eq(gfl_transport_write(t, "copy", 4), 0);
    RUN_UNTIL(loop, c.len == 4, 5);
    gfl_transport_close(t);
    RUN_UNTIL(loop, c.lost, 5);
    gfl_transport_unref(t);
    gfl_server_close(server);
    gfl_server_unref(server);
    free(c.buf);
    srv_finish(loop, &s);
    cr_assert_eq(s.released, 1);
}

Test(tcp, server_options_are_copied_when_the_loop_closes_first)
{
    /* A builder still resolving when the loop closes frees its copies. */
    struct scratch m = scratch_new();
    gfl_server_options *so = scratch_alloc(&m, sizeof *so);
    so->size = sizeof *so;
    so->hosts = scratch_strv(&m, (const char *const[]){"localhost", "127.0.0.1", NULL});
    so->port = scratch_str(&m, "0");
    struct srv s = {0};
    gfl_future *f = gfl_create_server(loop, srv_factory, &s, srv_release, so);
    cr_assert_not_null(f);
    scratch_free(&m);
    cr_assert_eq(gfl_loop_free(loop), 0);
    loop = gfl_loop_new(NULL); /* for the teardown */
    cr_assert_eq(gfl_future_state_of(f), GFL_FUTURE_CANCELLED);
    gfl_future_unref(f);
    cr_assert_eq(s.released, 1);
}

Test(tcp, connect_options_are_copied)
{
    struct srv s = {.tmpl = {.echo = true}};
    int port;
    gfl_server *server = start_server(loop, &s, NULL, &port);
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    struct scratch m = scratch_new();
    gfl_connect_options *co = scratch_alloc(&m, sizeof *co);
    co->size = sizeof *co;
    co->host = scratch_str(&m, "localhost"); /* resolved in the pool */
    co->port = scratch_str(&m, ps);
    co->family = AF_INET;
    co->local_host = scratch_str(&m, "127.0.0.1");
    co->local_port = scratch_str(&m, "0");
    co->happy_eyeballs_delay = 0.25;
    struct rec c = {.store = true};
    gfl_future *f = gfl_create_connection(loop, one_rec_factory, &c, NULL, co);
    cr_assert_not_null(f);
    scratch_free(&m);

    gfl_transport *t = gfl_transport_ref(await_object(loop, f, gfl_transport_class()));
    gfl_future_unref(f);
    cr_assert_eq(gfl_transport_write(t, "copied", 6), 0);
    RUN_UNTIL(loop, c.len == 6, 5);
    gfl_transport_close(t);
    RUN_UNTIL(loop, c.lost, 5);
    gfl_transport_unref(t);
    gfl_server_close(server);
    gfl_server_unref(server);
    free(c.buf);
    srv_finish(loop, &s);
}

Test(tcp, server_from_socket_reads_only_the_callers_options)
{
    /* An old caller's struct: only `size`; nothing past it is read. */
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(l, (struct sockaddr *)&a, sizeof a), 0);
    struct srv s = {0};
    gfl_server *server = gfl_server_from_socket(loop, srv_factory, &s, srv_release, l, short_options());
    cr_assert_not_null(server);
    cr_assert_eq(gfl_server_is_serving(server), 1, "defaults: serving");
    gfl_server_close(server);
    gfl_server_unref(server);
    cr_assert_eq(s.released, 1);
}
