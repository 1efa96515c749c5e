/*
 * Stream servers (asyncio's Server): listening sockets, accepting, and
 * gfl_create_server (DNS for each host, one socket per address).
 *
 * Accepting: a listening socket's readiness queues one ready-queue callback
 * that accepts up to `backlog` connections. When accept() fails for lack of
 * resources (EMFILE, ENFILE, ENOBUFS, ENOMEM) the socket stops being
 * watched for accept_retry_delay seconds (asyncio: 1 s): no busy spin while
 * the pending connection stays queued in the kernel, and accepting resumes
 * by itself once descriptors are free again. The loop's exception handler
 * is told once per pause.
 *
 * Lifetime: the loop holds a reference until gfl_server_close; every
 * connection holds one until its connection_lost; wait_closed futures are
 * resolved when the server is closed and its last connection is gone.
 */
#include "internal.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/event_struct.h>

struct listener {
    struct gfl_server *s;
    int fd;
    bool tcp;
    bool added;
    struct event ev;
    gfl_handle queued; /* accept_run */
    gfl_handle retry;  /* resume after EMFILE & co. */
    char *unlink_path; /* a Unix socket file to remove on close */
    dev_t dev;
    ino_t ino;
};

struct gfl_server {
    gfl_loop *loop;
    struct gfl_stream_node node;
    int refs;
    bool closed;   /* gfl_server_close ran (or the loop closed) */
    bool serving;
    bool loop_ref; /* the loop's reference is held */
    gfl_protocol_factory factory;
    void *fud;
    gfl_release_fn frel;
    struct listener **ls;
    int nls;
    int backlog;
    double retry_delay;
    gfl_transport *conns; /* via srv_next/srv_prev */
    int nconns;
    gfl_future **waiters;
    int nwaiters;
};

static void server_loop_closing(struct gfl_stream_node *n);
static void close_listeners(gfl_server *s);

/* ---- class, references ---- */

static void class_ref(void *o) { gfl_server_ref(o); }
static void class_unref(void *o) { gfl_server_unref(o); }

static const gfl_host_class server_class = {
    .size = sizeof(gfl_host_class),
    .name = "globeflower.server",
    .ref = class_ref,
    .unref = class_unref,
};

GFL_EXPORT const gfl_host_class *gfl_server_class(void)
{
    return &server_class;
}

GFL_EXPORT gfl_server *gfl_server_ref(gfl_server *s)
{
    if (!s || s->refs <= 0)
        return NULL;
    s->refs++;
    return s;
}

static void server_free(gfl_server *s)
{
    gfl_loop *loop = s->loop;
    close_listeners(s);
    gfl__stream_unregister(loop, &s->node);
    if (s->frel)
        s->frel(s->fud);
    for (int i = 0; i < s->nwaiters; i++) {
        if (gfl_future_state_of(s->waiters[i]) == GFL_FUTURE_PENDING)
            (void)gfl_future_cancel(s->waiters[i], NULL);
        gfl_future_unref(s->waiters[i]);
    }
    gfl__free(loop, s->waiters);
    for (int i = 0; i < s->nls; i++)
        gfl__free(loop, s->ls[i]);
    gfl__free(loop, s->ls);
    gfl__free(loop, s);
    gfl__loop_memunref(loop);
}

GFL_EXPORT void gfl_server_unref(gfl_server *s)
{
    if (!s || s->refs <= 0)
        return;
    if (--s->refs == 0)
        server_free(s);
}

static int check(gfl_server *s)
{
    if (!s || s->refs <= 0)
        return GFL_EINVAL;
    return gfl__check_loop(s->loop);
}

/* ---- accepting ---- */

static void accept_run(void *arg);

static void on_listen_ready(evutil_socket_t fd, short what, void *arg)
{
    struct listener *l = arg;
    (void)fd;
    (void)what;
    if (l->queued > 0)
        return;
    gfl_handle h = gfl__queue_plain(l->s->loop, accept_run, l);
    l->queued = h > 0 ? h : 0;
}

/* GFL_ENOMEM when the poller could not take the fd (callers must not let
 * a listener silently stop accepting). */
static int watch(struct listener *l, bool on)
{
    if (on == l->added || l->fd < 0)
        return GFL_OK;
    if (on) {
        l->added = event_add(&l->ev, NULL) == 0;
        return l->added ? GFL_OK : GFL_ENOMEM;
    }
    event_del(&l->ev);
    l->added = false;
    return GFL_OK;
}

static void retry_accept(void *arg)
{
    struct listener *l = arg;
    l->retry = 0;
    if (l->s->serving && !l->s->closed && watch(l, true) < 0) {
        /* Still out of memory: try again later rather than stop for good. */
        gfl_handle h = gfl_call_later(l->s->loop, l->s->retry_delay, retry_accept, l);
        l->retry = h > 0 ? h : 0;
        (void)gfl_loop_call_exception_handler(l->s->loop, "server: cannot watch a listening socket (out of memory)", NULL);
    }
}

static void accepted(gfl_server *s, struct listener *l, int fd)
{
    if (l->tcp) {
        int one = 1;
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    gfl_transport *t = gfl__fd_transport_new(s->loop, fd, GFL_FD_SOCKET);
    if (!t) {
        close(fd);
        return;
    }
    if (gfl__transport_run_factory(t, s->factory, s->fud) < 0 || gfl__transport_start(t) < 0) {
        gfl__transport_discard(t); /* refused by the factory: drop it */
        return;
    }
    t->server = gfl_server_ref(s);
    t->srv_prev = NULL;
    t->srv_next = s->conns;
    if (s->conns)
        s->conns->srv_prev = t;
    s->conns = t;
    s->nconns++;
}

static void accept_run(void *arg)
{
    struct listener *l = arg;
    gfl_server *s = l->s;
    l->queued = 0;
    if (!s->serving || s->closed || l->fd < 0)
        return;
    gfl_server_ref(s);
    for (int i = 0; i < s->backlog && l->fd >= 0 && s->serving; i++) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            accepted(s, l, fd);
            continue;
        }
        int err = errno;
        if (err == EINTR || err == ECONNABORTED || err == EPROTO)
            continue;
        if (err == EAGAIN || err == EWOULDBLOCK)
            break;
        if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
            /* Out of resources: stop watching for a while (no spin). */
            watch(l, false);
            gfl_handle h = gfl_call_later(s->loop, s->retry_delay, retry_accept, l);
            l->retry = h > 0 ? h : 0;
            gfl_value *e = gfl__os_error(err, "accept");
            (void)gfl_loop_call_exception_handler(s->loop, "socket.accept() out of system resource", e);
            gfl_value_unref(e);
            if (h <= 0)
                (void)watch(l, true); /* no timer either: keep accepting */
            break;
        }
        gfl_value *e = gfl__os_error(err, "accept");
        (void)gfl_loop_call_exception_handler(s->loop, "error accepting a connection", e);
        gfl_value_unref(e);
        break;
    }
    gfl_server_unref(s);
}

void gfl__server_detach(gfl_server *s, gfl_transport *t)
{
    if (t->srv_prev)
        t->srv_prev->srv_next = t->srv_next;
    else
        s->conns = t->srv_next;
    if (t->srv_next)
        t->srv_next->srv_prev = t->srv_prev;
    t->srv_prev = t->srv_next = NULL;
    s->nconns--;
    if (s->closed && s->nconns == 0 && !s->loop->closed) {
        for (int i = 0; i < s->nwaiters; i++) {
            if (gfl_future_state_of(s->waiters[i]) == GFL_FUTURE_PENDING) {
                gfl_value *nil = gfl_value_nil();
                (void)gfl_future_set_result(s->waiters[i], nil);
                gfl_value_unref(nil);
            }
            gfl_future_unref(s->waiters[i]);
        }
        s->nwaiters = 0;
    }
    gfl_server_unref(s);
}

/* ---- construction ---- */

gfl_server *gfl__server_new(gfl_loop *loop, gfl_protocol_factory f, void *fud, gfl_release_fn frel, const gfl_server_options *opts)
{
    /* Read only what the caller's struct has (of its size); the rest is 0. */
    gfl_server_options o;
    if (opts) {
        memset(&o, 0, sizeof o);
        memcpy(&o, opts, opts->size < sizeof o ? opts->size : sizeof o);
        o.size = sizeof o;
        opts = &o;
    }
    gfl_server *s = gfl__calloc(loop, 1, sizeof *s);
    if (!s)
        return NULL;
    s->loop = loop;
    s->node.loop_closing = server_loop_closing;
    if (gfl__stream_register(loop, &s->node) < 0) {
        gfl__free(loop, s);
        return NULL;
    }
    gfl__loop_memref(loop);
    s->refs = 2; /* the caller's and the loop's (until close) */
    s->loop_ref = true;
    s->factory = f;
    s->fud = fud;
    s->frel = frel;
    s->backlog = 100;
    s->retry_delay = 1.0;
    s->serving = true;
    if (opts) {
        if (opts->backlog > 0)
            s->backlog = opts->backlog;
        if (opts->start_serving < 0)
            s->serving = false;
        if (opts->accept_retry_delay > 0)
            s->retry_delay = opts->accept_retry_delay;
    }
    return s;
}

int gfl__server_add_socket(gfl_server *s, int fd)
{
    /* Listeners never move (libevent holds their events); only the array
     * of pointers grows. */
    struct listener **ls = gfl__realloc(s->loop, s->ls, (size_t)(s->nls + 1) * sizeof *ls);
    if (!ls)
        return GFL_ENOMEM;
    s->ls = ls;
    struct listener *l = gfl__calloc(s->loop, 1, sizeof *l);
    if (!l)
        return GFL_ENOMEM;
    l->s = s;
    l->fd = fd;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    l->tcp = getsockname(fd, (struct sockaddr *)&ss, &sl) == 0 && (ss.ss_family == AF_INET || ss.ss_family == AF_INET6);
    event_assign(&l->ev, s->loop->base, fd, EV_READ | EV_PERSIST, on_listen_ready, l);
    ls[s->nls++] = l;
    if (s->serving && !s->closed && watch(l, true) < 0) {
        s->nls--; /* the caller still owns fd */
        gfl__free(s->loop, l);
        return GFL_ENOMEM;
    }
    return GFL_OK;
}

int gfl__server_backlog(const gfl_server *s)
{
    return s->backlog;
}

void gfl__server_own_release(gfl_server *s, gfl_release_fn frel)
{
    s->frel = frel;
}

/* The Unix socket file to remove when the server closes. */
int gfl__server_set_unlink(gfl_server *s, const char *path)
{
    struct listener *l = s->ls[s->nls - 1];
    struct stat st;
    if (stat(path, &st) < 0)
        return GFL_OK;
    size_t n = strlen(path) + 1;
    l->unlink_path = gfl__alloc(s->loop, n);
    if (!l->unlink_path)
        return GFL_ENOMEM;
    memcpy(l->unlink_path, path, n);
    l->dev = st.st_dev;
    l->ino = st.st_ino;
    return GFL_OK;
}

static void close_listeners(gfl_server *s)
{
    for (int i = 0; i < s->nls; i++) {
        struct listener *l = s->ls[i];
        watch(l, false);
        if (l->queued > 0)
            (void)gfl_handle_cancel(s->loop, l->queued);
        if (l->retry > 0)
            (void)gfl_handle_cancel(s->loop, l->retry);
        l->queued = l->retry = 0;
        if (l->unlink_path) {
            /* Only our own file: someone may have replaced it. */
            struct stat st;
            if (stat(l->unlink_path, &st) == 0 && st.st_dev == l->dev && st.st_ino == l->ino)
                (void)unlink(l->unlink_path);
            gfl__free(s->loop, l->unlink_path);
            l->unlink_path = NULL;
        }
        if (l->fd >= 0)
            gfl__close_watched_fd(s->loop, l->fd);
        l->fd = -1;
    }
}

static void do_close(gfl_server *s)
{
    if (s->closed)
        return;
    s->closed = true;
    s->serving = false;
    close_listeners(s);
    if (s->nconns == 0 && !s->loop->closed) {
        for (int i = 0; i < s->nwaiters; i++) {
            if (gfl_future_state_of(s->waiters[i]) == GFL_FUTURE_PENDING) {
                gfl_value *nil = gfl_value_nil();
                (void)gfl_future_set_result(s->waiters[i], nil);
                gfl_value_unref(nil);
            }
            gfl_future_unref(s->waiters[i]);
        }
        s->nwaiters = 0;
    }
}

static void server_loop_closing(struct gfl_stream_node *n)
{
    gfl_server *s = (gfl_server *)((char *)n - offsetof(gfl_server, node));
    s->refs++;
    do_close(s);
    gfl__stream_unregister(s->loop, n);
    if (s->loop_ref) {
        s->loop_ref = false;
        s->refs--;
    }
    gfl_server_unref(s);
}

/* ---- public ---- */

GFL_EXPORT int gfl_server_start_serving(gfl_server *s)
{
    int rc = check(s);
    if (rc < 0)
        return rc;
    if (s->closed)
        return GFL_ECLOSED;
    if (s->serving)
        return GFL_OK;
    s->serving = true;
    for (int i = 0; i < s->nls; i++) {
        if (!s->ls[i]->retry && watch(s->ls[i], true) < 0) {
            s->serving = false;
            for (int j = 0; j < i; j++)
                (void)watch(s->ls[j], false);
            return GFL_ENOMEM;
        }
    }
    return GFL_OK;
}

GFL_EXPORT int gfl_server_is_serving(gfl_server *s)
{
    int rc = check(s);
    return rc < 0 ? rc : (s->serving && !s->closed);
}

GFL_EXPORT int gfl_server_close(gfl_server *s)
{
    int rc = check(s);
    if (rc < 0)
        return rc;
    if (s->closed)
        return GFL_OK;
    do_close(s);
    if (s->loop_ref) {
        s->loop_ref = false;
        gfl_server_unref(s); /* the caller still holds one */
    }
    return GFL_OK;
}

static int each_client(gfl_server *s, int (*fn)(gfl_transport *))
{
    int rc = check(s);
    if (rc < 0)
        return rc;
    /* close/abort only schedule connection_lost: the list stays intact. */
    for (gfl_transport *t = s->conns; t; t = t->srv_next)
        (void)fn(t);
    return GFL_OK;
}

GFL_EXPORT int gfl_server_close_clients(gfl_server *s)
{
    return each_client(s, gfl_transport_close);
}

GFL_EXPORT int gfl_server_abort_clients(gfl_server *s)
{
    return each_client(s, gfl_transport_abort);
}

GFL_EXPORT gfl_future *gfl_server_wait_closed(gfl_server *s)
{
    if (check(s) < 0)
        return NULL;
    gfl_future *f = gfl_future_new(s->loop);
    if (!f)
        return NULL;
    if (s->closed && s->nconns == 0) {
        gfl_value *nil = gfl_value_nil();
        (void)gfl_future_set_result(f, nil);
        gfl_value_unref(nil);
        return f;
    }
    gfl_future **w = gfl__realloc(s->loop, s->waiters, (size_t)(s->nwaiters + 1) * sizeof *w);
    if (!w) {
        gfl_future_unref(f);
        return NULL;
    }
    s->waiters = w;
    w[s->nwaiters++] = gfl_future_ref(f);
    return f;
}

GFL_EXPORT int gfl_server_socket_count(gfl_server *s)
{
    int rc = check(s);
    return rc < 0 ? rc : (s->closed ? 0 : s->nls);
}

GFL_EXPORT int gfl_server_socket_fd(gfl_server *s, int index)
{
    int rc = check(s);
    if (rc < 0)
        return rc;
    if (s->closed)
        return GFL_ECLOSED;
    return index >= 0 && index < s->nls ? s->ls[index]->fd : GFL_ERANGE;
}

GFL_EXPORT int gfl_server_get_sockaddr(gfl_server *s, int index, void *addr, size_t *len)
{
    int fd = gfl_server_socket_fd(s, index);
    if (fd < 0)
        return fd;
    if (!addr || !len)
        return GFL_EINVAL;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
        return gfl__errno_code(errno);
    if (sl > *len) {
        *len = sl;
        return GFL_ERANGE;
    }
    memcpy(addr, &ss, sl);
    *len = sl;
    return GFL_OK;
}

GFL_EXPORT int gfl_server_connection_count(gfl_server *s)
{
    int rc = check(s);
    return rc < 0 ? rc : s->nconns;
}

GFL_EXPORT gfl_server *gfl_server_from_socket(gfl_loop *loop, gfl_protocol_factory factory, void *factory_ud, gfl_release_fn factory_release, int fd, const gfl_server_options *opts)
{
    if (gfl__check_loop(loop) < 0 || !factory || fd < 0)
        return NULL;
    if (opts && opts->size < sizeof(size_t))
        return NULL;
    int type = 0, acc = 0;
    socklen_t len = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_STREAM)
        return NULL;
    if (gfl__fd_prepare(fd) < 0)
        return NULL;
    gfl_server *s = gfl__server_new(loop, factory, factory_ud, NULL, opts);
    if (!s)
        return NULL;
    len = sizeof acc;
    /* A bound socket not yet listening: listen (asyncio does). */
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &len) < 0 || (!acc && listen(fd, s->backlog) < 0) ||
        gfl__server_add_socket(s, fd) < 0) {
        s->refs = 1;
        s->loop_ref = false;
        gfl_server_unref(s);
        return NULL;
    }
    s->frel = factory_release; /* owned from here on */
    return s;
}

/* ---- gfl_create_server ---- */

struct builder {
    gfl_loop *loop;
    struct gfl_stream_node node;
    gfl_future *future;
    gfl_future *dns; /* the lookup in flight */
    /* The caller's options, copied: hosts and port point into `strings`
     * (owned), addrs is NULL (its entries were copied into `all`). */
    gfl_server_options o;
    const char *const *hosts;
    char *strings; /* one allocation: the hosts array, then the texts */
    int next_host;
    gfl_addrinfo *all; /* every address found so far */
    gfl_protocol_factory factory;
    void *fud;
    gfl_release_fn frel;
};

static void builder_free(struct builder *b)
{
    gfl_loop *loop = b->loop;
    gfl__stream_unregister(loop, &b->node);
    if (b->frel)
        b->frel(b->fud);
    gfl_addrinfo_unref(b->all);
    if (b->dns)
        gfl_future_unref(b->dns);
    gfl_future_unref(b->future);
    gfl__free(loop, b->strings);
    gfl__free(loop, b);
    gfl__loop_memunref(loop);
}

static void on_builder_dns(gfl_future *f, void *arg);

static void builder_loop_closing(struct gfl_stream_node *n)
{
    struct builder *b = (struct builder *)((char *)n - offsetof(struct builder, node));
    if (b->dns)
        (void)gfl_future_remove_done_callback(b->dns, on_builder_dns, b);
    if (gfl_future_state_of(b->future) == GFL_FUTURE_PENDING)
        (void)gfl_future_cancel(b->future, "the event loop was closed");
    builder_free(b);
}

static int open_listener(gfl_server *s, const gfl_server_options *o, int family, int protocol, const void *addr, size_t len, int *err)
{
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, protocol);
    if (fd < 0) {
        *err = errno;
        return -1;
    }
    int one = 1;
    if (o->reuse_address >= 0)
        (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (o->reuse_port && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0)
        goto fail;
    /* asyncio: IPv6 sockets are v6-only, so that an IPv4 socket on the
     * same port can coexist. */
    if (family == AF_INET6)
        (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, addr, (socklen_t)len) < 0 || listen(fd, s->backlog) < 0)
        goto fail;
    return fd;
fail:
    *err = errno;
    close(fd);
    return -1;
}

static void bind_all(struct builder *b)
{
    gfl_server *s = gfl__server_new(b->loop, b->factory, b->fud, NULL, &b->o);
    if (!s) {
        gfl__future_fail_errno(b->future, ENOMEM, NULL);
        return;
    }
    int n = gfl_addrinfo_count(b->all);
    int err = 0;
    char where[INET6_ADDRSTRLEN + 32] = "?";
    for (int i = 0; i < n && !err; i++) {
        size_t len;
        const void *addr = gfl_addrinfo_addr(b->all, i, &len);
        bool dup = false; /* the same address listed twice: bind once */
        for (int k = 0; k < i && !dup; k++) {
            size_t klen;
            const void *kaddr = gfl_addrinfo_addr(b->all, k, &klen);
            dup = klen == len && memcmp(kaddr, addr, len) == 0;
        }
        if (dup)
            continue;
        int fd = open_listener(s, &b->o, gfl_addrinfo_family(b->all, i), gfl_addrinfo_protocol(b->all, i), addr, len, &err);
        if (fd < 0) {
            (void)gfl__sockaddr_format(addr, (socklen_t)len, where, sizeof where);
            break;
        }
        if (gfl__server_add_socket(s, fd) < 0) {
            close(fd);
            err = ENOMEM;
        }
    }
    if (!err && s->nls == 0)
        err = EADDRNOTAVAIL;
    /* The future's value, made before the server takes the factory so a
     * failure here is one more error path, not a future left pending. */
    gfl_value *v = err ? NULL : gfl_value_object(&server_class, s);
    if (!err && !v)
        err = ENOMEM;
    if (err) {
        char what[sizeof where + 64];
        if (err == ENOMEM && !v)
            snprintf(what, sizeof what, "out of memory while creating the server");
        else
            snprintf(what, sizeof what, "error while attempting to bind on address %s", where);
        gfl__future_fail_errno(b->future, err, what);
        s->refs = 1;
        s->loop_ref = false;
        close_listeners(s);
        gfl_server_unref(s);
        return;
    }
    s->frel = b->frel; /* the server owns the factory now */
    b->frel = NULL;
    if (gfl_future_state_of(b->future) == GFL_FUTURE_PENDING)
        (void)gfl_future_set_result(b->future, v);
    gfl_value_unref(v);
    gfl_server_unref(s); /* the value (future) holds the caller's */
}

static void next_lookup(struct builder *b);

static void on_builder_dns(gfl_future *f, void *arg)
{
    struct builder *b = arg;
    gfl_value *v = gfl_future_value(f);
    void *obj = NULL;
    if (gfl_future_state_of(b->future) != GFL_FUTURE_PENDING) {
        /* cancelled by the caller */
    } else if (gfl_future_state_of(f) == GFL_FUTURE_RESULT && gfl_value_get_object(v, gfl_addrinfo_class(), &obj) == 0) {
        const gfl_addrinfo *ai = obj;
        for (int i = 0; i < ai->n; i++)
            if (gfl_addrinfo_add(b->all, ai->e[i].family, ai->e[i].socktype, ai->e[i].protocol, &ai->e[i].addr, ai->e[i].addrlen) < 0) {
                gfl__future_fail_errno(b->future, ENOMEM, NULL);
                break;
            }
    } else if (gfl_future_state_of(f) == GFL_FUTURE_ERROR) {
        gfl__future_fail_value(b->future, gfl_value_ref(v));
    } else {
        (void)gfl_future_cancel(b->future, NULL);
    }
    gfl_future_unref(b->dns);
    b->dns = NULL;
    next_lookup(b);
}

/* Resolves the next host, or binds when all are done; frees b at the end. */
static void next_lookup(struct builder *b)
{
    while (gfl_future_state_of(b->future) == GFL_FUTURE_PENDING) {
        const char *host = NULL;
        if (b->hosts) {
            host = b->hosts[b->next_host];
            if (!host)
                break;
        } else if (b->next_host > 0) {
            break;
        }
        b->next_host++;
        gfl_future *f = gfl_getaddrinfo(b->loop, host, b->o.port ? b->o.port : "0", b->o.family, SOCK_STREAM, 0, b->o.flags | AI_PASSIVE);
        if (!f || gfl_future_add_done_callback(f, on_builder_dns, b) < 0) {
            if (f)
                gfl_future_unref(f);
            gfl__future_fail_errno(b->future, ENOMEM, NULL);
            break;
        }
        b->dns = f;
        return; /* on_builder_dns continues */
    }
    if (gfl_future_state_of(b->future) == GFL_FUTURE_PENDING)
        bind_all(b);
    builder_free(b);
}

/* Copies o->hosts (and the strings) and o->port into one allocation of the
 * builder, and points b->hosts / b->o.port at the copies: the lookups run
 * after gfl_create_server returned, when the caller's memory may be gone. */
static int copy_names(struct builder *b, const gfl_server_options *o)
{
    size_t nhosts = 0, bytes = 0;
    if (o->hosts) {
        while (o->hosts[nhosts])
            bytes += strlen(o->hosts[nhosts++]) + 1;
        if (nhosts >= SIZE_MAX / sizeof(char *) - 1)
            return GFL_ENOMEM;
    }
    size_t port_len = o->port ? strlen(o->port) + 1 : 0;
    size_t array = o->hosts ? (nhosts + 1) * sizeof(char *) : 0;
    if (bytes > SIZE_MAX - array - port_len)
        return GFL_ENOMEM;
    if (array + bytes + port_len == 0)
        return GFL_OK;
    char *mem = gfl__alloc(b->loop, array + bytes + port_len);
    if (!mem)
        return GFL_ENOMEM;
    b->strings = mem;
    char *text = mem + array;
    if (o->hosts) {
        const char **hosts = (const char **)(void *)mem;
        for (size_t i = 0; i < nhosts; i++) {
            size_t n = strlen(o->hosts[i]) + 1;
            memcpy(text, o->hosts[i], n);
            hosts[i] = text;
            text += n;
        }
        hosts[nhosts] = NULL;
        b->hosts = hosts;
    }
    if (o->port) {
        memcpy(text, o->port, port_len);
        b->o.port = text;
    }
    return GFL_OK;
}

GFL_EXPORT gfl_future *gfl_create_server(gfl_loop *loop, gfl_protocol_factory factory, void *factory_ud, gfl_release_fn factory_release, const gfl_server_options *opts)
{
    if (gfl__check_loop(loop) < 0 || !factory || !opts || opts->size < sizeof(size_t))
        return NULL;
    gfl_server_options o;
    memset(&o, 0, sizeof o);
    memcpy(&o, opts, opts->size < sizeof o ? opts->size : sizeof o);
    o.size = sizeof o;
    if (o.backlog < 0 || o.accept_retry_delay < 0 || o.accept_retry_delay != o.accept_retry_delay)
        return NULL;
    if (o.family != AF_UNSPEC && o.family != AF_INET && o.family != AF_INET6)
        return NULL;
    struct builder *b = gfl__calloc(loop, 1, sizeof *b);
    if (!b)
        return NULL;
    b->loop = loop;
    b->node.loop_closing = builder_loop_closing;
    b->o = o;
    b->o.hosts = NULL; /* the caller's: use b->hosts (a copy) */
    b->o.port = NULL;
    b->o.addrs = NULL; /* used below, before returning, only */
    b->future = gfl_future_new(loop);
    b->all = gfl_addrinfo_new();
    if (!b->future || !b->all || copy_names(b, &o) < 0 || gfl__stream_register(loop, &b->node) < 0) {
        if (b->future)
            gfl_future_unref(b->future);
        gfl_addrinfo_unref(b->all);
        gfl__free(loop, b->strings);
        gfl__free(loop, b);
        return NULL;
    }
    gfl__loop_memref(loop);
    b->factory = factory;
    b->fud = factory_ud;
    b->frel = factory_release;
    gfl_future *ret = gfl_future_ref(b->future);
    if (o.addrs) {
        const gfl_addrinfo *ai = o.addrs;
        for (int i = 0; i < ai->n; i++)
            if (gfl_addrinfo_add(b->all, ai->e[i].family, ai->e[i].socktype, ai->e[i].protocol, &ai->e[i].addr, ai->e[i].addrlen) < 0)
                gfl__future_fail_errno(b->future, ENOMEM, NULL);
        if (gfl_future_state_of(b->future) == GFL_FUTURE_PENDING)
            bind_all(b);
        builder_free(b);
    } else {
        next_lookup(b);
    }
    return ret;
}
