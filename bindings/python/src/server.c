/*
 * Listening sockets served by the core (asyncio's _start_serving for plain
 * TCP and Unix servers): the core accepts, and each connection gets its
 * protocol from the Python protocol_factory and a StreamTransport, with no
 * Python-level accept loop. asyncio's Server object stays the user-facing
 * one (sockets, serve_forever, close, wait_closed); it reaches us through
 * loop._start_serving / loop._stop_serving (see _loop.py).
 */
#include "gflpy.h"

#include <unistd.h>

typedef struct {
    PyObject_HEAD
    gflpy_loop *loop;
    PyObject *protocol_factory;
    PyObject *server; /* asyncio's Server */
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

static int accept_factory(void *fud, gfl_transport *t, const gfl_protocol **proto, void **ud)
{
    core_server *self = fud;
    PyObject *protocol = PyObject_CallNoArgs(self->protocol_factory);
    if (!protocol || gflpy_transport_accepted(self->loop, t, protocol, self->server, proto, ud) < 0) {
        Py_XDECREF(protocol);
        report_accept_error(self);
        return GFL_EIO; /* the core drops the connection */
    }
    Py_DECREF(protocol);
    return 0;
}

static void factory_release(void *fud)
{
    Py_DECREF((PyObject *)fud);
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
    return 0;
}

static int cs_clear(core_server *self)
{
    Py_CLEAR(self->protocol_factory);
    Py_CLEAR(self->server);
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

int gflpy_server_init_type(PyObject *module)
{
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
