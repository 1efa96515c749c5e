/*
 * Listening sockets served by the core (asyncio's _start_serving for plain
 * TCP and Unix servers): the core accepts, and each connection gets its
 * protocol from the Python protocol_factory and a StreamTransport, with no
 * Python-level accept loop. asyncio's Server object stays the user-facing
 * one (sockets, serve_forever, close, wait_closed); it reaches us through
 * loop._start_serving / loop._stop_serving (see _loop.py).
 */
#include "gflpy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

typedef struct {
    PyObject_HEAD
    gflpy_loop *loop;
    PyObject *protocol_factory;
    PyObject *server; /* asyncio's Server */
    PyObject *context; /* where the server was started: each connection gets a copy */
    gfl_server *core;
} core_server;

static PyTypeObject *CoreServerType;

static void report_accept_error(core_server *self)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb && value)
        PyException_SetTraceback(value, tb);
    Py_XDECREF(tb);
    Py_XDECREF(type);
    if (value && (PyErr_GivenExceptionMatches(value, PyExc_SystemExit) ||
                  PyErr_GivenExceptionMatches(value, PyExc_KeyboardInterrupt))) {
        PyErr_SetObject((PyObject *)Py_TYPE(value), value);
        Py_DECREF(value);
        gflpy_loop_report(self->loop, NULL);
        return;
    }
    /* asyncio's message for the same failure. */
    PyObject *ctx = Py_BuildValue("{s:s,s:O}", "message", "Error on transport creation for incoming connection",
                                  "exception", value ? value : Py_None);
    Py_XDECREF(value);
    PyObject *r = ctx ? PyObject_CallMethod((PyObject *)self->loop, "call_exception_handler", "O", ctx) : NULL;
    Py_XDECREF(ctx);
    if (r)
        Py_DECREF(r);
    else
        gflpy_loop_report(self->loop, NULL);
}

static int accept_factory_body(core_server *self, gfl_transport *t, const gfl_protocol **proto, void **ud);

/* Core -> Python: the GIL, the running loop while a host pumps, nothing
 * once the interpreter is gone (see gflpy_enter). */
static int accept_factory(void *fud, gfl_transport *t, const gfl_protocol **proto, void **ud)
{
    core_server *self = fud;
    gflpy_entry e;
    if (gflpy_gil_enter(&e) < 0)
        return GFL_ECANCELED;
    int rc = GFL_ECANCELED; /* the loop closed: the core drops the connection */
    if (self->loop && self->loop->core && self->protocol_factory) {
        gflpy_loop_enter(self->loop, &e);
        rc = accept_factory_body(self, t, proto, ud);
    }
    gflpy_leave(&e);
    return rc;
}

static int accept_factory_body(core_server *self, gfl_transport *t, const gfl_protocol **proto, void **ud)
{
    /* As on the stock loop, each connection runs in its own copy of the
     * context the server was started in: the protocol factory and every
     * protocol callback (and what they set stays in that connection). */
    PyObject *context = self->context ? PyContext_Copy(self->context) : PyContext_CopyCurrent();
    if (!context) {
        report_accept_error(self);
        return GFL_EIO;
    }
    PyObject *entered = gflpy_context_enter(context);
    PyObject *protocol = PyObject_CallNoArgs(self->protocol_factory);
    int rc = 0;
    if (!protocol) {
        Py_DECREF(context);
        rc = -1;
    } else if (gflpy_transport_accepted(self->loop, t, protocol, self->server, context, proto, ud) < 0) {
        rc = -1; /* context: taken over, released */
    }
    Py_XDECREF(protocol);
    if (rc < 0)
        report_accept_error(self);
    gflpy_context_exit(entered);
    return rc < 0 ? GFL_EIO : 0; /* GFL_EIO: the core drops the connection */
}

static void factory_release(void *fud)
{
    gflpy_release_object(fud);
}

/* CoreServer(loop, protocol_factory, sock, server, backlog) */
static PyObject *cs_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    (void)kw;
    PyObject *loop, *pf, *sock, *server;
    int backlog = 100;
    if (!PyArg_ParseTuple(args, "O!OOO|i", gflpy_LoopType, &loop, &pf, &sock, &server, &backlog))
        return NULL;
    gflpy_loop *l = (gflpy_loop *)loop;
    if (l->closed || !l->core)
        return gflpy_raise(GFL_ECLOSED);
    int sfd = PyObject_AsFileDescriptor(sock);
    if (sfd < 0)
        return NULL;
    core_server *self = (core_server *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    Py_INCREF(loop);
    self->loop = l;
    Py_INCREF(pf);
    self->protocol_factory = pf;
    Py_INCREF(server);
    self->server = server;
    if (!(self->context = PyContext_CopyCurrent())) {
        Py_DECREF(self);
        return NULL;
    }
    int fd = dup(sfd);
    if (fd < 0) {
        Py_DECREF(self);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    gfl_server_options opts = {.size = sizeof opts, .backlog = backlog > 0 ? backlog : 100};
    Py_INCREF(self); /* the core's, dropped by factory_release */
    self->core = API->server_from_socket(l->core, accept_factory, self, factory_release, fd, &opts);
    if (!self->core) {
        Py_DECREF(self);
        close(fd);
        Py_DECREF(self);
        return PyErr_Format(PyExc_OSError, "globeflower: cannot serve on this socket");
    }
    return (PyObject *)self;
}

static PyObject *cs_close(core_server *self, PyObject *unused)
{
    (void)unused;
    if (self->core) {
        gfl_server *s = self->core;
        self->core = NULL;
        API->server_close(s);
        API->server_unref(s);
    }
    Py_RETURN_NONE;
}

static int cs_traverse(core_server *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->loop);
    Py_VISIT(self->protocol_factory);
    Py_VISIT(self->server);
    Py_VISIT(self->context);
    return 0;
}

static int cs_clear(core_server *self)
{
    Py_CLEAR(self->protocol_factory);
    Py_CLEAR(self->server);
    Py_CLEAR(self->context);
    return 0;
}

static void cs_dealloc(core_server *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->core) {
        API->server_close(self->core);
        API->server_unref(self->core);
        self->core = NULL;
    }
    cs_clear(self);
    Py_CLEAR(self->loop);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyMethodDef cs_methods[] = {
    {"close", (PyCFunction)cs_close, METH_NOARGS, "Stops listening (connections stay)."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot cs_slots[] = {
    {Py_tp_new, cs_new},
    {Py_tp_dealloc, cs_dealloc},
    {Py_tp_traverse, cs_traverse},
    {Py_tp_clear, cs_clear},
    {Py_tp_methods, cs_methods},
    {Py_tp_doc, "A listening socket served by the core (internal)."},
    {0, NULL},
};

static PyType_Spec cs_spec = {
    "globeflower._core.CoreServer",
    sizeof(core_server),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    cs_slots,
};

/* ------------------------------------------------------------------ */
/* Datagram endpoints: the data path of asyncio's datagram transport on  */
/* the core (gfl_datagram_from_socket). The transport object users see is */
/* _loop._DatagramTransport (Python); it owns one CoreDatagram, which     */
/* calls the protocol directly for datagrams and errors and the transport */
/* for the rest (_gfl_made, _gfl_lost, _gfl_pause, _gfl_resume).          */

typedef struct core_dgram {
    PyObject_HEAD
    gflpy_loop *loop;
    PyObject *protocol;
    PyObject *owner; /* the Python transport; cleared after connection_lost */
    PyObject *context; /* where the endpoint was created: the callbacks run in it */
    gfl_transport *t;
} core_dgram;

static PyTypeObject *CoreDatagramType;

static void dg_call_owner(core_dgram *self, const char *method, PyObject *arg)
{
    if (!self->owner)
        return;
    PyObject *owner = self->owner;
    Py_INCREF(owner);
    PyObject *r = arg ? PyObject_CallMethod(owner, method, "(O)", arg) : PyObject_CallMethod(owner, method, NULL);
    Py_DECREF(owner);
    if (r)
        Py_DECREF(r);
    else
        gflpy_loop_report(self->loop, NULL);
}

static void dg_made_body(gfl_transport *t, void *ud)
{
    (void)t;
    dg_call_owner(ud, "_gfl_made", NULL);
}

static void dg_received_body(gfl_transport *t, const void *data, size_t len, const struct sockaddr *addr, socklen_t alen, void *ud)
{
    (void)t;
    core_dgram *self = ud;
    if (!self->protocol)
        return;
    static PyObject *name;
    if (!name && !(name = PyUnicode_InternFromString("datagram_received")))
        return;
    PyObject *b = PyBytes_FromStringAndSize(data, (Py_ssize_t)len);
    PyObject *a = addr && alen ? gflpy_sockaddr_to_py(addr, alen) : NULL;
    if (!a && !PyErr_Occurred()) {
        a = Py_None;
        Py_INCREF(a);
    }
    PyObject *r = NULL;
    if (b && a) {
        PyObject *args[3] = {self->protocol, b, a};
        r = PyObject_VectorcallMethod(name, args, 3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    }
    Py_XDECREF(b);
    Py_XDECREF(a);
    if (r)
        Py_DECREF(r);
    else
        gflpy_loop_report(self->loop, NULL);
}

static void dg_error_body(gfl_transport *t, gfl_value *error, void *ud)
{
    (void)t;
    core_dgram *self = ud;
    PyObject *e = gflpy_exception_from_value(error);
    if (e && self->protocol) {
        PyObject *r = PyObject_CallMethod(self->protocol, "error_received", "(O)", e);
        if (r)
            Py_DECREF(r);
        else
            gflpy_loop_report(self->loop, NULL);
    }
    Py_XDECREF(e);
    PyErr_Clear();
}

static void dg_lost_body(gfl_transport *t, gfl_value *error, void *ud)
{
    (void)t;
    core_dgram *self = ud; /* the core's reference: dropped here */
    PyObject *e = error ? gflpy_exception_from_value(error) : Py_None;
    if (!e) {
        PyErr_Clear();
        e = Py_None;
    }
    if (e == Py_None)
        Py_INCREF(e);
    dg_call_owner(self, "_gfl_lost", e);
    Py_DECREF(e);
    Py_CLEAR(self->owner);
    Py_CLEAR(self->protocol);
    if (self->t) {
        gfl_transport *tt = self->t;
        self->t = NULL;
        API->transport_unref(tt);
    }
    Py_DECREF(self);
}

static void dg_pause_body(gfl_transport *t, void *ud)
{
    (void)t;
    dg_call_owner(ud, "_gfl_pause", NULL);
}

static void dg_resume_body(gfl_transport *t, void *ud)
{
    (void)t;
    dg_call_owner(ud, "_gfl_resume", NULL);
}

/* Core -> Python entry points (see gflpy_enter). */
#define DG_ENTER(ud)                                       \
    gflpy_entry e_;                                        \
    if (gflpy_enter(((core_dgram *)(ud))->loop, &e_) < 0)  \
        return;                                            \
    PyObject *ctx_ = gflpy_context_enter(((core_dgram *)(ud))->context)
#define DG_LEAVE()              \
    gflpy_context_exit(ctx_); \
    gflpy_leave(&e_)

static void dg_made(gfl_transport *t, void *ud)
{
    DG_ENTER(ud);
    dg_made_body(t, ud);
    DG_LEAVE();
}

static void dg_received(gfl_transport *t, const void *data, size_t len, const struct sockaddr *addr, socklen_t alen, void *ud)
{
    DG_ENTER(ud);
    dg_received_body(t, data, len, addr, alen, ud);
    DG_LEAVE();
}

static void dg_error(gfl_transport *t, gfl_value *error, void *ud)
{
    DG_ENTER(ud);
    dg_error_body(t, error, ud);
    DG_LEAVE();
}

static void dg_lost(gfl_transport *t, gfl_value *error, void *ud)
{
    DG_ENTER(ud);
    dg_lost_body(t, error, ud);
    DG_LEAVE();
}

static void dg_pause(gfl_transport *t, void *ud)
{
    DG_ENTER(ud);
    dg_pause_body(t, ud);
    DG_LEAVE();
}

static void dg_resume(gfl_transport *t, void *ud)
{
    DG_ENTER(ud);
    dg_resume_body(t, ud);
    DG_LEAVE();
}

static const gfl_datagram_protocol dg_proto = {
    .size = sizeof(gfl_datagram_protocol),
    .connection_made = dg_made,
    .datagram_received = dg_received,
    .error_received = dg_error,
    .connection_lost = dg_lost,
    .pause_writing = dg_pause,
    .resume_writing = dg_resume,
};

static int dg_factory(void *fud, gfl_transport *t, const gfl_datagram_protocol **proto, void **ud)
{
    core_dgram *self = fud;
    self->t = API->transport_ref(t);
    *proto = &dg_proto;
    Py_INCREF(self); /* the core's, until connection_lost */
    *ud = self;
    return 0;
}

/* CoreDatagram(loop, sock, protocol, owner) */
static PyObject *dg_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    (void)kw;
    PyObject *loop, *sock, *protocol, *owner;
    if (!PyArg_ParseTuple(args, "O!OOO", gflpy_LoopType, &loop, &sock, &protocol, &owner))
        return NULL;
    gflpy_loop *l = (gflpy_loop *)loop;
    if (l->closed || !l->core)
        return gflpy_raise(GFL_ECLOSED);
    int sfd = PyObject_AsFileDescriptor(sock);
    if (sfd < 0)
        return NULL;
    core_dgram *self = (core_dgram *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    Py_INCREF(loop);
    self->loop = l;
    Py_INCREF(protocol);
    self->protocol = protocol;
    Py_INCREF(owner);
    self->owner = owner;
    if (!(self->context = PyContext_CopyCurrent())) {
        Py_DECREF(self);
        return NULL;
    }
    int fd = dup(sfd);
    if (fd < 0) {
        Py_DECREF(self);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    gfl_future *f = API->datagram_from_socket(l->core, dg_factory, self, NULL, fd);
    if (!f) {
        close(fd);
        Py_DECREF(self);
        return PyErr_Format(PyExc_OSError, "globeflower: cannot make a datagram endpoint on this socket");
    }
    if (API->future_state_of(f) == GFL_FUTURE_ERROR) {
        PyObject *e = gflpy_exception_from_value(API->future_value(f));
        API->future_unref(f);
        Py_DECREF(self);
        if (e) {
            PyErr_SetObject((PyObject *)Py_TYPE(e), e);
            Py_DECREF(e);
        }
        return NULL;
    }
    API->future_unref(f);
    return (PyObject *)self;
}

/* A Python address (tuple, or a path for AF_UNIX) as a struct sockaddr;
 * -1 with ValueError when the host is not numeric (the caller resolves). */
static int dg_addr(PyObject *addr, struct sockaddr_storage *ss, socklen_t *len)
{
    memset(ss, 0, sizeof *ss);
    if (PyUnicode_Check(addr) || PyBytes_Check(addr)) {
        PyObject *b = NULL;
        if (PyUnicode_Check(addr) && !PyUnicode_FSConverter(addr, &b))
            return -1;
        PyObject *bb = b ? b : addr;
        struct sockaddr_un *un = (void *)ss;
        Py_ssize_t n = PyBytes_GET_SIZE(bb);
        if ((size_t)n >= sizeof un->sun_path) {
            Py_XDECREF(b);
            PyErr_SetString(PyExc_OSError, "AF_UNIX path too long");
            return -1;
        }
        un->sun_family = AF_UNIX;
        memcpy(un->sun_path, PyBytes_AS_STRING(bb), (size_t)n);
        *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + (size_t)n + (n && PyBytes_AS_STRING(bb)[0] ? 1 : 0));
        Py_XDECREF(b);
        return 0;
    }
    const char *host;
    int port;
    unsigned int flow = 0, scope = 0;
    if (!PyTuple_Check(addr) || !PyArg_ParseTuple(addr, "si|II", &host, &port, &flow, &scope)) {
        PyErr_Clear();
        PyErr_SetString(PyExc_ValueError, "not a numeric address");
        return -1;
    }
    if (port < 0 || port > 65535) {
        PyErr_SetString(PyExc_OverflowError, "port must be 0-65535.");
        return -1;
    }
    struct sockaddr_in *in = (void *)ss;
    struct sockaddr_in6 *in6 = (void *)ss;
    if (PyTuple_GET_SIZE(addr) == 2 && inet_pton(AF_INET, host, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)port);
        *len = sizeof *in;
        return 0;
    }
    if (!strchr(host, '%') && inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        in6->sin6_flowinfo = htonl(flow);
        in6->sin6_scope_id = scope;
        *len = sizeof *in6;
        return 0;
    }
    PyErr_SetString(PyExc_ValueError, "not a numeric address");
    return -1;
}

/* sendto(data, addr_or_None): 0 sent/queued/reported; raises ValueError
 * for an address to resolve first; returns False when closed. */
static PyObject *dg_sendto(core_dgram *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2)
        return PyErr_Format(PyExc_TypeError, "sendto(data, addr)");
    if (!self->t)
        Py_RETURN_FALSE;
    struct sockaddr_storage ss;
    socklen_t alen = 0;
    if (args[1] != Py_None && dg_addr(args[1], &ss, &alen) < 0)
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    int rc = API->datagram_sendto(self->t, view.buf, (size_t)view.len, alen ? (struct sockaddr *)&ss : NULL, alen);
    PyBuffer_Release(&view);
    if (rc == GFL_ECLOSED)
        Py_RETURN_FALSE;
    if (rc == GFL_ENOTCONN)
        return PyErr_Format(PyExc_OSError, "[Errno 89] Destination address required");
    if (rc < 0)
        return gflpy_raise(rc);
    Py_RETURN_TRUE;
}

static PyObject *dg_simple(core_dgram *self, int (*fn)(gfl_transport *))
{
    if (!self->t)
        Py_RETURN_NONE;
    int rc = fn(self->t);
    if (rc < 0 && rc != GFL_ECLOSED)
        return gflpy_raise(rc);
    return PyLong_FromLong(rc < 0 ? 0 : rc);
}

static PyObject *dg_close(core_dgram *self, PyObject *u) { (void)u; return dg_simple(self, API->transport_close); }
static PyObject *dg_abort(core_dgram *self, PyObject *u) { (void)u; return dg_simple(self, API->transport_abort); }
static PyObject *dg_pause_reading(core_dgram *self, PyObject *u) { (void)u; return dg_simple(self, API->transport_pause_reading); }
static PyObject *dg_resume_reading(core_dgram *self, PyObject *u) { (void)u; return dg_simple(self, API->transport_resume_reading); }
static PyObject *dg_is_reading(core_dgram *self, PyObject *u)
{
    (void)u;
    return PyBool_FromLong(self->t && API->transport_is_reading(self->t) == 1);
}

static PyObject *dg_bufsize(core_dgram *self, PyObject *u)
{
    (void)u;
    int64_t n = self->t ? API->transport_get_write_buffer_size(self->t) : 0;
    return PyLong_FromLongLong(n < 0 ? 0 : n);
}

static PyObject *dg_set_limits(core_dgram *self, PyObject *args)
{
    long long high, low;
    if (!PyArg_ParseTuple(args, "LL", &high, &low))
        return NULL;
    if (self->t) {
        int rc = API->transport_set_write_buffer_limits(self->t, high, low);
        if (rc < 0)
            return gflpy_raise(rc);
    }
    Py_RETURN_NONE;
}

static PyObject *dg_get_limits(core_dgram *self, PyObject *u)
{
    (void)u;
    size_t high = 65536, low = 16384;
    if (self->t)
        API->transport_get_write_buffer_limits(self->t, &high, &low);
    return Py_BuildValue("(nn)", (Py_ssize_t)low, (Py_ssize_t)high);
}

static PyObject *dg_set_protocol(core_dgram *self, PyObject *protocol)
{
    Py_INCREF(protocol);
    Py_XSETREF(self->protocol, protocol);
    Py_RETURN_NONE;
}

static int dg_traverse(core_dgram *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->loop);
    Py_VISIT(self->protocol);
    Py_VISIT(self->owner);
    Py_VISIT(self->context);
    return 0;
}

static int dg_clear(core_dgram *self)
{
    Py_CLEAR(self->protocol);
    Py_CLEAR(self->owner);
    Py_CLEAR(self->context);
    return 0;
}

static void dg_dealloc(core_dgram *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    dg_clear(self);
    Py_CLEAR(self->loop);
    if (self->t) {
        gfl_transport *t = self->t;
        self->t = NULL;
        API->transport_unref(t);
    }
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyMethodDef dg_methods[] = {
    {"sendto", (PyCFunction)(void (*)(void))dg_sendto, METH_FASTCALL, NULL},
    {"close", (PyCFunction)dg_close, METH_NOARGS, NULL},
    {"abort", (PyCFunction)dg_abort, METH_NOARGS, NULL},
    {"pause_reading", (PyCFunction)dg_pause_reading, METH_NOARGS, NULL},
    {"resume_reading", (PyCFunction)dg_resume_reading, METH_NOARGS, NULL},
    {"is_reading", (PyCFunction)dg_is_reading, METH_NOARGS, NULL},
    {"get_write_buffer_size", (PyCFunction)dg_bufsize, METH_NOARGS, NULL},
    {"set_write_buffer_limits", (PyCFunction)dg_set_limits, METH_VARARGS, NULL},
    {"get_write_buffer_limits", (PyCFunction)dg_get_limits, METH_NOARGS, NULL},
    {"set_protocol", (PyCFunction)dg_set_protocol, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot dg_slots[] = {
    {Py_tp_new, dg_new},
    {Py_tp_dealloc, dg_dealloc},
    {Py_tp_traverse, dg_traverse},
    {Py_tp_clear, dg_clear},
    {Py_tp_methods, dg_methods},
    {Py_tp_doc, "A datagram socket served by the core (internal)."},
    {0, NULL},
};

static PyType_Spec dg_spec = {
    "globeflower._core.CoreDatagram",
    sizeof(core_dgram),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    dg_slots,
};

int gflpy_server_init_type(PyObject *module)
{
    CoreDatagramType = (PyTypeObject *)PyType_FromSpec(&dg_spec);
    if (!CoreDatagramType)
        return -1;
    Py_INCREF(CoreDatagramType);
    if (PyModule_AddObject(module, "CoreDatagram", (PyObject *)CoreDatagramType) < 0) {
        Py_DECREF(CoreDatagramType);
        return -1;
    }
    CoreServerType = (PyTypeObject *)PyType_FromSpec(&cs_spec);
    if (!CoreServerType)
        return -1;
    Py_INCREF(CoreServerType);
    if (PyModule_AddObject(module, "CoreServer", (PyObject *)CoreServerType) < 0) {
        Py_DECREF(CoreServerType);
        return -1;
    }
    return 0;
}
