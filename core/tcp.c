/*
 * Stream clients: gfl_create_connection (DNS, local binding, Happy Eyeballs
 * per RFC 8305 as asyncio does it), gfl_connect_socket, and the connector
 * that Unix connections share.
 *
 * Happy Eyeballs: addresses are tried in (interleaved) order; each attempt
 * is a non-blocking connect() watched for writability. The next address
 * starts when the delay expires or as soon as an attempt fails (RFC 8305
 * §5); the first attempt to connect wins and every other is closed. Without
 * a delay attempts run one after another (asyncio's default).
 *
 * Lifetime: the connector is reference counted: one reference while it is
 * registered as a done callback of the caller's future (that callback is the
 * single cleanup path, whether we completed the future or the caller
 * cancelled it), one per pending DNS callback. Closing the loop frees it
 * whatever its count (its callbacks can no longer run).
 */
#include "internal.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/event_struct.h>

struct attempt {
    struct attempt *next;
    struct connector *c;
    int fd;
    int index; /* into c->order */
    struct event ev;
    bool added;
    gfl_handle queued;
};

struct connector {
    gfl_loop *loop;
    struct gfl_stream_node node;
    int refs;
    bool finished; /* the future is (being) completed: stop working */
    gfl_future *future;
    gfl_future *dns, *local_dns;
    gfl_protocol_factory factory;
    void *fud;
    gfl_release_fn frel;
    gfl_addrinfo *addrs, *local;
    int *order, norder, next;
    double delay;
    int interleave;
    gfl_handle timer;
    struct attempt *attempts;
    gfl_value *errors[8]; /* the first few, for the final error */
    int nerrors;
};

static void connector_unref(struct connector *c);
static void start_next(struct connector *c);
static void on_dns(gfl_future *f, void *arg);
static void on_future_done(gfl_future *f, void *arg);

/* ---- teardown ---- */

static void attempt_close(struct attempt *a)
{
    struct connector *c = a->c;
    if (a->added)
        event_del(&a->ev);
    if (a->queued > 0)
        (void)gfl_handle_cancel(c->loop, a->queued);
    if (a->fd >= 0)
        close(a->fd);
    for (struct attempt **p = &c->attempts; *p; p = &(*p)->next)
        if (*p == a) {
            *p = a->next;
            break;
        }
    gfl__free(c->loop, a);
}

/* Stops everything the connector runs (not its memory). */
static void stop(struct connector *c)
{
    c->finished = true;
    while (c->attempts)
        attempt_close(c->attempts);
    if (c->timer > 0)
        (void)gfl_handle_cancel(c->loop, c->timer);
    c->timer = 0;
}

static void release_factory(struct connector *c)
{
    if (c->frel) {
        gfl_release_fn rel = c->frel;
        c->frel = NULL;
        rel(c->fud);
    }
}

static void connector_free(struct connector *c)
{
    gfl_loop *loop = c->loop;
    stop(c);
    release_factory(c);
    gfl__stream_unregister(loop, &c->node);
    for (int i = 0; i < c->nerrors; i++)
        gfl_value_unref(c->errors[i]);
    gfl_addrinfo_unref(c->addrs);
    gfl_addrinfo_unref(c->local);
    if (c->dns)
        gfl_future_unref(c->dns);
    if (c->local_dns)
        gfl_future_unref(c->local_dns);
    gfl_future_unref(c->future);
    gfl__free(loop, c->order);
    gfl__free(loop, c);
    gfl__loop_memunref(loop);
}

static void connector_unref(struct connector *c)
{
    if (--c->refs == 0)
        connector_free(c);
}

static void connector_loop_closing(struct gfl_stream_node *n)
{
    struct connector *c = (struct connector *)((char *)n - offsetof(struct connector, node));
    /* Callbacks registered on futures that outlive the loop must go. */
    (void)gfl_future_remove_done_callback(c->future, on_future_done, c);
    if (c->dns)
        (void)gfl_future_remove_done_callback(c->dns, on_dns, c);
    if (c->local_dns)
        (void)gfl_future_remove_done_callback(c->local_dns, on_dns, c);
    if (gfl_future_state_of(c->future) == GFL_FUTURE_PENDING)
        (void)gfl_future_cancel(c->future, "the event loop was closed");
    connector_free(c);
}

/* The caller's future is done (by us, or cancelled by the caller). */
static void on_future_done(gfl_future *f, void *arg)
{
    struct connector *c = arg;
    (void)f;
    stop(c);
    if (c->dns)
        (void)gfl_future_cancel(c->dns, NULL);
    if (c->local_dns)
        (void)gfl_future_cancel(c->local_dns, NULL);
    connector_unref(c);
}

/* ---- outcome ---- */

static void record_error(struct connector *c, gfl_value *e)
{
    if (!e)
        return;
    if (c->nerrors < (int)(sizeof c->errors / sizeof c->errors[0]))
        c->errors[c->nerrors++] = e;
    else
        gfl_value_unref(e);
}

static void fail_all(struct connector *c)
{
    gfl_value *err = NULL;
    if (c->nerrors == 0) {
        err = gfl_value_error(GFL_ENOENT, "OSError", "getaddrinfo() returned an empty list", NULL);
    } else {
        bool same = true;
        for (int i = 1; i < c->nerrors; i++)
            if (strcmp(gfl_value_error_message(c->errors[i]), gfl_value_error_message(c->errors[0])) != 0)
                same = false;
        if (same) {
            err = gfl_value_ref(c->errors[0]);
        } else {
            char msg[1024];
            size_t len = (size_t)snprintf(msg, sizeof msg, "Multiple exceptions: ");
            for (int i = 0; i < c->nerrors && len < sizeof msg; i++)
                len += (size_t)snprintf(msg + len, sizeof msg - len, "%s%s", i ? ", " : "", gfl_value_error_message(c->errors[i]));
            err = gfl_value_error(gfl_value_error_code(c->errors[0]), "OSError", msg, NULL);
        }
    }
    c->finished = true;
    gfl__future_fail_value(c->future, err);
}

static void succeed(struct connector *c, struct attempt *a)
{
    int fd = a->fd;
    int family = gfl_addrinfo_family(c->addrs, c->order[a->index]);
    a->fd = -1;
    stop(c); /* closes every attempt (a too, minus its fd); keeps the factory */
    if (family == AF_INET || family == AF_INET6) {
        int one = 1; /* asyncio's default for TCP transports */
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    gfl_transport *t = gfl__fd_transport_new(c->loop, fd, GFL_FD_SOCKET);
    if (!t) {
        close(fd);
        gfl__future_fail_errno(c->future, ENOMEM, NULL);
        return;
    }
    int rc = gfl__transport_run_factory(t, c->factory, c->fud);
    release_factory(c);
    if (rc < 0) {
        gfl__transport_discard(t);
        gfl__future_fail_value(c->future, gfl_value_error(rc, "OSError", "the protocol factory failed", NULL));
        return;
    }
    t->waiter = gfl_future_ref(c->future);
    if ((rc = gfl__transport_start(t)) < 0) {
        gfl_future_unref(t->waiter);
        t->waiter = NULL;
        gfl__transport_discard(t);
        gfl__future_fail_errno(c->future, -rc, NULL);
    }
}

/* ---- attempts ---- */

static void attempt_done(void *arg)
{
    struct attempt *a = arg;
    struct connector *c = a->c;
    a->queued = 0;
    if (c->finished)
        return;
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(a->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err == EINPROGRESS || err == EALREADY) { /* spurious: wait again */
        if (event_add(&a->ev, NULL) == 0)
            a->added = true;
        return;
    }
    if (err == 0) {
        succeed(c, a);
        return;
    }
    char where[INET6_ADDRSTRLEN + 32] = "";
    size_t alen;
    const void *addr = gfl_addrinfo_addr(c->addrs, c->order[a->index], &alen);
    char what[sizeof where + 32];
    if (gfl__sockaddr_format(addr, (socklen_t)alen, where, sizeof where) == 0)
        snprintf(what, sizeof what, "Connect call failed (%s)", where);
    else
        snprintf(what, sizeof what, "Connect call failed");
    record_error(c, gfl__os_error(err, what));
    attempt_close(a);
    /* RFC 8305: a failure starts the next attempt at once. */
    start_next(c);
}

static void on_writable(evutil_socket_t fd, short what, void *arg)
{
    struct attempt *a = arg;
    (void)fd;
    (void)what;
    event_del(&a->ev);
    a->added = false;
    if (a->queued > 0)
        return;
    gfl_handle h = gfl__queue_plain(a->c->loop, attempt_done, a);
    if (h > 0)
        a->queued = h;
    else if (event_add(&a->ev, NULL) == 0) /* retry at the next poll */
        a->added = true;
}

/* Binds to a local address of the same family; 0 or an errno. */
static int bind_local(struct connector *c, int fd, int family)
{
    int n = gfl_addrinfo_count(c->local);
    int err = EAFNOSUPPORT;
    for (int i = 0; i < n; i++) {
        if (gfl_addrinfo_family(c->local, i) != family)
            continue;
        size_t len;
        const void *addr = gfl_addrinfo_addr(c->local, i, &len);
        if (bind(fd, addr, (socklen_t)len) == 0)
            return 0;
        err = errno;
    }
    return err;
}

/* Starts attempt `index`; 0 when it is running, else an errno. */
static int open_attempt(struct connector *c, int index)
{
    int i = c->order[index];
    int family = gfl_addrinfo_family(c->addrs, i);
    size_t len;
    const void *addr = gfl_addrinfo_addr(c->addrs, i, &len);
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, gfl_addrinfo_protocol(c->addrs, i));
    if (fd < 0)
        return errno;
    if (c->local) {
        int err = bind_local(c, fd, family);
        if (err) {
            close(fd);
            return err;
        }
    }
    int rc;
    do
        rc = connect(fd, addr, (socklen_t)len);
    while (rc < 0 && errno == EINTR);
    if (rc < 0 && errno != EINPROGRESS) {
        int err = errno;
        close(fd);
        return err;
    }
    struct attempt *a = gfl__calloc(c->loop, 1, sizeof *a);
    if (!a) {
        close(fd);
        return ENOMEM;
    }
    a->c = c;
    a->fd = fd;
    a->index = index;
    a->next = c->attempts;
    c->attempts = a;
    event_assign(&a->ev, c->loop->base, fd, EV_WRITE, on_writable, a);
    if (rc == 0) {
        /* Connected already (Unix sockets do): still report it from the
         * ready queue, never inside the caller's call. */
        gfl_handle h = gfl__queue_plain(c->loop, attempt_done, a);
        if (h < 0) {
            attempt_close(a);
            return ENOMEM;
        }
        a->queued = h;
        return 0;
    }
    if (event_add(&a->ev, NULL) < 0) {
        attempt_close(a);
        return ENOMEM;
    }
    a->added = true;
    return 0;
}

static void on_delay(void *arg)
{
    struct connector *c = arg;
    c->timer = 0;
    if (!c->finished)
        start_next(c);
}

static void start_next(struct connector *c)
{
    if (c->timer > 0)
        (void)gfl_handle_cancel(c->loop, c->timer);
    c->timer = 0;
    while (c->next < c->norder) {
        int index = c->next++;
        int err = open_attempt(c, index);
        if (err == 0) {
            if (c->delay > 0 && c->next < c->norder) {
                gfl_handle h = gfl_call_later(c->loop, c->delay, on_delay, c);
                c->timer = h > 0 ? h : 0;
            }
            return;
        }
        size_t len;
        char where[INET6_ADDRSTRLEN + 32] = "?", what[sizeof where + 48];
        const void *addr = gfl_addrinfo_addr(c->addrs, c->order[index], &len);
        (void)gfl__sockaddr_format(addr, (socklen_t)len, where, sizeof where);
        snprintf(what, sizeof what, "%s (%s)", c->local && err != ECONNREFUSED ? "error while attempting to bind or connect" : "Connect call failed", where);
        record_error(c, gfl__os_error(err, what));
    }
    if (!c->attempts)
        fail_all(c);
}

/* The next entry of `family` at or after *pos, or -1. */
static int next_of_family(const gfl_addrinfo *ai, int family, int *pos)
{
    int n = gfl_addrinfo_count(ai);
    while (*pos < n) {
        int i = (*pos)++;
        if (gfl_addrinfo_family(ai, i) == family)
            return i;
    }
    return -1;
}

/* asyncio's _interleave_addrinfos: first `n` of the first family, then
 * alternate families one at a time. */
static int build_order(struct connector *c)
{
    int n = gfl_addrinfo_count(c->addrs);
    c->order = gfl__calloc(c->loop, n > 0 ? (size_t)n : 1, sizeof *c->order);
    if (!c->order)
        return GFL_ENOMEM;
    c->norder = n;
    if (c->interleave <= 0 || n < 2) {
        for (int i = 0; i < n; i++)
            c->order[i] = i;
        return GFL_OK;
    }
    /* Families in order of first appearance; at most a handful. */
    int fams[8], nf = 0;
    for (int i = 0; i < n; i++) {
        int f = gfl_addrinfo_family(c->addrs, i), k;
        for (k = 0; k < nf && fams[k] != f; k++)
            ;
        if (k == nf && nf < 8)
            fams[nf++] = f;
    }
    int pos[8] = {0}, out = 0;
    for (int j = 0; j < c->interleave - 1 && out < n; j++) {
        int i = next_of_family(c->addrs, fams[0], &pos[0]);
        if (i < 0)
            break;
        c->order[out++] = i;
    }
    while (out < n) {
        bool any = false;
        for (int k = 0; k < nf && out < n; k++) {
            int i = next_of_family(c->addrs, fams[k], &pos[k]);
            if (i >= 0) {
                c->order[out++] = i;
                any = true;
            }
        }
        if (!any)
            break;
    }
    return GFL_OK;
}

/* Both lookups (when any) are done: connect. */
static void maybe_start(struct connector *c)
{
    if (c->finished || c->dns || c->local_dns)
        return;
    if (build_order(c) < 0) {
        gfl__future_fail_errno(c->future, ENOMEM, NULL);
        c->finished = true;
        return;
    }
    start_next(c);
}

static void on_dns(gfl_future *f, void *arg)
{
    struct connector *c = arg;
    bool local = f == c->local_dns;
    if (!c->finished) {
        gfl_value *v = gfl_future_value(f);
        void *obj = NULL;
        if (gfl_future_state_of(f) == GFL_FUTURE_RESULT && gfl_value_get_object(v, gfl_addrinfo_class(), &obj) == 0) {
            if (local)
                c->local = gfl_addrinfo_ref(obj);
            else
                c->addrs = gfl_addrinfo_ref(obj);
        } else {
            c->finished = true;
            if (gfl_future_state_of(f) == GFL_FUTURE_ERROR)
                gfl__future_fail_value(c->future, gfl_value_ref(v));
            else
                (void)gfl_future_cancel(c->future, NULL);
        }
    }
    if (local) {
        gfl_future_unref(c->local_dns);
        c->local_dns = NULL;
    } else {
        gfl_future_unref(c->dns);
        c->dns = NULL;
    }
    maybe_start(c);
    connector_unref(c);
}

static int lookup(struct connector *c, gfl_future **slot, const char *host, const char *port, int family, int flags)
{
    gfl_future *f = gfl_getaddrinfo(c->loop, host, port, family, SOCK_STREAM, 0, flags);
    if (!f)
        return GFL_ENOMEM;
    if (gfl_future_add_done_callback(f, on_dns, c) < 0) {
        gfl_future_unref(f);
        return GFL_ENOMEM;
    }
    c->refs++;
    *slot = f;
    return GFL_OK;
}

/* Shared with unix.c: connects to `addrs` (or host/port per opts). */
gfl_future *gfl__connect(gfl_loop *loop, gfl_protocol_factory factory, void *fud, gfl_release_fn frel, const gfl_connect_options *opts, gfl_addrinfo *addrs)
{
    struct connector *c = gfl__calloc(loop, 1, sizeof *c);
    if (!c)
        return NULL;
    c->loop = loop;
    c->node.loop_closing = connector_loop_closing;
    c->factory = factory;
    c->fud = fud;
    c->future = gfl_future_new(loop);
    if (!c->future || gfl__stream_register(loop, &c->node) < 0) {
        if (c->future)
            gfl_future_unref(c->future);
        gfl__free(loop, c);
        return NULL;
    }
    gfl__loop_memref(loop);
    if (gfl_future_add_done_callback(c->future, on_future_done, c) < 0) {
        connector_free(c);
        return NULL;
    }
    c->refs = 1;
    c->frel = frel; /* from here on, released exactly once */
    if (opts) {
        c->delay = opts->happy_eyeballs_delay;
        c->interleave = opts->interleave ? opts->interleave : (c->delay > 0 ? 1 : 0);
    }
    gfl_future *ret = gfl_future_ref(c->future);
    int rc = GFL_OK;
    if (addrs) {
        c->addrs = gfl_addrinfo_ref(addrs);
    } else {
        rc = lookup(c, &c->dns, opts->host, opts->port, opts->family, opts->flags);
    }
    if (rc == GFL_OK && opts && (opts->local_host || opts->local_port))
        rc = lookup(c, &c->local_dns, opts->local_host, opts->local_port, opts->family, opts->flags | AI_PASSIVE);
    if (rc < 0) {
        c->finished = true;
        gfl__future_fail_errno(c->future, -rc, NULL);
    } else {
        maybe_start(c);
    }
    return ret;
}

GFL_EXPORT gfl_future *gfl_create_connection(gfl_loop *loop, gfl_protocol_factory factory, void *factory_ud, gfl_release_fn factory_release, const gfl_connect_options *opts)
{
    if (gfl__check_loop(loop) < 0 || !factory || !opts || opts->size < sizeof(size_t))
        return NULL;
    /* Copy what the caller's struct has; the rest stays zero. */
    gfl_connect_options o;
    memset(&o, 0, sizeof o);
    memcpy(&o, opts, opts->size < sizeof o ? opts->size : sizeof o);
    o.size = sizeof o;
    if (o.happy_eyeballs_delay < 0 || o.happy_eyeballs_delay != o.happy_eyeballs_delay || o.interleave < 0)
        return NULL;
    if (o.family != AF_UNSPEC && o.family != AF_INET && o.family != AF_INET6)
        return NULL;
    if (!o.addrs && (!o.host || !o.port))
        return NULL;
    if (o.addrs && gfl_addrinfo_count(o.addrs) < 0)
        return NULL;
    return gfl__connect(loop, factory, factory_ud, factory_release, &o, (gfl_addrinfo *)o.addrs);
}

GFL_EXPORT gfl_future *gfl_connect_socket(gfl_loop *loop, gfl_protocol_factory factory, void *factory_ud, gfl_release_fn factory_release, int fd)
{
    if (gfl__check_loop(loop) < 0 || !factory || fd < 0)
        return NULL;
    int type = 0;
    socklen_t len = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_STREAM)
        return NULL;
    if (gfl__fd_prepare(fd) < 0)
        return NULL;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0 && (ss.ss_family == AF_INET || ss.ss_family == AF_INET6)) {
        int one = 1;
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return gfl__fd_transport_open(loop, fd, GFL_FD_SOCKET, factory, factory_ud, factory_release);
}
