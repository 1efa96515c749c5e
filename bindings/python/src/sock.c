/*
 * The loop's sock_* coroutines in C, with asyncio's selector semantics:
 * sock_recv, sock_recv_into, sock_recvfrom, sock_recvfrom_into,
 * sock_sendall, sock_sendto, sock_accept, and the connect half of
 * sock_connect (_loop.py resolves the address first, as asyncio does).
 *
 * A call returns a small coroutine-like object (send/throw/close and
 * __await__, so asyncio.create_task takes it). Its first step tries the
 * syscall: when that completes, the object returns at once, no future made.
 * When it would block, the step makes a future, watches the fd on the core
 * through the loop's reader/writer slot (as asyncio's _add_reader: a second
 * wait on the same fd replaces and cancels the first) and yields the
 * future; the watcher retries, completes the future and stops watching.
 * A cancelled wait stops watching when its task resumes (as asyncio's done
 * callback does, unless another wait replaced it meanwhile).
 *
 * Only a plain socket.socket in non-blocking mode takes this path; anything
 * else (SSL sockets, stand-ins, blocking sockets, keyword arguments, other
 * address families) gets asyncio's own coroutine.
 */
#include "gflpy.h"

#include <errno.h>
#include <netdb.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

enum op_kind { OP_RECV, OP_RECV_INTO, OP_RECVFROM, OP_RECVFROM_INTO, OP_SENDALL, OP_SENDTO, OP_CONNECT, OP_ACCEPT, OP_COUNT };

static const char *const op_names[OP_COUNT] = {
    "sock_recv", "sock_recv_into", "sock_recvfrom", "sock_recvfrom_into",
    "sock_sendall", "sock_sendto", "sock_connect", "sock_accept",
};
/* Which watcher the wait uses. */
static const int op_writes[OP_COUNT] = {0, 0, 0, 0, 1, 1, 1, 0};
/* Positional arguments after the socket. */
static const int op_nargs_min[OP_COUNT] = {1, 1, 1, 1, 1, 2, 1, 0};
static const int op_nargs_max[OP_COUNT] = {1, 1, 1, 2, 1, 2, 1, 0};

enum { ST_NEW, ST_WAIT, ST_DONE };

typedef struct sock_call {
    PyObject_HEAD
    gflpy_loop *loop;
    PyObject *sock;
    PyObject *arg;   /* size, buffer or data */
    PyObject *arg2;  /* recvfrom_into: nbytes; sendto/connect: the address */
    PyObject *fut;   /* while waiting */
    PyObject *handle; /* our watcher's handle, while waiting */
    Py_buffer data;  /* sendall: the data, held while sending (data.obj) */
    Py_ssize_t pos;  /* sendall: bytes sent */
    int kind, state, fd, family;
    socklen_t salen; /* sendto/connect: parsed address length; 0: let the
                      * socket object parse it */
    struct sockaddr_storage sa;
} sock_call;

static PyTypeObject *SockCallType;

/* Set once, on first use. */
static struct {
    PyObject *socket_class; /* socket.socket */
    PyObject *fileno;       /* _socket.socket.fileno */
    PyObject *timeout;      /* _socket.socket.timeout (getset) */
    PyObject *family, *type, *proto; /* _socket.socket members (ints) */
    PyObject *Future;       /* asyncio.Future */
    PyObject *fallback[OP_COUNT]; /* asyncio's BaseSelectorEventLoop.sock_* */
    PyObject *kw_loop;      /* ("loop",) */
    PyObject *kw_fileno;    /* ("fileno",) */
    PyObject *s_done, *s_result, *s_set_result, *s_set_exception, *s_blocking, *s_setblocking;
    PyObject *s_transports, *s_data, *s_is_closing;
} S;

static char scratch[256 * 1024]; /* recv target (the GIL serialises us) */

static int sock_setup(void)
{
    if (S.Future)
        return 0;
    PyObject *sm = PyImport_ImportModule("socket");
    PyObject *base = sm ? PyObject_GetAttrString(sm, "SocketType") : NULL; /* _socket.socket */
    PyObject *am = sm ? PyImport_ImportModule("asyncio.selector_events") : NULL;
    PyObject *cls = am ? PyObject_GetAttrString(am, "BaseSelectorEventLoop") : NULL;
    PyObject *fm = cls ? PyImport_ImportModule("asyncio.futures") : NULL;
    int ok = fm && base &&
             (S.socket_class = PyObject_GetAttrString(sm, "socket")) &&
             (S.fileno = PyObject_GetAttrString(base, "fileno")) &&
             (S.timeout = PyObject_GetAttrString(base, "timeout")) &&
             (S.family = PyObject_GetAttrString(base, "family")) &&
             (S.type = PyObject_GetAttrString(base, "type")) &&
             (S.proto = PyObject_GetAttrString(base, "proto")) &&
             (S.kw_loop = Py_BuildValue("(s)", "loop")) &&
             (S.kw_fileno = Py_BuildValue("(s)", "fileno")) &&
             (S.s_done = PyUnicode_InternFromString("done")) &&
             (S.s_result = PyUnicode_InternFromString("result")) &&
             (S.s_set_result = PyUnicode_InternFromString("set_result")) &&
             (S.s_set_exception = PyUnicode_InternFromString("set_exception")) &&
             (S.s_blocking = PyUnicode_InternFromString("_asyncio_future_blocking")) &&
             (S.s_setblocking = PyUnicode_InternFromString("setblocking")) &&
             (S.s_transports = PyUnicode_InternFromString("_transports")) &&
             (S.s_data = PyUnicode_InternFromString("data")) &&
             (S.s_is_closing = PyUnicode_InternFromString("is_closing"));
    for (int i = 0; ok && i < OP_COUNT; i++)
        ok = (S.fallback[i] = PyObject_GetAttrString(cls, op_names[i])) != NULL;
    if (ok && Py_TYPE(S.timeout)->tp_descr_get && Py_TYPE(S.family)->tp_descr_get)
        S.Future = PyObject_GetAttrString(fm, "Future");
    else if (ok)
        PyErr_SetString(PyExc_RuntimeError, "globeflower: unexpected socket module");
    Py_XDECREF(sm);
    Py_XDECREF(base);
    Py_XDECREF(am);
    Py_XDECREF(cls);
    Py_XDECREF(fm);
    return S.Future ? 0 : -1;
}

/* A descriptor of _socket.socket read on `sock`. */
static PyObject *sock_attr(PyObject *descr, PyObject *sock)
{
    return Py_TYPE(descr)->tp_descr_get(descr, sock, (PyObject *)Py_TYPE(sock));
}

static int sock_int_attr(PyObject *descr, PyObject *sock)
{
    PyObject *v = sock_attr(descr, sock);
    long n = v ? PyLong_AsLong(v) : -1;
    Py_XDECREF(v);
    return (int)n;
}

/* 1 if `sock` is a plain socket.socket in non-blocking mode (this file's
 * path), 0 if not (asyncio's), -1 on error. */
static int fast_socket(PyObject *sock)
{
    if ((PyObject *)Py_TYPE(sock) != S.socket_class)
        return 0;
    PyObject *t = sock_attr(S.timeout, sock);
    if (!t)
        return -1;
    int fast = PyFloat_Check(t) && PyFloat_AS_DOUBLE(t) == 0.0;
    Py_DECREF(t);
    return fast;
}

/* ------------------------------------------------------------------ */
/* Addresses                                                           */

/* A received address as the socket module shows it (makesockaddr). */
static PyObject *addr_to_py(const struct sockaddr_storage *ss, socklen_t len)
{
    if (len == 0)
        Py_RETURN_NONE;
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const void *)ss;
        char host[NI_MAXHOST];
        int rc = getnameinfo((const struct sockaddr *)ss, len, host, sizeof host, NULL, 0, NI_NUMERICHOST);
        if (rc != 0)
            return PyErr_Format(PyExc_OSError, "getnameinfo: %s", gai_strerror(rc));
        return Py_BuildValue("(siII)", host, ntohs(in6->sin6_port), (unsigned)ntohl(in6->sin6_flowinfo),
                             (unsigned)in6->sin6_scope_id);
    }
    if (ss->ss_family == AF_UNIX) {
        const struct sockaddr_un *un = (const void *)ss;
        size_t off = offsetof(struct sockaddr_un, sun_path);
        size_t n = len > off ? len - off : 0;
        if (n > 0 && un->sun_path[0] == '\0') /* Linux abstract namespace */
            return PyBytes_FromStringAndSize(un->sun_path, (Py_ssize_t)n);
        return PyUnicode_DecodeFSDefaultAndSize(un->sun_path, (Py_ssize_t)strnlen(un->sun_path, sizeof un->sun_path));
    }
    return gflpy_sockaddr_to_py((const struct sockaddr *)ss, len);
}

/* Parses a numeric (host, port[, flowinfo, scope_id]) address for the
 * socket's family into c->sa; leaves c->salen 0 (the socket object then
 * parses it: names, '<broadcast>', Unix paths...) when it is anything else. */
static void parse_addr(sock_call *c, PyObject *addr)
{
    c->salen = 0;
    if (!PyTuple_CheckExact(addr) || PyTuple_GET_SIZE(addr) < 2 || !PyUnicode_Check(PyTuple_GET_ITEM(addr, 0)) ||
        !PyLong_CheckExact(PyTuple_GET_ITEM(addr, 1)))
        return;
    const char *host = PyUnicode_AsUTF8(PyTuple_GET_ITEM(addr, 0));
    long port = PyLong_AsLong(PyTuple_GET_ITEM(addr, 1));
    if (!host || port < 0 || port > 65535) {
        PyErr_Clear();
        return;
    }
    memset(&c->sa, 0, sizeof c->sa);
    Py_ssize_t n = PyTuple_GET_SIZE(addr);
    if (c->family == AF_INET && n == 2) {
        struct sockaddr_in *in = (void *)&c->sa;
        if (inet_pton(AF_INET, host, &in->sin_addr) != 1)
            return;
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)port);
        c->salen = sizeof *in;
    } else if (c->family == AF_INET6 && n <= 4) {
        struct sockaddr_in6 *in6 = (void *)&c->sa;
        unsigned long flow = 0, scope = 0;
        for (Py_ssize_t i = 2; i < n; i++) {
            PyObject *v = PyTuple_GET_ITEM(addr, i);
            unsigned long x = PyLong_CheckExact(v) ? PyLong_AsUnsignedLong(v) : (unsigned long)-1;
            if (x == (unsigned long)-1) {
                PyErr_Clear();
                return;
            }
            *(i == 2 ? &flow : &scope) = x;
        }
        if (flow > 0xfffff || scope > 0xffffffffUL || inet_pton(AF_INET6, host, &in6->sin6_addr) != 1)
            return;
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        in6->sin6_flowinfo = htonl((uint32_t)flow);
        in6->sin6_scope_id = (uint32_t)scope;
        c->salen = sizeof *in6;
    }
}

/* ------------------------------------------------------------------ */
/* The operations: 1 done (*out set), 0 would block, -1 error           */

static int would_block(int err)
{
    return err == EAGAIN || err == EWOULDBLOCK || err == EINTR;
}

/* errno of a failed syscall: 0 would block, -1 error set. Retries (1) on
 * EINTR once Python's signal handlers ran, as the socket module does. */
static int failed(int err)
{
    if (err == EINTR)
        return PyErr_CheckSignals() < 0 ? -1 : 1;
    if (would_block(err))
        return 0;
    errno = err;
    PyErr_SetFromErrno(PyExc_OSError);
    return -1;
}

/* A call of a socket method that raises BlockingIOError/InterruptedError
 * when it would block: 0 then. */
static int method_result(PyObject *r, PyObject **out)
{
    if (r) {
        *out = r;
        return 1;
    }
    if (PyErr_ExceptionMatches(PyExc_BlockingIOError) || PyErr_ExceptionMatches(PyExc_InterruptedError)) {
        PyErr_Clear();
        return 0;
    }
    return -1;
}

static int size_arg(PyObject *o, const char *what, Py_ssize_t *n)
{
    *n = PyNumber_AsSsize_t(o, PyExc_OverflowError);
    if (*n == -1 && PyErr_Occurred())
        return -1;
    if (*n < 0) {
        PyErr_Format(PyExc_ValueError, "negative buffersize in %s", what);
        return -1;
    }
    return 0;
}

static int op_recv(sock_call *c, PyObject **out, int from)
{
    Py_ssize_t n;
    if (size_arg(c->arg, from ? "recvfrom" : "recv", &n) < 0)
        return -1;
    int big = n > (Py_ssize_t)sizeof scratch;
    PyObject *bytes = NULL;
    char *buf = scratch;
    if (big) {
        if (!(bytes = PyBytes_FromStringAndSize(NULL, n)))
            return -1;
        buf = PyBytes_AS_STRING(bytes);
    }
    struct sockaddr_storage ss;
    socklen_t sl;
    ssize_t r;
    int rc = 0;
    do {
        sl = sizeof ss;
        if (from)
            memset(&ss, 0, sizeof ss); /* as the socket module: a Unix peer may fill none */
        r = from ? recvfrom(c->fd, buf, (size_t)n, 0, (struct sockaddr *)&ss, &sl) : recv(c->fd, buf, (size_t)n, 0);
    } while (r < 0 && (rc = failed(errno)) == 1);
    if (r < 0) {
        Py_XDECREF(bytes);
        return rc;
    }
    if (big) {
        if (r != n && _PyBytes_Resize(&bytes, r) < 0)
            return -1;
    } else if (!(bytes = PyBytes_FromStringAndSize(scratch, r))) {
        return -1;
    }
    if (!from) {
        *out = bytes;
        return 1;
    }
    PyObject *addr = addr_to_py(&ss, sl);
    *out = addr ? PyTuple_Pack(2, bytes, addr) : NULL;
    Py_DECREF(bytes);
    Py_XDECREF(addr);
    return *out ? 1 : -1;
}

static int op_recv_into(sock_call *c, PyObject **out, int from)
{
    Py_buffer b;
    if (!PyArg_Parse(c->arg, "w*", &b)) /* socket's TypeError for read-only */
        return -1;
    Py_ssize_t n = b.len;
    if (from && c->arg2) {
        if (size_arg(c->arg2, "recvfrom_into", &n) < 0)
            goto fail;
        if (n == 0) {
            /* asyncio passes len(buf) (items, not bytes) */
            if ((n = PyObject_Length(c->arg)) < 0)
                goto fail;
        }
        if (n > b.len) {
            PyErr_SetString(PyExc_ValueError, "nbytes is greater than the length of the buffer");
            goto fail;
        }
    }
    struct sockaddr_storage ss;
    socklen_t sl;
    ssize_t r;
    int rc = 0;
    do {
        sl = sizeof ss;
        if (from)
            memset(&ss, 0, sizeof ss);
        r = from ? recvfrom(c->fd, b.buf, (size_t)n, 0, (struct sockaddr *)&ss, &sl) : recv(c->fd, b.buf, (size_t)n, 0);
    } while (r < 0 && (rc = failed(errno)) == 1);
    PyBuffer_Release(&b);
    if (r < 0)
        return rc;
    if (!from) {
        *out = PyLong_FromSsize_t(r);
        return *out ? 1 : -1;
    }
    PyObject *addr = addr_to_py(&ss, sl);
    *out = addr ? Py_BuildValue("(nN)", (Py_ssize_t)r, addr) : NULL;
    return *out ? 1 : -1;
fail:
    PyBuffer_Release(&b);
    return -1;
}

static int op_sendall(sock_call *c, PyObject **out)
{
    if (!c->data.obj && PyObject_GetBuffer(c->arg, &c->data, PyBUF_SIMPLE) < 0)
        return -1;
    ssize_t r;
    int rc = 0;
    do
        r = send(c->fd, (char *)c->data.buf + c->pos, (size_t)(c->data.len - c->pos), MSG_NOSIGNAL);
    while (r < 0 && (rc = failed(errno)) == 1);
    if (r < 0)
        return rc;
    c->pos += r;
    if (c->pos < c->data.len)
        return 0; /* the rest when writable */
    PyBuffer_Release(&c->data);
    Py_INCREF(Py_None);
    *out = Py_None;
    return 1;
}

static int op_sendto(sock_call *c, PyObject **out)
{
    if (!c->salen) /* the socket module parses (and maybe resolves) it */
        return method_result(PyObject_CallMethod(c->sock, "sendto", "OiO", c->arg, 0, c->arg2), out);
    Py_buffer b;
    if (PyObject_GetBuffer(c->arg, &b, PyBUF_SIMPLE) < 0)
        return -1;
    ssize_t r;
    int rc = 0;
    do
        r = sendto(c->fd, b.buf, (size_t)b.len, 0, (struct sockaddr *)&c->sa, c->salen);
    while (r < 0 && (rc = failed(errno)) == 1);
    PyBuffer_Release(&b);
    if (r < 0)
        return rc;
    *out = PyLong_FromSsize_t(r);
    return *out ? 1 : -1;
}

static int op_connect_start(sock_call *c, PyObject **out)
{
    if (!c->salen) {
        int r = method_result(PyObject_CallMethod(c->sock, "connect", "O", c->arg2), out);
        if (r > 0) {
            Py_DECREF(*out);
            Py_INCREF(Py_None);
            *out = Py_None;
        }
        return r;
    }
    if (connect(c->fd, (struct sockaddr *)&c->sa, c->salen) < 0) {
        int err = errno;
        if (err == EINPROGRESS || would_block(err))
            return 0; /* asyncio waits for writability whatever the reason */
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    Py_INCREF(Py_None);
    *out = Py_None;
    return 1;
}

/* The connection in progress became writable: its outcome (SO_ERROR). */
static int op_connect_check(sock_call *c, PyObject **out)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) {
        int e = errno;
        if (would_block(e))
            return 0;
        errno = e;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    if (err != 0) {
        PyObject *msg = PyUnicode_FromFormat("Connect call failed %S", c->arg2);
        PyObject *e = msg ? PyObject_CallFunction(PyExc_OSError, "iO", err, msg) : NULL;
        Py_XDECREF(msg);
        if (e) {
            PyErr_SetObject((PyObject *)Py_TYPE(e), e);
            Py_DECREF(e);
        }
        return -1;
    }
    Py_INCREF(Py_None);
    *out = Py_None;
    return 1;
}

static int op_accept(sock_call *c, PyObject **out)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    int fd, rc = 0;
    do {
        sl = sizeof ss;
        memset(&ss, 0, sizeof ss);
        fd = accept4(c->fd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);
    } while (fd < 0 && (rc = failed(errno)) == 1);
    if (fd < 0)
        return rc;
    /* socket.socket(family, type, proto, fileno=fd), as socket.accept()
     * makes it; then conn.setblocking(False), as asyncio does. */
    PyObject *conn = NULL, *addr = NULL, *fdo = PyLong_FromLong(fd);
    int family = sock_int_attr(S.family, c->sock);
    int type = family == -1 && PyErr_Occurred() ? -1 : sock_int_attr(S.type, c->sock);
    int proto = type == -1 && PyErr_Occurred() ? -1 : sock_int_attr(S.proto, c->sock);
    if (fdo && !PyErr_Occurred()) {
        PyObject *fam = PyLong_FromLong(family), *typ = PyLong_FromLong(type), *pro = PyLong_FromLong(proto);
        if (fam && typ && pro) {
            PyObject *stack[4] = {fam, typ, pro, fdo};
            conn = PyObject_Vectorcall(S.socket_class, stack, 3, S.kw_fileno);
        }
        Py_XDECREF(fam);
        Py_XDECREF(typ);
        Py_XDECREF(pro);
    }
    Py_XDECREF(fdo);
    if (!conn) {
        close(fd);
        return -1;
    }
    PyObject *r = PyObject_CallMethodOneArg(conn, S.s_setblocking, Py_False);
    if (r) {
        Py_DECREF(r);
        addr = addr_to_py(&ss, sl);
    }
    *out = addr ? PyTuple_Pack(2, conn, addr) : NULL;
    Py_DECREF(conn); /* closes the fd on failure */
    Py_XDECREF(addr);
    return *out ? 1 : -1;
}

/* One attempt; `retry` is set from the watcher (connect then checks). */
static int attempt(sock_call *c, PyObject **out, int retry)
{
    switch (c->kind) {
    case OP_RECV:
        return op_recv(c, out, 0);
    case OP_RECVFROM:
        return op_recv(c, out, 1);
    case OP_RECV_INTO:
        return op_recv_into(c, out, 0);
    case OP_RECVFROM_INTO:
        return op_recv_into(c, out, 1);
    case OP_SENDALL:
        return op_sendall(c, out);
    case OP_SENDTO:
        return op_sendto(c, out);
    case OP_CONNECT:
        return retry ? op_connect_check(c, out) : op_connect_start(c, out);
    case OP_ACCEPT:
        return op_accept(c, out);
    }
    return -1;
}

/* ------------------------------------------------------------------ */
/* Waiting                                                             */

/* asyncio's _ensure_fd_no_transport(fd): loop._transports is a
 * WeakValueDictionary; its .data dict is read directly. */
static int check_no_transport(sock_call *c)
{
    PyObject *reg = PyObject_GetAttr((PyObject *)c->loop, S.s_transports);
    if (!reg) {
        PyErr_Clear();
        return 0;
    }
    PyObject *key = PyLong_FromLong(c->fd), *tr = NULL;
    PyObject *data = key ? PyObject_GetAttr(reg, S.s_data) : NULL;
    if (data && PyDict_Check(data)) {
        PyObject *ref = PyDict_GetItemWithError(data, key);
        if (ref && PyWeakref_Check(ref)) {
            tr = PyWeakref_GetObject(ref);
            Py_INCREF(tr);
        }
    } else if (key) {
        PyErr_Clear();
        tr = PyObject_GetItem(reg, key);
    }
    Py_XDECREF(data);
    Py_XDECREF(key);
    Py_DECREF(reg);
    int rc = 0;
    if (!tr || tr == Py_None) {
        if (PyErr_Occurred() && !PyErr_ExceptionMatches(PyExc_KeyError))
            rc = -1;
        else
            PyErr_Clear();
    } else {
        PyObject *closing = PyObject_CallMethodNoArgs(tr, S.s_is_closing);
        int yes = closing ? PyObject_IsTrue(closing) : -1;
        Py_XDECREF(closing);
        if (yes == 0)
            PyErr_Format(PyExc_RuntimeError, "File descriptor %d is used by transport %R", c->fd, tr);
        rc = yes == 1 ? 0 : -1;
    }
    Py_XDECREF(tr);
    return rc;
}

static int start_wait(sock_call *c)
{
    PyObject *stack[1] = {(PyObject *)c->loop};
    c->fut = PyObject_Vectorcall(S.Future, stack, 0, S.kw_loop);
    if (!c->fut)
        return -1;
    if (check_no_transport(c) < 0)
        return -1;
    c->handle = gflpy_watch_add(c->loop, c->fd, op_writes[c->kind], (PyObject *)c);
    return c->handle ? 0 : -1;
}

/* asyncio's _sock_read_done/_sock_write_done: stop watching unless another
 * wait replaced ours (which cancelled our handle). */
static void end_wait(sock_call *c)
{
    PyObject *h = c->handle;
    if (!h)
        return;
    c->handle = NULL;
    if (GFLPY_SLOT(h, gflpy_hoff.cancelled) != Py_True)
        gflpy_watch_remove(c->loop, c->fd, op_writes[c->kind]);
    Py_DECREF(h);
}

/* The watcher's callback (the handle calls the object): retry, complete
 * the future when done. */
static PyObject *sc_call(sock_call *c, PyObject *args, PyObject *kw)
{
    (void)args;
    (void)kw;
    if (c->state != ST_WAIT || !c->fut)
        Py_RETURN_NONE;
    PyObject *done = PyObject_CallMethodNoArgs(c->fut, S.s_done);
    if (!done)
        return NULL;
    int is_done = done == Py_True;
    Py_DECREF(done);
    if (is_done) /* cancelled: the task resuming stops the watcher */
        Py_RETURN_NONE;
    PyObject *out = NULL;
    int rc = attempt(c, &out, 1);
    if (rc == 0)
        Py_RETURN_NONE;
    if (rc < 0) {
        PyObject *type, *tb;
        PyErr_Fetch(&type, &out, &tb);
        PyErr_NormalizeException(&type, &out, &tb);
        if (tb && out)
            PyException_SetTraceback(out, tb);
        Py_XDECREF(type);
        Py_XDECREF(tb);
        if (!out)
            return NULL;
    }
    Py_INCREF(c);
    end_wait(c);
    PyObject *r = PyObject_CallMethodOneArg(c->fut, rc > 0 ? S.s_set_result : S.s_set_exception, out);
    Py_DECREF(out);
    Py_DECREF(c);
    return r;
}

/* ------------------------------------------------------------------ */
/* The coroutine protocol                                              */

static PySendResult sc_send_impl(sock_call *c, PyObject *arg, PyObject **res)
{
    (void)arg;
    *res = NULL;
    if (c->state == ST_NEW) {
        c->state = ST_DONE;
        PyObject *out = NULL;
        int rc = attempt(c, &out, 0);
        if (rc > 0) {
            *res = out;
            return PYGEN_RETURN;
        }
        if (rc < 0)
            return PYGEN_ERROR;
        if (start_wait(c) < 0) {
            end_wait(c);
            Py_CLEAR(c->fut);
            return PYGEN_ERROR;
        }
        c->state = ST_WAIT;
    } else if (c->state == ST_WAIT) {
        PyObject *done = PyObject_CallMethodNoArgs(c->fut, S.s_done);
        if (!done)
            return PYGEN_ERROR;
        int is_done = done == Py_True;
        Py_DECREF(done);
        if (is_done) {
            c->state = ST_DONE;
            end_wait(c);
            PyObject *fut = c->fut;
            c->fut = NULL;
            *res = PyObject_CallMethodNoArgs(fut, S.s_result);
            Py_DECREF(fut);
            PyBuffer_Release(&c->data);
            return *res ? PYGEN_RETURN : PYGEN_ERROR;
        }
    } else {
        PyErr_SetString(PyExc_RuntimeError, "cannot reuse already awaited coroutine");
        return PYGEN_ERROR;
    }
    /* Waiting: hand the future to the task, as Future.__await__ does. */
    if (PyObject_SetAttr(c->fut, S.s_blocking, Py_True) < 0)
        return PYGEN_ERROR;
    Py_INCREF(c->fut);
    *res = c->fut;
    return PYGEN_NEXT;
}

static PySendResult sc_am_send(PyObject *self, PyObject *arg, PyObject **res)
{
    return sc_send_impl((sock_call *)self, arg, res);
}

/* PYGEN_RETURN as an iterator shows it: StopIteration(value). */
static PyObject *returned(PySendResult st, PyObject *res)
{
    if (st != PYGEN_RETURN)
        return res;
    if (res == Py_None) {
        PyErr_SetNone(PyExc_StopIteration);
    } else {
        PyObject *e = PyObject_CallOneArg(PyExc_StopIteration, res);
        if (e) {
            PyErr_SetObject(PyExc_StopIteration, e);
            Py_DECREF(e);
        }
    }
    Py_DECREF(res);
    return NULL;
}

static PyObject *sc_iternext(PyObject *self)
{
    PyObject *res;
    PySendResult st = sc_send_impl((sock_call *)self, Py_None, &res);
    return returned(st, res);
}

static PyObject *sc_send(PyObject *self, PyObject *arg)
{
    PyObject *res;
    PySendResult st = sc_send_impl((sock_call *)self, arg, &res);
    return returned(st, res);
}

/* Stops waiting for good (the coroutine is abandoned). */
static void sc_abandon(sock_call *c)
{
    if (c->state == ST_WAIT)
        end_wait(c);
    c->state = ST_DONE;
    Py_CLEAR(c->fut);
    PyBuffer_Release(&c->data);
}

static PyObject *sc_throw(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 3)
        return PyErr_Format(PyExc_TypeError, "throw expected 1 to 3 arguments, got %zd", nargs);
    PyObject *typ = args[0], *val = nargs > 1 ? args[1] : Py_None, *tb = nargs > 2 ? args[2] : Py_None;
    if (tb != Py_None && !PyTraceBack_Check(tb))
        return PyErr_Format(PyExc_TypeError, "throw() third argument must be a traceback object");
    sc_abandon((sock_call *)self);
    if (PyExceptionInstance_Check(typ)) {
        if (val != Py_None)
            return PyErr_Format(PyExc_TypeError, "instance exception may not have a separate value");
        PyErr_SetObject((PyObject *)Py_TYPE(typ), typ);
    } else if (PyExceptionClass_Check(typ)) {
        PyErr_SetObject(typ, val);
    } else {
        return PyErr_Format(PyExc_TypeError,
                            "exceptions must be classes or instances deriving from BaseException, not %s",
                            Py_TYPE(typ)->tp_name);
    }
    if (tb != Py_None) {
        PyObject *t, *v, *old;
        PyErr_Fetch(&t, &v, &old);
        PyErr_NormalizeException(&t, &v, &old);
        Py_XDECREF(old);
        Py_INCREF(tb);
        PyErr_Restore(t, v, tb);
    }
    return NULL;
}

static PyObject *sc_close(PyObject *self, PyObject *unused)
{
    (void)unused;
    sc_abandon((sock_call *)self);
    Py_RETURN_NONE;
}

static PyObject *sc_await(PyObject *self)
{
    Py_INCREF(self);
    return self;
}

static PyObject *sc_repr(sock_call *c)
{
    return PyUnicode_FromFormat("<%s fd=%d>", op_names[c->kind], c->fd);
}

static PyObject *sc_name(sock_call *c, void *closure)
{
    (void)closure;
    return PyUnicode_FromString(op_names[c->kind]);
}

static int sc_traverse(sock_call *c, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(c));
    Py_VISIT(c->loop);
    Py_VISIT(c->sock);
    Py_VISIT(c->arg);
    Py_VISIT(c->arg2);
    Py_VISIT(c->fut);
    Py_VISIT(c->handle);
    return 0;
}

static int sc_clear(sock_call *c)
{
    PyBuffer_Release(&c->data);
    Py_CLEAR(c->loop);
    Py_CLEAR(c->sock);
    Py_CLEAR(c->arg);
    Py_CLEAR(c->arg2);
    Py_CLEAR(c->fut);
    Py_CLEAR(c->handle);
    return 0;
}

static void sc_dealloc(sock_call *c)
{
    PyTypeObject *tp = Py_TYPE(c);
    PyObject_GC_UnTrack(c);
    sc_clear(c);
    tp->tp_free(c);
    Py_DECREF(tp);
}

static PyMethodDef sc_methods[] = {
    {"send", (PyCFunction)sc_send, METH_O, NULL},
    {"throw", (PyCFunction)(void (*)(void))sc_throw, METH_FASTCALL, NULL},
    {"close", (PyCFunction)sc_close, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef sc_getset[] = {
    {"__name__", (getter)sc_name, NULL, NULL, NULL},
    {"__qualname__", (getter)sc_name, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot sc_slots[] = {
    {Py_tp_dealloc, sc_dealloc},
    {Py_tp_traverse, sc_traverse},
    {Py_tp_clear, sc_clear},
    {Py_tp_repr, sc_repr},
    {Py_tp_call, sc_call},
    {Py_tp_iternext, sc_iternext},
    {Py_am_await, sc_await},
    {Py_am_send, sc_am_send},
    {Py_tp_methods, sc_methods},
    {Py_tp_getset, sc_getset},
    {Py_tp_doc, "A sock_* call of a globeflower loop (a coroutine)."},
    {0, NULL},
};

static PyType_Spec sc_spec = {
    "globeflower._core.SockCall",
    sizeof(sock_call),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    sc_slots,
};

/* ------------------------------------------------------------------ */
/* The loop methods                                                    */

static PyObject *sock_method(gflpy_loop *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, int kind)
{
    if (sock_setup() < 0)
        return NULL;
    Py_ssize_t extra = nargs - 1;
    int fast = !kwnames && nargs >= 1 && extra >= op_nargs_min[kind] && extra <= op_nargs_max[kind];
    int family = 0, fd = -1;
    if (fast && (fast = fast_socket(args[0])) < 0)
        return NULL;
    if (fast && (kind == OP_RECVFROM || kind == OP_RECVFROM_INTO || kind == OP_SENDTO || kind == OP_CONNECT ||
                 kind == OP_ACCEPT)) {
        /* addresses this file converts as the socket module would */
        family = sock_int_attr(S.family, args[0]);
        if (family == -1 && PyErr_Occurred())
            return NULL;
        fast = family == AF_INET || family == AF_INET6 || family == AF_UNIX;
    }
    if (fast) {
        PyObject *f = PyObject_Vectorcall(S.fileno, args, 1, NULL);
        fd = f ? (int)PyLong_AsLong(f) : -1;
        Py_XDECREF(f);
        if (fd == -1 && PyErr_Occurred())
            return NULL;
    }
    if (!fast) {
        /* asyncio's coroutine: BaseSelectorEventLoop.sock_xxx(self, ...) */
        PyObject *stack[8];
        Py_ssize_t nk = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
        if (nargs + nk + 1 > 8)
            return PyErr_Format(PyExc_TypeError, "%s(): too many arguments", op_names[kind]);
        stack[0] = (PyObject *)self;
        for (Py_ssize_t i = 0; i < nargs + nk; i++)
            stack[i + 1] = args[i];
        return PyObject_Vectorcall(S.fallback[kind], stack, (size_t)nargs + 1, kwnames);
    }
    sock_call *c = (sock_call *)SockCallType->tp_alloc(SockCallType, 0);
    if (!c)
        return NULL;
    c->kind = kind;
    c->fd = fd;
    c->family = family;
    Py_INCREF(self);
    c->loop = self;
    Py_INCREF(args[0]);
    c->sock = args[0];
    if (extra >= 1) {
        Py_INCREF(args[1]);
        c->arg = args[1];
    }
    if (extra >= 2) {
        Py_INCREF(args[2]);
        c->arg2 = args[2];
    }
    if (kind == OP_CONNECT) {
        c->arg2 = c->arg; /* the address */
        c->arg = NULL;
    }
    if (kind == OP_SENDTO || kind == OP_CONNECT)
        parse_addr(c, c->arg2);
    return (PyObject *)c;
}

#define SOCK_METHOD(name, kind)                                                                          \
    static PyObject *loop_##name(gflpy_loop *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) \
    {                                                                                                    \
        return sock_method(self, args, nargs, kw, kind);                                                 \
    }
SOCK_METHOD(sock_recv, OP_RECV)
SOCK_METHOD(sock_recv_into, OP_RECV_INTO)
SOCK_METHOD(sock_recvfrom, OP_RECVFROM)
SOCK_METHOD(sock_recvfrom_into, OP_RECVFROM_INTO)
SOCK_METHOD(sock_sendall, OP_SENDALL)
SOCK_METHOD(sock_sendto, OP_SENDTO)
SOCK_METHOD(sock_connect, OP_CONNECT)
SOCK_METHOD(sock_accept, OP_ACCEPT)

#define FASTKW METH_FASTCALL | METH_KEYWORDS
#define FN(f) (PyCFunction)(void (*)(void))(f)
static PyMethodDef sock_methods[] = {
    {"sock_recv", FN(loop_sock_recv), FASTKW, "sock_recv(sock, nbytes): receive up to nbytes (a coroutine)."},
    {"sock_recv_into", FN(loop_sock_recv_into), FASTKW, "sock_recv_into(sock, buf): receive into buf (a coroutine)."},
    {"sock_recvfrom", FN(loop_sock_recvfrom), FASTKW, "sock_recvfrom(sock, bufsize): (data, address) (a coroutine)."},
    {"sock_recvfrom_into", FN(loop_sock_recvfrom_into), FASTKW,
     "sock_recvfrom_into(sock, buf, nbytes=0): (nbytes, address) (a coroutine)."},
    {"sock_sendall", FN(loop_sock_sendall), FASTKW, "sock_sendall(sock, data): send all of data (a coroutine)."},
    {"sock_sendto", FN(loop_sock_sendto), FASTKW, "sock_sendto(sock, data, address) (a coroutine)."},
    /* sock_connect itself is Python (it resolves the address first). */
    {"_gfl_sock_connect", FN(loop_sock_connect), FASTKW, NULL},
    {"sock_accept", FN(loop_sock_accept), FASTKW, "sock_accept(sock): (conn, address) (a coroutine)."},
    {NULL, NULL, 0, NULL},
};

int gflpy_sock_init(PyTypeObject *loop_type)
{
    SockCallType = (PyTypeObject *)PyType_FromSpec(&sc_spec);
    if (!SockCallType)
        return -1;
    for (PyMethodDef *m = sock_methods; m->ml_name; m++) {
        PyObject *d = PyDescr_NewMethod(loop_type, m);
        int rc = d ? PyObject_SetAttrString((PyObject *)loop_type, m->ml_name, d) : -1;
        Py_XDECREF(d);
        if (rc < 0)
            return -1;
    }
    return 0;
}
