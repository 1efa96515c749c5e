/*
 * Datagram endpoints: UDP on loopback (IPv4 and IPv6), Unix datagram
 * sockets, error_received, flow control and closing with datagrams queued.
 */
#include "stream_util.h"

#include <fcntl.h>
#include <netdb.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/stat.h>

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

TestSuite(udp, .init = setup, .fini = teardown, .timeout = 120); /* no per-test .timeout: Criterion leaks it */

/* A recording datagram protocol. */
struct drec {
    gfl_transport *t;
    int made, lost, errors, paused, resumed;
    int lost_code;       /* 0: connection_lost(NULL) */
    int err_code;        /* the last error_received */
    char err_type[64];
    int n;               /* datagrams received */
    size_t bytes;
    unsigned char last[70000];
    size_t last_len;
    struct sockaddr_storage from;
    socklen_t fromlen;
    bool echo;           /* send each datagram back to its sender */
    bool close_on_error;
    char order[64];      /* first byte of each datagram received */
};

static void d_made(gfl_transport *t, void *ud)
{
    struct drec *r = ud;
    r->t = t;
    r->made++;
}

static void d_received(gfl_transport *t, const void *data, size_t len, const struct sockaddr *addr, socklen_t alen, void *ud)
{
    struct drec *r = ud;
    cr_assert_eq(t, r->t);
    if (r->n < (int)sizeof r->order)
        r->order[r->n] = len ? ((const char *)data)[0] : 0;
    r->n++;
    r->bytes += len;
    r->last_len = len < sizeof r->last ? len : sizeof r->last;
    memcpy(r->last, data, r->last_len);
    r->fromlen = alen;
    if (addr)
        memcpy(&r->from, addr, alen);
    if (r->echo)
        cr_assert_eq(gfl_datagram_sendto(t, data, len, addr, alen), 0);
}

static void d_error(gfl_transport *t, gfl_value *err, void *ud)
{
    struct drec *r = ud;
    cr_assert_eq(t, r->t);
    r->errors++;
    r->err_code = gfl_value_error_code(err);
    snprintf(r->err_type, sizeof r->err_type, "%s", gfl_value_error_type(err));
    if (r->close_on_error)
        cr_assert_eq(gfl_transport_close(t), 0);
}

static void d_lost(gfl_transport *t, gfl_value *err, void *ud)
{
    struct drec *r = ud;
    cr_assert_eq(t, r->t);
    r->lost++;
    r->lost_code = err ? gfl_value_error_code(err) : 0;
}

static void d_pause(gfl_transport *t, void *ud)
{
    (void)t;
    ((struct drec *)ud)->paused++;
}

static void d_resume(gfl_transport *t, void *ud)
{
    (void)t;
    ((struct drec *)ud)->resumed++;
}

static const gfl_datagram_protocol dproto = {
    .size = sizeof(gfl_datagram_protocol),
    .connection_made = d_made,
    .datagram_received = d_received,
    .error_received = d_error,
    .connection_lost = d_lost,
    .pause_writing = d_pause,
    .resume_writing = d_resume,
};

static int d_factory(void *fud, gfl_transport *t, const gfl_datagram_protocol **p, void **ud)
{
    (void)t;
    *p = &dproto;
    *ud = fud;
    return 0;
}

static int released;
static void d_release(void *fud)
{
    (void)fud;
    released++;
}

static gfl_transport *endpoint(struct drec *r, const gfl_datagram_options *o)
{
    gfl_future *f = gfl_create_datagram_endpoint(loop, d_factory, r, d_release, o);
    gfl_transport *t = gfl_transport_ref(await_object(loop, f, gfl_transport_class()));
    gfl_future_unref(f);
    cr_assert_eq(r->made, 1);
    cr_assert_eq(r->t, t);
    return t;
}

/* The port of a bound endpoint. */
static int port_of(gfl_transport *t)
{
    struct sockaddr_storage ss;
    size_t len = sizeof ss;
    cr_assert_eq(gfl_transport_get_sockaddr(t, 0, &ss, &len), 0);
    return ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port : ((struct sockaddr_in6 *)&ss)->sin6_port);
}

static void close_and_wait(gfl_transport *t, struct drec *r)
{
    cr_assert_eq(gfl_transport_close(t), 0);
    RUN_UNTIL(loop, r->lost == 1, 5);
    cr_assert_eq(r->lost_code, 0);
    gfl_transport_unref(t);
}

static char *extra_string(gfl_transport *t, const char *name)
{
    gfl_value *v = gfl_transport_get_extra_info(t, name);
    if (!v)
        return NULL;
    const char *s;
    size_t len;
    cr_assert_eq(gfl_value_get_bytes(v, &s, &len), 0);
    char *copy = strdup(s);
    gfl_value_unref(v);
    return copy;
}

static void echo_test(const char *host, int family)
{
    struct drec srv = {.echo = true}, cli = {0};
    gfl_datagram_options so = {.size = sizeof so, .local_host = host, .local_port = "0"};
    gfl_transport *st = endpoint(&srv, &so);
    char port[16];
    snprintf(port, sizeof port, "%d", port_of(st));
    gfl_datagram_options co = {.size = sizeof co, .remote_host = host, .remote_port = port};
    gfl_transport *ct = endpoint(&cli, &co);

    /* extra info: a connected endpoint has a peer, a bound one not */
    char *peer = extra_string(ct, "peername");
    cr_assert_not_null(peer);
    cr_assert(strstr(peer, port) != NULL, "peername %s", peer);
    free(peer);
    cr_assert_null(gfl_transport_get_extra_info(st, "peername"));
    char *sock = extra_string(st, "sockname");
    cr_assert_not_null(sock);
    cr_assert(strstr(sock, port) != NULL);
    free(sock);
    gfl_value *fam = gfl_transport_get_extra_info(ct, "family");
    int64_t fv;
    cr_assert_eq(gfl_value_get_int(fam, &fv), 0);
    cr_assert_eq(fv, family);
    gfl_value_unref(fam);
    gfl_value *sv = gfl_transport_get_extra_info(ct, "socket");
    int64_t fd;
    cr_assert_eq(gfl_value_get_int(sv, &fd), 0);
    cr_assert_eq(fd, gfl_transport_fileno(ct));
    gfl_value_unref(sv);
    cr_assert_eq(gfl_transport_can_write_eof(ct), 0);
    cr_assert_eq(gfl_transport_write_eof(ct), GFL_ENOSYS);

    /* both ways of sending to the peer */
    cr_assert_eq(gfl_transport_write(ct, "hello", 5), 0);
    RUN_UNTIL(loop, cli.n == 1, 5);
    cr_assert_eq(cli.last_len, 5);
    cr_assert(memcmp(cli.last, "hello", 5) == 0);
    cr_assert_eq(srv.n, 1);
    cr_assert_eq(cli.from.ss_family, family);
    cr_assert_eq(cli.fromlen, family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6));
    cr_assert_eq(gfl_datagram_sendto(ct, "world!", 6, NULL, 0), 0);
    /* the peer's own address is accepted on a connected endpoint */
    cr_assert_eq(gfl_datagram_sendto(ct, "again", 5, (struct sockaddr *)&cli.from, cli.fromlen), 0);
    gfl_iovec iov[3] = {{"ab", 2}, {"", 0}, {"cd", 2}};
    cr_assert_eq(gfl_transport_writev(ct, iov, 3), 0);
    RUN_UNTIL(loop, cli.n == 4, 5);
    cr_assert_eq(cli.last_len, 4, "writev gathers into one datagram");
    cr_assert(memcmp(cli.last, "abcd", 4) == 0);
    cr_assert_eq(cli.bytes, 5 + 6 + 5 + 4);
    cr_assert_eq(gfl_transport_get_write_buffer_size(ct), 0);
    cr_assert_eq(cli.errors + srv.errors, 0);

    gfl_transport_ref(ct);
    close_and_wait(ct, &cli);
    close_and_wait(st, &srv);
    cr_assert_eq(gfl_transport_write(ct, "x", 1), GFL_ECLOSED);
    cr_assert_eq(gfl_datagram_sendto(ct, "x", 1, NULL, 0), GFL_ECLOSED);
    gfl_transport_unref(ct);
    cr_assert_eq(released, 2);
}

Test(udp, echo_ipv4)
{
    echo_test("127.0.0.1", AF_INET);
}

static bool have_ipv6(void)
{
    int fd = socket(AF_INET6, SOCK_DGRAM, 0);
    if (fd < 0)
        return false;
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    bool ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

Test(udp, echo_ipv6)
{
    if (!have_ipv6())
        cr_skip_test("no IPv6 loopback");
    echo_test("::1", AF_INET6);
}

Test(udp, sendto_recvfrom_with_addresses)
{
    struct drec a = {0}, b = {0};
    gfl_datagram_options o = {.size = sizeof o, .local_host = "127.0.0.1"};
    gfl_transport *ta = endpoint(&a, &o);
    gfl_transport *tb = endpoint(&b, &o);
    cr_assert_null(gfl_transport_get_extra_info(ta, "peername"));
    struct sockaddr_storage addr_a, addr_b;
    size_t la = sizeof addr_a, lb = sizeof addr_b;
    cr_assert_eq(gfl_transport_get_sockaddr(ta, 0, &addr_a, &la), 0);
    cr_assert_eq(gfl_transport_get_sockaddr(tb, 0, &addr_b, &lb), 0);
    cr_assert_eq(gfl_transport_get_sockaddr(ta, 1, &addr_b, &lb), GFL_ENOTCONN);

    /* no destination on an unconnected endpoint */
    cr_assert_eq(gfl_transport_write(ta, "x", 1), GFL_ENOTCONN);
    cr_assert_eq(gfl_datagram_sendto(ta, "x", 1, NULL, 0), GFL_ENOTCONN);

    cr_assert_eq(gfl_datagram_sendto(ta, "ping", 4, (struct sockaddr *)&addr_b, (socklen_t)lb), 0);
    RUN_UNTIL(loop, b.n == 1, 5);
    cr_assert_eq(b.fromlen, la);
    cr_assert(memcmp(&b.from, &addr_a, la) == 0, "the sender is a's address");
    /* reply to whoever sent it */
    cr_assert_eq(gfl_datagram_sendto(tb, "pong", 4, (struct sockaddr *)&b.from, b.fromlen), 0);
    RUN_UNTIL(loop, a.n == 1, 5);
    cr_assert(memcmp(a.last, "pong", 4) == 0);
    cr_assert(memcmp(&a.from, &addr_b, lb) == 0);

    /* zero-length datagrams are datagrams */
    cr_assert_eq(gfl_datagram_sendto(ta, NULL, 0, (struct sockaddr *)&addr_b, (socklen_t)lb), 0);
    RUN_UNTIL(loop, b.n == 2, 5);
    cr_assert_eq(b.last_len, 0);

    close_and_wait(ta, &a);
    close_and_wait(tb, &b);
}

/* A UDP port on 127.0.0.1 that nothing listens on. */
static int closed_port(void)
{
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

Test(udp, connected_port_unreachable_goes_to_error_received)
{
    struct drec r = {0};
    char port[16];
    snprintf(port, sizeof port, "%d", closed_port());
    gfl_datagram_options o = {.size = sizeof o, .remote_host = "127.0.0.1", .remote_port = port};
    gfl_transport *t = endpoint(&r, &o);
    cr_assert_eq(gfl_transport_write(t, "anyone?", 7), 0);
    RUN_UNTIL(loop, r.errors >= 1, 5);
    cr_assert_eq(r.err_code, GFL_ECONNREFUSED);
    cr_assert_str_eq(r.err_type, "ConnectionRefusedError");
    cr_assert_eq(r.lost, 0, "an ICMP error does not end the endpoint");
    cr_assert_eq(gfl_transport_is_closing(t), 0);
    /* still usable: the next send reports the next error the same way */
    int before = r.errors;
    for (int i = 0; i < 50 && r.errors == before; i++) {
        cr_assert_eq(gfl_transport_write(t, "again", 5), 0);
        for (int k = 0; k < 4; k++)
            gfl_loop_run_once(loop, 0.01);
    }
    cr_assert_gt(r.errors, before);
    cr_assert_eq(r.lost, 0);
    close_and_wait(t, &r);
}

Test(udp, error_received_may_close)
{
    struct drec r = {.close_on_error = true};
    char port[16];
    snprintf(port, sizeof port, "%d", closed_port());
    gfl_datagram_options o = {.size = sizeof o, .remote_host = "127.0.0.1", .remote_port = port};
    gfl_transport *t = endpoint(&r, &o);
    cr_assert_eq(gfl_transport_write(t, "x", 1), 0);
    RUN_UNTIL(loop, r.lost == 1, 5);
    cr_assert_eq(r.errors, 1);
    cr_assert_eq(r.lost_code, 0);
    gfl_transport_unref(t);
}

static int sockopt(gfl_transport *t, int opt)
{
    int v = -1;
    socklen_t len = sizeof v;
    cr_assert_eq(getsockopt(gfl_transport_fileno(t), SOL_SOCKET, opt, &v, &len), 0);
    return v;
}

Test(udp, broadcast_option)
{
    struct drec rx = {0}, b = {0}, plain = {0};
    gfl_datagram_options ro = {.size = sizeof ro, .local_host = "127.0.0.1"};
    gfl_transport *rt = endpoint(&rx, &ro);
    cr_assert_eq(sockopt(rt, SO_BROADCAST), 0);
    char port[16];
    snprintf(port, sizeof port, "%d", port_of(rt));
    /* allow_broadcast: SO_BROADCAST, and the remote address is only the
     * default destination (not connected) */
    gfl_datagram_options bo = {.size = sizeof bo, .remote_host = "127.0.0.1", .remote_port = port, .allow_broadcast = 1};
    gfl_transport *bt = endpoint(&b, &bo);
    cr_assert_neq(sockopt(bt, SO_BROADCAST), 0);
    cr_assert_null(gfl_transport_get_extra_info(bt, "peername"));
    cr_assert_eq(gfl_transport_write(bt, "to-default", 10), 0);
    RUN_UNTIL(loop, rx.n == 1, 5);
    cr_assert(memcmp(rx.last, "to-default", 10) == 0);
    /* an unconnected endpoint takes replies from anyone */
    cr_assert_eq(gfl_datagram_sendto(rt, "back", 4, (struct sockaddr *)&rx.from, rx.fromlen), 0);
    RUN_UNTIL(loop, b.n == 1, 5);
    /* broadcast needs the option: the kernel refuses without it */
    gfl_datagram_options po = {.size = sizeof po, .family = AF_INET};
    gfl_transport *pt = endpoint(&plain, &po);
    struct sockaddr_in bc = {.sin_family = AF_INET, .sin_port = htons(9), .sin_addr.s_addr = htonl(INADDR_BROADCAST)};
    cr_assert_eq(gfl_datagram_sendto(pt, "x", 1, (struct sockaddr *)&bc, sizeof bc), 0);
    cr_assert_eq(plain.errors, 1, "EACCES goes to error_received");
    cr_assert_eq(plain.err_code, GFL_EACCES);
    cr_assert_str_eq(plain.err_type, "PermissionError");
    close_and_wait(pt, &plain);
    close_and_wait(bt, &b);
    close_and_wait(rt, &rx);
}

Test(udp, reuse_port)
{
    struct drec a = {0}, b = {0};
    gfl_datagram_options o = {.size = sizeof o, .local_host = "127.0.0.1", .reuse_port = 1};
    gfl_transport *ta = endpoint(&a, &o);
    cr_assert_neq(sockopt(ta, SO_REUSEPORT), 0);
    char port[16];
    snprintf(port, sizeof port, "%d", port_of(ta));
    o.local_port = port;
    gfl_transport *tb = endpoint(&b, &o);
    cr_assert_eq(port_of(tb), port_of(ta));
    /* without the option the port is taken */
    struct drec c = {0};
    gfl_datagram_options no = {.size = sizeof no, .local_host = "127.0.0.1", .local_port = port};
    gfl_future *f = gfl_create_datagram_endpoint(loop, d_factory, &c, NULL, &no);
    RUN_UNTIL(loop, future_done(f), 5);
    cr_assert_eq(gfl_future_state_of(f), GFL_FUTURE_ERROR);
    cr_assert_eq(gfl_value_error_code(gfl_future_value(f)), GFL_EADDRINUSE);
    cr_assert_str_eq(gfl_value_error_type(gfl_future_value(f)), "OSError");
    gfl_future_unref(f);
    cr_assert_eq(c.made, 0);
    close_and_wait(ta, &a);
    close_and_wait(tb, &b);
}

Test(udp, big_datagrams)
{
    static struct drec a, b; /* big */
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    gfl_datagram_options o = {.size = sizeof o, .local_host = "127.0.0.1"};
    gfl_transport *ta = endpoint(&a, &o);
    gfl_transport *tb = endpoint(&b, &o);
    struct sockaddr_storage addr_b;
    size_t lb = sizeof addr_b;
    cr_assert_eq(gfl_transport_get_sockaddr(tb, 0, &addr_b, &lb), 0);
    static unsigned char big[70000];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (unsigned char)(i * 7 + i / 251);
    const size_t sizes[] = {1, 1500, 9000, 60000, 65507}; /* 65507: IPv4's maximum */
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        cr_assert_eq(gfl_datagram_sendto(ta, big, sizes[k], (struct sockaddr *)&addr_b, (socklen_t)lb), 0);
        RUN_UNTIL(loop, b.n == (int)k + 1, 5);
        cr_assert_eq(b.last_len, sizes[k]);
        cr_assert(memcmp(b.last, big, sizes[k]) == 0);
    }
    /* too big for IPv4: EMSGSIZE reaches error_received */
    cr_assert_eq(gfl_datagram_sendto(ta, big, 65508, (struct sockaddr *)&addr_b, (socklen_t)lb), 0);
    cr_assert_eq(a.errors, 1);
    cr_assert_eq(a.err_code, -EMSGSIZE);
    cr_assert_eq(a.lost, 0);
    close_and_wait(ta, &a);
    close_and_wait(tb, &b);
}

/* A Unix datagram socketpair: unlike UDP on loopback, its sender blocks
 * (EAGAIN) while the receiver's queue is full, which exercises the queue. */
static gfl_transport *wrap_pair(struct drec *r, int *other)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_DGRAM, 0, sv), 0);
    int small = 4096;
    cr_assert_eq(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
    gfl_future *f = gfl_datagram_from_socket(loop, d_factory, r, NULL, sv[0]);
    gfl_transport *t = gfl_transport_ref(await_object(loop, f, gfl_transport_class()));
    gfl_future_unref(f);
    cr_assert(fcntl(sv[0], F_GETFL) & O_NONBLOCK);
    cr_assert(fcntl(sv[0], F_GETFD) & FD_CLOEXEC);
    *other = sv[1];
    return t;
}

/* Sends numbered 1000-byte datagrams until some are queued. */
static int fill(gfl_transport *t, int *sent)
{
    char buf[1000];
    for (int i = 0; i < 100000; i++) {
        memset(buf, 0, sizeof buf);
        snprintf(buf, sizeof buf, "%d", *sent);
        cr_assert_eq(gfl_transport_write(t, buf, sizeof buf), 0);
        (*sent)++;
        if (gfl_transport_get_write_buffer_size(t) >= 8000)
            return 0;
    }
    cr_assert_fail("the socket never filled");
    return -1;
}

Test(udp, close_flushes_pending_datagrams_in_order)
{
    struct drec r = {0};
    int other;
    gfl_transport *t = wrap_pair(&r, &other);
    cr_assert_eq(gfl_transport_set_write_buffer_limits(t, 4000, 1000), 0);
    int fd = gfl_transport_fileno(t);
    int sent = 0;
    fill(t, &sent);
    cr_assert_eq(r.paused, 1);
    int64_t queued = gfl_transport_get_write_buffer_size(t);
    cr_assert_gt(queued, 0);
    cr_assert_eq(queued % 1000, 0, "whole datagrams are queued");
    cr_assert_eq(gfl_transport_close(t), 0);
    cr_assert_eq(gfl_transport_is_closing(t), 1);
    cr_assert_eq(gfl_transport_write(t, "late", 4), GFL_ECLOSED);
    cr_assert_eq(gfl_datagram_sendto(t, "late", 4, NULL, 0), GFL_ECLOSED);
    for (int i = 0; i < 5; i++)
        gfl_loop_run_once(loop, 0.01);
    cr_assert_eq(r.lost, 0, "close waits for the queue");
    /* drain the peer: every datagram arrives, whole and in order */
    int got = 0;
    double deadline = now_s() + 10;
    while (got < sent) {
        cr_assert_lt(now_s(), deadline);
        char buf[2000];
        ssize_t n = recv(other, buf, sizeof buf, MSG_DONTWAIT);
        if (n < 0) {
            cr_assert(errno == EAGAIN);
            gfl_loop_run_once(loop, 0.01);
            continue;
        }
        cr_assert_eq(n, 1000);
        cr_assert_eq(atoi(buf), got);
        got++;
    }
    RUN_UNTIL(loop, r.lost == 1, 5);
    cr_assert_eq(r.lost_code, 0);
    cr_assert_eq(r.resumed, 1);
    cr_assert_eq(fcntl(fd, F_GETFD), -1, "the socket was closed");
    gfl_transport_unref(t);
    close(other);
}

Test(udp, abort_drops_pending_datagrams)
{
    struct drec r = {0};
    int other;
    gfl_transport *t = wrap_pair(&r, &other);
    int sent = 0;
    fill(t, &sent);
    int fd = gfl_transport_fileno(t);
    cr_assert_eq(gfl_transport_abort(t), 0);
    RUN_UNTIL(loop, r.lost == 1, 5);
    cr_assert_eq(r.lost_code, 0);
    cr_assert_eq(fcntl(fd, F_GETFD), -1, "the socket was closed");
    cr_assert_eq(gfl_transport_get_write_buffer_size(t), GFL_ECLOSED);
    gfl_transport_unref(t);
    close(other);
}

Test(udp, existing_socket)
{
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    struct drec r = {0};
    gfl_future *f = gfl_datagram_from_socket(loop, d_factory, &r, d_release, fd);
    gfl_transport *t = gfl_transport_ref(await_object(loop, f, gfl_transport_class()));
    gfl_future_unref(f);
    cr_assert_eq(released, 1);
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    cr_assert_eq(sendto(s, "raw", 3, 0, (struct sockaddr *)&a, sizeof a), 3);
    RUN_UNTIL(loop, r.n == 1, 5);
    cr_assert(memcmp(r.last, "raw", 3) == 0);
    close(s);
    close_and_wait(t, &r);
    cr_assert_eq(fcntl(fd, F_GETFD), -1, "the endpoint owned the fd");

    /* a stream socket is refused (and stays the caller's) */
    int ss = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_null(gfl_datagram_from_socket(loop, d_factory, &r, NULL, ss));
    cr_assert_geq(fcntl(ss, F_GETFD), 0);
    close(ss);
}

Test(udp, connected_existing_socket_and_wrong_address)
{
    struct drec srv = {0}, cli = {0};
    gfl_datagram_options so = {.size = sizeof so, .local_host = "127.0.0.1"};
    gfl_transport *st = endpoint(&srv, &so);
    struct sockaddr_in a;
    size_t alen = sizeof a;
    cr_assert_eq(gfl_transport_get_sockaddr(st, 0, &a, &alen), 0);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    gfl_future *f = gfl_datagram_from_socket(loop, d_factory, &cli, NULL, fd);
    gfl_transport *ct = gfl_transport_ref(await_object(loop, f, gfl_transport_class()));
    gfl_future_unref(f);
    char *peer = extra_string(ct, "peername");
    cr_assert_not_null(peer, "a connected socket handed in is connected");
    free(peer);
    struct sockaddr_in other = a;
    other.sin_port = htons((uint16_t)(ntohs(a.sin_port) ^ 1));
    cr_assert_eq(gfl_datagram_sendto(ct, "x", 1, (struct sockaddr *)&other, sizeof other), GFL_EINVAL,
                 "asyncio: must be None or the peer");
    cr_assert_eq(gfl_datagram_sendto(ct, "x", 1, (struct sockaddr *)&a, sizeof a), 0);
    RUN_UNTIL(loop, srv.n == 1, 5);
    close_and_wait(ct, &cli);
    close_and_wait(st, &srv);
}

Test(udp, pause_and_resume_reading)
{
    struct drec a = {0}, b = {0};
    gfl_datagram_options o = {.size = sizeof o, .local_host = "127.0.0.1"};
    gfl_transport *ta = endpoint(&a, &o);
    gfl_transport *tb = endpoint(&b, &o);
    struct sockaddr_storage addr_b;
    size_t lb = sizeof addr_b;
    cr_assert_eq(gfl_transport_get_sockaddr(tb, 0, &addr_b, &lb), 0);
    cr_assert_eq(gfl_transport_pause_reading(tb), 0);
    cr_assert_eq(gfl_transport_is_reading(tb), 0);
    cr_assert_eq(gfl_datagram_sendto(ta, "held", 4, (struct sockaddr *)&addr_b, (socklen_t)lb), 0);
    for (int i = 0; i < 5; i++)
        gfl_loop_run_once(loop, 0.01);
    cr_assert_eq(b.n, 0);
    cr_assert_eq(gfl_transport_resume_reading(tb), 0);
    RUN_UNTIL(loop, b.n == 1, 5);
    close_and_wait(ta, &a);
    close_and_wait(tb, &b);
}

static int refusing_factory(void *fud, gfl_transport *t, const gfl_datagram_protocol **p, void **ud)
{
    (void)fud;
    (void)t;
    (void)p;
    (void)ud;
    return GFL_EPERM;
}

Test(udp, factory_refusal_closes_the_socket)
{
    int before = count_fds();
    gfl_datagram_options o = {.size = sizeof o, .local_host = "127.0.0.1"};
    gfl_future *f = gfl_create_datagram_endpoint(loop, refusing_factory, NULL, d_release, &o);
    cr_assert_not_null(f);
    RUN_UNTIL(loop, future_done(f), 5);
    cr_assert_eq(gfl_future_state_of(f), GFL_FUTURE_ERROR);
    cr_assert_eq(gfl_value_error_code(gfl_future_value(f)), GFL_EPERM);
    gfl_future_unref(f);
    cr_assert_eq(released, 1);
    cr_assert_eq(count_fds(), before);
}

Test(udp, resolves_names_and_fails_lookups)
{
    struct drec r = {0};
    gfl_datagram_options o = {.size = sizeof o, .local_host = "localhost", .family = AF_INET};
    gfl_transport *t = endpoint(&r, &o);
    char *sock = extra_string(t, "sockname");
    cr_assert(strncmp(sock, "127.", 4) == 0, "%s", sock);
    free(sock);
    close_and_wait(t, &r);

    struct drec r2 = {0};
    gfl_datagram_options bad = {.size = sizeof bad, .remote_host = "no-such-host.invalid", .remote_port = "9"};
    gfl_future *f = gfl_create_datagram_endpoint(loop, d_factory, &r2, d_release, &bad);
    RUN_UNTIL(loop, future_done(f), 30);
    cr_assert_eq(gfl_future_state_of(f), GFL_FUTURE_ERROR);
    cr_assert_str_eq(gfl_value_error_type(gfl_future_value(f)), "gaierror");
    gfl_future_unref(f);
    cr_assert_eq(r2.made, 0);
    cr_assert_eq(released, 2);

    /* families that cannot pair: a v4 local with a v6 remote */
    gfl_datagram_options mix = {.size = sizeof mix, .local_host = "127.0.0.1", .remote_host = "::1", .remote_port = "9"};
    f = gfl_create_datagram_endpoint(loop, d_factory, &r2, NULL, &mix);
    RUN_UNTIL(loop, future_done(f), 5);
    cr_assert_eq(gfl_future_state_of(f), GFL_FUTURE_ERROR);
    cr_assert_str_eq(gfl_value_error_type(gfl_future_value(f)), "ValueError");
    gfl_future_unref(f);
}

Test(udp, unix_datagram_endpoints)
{
    char dir[] = "/tmp/gfl-udp-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    struct sockaddr_un sa = {.sun_family = AF_UNIX}, sb = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s/a", dir);
    snprintf(sb.sun_path, sizeof sb.sun_path, "%s/b", dir);
    gfl_addrinfo *aa = gfl_addrinfo_new(), *ab = gfl_addrinfo_new();
    cr_assert_eq(gfl_addrinfo_add(aa, AF_UNIX, SOCK_DGRAM, 0, &sa, sizeof sa), 0);
    cr_assert_eq(gfl_addrinfo_add(ab, AF_UNIX, SOCK_DGRAM, 0, &sb, sizeof sb), 0);
    for (int round = 0; round < 2; round++) { /* round 2: stale socket files */
        struct drec a = {0}, b = {0};
        gfl_datagram_options ob = {.size = sizeof ob, .family = AF_UNIX, .local_addrs = ab};
        gfl_transport *tb = endpoint(&b, &ob);
        gfl_datagram_options oa = {.size = sizeof oa, .family = AF_UNIX, .local_addrs = aa, .remote_addrs = ab};
        gfl_transport *ta = endpoint(&a, &oa);
        char *peer = extra_string(ta, "peername");
        cr_assert_str_eq(peer, sb.sun_path);
        free(peer);
        cr_assert_eq(gfl_transport_write(ta, "unix", 4), 0);
        RUN_UNTIL(loop, b.n == 1, 5);
        cr_assert(strstr(((struct sockaddr_un *)&b.from)->sun_path, "/a") != NULL);
        cr_assert_eq(gfl_datagram_sendto(tb, "back", 4, (struct sockaddr *)&b.from, b.fromlen), 0);
        RUN_UNTIL(loop, a.n == 1, 5);
        close_and_wait(ta, &a);
        close_and_wait(tb, &b);
    }
    gfl_addrinfo_unref(aa);
    gfl_addrinfo_unref(ab);
    unlink(sa.sun_path);
    unlink(sb.sun_path);
    rmdir(dir);
}

static void other_received(gfl_transport *t, const void *data, size_t len, const struct sockaddr *addr, socklen_t alen, void *ud)
{
    (void)t, (void)data, (void)len, (void)addr, (void)alen;
    (*(int *)ud)++;
}

Test(udp, set_and_get_protocol)
{
    struct drec a = {0}, b = {0};
    gfl_datagram_options o = {.size = sizeof o, .local_host = "127.0.0.1"};
    gfl_transport *ta = endpoint(&a, &o);
    gfl_transport *tb = endpoint(&b, &o);
    const gfl_datagram_protocol *p;
    void *ud;
    cr_assert_eq(gfl_datagram_get_protocol(tb, &p, &ud), 0);
    cr_assert_eq(p, &dproto);
    cr_assert_eq(ud, &b);
    /* a short (older) table: fields past its size are absent */
    static const gfl_datagram_protocol small = {
        .size = offsetof(gfl_datagram_protocol, error_received),
        .datagram_received = other_received,
    };
    int count = 0;
    cr_assert_eq(gfl_datagram_set_protocol(tb, &small, &count), 0);
    struct sockaddr_storage addr_b;
    size_t lb = sizeof addr_b;
    cr_assert_eq(gfl_transport_get_sockaddr(tb, 0, &addr_b, &lb), 0);
    cr_assert_eq(gfl_datagram_sendto(ta, "x", 1, (struct sockaddr *)&addr_b, (socklen_t)lb), 0);
    RUN_UNTIL(loop, count == 1, 5);
    cr_assert_eq(b.n, 0);
    cr_assert_eq(gfl_transport_close(tb), 0);
    for (int i = 0; i < 5; i++)
        gfl_loop_run_once(loop, 0.01);
    cr_assert_eq(b.lost, 0, "the new protocol has no connection_lost");
    cr_assert_eq(gfl_datagram_set_protocol(tb, &dproto, &b), GFL_ECLOSED);
    gfl_transport_unref(tb);
    close_and_wait(ta, &a);
}

Test(udp, bad_arguments)
{
    struct drec r = {0};
    gfl_datagram_options o = {.size = sizeof o};
    cr_assert_null(gfl_create_datagram_endpoint(loop, d_factory, &r, NULL, NULL));
    cr_assert_null(gfl_create_datagram_endpoint(loop, NULL, &r, NULL, &o));
    cr_assert_null(gfl_create_datagram_endpoint(NULL, d_factory, &r, NULL, &o));
    cr_assert_null(gfl_create_datagram_endpoint(loop, d_factory, &r, NULL, &o), "no address and no family");
    o.family = 12345;
    cr_assert_null(gfl_create_datagram_endpoint(loop, d_factory, &r, NULL, &o));
    gfl_datagram_options o2 = {.size = sizeof o2, .remote_host = "127.0.0.1"};
    cr_assert_null(gfl_create_datagram_endpoint(loop, d_factory, &r, NULL, &o2), "a remote needs a port");
    gfl_datagram_options o3 = {.size = sizeof o3, .family = AF_UNIX, .local_host = "x"};
    cr_assert_null(gfl_create_datagram_endpoint(loop, d_factory, &r, NULL, &o3), "Unix addresses come pre-built");
    cr_assert_null(gfl_datagram_from_socket(loop, d_factory, &r, NULL, -1));
    cr_assert_eq(gfl_datagram_sendto(NULL, "x", 1, NULL, 0), GFL_EINVAL);
    cr_assert_eq(gfl_datagram_set_protocol(NULL, &dproto, NULL), GFL_EINVAL);
    cr_assert_eq(gfl_datagram_get_protocol(NULL, NULL, NULL), GFL_EINVAL);
    cr_assert_eq(r.made, 0);

    /* an unbound endpoint of a family; then bad sends */
    gfl_datagram_options fo = {.size = sizeof fo, .family = AF_INET};
    gfl_transport *t = endpoint(&r, &fo);
    cr_assert_eq(gfl_datagram_sendto(t, NULL, 3, NULL, 0), GFL_EINVAL);
    struct sockaddr_in a = {.sin_family = AF_INET};
    cr_assert_eq(gfl_datagram_sendto(t, "x", 1, (struct sockaddr *)&a, 1), GFL_EINVAL);
    cr_assert_eq(gfl_datagram_set_protocol(t, NULL, NULL), GFL_EINVAL);
    cr_assert_eq(gfl_datagram_get_protocol(t, NULL, NULL), GFL_EINVAL);
    gfl_transport_ref(t);
    close_and_wait(t, &r);
    /* after connection_lost */
    cr_assert_eq(gfl_datagram_sendto(t, "x", 1, (struct sockaddr *)&a, sizeof a), GFL_ECLOSED);
    cr_assert_eq(gfl_datagram_set_protocol(t, &dproto, &r), GFL_ECLOSED);
    gfl_transport_unref(t);
}

static void *closer(void *arg)
{
    gfl_transport *t = arg;
    return (void *)(intptr_t)gfl_datagram_sendto(t, "x", 1, NULL, 0);
}

Test(udp, wrong_thread)
{
    struct drec a = {0}, b = {0};
    gfl_datagram_options o = {.size = sizeof o, .local_host = "127.0.0.1"};
    gfl_transport *ta = endpoint(&a, &o);
    char port[16];
    snprintf(port, sizeof port, "%d", port_of(ta));
    gfl_datagram_options co = {.size = sizeof co, .remote_host = "127.0.0.1", .remote_port = port};
    gfl_transport *tb = endpoint(&b, &co);
    pthread_t th;
    void *ret;
    cr_assert_eq(pthread_create(&th, NULL, closer, tb), 0);
    pthread_join(th, &ret);
    cr_assert_eq((int)(intptr_t)ret, GFL_EWRONGTHREAD);
    close_and_wait(ta, &a);
    close_and_wait(tb, &b);
}

Test(udp, loop_close_loses_open_endpoints)
{
    struct drec r = {0};
    gfl_datagram_options o = {.size = sizeof o, .local_host = "127.0.0.1"};
    gfl_transport *t = endpoint(&r, &o);
    int fd = gfl_transport_fileno(t);
    /* and a creation still resolving a name */
    struct drec r2 = {0};
    gfl_datagram_options o2 = {.size = sizeof o2, .local_host = "localhost"};
    gfl_future *pending = gfl_create_datagram_endpoint(loop, d_factory, &r2, d_release, &o2);
    cr_assert_not_null(pending);
    cr_assert_eq(gfl_loop_free(loop), 0);
    loop = NULL;
    cr_assert_eq(r.lost, 1);
    cr_assert_eq(r.lost_code, GFL_ECLOSED);
    cr_assert_eq(fcntl(fd, F_GETFD), -1);
    cr_assert_eq(gfl_future_state_of(pending), GFL_FUTURE_CANCELLED);
    cr_assert_eq(r2.made, 0);
    cr_assert_eq(released, 2);
    gfl_future_unref(pending);
    gfl_transport_unref(t);
}

/* ------------------------------------------------------------------ */
/* Every allocation of an endpoint's life may fail                     */

struct counting_allocator {
    long allocations, fail_at, live, failures;
};

static void *counting_realloc(void *ud, void *ptr, size_t size)
{
    struct counting_allocator *a = ud;
    if (size == 0) {
        if (ptr)
            a->live--;
        free(ptr);
        return NULL;
    }
    a->allocations++;
    if (a->fail_at && a->allocations == a->fail_at) {
        a->failures++;
        return NULL;
    }
    void *p = realloc(ptr, size);
    if (p && !ptr)
        a->live++;
    return p;
}

/* Create (numeric and named lookups), send to itself, queue, close; the
 * loop is freed with whatever is left. Tolerant of any failure. */
static void alloc_scenario(struct counting_allocator *a)
{
    gfl_loop_options lo = {.size = sizeof lo, .realloc = counting_realloc, .realloc_ud = a};
    gfl_loop *l = gfl_loop_new(&lo);
    if (!l)
        return;
    struct drec r = {0}, r2 = {0}, r3 = {0};
    gfl_datagram_options o = {.size = sizeof o, .local_host = "127.0.0.1", .remote_host = "127.0.0.1", .remote_port = "9"};
    gfl_future *f = gfl_create_datagram_endpoint(l, d_factory, &r, NULL, &o);
    gfl_datagram_options o2 = {.size = sizeof o2, .local_host = "localhost", .family = AF_INET};
    gfl_future *f2 = gfl_create_datagram_endpoint(l, d_factory, &r2, NULL, &o2);
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_DGRAM, 0, sv), 0);
    gfl_future *f3 = gfl_datagram_from_socket(l, d_factory, &r3, NULL, sv[0]);
    if (!f3)
        close(sv[0]);
    for (int i = 0; i < 200 && f2 && !future_done(f2); i++)
        cr_assert_geq(gfl_loop_run_once(l, 0.005), 0);
    if (r2.t) {
        struct sockaddr_storage ss;
        size_t len = sizeof ss;
        if (gfl_transport_get_sockaddr(r2.t, 0, &ss, &len) == 0)
            for (int i = 0; i < 3; i++) {
                int rc = gfl_datagram_sendto(r2.t, "self", 4, (struct sockaddr *)&ss, (socklen_t)len);
                cr_assert(rc == 0 || rc == GFL_ENOMEM, "%d", rc);
            }
    }
    if (r3.t) /* fill the pair to queue datagrams */
        for (int i = 0; i < 400; i++) {
            int rc = gfl_transport_write(r3.t, "0123456789", 10);
            cr_assert(rc == 0 || rc == GFL_ENOMEM, "%d", rc);
        }
    if (r.t)
        cr_assert_eq(gfl_transport_write(r.t, "x", 1), 0);
    for (int i = 0; i < 10; i++)
        cr_assert_geq(gfl_loop_run_once(l, 0), 0);
    if (r2.t)
        (void)gfl_transport_close(r2.t);
    for (int i = 0; i < 5; i++)
        cr_assert_geq(gfl_loop_run_once(l, 0), 0);
    cr_assert_eq(gfl_loop_free(l), 0);
    cr_assert_leq(r.lost + r2.lost + r3.lost, 3);
    cr_assert_eq(r.lost, r.made);
    cr_assert_eq(r2.lost, r2.made);
    cr_assert_eq(r3.lost, r3.made);
    gfl_future_unref(f);
    gfl_future_unref(f2);
    gfl_future_unref(f3);
    close(sv[1]);
}

Test(udp, every_allocation_may_fail)
{
    int fds = count_fds();
    struct counting_allocator ref = {0};
    alloc_scenario(&ref);
    cr_assert_eq(ref.live, 0);
    cr_assert_gt(ref.allocations, 10);
    for (long n = 1; n <= ref.allocations + 5; n++) {
        struct counting_allocator a = {.fail_at = n};
        alloc_scenario(&a);
        cr_assert_eq(a.live, 0, "failing allocation %ld of %ld leaked %ld blocks", n, ref.allocations, a.live);
    }
    cr_assert_eq(count_fds(), fds);
}

Test(udp, options_are_copied)
{
    /* Names are resolved in the pool, after the call returned. */
    struct drec srv = {.echo = true}, cli = {0};
    struct scratch m = scratch_new();
    gfl_datagram_options *so = scratch_alloc(&m, sizeof *so);
    so->size = sizeof *so;
    so->local_host = scratch_str(&m, "localhost");
    so->local_port = scratch_str(&m, "0");
    so->family = AF_INET;
    gfl_future *f = gfl_create_datagram_endpoint(loop, d_factory, &srv, d_release, so);
    cr_assert_not_null(f);
    scratch_free(&m);
    gfl_transport *st = gfl_transport_ref(await_object(loop, f, gfl_transport_class()));
    gfl_future_unref(f);

    char port[16];
    snprintf(port, sizeof port, "%d", port_of(st));
    m = scratch_new();
    gfl_datagram_options *co = scratch_alloc(&m, sizeof *co);
    co->size = sizeof *co;
    co->remote_host = scratch_str(&m, "localhost");
    co->remote_port = scratch_str(&m, port);
    co->local_host = scratch_str(&m, "127.0.0.1");
    co->family = AF_INET;
    f = gfl_create_datagram_endpoint(loop, d_factory, &cli, d_release, co);
    cr_assert_not_null(f);
    scratch_free(&m);
    gfl_transport *ct = gfl_transport_ref(await_object(loop, f, gfl_transport_class()));
    gfl_future_unref(f);

    cr_assert_eq(gfl_transport_write(ct, "dgram", 5), 0);
    RUN_UNTIL(loop, cli.n == 1, 5);
    cr_assert(memcmp(cli.last, "dgram", 5) == 0);
    close_and_wait(ct, &cli);
    close_and_wait(st, &srv);
    cr_assert_eq(released, 2);
}
