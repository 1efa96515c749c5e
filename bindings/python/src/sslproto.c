/*
 * asyncio's TLS protocol with its per-record paths in C.
 *
 * `_tls_types(sslproto)` builds two heap types that subclass asyncio's own
 * `sslproto.SSLProtocol` and `sslproto._SSLProtocolTransport`. Only the
 * paths every record of an established connection takes are replaced:
 * receiving (`buffer_updated` -> `_do_read`), sending (`transport.write` ->
 * `_write_appdata` -> `_process_outgoing`). They call the `_ssl` module's C
 * objects (the SSLObject's inner `_ssl._SSLSocket`, the `MemoryBIO`s) and
 * the protocols directly, so no Python frame runs per record. Everything
 * else (handshake, shutdown, flushing, timeouts, flow-control transitions,
 * application-side buffered protocols, the transport's other methods) is
 * asyncio's code, reached through the base class, so the state machine and
 * its messages are the stdlib's. Any unusual case on a fast path (a state
 * other than WRAPPED, a write backlog, paused reading) also takes the base
 * class's method.
 */
#include "gflpy.h"

static struct {
    PyObject *wrapped;            /* sslproto.SSLProtocolState.WRAPPED */
    PyObject *again_errors;       /* sslproto.SSLAgainErrors */
    PyObject *base_buffer_updated; /* the base class's Python functions */
    PyObject *base_do_read;
    PyObject *base_write_appdata;
    PyObject *fatal_message;      /* 'Fatal error on SSL protocol' */
    PyTypeObject *protocol_type;
    PyTypeObject *transport_type;
} tls;

/* Interned attribute and method names. */
static PyObject *s_state, *s_sslobj, *s_incoming, *s_outgoing, *s_transport, *s_app_protocol,
    *s_app_protocol_is_buffer, *s_app_reading_paused, *s_write_backlog, *s_write_buffer_size,
    *s_ssl_writing_paused, *s_ssl_buffer, *s_max_size, *s_incoming_high_water, *s_incoming_low_water,
    *s_ssl_reading_paused, *s_outgoing_high_water, *s_outgoing_low_water, *s_app_writing_paused,
    *s_pending, *s_read, *s_write, *s_data_received, *s_fatal_error, *s_call_eof_received,
    *s_start_shutdown, *s_control_app_writing, *s_control_ssl_reading, *s_ssl_protocol,
    *s_write_appdata, *s_do_write, *s_append, *s_release;

static int intern_names(void)
{
    struct {
        PyObject **slot;
        const char *text;
    } names[] = {
        {&s_state, "_state"}, {&s_sslobj, "_sslobj"}, {&s_incoming, "_incoming"},
        {&s_outgoing, "_outgoing"}, {&s_transport, "_transport"}, {&s_app_protocol, "_app_protocol"},
        {&s_app_protocol_is_buffer, "_app_protocol_is_buffer"}, {&s_app_reading_paused, "_app_reading_paused"},
        {&s_write_backlog, "_write_backlog"}, {&s_write_buffer_size, "_write_buffer_size"},
        {&s_ssl_writing_paused, "_ssl_writing_paused"}, {&s_ssl_buffer, "_ssl_buffer"},
        {&s_max_size, "max_size"}, {&s_incoming_high_water, "_incoming_high_water"},
        {&s_incoming_low_water, "_incoming_low_water"}, {&s_ssl_reading_paused, "_ssl_reading_paused"},
        {&s_outgoing_high_water, "_outgoing_high_water"}, {&s_outgoing_low_water, "_outgoing_low_water"},
        {&s_app_writing_paused, "_app_writing_paused"}, {&s_pending, "pending"}, {&s_read, "read"},
        {&s_write, "write"}, {&s_data_received, "data_received"}, {&s_fatal_error, "_fatal_error"},
        {&s_call_eof_received, "_call_eof_received"}, {&s_start_shutdown, "_start_shutdown"},
        {&s_control_app_writing, "_control_app_writing"}, {&s_control_ssl_reading, "_control_ssl_reading"},
        {&s_ssl_protocol, "_ssl_protocol"}, {&s_write_appdata, "_write_appdata"}, {&s_do_write, "_do_write"},
        {&s_append, "append"}, {&s_release, "release"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (*names[i].slot)
            continue;
        *names[i].slot = PyUnicode_InternFromString(names[i].text);
        if (!*names[i].slot)
            return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Small helpers */

/* A truth value of an attribute: 1, 0, or -1 with an exception set. */
static int attr_true(PyObject *obj, PyObject *name)
{
    PyObject *v = PyObject_GetAttr(obj, name);
    if (!v)
        return -1;
    int r = PyObject_IsTrue(v);
    Py_DECREF(v);
    return r;
}

/* An integer attribute; -1 with an exception set when it is not one. */
static int attr_ssize(PyObject *obj, PyObject *name, Py_ssize_t *out)
{
    PyObject *v = PyObject_GetAttr(obj, name);
    if (!v)
        return -1;
    *out = PyLong_AsSsize_t(v);
    Py_DECREF(v);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

/* Calls a method of obj without arguments and drops the result. */
static int call_method0(PyObject *obj, PyObject *name)
{
    PyObject *r = PyObject_CallMethodNoArgs(obj, name);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

/* The inner `_ssl._SSLSocket` of the protocol's SSLObject (a new
 * reference), or NULL without an exception when there is none (a stand-in
 * object: the caller takes the base class's path). */
static PyObject *inner_sslobj(PyObject *self)
{
    PyObject *outer = PyObject_GetAttr(self, s_sslobj);
    if (!outer)
        return NULL;
    PyObject *inner = PyObject_GetAttr(outer, s_sslobj);
    Py_DECREF(outer);
    if (!inner && PyErr_ExceptionMatches(PyExc_AttributeError))
        PyErr_Clear();
    return inner;
}

/* asyncio's `except Exception as ex: self._fatal_error(ex, ...)` around the
 * per-record paths: an Exception goes to _fatal_error (and None is
 * returned), anything else (KeyboardInterrupt, SystemExit) propagates. */
static PyObject *fatal_or_raise(PyObject *self)
{
    if (!PyErr_ExceptionMatches(PyExc_Exception))
        return NULL;
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *value = PyErr_GetRaisedException();
#else
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb)
        PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
#endif
    PyObject *r = PyObject_CallMethodObjArgs(self, s_fatal_error, value, tls.fatal_message, NULL);
    Py_DECREF(value);
    if (!r)
        return NULL;
    Py_DECREF(r);
    Py_RETURN_NONE;
}

/* Whether `size` crosses a water mark in the direction that changes the
 * paused flag: then asyncio's own control method makes the transition. */
static int crosses(Py_ssize_t size, PyObject *self, PyObject *high_name, PyObject *low_name, PyObject *paused_name)
{
    Py_ssize_t high, low;
    int paused = attr_true(self, paused_name);
    if (paused < 0 || attr_ssize(self, high_name, &high) < 0 || attr_ssize(self, low_name, &low) < 0)
        return -1;
    return (size >= high && !paused) || (size <= low && paused);
}

/* ------------------------------------------------------------------ */
/* Outgoing records */

/* SSLProtocol._process_outgoing: the records the SSL object produced go to
 * the socket transport, then the application's write flow control. */
static int process_outgoing(PyObject *self)
{
    PyObject *outgoing = PyObject_GetAttr(self, s_outgoing);
    if (!outgoing)
        return -1;
    int rc = -1;
    int writing_paused = attr_true(self, s_ssl_writing_paused);
    if (writing_paused < 0)
        goto done;
    if (!writing_paused) {
        PyObject *data = PyObject_CallMethodNoArgs(outgoing, s_read);
        if (!data)
            goto done;
        if (PyBytes_Check(data) && PyBytes_GET_SIZE(data) > 0) {
            PyObject *transport = PyObject_GetAttr(self, s_transport);
            PyObject *r = transport ? PyObject_CallMethodOneArg(transport, s_write, data) : NULL;
            Py_XDECREF(transport);
            Py_DECREF(data);
            if (!r)
                goto done;
            Py_DECREF(r);
        } else {
            Py_DECREF(data);
        }
    }
    Py_ssize_t pending, backlog_size;
    if (attr_ssize(outgoing, s_pending, &pending) < 0 || attr_ssize(self, s_write_buffer_size, &backlog_size) < 0)
        goto done;
    int cross = crosses(pending + backlog_size, self, s_outgoing_high_water, s_outgoing_low_water, s_app_writing_paused);
    if (cross < 0 || (cross && call_method0(self, s_control_app_writing) < 0))
        goto done;
    rc = 0;
done:
    Py_DECREF(outgoing);
    return rc;
}

static PyObject *proto_process_outgoing(PyObject *self, PyObject *unused)
{
    (void)unused;
    if (process_outgoing(self) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* Puts data[offset:] and the items after it on the write backlog, as
 * asyncio's _do_write leaves what the SSL object did not take. */
static int backlog_rest(PyObject *self, PyObject *const *items, Py_ssize_t count, Py_ssize_t first, Py_ssize_t offset,
                        const Py_ssize_t *lengths)
{
    PyObject *backlog = PyObject_GetAttr(self, s_write_backlog);
    if (!backlog)
        return -1;
    Py_ssize_t added = 0;
    for (Py_ssize_t i = first; i < count; i++) {
        PyObject *piece;
        if (i == first && offset > 0) {
            piece = PySequence_GetSlice(items[i], offset, lengths[i]);
            if (!piece)
                goto fail;
        } else {
            piece = Py_NewRef(items[i]);
        }
        PyObject *r = PyObject_CallMethodOneArg(backlog, s_append, piece);
        Py_DECREF(piece);
        if (!r)
            goto fail;
        Py_DECREF(r);
        added += lengths[i] - (i == first ? offset : 0);
    }
    Py_DECREF(backlog);
    Py_ssize_t size;
    if (attr_ssize(self, s_write_buffer_size, &size) < 0)
        return -1;
    PyObject *v = PyLong_FromSsize_t(size + added);
    if (!v)
        return -1;
    int rc = PyObject_SetAttr(self, s_write_buffer_size, v);
    Py_DECREF(v);
    return rc;
fail:
    Py_DECREF(backlog);
    return -1;
}

/* Fast path of _write_appdata: state WRAPPED and nothing queued. Returns 1
 * when done, 0 when the base class must handle the call (nothing done), -1
 * with an exception that asyncio would have raised to the caller, -2 with
 * one that goes to _fatal_error. */
static int write_appdata_fast(PyObject *self, PyObject *list_of_data)
{
    PyObject *state = PyObject_GetAttr(self, s_state);
    if (!state)
        return -1;
    Py_DECREF(state);
    if (state != tls.wrapped)
        return 0;
    PyObject *backlog = PyObject_GetAttr(self, s_write_backlog);
    if (!backlog)
        return -1;
    Py_ssize_t queued = PyObject_Length(backlog);
    Py_DECREF(backlog);
    if (queued != 0)
        return queued < 0 ? -1 : 0;
    PyObject *inner = inner_sslobj(self);
    if (!inner)
        return PyErr_Occurred() ? -1 : 0;

    int rc = -1;
    Py_ssize_t *lengths = NULL;
    /* A tuple or list as it is; any other iterable is consumed into a list
     * (its own TypeError when it is not one). */
    PyObject *seq = PyTuple_CheckExact(list_of_data) || PyList_CheckExact(list_of_data) ? Py_NewRef(list_of_data)
                                                                                         : PySequence_List(list_of_data);
    if (!seq)
        goto done;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    /* asyncio takes every len() before writing anything: a bad item raises
     * to the caller without any data sent. */
    lengths = PyMem_New(Py_ssize_t, count > 0 ? count : 1);
    if (!lengths) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        lengths[i] = PyObject_Length(items[i]);
        if (lengths[i] < 0)
            goto done;
    }
    rc = -2;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *r = PyObject_CallMethodOneArg(inner, s_write, items[i]);
        if (!r) {
            if (!PyErr_ExceptionMatches(tls.again_errors))
                goto done;
            PyErr_Clear();
            if (backlog_rest(self, items, count, i, 0, lengths) < 0)
                goto done;
            break;
        }
        Py_ssize_t written = PyLong_AsSsize_t(r);
        Py_DECREF(r);
        if (written == -1 && PyErr_Occurred())
            goto done;
        if (written < lengths[i]) {
            if (backlog_rest(self, items, count, i, written, lengths) < 0)
                goto done;
            break;
        }
    }
    if (process_outgoing(self) < 0)
        goto done;
    rc = 1;
done:
    PyMem_Free(lengths);
    Py_XDECREF(seq);
    Py_DECREF(inner);
    return rc;
}

static PyObject *write_appdata(PyObject *self, PyObject *list_of_data)
{
    switch (write_appdata_fast(self, list_of_data)) {
    case 1:
        Py_RETURN_NONE;
    case 0:
        return PyObject_CallFunctionObjArgs(tls.base_write_appdata, self, list_of_data, NULL);
    case -2:
        return fatal_or_raise(self);
    default:
        return NULL;
    }
}

/* ------------------------------------------------------------------ */
/* Incoming records */

/* Hands the decrypted bytes to a (non-buffered) application protocol. */
static int deliver(PyObject *self, PyObject *data)
{
    PyObject *app = PyObject_GetAttr(self, s_app_protocol);
    if (!app)
        return -1;
    PyObject *r = PyObject_CallMethodOneArg(app, s_data_received, data);
    Py_DECREF(app);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

/* One bytes object from a list of bytes (what asyncio's b''.join does). */
static PyObject *join_chunks(PyObject *chunks)
{
    Py_ssize_t total = 0, n = PyList_GET_SIZE(chunks);
    for (Py_ssize_t i = 0; i < n; i++)
        total += PyBytes_GET_SIZE(PyList_GET_ITEM(chunks, i));
    PyObject *joined = PyBytes_FromStringAndSize(NULL, total);
    if (!joined)
        return NULL;
    char *at = PyBytes_AS_STRING(joined);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *c = PyList_GET_ITEM(chunks, i);
        memcpy(at, PyBytes_AS_STRING(c), (size_t)PyBytes_GET_SIZE(c));
        at += PyBytes_GET_SIZE(c);
    }
    return joined;
}

/* 1 when neither the incoming BIO nor the SSL object holds anything to
 * read, 0 when one does, -1 with an exception. */
static int nothing_left(PyObject *incoming, PyObject *inner)
{
    Py_ssize_t n;
    if (attr_ssize(incoming, s_pending, &n) < 0)
        return -1;
    if (n > 0)
        return 0;
    PyObject *r = PyObject_CallMethodNoArgs(inner, s_pending);
    if (!r)
        return -1;
    n = PyLong_AsSsize_t(r);
    Py_DECREF(r);
    if (n == -1 && PyErr_Occurred())
        return -1;
    return n == 0;
}

/* Reads every whole record the incoming BIO holds (asyncio's
 * _do_read__copied): one data_received with all of it, then the peer's
 * close_notify if it came. */
static int read_records(PyObject *self, PyObject *inner)
{
    PyObject *max_size = PyObject_GetAttr(self, s_max_size);
    PyObject *incoming = max_size ? PyObject_GetAttr(self, s_incoming) : NULL;
    if (!incoming) {
        Py_XDECREF(max_size);
        return -1;
    }
    PyObject *chunks = NULL, *first = NULL;
    int eof = 0, rc = -1;
    for (;;) {
        PyObject *chunk = PyObject_CallMethodOneArg(inner, s_read, max_size);
        if (!chunk) {
            if (!PyErr_ExceptionMatches(tls.again_errors))
                goto done;
            PyErr_Clear();
            break;
        }
        if (!PyBytes_Check(chunk) || PyBytes_GET_SIZE(chunk) == 0) {
            Py_DECREF(chunk);
            eof = 1;
            break;
        }
        if (!first) {
            first = chunk;
        } else {
            int failed = (!chunks && !(chunks = PyList_New(0))) ||
                         (PyList_GET_SIZE(chunks) == 0 && PyList_Append(chunks, first) < 0) ||
                         PyList_Append(chunks, chunk) < 0;
            Py_DECREF(chunk);
            if (failed)
                goto done;
        }
        /* No bytes left in the incoming BIO and no decrypted bytes left in
         * the SSL object: the next read could only raise SSLWantReadError
         * (building that exception costs more than the whole check). */
        int left = nothing_left(incoming, inner);
        if (left < 0)
            goto done;
        if (left)
            break;
    }
    if (chunks) {
        PyObject *joined = join_chunks(chunks);
        if (!joined || deliver(self, joined) < 0) {
            Py_XDECREF(joined);
            goto done;
        }
        Py_DECREF(joined);
    } else if (first && deliver(self, first) < 0) {
        goto done;
    }
    if (eof && (call_method0(self, s_call_eof_received) < 0 || call_method0(self, s_start_shutdown) < 0))
        goto done;
    rc = 0;
done:
    Py_XDECREF(first);
    Py_XDECREF(chunks);
    Py_DECREF(incoming);
    Py_DECREF(max_size);
    return rc;
}

/* SSLProtocol._do_read, WRAPPED state with a data_received protocol. */
static PyObject *do_read(PyObject *self)
{
    PyObject *state = PyObject_GetAttr(self, s_state);
    if (!state)
        return NULL;
    Py_DECREF(state);
    int fallback = state != tls.wrapped;
    if (!fallback) {
        int paused = attr_true(self, s_app_reading_paused);
        int buffered = paused ? 0 : attr_true(self, s_app_protocol_is_buffer);
        if (paused < 0 || buffered < 0)
            return NULL;
        fallback = paused || buffered;
    }
    PyObject *inner = fallback ? NULL : inner_sslobj(self);
    if (!inner) {
        if (PyErr_Occurred())
            return NULL;
        return PyObject_CallOneArg(tls.base_do_read, self);
    }
    int failed = read_records(self, inner) < 0;
    Py_DECREF(inner);
    if (failed)
        return fatal_or_raise(self);

    PyObject *backlog = PyObject_GetAttr(self, s_write_backlog);
    if (!backlog)
        return fatal_or_raise(self);
    int queued = PyObject_IsTrue(backlog);
    Py_DECREF(backlog);
    if (queued < 0 || (queued ? call_method0(self, s_do_write) : process_outgoing(self)) < 0)
        return fatal_or_raise(self);

    /* _control_ssl_reading, called only when it would change something. */
    PyObject *incoming = PyObject_GetAttr(self, s_incoming);
    if (!incoming)
        return fatal_or_raise(self);
    Py_ssize_t pending;
    int r = attr_ssize(incoming, s_pending, &pending);
    Py_DECREF(incoming);
    int cross = r < 0 ? -1 : crosses(pending, self, s_incoming_high_water, s_incoming_low_water, s_ssl_reading_paused);
    if (cross < 0 || (cross && call_method0(self, s_control_ssl_reading) < 0))
        return fatal_or_raise(self);
    Py_RETURN_NONE;
}

static PyObject *proto_do_read(PyObject *self, PyObject *unused)
{
    (void)unused;
    return do_read(self);
}

/* SSLProtocol.buffer_updated: the socket transport filled _ssl_buffer. */
static PyObject *proto_buffer_updated(PyObject *self, PyObject *arg)
{
    PyObject *state = PyObject_GetAttr(self, s_state);
    if (!state)
        return NULL;
    Py_DECREF(state);
    Py_ssize_t nbytes = PyLong_Check(arg) ? PyLong_AsSsize_t(arg) : -1;
    if (nbytes == -1 && PyErr_Occurred())
        PyErr_Clear();
    PyObject *buffer = state == tls.wrapped && nbytes >= 0 ? PyObject_GetAttr(self, s_ssl_buffer) : NULL;
    if (!buffer || !PyByteArray_CheckExact(buffer) || nbytes > PyByteArray_GET_SIZE(buffer)) {
        Py_XDECREF(buffer);
        if (PyErr_Occurred())
            return NULL;
        return PyObject_CallFunctionObjArgs(tls.base_buffer_updated, self, arg, NULL);
    }
    /* A read-only view of the filled part (asyncio writes a slice of its
     * memoryview); the bytearray outlives the call. */
    PyObject *view = PyMemoryView_FromMemory(PyByteArray_AS_STRING(buffer), nbytes, PyBUF_READ);
    PyObject *incoming = view ? PyObject_GetAttr(self, s_incoming) : NULL;
    PyObject *r = incoming ? PyObject_CallMethodOneArg(incoming, s_write, view) : NULL;
    if (view) {
        PyObject *rel = PyObject_CallMethodNoArgs(view, s_release);
        Py_XDECREF(rel);
        if (!rel && r)
            Py_CLEAR(r);
    }
    Py_XDECREF(view);
    Py_XDECREF(incoming);
    Py_DECREF(buffer);
    if (!r)
        return NULL;
    Py_DECREF(r);
    return do_read(self);
}

static PyObject *proto_write_appdata(PyObject *self, PyObject *list_of_data)
{
    return write_appdata(self, list_of_data);
}

static PyMethodDef protocol_methods[] = {
    {"buffer_updated", proto_buffer_updated, METH_O, NULL},
    {"_do_read", proto_do_read, METH_NOARGS, NULL},
    {"_write_appdata", proto_write_appdata, METH_O, NULL},
    {"_process_outgoing", proto_process_outgoing, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

/* _SSLProtocolTransport.write: the application's data to the SSL object. */
static PyObject *transport_write(PyObject *self, PyObject *data)
{
    if (!PyBytes_Check(data) && !PyByteArray_Check(data) && !PyMemoryView_Check(data))
        return PyErr_Format(PyExc_TypeError, "data: expecting a bytes-like instance, got %s", Py_TYPE(data)->tp_name);
    int nonempty = PyObject_IsTrue(data);
    if (nonempty <= 0)
        return nonempty < 0 ? NULL : Py_NewRef(Py_None);
    PyObject *proto = PyObject_GetAttr(self, s_ssl_protocol);
    if (!proto)
        return NULL;
    PyObject *list = PyTuple_Pack(1, data);
    PyObject *r = NULL;
    if (list)
        r = PyObject_TypeCheck(proto, tls.protocol_type) ? write_appdata(proto, list)
                                                          : PyObject_CallMethodOneArg(proto, s_write_appdata, list);
    Py_XDECREF(list);
    Py_DECREF(proto);
    return r;
}

static PyMethodDef transport_methods[] = {
    {"write", transport_write, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot protocol_slots[] = {
    {Py_tp_methods, protocol_methods},
    {0, NULL},
};

static PyType_Slot transport_slots[] = {
    {Py_tp_methods, transport_methods},
    {0, NULL},
};

static PyType_Spec protocol_spec = {
    "globeflower._core.SSLProtocolBase", 0, 0, Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE, protocol_slots,
};

static PyType_Spec transport_spec = {
    "globeflower._core.SSLTransportBase", 0, 0, Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE, transport_slots,
};

static PyTypeObject *subclass(PyType_Spec *spec, PyObject *base)
{
    if (!PyType_Check(base)) {
        PyErr_Format(PyExc_TypeError, "_tls_types: %R is not a class", base);
        return NULL;
    }
    PyObject *bases = PyTuple_Pack(1, base);
    if (!bases)
        return NULL;
    PyObject *type = PyType_FromSpecWithBases(spec, bases);
    Py_DECREF(bases);
    return (PyTypeObject *)type;
}

static int need_attr(PyObject *obj, const char *name, PyObject **out)
{
    PyObject *v = PyObject_GetAttrString(obj, name);
    if (!v)
        return -1;
    Py_XSETREF(*out, v);
    return 0;
}

/* _tls_types(sslproto_module) -> (SSLProtocolBase, SSLTransportBase): made
 * once; later calls return the same types. */
PyObject *gflpy_tls_types(PyObject *module, PyObject *sslproto)
{
    (void)module;
    if (!tls.protocol_type) {
        PyObject *protocol = NULL, *transport = NULL, *state_enum = NULL;
        int ok = intern_names() == 0 && need_attr(sslproto, "SSLProtocol", &protocol) == 0 &&
                 need_attr(sslproto, "_SSLProtocolTransport", &transport) == 0 &&
                 need_attr(sslproto, "SSLProtocolState", &state_enum) == 0 &&
                 need_attr(state_enum, "WRAPPED", &tls.wrapped) == 0 &&
                 need_attr(sslproto, "SSLAgainErrors", &tls.again_errors) == 0 &&
                 need_attr(protocol, "buffer_updated", &tls.base_buffer_updated) == 0 &&
                 need_attr(protocol, "_do_read", &tls.base_do_read) == 0 &&
                 need_attr(protocol, "_write_appdata", &tls.base_write_appdata) == 0 &&
                 (tls.fatal_message || (tls.fatal_message = PyUnicode_FromString("Fatal error on SSL protocol")));
        PyTypeObject *ptype = ok ? subclass(&protocol_spec, protocol) : NULL;
        PyTypeObject *ttype = ptype ? subclass(&transport_spec, transport) : NULL;
        Py_XDECREF(protocol);
        Py_XDECREF(transport);
        Py_XDECREF(state_enum);
        if (!ttype) {
            Py_XDECREF(ptype);
            return NULL;
        }
        tls.protocol_type = ptype;
        tls.transport_type = ttype;
    }
    return PyTuple_Pack(2, (PyObject *)tls.protocol_type, (PyObject *)tls.transport_type);
}
