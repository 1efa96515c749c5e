/*
 * Transports: the common machinery (public gfl_transport_* entry points,
 * protocol calls, lifetime, the loop's list of streams) and the fd stream
 * layer used by TCP, Unix sockets and pipes.
 *
 * Hot path, by design (asyncio's selector transports, minus bufferevents):
 *  - each fd is watched for reading while reading, and for writing ONLY
 *    while the write buffer is non-empty, so an echo costs read + write +
 *    a share of epoll_wait; the loop's own epoll set does it (iopoll.c),
 *    or two libevent events (EV_PERSIST) when that set is not available;
 *  - the poll only records readiness and queues the transport's owned
 *    ready-queue slot (no allocation), so protocol code runs with the other
 *    ready callbacks, never inside the poll;
 *  - reading: one read() per readiness into the loop's shared 256 KiB
 *    buffer (data_received borrows it), or into the protocol's own buffer
 *    (get_buffer/buffer_updated);
 *  - writing: write()/send() at once when nothing is buffered; only the
 *    remainder is copied into a chunk list, flushed later with one
 *    writev()/sendmsg() of up to 64 chunks per readiness.
 */
#include "internal.h"

#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/event_struct.h>

_Static_assert(sizeof(gfl_iovec) == sizeof(struct iovec), "gfl_iovec must match struct iovec");
_Static_assert(offsetof(gfl_iovec, base) == offsetof(struct iovec, iov_base), "gfl_iovec layout");
_Static_assert(offsetof(gfl_iovec, len) == offsetof(struct iovec, iov_len), "gfl_iovec layout");

#define DEFAULT_HIGH (64u * 1024u)
#define CHUNK_MIN (16u * 1024u) /* small writes coalesce into chunks this big */
#define FLUSH_IOV 64            /* chunks per writev */

/* ------------------------------------------------------------------ */
/* The loop's list of streams                                          */

int gfl__stream_register(gfl_loop *loop, struct gfl_stream_node *n)
{
    struct gfl_streams *s = loop->streams;
    if (!s) {
        s = gfl__calloc(loop, 1, sizeof *s);
        if (!s)
            return GFL_ENOMEM;
        s->head.next = s->head.prev = &s->head;
        loop->streams = s;
    }
    n->next = &s->head;
    n->prev = s->head.prev;
    s->head.prev->next = n;
    s->head.prev = n;
    return GFL_OK;
}

void gfl__stream_unregister(gfl_loop *loop, struct gfl_stream_node *n)
{
    if (!n->next)
        return;
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->next = n->prev = NULL;
    struct gfl_streams *s = loop->streams;
    /* Nothing left: give the memory (the read buffer) back. */
    if (s && s->head.next == &s->head) {
        gfl__free(loop, s->rbuf);
        gfl__free(loop, s);
        loop->streams = NULL;
    }
}

void gfl__streams_close(gfl_loop *loop)
{
    /* Each loop_closing unlinks its node; the last one frees the list. */
    while (loop->streams) {
        struct gfl_stream_node *n = loop->streams->head.next;
        n->loop_closing(n);
    }
}

char *gfl__streams_rbuf(gfl_loop *loop)
{
    struct gfl_streams *s = loop->streams;
    if (!s)
        return NULL;
    if (!s->rbuf) {
        s->rbuf = gfl__alloc(loop, GFL__RBUF_SIZE);
        if (s->rbuf)
            s->rbuf_cap = GFL__RBUF_SIZE;
    }
    return s->rbuf;
}

/* ------------------------------------------------------------------ */
/* Common transport machinery                                          */

#define NODE_TO_TRANSPORT(n) ((gfl_transport *)((char *)(n) - offsetof(gfl_transport, node)))

static void transport_loop_closing(struct gfl_stream_node *n);

int gfl__transport_init(gfl_transport *t, gfl_loop *loop, const struct gfl_transport_ops *ops)
{
    memset(t, 0, sizeof *t);
    t->ops = ops;
    t->loop = loop;
    t->refs = 1; /* the loop's, until connection_lost */
    t->high = DEFAULT_HIGH;
    t->low = DEFAULT_HIGH / 4;
    t->reading = true;
    t->node.loop_closing = transport_loop_closing;
    int rc = gfl__stream_register(loop, &t->node);
    if (rc < 0)
        return rc;
    gfl__loop_memref(loop);
    return GFL_OK;
}

void gfl__transport_set_proto(gfl_transport *t, const gfl_protocol *proto, void *ud)
{
    size_t n = proto->size < sizeof t->proto ? proto->size : sizeof t->proto;
    memset(&t->proto, 0, sizeof t->proto);
    memcpy(&t->proto, proto, n);
    t->proto.size = sizeof t->proto;
    t->proto_user = proto;
    t->ud = ud;
}

/* Queues connection_made before the factory runs: once the protocol
 * instance exists nothing may fail, or it would get neither
 * connection_made nor connection_lost and its owner could never free it. */
int gfl__transport_run_factory(gfl_transport *t, gfl_protocol_factory f, void *fud)
{
    int rc = gfl__transport_start(t);
    if (rc < 0)
        return rc;
    const gfl_protocol *proto = NULL;
    void *ud = NULL;
    rc = f(fud, t, &proto, &ud);
    if (rc == GFL_OK && (!proto || proto->size < sizeof(size_t)))
        rc = GFL_EINVAL;
    if (rc < 0) {
        (void)gfl_handle_cancel(t->loop, t->made_handle);
        t->made_handle = 0;
        return rc;
    }
    gfl__transport_set_proto(t, proto, ud);
    return GFL_OK;
}

static void resolve_waiter(gfl_transport *t)
{
    gfl_future *w = t->waiter;
    if (!w)
        return;
    t->waiter = NULL;
    if (gfl_future_state_of(w) == GFL_FUTURE_PENDING) {
        gfl_value *v = gfl_value_object(gfl_transport_class(), t);
        if (v) {
            (void)gfl_future_set_result(w, v);
        } else {
            /* Out of memory: the caller will never see this transport, so
             * nobody could close it; abort it (connection_lost follows). */
            gfl__future_fail_value(w, NULL);
            (void)gfl_transport_abort(t);
        }
        gfl_value_unref(v);
    }
    gfl_future_unref(w);
}

static void made_cb(void *arg)
{
    gfl_transport *t = arg;
    t->made_handle = 0;
    t->made = true;
    gfl_transport_ref(t); /* the callbacks below may close and unref */
    if (t->proto_user && t->proto.connection_made)
        t->proto.connection_made(t, t->ud);
    if (t->on_made && !t->lost)
        t->on_made(t);
    resolve_waiter(t);
    gfl_transport_unref(t);
}

/* Idempotent: gfl__transport_run_factory already queued it. */
int gfl__transport_start(gfl_transport *t)
{
    if (t->made_handle > 0)
        return GFL_OK;
    gfl_handle h = gfl_call_soon(t->loop, made_cb, t);
    if (h < 0)
        return (int)h;
    t->made_handle = h;
    return GFL_OK;
}

/* Releases the layer's resources and the loop's claims (once). */
static void finish(gfl_transport *t)
{
    if (t->made_handle > 0)
        (void)gfl_handle_cancel(t->loop, t->made_handle);
    if (t->lost_handle > 0)
        (void)gfl_handle_cancel(t->loop, t->lost_handle);
    t->made_handle = t->lost_handle = 0;
    t->ops->teardown(t);
    gfl__stream_unregister(t->loop, &t->node);
    if (t->waiter) {
        gfl_future *w = t->waiter;
        t->waiter = NULL;
        if (gfl_future_state_of(w) == GFL_FUTURE_PENDING)
            gfl__future_fail_errno(w, ECONNABORTED, "connection lost before it was made");
        gfl_future_unref(w);
    }
    if (t->server) {
        struct gfl_server *s = t->server;
        t->server = NULL;
        gfl__server_detach(s, t);
    }
}

static void lost_cb(void *arg)
{
    gfl_transport *t = arg;
    t->lost_handle = 0;
    gfl_value *err = t->lost_error;
    t->lost_error = NULL;
    t->lost = true; /* from here every call is GFL_ECLOSED */
    if (t->proto_user && t->proto.connection_lost)
        t->proto.connection_lost(t, err, t->ud);
    gfl_value_unref(err);
    finish(t);
    gfl_transport_unref(t); /* the loop's reference */
}

void gfl__transport_discard(gfl_transport *t)
{
    t->closing = t->lost = true;
    finish(t);
    gfl_transport_unref(t);
}

void gfl__transport_lost(gfl_transport *t, gfl_value *error)
{
    if (t->lost_scheduled || t->lost)
        return;
    t->lost_scheduled = true;
    t->closing = true;
    t->lost_error = error ? gfl_value_ref(error) : NULL;
    gfl_handle h = gfl_call_soon(t->loop, lost_cb, t);
    if (h > 0) {
        t->lost_handle = h;
        return;
    }
    /* Cannot queue (out of memory): finish now, without the callback. It
     * is the only way not to leak; the protocol misses connection_lost. */
    gfl_value_unref(t->lost_error);
    t->lost_error = NULL;
    t->lost = true;
    finish(t);
    gfl_transport_unref(t);
}

/* Closing the loop: connection_lost runs now (the loop is already closed,
 * so the protocol can only tidy up). */
static void transport_loop_closing(struct gfl_stream_node *n)
{
    gfl_transport *t = NODE_TO_TRANSPORT(n);
    gfl_transport_ref(t);
    if (!t->lost) {
        gfl_value *err = t->lost_error;
        t->lost_error = NULL;
        if (!err)
            err = gfl_value_error(GFL_ECLOSED, "ConnectionAbortedError", "the event loop was closed", NULL);
        t->closing = true;
        t->lost = true;
        if (t->proto_user && t->proto.connection_lost)
            t->proto.connection_lost(t, err, t->ud);
        gfl_value_unref(err);
        finish(t);
        gfl_transport_unref(t); /* the loop's */
    } else {
        gfl__stream_unregister(t->loop, n);
    }
    gfl_transport_unref(t);
}

void gfl__transport_maybe_pause(gfl_transport *t, size_t buffered)
{
    if (t->writing_paused || buffered <= t->high)
        return;
    t->writing_paused = true;
    if (t->proto_user && t->proto.pause_writing)
        t->proto.pause_writing(t, t->ud);
}

void gfl__transport_maybe_resume(gfl_transport *t, size_t buffered)
{
    if (!t->writing_paused || buffered > t->low)
        return;
    t->writing_paused = false;
    if (t->proto_user && t->proto.resume_writing && !t->lost)
        t->proto.resume_writing(t, t->ud);
}

/* ------------------------------------------------------------------ */
/* Public entry points                                                 */

static void class_ref(void *o)
{
    gfl_transport_ref(o);
}

static void class_unref(void *o)
{
    gfl_transport_unref(o);
}

static const gfl_host_class transport_class = {
    .size = sizeof(gfl_host_class),
    .name = "globeflower.transport",
    .ref = class_ref,
    .unref = class_unref,
};

GFL_EXPORT const gfl_host_class *gfl_transport_class(void)
{
    return &transport_class;
}

GFL_EXPORT gfl_transport *gfl_transport_ref(gfl_transport *t)
{
    if (!t || t->refs <= 0)
        return NULL;
    t->refs++;
    return t;
}

/* Drops a reference known to be held (refs > 0). */
static inline void drop_ref(gfl_transport *t)
{
    if (--t->refs > 0)
        return;
    gfl_loop *loop = t->loop;
    t->ops->destroy(t);
    gfl__loop_memunref(loop);
}

GFL_EXPORT void gfl_transport_unref(gfl_transport *t)
{
    if (!t || t->refs <= 0)
        return;
    drop_ref(t);
}

GFL_EXPORT gfl_loop *gfl_transport_loop(const gfl_transport *t)
{
    return t ? t->loop : NULL;
}

/* GFL_OK if `t` may be used: a live transport on its loop's thread.
 * Inlined: it guards every write (one per message on the hot path). */
static inline __attribute__((always_inline)) int check(gfl_transport *t)
{
    if (!t || t->refs <= 0)
        return GFL_EINVAL;
    int rc = gfl__check_loop(t->loop);
    if (rc < 0)
        return rc;
    return t->lost ? GFL_ECLOSED : GFL_OK;
}

static inline __attribute__((always_inline)) int check_writable(gfl_transport *t)
{
    int rc = check(t);
    if (rc < 0)
        return rc;
    if (t->closing)
        return GFL_ECLOSED;
    if (t->eof_written)
        return GFL_ESTATE;
    return GFL_OK;
}

GFL_EXPORT int gfl_transport_write(gfl_transport *t, const void *data, size_t len)
{
    int rc = check_writable(t);
    if (rc < 0)
        return rc;
    if (!data && len)
        return GFL_EINVAL;
    if (len == 0)
        return GFL_OK;
    gfl_iovec iov = {data, len};
    return t->ops->writev(t, &iov, 1, len);
}

GFL_EXPORT int gfl_transport_writev(gfl_transport *t, const gfl_iovec *iov, int iovcnt)
{
    int rc = check_writable(t);
    if (rc < 0)
        return rc;
    if (iovcnt < 0 || (iovcnt > 0 && !iov))
        return GFL_EINVAL;
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++) {
        if (!iov[i].base && iov[i].len)
            return GFL_EINVAL;
        if (total + iov[i].len < total)
            return GFL_ERANGE;
        total += iov[i].len;
    }
    if (total == 0)
        return GFL_OK;
    return t->ops->writev(t, iov, iovcnt, total);
}

GFL_EXPORT int gfl_transport_write_eof(gfl_transport *t)
{
    int rc = check(t);
    if (rc < 0)
        return rc;
    if (t->closing)
        return GFL_ECLOSED;
    if (t->eof_written)
        return GFL_OK;
    if (t->ops->can_write_eof(t) != 1)
        return GFL_ENOSYS;
    return t->ops->write_eof(t);
}

GFL_EXPORT int gfl_transport_can_write_eof(gfl_transport *t)
{
    int rc = check(t);
    return rc < 0 ? rc : t->ops->can_write_eof(t);
}

GFL_EXPORT int gfl_transport_pause_reading(gfl_transport *t)
{
    int rc = check(t);
    if (rc < 0)
        return rc;
    if (t->closing || !t->reading)
        return GFL_OK; /* asyncio: a no-op then */
    t->reading = false;
    return t->ops->set_reading(t, false);
}

GFL_EXPORT int gfl_transport_resume_reading(gfl_transport *t)
{
    int rc = check(t);
    if (rc < 0)
        return rc;
    if (t->closing || t->reading)
        return GFL_OK;
    t->reading = true;
    return t->ops->set_reading(t, true);
}

GFL_EXPORT int gfl_transport_is_reading(gfl_transport *t)
{
    int rc = check(t);
    if (rc < 0)
        return rc;
    return t->reading && !t->closing;
}

GFL_EXPORT int gfl_transport_set_write_buffer_limits(gfl_transport *t, int64_t high, int64_t low)
{
    int rc = check(t);
    if (rc < 0)
        return rc;
    if (high < 0)
        high = low < 0 ? (int64_t)DEFAULT_HIGH : 4 * low;
    if (low < 0)
        low = high / 4;
    if (low > high)
        return GFL_EINVAL;
    t->high = (size_t)high;
    t->low = (size_t)low;
    int64_t size = t->ops->write_buffer_size(t);
    if (size >= 0) {
        gfl__transport_maybe_pause(t, (size_t)size);
        gfl__transport_maybe_resume(t, (size_t)size);
    }
    return GFL_OK;
}

GFL_EXPORT int gfl_transport_get_write_buffer_limits(gfl_transport *t, size_t *high, size_t *low)
{
    int rc = check(t);
    if (rc < 0)
        return rc;
    if (!high && !low)
        return GFL_EINVAL;
    if (high)
        *high = t->high;
    if (low)
        *low = t->low;
    return GFL_OK;
}

GFL_EXPORT int64_t gfl_transport_get_write_buffer_size(gfl_transport *t)
{
    int rc = check(t);
    return rc < 0 ? rc : t->ops->write_buffer_size(t);
}

GFL_EXPORT int gfl_transport_close(gfl_transport *t)
{
    int rc = check(t);
    if (rc < 0)
        return rc;
    if (t->closing)
        return GFL_OK;
    t->closing = true;
    return t->ops->close(t);
}

GFL_EXPORT int gfl_transport_abort(gfl_transport *t)
{
    int rc = check(t);
    if (rc < 0)
        return rc;
    if (t->lost_scheduled)
        return GFL_OK;
    t->closing = true;
    return t->ops->abort(t);
}

GFL_EXPORT int gfl_transport_is_closing(gfl_transport *t)
{
    if (!t || t->refs <= 0)
        return GFL_EINVAL;
    int rc = gfl__check_loop(t->loop);
    if (rc < 0 && !t->lost)
        return rc;
    return t->closing || t->lost;
}

GFL_EXPORT gfl_value *gfl_transport_get_extra_info(gfl_transport *t, const char *name)
{
    if (check(t) < 0 || !name)
        return NULL;
    return t->ops->extra_info(t, name);
}

GFL_EXPORT int gfl_transport_fileno(gfl_transport *t)
{
    int rc = check(t);
    return rc < 0 ? rc : t->ops->fileno(t);
}

GFL_EXPORT int gfl_transport_get_sockaddr(gfl_transport *t, int peer, void *addr, size_t *len)
{
    int rc = check(t);
    if (rc < 0)
        return rc;
    if (!addr || !len)
        return GFL_EINVAL;
    return t->ops->get_sockaddr(t, peer, addr, len);
}

GFL_EXPORT int gfl_transport_set_protocol(gfl_transport *t, const gfl_protocol *proto, void *ud)
{
    int rc = check(t);
    if (rc < 0)
        return rc;
    if (!proto || proto->size < sizeof(size_t))
        return GFL_EINVAL;
    gfl__transport_set_proto(t, proto, ud);
    return GFL_OK;
}

GFL_EXPORT int gfl_transport_get_protocol(gfl_transport *t, const gfl_protocol **proto, void **ud)
{
    int rc = check(t);
    if (rc < 0)
        return rc;
    if (!proto && !ud)
        return GFL_EINVAL;
    if (proto)
        *proto = t->proto_user;
    if (ud)
        *ud = t->ud;
    return GFL_OK;
}

/* ------------------------------------------------------------------ */
/* The fd stream layer                                                 */

struct wchunk {
    struct wchunk *next;
    size_t off, len, cap; /* data[off, len) is pending */
    char data[];
};

struct fd_transport {
    struct gfl_transport base;
    int fd;
    enum gfl_fd_kind kind;
    bool is_socket;
    bool pipe_needs_sigmask; /* a real pipe while SIGPIPE is not ignored */
    /* A write pipe learns that its reader left when the fd polls readable:
     * true of FIFOs and sockets only (a pty is readable whenever the other
     * side writes, so watching it would close a healthy transport). */
    bool watch_reader_gone;
    bool rev_added, wev_added;
    bool shut_wr;
    bool eof_seen; /* EOF read: reading can never resume */
    short io_pending;     /* readiness seen by libevent, not yet handled */
    uint32_t io_slot;     /* owned slot that runs io_run (GFL_NO_SLOT: none) */
    struct event rev, wev;    /* used unless `direct` */
    bool direct;              /* polled by iopoll.c through `src` */
    struct gfl_io_source src;
    struct wchunk *whead, *wtail;
    size_t wsize;
};

#define FT(t) ((struct fd_transport *)(t))

static void io_run(void *arg);

/* libevent's callback (inside the poll): record and queue, nothing else. */
static void on_io(evutil_socket_t fd, short what, void *arg)
{
    struct fd_transport *ft = arg;
    (void)fd;
    ft->io_pending |= what;
    /* ENOMEM: not queued; level-triggered, so retried at the next poll. */
    (void)gfl__owned_slot_queue(ft->base.loop, ft->io_slot);
}

/* The same, from our own epoll set (iopoll.c). */
static void on_direct_io(struct gfl_io_source *src, short what)
{
    struct fd_transport *ft = (struct fd_transport *)((char *)src - offsetof(struct fd_transport, src));
    ft->io_pending |= what;
    (void)gfl__owned_slot_queue(ft->base.loop, ft->io_slot);
}

/* Adds or removes one direction: 0 on success. */
static int set_event(struct fd_transport *ft, struct event *ev, short bit, bool on)
{
    if (ft->direct) {
        short want = (short)(on ? ft->src.interest | bit : ft->src.interest & ~bit);
        return gfl__iopoll_set(ft->base.loop, &ft->src, want);
    }
    return on ? event_add(ev, NULL) : event_del(ev);
}

static void fatal_errno(struct fd_transport *ft, int err, const char *what);

static void set_rev(struct fd_transport *ft, bool on)
{
    if (on == ft->rev_added || ft->fd < 0)
        return;
    if (on) {
        ft->rev_added = set_event(ft, &ft->rev, EV_READ, true) == 0;
        if (!ft->rev_added) /* out of memory: say so rather than never read */
            fatal_errno(ft, ENOMEM, "cannot watch the file descriptor");
    } else {
        (void)set_event(ft, &ft->rev, EV_READ, false);
        ft->rev_added = false;
        ft->io_pending &= (short)~EV_READ;
    }
}

static void set_wev(struct fd_transport *ft, bool on)
{
    if (on == ft->wev_added || ft->fd < 0)
        return;
    if (on) {
        ft->wev_added = set_event(ft, &ft->wev, EV_WRITE, true) == 0;
        if (!ft->wev_added) /* out of memory: say so rather than never flush */
            fatal_errno(ft, ENOMEM, "cannot watch the file descriptor");
    } else {
        (void)set_event(ft, &ft->wev, EV_WRITE, false);
        ft->wev_added = false;
        ft->io_pending &= (short)~EV_WRITE;
    }
}

static void free_chunks(struct fd_transport *ft)
{
    gfl_loop *loop = ft->base.loop;
    struct wchunk *c = ft->whead;
    while (c) {
        struct wchunk *next = c->next;
        gfl__free(loop, c);
        c = next;
    }
    ft->whead = ft->wtail = NULL;
    ft->wsize = 0;
}

/* An error ends the connection: drop the buffer, stop I/O, report it. */
static void fatal_errno(struct fd_transport *ft, int err, const char *what)
{
    free_chunks(ft);
    set_rev(ft, false);
    set_wev(ft, false);
    gfl_value *e = gfl__os_error(err, what);
    gfl__transport_lost(&ft->base, e);
    gfl_value_unref(e);
}

/* write(2) on a pipe raises SIGPIPE when the reader is gone; sockets use
 * MSG_NOSIGNAL. For a pipe whose process does not ignore SIGPIPE we block it
 * in this thread around the write and consume the one our write raised. */
static ssize_t fd_writev(struct fd_transport *ft, const struct iovec *iov, int n)
{
    if (ft->is_socket) {
        if (n == 1)
            return send(ft->fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL);
        struct msghdr msg = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)n};
        return sendmsg(ft->fd, &msg, MSG_NOSIGNAL);
    }
    if (!ft->pipe_needs_sigmask)
        return n == 1 ? write(ft->fd, iov[0].iov_base, iov[0].iov_len) : writev(ft->fd, iov, n);
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    ssize_t r = writev(ft->fd, iov, n);
    int e = errno;
    if (r < 0 && e == EPIPE) {
        const struct timespec zero = {0, 0};
        (void)sigtimedwait(&set, NULL, &zero);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    errno = e;
    return r;
}

/* Copies iov[] minus its first `skip` bytes to the end of the buffer. */
static int append(struct fd_transport *ft, const gfl_iovec *iov, int iovcnt, size_t skip)
{
    gfl_loop *loop = ft->base.loop;
    size_t remaining = 0;
    for (int i = 0; i < iovcnt; i++)
        remaining += iov[i].len;
    remaining -= skip;
    for (int i = 0; i < iovcnt && remaining > 0; i++) {
        const char *p = iov[i].base;
        size_t len = iov[i].len;
        if (skip >= len) {
            skip -= len;
            continue;
        }
        p += skip;
        len -= skip;
        skip = 0;
        while (len > 0) {
            struct wchunk *c = ft->wtail;
            if (!c || c->cap == c->len) {
                /* One chunk for the rest, at least CHUNK_MIN to coalesce. */
                size_t cap = remaining > CHUNK_MIN ? remaining : CHUNK_MIN;
                c = gfl__alloc(loop, sizeof *c + cap);
                if (!c)
                    return GFL_ENOMEM;
                c->next = NULL;
                c->off = c->len = 0;
                c->cap = cap;
                if (ft->wtail)
                    ft->wtail->next = c;
                else
                    ft->whead = c;
                ft->wtail = c;
            }
            size_t n = c->cap - c->len < len ? c->cap - c->len : len;
            memcpy(c->data + c->len, p, n);
            c->len += n;
            p += n;
            len -= n;
            remaining -= n;
            ft->wsize += n;
        }
    }
    return GFL_OK;
}

static void do_shutdown_or_close(struct fd_transport *ft)
{
    gfl_transport *t = &ft->base;
    if (t->closing) {
        gfl__transport_lost(t, NULL); /* close() finished flushing */
        return;
    }
    if (t->eof_written && !ft->shut_wr) {
        ft->shut_wr = true;
        if (ft->kind == GFL_FD_WRITE_PIPE) {
            /* A pipe has no half-close: write_eof closes it (asyncio). */
            t->closing = true;
            gfl__transport_lost(t, NULL);
        } else if (shutdown(ft->fd, SHUT_WR) < 0 && errno != ENOTCONN) {
            fatal_errno(ft, errno, "shutdown");
        }
    }
}

static void flush(struct fd_transport *ft)
{
    gfl_transport *t = &ft->base;
    while (ft->whead) {
        struct iovec iov[FLUSH_IOV];
        int n = 0;
        size_t offered = 0;
        for (struct wchunk *c = ft->whead; c && n < FLUSH_IOV; c = c->next, n++) {
            iov[n].iov_base = c->data + c->off;
            iov[n].iov_len = c->len - c->off;
            offered += iov[n].iov_len;
        }
        ssize_t w = fd_writev(ft, iov, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            fatal_errno(ft, errno, "write");
            return;
        }
        size_t left = (size_t)w;
        ft->wsize -= left;
        while (left > 0) {
            struct wchunk *c = ft->whead;
            size_t avail = c->len - c->off;
            if (left < avail) {
                c->off += left;
                break;
            }
            left -= avail;
            ft->whead = c->next;
            if (!ft->whead)
                ft->wtail = NULL;
            gfl__free(t->loop, c);
        }
        if ((size_t)w < offered)
            break; /* the kernel is full: wait for the next readiness */
    }
    if (ft->wsize == 0)
        set_wev(ft, false);
    gfl__transport_maybe_resume(t, ft->wsize);
    if (ft->wsize == 0 && !t->lost_scheduled)
        do_shutdown_or_close(ft);
}

static int fd_writev_op(gfl_transport *t, const gfl_iovec *iov, int iovcnt, size_t total)
{
    struct fd_transport *ft = FT(t);
    size_t done = 0;
    if (ft->kind == GFL_FD_READ_PIPE)
        return GFL_ENOSYS;
    if (ft->wsize == 0) {
        /* Nothing queued: try the syscall first. */
        int cnt = iovcnt < FLUSH_IOV ? iovcnt : FLUSH_IOV;
        ssize_t w;
        do
            if (cnt == 1 && ft->is_socket) /* the usual case, without a call */
                w = send(ft->fd, iov[0].base, iov[0].len, MSG_NOSIGNAL);
            else
                w = fd_writev(ft, (const struct iovec *)iov, cnt);
        while (w < 0 && errno == EINTR);
        if (w < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                int e = errno;
                fatal_errno(ft, e, "write");
                return gfl__errno_code(e);
            }
            w = 0;
        }
        done = (size_t)w;
        if (done == total)
            return GFL_OK;
    }
    int rc = append(ft, iov, iovcnt, done);
    if (rc < 0)
        return rc;
    set_wev(ft, true);
    gfl__transport_maybe_pause(t, ft->wsize);
    return GFL_OK;
}

static void do_eof(struct fd_transport *ft)
{
    gfl_transport *t = &ft->base;
    ft->eof_seen = true;
    set_rev(ft, false);
    int keep_open = 0;
    if (t->proto_user && t->proto.eof_received)
        keep_open = t->proto.eof_received(t, t->ud);
    if (t->lost_scheduled || t->lost)
        return;
    if (ft->kind == GFL_FD_READ_PIPE || !keep_open) {
        /* A read pipe is done at EOF; a socket closes unless kept open. */
        if (!t->closing) {
            t->closing = true;
            if (ft->wsize == 0)
                gfl__transport_lost(t, NULL);
        }
    }
}

static void do_read(struct fd_transport *ft)
{
    gfl_transport *t = &ft->base;
    ssize_t n;
    if (t->proto.get_buffer) {
        size_t size = 0;
        void *buf = t->proto.get_buffer(t, 65536, &size, t->ud);
        if (t->lost_scheduled || !t->reading)
            return; /* the protocol closed or paused us meanwhile */
        if (!buf || size == 0) {
            free_chunks(ft);
            set_rev(ft, false);
            gfl_value *e = gfl_value_error(GFL_EINVAL, "RuntimeError", "get_buffer() returned an empty buffer", NULL);
            gfl__transport_lost(t, e);
            gfl_value_unref(e);
            return;
        }
        n = read(ft->fd, buf, size);
        if (n > 0) {
            if (t->proto.buffer_updated)
                t->proto.buffer_updated(t, (size_t)n, t->ud);
            return;
        }
    } else {
        char *buf = gfl__streams_rbuf(t->loop);
        if (!buf) {
            fatal_errno(ft, ENOMEM, "read");
            return;
        }
        n = read(ft->fd, buf, GFL__RBUF_SIZE);
        if (n > 0) {
            if (t->proto.data_received)
                t->proto.data_received(t, buf, (size_t)n, t->ud);
            return;
        }
    }
    if (n == 0) {
        do_eof(ft);
        return;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        return;
    fatal_errno(ft, errno, "read");
}

/* The reader of our write pipe went away (the fd polled readable/error). */
static void write_pipe_peer_closed(struct fd_transport *ft)
{
    if (ft->wsize > 0) {
        fatal_errno(ft, EPIPE, NULL);
        return;
    }
    set_rev(ft, false);
    ft->base.closing = true;
    gfl__transport_lost(&ft->base, NULL);
}

static void io_run(void *arg)
{
    struct fd_transport *ft = arg;
    gfl_transport *t = &ft->base;
    short what = ft->io_pending;
    ft->io_pending = 0;
    if (t->lost_scheduled || t->lost)
        return;
    t->refs++; /* the protocol may close and drop the last user reference */
    if ((what & EV_WRITE) && ft->wev_added)
        flush(ft);
    if ((what & EV_READ) && ft->rev_added && !t->lost_scheduled) {
        if (ft->kind == GFL_FD_WRITE_PIPE)
            write_pipe_peer_closed(ft);
        else if (t->reading)
            do_read(ft);
    }
    drop_ref(t);
}

static int fd_write_eof(gfl_transport *t)
{
    struct fd_transport *ft = FT(t);
    t->eof_written = true;
    if (ft->wsize == 0)
        do_shutdown_or_close(ft);
    return GFL_OK;
}

static int fd_can_write_eof(gfl_transport *t)
{
    return FT(t)->kind != GFL_FD_READ_PIPE;
}

static int fd_set_reading(gfl_transport *t, bool on)
{
    struct fd_transport *ft = FT(t);
    if (ft->kind == GFL_FD_WRITE_PIPE)
        return GFL_OK;
    /* Before connection_made the read event is not added yet. */
    set_rev(ft, on && t->made && !ft->eof_seen);
    return GFL_OK;
}

static int64_t fd_write_buffer_size(gfl_transport *t)
{
    return (int64_t)FT(t)->wsize;
}

static int fd_close(gfl_transport *t)
{
    struct fd_transport *ft = FT(t);
    if (ft->kind != GFL_FD_WRITE_PIPE)
        set_rev(ft, false);
    if (ft->wsize == 0)
        gfl__transport_lost(t, NULL);
    return GFL_OK;
}

static int fd_abort(gfl_transport *t)
{
    struct fd_transport *ft = FT(t);
    free_chunks(ft);
    set_rev(ft, false);
    set_wev(ft, false);
    gfl__transport_lost(t, NULL);
    return GFL_OK;
}

static int fd_get_sockaddr(gfl_transport *t, int peer, void *addr, size_t *len)
{
    struct fd_transport *ft = FT(t);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (!ft->is_socket)
        return GFL_ENOSYS;
    int r = peer ? getpeername(ft->fd, (struct sockaddr *)&ss, &sl) : getsockname(ft->fd, (struct sockaddr *)&ss, &sl);
    if (r < 0)
        return gfl__errno_code(errno);
    if (sl > *len) {
        *len = sl;
        return GFL_ERANGE;
    }
    memcpy(addr, &ss, sl);
    *len = sl;
    return GFL_OK;
}

static gfl_value *sockaddr_value(struct fd_transport *ft, int peer)
{
    struct sockaddr_storage ss;
    size_t len = sizeof ss;
    if (fd_get_sockaddr(&ft->base, peer, &ss, &len) < 0)
        return NULL;
    if (ss.ss_family == AF_UNIX) {
        const struct sockaddr_un *un = (const struct sockaddr_un *)&ss;
        size_t off = offsetof(struct sockaddr_un, sun_path);
        size_t plen = len > off ? len - off : 0;
        /* Pathnames come NUL-terminated; abstract names are exact. */
        if (plen > 0 && un->sun_path[0] != '\0')
            plen = strnlen(un->sun_path, plen);
        return gfl_value_bytes(un->sun_path, plen);
    }
    char buf[INET6_ADDRSTRLEN + 32];
    if (gfl__sockaddr_format((const struct sockaddr *)&ss, (socklen_t)len, buf, sizeof buf) < 0)
        return NULL;
    return gfl_value_string(buf, strlen(buf));
}

static gfl_value *fd_extra_info(gfl_transport *t, const char *name)
{
    struct fd_transport *ft = FT(t);
    if (strcmp(name, "peername") == 0)
        return sockaddr_value(ft, 1);
    if (strcmp(name, "sockname") == 0)
        return sockaddr_value(ft, 0);
    if (strcmp(name, "socket") == 0)
        return ft->is_socket ? gfl_value_int(ft->fd) : NULL;
    if (strcmp(name, "pipe") == 0)
        return ft->kind != GFL_FD_SOCKET ? gfl_value_int(ft->fd) : NULL;
    if (strcmp(name, "family") == 0 && ft->is_socket) {
        struct sockaddr_storage ss;
        size_t len = sizeof ss;
        if (fd_get_sockaddr(t, 0, &ss, &len) < 0)
            return NULL;
        return gfl_value_int(ss.ss_family);
    }
    return NULL;
}

static int fd_fileno(gfl_transport *t)
{
    return FT(t)->fd >= 0 ? FT(t)->fd : GFL_ECLOSED;
}

static void fd_teardown(gfl_transport *t)
{
    struct fd_transport *ft = FT(t);
    if (ft->io_slot != GFL_NO_SLOT)
        gfl__owned_slot_free(t->loop, ft->io_slot); /* queued: dropped unrun */
    ft->io_slot = GFL_NO_SLOT;
    set_rev(ft, false);
    set_wev(ft, false);
    free_chunks(ft);
    if (ft->fd >= 0) {
        gfl__close_watched_fd(t->loop, ft->fd);
        ft->fd = -1;
    }
}

static void fd_destroy(gfl_transport *t)
{
    gfl_loop *loop = t->loop;
    if (FT(t)->fd >= 0) /* never started: teardown did not run */
        fd_teardown(t);
    gfl_value_unref(t->lost_error);
    gfl__free(loop, t);
}

static void fd_on_made(gfl_transport *t)
{
    struct fd_transport *ft = FT(t);
    /* asyncio adds the reader after connection_made, so no data comes
     * first; a write pipe watches its fd to learn when the reader leaves. */
    bool watch = ft->kind == GFL_FD_WRITE_PIPE ? ft->watch_reader_gone : t->reading;
    if (!t->closing && watch)
        set_rev(ft, true);
}

static const struct gfl_transport_ops fd_ops = {
    .name = "fd stream",
    .writev = fd_writev_op,
    .write_eof = fd_write_eof,
    .can_write_eof = fd_can_write_eof,
    .set_reading = fd_set_reading,
    .write_buffer_size = fd_write_buffer_size,
    .close = fd_close,
    .abort = fd_abort,
    .extra_info = fd_extra_info,
    .fileno = fd_fileno,
    .get_sockaddr = fd_get_sockaddr,
    .teardown = fd_teardown,
    .destroy = fd_destroy,
};

static bool sigpipe_ignored(void)
{
    struct sigaction sa;
    return sigaction(SIGPIPE, NULL, &sa) == 0 && !(sa.sa_flags & SA_SIGINFO) && sa.sa_handler == SIG_IGN;
}

gfl_transport *gfl__fd_transport_new(gfl_loop *loop, int fd, enum gfl_fd_kind kind)
{
    /* Every GFL_FD_SOCKET caller knows it has a stream socket (accepted,
     * connected, or checked with SO_TYPE): no fstat per connection. */
    struct stat st = {.st_mode = S_IFSOCK};
    if (kind != GFL_FD_SOCKET && fstat(fd, &st) < 0)
        return NULL;
    struct fd_transport *ft = gfl__alloc(loop, sizeof *ft);
    if (!ft)
        return NULL;
    uint32_t io_slot;
    if (gfl__owned_slot_new(loop, io_run, ft, &io_slot) < 0) {
        gfl__free(loop, ft);
        return NULL;
    }
    if (gfl__transport_init(&ft->base, loop, &fd_ops) < 0) {
        gfl__owned_slot_free(loop, io_slot);
        gfl__free(loop, ft);
        return NULL;
    }
    ft->io_slot = io_slot;
    ft->fd = fd;
    ft->kind = kind;
    ft->is_socket = S_ISSOCK(st.st_mode);
    ft->pipe_needs_sigmask = !ft->is_socket && kind == GFL_FD_WRITE_PIPE && !sigpipe_ignored();
    ft->watch_reader_gone = kind == GFL_FD_WRITE_PIPE && (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode));
    ft->rev_added = ft->wev_added = ft->shut_wr = ft->eof_seen = false;
    ft->io_pending = 0;
    ft->whead = ft->wtail = NULL;
    ft->wsize = 0;
    ft->base.on_made = fd_on_made;
    if (kind == GFL_FD_READ_PIPE)
        ft->base.eof_written = false;
    event_assign(&ft->rev, loop->base, fd, EV_READ | EV_PERSIST, on_io, ft);
    event_assign(&ft->wev, loop->base, fd, EV_WRITE | EV_PERSIST, on_io, ft);
    ft->direct = loop->io_epfd >= 0;
    ft->src.ready = on_direct_io;
    ft->src.fd = fd;
    ft->src.interest = 0;
    return &ft->base;
}

gfl_future *gfl__fd_transport_open(gfl_loop *loop, int fd, enum gfl_fd_kind kind, gfl_protocol_factory factory, void *fud, gfl_release_fn frel)
{
    gfl_future *f = gfl_future_new(loop);
    if (!f)
        return NULL;
    gfl_transport *t = gfl__fd_transport_new(loop, fd, kind);
    if (!t) {
        gfl_future_unref(f);
        return NULL;
    }
    int rc = gfl__transport_run_factory(t, factory, fud);
    if (frel)
        frel(fud);
    if (rc == GFL_OK) {
        t->waiter = gfl_future_ref(f);
        rc = gfl__transport_start(t);
        if (rc < 0) {
            gfl_future_unref(t->waiter);
            t->waiter = NULL;
        }
    }
    if (rc < 0) {
        gfl__transport_discard(t); /* closes the fd, as documented */
        gfl__future_fail_value(f, gfl_value_error(rc, "OSError", NULL, NULL));
    }
    return f;
}
