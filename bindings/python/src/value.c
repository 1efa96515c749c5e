/*
 * Python objects <-> gfl_values, following docs/hosts.md ("Data" and
 * "Errors"): what crosses to other hosts (Lua, C, plugins) through the
 * loop's export registry and plugin calls.
 *
 *  - Conversions are deep copies. Python -> value stops with a ValueError
 *    at a list/dict that contains itself or at nesting deeper than
 *    GFL_VALUE_MAX_DEPTH, releasing everything converted so far.
 *  - Objects that are not data cross as OBJECT values of the "python" host
 *    class and come home as the very same object. Other hosts' objects
 *    arrive as globeflower.ForeignObject proxies holding the very value,
 *    which is what they turn back into.
 *  - An exception becomes an ERROR value whose cause is the exception
 *    itself (an OBJECT), so it is raised again as itself when it returns.
 *    An exception made here from another host's ERROR keeps that value
 *    (in its __dict__), so re-raising it toward the core sends the value on.
 */
#include "gflpy.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

gflpy_hosts_refs gflpy_hosts;
PyTypeObject *gflpy_ForeignObjectType;

/* Where an exception made from a value keeps it (a capsule). */
#define VALUE_ATTR "__gfl_value__"
#define VALUE_CAPSULE "globeflower.value"

/* Containers up to this size convert with item arrays on the stack. */
#define SMALL_CONTAINER 16

int gflpy_hosts_available(void)
{
    if (GFL_API_HAS(API, loop_acquire) && gflpy_hosts.RemoteError)
        return 1;
    PyErr_SetString(PyExc_RuntimeError,
                    gflpy_hosts.RemoteError ? "globeflower: the core library predates ABI 1.3 (no export registry)"
                                            : "globeflower: the package's Python layer is not set up");
    return 0;
}

/* ------------------------------------------------------------------ */
/* The "python" host class                                              */

/* Called by gfl_value_object, which only this extension calls with our
 * class, always holding the GIL. */
static void py_object_ref(void *object)
{
    Py_INCREF((PyObject *)object);
}

/* Values cross threads and may outlive the interpreter: take the GIL
 * ourselves, and once Python is finalizing leave the object alone (a
 * deliberate leak: decref-ing into a dying interpreter could crash). */
static void py_object_unref(void *object)
{
    if (!gflpy_interpreter_alive())
        return;
    PyGILState_STATE g = PyGILState_Ensure();
    Py_DECREF((PyObject *)object);
    PyGILState_Release(g);
}

const gfl_host_class gflpy_host_class = {
    sizeof(gfl_host_class),
    "python",
    py_object_ref,
    py_object_unref,
};

static gfl_value *no_memory(void)
{
    PyErr_NoMemory();
    return NULL;
}

static gfl_value *made(gfl_value *v)
{
    return v ? v : no_memory();
}

static gfl_value *object_value(PyObject *o)
{
    return made(API->value_object(&gflpy_host_class, o));
}

/* ------------------------------------------------------------------ */
/* globeflower.ForeignObject: another host's object                     */

typedef struct {
    PyObject_HEAD
    gfl_value *value; /* an OBJECT value of another host class */
} foreign_object;

static PyObject *foreign_new(gfl_value *v)
{
    foreign_object *self = PyObject_New(foreign_object, gflpy_ForeignObjectType);
    if (!self)
        return NULL;
    self->value = API->value_ref(v);
    return (PyObject *)self;
}

static void foreign_dealloc(foreign_object *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    API->value_unref(self->value);
    PyObject_Free(self);
    Py_DECREF(tp);
}

/* The foreign object's address: what identifies it across hops. */
static void *foreign_address(const foreign_object *self)
{
    void *object = NULL;
    API->value_get_object(self->value, API->value_object_class(self->value), &object);
    return object;
}

static const char *foreign_host(const foreign_object *self)
{
    const gfl_host_class *cls = API->value_object_class(self->value);
    return cls && cls->name ? cls->name : "?";
}

static PyObject *foreign_repr(foreign_object *self)
{
    return PyUnicode_FromFormat("<globeflower.ForeignObject of host '%s' at %p>", foreign_host(self),
                                foreign_address(self));
}

/* Two proxies are equal when they stand for the same object of the same
 * host (each crossing of that object may bring a new value). */
static PyObject *foreign_richcompare(PyObject *a, PyObject *b, int op)
{
    if ((op != Py_EQ && op != Py_NE) || Py_TYPE(b) != Py_TYPE(a))
        Py_RETURN_NOTIMPLEMENTED;
    foreign_object *x = (foreign_object *)a, *y = (foreign_object *)b;
    int same = API->value_object_class(x->value) == API->value_object_class(y->value) &&
               foreign_address(x) == foreign_address(y);
    return PyBool_FromLong(op == Py_EQ ? same : !same);
}

static Py_hash_t foreign_hash(foreign_object *self)
{
    uintptr_t h = (uintptr_t)foreign_address(self) >> 4;
    h ^= (uintptr_t)API->value_object_class(self->value);
    Py_hash_t r = (Py_hash_t)h;
    return r == -1 ? -2 : r;
}

static PyObject *foreign_get_host(foreign_object *self, void *c)
{
    (void)c;
    return PyUnicode_FromString(foreign_host(self));
}

static PyGetSetDef foreign_getset[] = {
    {"host", (getter)foreign_get_host, NULL, "The name of the host class owning the object (e.g. \"lua\").", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyObject *foreign_tp_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    (void)type;
    (void)args;
    (void)kwds;
    PyErr_SetString(PyExc_TypeError, "globeflower.ForeignObject cannot be created from Python: "
                                     "another host's objects arrive as ForeignObjects");
    return NULL;
}

static PyType_Slot foreign_slots[] = {
    {Py_tp_new, foreign_tp_new},
    {Py_tp_dealloc, foreign_dealloc},
    {Py_tp_repr, foreign_repr},
    {Py_tp_richcompare, foreign_richcompare},
    {Py_tp_hash, foreign_hash},
    {Py_tp_getset, foreign_getset},
    {Py_tp_doc, "An object of another host (Lua, C, ...) that crossed into Python.\n\n"
                "It is opaque here; sending it back to any host sends the very value it came as,\n"
                "so its own host gets its original object back."},
    {0, NULL},
};

static PyType_Spec foreign_spec = {
    "globeflower.ForeignObject",
    sizeof(foreign_object),
    0,
    Py_TPFLAGS_DEFAULT,
    foreign_slots,
};

/* ------------------------------------------------------------------ */
/* Python -> gfl_value                                                  */

/* The containers being converted, outermost first: a cycle is a container
 * met again inside itself; the path is at most GFL_VALUE_MAX_DEPTH long. */
struct conversion {
    PyObject *path[GFL_VALUE_MAX_DEPTH];
    int depth;
};

static gfl_value *convert(PyObject *o, struct conversion *c);

static int enter(struct conversion *c, PyObject *container)
{
    for (int i = 0; i < c->depth; i++) {
        if (c->path[i] == container) {
            PyErr_Format(PyExc_ValueError, "cannot convert to a globeflower value: the %s contains itself",
                         Py_TYPE(container)->tp_name);
            return -1;
        }
    }
    if (c->depth >= GFL_VALUE_MAX_DEPTH) {
        PyErr_Format(PyExc_ValueError,
                     "cannot convert to a globeflower value: nested deeper than %d levels (GFL_VALUE_MAX_DEPTH)",
                     GFL_VALUE_MAX_DEPTH);
        return -1;
    }
    c->path[c->depth++] = container;
    return 0;
}

static void unref_all(gfl_value **items, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        API->value_unref(items[i]);
}

/* A strong reference to item i of a list or tuple, or NULL with an error
 * when a list changed size (converting an exception runs Python code). */
static PyObject *sequence_item(PyObject *seq, Py_ssize_t i, Py_ssize_t n)
{
    if (PyList_Check(seq)) {
        if (PyList_GET_SIZE(seq) != n) {
            PyErr_SetString(PyExc_RuntimeError, "list changed size during conversion to a globeflower value");
            return NULL;
        }
        PyObject *item = PyList_GET_ITEM(seq, i);
        Py_INCREF(item);
        return item;
    }
    PyObject *item = PyTuple_GET_ITEM(seq, i);
    Py_INCREF(item);
    return item;
}

static gfl_value *convert_sequence(PyObject *seq, struct conversion *c)
{
    if (enter(c, seq) < 0)
        return NULL;
    Py_ssize_t n = PyList_Check(seq) ? PyList_GET_SIZE(seq) : PyTuple_GET_SIZE(seq);
    gfl_value *small[SMALL_CONTAINER], **items = small;
    gfl_value *out = NULL;
    Py_ssize_t done = 0;
    if (n > SMALL_CONTAINER && !(items = PyMem_Malloc((size_t)n * sizeof *items))) {
        PyErr_NoMemory();
        goto out;
    }
    for (; done < n; done++) {
        PyObject *item = sequence_item(seq, done, n);
        if (!item)
            goto out;
        items[done] = convert(item, c);
        Py_DECREF(item);
        if (!items[done])
            goto out;
    }
    out = made(API->value_array(items, (size_t)n));
out:
    unref_all(items, done);
    if (items != small)
        PyMem_Free(items);
    c->depth--;
    return out;
}

static gfl_value *convert_dict(PyObject *dict, struct conversion *c)
{
    if (enter(c, dict) < 0)
        return NULL;
    Py_ssize_t n = PyDict_GET_SIZE(dict);
    gfl_value *small[2 * SMALL_CONTAINER], **keys = small, **values = small + n;
    gfl_value *out = NULL;
    Py_ssize_t done = 0, pos = 0;
    if (n > SMALL_CONTAINER) {
        if (!(keys = PyMem_Malloc(2 * (size_t)n * sizeof *keys))) {
            keys = values = small; /* nothing to release */
            PyErr_NoMemory();
            goto out;
        }
        values = keys + n;
    }
    PyObject *k, *v;
    while (done < n && PyDict_Next(dict, &pos, &k, &v)) {
        /* Strong references: converting may run Python code that changes
         * the dict (then we stop, as iterating it would). */
        Py_INCREF(k);
        Py_INCREF(v);
        keys[done] = convert(k, c);
        values[done] = keys[done] ? convert(v, c) : NULL;
        Py_DECREF(k);
        Py_DECREF(v);
        if (!values[done]) {
            API->value_unref(keys[done]);
            goto out;
        }
        done++;
        if (PyDict_GET_SIZE(dict) != n) {
            PyErr_SetString(PyExc_RuntimeError, "dictionary changed size during conversion to a globeflower value");
            goto out;
        }
    }
    if (done != n) {
        PyErr_SetString(PyExc_RuntimeError, "dictionary changed during conversion to a globeflower value");
        goto out;
    }
    out = made(API->value_map(keys, values, (size_t)n));
out:
    unref_all(keys, done);
    unref_all(values, done);
    if (keys != small)
        PyMem_Free(keys);
    c->depth--;
    return out;
}

static gfl_value *convert_buffer(PyObject *o)
{
    Py_buffer view;
    if (PyObject_GetBuffer(o, &view, PyBUF_SIMPLE) == 0) {
        gfl_value *v = made(API->value_bytes(view.buf, (size_t)view.len));
        PyBuffer_Release(&view);
        return v;
    }
    /* A non-contiguous memoryview: copy it out first. */
    PyErr_Clear();
    PyObject *b = PyBytes_FromObject(o);
    if (!b)
        return NULL;
    gfl_value *v = made(API->value_bytes(PyBytes_AS_STRING(b), (size_t)PyBytes_GET_SIZE(b)));
    Py_DECREF(b);
    return v;
}

static gfl_value *convert_str(PyObject *o)
{
    Py_ssize_t len;
    const char *s = PyUnicode_AsUTF8AndSize(o, &len);
    if (s)
        return made(API->value_string(s, (size_t)len));
    /* Lone surrogates: what decoding invalid UTF-8 with surrogateescape
     * made goes back to those bytes; anything else raises. */
    if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError))
        return NULL;
    PyErr_Clear();
    PyObject *b = PyUnicode_AsEncodedString(o, "utf-8", "surrogateescape");
    if (!b)
        return NULL;
    gfl_value *v = made(API->value_string(PyBytes_AS_STRING(b), (size_t)PyBytes_GET_SIZE(b)));
    Py_DECREF(b);
    return v;
}

static gfl_value *convert(PyObject *o, struct conversion *c)
{
    if (o == Py_None)
        return API->value_nil();
    if (PyBool_Check(o))
        return API->value_bool(o == Py_True);
    if (PyLong_Check(o)) {
        int overflow;
        long long n = PyLong_AsLongLongAndOverflow(o, &overflow);
        if (overflow)
            return object_value(o); /* beyond int64: opaque, comes back as itself */
        if (n == -1 && PyErr_Occurred())
            return NULL;
        return made(API->value_int(n));
    }
    if (PyFloat_Check(o))
        return made(API->value_double(PyFloat_AS_DOUBLE(o)));
    if (PyUnicode_Check(o))
        return convert_str(o);
    if (PyBytes_Check(o))
        return made(API->value_bytes(PyBytes_AS_STRING(o), (size_t)PyBytes_GET_SIZE(o)));
    if (PyList_Check(o) || PyTuple_Check(o))
        return convert_sequence(o, c);
    if (PyDict_Check(o))
        return convert_dict(o, c);
    if (PyByteArray_Check(o) || PyMemoryView_Check(o))
        return convert_buffer(o);
    if (Py_TYPE(o) == gflpy_ForeignObjectType)
        return API->value_ref(((foreign_object *)o)->value);
    if (PyExceptionInstance_Check(o))
        return gflpy_error_from_exception(o);
    return object_value(o);
}

gfl_value *gflpy_to_value(PyObject *o)
{
    struct conversion c;
    c.depth = 0;
    return convert(o, &c);
}

/* ------------------------------------------------------------------ */
/* Exceptions -> ERROR values                                           */

/* The value an exception was made from (a new reference), NULL if none
 * (no error set) or on error. */
static gfl_value *kept_value(PyObject *exc)
{
    PyObject *dict = PyObject_GenericGetDict(exc, NULL);
    if (!dict) {
        PyErr_Clear();
        return NULL;
    }
    PyObject *cap = PyDict_GetItemString(dict, VALUE_ATTR);
    gfl_value *v = NULL;
    if (cap && PyCapsule_IsValid(cap, VALUE_CAPSULE))
        v = API->value_ref(PyCapsule_GetPointer(cap, VALUE_CAPSULE));
    Py_DECREF(dict);
    return v;
}

/* A UTF-8 copy of str(o) as the caller's PyObject (`*keep`), or NULL. */
static const char *utf8_of(PyObject *s, PyObject **keep)
{
    *keep = NULL;
    if (!s)
        return NULL;
    const char *text = PyUnicode_AsUTF8(s);
    if (text) {
        *keep = s;
        return text;
    }
    PyErr_Clear();
    PyObject *b = PyUnicode_AsEncodedString(s, "utf-8", "backslashreplace");
    Py_DECREF(s);
    if (!b) {
        PyErr_Clear();
        return NULL;
    }
    *keep = b;
    return PyBytes_AS_STRING(b);
}

/* traceback.format_exception(type, exc, tb) joined, or NULL (cleared). */
static PyObject *formatted_traceback(PyObject *exc)
{
    if (!gflpy_hosts.format_exception)
        return NULL;
    PyObject *tb = PyException_GetTraceback(exc);
    PyObject *lines = PyObject_CallFunctionObjArgs(gflpy_hosts.format_exception, (PyObject *)Py_TYPE(exc), exc,
                                                   tb ? tb : Py_None, NULL);
    Py_XDECREF(tb);
    PyObject *empty = lines ? PyUnicode_FromString("") : NULL;
    PyObject *text = empty ? PyUnicode_Join(empty, lines) : NULL;
    Py_XDECREF(empty);
    Py_XDECREF(lines);
    if (!text)
        PyErr_Clear();
    return text;
}

/* -errno for an OSError with one, GFL_ECANCELED for a cancellation, else
 * GFL_EUNKNOWN. */
static int error_code(PyObject *exc)
{
    if (gflpy_hosts.CancelledError && PyObject_TypeCheck(exc, (PyTypeObject *)gflpy_hosts.CancelledError))
        return GFL_ECANCELED;
    if (!PyObject_TypeCheck(exc, (PyTypeObject *)PyExc_OSError))
        return GFL_EUNKNOWN;
    PyObject *e = PyObject_GetAttrString(exc, "errno");
    long n = e && PyLong_Check(e) ? PyLong_AsLong(e) : 0;
    Py_XDECREF(e);
    PyErr_Clear();
    return n > 0 && n < -GFL_EUNKNOWN ? (int)-n : GFL_EUNKNOWN;
}

/* The class name without its module ("KeyError", "CancelledError"). */
static const char *class_name(PyObject *exc)
{
    const char *name = Py_TYPE(exc)->tp_name;
    const char *dot = strrchr(name, '.');
    return dot ? dot + 1 : name;
}

/* A str attribute of a RemoteError (a new reference), or NULL (cleared). */
static PyObject *str_attr(PyObject *exc, const char *name)
{
    PyObject *a = PyObject_GetAttrString(exc, name);
    if (a && PyUnicode_Check(a))
        return a;
    Py_XDECREF(a);
    PyErr_Clear();
    return NULL;
}

gfl_value *gflpy_error_from_exception(PyObject *exc)
{
    gfl_value *kept = kept_value(exc);
    if (kept)
        return kept;
    int code = error_code(exc);
    const char *type = class_name(exc);
    PyObject *keep_type = NULL, *keep_message, *keep_tb;
    const char *message = NULL, *traceback = NULL;
    if (PyObject_TypeCheck(exc, (PyTypeObject *)gflpy_hosts.RemoteError)) {
        /* One the program raised itself, RemoteError(type, message, ...):
         * it says what to send. */
        const char *t = utf8_of(str_attr(exc, "type"), &keep_type);
        if (t)
            type = t;
        message = utf8_of(str_attr(exc, "message"), &keep_message);
        traceback = utf8_of(str_attr(exc, "traceback"), &keep_tb);
        PyObject *c = PyObject_GetAttrString(exc, "code");
        long n = c && PyLong_Check(c) ? PyLong_AsLong(c) : 0;
        Py_XDECREF(c);
        PyErr_Clear();
        if (n < 0 && n >= INT32_MIN)
            code = (int)n;
    } else {
        message = utf8_of(PyObject_Str(exc), &keep_message);
        keep_tb = NULL;
    }
    if (!traceback)
        traceback = utf8_of(formatted_traceback(exc), &keep_tb);
    if (!message) {
        PyErr_Clear();
        message = "<exception str() failed>";
    }
    gfl_value *cause = API->value_object(&gflpy_host_class, exc);
    gfl_value *v = cause ? API->value_error_ex(code, type, message, traceback, cause) : NULL;
    API->value_unref(cause);
    Py_XDECREF(keep_type);
    Py_XDECREF(keep_message);
    Py_XDECREF(keep_tb);
    return made(v);
}

gfl_value *gflpy_error_from_raised(PyObject **exc_out)
{
    PyObject *type, *exc, *tb;
    PyErr_Fetch(&type, &exc, &tb);
    PyErr_NormalizeException(&type, &exc, &tb);
    if (exc && tb)
        PyException_SetTraceback(exc, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    gfl_value *v = exc ? gflpy_error_from_exception(exc) : NULL;
    if (!v) {
        PyErr_Clear();
        v = API->value_error(GFL_ENOMEM, "MemoryError", NULL, NULL);
    }
    if (exc_out)
        *exc_out = exc;
    else
        Py_XDECREF(exc);
    return v;
}

/* ------------------------------------------------------------------ */
/* ERROR values -> exceptions                                           */

/* A builtin Exception subclass called `type` (never one that stops the
 * program, such as SystemExit: another host's error must not exit us). */
static PyObject *builtin_class(const char *type)
{
    PyObject *builtins = PyEval_GetBuiltins(); /* borrowed */
    PyObject *cls = builtins ? PyDict_GetItemString(builtins, type) : NULL;
    if (!cls || !PyType_Check(cls) || !PyType_IsSubtype((PyTypeObject *)cls, (PyTypeObject *)PyExc_Exception))
        return NULL;
    Py_INCREF(cls);
    return cls;
}

static void capsule_release(PyObject *cap)
{
    API->value_unref(PyCapsule_GetPointer(cap, VALUE_CAPSULE));
}

static int keep_value(PyObject *exc, gfl_value *error)
{
    PyObject *cap = PyCapsule_New(API->value_ref(error), VALUE_CAPSULE, capsule_release);
    if (!cap) {
        API->value_unref(error);
        return -1;
    }
    int rc = PyObject_SetAttrString(exc, VALUE_ATTR, cap);
    Py_DECREF(cap);
    return rc;
}

/* A new instance of the exception a foreign ERROR value stands for. */
static PyObject *new_exception(gfl_value *error)
{
    int code = API->value_error_code(error);
    const char *type = API->value_error_type(error);
    const char *message = API->value_error_message(error);
    const char *traceback = API->value_error_traceback(error);
    PyObject *text = PyUnicode_DecodeUTF8(message, (Py_ssize_t)strlen(message), "surrogateescape");
    if (!text)
        return NULL;
    PyObject *exc = NULL;
    if (strcmp(type, "CancelledError") == 0) {
        exc = PyObject_CallOneArg(gflpy_hosts.CancelledError, text);
    } else {
        PyObject *cls = builtin_class(type);
        if (cls) {
            /* OSError(errno, text) picks its subclass and keeps errno. */
            int is_os = PyType_IsSubtype((PyTypeObject *)cls, (PyTypeObject *)PyExc_OSError);
            if (is_os && code > GFL_EUNKNOWN)
                exc = PyObject_CallFunction(cls, "iO", -code, text);
            else
                exc = PyObject_CallOneArg(cls, text);
            Py_DECREF(cls);
            if (!exc)
                PyErr_Clear(); /* a class wanting other arguments: RemoteError */
        }
    }
    if (!exc)
        exc = PyObject_CallFunction(gflpy_hosts.RemoteError, "sOzi", type, text, traceback, code);
    Py_DECREF(text);
    return exc;
}

PyObject *gflpy_exception_from_error(gfl_value *error)
{
    gfl_value *cause = API->value_error_cause(error);
    void *object;
    if (cause && API->value_get_object(cause, &gflpy_host_class, &object) == 0 &&
        PyExceptionInstance_Check((PyObject *)object)) {
        Py_INCREF((PyObject *)object);
        return object; /* our own exception, home again */
    }
    PyObject *exc = new_exception(error);
    if (exc && keep_value(exc, error) < 0)
        Py_CLEAR(exc);
    return exc;
}

PyObject *gflpy_raise_error_value(gfl_value *error)
{
    PyObject *exc = gflpy_exception_from_error(error);
    if (exc) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    return NULL;
}

/* ------------------------------------------------------------------ */
/* gfl_value -> Python                                                  */

static PyObject *from_array(gfl_value *v)
{
    int64_t n = API->value_length(v);
    PyObject *list = PyList_New((Py_ssize_t)n);
    if (!list)
        return NULL;
    for (int64_t i = 0; i < n; i++) {
        PyObject *item = gflpy_from_value(API->value_array_get(v, (size_t)i));
        if (!item) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, item);
    }
    return list;
}

static PyObject *from_map(gfl_value *v)
{
    int64_t n = API->value_length(v);
    PyObject *dict = PyDict_New();
    if (!dict)
        return NULL;
    for (int64_t i = 0; i < n; i++) {
        gfl_value *k, *val;
        API->value_map_entry(v, (size_t)i, &k, &val);
        PyObject *key = gflpy_from_value(k);
        PyObject *item = key ? gflpy_from_value(val) : NULL;
        /* Duplicate keys: the first wins, as gfl_value_map_find does. An
         * unhashable key (a list made from an ARRAY) is a TypeError. */
        PyObject *r = item ? PyDict_SetDefault(dict, key, item) : NULL;
        Py_XDECREF(key);
        Py_XDECREF(item);
        if (!r) {
            Py_DECREF(dict);
            return NULL;
        }
    }
    return dict;
}

PyObject *gflpy_from_value(gfl_value *v)
{
    switch (API->value_type_of(v)) {
    case GFL_VALUE_NIL:
        Py_RETURN_NONE;
    case GFL_VALUE_BOOL: {
        int b = 0;
        API->value_get_bool(v, &b);
        return PyBool_FromLong(b);
    }
    case GFL_VALUE_INT: {
        int64_t n = 0;
        API->value_get_int(v, &n);
        return PyLong_FromLongLong(n);
    }
    case GFL_VALUE_DOUBLE: {
        double d = 0;
        API->value_get_double(v, &d);
        return PyFloat_FromDouble(d);
    }
    case GFL_VALUE_BYTES:
    case GFL_VALUE_STRING: {
        const char *data;
        size_t len;
        API->value_get_bytes(v, &data, &len);
        if (API->value_type_of(v) == GFL_VALUE_BYTES)
            return PyBytes_FromStringAndSize(data, (Py_ssize_t)len);
        return PyUnicode_DecodeUTF8(data, (Py_ssize_t)len, "surrogateescape");
    }
    case GFL_VALUE_ARRAY:
        return from_array(v);
    case GFL_VALUE_MAP:
        return from_map(v);
    case GFL_VALUE_ERROR:
        return gflpy_exception_from_error(v);
    case GFL_VALUE_OBJECT: {
        void *object;
        if (API->value_get_object(v, &gflpy_host_class, &object) == 0) {
            Py_INCREF((PyObject *)object);
            return object;
        }
        return foreign_new(v);
    }
    default:
        return PyErr_Format(PyExc_TypeError, "globeflower: a value of unknown type %d", API->value_type_of(v));
    }
}

/* ------------------------------------------------------------------ */
/* Test hooks (tests/python/test_hosts.py): a C "test" host's objects   */

static int test_objects_live;

static void test_object_unref(void *object)
{
    PyMem_RawFree(object);
    __atomic_fetch_sub(&test_objects_live, 1, __ATOMIC_RELAXED);
}

static const gfl_host_class test_host_class = {sizeof(gfl_host_class), "test", NULL, test_object_unref};

/* _test_foreign(): a ForeignObject for a new object of the "test" host. */
static PyObject *mod_test_foreign(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    if (!gflpy_hosts_available())
        return NULL;
    void *object = PyMem_RawMalloc(1);
    gfl_value *v = object ? API->value_object(&test_host_class, object) : NULL;
    if (!v) {
        PyMem_RawFree(object);
        return PyErr_NoMemory();
    }
    __atomic_fetch_add(&test_objects_live, 1, __ATOMIC_RELAXED);
    PyObject *proxy = foreign_new(v);
    API->value_unref(v);
    return proxy;
}

/* _test_foreign_live(): how many "test" host objects are alive. */
static PyObject *mod_test_foreign_live(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    return PyLong_FromLong(__atomic_load_n(&test_objects_live, __ATOMIC_RELAXED));
}

static void *unref_thread(void *v)
{
    API->value_unref(v);
    return NULL;
}

/* _test_unref_in_thread(obj): obj as a value, whose last reference is
 * dropped by a new thread with no Python thread state (as a C host's
 * thread or the core's pool would), while this one waits without the GIL. */
static PyObject *mod_test_unref_in_thread(PyObject *self, PyObject *o)
{
    (void)self;
    if (!gflpy_hosts_available())
        return NULL;
    gfl_value *v = gflpy_to_value(o);
    if (!v)
        return NULL;
    pthread_t t;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = pthread_create(&t, NULL, unref_thread, v);
    if (rc == 0)
        pthread_join(t, NULL);
    Py_END_ALLOW_THREADS
    if (rc != 0) {
        API->value_unref(v);
        errno = rc;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

/* _roundtrip(obj): obj -> gfl_value -> a new Python object. */
static PyObject *mod_roundtrip(PyObject *self, PyObject *o)
{
    (void)self;
    if (!gflpy_hosts_available())
        return NULL;
    gfl_value *v = gflpy_to_value(o);
    if (!v)
        return NULL;
    PyObject *r = gflpy_from_value(v);
    API->value_unref(v);
    return r;
}

/* _error_fields(exc): (code, type, message, traceback, cause is exc) of
 * the ERROR value an exception crosses as. */
static PyObject *mod_error_fields(PyObject *self, PyObject *exc)
{
    (void)self;
    if (!gflpy_hosts_available())
        return NULL;
    if (!PyExceptionInstance_Check(exc))
        return PyErr_Format(PyExc_TypeError, "_error_fields() takes an exception");
    gfl_value *v = gflpy_error_from_exception(exc);
    if (!v)
        return NULL;
    const char *tb = API->value_error_traceback(v);
    gfl_value *cause = API->value_error_cause(v);
    void *object = NULL;
    int own = cause && API->value_get_object(cause, &gflpy_host_class, &object) == 0 && object == exc;
    PyObject *r = Py_BuildValue("(isszO)", API->value_error_code(v), API->value_error_type(v),
                                API->value_error_message(v), tb, own ? Py_True : Py_False);
    API->value_unref(v);
    return r;
}

/* _make_error(code, type, message, traceback=None): the exception Python
 * raises for an ERROR value another host made (no Python cause). */
static PyObject *mod_make_error(PyObject *self, PyObject *args)
{
    (void)self;
    int code;
    const char *type, *message, *tb = NULL;
    if (!PyArg_ParseTuple(args, "iss|z", &code, &type, &message, &tb))
        return NULL;
    if (!gflpy_hosts_available())
        return NULL;
    gfl_value *v = API->value_error(code, type, message, tb);
    if (!v)
        return PyErr_Format(PyExc_ValueError, "bad error value (the code must be negative)");
    PyObject *exc = gflpy_exception_from_error(v);
    API->value_unref(v);
    return exc;
}

/* ------------------------------------------------------------------ */
/* Set-up                                                              */

static int need_ref(PyObject *ns, const char *name, PyObject **out)
{
    PyObject *v = PyDict_GetItemString(ns, name);
    if (!v) {
        PyErr_Format(PyExc_KeyError, "globeflower._core._hosts_setup: missing %s", name);
        return -1;
    }
    Py_INCREF(v);
    Py_XSETREF(*out, v);
    return 0;
}

/* _hosts_setup(dict): globeflower/_hosts.py hands over its helpers. */
PyObject *gflpy_hosts_setup(PyObject *module, PyObject *ns)
{
    (void)module;
    if (!PyDict_Check(ns))
        return PyErr_Format(PyExc_TypeError, "_hosts_setup() takes a dict");
    if (need_ref(ns, "CancelledError", &gflpy_hosts.CancelledError) < 0 ||
        need_ref(ns, "format_exception", &gflpy_hosts.format_exception) < 0 ||
        need_ref(ns, "get_running_loop", &gflpy_hosts.get_running_loop) < 0 ||
        need_ref(ns, "thread_loop", &gflpy_hosts.thread_loop) < 0 ||
        need_ref(ns, "is_async", &gflpy_hosts.is_async) < 0 ||
        need_ref(ns, "ensure_future", &gflpy_hosts.ensure_future) < 0 ||
        need_ref(ns, "RemoteError", &gflpy_hosts.RemoteError) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef value_methods[] = {
    {"_roundtrip", mod_roundtrip, METH_O, "Internal (tests): converts to a gfl_value and back."},
    {"_test_foreign", mod_test_foreign, METH_NOARGS, "Internal (tests): a ForeignObject of a C \"test\" host."},
    {"_test_foreign_live", mod_test_foreign_live, METH_NOARGS, "Internal (tests): live \"test\" host objects."},
    {"_test_unref_in_thread", mod_test_unref_in_thread, METH_O,
     "Internal (tests): drops a value holding obj in a thread without a Python thread state."},
    {"_error_fields", mod_error_fields, METH_O, "Internal (tests): the ERROR value an exception crosses as."},
    {"_make_error", mod_make_error, METH_VARARGS, "Internal (tests): the exception for another host's ERROR value."},
    {NULL, NULL, 0, NULL},
};

int gflpy_value_init(PyObject *module)
{
    gflpy_ForeignObjectType = (PyTypeObject *)PyType_FromSpec(&foreign_spec);
    if (!gflpy_ForeignObjectType)
        return -1;
    Py_INCREF(gflpy_ForeignObjectType);
    if (PyModule_AddObject(module, "ForeignObject", (PyObject *)gflpy_ForeignObjectType) < 0) {
        Py_DECREF(gflpy_ForeignObjectType);
        return -1;
    }
    return PyModule_AddFunctions(module, value_methods);
}

gfl_value **gflpy_values_from_args(PyObject *const *args, size_t n, gfl_value **small, size_t nsmall)
{
    gfl_value **vals = n <= nsmall ? small : PyMem_Malloc(n * sizeof *vals);
    if (!vals) {
        PyErr_NoMemory();
        return NULL;
    }
    for (size_t done = 0; done < n; done++) {
        if (!(vals[done] = gflpy_to_value(args[done]))) {
            gflpy_values_drop(vals, done, small);
            return NULL;
        }
    }
    return vals;
}

void gflpy_values_drop(gfl_value **vals, size_t n, gfl_value **small)
{
    for (size_t i = 0; i < n; i++)
        API->value_unref(vals[i]);
    if (vals != small)
        PyMem_Free(vals);
}
