/*
 * Stream transports (TCP and Unix sockets) on the core's gfl_transport,
 * driving Python protocols (asyncio.Protocol and asyncio.BufferedProtocol).
 *
 * The type is created at _setup() as a subclass of asyncio.Transport, so
 * isinstance(t, asyncio.Transport) holds. asyncio.BaseTransport has a slot
 * (_extra), so our C fields cannot sit at a fixed offset: they follow the
 * base's instance layout, at `tr_off`, found at run time.
 *
 * Sockets: the core gets a dup() of the user's socket and the Python socket
 * object stays what get_extra_info('socket') shows (same fileno, as on the
 * stock loop); it is closed after connection_lost, like asyncio does, so the
 * peer sees the close once both descriptors are gone.
 */
#include "gflpy.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

PyTypeObject *gflpy_StreamTransportType;
/* One-way pipe transports (_loop.py subclasses of StreamTransport): a read
 * pipe has no write side, a write pipe refuses the read side. */
static PyTypeObject *read_pipe_type, *write_pipe_type;

/* Writes one iteration may batch per transport before sending them. */
#define PENDING_MAX 16
/* Bytes a loop batches before sending them all: 100 connections echoing
 * 100 KiB would otherwise hold 10 MiB of replies until the iteration ends,
 * out of the caches by the time they are sent. */
#define BATCH_BYTES_MAX (256 * 1024)

typedef struct tr {
    gfl_transport *t;   /* our reference (valid, but inert, after loss) */
    gflpy_loop *loop;
    PyObject *protocol;
    PyObject *sock;     /* the Python socket, or NULL */
    PyObject *server;   /* asyncio Server that accepted us, or NULL */
    PyObject *waiter;   /* future completed after connection_made */
    PyObject *extra;    /* dict: asyncio's _extra */
    PyObject *lost_exc; /* exception for connection_lost (fatal errors) */
    PyObject *context;  /* contextvars.Context the protocol callbacks run in */
    PyObject *m_data_received, *m_get_buffer, *m_buffer_updated;
    PyObject *dict, *weakreflist;
    Py_buffer buf;
    int has_buf;
    int buffered;
    int lost;
    int eof;
    int protocol_paused; /* pause_writing was called, resume_writing not yet */
    int is_pipe;         /* `sock` is then the pipe's file object */
    int sock_fd; /* the user's fileno, key of loop._transports */
    int own_sock; /* `sock` was made here (make_sock), not given by the user */
    /* The loop was closed with the transport still open: as on the stock
     * loop, the protocol got no connection_lost and the user's socket or
     * pipe stays open (theirs to close); only the core's dup() is gone. */
    int orphaned;
    /* Raw addresses read when the connection was made (addr_len[i] > 0),
     * turned into Python objects only when get_extra_info asks. */
    size_t addr_len[2]; /* [0]: sockname, [1]: peername */
    struct sockaddr_storage addr[2];
    /* write(bytes) inside a loop iteration: the (immutable) objects, sent
     * together at its end (gflpy_loop.batch_depth). A task writing a
     * 64 KiB and a 36 KiB piece (a stream echoing 100 KiB with 64 KiB
     * reads) then costs one sendmsg, not two sends. */
    PyObject *pending[PENDING_MAX];
    int npending;
    int dirty;           /* in loop->dirty */
    size_t pending_size;
    size_t pending_room; /* the high-water mark: above it, send at once */
    /* Linked in loop->tr_head while the core holds us (factory until
     * connection_lost): what a detaching loop must abort. */
    PyObject *tr_prev, *tr_next;
    int linked;
} tr;

static Py_ssize_t tr_off;      /* where struct tr starts */
static Py_ssize_t extra_off;   /* BaseTransport's _extra slot */
/* Every object slot of the asyncio base classes (cleared at dealloc). */
#define MAX_BASE_SLOTS 16
static Py_ssize_t base_slots[MAX_BASE_SLOTS];
static int nbase_slots;

#define TR(o) ((tr *)((char *)(o) + tr_off))

static const gfl_protocol plain_proto;
static const gfl_protocol buffered_proto;
static const gfl_protocol detached_proto;
static void pending_release(tr *s);

/* Interned method names, for PyObject_VectorcallMethod on the hot paths. */
static PyObject *s_connection_made, *s_connection_lost, *s_data_received, *s_eof_received, *s_pause_writing,
    *s_resume_writing, *s_get_buffer, *s_buffer_updated, *s_attach, *s_detach, *s_close, *s_sockname,
    *s_peername, *s_empty_waiter;

static int intern_names(void)
{
    struct { PyObject **slot; const char *name; } names[] = {
        {&s_connection_made, "connection_made"}, {&s_connection_lost, "connection_lost"},
        {&s_data_received, "data_received"},     {&s_eof_received, "eof_received"},
        {&s_pause_writing, "pause_writing"},     {&s_resume_writing, "resume_writing"},
        {&s_get_buffer, "get_buffer"},           {&s_buffer_updated, "buffer_updated"},
        {&s_attach, "_attach"},                  {&s_detach, "_detach"},
        {&s_close, "close"},                     {&s_sockname, "sockname"},
        {&s_peername, "peername"},              {&s_empty_waiter, "_empty_waiter"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!*names[i].slot && !(*names[i].slot = PyUnicode_InternFromString(names[i].name)))
            return -1;
    return 0;
}

/* obj.name(*args) without building a bound method. */
static PyObject *call_method(PyObject *obj, PyObject *name, PyObject *arg)
{
    PyObject *args[2] = {obj, arg};
    return PyObject_VectorcallMethod(name, args, (arg ? 2 : 1) | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
}

/* ------------------------------------------------------------------ */
/* Errors                                                              */

/* asyncio's _fatal_error / protocol-callback failure reporting (Python). */
static void report(PyObject *self, const char *message, int fatal)
{
    tr *s = TR(self);
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (!type)
        return;
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb)
        PyException_SetTraceback(value, tb);
    Py_XDECREF(tb);
    Py_DECREF(type);
    if (PyErr_GivenExceptionMatches(value, PyExc_SystemExit) ||
        PyErr_GivenExceptionMatches(value, PyExc_KeyboardInterrupt)) {
        PyErr_SetObject((PyObject *)Py_TYPE(value), value);
        Py_DECREF(value);
        gflpy_loop_report(s->loop, NULL);
        return;
    }
    PyObject *r = PyObject_CallFunction(gflpy.transport_error, "OOsi", self, value, message, fatal);
    Py_DECREF(value);
    if (r)
        Py_DECREF(r);
    else
        gflpy_loop_report(s->loop, NULL);
}

/* ------------------------------------------------------------------ */
/* Protocol binding                                                    */

static int bind_protocol(PyObject *self, PyObject *protocol)
{
    tr *s = TR(self);
    int buffered = PyObject_IsInstance(protocol, gflpy.BufferedProtocol);
    if (buffered < 0)
        return -1;
    PyObject *a = NULL, *b = NULL, *c = NULL;
    if (buffered) {
        a = PyObject_GetAttr(protocol, s_get_buffer);
        b = a ? PyObject_GetAttr(protocol, s_buffer_updated) : NULL;
        if (!b) {
            Py_XDECREF(a);
            return -1;
        }
    } else {
        c = PyObject_GetAttr(protocol, s_data_received);
        if (!c)
            PyErr_Clear(); /* looked up again (and failing) when data comes */
    }
    Py_INCREF(protocol);
    Py_XSETREF(s->protocol, protocol);
    Py_XSETREF(s->m_get_buffer, a);
    Py_XSETREF(s->m_buffer_updated, b);
    Py_XSETREF(s->m_data_received, c);
    s->buffered = buffered;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Core -> protocol trampolines (ud is the Python transport)            */

static void b_connection_made(gfl_transport *t, void *ud)
{
    (void)t;
    PyObject *self = ud;
    tr *s = TR(self);
    Py_INCREF(self);
    PyObject *r = call_method(s->protocol, s_connection_made, self);
    if (r)
        Py_DECREF(r);
    else
        gflpy_loop_report(s->loop, NULL);
    if (s->waiter) {
        PyObject *w = s->waiter;
        s->waiter = NULL;
        r = PyObject_CallFunctionObjArgs(gflpy.set_result_unless_cancelled, w, Py_None, NULL);
        Py_DECREF(w);
        if (r)
            Py_DECREF(r);
        else
            gflpy_loop_report(s->loop, NULL);
    }
    Py_DECREF(self);
}

static void b_data_received(gfl_transport *t, const void *data, size_t len, void *ud)
{
    (void)t;
    PyObject *self = ud;
    tr *s = TR(self);
    PyObject *bytes = PyBytes_FromStringAndSize(data, (Py_ssize_t)len);
    if (!bytes) {
        report(self, "Fatal read error on socket transport", 1);
        return;
    }
    Py_INCREF(self);
    gflpy_loop *loop = s->loop;
    Py_INCREF(loop);
    gflpy_batch_begin(loop);
    PyObject *r;
    if (s->m_data_received)
        r = PyObject_CallOneArg(s->m_data_received, bytes);
    else
        r = call_method(s->protocol, s_data_received, bytes);
    Py_DECREF(bytes);
    if (r)
        Py_DECREF(r);
    else
        report(self, "Fatal error: protocol.data_received() call failed.", 1);
    gflpy_batch_end(loop);
    Py_DECREF(loop);
    Py_DECREF(self);
}

static int b_eof_received(gfl_transport *t, void *ud)
{
    (void)t;
    PyObject *self = ud;
    tr *s = TR(self);
    Py_INCREF(self);
    int keep = 0;
    PyObject *r = call_method(s->protocol, s_eof_received, NULL);
    if (r) {
        keep = PyObject_IsTrue(r) > 0;
        Py_DECREF(r);
        PyErr_Clear();
    } else {
        report(self, "Fatal error: protocol.eof_received() call failed.", 1);
    }
    Py_DECREF(self);
    return keep;
}

static void release_buf(tr *s)
{
    if (s->has_buf) {
        s->has_buf = 0;
        PyBuffer_Release(&s->buf);
    }
}

static void tr_link(PyObject *self)
{
    tr *s = TR(self);
    gflpy_loop *loop = s->loop;
    if (s->linked || !loop)
        return;
    s->tr_prev = NULL;
    s->tr_next = loop->tr_head;
    if (loop->tr_head)
        TR(loop->tr_head)->tr_prev = self;
    loop->tr_head = self;
    s->linked = 1;
}

static void tr_unlink(PyObject *self)
{
    tr *s = TR(self);
    gflpy_loop *loop = s->loop;
    if (!s->linked)
        return;
    if (s->tr_prev)
        TR(s->tr_prev)->tr_next = s->tr_next;
    else
        loop->tr_head = s->tr_next;
    if (s->tr_next)
        TR(s->tr_next)->tr_prev = s->tr_prev;
    s->tr_prev = s->tr_next = NULL;
    s->linked = 0;
}

/* The loop goes away with the transport open: as asyncio, the protocol
 * gets no connection_lost and the user's socket or pipe stays open (theirs
 * to close); the core's reference is dropped. */
static void orphan(PyObject *self)
{
    tr *s = TR(self);
    tr_unlink(self);
    s->lost = 1;
    release_buf(s);
    pending_release(s);
    s->orphaned = 1;
    Py_CLEAR(s->lost_exc);
    Py_CLEAR(s->waiter);
    if (s->sock && s->own_sock) {
        PyObject *r = call_method(s->sock, s_close, NULL);
        if (r)
            Py_DECREF(r);
        else
            PyErr_Clear();
    }
    Py_CLEAR(s->server);
    Py_DECREF(self);
}

void gflpy_transports_detach(gflpy_loop *loop)
{
    while (loop->tr_head) {
        PyObject *self = loop->tr_head;
        tr *s = TR(self);
        Py_INCREF(self);
        if (s->t) {
            API->transport_set_protocol(s->t, &detached_proto, NULL);
            API->transport_abort(s->t);
        }
        orphan(self); /* unlinks it, drops the core's reference */
        Py_DECREF(self);
    }
}

static void b_connection_lost(gfl_transport *t, gfl_value *error, void *ud)
{
    (void)t;
    PyObject *self = ud; /* the reference the core held: dropped below */
    tr *s = TR(self);
    if (s->loop && s->loop->freeing_core) {
        orphan(self);
        return;
    }
    tr_unlink(self);
    s->lost = 1;
    release_buf(s);
    pending_release(s);
    PyObject *exc = s->lost_exc;
    s->lost_exc = NULL;
    if (!exc && error)
        exc = gflpy_exception_from_value(error);
    if (!exc) {
        PyErr_Clear();
        exc = Py_None;
        Py_INCREF(exc);
    }
    if (s->waiter) {
        /* Lost before connection_made: the waiter must not hang. */
        Py_CLEAR(s->waiter);
    }
    PyObject *r = s->protocol ? call_method(s->protocol, s_connection_lost, exc) : Py_None;
    if (r == Py_None && !s->protocol)
        Py_INCREF(r);
    Py_DECREF(exc);
    if (r)
        Py_DECREF(r);
    else
        gflpy_loop_report(s->loop, NULL);
    if (s->sock) {
        r = call_method(s->sock, s_close, NULL);
        if (r)
            Py_DECREF(r);
        else
            PyErr_Clear();
    }
    if (s->server) {
        PyObject *srv = s->server;
        s->server = NULL;
#if PY_VERSION_HEX >= 0x030D0000
        r = call_method(srv, s_detach, self);
#else
        r = call_method(srv, s_detach, NULL);
#endif
        Py_DECREF(srv);
        if (r)
            Py_DECREF(r);
        else
            gflpy_loop_report(s->loop, NULL);
    }
    Py_CLEAR(s->m_data_received);
    Py_CLEAR(s->m_get_buffer);
    Py_CLEAR(s->m_buffer_updated);
    Py_DECREF(self);
}

static void b_pause_writing(gfl_transport *t, void *ud)
{
    (void)t;
    PyObject *self = ud;
    TR(self)->protocol_paused = 1;
    PyObject *r = call_method(TR(self)->protocol, s_pause_writing, NULL);
    if (r)
        Py_DECREF(r);
    else
        report(self, "protocol.pause_writing() failed", 0);
}

static void b_resume_writing(gfl_transport *t, void *ud)
{
    (void)t;
    PyObject *self = ud;
    TR(self)->protocol_paused = 0;
    PyObject *r = call_method(TR(self)->protocol, s_resume_writing, NULL);
    if (r)
        Py_DECREF(r);
    else
        report(self, "protocol.resume_writing() failed", 0);
}

static void *b_get_buffer(gfl_transport *t, size_t hint, size_t *size, void *ud)
{
    (void)t;
    (void)hint;
    PyObject *self = ud;
    tr *s = TR(self);
    release_buf(s);
    PyObject *b = NULL;
    if (s->m_get_buffer) {
        PyObject *any = PyLong_FromLong(-1); /* a cached small int */
        b = any ? PyObject_CallOneArg(s->m_get_buffer, any) : NULL;
        Py_XDECREF(any);
    }
    if (b) {
        int rc = PyObject_GetBuffer(b, &s->buf, PyBUF_WRITABLE);
        Py_DECREF(b);
        if (rc == 0) {
            s->has_buf = 1;
            if (s->buf.len > 0) {
                *size = (size_t)s->buf.len;
                return s->buf.buf;
            }
            release_buf(s);
            PyErr_SetString(PyExc_RuntimeError, "get_buffer() returned an empty buffer");
        }
    }
    if (PyErr_Occurred()) {
        /* asyncio reports it and closes with this exception. */
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        Py_XINCREF(value);
        PyErr_Restore(type, value, tb);
        report(self, "Fatal error: protocol.get_buffer() call failed.", 1);
        if (value && !s->lost_exc)
            s->lost_exc = value;
        else
            Py_XDECREF(value);
    }
    return NULL;
}

static void b_buffer_updated(gfl_transport *t, size_t n, void *ud)
{
    (void)t;
    PyObject *self = ud;
    tr *s = TR(self);
    release_buf(s);
    if (!s->m_buffer_updated)
        return;
    Py_INCREF(self);
    gflpy_loop *loop = s->loop;
    Py_INCREF(loop);
    gflpy_batch_begin(loop);
    PyObject *nbytes = PyLong_FromSize_t(n);
    PyObject *r = nbytes ? PyObject_CallOneArg(s->m_buffer_updated, nbytes) : NULL;
    Py_XDECREF(nbytes);
    if (r)
        Py_DECREF(r);
    else
        report(self, "Fatal error: protocol.buffer_updated() call failed.", 1);
    gflpy_batch_end(loop);
    Py_DECREF(loop);
    Py_DECREF(self);
}

/* The core's entry points: the GIL (the host may pump without it), the
 * running loop while the host pumps, nothing at all once the interpreter
 * is gone. The transport's loop is fixed at creation and the core holds
 * the transport: readable before the GIL (see gflpy_enter). */
#define ENTER(ud, fail)                                  \
    gflpy_entry e_;                                      \
    if (gflpy_enter(TR((PyObject *)(ud))->loop, &e_) < 0) \
        return fail;                                     \
    PyObject *ctx_ = gflpy_context_enter(TR((PyObject *)(ud))->context)
#define LEAVE()                 \
    gflpy_context_exit(ctx_); \
    gflpy_leave(&e_)

static void p_connection_made(gfl_transport *t, void *ud)
{
    ENTER(ud, );
    b_connection_made(t, ud);
    LEAVE();
}

static void p_data_received(gfl_transport *t, const void *data, size_t len, void *ud)
{
    ENTER(ud, );
    b_data_received(t, data, len, ud);
    LEAVE();
}

static int p_eof_received(gfl_transport *t, void *ud)
{
    ENTER(ud, 0);
    int keep = b_eof_received(t, ud);
    LEAVE();
    return keep;
}

static void p_connection_lost(gfl_transport *t, gfl_value *error, void *ud)
{
    ENTER(ud, );
    b_connection_lost(t, error, ud);
    LEAVE();
}

static void p_pause_writing(gfl_transport *t, void *ud)
{
    ENTER(ud, );
    b_pause_writing(t, ud);
    LEAVE();
}

static void p_resume_writing(gfl_transport *t, void *ud)
{
    ENTER(ud, );
    b_resume_writing(t, ud);
    LEAVE();
}

static void *p_get_buffer(gfl_transport *t, size_t hint, size_t *size, void *ud)
{
    ENTER(ud, NULL);
    void *buf = b_get_buffer(t, hint, size, ud);
    LEAVE();
    return buf;
}

static void p_buffer_updated(gfl_transport *t, size_t n, void *ud)
{
    ENTER(ud, );
    b_buffer_updated(t, n, ud);
    LEAVE();
}

/* Given to the core's transports when Python detaches from a C host's
 * loop: the core never calls Python for them again. */
static const gfl_protocol detached_proto = {.size = sizeof(gfl_protocol)};

static const gfl_protocol plain_proto = {
    .size = sizeof(gfl_protocol),
    .connection_made = p_connection_made,
    .data_received = p_data_received,
    .eof_received = p_eof_received,
    .connection_lost = p_connection_lost,
    .pause_writing = p_pause_writing,
    .resume_writing = p_resume_writing,
};

static const gfl_protocol buffered_proto = {
    .size = sizeof(gfl_protocol),
    .connection_made = p_connection_made,
    .eof_received = p_eof_received,
    .connection_lost = p_connection_lost,
    .pause_writing = p_pause_writing,
    .resume_writing = p_resume_writing,
    .get_buffer = p_get_buffer,
    .buffer_updated = p_buffer_updated,
};

static int factory(void *fud, gfl_transport *t, const gfl_protocol **proto, void **ud)
{
    PyObject *self = fud;
    tr *s = TR(self);
    s->t = API->transport_ref(t);
    *proto = s->buffered ? &buffered_proto : &plain_proto;
    Py_INCREF(self); /* held by the core until connection_lost */
    *ud = self;
    tr_link(self);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Creation                                                            */

/* A transport object not yet bound to a core transport. `sock` (the
 * Python socket) may be NULL: it is then made on demand from the fd. */
/* `context`: taken over (NULL: a copy of the current context, where the
 * stock loop's transports schedule their callbacks). */
static PyObject *transport_alloc_as(PyTypeObject *tp, gflpy_loop *loop, PyObject *protocol, PyObject *sock,
                                    PyObject *extra, PyObject *waiter, PyObject *context)
{
    if (!context && !(context = PyContext_CopyCurrent()))
        return NULL;
    PyObject *self = tp->tp_alloc(tp, 0);
    if (!self) {
        Py_DECREF(context);
        return NULL;
    }
    tr *s = TR(self);
    s->context = context;
    s->sock_fd = -1;
    Py_INCREF(loop);
    s->loop = loop;
    Py_XINCREF(sock);
    s->sock = sock;
    s->extra = PyDict_New();
    if (!s->extra || (extra && extra != Py_None && PyDict_Update(s->extra, extra) < 0))
        goto fail;
    Py_INCREF(s->extra);
    Py_XSETREF(GFLPY_SLOT(self, extra_off), s->extra);
    if (bind_protocol(self, protocol) < 0)
        goto fail;
    if (waiter && waiter != Py_None) {
        Py_INCREF(waiter);
        s->waiter = waiter;
    }
    return self;
fail:
    Py_DECREF(self);
    return NULL;
}

static PyObject *transport_alloc(gflpy_loop *loop, PyObject *protocol, PyObject *sock, PyObject *extra, PyObject *waiter)
{
    return transport_alloc_as(gflpy_StreamTransportType, loop, protocol, sock, extra, waiter, NULL);
}

/* The asyncio Server that owns the connection: Server._attach(). */
static int attach_server(PyObject *self, PyObject *server)
{
    if (!server || server == Py_None)
        return 0;
    Py_INCREF(server);
    TR(self)->server = server;
#if PY_VERSION_HEX >= 0x030D0000
    PyObject *r = call_method(server, s_attach, self);
#else
    PyObject *r = call_method(server, s_attach, NULL);
#endif
    if (!r) {
        Py_CLEAR(TR(self)->server);
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* A socket address as the socket module returns it: (host, port) for
 * IPv4, (host, port, flowinfo, scope_id) for IPv6, the path for Unix
 * sockets (bytes for abstract names, '' when unnamed). NULL: unknown. */
PyObject *gflpy_sockaddr_to_py(const struct sockaddr *sa, size_t len)
{
    char host[INET6_ADDRSTRLEN];
    if (sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *in = (const void *)sa;
        if (!inet_ntop(AF_INET, &in->sin_addr, host, sizeof host))
            return NULL;
        return Py_BuildValue("(si)", host, ntohs(in->sin_port));
    }
    if (sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *in6 = (const void *)sa;
        if (!inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host))
            return NULL;
        return Py_BuildValue("(siII)", host, ntohs(in6->sin6_port), (unsigned)ntohl(in6->sin6_flowinfo),
                             (unsigned)in6->sin6_scope_id);
    }
    if (sa->sa_family == AF_UNIX) {
        const struct sockaddr_un *un = (const void *)sa;
        size_t off = offsetof(struct sockaddr_un, sun_path);
        if (len <= off)
            return PyUnicode_FromString("");
        size_t n = len - off;
        if (un->sun_path[0] == '\0')
            return PyBytes_FromStringAndSize(un->sun_path, (Py_ssize_t)n);
        return PyUnicode_DecodeFSDefaultAndSize(un->sun_path, (Py_ssize_t)strnlen(un->sun_path, n));
    }
    return NULL;
}

/* asyncio fills sockname/peername when a transport is made, and they
 * still answer once the connection is closed: the raw addresses are read
 * now (no Python objects), converted when get_extra_info asks. */
static void capture_addresses(tr *s, gfl_transport *t)
{
    for (int peer = 0; peer < 2; peer++) {
        size_t len = sizeof s->addr[peer];
        if (API->transport_get_sockaddr(t, peer, &s->addr[peer], &len) == 0 && len <= sizeof s->addr[peer])
            s->addr_len[peer] = len;
    }
}

/* get_extra_info('sockname' / 'peername') from the captured address:
 * a new reference, NULL without exception when none was captured. */
static PyObject *captured_address(tr *s, int peer)
{
    if (!s->addr_len[peer])
        return NULL;
    PyObject *v = gflpy_sockaddr_to_py((struct sockaddr *)&s->addr[peer], s->addr_len[peer]);
    if (!v) {
        if (PyErr_Occurred())
            return NULL;
        v = Py_None;
        Py_INCREF(v);
    }
    PyObject *name = peer ? s_peername : s_sockname;
    if (PyDict_SetItem(s->extra, name, v) < 0) {
        Py_DECREF(v);
        return NULL;
    }
    return v;
}

int gflpy_transport_accepted(gflpy_loop *loop, gfl_transport *t, PyObject *protocol, PyObject *server,
                             PyObject *context, const gfl_protocol **proto, void **ud)
{
    if (!gflpy_StreamTransportType) {
        Py_XDECREF(context);
        PyErr_SetString(PyExc_RuntimeError, "globeflower._core not set up");
        return -1;
    }
    PyObject *self = transport_alloc_as(gflpy_StreamTransportType, loop, protocol, NULL, NULL, NULL, context);
    if (!self)
        return -1;
    capture_addresses(TR(self), t);
    if (attach_server(self, server) < 0) {
        Py_DECREF(self);
        return -1;
    }
    factory(self, t, proto, ud); /* the core now holds `self` */
    Py_DECREF(self);
    return 0;
}

/* Fails with the core future's error, or a generic one. */
static int check_open_future(gfl_future *f)
{
    if (!f) {
        PyErr_SetString(PyExc_OSError, "globeflower: cannot make a transport on this file descriptor");
        return -1;
    }
    if (API->future_state_of(f) == GFL_FUTURE_ERROR) {
        PyObject *e = gflpy_exception_from_value(API->future_value(f));
        API->future_unref(f);
        if (e) {
            PyErr_SetObject((PyObject *)Py_TYPE(e), e);
            Py_DECREF(e);
        }
        return -1;
    }
    API->future_unref(f);
    return 0;
}

/* loop._make_read_pipe_transport / _make_write_pipe_transport(pipe,
 * protocol, waiter=None, extra=None): asyncio's pipe transports (also used
 * for a subprocess's stdin/stdout/stderr) on the core's. The core gets a
 * dup() of the fd; the pipe object is get_extra_info('pipe') and is closed
 * after connection_lost, as asyncio does. */
static PyObject *make_pipe_transport(gflpy_loop *loop, PyObject *args, PyObject *kw, int write)
{
    static char *kwlist[] = {"pipe", "protocol", "waiter", "extra", NULL};
    PyObject *pipe, *protocol, *waiter = Py_None, *extra = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|OO", kwlist, &pipe, &protocol, &waiter, &extra))
        return NULL;
    if (!gflpy_StreamTransportType)
        return PyErr_Format(PyExc_RuntimeError, "globeflower._core not set up");
    if (loop->closed || !loop->core)
        return gflpy_raise(GFL_ECLOSED);
    int pfd = PyObject_AsFileDescriptor(pipe);
    if (pfd < 0)
        return NULL;
    struct stat st;
    if (fstat(pfd, &st) < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    if (!S_ISFIFO(st.st_mode) && !S_ISSOCK(st.st_mode) && !S_ISCHR(st.st_mode))
        return PyErr_Format(PyExc_ValueError, "Pipe transport is only for pipes, sockets and character devices");
    PyTypeObject *tp = write ? write_pipe_type : read_pipe_type;
    PyObject *self = transport_alloc_as(tp ? tp : gflpy_StreamTransportType, loop, protocol, pipe, extra, waiter, NULL);
    if (!self)
        return NULL;
    tr *s = TR(self);
    s->is_pipe = 1;
    s->sock_fd = pfd;
    if (PyDict_SetItemString(s->extra, "pipe", pipe) < 0)
        goto fail;
    int fd = dup(pfd);
    if (fd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        goto fail;
    }
    gfl_future *f = write ? API->connect_write_pipe(loop->core, factory, self, NULL, fd)
                          : API->connect_read_pipe(loop->core, factory, self, NULL, fd);
    if (!f)
        close(fd);
    if (check_open_future(f) < 0)
        goto fail;
    return self;
fail:
    Py_DECREF(self);
    return NULL;
}

PyObject *gflpy_make_read_pipe_transport(gflpy_loop *loop, PyObject *args, PyObject *kw)
{
    return make_pipe_transport(loop, args, kw, 0);
}

PyObject *gflpy_make_write_pipe_transport(gflpy_loop *loop, PyObject *args, PyObject *kw)
{
    return make_pipe_transport(loop, args, kw, 1);
}

PyObject *gflpy_make_socket_transport(gflpy_loop *loop, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *names[] = {"sock", "protocol", "waiter", "extra", "server"};
    PyObject *a[5] = {NULL, NULL, Py_None, Py_None, Py_None};
    if (nargs > 5)
        return PyErr_Format(PyExc_TypeError, "_make_socket_transport: too many arguments");
    for (Py_ssize_t i = 0; i < nargs; i++)
        a[i] = args[i];
    Py_ssize_t nk = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t i = 0; i < nk; i++) {
        PyObject *k = PyTuple_GET_ITEM(kwnames, i);
        int j;
        for (j = 0; j < 5; j++)
            if (PyUnicode_CompareWithASCIIString(k, names[j]) == 0)
                break;
        if (j == 5)
            return PyErr_Format(PyExc_TypeError, "_make_socket_transport: unexpected keyword %U", k);
        a[j] = args[nargs + i];
    }
    if (!a[0] || !a[1])
        return PyErr_Format(PyExc_TypeError, "_make_socket_transport needs sock and protocol");
    if (!gflpy_StreamTransportType)
        return PyErr_Format(PyExc_RuntimeError, "globeflower._core not set up");
    if (loop->closed || !loop->core)
        return gflpy_raise(GFL_ECLOSED);

    int sfd = PyObject_AsFileDescriptor(a[0]);
    if (sfd < 0)
        return NULL;
    PyObject *self = transport_alloc(loop, a[1], a[0], a[3], a[2]);
    if (!self)
        return NULL;
    tr *s = TR(self);
    s->sock_fd = sfd;
    /* asyncio's loop._transports: fd -> transport, for the "fd in use"
     * checks of add_reader & co. */
    PyObject *reg = PyObject_GetAttrString((PyObject *)loop, "_transports");
    if (reg) {
        PyObject *key = PyLong_FromLong(sfd);
        int rc = key ? PyObject_SetItem(reg, key, self) : -1;
        Py_XDECREF(key);
        Py_DECREF(reg);
        if (rc < 0)
            goto fail;
    } else {
        PyErr_Clear();
    }
    int fd = dup(sfd);
    if (fd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        goto fail;
    }
    gfl_future *f = API->connect_socket(loop->core, factory, self, NULL, fd);
    if (!f) {
        close(fd);
        PyErr_SetString(PyExc_OSError, "globeflower: cannot make a transport on this socket");
        goto fail;
    }
    if (API->future_state_of(f) == GFL_FUTURE_ERROR) {
        PyObject *e = gflpy_exception_from_value(API->future_value(f));
        API->future_unref(f);
        if (e) {
            PyErr_SetObject((PyObject *)Py_TYPE(e), e);
            Py_DECREF(e);
        }
        goto fail;
    }
    API->future_unref(f);
    if (s->t)
        capture_addresses(s, s->t);
    if (attach_server(self, a[4]) < 0)
        goto fail;
    return self;
fail:
    Py_DECREF(self);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Methods                                                             */

static int closed_check(tr *s)
{
    return !s->t || s->lost;
}

/* ------------------------------------------------------------------ */
/* Write batching (see tr.pending)                                      */

static void pending_release(tr *s)
{
    int n = s->npending;
    s->npending = 0;
    s->pending_size = 0;
    for (int i = 0; i < n; i++)
        Py_CLEAR(s->pending[i]);
}

/* Hands the batched writes to the core: what write() would have done. A
 * failure is reported through connection_lost, as for write(). */
static void pending_send(PyObject *self)
{
    tr *s = TR(self);
    int n = s->npending;
    if (!n)
        return;
    gfl_iovec iov[PENDING_MAX];
    PyObject *objs[PENDING_MAX];
    for (int i = 0; i < n; i++) {
        objs[i] = s->pending[i];
        s->pending[i] = NULL;
        iov[i].base = PyBytes_AS_STRING(objs[i]);
        iov[i].len = (size_t)PyBytes_GET_SIZE(objs[i]);
    }
    /* Emptied first: pause_writing (Python) may write again. */
    s->npending = 0;
    s->pending_size = 0;
    if (!closed_check(s))
        (void)API->transport_writev(s->t, iov, n);
    for (int i = 0; i < n; i++)
        Py_DECREF(objs[i]);
}

static int mark_dirty(PyObject *self)
{
    tr *s = TR(self);
    gflpy_loop *loop = s->loop;
    if (loop->ndirty == loop->dirty_cap) {
        Py_ssize_t cap = loop->dirty_cap ? 2 * loop->dirty_cap : 16;
        PyObject **d = PyMem_Realloc(loop->dirty, (size_t)cap * sizeof *d);
        if (!d)
            return -1;
        loop->dirty = d;
        loop->dirty_cap = cap;
    }
    Py_INCREF(self);
    loop->dirty[loop->ndirty++] = self;
    s->dirty = 1;
    return 0;
}

/* write(data) inside a batch: 1 if batched (or sent with the batch),
 * 0 if the caller must write it now. */
static int defer_write(PyObject *self, PyObject *data)
{
    tr *s = TR(self);
    size_t len = (size_t)PyBytes_GET_SIZE(data);
    if (s->npending == 0) {
        /* With data already waiting in the core, a write only appends to
         * it (no syscall to save) and the core pauses the protocol inside
         * write(), as asyncio does. */
        size_t high;
        if (API->transport_get_write_buffer_size(s->t) != 0 ||
            API->transport_get_write_buffer_limits(s->t, &high, NULL) < 0)
            return 0;
        s->pending_room = high;
        /* Checked as a transport starts its batch, so that the pieces of
         * one reply still go out together. */
        if (s->loop->batch_bytes > BATCH_BYTES_MAX)
            gflpy_flush_writes(s->loop);
        if (!s->dirty && mark_dirty(self) < 0)
            return 0;
    }
    Py_INCREF(data);
    s->pending[s->npending++] = data;
    s->pending_size += len;
    s->loop->batch_bytes += len;
    /* Above the high-water mark asyncio pauses the protocol inside write():
     * send now, so the core does. */
    if (s->npending == PENDING_MAX || s->pending_size > s->pending_room)
        pending_send(self);
    return 1;
}

void gflpy_flush_writes(gflpy_loop *loop)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    /* In order; a transport written again meanwhile is appended (and a
     * nested flush takes over the rest, leaving NULLs behind). */
    for (Py_ssize_t i = 0; i < loop->ndirty; i++) {
        PyObject *self = loop->dirty[i];
        if (!self)
            continue;
        loop->dirty[i] = NULL;
        TR(self)->dirty = 0;
        pending_send(self);
        Py_DECREF(self);
    }
    loop->ndirty = 0;
    loop->batch_bytes = 0;
    PyErr_Restore(type, value, tb);
}

void gflpy_drop_writes(gflpy_loop *loop)
{
    loop->batch_bytes = 0;
    while (loop->ndirty > 0) {
        PyObject *self = loop->dirty[--loop->ndirty];
        if (!self)
            continue;
        TR(self)->dirty = 0;
        pending_release(TR(self));
        Py_DECREF(self);
    }
}

static PyObject *t_write(PyObject *self, PyObject *data)
{
    tr *s = TR(self);
    if (!PyBytes_Check(data) && !PyByteArray_Check(data) && !PyMemoryView_Check(data))
        return PyErr_Format(PyExc_TypeError, "data argument must be a bytes-like object, not '%.100s'",
                            Py_TYPE(data)->tp_name);
    if (s->eof)
        return PyErr_Format(PyExc_RuntimeError, "Cannot call write() after write_eof()");
    if (s->dict) {
        /* loop.sendfile() owns the socket meanwhile (see _loop.py) */
        PyObject *w = PyDict_GetItem(s->dict, s_empty_waiter);
        if (w && w != Py_None)
            return PyErr_Format(PyExc_RuntimeError, "unable to write; sendfile is in progress");
    }
    int rc;
    if (PyBytes_Check(data)) {
        if (PyBytes_GET_SIZE(data) == 0 || closed_check(s))
            Py_RETURN_NONE;
        if (s->loop->batch_depth > 0 && defer_write(self, data))
            Py_RETURN_NONE;
        pending_send(self);
        rc = API->transport_write(s->t, PyBytes_AS_STRING(data), (size_t)PyBytes_GET_SIZE(data));
    } else {
        /* Mutable: the caller may change it once write() returns. */
        pending_send(self);
        Py_buffer view;
        if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
            return NULL;
        if (view.len == 0 || closed_check(s)) {
            PyBuffer_Release(&view);
            Py_RETURN_NONE;
        }
        rc = API->transport_write(s->t, view.buf, (size_t)view.len);
        PyBuffer_Release(&view);
    }
    if (rc == GFL_ESTATE)
        return PyErr_Format(PyExc_RuntimeError, "Cannot call write() after write_eof()");
    /* Closed or lost: asyncio drops the data silently; a socket error is
     * reported through connection_lost. */
    Py_RETURN_NONE;
}

static PyObject *t_writelines(PyObject *self, PyObject *seq)
{
    tr *s = TR(self);
    if (s->eof)
        return PyErr_Format(PyExc_RuntimeError, "Cannot call write() after write_eof()");
    PyObject *fast = PySequence_Fast(seq, "writelines() needs an iterable of bytes-like objects");
    if (!fast)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    Py_buffer *views = PyMem_Calloc(n ? (size_t)n : 1, sizeof *views);
    gfl_iovec *iov = PyMem_Calloc(n ? (size_t)n : 1, sizeof *iov);
    Py_ssize_t got = 0;
    PyObject *ret = NULL;
    if (!views || !iov) {
        PyErr_NoMemory();
        goto out;
    }
    for (; got < n; got++) {
        PyObject *item = PySequence_Fast_GET_ITEM(fast, got);
        if (!PyBytes_Check(item) && !PyByteArray_Check(item) && !PyMemoryView_Check(item)) {
            PyErr_Format(PyExc_TypeError, "data argument must be a bytes-like object, not '%.100s'",
                         Py_TYPE(item)->tp_name);
            goto out;
        }
        if (PyObject_GetBuffer(item, &views[got], PyBUF_SIMPLE) < 0)
            goto out;
        iov[got].base = views[got].buf;
        iov[got].len = (size_t)views[got].len;
    }
    pending_send(self);
    if (!closed_check(s)) {
        /* The core takes at most IOV_MAX-ish chunks per call: feed slices. */
        for (Py_ssize_t i = 0; i < n; i += 512) {
            int cnt = (int)(n - i < 512 ? n - i : 512);
            int rc = API->transport_writev(s->t, iov + i, cnt);
            if (rc < 0)
                break;
        }
    }
    Py_INCREF(Py_None);
    ret = Py_None;
out:
    for (Py_ssize_t i = 0; i < got; i++)
        PyBuffer_Release(&views[i]);
    PyMem_Free(views);
    PyMem_Free(iov);
    Py_DECREF(fast);
    return ret;
}

static PyObject *t_write_eof(PyObject *self, PyObject *unused)
{
    (void)unused;
    tr *s = TR(self);
    pending_send(self);
    if (closed_check(s) || s->eof)
        Py_RETURN_NONE;
    if (API->transport_is_closing(s->t) == 1)
        Py_RETURN_NONE;
    s->eof = 1;
    int rc = API->transport_write_eof(s->t);
    if (rc < 0 && rc != GFL_ECLOSED)
        return gflpy_raise(rc);
    Py_RETURN_NONE;
}

static PyObject *t_can_write_eof(PyObject *self, PyObject *unused)
{
    (void)unused;
    tr *s = TR(self);
    if (closed_check(s))
        Py_RETURN_TRUE;
    return PyBool_FromLong(API->transport_can_write_eof(s->t) == 1);
}

static PyObject *t_close(PyObject *self, PyObject *unused)
{
    (void)unused;
    tr *s = TR(self);
    pending_send(self);
    if (!closed_check(s))
        API->transport_close(s->t);
    Py_RETURN_NONE;
}

static PyObject *t_abort(PyObject *self, PyObject *unused)
{
    (void)unused;
    tr *s = TR(self);
    pending_send(self); /* sent, as asyncio's write() would have */
    if (!closed_check(s))
        API->transport_abort(s->t);
    Py_RETURN_NONE;
}

/* asyncio's _force_close(exc): abort, handing `exc` to connection_lost. */
static PyObject *t_force_close(PyObject *self, PyObject *exc)
{
    tr *s = TR(self);
    pending_send(self);
    if (closed_check(s))
        Py_RETURN_NONE;
    if (exc != Py_None && !s->lost_exc && API->transport_is_closing(s->t) != 1) {
        Py_INCREF(exc);
        s->lost_exc = exc;
    }
    API->transport_abort(s->t);
    Py_RETURN_NONE;
}

static PyObject *t_is_closing(PyObject *self, PyObject *unused)
{
    (void)unused;
    tr *s = TR(self);
    if (s->orphaned)
        Py_RETURN_FALSE; /* as asyncio's, which loop.close() leaves open */
    if (closed_check(s))
        Py_RETURN_TRUE;
    return PyBool_FromLong(API->transport_is_closing(s->t) != 0);
}

static PyObject *t_pause_reading(PyObject *self, PyObject *unused)
{
    (void)unused;
    tr *s = TR(self);
    if (!closed_check(s))
        API->transport_pause_reading(s->t);
    Py_RETURN_NONE;
}

static PyObject *t_resume_reading(PyObject *self, PyObject *unused)
{
    (void)unused;
    tr *s = TR(self);
    if (!closed_check(s) && API->transport_is_closing(s->t) != 1)
        API->transport_resume_reading(s->t);
    Py_RETURN_NONE;
}

static PyObject *t_is_reading(PyObject *self, PyObject *unused)
{
    (void)unused;
    tr *s = TR(self);
    if (closed_check(s) || API->transport_is_closing(s->t) == 1)
        Py_RETURN_FALSE;
    return PyBool_FromLong(API->transport_is_reading(s->t) == 1);
}

static PyObject *t_set_write_buffer_limits(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"high", "low", NULL};
    PyObject *ho = Py_None, *lo = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|OO:set_write_buffer_limits", kwlist, &ho, &lo))
        return NULL;
    long long high = -1, low = -1;
    if (ho != Py_None && (high = PyLong_AsLongLong(ho)) == -1 && PyErr_Occurred())
        return NULL;
    if (lo != Py_None && (low = PyLong_AsLongLong(lo)) == -1 && PyErr_Occurred())
        return NULL;
    /* asyncio's defaults and check, for its exact error message. */
    if (ho == Py_None)
        high = lo == Py_None ? 64 * 1024 : 4 * low;
    if (lo == Py_None)
        low = high / 4;
    if (!(high >= low && low >= 0))
        return PyErr_Format(PyExc_ValueError, "high (%lld) must be >= low (%lld) must be >= 0", high, low);
    tr *s = TR(self);
    pending_send(self);
    if (!closed_check(s)) {
        int rc = API->transport_set_write_buffer_limits(s->t, high, low);
        if (rc < 0)
            return gflpy_raise(rc);
    }
    Py_RETURN_NONE;
}

static PyObject *t_get_write_buffer_limits(PyObject *self, PyObject *unused)
{
    (void)unused;
    tr *s = TR(self);
    size_t high = 64 * 1024, low = 16 * 1024;
    if (!closed_check(s))
        API->transport_get_write_buffer_limits(s->t, &high, &low);
    return Py_BuildValue("(nn)", (Py_ssize_t)low, (Py_ssize_t)high);
}

static PyObject *t_get_write_buffer_size(PyObject *self, PyObject *unused)
{
    (void)unused;
    tr *s = TR(self);
    pending_send(self);
    int64_t n = closed_check(s) ? 0 : API->transport_get_write_buffer_size(s->t);
    return PyLong_FromLongLong(n < 0 ? 0 : n);
}

/* Lazily computed: most connections never ask. */
/* A Python socket for a transport the core accepted: a dup() of its fd,
 * closed after connection_lost like a user's socket. */
static int make_sock(tr *s)
{
    if (s->sock)
        return 0;
    if (closed_check(s))
        return -1;
    int cfd = API->transport_fileno(s->t);
    int fd = cfd >= 0 ? dup(cfd) : -1;
    if (fd < 0)
        return -1;
    PyObject *mod = PyImport_ImportModule("socket");
    /* family/type/proto -1: read from the fd, as socket.socket(fileno=) does */
    PyObject *sock = mod ? PyObject_CallMethod(mod, "socket", "iiii", -1, -1, -1, fd) : NULL;
    Py_XDECREF(mod);
    if (!sock) {
        close(fd);
        PyErr_Clear();
        return -1;
    }
    /* Non-blocking as the stock loop's sockets are (sock_sendfile and debug
     * mode check gettimeout() == 0); the fd already is. */
    PyObject *r = PyObject_CallMethod(sock, "setblocking", "O", Py_False);
    if (!r) {
        PyErr_Clear();
        Py_DECREF(sock); /* closes the dup() */
        return -1;
    }
    Py_DECREF(r);
    s->sock = sock;
    s->own_sock = 1;
    return 0;
}

static PyObject *lazy_extra(PyObject *self, PyObject *name)
{
    tr *s = TR(self);
    if (!s->is_pipe) {
        int peer = name == s_peername || PyUnicode_Compare(name, s_peername) == 0;
        if (peer || name == s_sockname || PyUnicode_Compare(name, s_sockname) == 0) {
            PyObject *v = captured_address(s, peer);
            if (v || PyErr_Occurred())
                return v;
        }
    }
    if (s->lost || s->is_pipe)
        return NULL;
    /* Only these names make the socket (a dup and 3 syscalls): others,
     * like streams' 'sslcontext', just get the default. */
    int which = PyUnicode_CompareWithASCIIString(name, "socket") == 0     ? 1
                : PyUnicode_CompareWithASCIIString(name, "sockname") == 0 ? 2
                : PyUnicode_CompareWithASCIIString(name, "peername") == 0 ? 3
                                                                          : 0;
    if (!which || make_sock(s) < 0)
        return NULL;
    PyObject *v;
    if (which == 1)
        v = PyObject_CallOneArg(gflpy.TransportSocket, s->sock);
    else
        v = PyObject_CallMethod(s->sock, which == 2 ? "getsockname" : "getpeername", NULL);
    if (!v) {
        if (!PyErr_ExceptionMatches(PyExc_OSError))
            return NULL;
        PyErr_Clear();
        v = Py_None;
        Py_INCREF(v);
    }
    if (PyDict_SetItem(s->extra, name, v) < 0) {
        Py_DECREF(v);
        return NULL;
    }
    return v;
}

static PyObject *t_get_extra_info(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"name", "default", NULL};
    PyObject *name, *dflt = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|O:get_extra_info", kwlist, &name, &dflt))
        return NULL;
    tr *s = TR(self);
    PyObject *v = s->extra ? PyDict_GetItemWithError(s->extra, name) : NULL;
    if (v) {
        Py_INCREF(v);
        return v;
    }
    if (PyErr_Occurred())
        return NULL;
    if (PyUnicode_Check(name)) {
        v = lazy_extra(self, name);
        if (v)
            return v;
        if (PyErr_Occurred())
            return NULL;
    }
    Py_INCREF(dflt);
    return dflt;
}

static PyObject *t_set_protocol(PyObject *self, PyObject *protocol)
{
    tr *s = TR(self);
    if (bind_protocol(self, protocol) < 0)
        return NULL;
    if (!closed_check(s)) {
        int rc = API->transport_set_protocol(s->t, s->buffered ? &buffered_proto : &plain_proto, self);
        if (rc < 0 && rc != GFL_ECLOSED)
            return gflpy_raise(rc);
    }
    Py_RETURN_NONE;
}

static PyObject *t_get_protocol(PyObject *self, PyObject *unused)
{
    (void)unused;
    tr *s = TR(self);
    PyObject *p = s->protocol ? s->protocol : Py_None;
    Py_INCREF(p);
    return p;
}

static PyObject *t_repr(PyObject *self)
{
    tr *s = TR(self);
    if (s->orphaned)
        return PyUnicode_FromFormat("<%s fd=%d open>", Py_TYPE(self)->tp_name, s->sock_fd);
    const char *state = closed_check(s) ? "closed" : (API->transport_is_closing(s->t) == 1 ? "closing" : "open");
    int fd = closed_check(s) ? -1 : API->transport_fileno(s->t);
    long long buf = closed_check(s) ? 0 : (long long)API->transport_get_write_buffer_size(s->t);
    return PyUnicode_FromFormat("<%s fd=%d %s bufsize=%lld>", Py_TYPE(self)->tp_name, fd, state, buf);
}

/* Private attributes some asyncio internals read. */
static PyObject *get_loop_attr(PyObject *self, void *c)
{
    (void)c;
    tr *s = TR(self);
    PyObject *l = s->lost || !s->loop ? Py_None : (PyObject *)s->loop;
    Py_INCREF(l);
    return l;
}

static PyObject *get_sock_attr(PyObject *self, void *c)
{
    (void)c;
    tr *s = TR(self);
    if (s->is_pipe)
        Py_RETURN_NONE;
    if (!s->lost)
        make_sock(s);
    PyObject *l = s->lost || !s->sock ? Py_None : s->sock;
    Py_INCREF(l);
    return l;
}

static PyObject *get_protocol_attr(PyObject *self, void *c)
{
    return t_get_protocol(self, c);
}

static PyObject *get_protocol_paused_attr(PyObject *self, void *c)
{
    (void)c;
    return PyBool_FromLong(TR(self)->protocol_paused);
}

static PyObject *get_sock_fd_attr(PyObject *self, void *c)
{
    (void)c;
    tr *s = TR(self);
    if (s->sock_fd < 0 && make_sock(s) == 0)
        s->sock_fd = PyObject_AsFileDescriptor(s->sock);
    if (s->sock_fd < 0)
        PyErr_Clear();
    return PyLong_FromLong(s->sock_fd);
}

static PyGetSetDef t_getset[] = {
    {"_loop", get_loop_attr, NULL, NULL, NULL},
    {"_sock", get_sock_attr, NULL, NULL, NULL},
    {"_protocol", get_protocol_attr, NULL, NULL, NULL},
    {"_sock_fd", get_sock_fd_attr, NULL, NULL, NULL},
    {"_protocol_paused", get_protocol_paused_attr, NULL, NULL, NULL},
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef t_methods[] = {
    {"write", t_write, METH_O, NULL},
    {"writelines", t_writelines, METH_O, NULL},
    {"write_eof", t_write_eof, METH_NOARGS, NULL},
    {"can_write_eof", t_can_write_eof, METH_NOARGS, NULL},
    {"close", t_close, METH_NOARGS, NULL},
    {"abort", t_abort, METH_NOARGS, NULL},
    {"_force_close", t_force_close, METH_O, NULL},
    {"is_closing", t_is_closing, METH_NOARGS, NULL},
    {"pause_reading", t_pause_reading, METH_NOARGS, NULL},
    {"resume_reading", t_resume_reading, METH_NOARGS, NULL},
    {"is_reading", t_is_reading, METH_NOARGS, NULL},
    {"set_write_buffer_limits", (PyCFunction)(void (*)(void))t_set_write_buffer_limits, METH_VARARGS | METH_KEYWORDS, NULL},
    {"get_write_buffer_limits", t_get_write_buffer_limits, METH_NOARGS, NULL},
    {"get_write_buffer_size", t_get_write_buffer_size, METH_NOARGS, NULL},
    {"get_extra_info", (PyCFunction)(void (*)(void))t_get_extra_info, METH_VARARGS | METH_KEYWORDS, NULL},
    {"set_protocol", t_set_protocol, METH_O, NULL},
    {"get_protocol", t_get_protocol, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

/* ------------------------------------------------------------------ */
/* GC and deallocation                                                 */

static int t_traverse(PyObject *self, visitproc visit, void *arg)
{
    tr *s = TR(self);
    Py_VISIT(Py_TYPE(self));
    for (int i = 0; i < nbase_slots; i++)
        Py_VISIT(GFLPY_SLOT(self, base_slots[i]));
    Py_VISIT(s->loop);
    Py_VISIT(s->protocol);
    Py_VISIT(s->sock);
    Py_VISIT(s->server);
    Py_VISIT(s->waiter);
    Py_VISIT(s->extra);
    Py_VISIT(s->lost_exc);
    Py_VISIT(s->m_data_received);
    Py_VISIT(s->m_get_buffer);
    Py_VISIT(s->m_buffer_updated);
    Py_VISIT(s->dict);
    Py_VISIT(s->context);
    for (int i = 0; i < s->npending; i++)
        Py_VISIT(s->pending[i]);
    return 0;
}

static int t_clear(PyObject *self)
{
    tr *s = TR(self);
    for (int i = 0; i < nbase_slots; i++)
        Py_CLEAR(GFLPY_SLOT(self, base_slots[i]));
    Py_CLEAR(s->protocol);
    Py_CLEAR(s->sock);
    Py_CLEAR(s->server);
    Py_CLEAR(s->waiter);
    Py_CLEAR(s->extra);
    Py_CLEAR(s->lost_exc);
    Py_CLEAR(s->m_data_received);
    Py_CLEAR(s->m_get_buffer);
    Py_CLEAR(s->m_buffer_updated);
    Py_CLEAR(s->dict);
    Py_CLEAR(s->context);
    pending_release(s);
    return 0;
}

static void t_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    tr *s = TR(self);
    PyObject_GC_UnTrack(self);
    if (s->weakreflist)
        PyObject_ClearWeakRefs(self);
    release_buf(s);
    if (s->t) {
        /* Unreachable while the core still calls us (it holds a reference
         * until connection_lost), so this only drops our own. */
        API->transport_unref(s->t);
        s->t = NULL;
    }
    t_clear(self);
    Py_CLEAR(s->loop);
    tp->tp_free(self);
    Py_DECREF(tp);
}

/* ------------------------------------------------------------------ */
/* Type creation (called from _setup with asyncio.Transport)            */

static PyMemberDef t_members[3];

int gflpy_transport_make_type(PyObject *base)
{
    if (gflpy_StreamTransportType)
        return 0;
    if (!PyType_Check(base)) {
        PyErr_SetString(PyExc_TypeError, "Transport base must be a class");
        return -1;
    }
    PyObject *d = PyObject_GetAttrString(base, "_extra");
    if (!d)
        return -1;
    if (Py_TYPE(d) != &PyMemberDescr_Type) {
        Py_DECREF(d);
        PyErr_SetString(PyExc_TypeError, "asyncio.BaseTransport._extra is not a slot");
        return -1;
    }
    extra_off = ((PyMemberDescrObject *)d)->d_member->offset;
    Py_DECREF(d);
    /* Collect the object slots of every class in the base's MRO. */
    PyObject *mro = ((PyTypeObject *)base)->tp_mro;
    for (Py_ssize_t i = 0; mro && i < PyTuple_GET_SIZE(mro); i++) {
        PyObject *cd = ((PyTypeObject *)PyTuple_GET_ITEM(mro, i))->tp_dict;
        PyObject *k, *v;
        Py_ssize_t pos = 0;
        while (cd && PyDict_Next(cd, &pos, &k, &v)) {
            if (Py_TYPE(v) != &PyMemberDescr_Type)
                continue;
            PyMemberDef *md = ((PyMemberDescrObject *)v)->d_member;
            if (md->type == T_OBJECT_EX && nbase_slots < MAX_BASE_SLOTS)
                base_slots[nbase_slots++] = md->offset;
        }
    }
    Py_ssize_t basesize = ((PyTypeObject *)base)->tp_basicsize;
    tr_off = (basesize + (Py_ssize_t)_Alignof(max_align_t) - 1) & ~((Py_ssize_t)_Alignof(max_align_t) - 1);
    t_members[0] = (PyMemberDef){"__dictoffset__", T_PYSSIZET, tr_off + offsetof(tr, dict), READONLY, NULL};
    t_members[1] = (PyMemberDef){"__weaklistoffset__", T_PYSSIZET, tr_off + offsetof(tr, weakreflist), READONLY, NULL};
    t_members[2] = (PyMemberDef){NULL, 0, 0, 0, NULL};
    static PyType_Slot slots[] = {
        {Py_tp_dealloc, t_dealloc},
        {Py_tp_traverse, t_traverse},
        {Py_tp_clear, t_clear},
        {Py_tp_methods, t_methods},
        {Py_tp_members, t_members},
        {Py_tp_getset, t_getset},
        {Py_tp_repr, t_repr},
        {Py_tp_doc, "A stream transport (TCP or Unix socket) on the globeflower core."},
        {0, NULL},
    };
    static PyType_Spec spec = {
        "globeflower._core.StreamTransport", 0, 0,
        Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE, slots,
    };
    spec.basicsize = (int)(tr_off + (Py_ssize_t)sizeof(tr));
    PyObject *bases = PyTuple_Pack(1, base);
    if (!bases)
        return -1;
    gflpy_StreamTransportType = (PyTypeObject *)PyType_FromSpecWithBases(&spec, bases);
    Py_DECREF(bases);
    /* No instances from Python: they are made by the loop. */
    if (gflpy_StreamTransportType)
        gflpy_StreamTransportType->tp_new = NULL;
    return gflpy_StreamTransportType ? 0 : -1;
}

/* _setup's ReadPipeTransport / WritePipeTransport (optional). */
int gflpy_transport_set_pipe_types(PyObject *read_type, PyObject *write_type)
{
    PyObject *types[2] = {read_type, write_type};
    for (int i = 0; i < 2; i++)
        if (types[i] && (!PyType_Check(types[i]) ||
                         !PyType_IsSubtype((PyTypeObject *)types[i], gflpy_StreamTransportType))) {
            PyErr_SetString(PyExc_TypeError, "pipe transport types must subclass StreamTransport");
            return -1;
        }
    Py_XINCREF(read_type);
    Py_XSETREF(read_pipe_type, (PyTypeObject *)read_type);
    Py_XINCREF(write_type);
    Py_XSETREF(write_pipe_type, (PyTypeObject *)write_type);
    return 0;
}

int gflpy_transport_init_type(PyObject *module)
{
    (void)module;
    return intern_names();
}

/* ------------------------------------------------------------------ */
/* Client connections and DNS on the core (loop.create_connection's     */
/* plain-TCP path, loop.getaddrinfo, loop.getnameinfo; see _loop.py)    */

/* One core operation completing an asyncio future. Shared by the core's
 * done callback and the Python handle (a capsule, for cancel): freed when
 * both let go. */
typedef struct core_op {
    int refs;
    int kind; /* 0: connection, 1: getaddrinfo, 2: getnameinfo */
    gflpy_loop *loop;
    PyObject *fut;       /* asyncio future */
    PyObject *factory;   /* protocol_factory (connections) */
    PyObject *transport; /* made by the factory */
    PyObject *protocol;
    PyObject *error;     /* raised by the protocol factory */
    PyObject *context;   /* where create_connection was called (connections) */
    int canon;           /* AI_CANONNAME was asked */
    gfl_future *cf;      /* NULL once done */
} core_op;

static void op_unref(core_op *op)
{
    if (--op->refs > 0)
        return;
    Py_XDECREF(op->loop);
    Py_XDECREF(op->fut);
    Py_XDECREF(op->factory);
    Py_XDECREF(op->transport);
    Py_XDECREF(op->protocol);
    Py_XDECREF(op->error);
    Py_XDECREF(op->context);
    PyMem_Free(op);
}

static void op_capsule_free(PyObject *cap)
{
    core_op *op = PyCapsule_GetPointer(cap, "globeflower.core_op");
    if (op)
        op_unref(op);
}

static int connect_factory_body(core_op *op, gfl_transport *t, const gfl_protocol **proto, void **ud);

static int connect_factory(void *fud, gfl_transport *t, const gfl_protocol **proto, void **ud)
{
    core_op *op = fud;
    gflpy_entry e;
    if (gflpy_gil_enter(&e) < 0)
        return GFL_ECANCELED; /* the interpreter is gone */
    if (!op->loop->core) {
        gflpy_leave(&e); /* the loop closed meanwhile: refuse the connection */
        return GFL_ECANCELED;
    }
    gflpy_loop_enter(op->loop, &e);
    int rc = connect_factory_body(op, t, proto, ud);
    gflpy_leave(&e);
    return rc;
}

static int connect_factory_body(core_op *op, gfl_transport *t, const gfl_protocol **proto, void **ud)
{
    /* The factory and the transport's callbacks: in create_connection's
     * context, as on the stock loop. */
    PyObject *ctx = gflpy_context_enter(op->context);
    PyObject *protocol = PyObject_CallNoArgs(op->factory);
    gflpy_context_exit(ctx);
    if (protocol)
        Py_XINCREF(op->context); /* for the transport */
    if (!protocol || gflpy_transport_accepted(op->loop, t, protocol, NULL, op->context, proto, ud) < 0) {
        Py_XDECREF(protocol);
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        if (tb && value)
            PyException_SetTraceback(value, tb);
        Py_XDECREF(tb);
        Py_XDECREF(type);
        Py_XSETREF(op->error, value);
        return GFL_EIO;
    }
    Py_XSETREF(op->protocol, protocol);
    Py_INCREF((PyObject *)*ud);
    Py_XSETREF(op->transport, (PyObject *)*ud);
    return 0;
}

static PyObject *addrinfo_to_list(core_op *op, const gfl_addrinfo *ai)
{
    int n = API->addrinfo_count(ai);
    PyObject *list = PyList_New(0);
    const char *canon = API->addrinfo_canonname(ai);
    for (int i = 0; list && i < n; i++) {
        size_t len;
        const void *sa = API->addrinfo_addr(ai, i, &len);
        PyObject *addr = sa ? gflpy_sockaddr_to_py(sa, len) : NULL;
        if (!addr) {
            if (PyErr_Occurred())
                goto fail;
            continue; /* a family the socket module would not show either */
        }
        PyObject *item = Py_BuildValue("(iiisN)", API->addrinfo_family(ai, i), API->addrinfo_socktype(ai, i),
                                       API->addrinfo_protocol(ai, i), (i == 0 && op->canon && canon) ? canon : "",
                                       addr);
        if (!item || PyList_Append(list, item) < 0) {
            Py_XDECREF(item);
            goto fail;
        }
        Py_DECREF(item);
    }
    return list;
fail:
    Py_XDECREF(list);
    return NULL;
}

static void fut_call(PyObject *fut, const char *method, PyObject *arg)
{
    PyObject *name = PyUnicode_FromString(method);
    PyObject *r = name ? PyObject_CallMethodOneArg(fut, name, arg) : NULL;
    Py_XDECREF(name);
    if (r)
        Py_DECREF(r);
    else
        PyErr_WriteUnraisable(fut);
}

static void op_done_body(gfl_future *f, core_op *op);

static void op_done(gfl_future *f, void *arg)
{
    core_op *op = arg;
    gflpy_entry e;
    if (gflpy_gil_enter(&e) < 0)
        return;
    gflpy_loop_enter(op->loop->core ? op->loop : NULL, &e);
    op_done_body(f, op);
    gflpy_leave(&e);
}

static void op_done_body(gfl_future *f, core_op *op)
{
    op->cf = NULL;
    int state = API->future_state_of(f);
    PyObject *r = PyObject_CallMethod(op->fut, "done", NULL);
    int fut_done = r ? PyObject_IsTrue(r) : 1;
    Py_XDECREF(r);
    PyErr_Clear();
    if (state == GFL_FUTURE_RESULT) {
        gfl_value *v = API->future_value(f);
        PyObject *res = NULL;
        if (op->kind == 0) {
            if (op->transport && op->protocol)
                res = PyTuple_Pack(2, op->transport, op->protocol);
            if (fut_done && op->transport) {
                /* abandoned (cancelled) meanwhile: asyncio closes it too */
                PyObject *c = PyObject_CallMethod(op->transport, "close", NULL);
                Py_XDECREF(c);
                PyErr_Clear();
            }
        } else if (op->kind == 1) {
            void *ai;
            if (API->value_get_object(v, API->addrinfo_class(), &ai) == 0)
                res = addrinfo_to_list(op, ai);
        } else {
            void *ni;
            if (API->value_get_object(v, API->nameinfo_class(), &ni) == 0)
                res = Py_BuildValue("(ss)", API->nameinfo_host(ni), API->nameinfo_service(ni));
        }
        if (!res && !PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "globeflower: unexpected core result");
        if (!fut_done) {
            if (res)
                fut_call(op->fut, "set_result", res);
            else {
                PyObject *type, *value, *tb;
                PyErr_Fetch(&type, &value, &tb);
                PyErr_NormalizeException(&type, &value, &tb);
                fut_call(op->fut, "set_exception", value ? value : Py_None);
                Py_XDECREF(type);
                Py_XDECREF(value);
                Py_XDECREF(tb);
            }
        }
        PyErr_Clear();
        Py_XDECREF(res);
    } else if (state == GFL_FUTURE_ERROR && !fut_done) {
        PyObject *e = op->error;
        if (e)
            Py_INCREF(e);
        else
            e = gflpy_exception_from_value(API->future_value(f));
        if (e) {
            fut_call(op->fut, "set_exception", e);
            Py_DECREF(e);
        }
        PyErr_Clear();
    } else if (state == GFL_FUTURE_ERROR) {
        (void)API->future_value(f); /* retrieved: nobody waits for it */
    }
    API->future_unref(f);
    op_unref(op);
}

static core_op *op_new(gflpy_loop *loop, PyObject *fut, int kind)
{
    core_op *op = PyMem_Calloc(1, sizeof *op);
    if (!op) {
        PyErr_NoMemory();
        return NULL;
    }
    op->refs = 1;
    op->kind = kind;
    Py_INCREF(loop);
    op->loop = loop;
    Py_INCREF(fut);
    op->fut = fut;
    return op;
}

/* Hands `cf` to `op` (a done callback keeps op alive) and returns the
 * Python handle (a capsule) used for cancelling. */
static PyObject *op_start(core_op *op, gfl_future *cf)
{
    if (!cf) {
        op_unref(op);
        return PyErr_Format(PyExc_OSError, "globeflower: the core refused the operation");
    }
    op->cf = cf;
    op->refs++;
    int rc = API->future_add_done_callback(cf, op_done, op);
    if (rc < 0) {
        op->refs--;
        API->future_cancel(cf, NULL);
        API->future_unref(cf);
        op_unref(op);
        return gflpy_raise(rc);
    }
    PyObject *cap = PyCapsule_New(op, "globeflower.core_op", op_capsule_free);
    if (!cap)
        op_unref(op);
    return cap;
}

static int check_loop(gflpy_loop *loop)
{
    if (loop->closed || !loop->core) {
        PyErr_SetString(PyExc_RuntimeError, "Event loop is closed");
        return -1;
    }
    return 0;
}

/* loop._gfl_connect(fut, protocol_factory, host, port, family, flags,
 *                   local_host, local_port, happy_eyeballs_delay, interleave) */
PyObject *gflpy_loop_connect(gflpy_loop *loop, PyObject *args)
{
    PyObject *fut, *pf;
    const char *host, *port, *lhost, *lport;
    int family, flags, interleave;
    double delay;
    if (!PyArg_ParseTuple(args, "OOssiizzdi", &fut, &pf, &host, &port, &family, &flags, &lhost, &lport, &delay,
                          &interleave))
        return NULL;
    if (check_loop(loop) < 0)
        return NULL;
    core_op *op = op_new(loop, fut, 0);
    if (!op)
        return NULL;
    Py_INCREF(pf);
    op->factory = pf;
    if (!(op->context = PyContext_CopyCurrent())) {
        op_unref(op);
        return NULL;
    }
    gfl_connect_options o = {.size = sizeof o, .host = host, .port = port, .family = family, .flags = flags,
                             .local_host = lhost, .local_port = lport,
                             .happy_eyeballs_delay = delay, .interleave = interleave};
    if (lhost || lport) {
        o.local_host = lhost ? lhost : NULL;
        o.local_port = lport ? lport : "0";
    }
    return op_start(op, API->create_connection(loop->core, connect_factory, op, NULL, &o));
}

/* loop._gfl_getaddrinfo(fut, host, port, family, type, proto, flags):
 * the future gets [(family, type, proto, canonname, sockaddr)] with ints. */
PyObject *gflpy_loop_getaddrinfo(gflpy_loop *loop, PyObject *args)
{
    PyObject *fut;
    const char *host, *port;
    int family, type, proto, flags;
    if (!PyArg_ParseTuple(args, "Ozziiii", &fut, &host, &port, &family, &type, &proto, &flags))
        return NULL;
    if (check_loop(loop) < 0)
        return NULL;
    core_op *op = op_new(loop, fut, 1);
    if (!op)
        return NULL;
    op->canon = (flags & AI_CANONNAME) != 0;
    return op_start(op, API->getaddrinfo(loop->core, host, port, family, type, proto, flags));
}

/* loop._gfl_getnameinfo(fut, family, host, port, flowinfo, scope_id, flags):
 * numeric hosts only (the caller checks). */
PyObject *gflpy_loop_getnameinfo(gflpy_loop *loop, PyObject *args)
{
    PyObject *fut;
    const char *host;
    int family, port, flags;
    unsigned int flowinfo, scope;
    if (!PyArg_ParseTuple(args, "OisiIIi", &fut, &family, &host, &port, &flowinfo, &scope, &flags))
        return NULL;
    if (check_loop(loop) < 0)
        return NULL;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    size_t len;
    if (family == AF_INET) {
        struct sockaddr_in *in = (void *)&ss;
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, host, &in->sin_addr) != 1)
            return PyErr_Format(PyExc_ValueError, "not a numeric IPv4 address");
        len = sizeof *in;
    } else {
        struct sockaddr_in6 *in6 = (void *)&ss;
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        in6->sin6_flowinfo = htonl(flowinfo);
        in6->sin6_scope_id = scope;
        if (inet_pton(AF_INET6, host, &in6->sin6_addr) != 1)
            return PyErr_Format(PyExc_ValueError, "not a numeric IPv6 address");
        len = sizeof *in6;
    }
    core_op *op = op_new(loop, fut, 2);
    if (!op)
        return NULL;
    return op_start(op, API->getnameinfo(loop->core, &ss, len, flags));
}

/* _core.op_cancel(handle): abandons the core operation. */
PyObject *gflpy_op_cancel(PyObject *mod, PyObject *cap)
{
    (void)mod;
    core_op *op = PyCapsule_GetPointer(cap, "globeflower.core_op");
    if (!op)
        return NULL;
    if (op->cf)
        API->future_cancel(op->cf, NULL);
    Py_RETURN_NONE;
}
