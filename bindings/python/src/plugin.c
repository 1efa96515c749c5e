/*
 * globeflower.plugin(name, path=None): a loaded C plugin as a module-like
 * object whose attributes are the plugin's functions. A sync function
 * returns its converted result (or raises its error); an async one returns
 * an awaitable (an asyncio future following the plugin's core future).
 *
 * The object holds one gfl_plugin reference (plugins load once per process,
 * counted by name) and drops it exactly once, when it is freed; every
 * function object holds the plugin object, so the plugin stays loaded
 * while any of them lives. Calls run on the calling code's loop (see
 * gflpy_hosts_loop), or the one given with loop=.
 */
#include "gflpy.h"

#include <string.h>

#define PLUGIN_NAME_MAX 64
#define FUNCTION_NAME_MAX 128

typedef struct {
    PyObject_HEAD
    gfl_plugin *plugin; /* one reference, dropped in dealloc */
    PyObject *name;     /* str */
    PyObject *loop;     /* the loop= given at load, or NULL */
    PyObject *weakreflist;
} plugin_object;

typedef struct {
    PyObject_HEAD
    plugin_object *owner;
    int is_async;
    vectorcallfunc vectorcall;
    char name[FUNCTION_NAME_MAX + 1];
} plugin_function;

static PyTypeObject *plugin_type, *function_type;
static PyObject *str_loop;

/* ------------------------------------------------------------------ */
/* Functions                                                           */

/* Neither type is made from Python: globeflower.plugin() makes them. */
static PyObject *refuse_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    (void)args;
    (void)kwds;
    return PyErr_Format(PyExc_TypeError, "%s objects are made by globeflower.plugin()", type->tp_name);
}

static PyObject *function_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    plugin_function *self = (plugin_function *)callable;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *loop = self->owner->loop;
    Py_ssize_t nk = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t i = 0; i < nk; i++) {
        PyObject *k = PyTuple_GET_ITEM(kwnames, i);
        if (PyUnicode_Compare(k, str_loop) != 0)
            return PyErr_Format(PyExc_TypeError, "%U.%s() got an unexpected keyword argument '%U' "
                                "(plugin functions take positional arguments and loop=)",
                                self->owner->name, self->name, k);
        loop = args[nargs + i];
    }
    gflpy_loop *l = gflpy_hosts_loop(loop);
    if (!l)
        return NULL;
    size_t n = (size_t)nargs;
    gfl_value *small[8];
    PyObject *out = NULL;
    gfl_value **vals = gflpy_values_from_args(args, n, small, 8);
    if (!vals) {
        Py_DECREF(l);
        return NULL;
    }
    if (self->is_async) {
        gfl_future *f = API->plugin_call_async(self->owner->plugin, self->name, l->core, vals, n);
        if (!f) {
            int rc = API->export_count(l->core); /* says why: closed, wrong thread */
            gflpy_raise(rc < 0 ? rc : GFL_ENOMEM);
            goto out;
        }
        out = gflpy_future_from_core(l, f);
        API->future_unref(f);
    } else {
        gfl_value *result = NULL;
        int rc = API->plugin_call(self->owner->plugin, self->name, l->core, vals, n, &result);
        if (rc >= 0 && result)
            out = gflpy_from_value(result);
        else if (result && API->value_type_of(result) == GFL_VALUE_ERROR)
            gflpy_raise_error_value(result);
        else
            gflpy_raise(rc < 0 ? rc : GFL_ENOMEM);
        API->value_unref(result);
    }
out:
    gflpy_values_drop(vals, n, small);
    Py_DECREF(l);
    return out;
}

static void function_dealloc(plugin_function *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Py_CLEAR(self->owner);
    PyObject_GC_Del(self);
    Py_DECREF(tp);
}

static int function_traverse(plugin_function *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->owner);
    return 0;
}

static PyObject *function_repr(plugin_function *self)
{
    return PyUnicode_FromFormat("<globeflower plugin function %U.%s (%s)>", self->owner->name, self->name,
                                self->is_async ? "async" : "sync");
}

static PyObject *function_get_name(plugin_function *self, void *c)
{
    (void)c;
    return PyUnicode_FromString(self->name);
}

static PyObject *function_get_async(plugin_function *self, void *c)
{
    (void)c;
    return PyBool_FromLong(self->is_async);
}

static PyGetSetDef function_getset[] = {
    {"__name__", (getter)function_get_name, NULL, NULL, NULL},
    {"is_async", (getter)function_get_async, NULL, "True if the function returns an awaitable.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef function_members[] = {
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(plugin_function, vectorcall), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot function_slots[] = {
    {Py_tp_new, refuse_new},
    {Py_tp_dealloc, function_dealloc},
    {Py_tp_traverse, function_traverse},
    {Py_tp_repr, function_repr},
    {Py_tp_call, PyVectorcall_Call},
    {Py_tp_getset, function_getset},
    {Py_tp_members, function_members},
    {Py_tp_doc, "A function of a globeflower plugin: f(*args, loop=None)."},
    {0, NULL},
};

static PyType_Spec function_spec = {
    "globeflower.PluginFunction",
    sizeof(plugin_function),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    function_slots,
};

static PyObject *function_new(plugin_object *owner, const char *name, int is_async)
{
    plugin_function *f = PyObject_GC_New(plugin_function, function_type);
    if (!f)
        return NULL;
    Py_INCREF(owner);
    f->owner = owner;
    f->is_async = is_async;
    f->vectorcall = function_vectorcall;
    snprintf(f->name, sizeof f->name, "%s", name);
    PyObject_GC_Track(f);
    return (PyObject *)f;
}

/* ------------------------------------------------------------------ */
/* The plugin object                                                    */

static void plugin_dealloc(plugin_object *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->weakreflist)
        PyObject_ClearWeakRefs((PyObject *)self);
    if (self->plugin) {
        API->plugin_unload(self->plugin);
        self->plugin = NULL;
    }
    Py_CLEAR(self->name);
    Py_CLEAR(self->loop);
    PyObject_GC_Del(self);
    Py_DECREF(tp);
}

static int plugin_traverse(plugin_object *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->loop);
    return 0;
}

static int plugin_clear(plugin_object *self)
{
    Py_CLEAR(self->loop);
    return 0;
}

/* Attributes: the object's own first, then the plugin's functions (a new
 * function object each time; bind it to a name to reuse it). */
static PyObject *plugin_getattro(plugin_object *self, PyObject *name)
{
    PyObject *r = PyObject_GenericGetAttr((PyObject *)self, name);
    if (r || !PyErr_ExceptionMatches(PyExc_AttributeError) || !PyUnicode_Check(name))
        return r;
    Py_ssize_t len;
    const char *s = PyUnicode_AsUTF8AndSize(name, &len);
    if (s && (size_t)len != strlen(s))
        s = NULL; /* an embedded NUL: no such function */
    int is_async = s ? API->plugin_function_is_async(self->plugin, s) : GFL_ENOENT;
    if (!s || is_async < 0) {
        PyErr_Clear();
        return PyErr_Format(PyExc_AttributeError, "plugin %U has no function %R", self->name, name);
    }
    PyErr_Clear();
    return function_new(self, s, is_async);
}

static PyObject *plugin_function_names(plugin_object *self)
{
    int n = API->plugin_function_count(self->plugin);
    PyObject *list = PyList_New(0);
    for (int i = 0; list && i < n; i++) {
        const char *s = API->plugin_function_name(self->plugin, i);
        PyObject *u = s ? PyUnicode_FromString(s) : NULL;
        if (!u || PyList_Append(list, u) < 0)
            Py_CLEAR(list);
        Py_XDECREF(u);
    }
    return list;
}

static PyObject *plugin_dir(plugin_object *self, PyObject *unused)
{
    (void)unused;
    PyObject *list = plugin_function_names(self);
    static const char *const own[] = {"__name__", "functions", NULL};
    for (int i = 0; list && own[i]; i++) {
        PyObject *u = PyUnicode_FromString(own[i]);
        if (!u || PyList_Append(list, u) < 0)
            Py_CLEAR(list);
        Py_XDECREF(u);
    }
    return list;
}

static PyObject *plugin_get_name(plugin_object *self, void *c)
{
    (void)c;
    Py_INCREF(self->name);
    return self->name;
}

static PyObject *plugin_get_functions(plugin_object *self, void *c)
{
    (void)c;
    PyObject *list = plugin_function_names(self);
    PyObject *t = list ? PyList_AsTuple(list) : NULL;
    Py_XDECREF(list);
    return t;
}

static PyObject *plugin_repr(plugin_object *self)
{
    return PyUnicode_FromFormat("<globeflower plugin %R (%d functions)>", self->name,
                                API->plugin_function_count(self->plugin));
}

static PyMethodDef plugin_methods[] = {
    {"__dir__", (PyCFunction)plugin_dir, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef plugin_getset[] = {
    {"__name__", (getter)plugin_get_name, NULL, "The plugin's name.", NULL},
    {"functions", (getter)plugin_get_functions, NULL, "The names of the plugin's functions.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef plugin_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(plugin_object, weakreflist), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot plugin_slots[] = {
    {Py_tp_new, refuse_new},
    {Py_tp_dealloc, plugin_dealloc},
    {Py_tp_traverse, plugin_traverse},
    {Py_tp_clear, plugin_clear},
    {Py_tp_getattro, plugin_getattro},
    {Py_tp_repr, plugin_repr},
    {Py_tp_methods, plugin_methods},
    {Py_tp_getset, plugin_getset},
    {Py_tp_members, plugin_members},
    {Py_tp_doc, "A loaded globeflower plugin (globeflower.plugin()): its functions are attributes."},
    {0, NULL},
};

static PyType_Spec plugin_spec = {
    "globeflower.Plugin",
    sizeof(plugin_object),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    plugin_slots,
};

/* [A-Za-z0-9_]{1,64}: the core's rule for plugin names. */
static int valid_plugin_name(const char *s, Py_ssize_t len)
{
    if (len < 1 || len > PLUGIN_NAME_MAX)
        return 0;
    for (Py_ssize_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'))
            return 0;
    }
    return 1;
}

static PyObject *mod_plugin(PyObject *module, PyObject *args, PyObject *kwds)
{
    (void)module;
    static char *kwlist[] = {"name", "path", "loop", NULL};
    PyObject *name, *path = Py_None, *loop = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "U|O$O:plugin", kwlist, &name, &path, &loop))
        return NULL;
    if (!gflpy_hosts_available())
        return NULL;
    if (loop == Py_None)
        loop = NULL;
    if (loop && !PyObject_TypeCheck(loop, gflpy_LoopType))
        return PyErr_Format(PyExc_TypeError, "loop must be a globeflower.Loop, not %.100s", Py_TYPE(loop)->tp_name);
    Py_ssize_t len;
    const char *cname = PyUnicode_AsUTF8AndSize(name, &len);
    if (!cname)
        return NULL;
    int name_ok = valid_plugin_name(cname, len);
    PyObject *fspath = NULL;
    if (path != Py_None && !PyUnicode_FSConverter(path, &fspath))
        return NULL;
    const char *cpath = fspath ? PyBytes_AS_STRING(fspath) : NULL;
    if (fspath && strlen(cpath) != (size_t)PyBytes_GET_SIZE(fspath)) {
        Py_DECREF(fspath);
        PyErr_SetString(PyExc_ValueError, "plugin(): embedded null byte in path");
        return NULL;
    }
    gfl_plugin *p;
    char why[1024] = "";
    /* dlopen and the plugin's init may take a while: without the GIL (the
     * last error is per thread, so read it here). */
    Py_BEGIN_ALLOW_THREADS
    p = (name_ok || (size_t)len == strlen(cname)) ? API->plugin_load(cname, cpath) : NULL;
    if (!p) {
        const char *e = API->plugin_last_error();
        snprintf(why, sizeof why, "%s", e ? e : "");
    }
    Py_END_ALLOW_THREADS
    if (!p) {
        if (!why[0])
            snprintf(why, sizeof why, "invalid plugin name: use 1 to %d characters from A-Z, a-z, 0-9 and _",
                     PLUGIN_NAME_MAX);
        if (!name_ok) {
            PyErr_SetString(PyExc_ValueError, why);
        } else {
            PyObject *msg = PyUnicode_FromString(why);
            if (msg) {
                PyErr_SetImportError(msg, name, fspath ? path : NULL);
                Py_DECREF(msg);
            }
        }
        Py_XDECREF(fspath);
        return NULL;
    }
    Py_XDECREF(fspath);
    plugin_object *self = PyObject_GC_New(plugin_object, plugin_type);
    if (!self) {
        API->plugin_unload(p);
        return NULL;
    }
    self->plugin = p;
    Py_INCREF(name);
    self->name = name;
    Py_XINCREF(loop);
    self->loop = loop;
    self->weakreflist = NULL;
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

PyMethodDef gflpy_plugin_methods[] = {
    {"plugin", (PyCFunction)(void (*)(void))mod_plugin, METH_VARARGS | METH_KEYWORDS,
     "plugin(name, path=None, *, loop=None)\n--\n\n"
     "Loads the C plugin name (from path, else $GFL_PLUGIN_PATH, else the installed\n"
     "plugin directory) and returns it as a module-like object: its functions are\n"
     "attributes. Sync functions return values, async ones awaitables. Calls run on\n"
     "the running globeflower loop (or the thread's current one, or loop=)."},
    {NULL, NULL, 0, NULL},
};

int gflpy_plugin_init(PyObject *module)
{
    str_loop = PyUnicode_InternFromString("loop");
    if (!str_loop)
        return -1;
    plugin_type = (PyTypeObject *)PyType_FromSpec(&plugin_spec);
    function_type = plugin_type ? (PyTypeObject *)PyType_FromSpec(&function_spec) : NULL;
    if (!function_type)
        return -1;
    Py_INCREF(plugin_type);
    if (PyModule_AddObject(module, "Plugin", (PyObject *)plugin_type) < 0) {
        Py_DECREF(plugin_type);
        return -1;
    }
    return PyModule_AddFunctions(module, gflpy_plugin_methods);
}
