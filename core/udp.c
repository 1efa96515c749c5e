/*
 * Datagram endpoints (UDP and Unix datagram sockets), as asyncio's
 * _SelectorDatagramTransport and create_datagram_endpoint.
 *
 * An endpoint is a transport layer of its own (struct udp embeds the
 * common gfl_transport), so lifetime, close/abort, flow control, extra info
 * and loop closing come from transport.c. The datagram protocol's
 * connection_made/connection_lost/pause/resume callbacks have the stream
 * protocol's signatures and are handed to the common machinery as a
 * gfl_protocol; datagram_received and error_received are called from here.
 *
 * I/O follows the fd stream layer: libevent callbacks only queue one
 * ready-queue callback; one recvfrom() per read readiness into the loop's
 * shared buffer; a datagram is sent at once and copied into a FIFO only on
 * EAGAIN, the write event being added only while that FIFO is non-empty.
 */
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/event_struct.h>

/* A datagram waiting for the socket. */
struct dgram {
    struct dgram *next;
    socklen_t alen; /* 0: the socket is connected (no address) */
    struct sockaddr_storage addr;
    size_t len;
    char data[];
};

struct udp {
    struct gfl_transport base;
    int fd;
    int family;
    bool connected; /* connect(2)ed: send without an address */
    socklen_t destlen; /* 0: no default destination */
    struct sockaddr_storage dest; /* the peer, or allow_broadcast's remote */
    gfl_datagram_protocol dp; /* full-size copy; absent fields NULL */
    const gfl_datagram_protocol *dp_user;
    gfl_protocol sproto; /* what transport.c calls (made/lost/pause/resume) */
    struct event rev, wev;
    bool rev_added, wev_added;
    short io_pending;
    gfl_handle io_handle;
    struct dgram *qhead, *qtail;
    size_t qbytes; /* payload bytes queued */
};

#define U(t) ((struct udp *)(t))

static const struct gfl_transport_ops udp_ops;

/* ------------------------------------------------------------------ */
/* Protocol                                                            */

static void set_dproto(struct udp *u, const gfl_datagram_protocol *p, void *ud)
{
    size_t n = p->size < sizeof u->dp ? p->size : sizeof u->dp;
    memset(&u->dp, 0, sizeof u->dp);
    memcpy(&u->dp, p, n);
    u->dp.size = sizeof u->dp;
    u->dp_user = p;
    memset(&u->sproto, 0, sizeof u->sproto);
    u->sproto.size = sizeof u->sproto;
    u->sproto.connection_made = u->dp.connection_made;
    u->sproto.connection_lost = u->dp.connection_lost;
    u->sproto.pause_writing = u->dp.pause_writing;
    u->sproto.resume_writing = u->dp.resume_writing;
    gfl__transport_set_proto(&u->base, &u->sproto, ud);
}

/* False once gfl_transport_set_protocol put a stream protocol in place. */
static bool delivering(const struct udp *u)
{
    return u->base.proto_user == &u->sproto && !u->base.lost;
}

static void report_error(struct udp *u, int err, const char *what)
{
    gfl_transport *t = &u->base;
    if (!delivering(u) || !u->dp.error_received)
        return;
    gfl_value *e = gfl__os_error(err, what);
    if (!e)
        e = gfl_value_error(GFL_ENOMEM, "MemoryError", NULL, NULL);
    if (e)
        u->dp.error_received(t, e, t->ud);
    gfl_value_unref(e);
}

/* ------------------------------------------------------------------ */
/* Events                                                              */

static void io_run(void *arg);

static void on_io(evutil_socket_t fd, short what, void *arg)
{
    struct udp *u = arg;
    (void)fd;
    u->io_pending |= what;
    if (u->io_handle > 0)
        return;
    gfl_handle h = gfl__queue_plain(u->base.loop, io_run, u);
    u->io_handle = h > 0 ? h : 0; /* ENOMEM: level-triggered, retried */
}

static void free_queue(struct udp *u);

/* The poller could not take the fd (out of memory): end the endpoint with
 * that error rather than leave it never reading or never flushing. */
static void lose_unwatchable(struct udp *u)
{
    free_queue(u);
    gfl_value *e = gfl__os_error(ENOMEM, "cannot watch the socket");
    gfl__transport_lost(&u->base, e);
    gfl_value_unref(e);
}

static void set_rev(struct udp *u, bool on)
{
    if (on == u->rev_added || u->fd < 0)
        return;
    if (on) {
        u->rev_added = event_add(&u->rev, NULL) == 0;
        if (!u->rev_added)
            lose_unwatchable(u);
    } else {
        event_del(&u->rev);
        u->rev_added = false;
        u->io_pending &= (short)~EV_READ;
    }
}

static void set_wev(struct udp *u, bool on)
{
    if (on == u->wev_added || u->fd < 0)
        return;
    if (on) {
        u->wev_added = event_add(&u->wev, NULL) == 0;
        if (!u->wev_added)
            lose_unwatchable(u);
    } else {
        event_del(&u->wev);
        u->wev_added = false;
        u->io_pending &= (short)~EV_WRITE;
    }
}

static void free_queue(struct udp *u)
{
    struct dgram *d = u->qhead;
    while (d) {
        struct dgram *next = d->next;
        gfl__free(u->base.loop, d);
        d = next;
    }
    u->qhead = u->qtail = NULL;
    u->qbytes = 0;
}

/* ------------------------------------------------------------------ */
/* Sending                                                             */

/* Queues a copy of the datagram (the socket was full). */
static int enqueue(struct udp *u, const gfl_iovec *iov, int iovcnt, size_t total, const struct sockaddr *addr, socklen_t alen)
{
    if (total > SIZE_MAX - sizeof(struct dgram))
        return GFL_ENOMEM;
    struct dgram *d = gfl__alloc(u->base.loop, sizeof *d + total);
    if (!d)
        return GFL_ENOMEM;
    d->next = NULL;
    d->len = total;
    d->alen = alen;
    if (alen)
        memcpy(&d->addr, addr, alen);
    size_t off = 0;
    for (int i = 0; i < iovcnt; i++) {
        if (iov[i].len)
            memcpy(d->data + off, iov[i].base, iov[i].len);
        off += iov[i].len;
    }
    if (u->qtail)
        u->qtail->next = d;
    else
        u->qhead = d;
    u->qtail = d;
    u->qbytes += total;
    set_wev(u, true);
    gfl__transport_maybe_pause(&u->base, u->qbytes);
    return GFL_OK;
}

static ssize_t send_iov(struct udp *u, const gfl_iovec *iov, int iovcnt, const struct sockaddr *addr, socklen_t alen)
{
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = (struct iovec *)iov; /* layout checked in transport.c */
    msg.msg_iovlen = (size_t)iovcnt;
    msg.msg_name = (void *)addr;
    msg.msg_namelen = alen;
    ssize_t w;
    do
        w = sendmsg(u->fd, &msg, MSG_NOSIGNAL);
    while (w < 0 && errno == EINTR);
    return w;
}

/* One datagram to addr (NULL: the connected peer). Errors other than a
 * full socket go to error_received, as asyncio's sendto does. */
static int send_dgram(struct udp *u, const gfl_iovec *iov, int iovcnt, size_t total, const struct sockaddr *addr, socklen_t alen)
{
    if (u->qhead)
        return enqueue(u, iov, iovcnt, total, addr, alen); /* keep the order */
    if (send_iov(u, iov, iovcnt, addr, alen) >= 0)
        return GFL_OK;
    /* Only a full socket buffer queues. ENOBUFS (a full device queue) is an
     * error as in asyncio: the socket stays writable, a retry would spin. */
    if (errno == EAGAIN || errno == EWOULDBLOCK)
        return enqueue(u, iov, iovcnt, total, addr, alen);
    report_error(u, errno, NULL);
    return GFL_OK;
}

/* Where a datagram without an explicit address goes. */
static int default_dest(struct udp *u, const struct sockaddr **addr, socklen_t *alen)
{
    if (u->connected) {
        *addr = NULL;
        *alen = 0;
        return GFL_OK;
    }
    if (u->destlen == 0)
        return GFL_ENOTCONN;
    *addr = (const struct sockaddr *)&u->dest;
    *alen = u->destlen;
    return GFL_OK;
}

static void flush(struct udp *u)
{
    gfl_transport *t = &u->base;
    while (u->qhead) {
        struct dgram *d = u->qhead;
        gfl_iovec iov = {d->data, d->len};
        int err = 0;
        if (send_iov(u, &iov, 1, d->alen ? (const struct sockaddr *)&d->addr : NULL, d->alen) < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            err = errno;
        }
        u->qhead = d->next;
        if (!u->qhead)
            u->qtail = NULL;
        u->qbytes -= d->len;
        gfl__free(t->loop, d);
        if (err) {
            report_error(u, err, NULL); /* may close or abort */
            if (t->lost_scheduled || t->lost)
                return;
        }
    }
    if (!u->qhead)
        set_wev(u, false);
    gfl__transport_maybe_resume(t, u->qbytes);
    if (!u->qhead && t->closing && !t->lost_scheduled && !t->lost)
        gfl__transport_lost(t, NULL); /* close() finished flushing */
}

/* ------------------------------------------------------------------ */
/* Receiving                                                           */

static void do_read(struct udp *u)
{
    gfl_transport *t = &u->base;
    char *buf = gfl__streams_rbuf(t->loop);
    if (!buf) {
        report_error(u, ENOMEM, "recvfrom");
        return;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    ssize_t n = recvfrom(u->fd, buf, GFL__RBUF_SIZE, 0, (struct sockaddr *)&ss, &sl);
    if (n >= 0) {
        if (sl > sizeof ss)
            sl = sizeof ss;
        if (delivering(u) && u->dp.datagram_received)
            u->dp.datagram_received(t, buf, (size_t)n, sl ? (const struct sockaddr *)&ss : NULL, sl, t->ud);
        return;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        return;
    report_error(u, errno, NULL); /* e.g. ICMP port unreachable */
}

static void io_run(void *arg)
{
    struct udp *u = arg;
    gfl_transport *t = &u->base;
    u->io_handle = 0;
    short what = u->io_pending;
    u->io_pending = 0;
    if (t->lost_scheduled || t->lost)
        return;
    gfl_transport_ref(t);
    if ((what & EV_WRITE) && u->wev_added)
        flush(u);
    if ((what & EV_READ) && u->rev_added && t->reading && !t->lost_scheduled && !t->lost)
        do_read(u);
    gfl_transport_unref(t);
}

/* ------------------------------------------------------------------ */
/* Transport operations                                                */

static int udp_writev(gfl_transport *t, const gfl_iovec *iov, int iovcnt, size_t total)
{
    struct udp *u = U(t);
    const struct sockaddr *addr;
    socklen_t alen;
    int rc = default_dest(u, &addr, &alen);
    if (rc < 0)
        return rc;
    if (iovcnt > IOV_MAX)
        return GFL_EINVAL;
    return send_dgram(u, iov, iovcnt, total, addr, alen);
}

static int udp_write_eof(gfl_transport *t)
{
    (void)t;
    return GFL_ENOSYS;
}

static int udp_can_write_eof(gfl_transport *t)
{
    (void)t;
    return 0;
}

static int udp_set_reading(gfl_transport *t, bool on)
{
    /* Before connection_made the read event is not added yet. */
    set_rev(U(t), on && t->made);
    return GFL_OK;
}

static int64_t udp_write_buffer_size(gfl_transport *t)
{
    return (int64_t)U(t)->qbytes;
}

static int udp_close(gfl_transport *t)
{
    struct udp *u = U(t);
    set_rev(u, false);
    if (!u->qhead)
        gfl__transport_lost(t, NULL);
    return GFL_OK;
}

static int udp_abort(gfl_transport *t)
{
    struct udp *u = U(t);
    free_queue(u);
    set_rev(u, false);
    set_wev(u, false);
    gfl__transport_lost(t, NULL);
    return GFL_OK;
}

static int udp_get_sockaddr(gfl_transport *t, int peer, void *addr, size_t *len)
{
    struct udp *u = U(t);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (u->fd < 0)
        return GFL_ECLOSED;
    int r = peer ? getpeername(u->fd, (struct sockaddr *)&ss, &sl) : getsockname(u->fd, (struct sockaddr *)&ss, &sl);
    if (r < 0)
        return gfl__errno_code(errno);
    if (sl > sizeof ss)
        sl = sizeof ss;
    if (sl > *len) {
        *len = sl;
        return GFL_ERANGE;
    }
    memcpy(addr, &ss, sl);
    *len = sl;
    return GFL_OK;
}

/* "host:port" / "[v6]:port" strings; Unix paths as bytes (as streams). */
static gfl_value *addr_value(const struct sockaddr_storage *ss, size_t len)
{
    if (ss->ss_family == AF_UNIX) {
        const struct sockaddr_un *un = (const struct sockaddr_un *)ss;
        size_t off = offsetof(struct sockaddr_un, sun_path);
        size_t plen = len > off ? len - off : 0;
        if (plen > 0 && un->sun_path[0] != '\0')
            plen = strnlen(un->sun_path, plen);
        return gfl_value_bytes(un->sun_path, plen);
    }
    char buf[INET6_ADDRSTRLEN + 32];
    if (gfl__sockaddr_format((const struct sockaddr *)ss, (socklen_t)len, buf, sizeof buf) < 0)
        return NULL;
    return gfl_value_string(buf, strlen(buf));
}

static gfl_value *udp_extra_info(gfl_transport *t, const char *name)
{
    struct udp *u = U(t);
    struct sockaddr_storage ss;
    size_t len = sizeof ss;
    if (strcmp(name, "sockname") == 0 || (strcmp(name, "peername") == 0 && u->connected)) {
        if (udp_get_sockaddr(t, name[0] == 'p', &ss, &len) < 0)
            return NULL;
        return addr_value(&ss, len);
    }
    if (strcmp(name, "socket") == 0)
        return u->fd >= 0 ? gfl_value_int(u->fd) : NULL;
    if (strcmp(name, "family") == 0)
        return gfl_value_int(u->family);
    return NULL;
}

static int udp_fileno(gfl_transport *t)
{
    return U(t)->fd >= 0 ? U(t)->fd : GFL_ECLOSED;
}

static void udp_teardown(gfl_transport *t)
{
    struct udp *u = U(t);
    if (u->io_handle > 0)
        (void)gfl_handle_cancel(t->loop, u->io_handle);
    u->io_handle = 0;
    set_rev(u, false);
    set_wev(u, false);
    free_queue(u);
    if (u->fd >= 0) {
        gfl__close_watched_fd(t->loop, u->fd);
        u->fd = -1;
    }
}

static void udp_destroy(gfl_transport *t)
{
    gfl_loop *loop = t->loop;
    if (U(t)->fd >= 0) /* never started: teardown did not run */
        udp_teardown(t);
    gfl_value_unref(t->lost_error);
    gfl__free(loop, t);
}

static void udp_on_made(gfl_transport *t)
{
    /* As asyncio: the reader is added after connection_made. */
    if (!t->closing && t->reading)
        set_rev(U(t), true);
}

static const struct gfl_transport_ops udp_ops = {
    .name = "datagram",
    .writev = udp_writev,
    .write_eof = udp_write_eof,
    .can_write_eof = udp_can_write_eof,
    .set_reading = udp_set_reading,
    .write_buffer_size = udp_write_buffer_size,
    .close = udp_close,
    .abort = udp_abort,
    .extra_info = udp_extra_info,
    .fileno = udp_fileno,
    .get_sockaddr = udp_get_sockaddr,
    .teardown = udp_teardown,
    .destroy = udp_destroy,
};

/* ------------------------------------------------------------------ */
/* Creating endpoints                                                  */

static struct udp *udp_new(gfl_loop *loop, int fd)
{
    struct udp *u = gfl__alloc(loop, sizeof *u);
    if (!u)
        return NULL;
    memset(u, 0, sizeof *u);
    if (gfl__transport_init(&u->base, loop, &udp_ops) < 0) {
        gfl__free(loop, u);
        return NULL;
    }
    u->fd = fd;
    int dom = 0;
    socklen_t dl = sizeof dom;
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &dom, &dl) == 0)
        u->family = dom;
    socklen_t sl = sizeof u->dest;
    if (getpeername(fd, (struct sockaddr *)&u->dest, &sl) == 0) {
        u->connected = true;
        u->destlen = sl > sizeof u->dest ? (socklen_t)sizeof u->dest : sl;
    }
    u->base.on_made = udp_on_made;
    event_assign(&u->rev, loop->base, fd, EV_READ | EV_PERSIST, on_io, u);
    event_assign(&u->wev, loop->base, fd, EV_WRITE | EV_PERSIST, on_io, u);
    return u;
}

/* Wraps a ready socket and starts it; `f` resolves after connection_made.
 * On failure the fd is closed and f fails. */
static void udp_start(gfl_loop *loop, int fd, const struct sockaddr *dest, socklen_t destlen, gfl_datagram_protocol_factory factory, void *fud, gfl_future *f)
{
    struct udp *u = udp_new(loop, fd);
    if (!u) {
        close(fd);
        gfl__future_fail_errno(f, ENOMEM, NULL);
        return;
    }
    if (dest && !u->connected && destlen <= sizeof u->dest) {
        memcpy(&u->dest, dest, destlen);
        u->destlen = destlen;
    }
    const gfl_datagram_protocol *p = NULL;
    void *ud = NULL;
    /* connection_made is queued first: once the protocol instance exists
     * nothing may fail (see gfl__transport_run_factory). */
    int rc = gfl__transport_start(&u->base);
    if (rc == GFL_OK) {
        rc = factory(fud, &u->base, &p, &ud);
        if (rc == GFL_OK && (!p || p->size < sizeof(size_t)))
            rc = GFL_EINVAL;
        if (rc < 0) {
            (void)gfl_handle_cancel(u->base.loop, u->base.made_handle);
            u->base.made_handle = 0;
        }
    }
    if (rc == GFL_OK) {
        set_dproto(u, p, ud);
        u->base.waiter = gfl_future_ref(f);
    }
    if (rc < 0) {
        gfl__transport_discard(&u->base); /* closes the fd */
        gfl__future_fail_value(f, gfl_value_error(rc, "OSError", "the protocol factory failed", NULL));
    }
}

/* One endpoint creation: the lookups, then the attempts. Reference
 * counted: one for the operation until it completes, one per lookup in
 * flight. Closing the loop frees it whatever the count. */
struct dopen {
    gfl_loop *loop;
    struct gfl_stream_node node;
    int refs;
    bool done;
    gfl_future *future;  /* the caller's */
    gfl_future *dns[2];  /* local, remote lookups in flight */
    gfl_addrinfo *ai[2]; /* their results (or the caller's lists) */
    bool want[2];
    gfl_datagram_protocol_factory factory;
    void *fud;
    gfl_release_fn frel;
    int reuse_port, allow_broadcast;
};

static void on_dns(gfl_future *f, void *arg);

static void dopen_release_factory(struct dopen *d)
{
    if (d->frel) {
        gfl_release_fn rel = d->frel;
        d->frel = NULL;
        rel(d->fud);
    }
}

static void dopen_free(struct dopen *d)
{
    gfl_loop *loop = d->loop;
    dopen_release_factory(d);
    gfl__stream_unregister(loop, &d->node);
    for (int i = 0; i < 2; i++) {
        if (d->dns[i]) {
            (void)gfl_future_remove_done_callback(d->dns[i], on_dns, d);
            (void)gfl_future_cancel(d->dns[i], NULL);
            gfl_future_unref(d->dns[i]);
        }
        gfl_addrinfo_unref(d->ai[i]);
    }
    gfl_future_unref(d->future);
    gfl__free(loop, d);
    gfl__loop_memunref(loop);
}

static void dopen_unref(struct dopen *d)
{
    if (--d->refs == 0)
        dopen_free(d);
}

static void dopen_loop_closing(struct gfl_stream_node *n)
{
    struct dopen *d = (struct dopen *)((char *)n - offsetof(struct dopen, node));
    if (gfl_future_state_of(d->future) == GFL_FUTURE_PENDING)
        (void)gfl_future_cancel(d->future, "the event loop was closed");
    dopen_free(d);
}

/* Removes a stale socket file before binding to a Unix path (asyncio). */
static void unlink_stale(const struct sockaddr *sa, socklen_t len)
{
    const struct sockaddr_un *un = (const struct sockaddr_un *)sa;
    size_t off = offsetof(struct sockaddr_un, sun_path);
    if (sa->sa_family != AF_UNIX || len <= off || un->sun_path[0] == '\0')
        return;
    char path[sizeof un->sun_path + 1];
    size_t plen = strnlen(un->sun_path, len - off);
    memcpy(path, un->sun_path, plen);
    path[plen] = '\0';
    struct stat st;
    if (stat(path, &st) == 0 && S_ISSOCK(st.st_mode))
        (void)unlink(path);
}

/* socket, options, bind, connect: the fd, or -errno. */
static int open_socket(struct dopen *d, int family, int protocol, const struct sockaddr *laddr, socklen_t llen, const struct sockaddr *raddr, socklen_t rlen)
{
    int fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, protocol);
    if (fd < 0)
        return -errno;
    int one = 1;
    if (d->reuse_port && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0)
        goto fail;
    if (d->allow_broadcast && setsockopt(fd, SOL_SOCKET, SO_BROADCAST, &one, sizeof one) < 0)
        goto fail;
    if (laddr) {
        unlink_stale(laddr, llen);
        if (bind(fd, laddr, llen) < 0)
            goto fail;
    }
    /* With allow_broadcast the remote address is only the default
     * destination: a connected socket would drop every other sender. */
    if (raddr && !d->allow_broadcast) {
        int r;
        do
            r = connect(fd, raddr, rlen);
        while (r < 0 && errno == EINTR);
        if (r < 0)
            goto fail;
    }
    return fd;
fail:;
    int err = errno;
    close(fd);
    return -err;
}

/* asyncio's pairing: per (family, protocol) in order of appearance, the
 * first local and the first remote address; a pair missing an address
 * that was asked for is skipped. The first pair that opens wins. */
static void attempt(struct dopen *d)
{
    struct pair {
        int family, protocol;
        int idx[2];
    } pairs[16];
    int npairs = 0;
    for (int side = 0; side < 2; side++) {
        if (!d->want[side])
            continue;
        int n = gfl_addrinfo_count(d->ai[side]);
        for (int i = 0; i < n; i++) {
            int fam = gfl_addrinfo_family(d->ai[side], i);
            int pro = gfl_addrinfo_protocol(d->ai[side], i);
            int k;
            for (k = 0; k < npairs; k++)
                if (pairs[k].family == fam && pairs[k].protocol == pro)
                    break;
            if (k == npairs) {
                if (npairs == (int)(sizeof pairs / sizeof pairs[0]))
                    continue;
                pairs[npairs++] = (struct pair){fam, pro, {-1, -1}};
            }
            if (pairs[k].idx[side] < 0)
                pairs[k].idx[side] = i;
        }
    }
    int first_err = 0, tried = 0;
    for (int k = 0; k < npairs; k++) {
        struct pair *p = &pairs[k];
        if ((d->want[0] && p->idx[0] < 0) || (d->want[1] && p->idx[1] < 0))
            continue;
        const void *la = NULL, *ra = NULL;
        size_t ll = 0, rl = 0;
        if (d->want[0])
            la = gfl_addrinfo_addr(d->ai[0], p->idx[0], &ll);
        if (d->want[1])
            ra = gfl_addrinfo_addr(d->ai[1], p->idx[1], &rl);
        tried++;
        int fd = open_socket(d, p->family, p->protocol, la, (socklen_t)ll, ra, (socklen_t)rl);
        if (fd >= 0) {
            udp_start(d->loop, fd, ra, (socklen_t)rl, d->factory, d->fud, d->future);
            return;
        }
        if (!first_err)
            first_err = -fd;
    }
    if (!tried)
        gfl__future_fail_value(d->future, gfl_value_error(GFL_EINVAL, "ValueError", "can not get address information", NULL));
    else
        gfl__future_fail_errno(d->future, first_err, NULL);
}

/* Both lookups (when any) are done. */
static void maybe_attempt(struct dopen *d)
{
    if (d->done || d->dns[0] || d->dns[1])
        return;
    d->done = true;
    if (gfl_future_state_of(d->future) == GFL_FUTURE_PENDING) /* not cancelled */
        attempt(d);
    dopen_release_factory(d);
    dopen_unref(d); /* the operation's reference */
}

static void on_dns(gfl_future *f, void *arg)
{
    struct dopen *d = arg;
    int side = f == d->dns[0] ? 0 : 1;
    if (!d->done && gfl_future_state_of(d->future) == GFL_FUTURE_PENDING) {
        gfl_value *v = gfl_future_value(f);
        void *obj = NULL;
        if (gfl_future_state_of(f) == GFL_FUTURE_RESULT && gfl_value_get_object(v, gfl_addrinfo_class(), &obj) == 0) {
            d->ai[side] = gfl_addrinfo_ref(obj);
            if (gfl_addrinfo_count(obj) <= 0)
                gfl__future_fail_value(d->future, gfl_value_error(GFL_ENOENT, "OSError", "getaddrinfo() returned empty list", NULL));
        } else if (gfl_future_state_of(f) == GFL_FUTURE_ERROR) {
            gfl__future_fail_value(d->future, gfl_value_ref(v));
        } else {
            (void)gfl_future_cancel(d->future, NULL);
        }
    }
    gfl_future_unref(d->dns[side]);
    d->dns[side] = NULL;
    maybe_attempt(d);
    dopen_unref(d); /* the lookup's reference */
}

static int lookup(struct dopen *d, int side, const char *host, const char *port, const gfl_datagram_options *o)
{
    int flags = o->flags | (side == 0 ? AI_PASSIVE : 0);
    gfl_future *f = gfl_getaddrinfo(d->loop, host, port ? port : "0", o->family, SOCK_DGRAM, o->protocol, flags);
    if (!f)
        return GFL_ENOMEM;
    if (gfl_future_add_done_callback(f, on_dns, d) < 0) {
        gfl_future_unref(f);
        return GFL_ENOMEM;
    }
    d->refs++;
    d->dns[side] = f;
    return GFL_OK;
}

GFL_EXPORT gfl_future *gfl_create_datagram_endpoint(gfl_loop *loop, gfl_datagram_protocol_factory factory, void *factory_ud, gfl_release_fn factory_release, const gfl_datagram_options *opts)
{
    if (gfl__check_loop(loop) < 0 || !factory || !opts || opts->size < sizeof(size_t))
        return NULL;
    gfl_datagram_options o;
    memset(&o, 0, sizeof o);
    memcpy(&o, opts, opts->size < sizeof o ? opts->size : sizeof o);
    o.size = sizeof o;
    if (o.family != AF_UNSPEC && o.family != AF_INET && o.family != AF_INET6 && o.family != AF_UNIX)
        return NULL;
    bool want_local = o.local_addrs || o.local_host || o.local_port;
    bool want_remote = o.remote_addrs || o.remote_host || o.remote_port;
    if (o.remote_host && !o.remote_port && !o.remote_addrs)
        return NULL; /* a peer needs a port */
    if (!o.remote_addrs && o.remote_port && !o.remote_host)
        return NULL;
    if ((o.local_addrs && gfl_addrinfo_count(o.local_addrs) < 0) || (o.remote_addrs && gfl_addrinfo_count(o.remote_addrs) < 0))
        return NULL;
    if (o.family == AF_UNIX && ((want_local && !o.local_addrs) || (want_remote && !o.remote_addrs)))
        return NULL; /* Unix addresses come pre-built */
    if (!want_local && !want_remote && o.family == AF_UNSPEC)
        return NULL; /* asyncio: "unexpected address family" */

    gfl_future *f = gfl_future_new(loop);
    if (!f)
        return NULL;
    if (!want_local && !want_remote) {
        /* An unbound socket of the family (sendto binds it). */
        struct dopen tmp = {.reuse_port = o.reuse_port, .allow_broadcast = o.allow_broadcast};
        int fd = open_socket(&tmp, o.family, o.protocol, NULL, 0, NULL, 0);
        if (fd < 0)
            gfl__future_fail_errno(f, -fd, NULL);
        else
            udp_start(loop, fd, NULL, 0, factory, factory_ud, f);
        if (factory_release)
            factory_release(factory_ud);
        return f;
    }

    struct dopen *d = gfl__calloc(loop, 1, sizeof *d);
    if (!d) {
        gfl_future_unref(f);
        return NULL;
    }
    d->loop = loop;
    d->node.loop_closing = dopen_loop_closing;
    if (gfl__stream_register(loop, &d->node) < 0) {
        gfl__free(loop, d);
        gfl_future_unref(f);
        return NULL;
    }
    gfl__loop_memref(loop);
    d->refs = 1;
    d->future = gfl_future_ref(f);
    d->factory = factory;
    d->fud = factory_ud;
    d->frel = factory_release; /* from here on, released exactly once */
    d->reuse_port = o.reuse_port;
    d->allow_broadcast = o.allow_broadcast;
    d->want[0] = want_local;
    d->want[1] = want_remote;
    int rc = GFL_OK;
    if (o.local_addrs)
        d->ai[0] = gfl_addrinfo_ref((gfl_addrinfo *)o.local_addrs);
    else if (want_local)
        rc = lookup(d, 0, o.local_host, o.local_port, &o);
    if (rc == GFL_OK && o.remote_addrs)
        d->ai[1] = gfl_addrinfo_ref((gfl_addrinfo *)o.remote_addrs);
    else if (rc == GFL_OK && want_remote)
        rc = lookup(d, 1, o.remote_host, o.remote_port, &o);
    if (rc < 0)
        gfl__future_fail_errno(f, -rc, NULL);
    maybe_attempt(d); /* at once when nothing had to be looked up */
    return f;
}

GFL_EXPORT gfl_future *gfl_datagram_from_socket(gfl_loop *loop, gfl_datagram_protocol_factory factory, void *factory_ud, gfl_release_fn factory_release, int fd)
{
    if (gfl__check_loop(loop) < 0 || !factory || fd < 0)
        return NULL;
    int type = 0;
    socklen_t len = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_DGRAM)
        return NULL;
    if (gfl__fd_prepare(fd) < 0)
        return NULL;
    gfl_future *f = gfl_future_new(loop);
    if (!f)
        return NULL;
    udp_start(loop, fd, NULL, 0, factory, factory_ud, f);
    if (factory_release)
        factory_release(factory_ud);
    return f;
}

/* ------------------------------------------------------------------ */
/* Datagram-specific entry points                                      */

/* A live datagram endpoint on its loop's thread (lost: GFL_ECLOSED). */
static int check(gfl_transport *t)
{
    if (!t || t->refs <= 0 || t->ops != &udp_ops)
        return GFL_EINVAL;
    int rc = gfl__check_loop(t->loop);
    if (rc < 0)
        return rc;
    return t->lost ? GFL_ECLOSED : GFL_OK;
}

static bool same_addr(const struct sockaddr *a, socklen_t alen, const struct sockaddr_storage *b, socklen_t blen)
{
    if (a->sa_family != b->ss_family)
        return false;
    if (a->sa_family == AF_INET && alen >= (socklen_t)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *x = (const struct sockaddr_in *)a, *y = (const struct sockaddr_in *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->sa_family == AF_INET6 && alen >= (socklen_t)sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)a, *y = (const struct sockaddr_in6 *)b;
        return x->sin6_port == y->sin6_port && x->sin6_scope_id == y->sin6_scope_id &&
               memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr) == 0;
    }
    return alen == blen && memcmp(a, b, alen) == 0;
}

GFL_EXPORT int gfl_datagram_sendto(gfl_transport *t, const void *data, size_t len, const struct sockaddr *addr, socklen_t addrlen)
{
    int rc = check(t);
    if (rc < 0)
        return rc;
    if (t->closing)
        return GFL_ECLOSED;
    if (!data && len)
        return GFL_EINVAL;
    struct udp *u = U(t);
    if (addr) {
        if (addrlen < (socklen_t)sizeof(sa_family_t) || addrlen > (socklen_t)sizeof(struct sockaddr_storage))
            return GFL_EINVAL;
        if (u->connected) {
            /* asyncio: "Invalid address: must be None or <peer>" */
            if (!same_addr(addr, addrlen, &u->dest, u->destlen))
                return GFL_EINVAL;
            addr = NULL;
            addrlen = 0;
        }
    } else if ((rc = default_dest(u, &addr, &addrlen)) < 0) {
        return rc;
    }
    gfl_iovec iov = {data ? data : "", len};
    return send_dgram(u, &iov, 1, len, addr, addrlen);
}

GFL_EXPORT int gfl_datagram_set_protocol(gfl_transport *t, const gfl_datagram_protocol *proto, void *ud)
{
    int rc = check(t);
    if (rc < 0)
        return rc;
    if (!proto || proto->size < sizeof(size_t))
        return GFL_EINVAL;
    set_dproto(U(t), proto, ud);
    return GFL_OK;
}

GFL_EXPORT int gfl_datagram_get_protocol(gfl_transport *t, const gfl_datagram_protocol **proto, void **ud)
{
    int rc = check(t);
    if (rc < 0)
        return rc;
    if (!proto && !ud)
        return GFL_EINVAL;
    if (t->proto_user != &U(t)->sproto)
        return GFL_ESTATE; /* a stream protocol was set instead */
    if (proto)
        *proto = U(t)->dp_user;
    if (ud)
        *ud = t->ud;
    return GFL_OK;
}
