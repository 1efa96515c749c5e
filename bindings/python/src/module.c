/*
 * globeflower._core: module set-up, the gfl_api table (published as the
 * capsule _C_API), and error conversion between core codes/values and
 * Python exceptions.
 */
#include "gflpy.h"

#include <string.h>

const gfl_api *gflpy_api;
gflpy_refs gflpy;

/* ------------------------------------------------------------------ */
/* Errors                                                              */

PyObject *gflpy_raise(int code)
{
    if (code == GFL_ECLOSED) {
        PyErr_SetString(PyExc_RuntimeError, "Event loop is closed");
    } else if (code == GFL_ENOMEM) {
        PyErr_NoMemory();
    } else if (code == GFL_EINVAL) {
        PyErr_SetString(PyExc_ValueError, API->strerror(code));
    } else if (code == GFL_EWRONGTHREAD) {
        PyErr_SetString(PyExc_RuntimeError, "globeflower: the loop is owned by another thread");
    } else if (code == GFL_ESTATE) {
        PyErr_SetString(PyExc_RuntimeError, API->strerror(code));
    } else if (code > -4000 && code < 0) {
        /* errno-compatible: OSError(errno, msg) picks the subclass itself. */
        PyObject *e = PyObject_CallFunction(PyExc_OSError, "is", -code, API->strerror(code));
        if (e) {
            PyErr_SetObject((PyObject *)Py_TYPE(e), e);
            Py_DECREF(e);
        }
    } else {
        PyErr_Format(PyExc_RuntimeError, "globeflower: %s", API->strerror(code));
    }
    return NULL;
}

/* Exception classes named by core error values that are not OSErrors. */
static PyObject *class_by_name(const char *type)
{
    if (!type)
        return NULL;
    static const char *const mods[] = {"builtins", "ssl", "socket", NULL};
    for (int i = 0; mods[i]; i++) {
        PyObject *m = PyImport_ImportModule(mods[i]);
        if (!m) {
            PyErr_Clear();
            continue;
        }
        PyObject *c = PyObject_GetAttrString(m, type);
        Py_DECREF(m);
        if (c && PyExceptionClass_Check(c))
            return c;
        Py_XDECREF(c);
        PyErr_Clear();
    }
    return NULL;
}

PyObject *gflpy_exception_from_value(gfl_value *error)
{
    PyObject *e;
    int code = API->value_error_code(error);
    const char *type = API->value_error_type(error);
    const char *msg = API->value_error_message(error);
    if (!msg)
        msg = API->strerror(code);
    PyObject *cls = class_by_name(type);
    /* "[Errno N] text": Python's own str() of OSError(N, text). */
    int n, skip = 0;
    if (strncmp(msg, "[Errno ", 7) == 0 && sscanf(msg, "[Errno %d] %n", &n, &skip) == 1 && skip > 0 &&
        (!cls || PyObject_IsSubclass(cls, PyExc_OSError) == 1)) {
        PyErr_Clear();
        e = PyObject_CallFunction(cls ? cls : PyExc_OSError, "is", n, msg + skip);
        Py_XDECREF(cls);
        return e;
    }
    PyErr_Clear();
    if (code > -4000 && code < 0 && (!cls || PyObject_IsSubclass(cls, PyExc_OSError) == 1))
        e = PyObject_CallFunction(cls ? cls : PyExc_OSError, "is", -code, msg);
    else
        e = PyObject_CallFunction(cls ? cls : PyExc_OSError, "s", msg);
    Py_XDECREF(cls);
    return e;
}

/* ------------------------------------------------------------------ */
/* _setup(): the Python layer hands over what the C code needs          */

static int need(PyObject *ns, const char *name, PyObject **out)
{
    PyObject *v = PyDict_GetItemString(ns, name);
    if (!v) {
        PyErr_Format(PyExc_KeyError, "globeflower._core._setup: missing %s", name);
        return -1;
    }
    Py_INCREF(v);
    Py_XSETREF(*out, v);
    return 0;
}

static PyObject *mod_setup(PyObject *self, PyObject *ns)
{
    if (!PyDict_Check(ns))
        return PyErr_Format(PyExc_TypeError, "_setup() takes a dict");
    if (need(ns, "Handle", &gflpy.Handle) < 0 || need(ns, "TimerHandle", &gflpy.TimerHandle) < 0 ||
        need(ns, "handle_error", &gflpy.handle_error) < 0 || need(ns, "run_debug", &gflpy.run_debug) < 0 ||
        need(ns, "report_slow", &gflpy.report_slow) < 0 ||
        need(ns, "transport_error", &gflpy.transport_error) < 0 ||
        need(ns, "BufferedProtocol", &gflpy.BufferedProtocol) < 0 ||
        need(ns, "TransportSocket", &gflpy.TransportSocket) < 0 ||
        need(ns, "copy_context", &gflpy.copy_context) < 0 ||
        need(ns, "set_result_unless_cancelled", &gflpy.set_result_unless_cancelled) < 0 ||
        need(ns, "Task", &gflpy.Task) < 0 || need(ns, "Future", &gflpy.Future) < 0 || need(ns, "create_task_slow", &gflpy.create_task_slow) < 0)
        return NULL;
    if (gflpy_handles_setup() < 0)
        return NULL;
    PyObject *base = PyDict_GetItemString(ns, "Transport");
    if (!base)
        return PyErr_Format(PyExc_KeyError, "globeflower._core._setup: missing Transport");
    if (gflpy_transport_make_type(base) < 0)
        return NULL;
    Py_INCREF(gflpy_StreamTransportType);
    if (PyModule_AddObject(self, "StreamTransport", (PyObject *)gflpy_StreamTransportType) < 0) {
        Py_DECREF(gflpy_StreamTransportType);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *mod_set_pipe_types(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *read_type, *write_type;
    if (!PyArg_ParseTuple(args, "OO:_set_pipe_types", &read_type, &write_type))
        return NULL;
    if (!gflpy_StreamTransportType)
        return PyErr_Format(PyExc_RuntimeError, "globeflower._core not set up");
    if (gflpy_transport_set_pipe_types(read_type, write_type) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *mod_abi_version(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    return Py_BuildValue("(II)", API->abi_major, API->abi_minor);
}

static PyMethodDef module_methods[] = {
    {"_setup", mod_setup, METH_O, "Internal: receives the Python-level helpers."},
    {"_set_pipe_types", mod_set_pipe_types, METH_VARARGS,
     "Internal: the read-pipe and write-pipe subclasses of StreamTransport."},
    {"op_cancel", gflpy_op_cancel, METH_O, "Internal: abandons a core operation."},
    {"_tls_types", gflpy_tls_types, METH_O,
     "Internal: asyncio's SSLProtocol and _SSLProtocolTransport with their per-record paths in C."},
    {"abi_version", mod_abi_version, METH_NOARGS, "The (major, minor) ABI version of the core in use."},
    {"_hosts_setup", gflpy_hosts_setup, METH_O, "Internal: receives the helpers of globeflower/_hosts.py."},
    {"tune_heap", gflpy_tune_heap, METH_NOARGS,
     "Opt-in: sets glibc's mmap threshold to 4 MiB and trim threshold to 32 MiB for the whole process "
     "(unless the environment chose malloc settings). True when they are in effect."},
    {"heap_tuned", gflpy_heap_tuned, METH_NOARGS, "Whether tune_heap() (or GLOBEFLOWER_HEAP_TUNING=1) tuned the heap."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    "globeflower._core",
    "C core of the globeflower asyncio event loop.",
    -1,
    module_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__core(void)
{
    gflpy_api = gfl_api_get();
    /* Everything we call is in the table up to the ABI 1.1 stream functions
     * (a newer core only appends). */
    if (!gflpy_api || gflpy_api->abi_major != GFL_ABI_MAJOR || !GFL_API_HAS(gflpy_api, connect_write_pipe)) {
        PyErr_SetString(PyExc_ImportError, "globeflower._core: incompatible globeflower core library");
        return NULL;
    }
    PyObject *m = PyModule_Create(&module_def);
    if (!m)
        return NULL;
    /* Other extensions (and C hosts) share this core through the capsule. */
    PyObject *cap = PyCapsule_New((void *)gflpy_api, "globeflower._core._C_API", NULL);
    if (!cap || PyModule_AddObject(m, "_C_API", cap) < 0) {
        Py_XDECREF(cap);
        Py_DECREF(m);
        return NULL;
    }
    if (gflpy_loop_init_type(m) < 0 || gflpy_transport_init_type(m) < 0 || gflpy_server_init_type(m) < 0 ||
        gflpy_value_init(m) < 0 || gflpy_futures_init(m) < 0 || gflpy_exports_init() < 0 ||
        PyModule_AddFunctions(m, gflpy_exports_methods) < 0 || gflpy_plugin_init(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
