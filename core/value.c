/*
 * gfl_value: tagged, immutable, reference-counted values.
 *
 * Values are loop-independent (a Python future may hold a value a Lua task
 * made, and the thread pool creates them in worker threads), so they use the
 * C library's allocator and atomic reference counts. Every value is a common
 * header followed by a per-type payload in the same allocation; nil, true and
 * false are static, immortal singletons.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

struct gfl_value {
    atomic_size_t refs;
    uint8_t type;   /* gfl_value_type */
    bool immortal;  /* static singleton: ref/unref do nothing */
};

struct gfl_value_bool {
    struct gfl_value header;
    int truth;
};

struct gfl_value_int {
    struct gfl_value header;
    int64_t number;
};

struct gfl_value_double {
    struct gfl_value header;
    double number;
};

/* Bytes and strings: the data follows the header, NUL-terminated. */
struct gfl_value_bytes {
    struct gfl_value header;
    size_t len;
    char data[];
};

/* The strings live in `storage`, right after the struct. */
struct gfl_value_error {
    struct gfl_value header;
    int code;
    const char *type;
    const char *message;
    const char *traceback; /* may be NULL */
    gfl_value *cause;      /* a reference, or NULL */
    char storage[];
};

struct gfl_value_object {
    struct gfl_value header;
    const gfl_host_class *cls;
    void *object;
};

/* Arrays and maps: the items (keys then values for a map: 2n references)
 * follow the header. `depth` is 1 + the deepest item's depth. */
struct gfl_value_container {
    struct gfl_value header;
    size_t n;   /* items, or entries of a map */
    int depth;
    gfl_value *items[];
};

static struct gfl_value nil_value = {1, GFL_VALUE_NIL, true};
static struct gfl_value_bool true_value = {{1, GFL_VALUE_BOOL, true}, 1};
static struct gfl_value_bool false_value = {{1, GFL_VALUE_BOOL, true}, 0};

/* A fresh header-initialised allocation of `size` bytes, or NULL. */
static void *value_alloc(size_t size, gfl_value_type type)
{
    struct gfl_value *v = malloc(size);
    if (!v)
        return NULL;
    atomic_init(&v->refs, 1);
    v->type = (uint8_t)type;
    v->immortal = false;
    return v;
}

gfl_value *gfl_value_nil(void)
{
    return &nil_value;
}

gfl_value *gfl_value_bool(int b)
{
    return b ? &true_value.header : &false_value.header;
}

gfl_value *gfl_value_int(int64_t i)
{
    struct gfl_value_int *v = value_alloc(sizeof *v, GFL_VALUE_INT);
    if (!v)
        return NULL;
    v->number = i;
    return &v->header;
}

gfl_value *gfl_value_double(double d)
{
    struct gfl_value_double *v = value_alloc(sizeof *v, GFL_VALUE_DOUBLE);
    if (!v)
        return NULL;
    v->number = d;
    return &v->header;
}

static gfl_value *make_bytes(const void *data, size_t len, gfl_value_type type)
{
    if (!data && len > 0)
        return NULL;
    if (len > SIZE_MAX - sizeof(struct gfl_value_bytes) - 1)
        return NULL;
    struct gfl_value_bytes *v =
        value_alloc(sizeof *v + len + 1, type);
    if (!v)
        return NULL;
    v->len = len;
    if (len > 0)
        memcpy(v->data, data, len);
    v->data[len] = '\0';
    return &v->header;
}

gfl_value *gfl_value_bytes(const void *data, size_t len)
{
    return make_bytes(data, len, GFL_VALUE_BYTES);
}

gfl_value *gfl_value_string(const char *text, size_t len)
{
    return make_bytes(text, len, GFL_VALUE_STRING);
}

/* Appends a copy of `text` to the error's storage at *cursor. */
static const char *store_string(char **cursor, const char *text, size_t len)
{
    char *copy = *cursor;
    memcpy(copy, text, len + 1);
    *cursor += len + 1;
    return copy;
}

gfl_value *gfl_value_error(int code, const char *type, const char *message, const char *traceback)
{
    return gfl_value_error_ex(code, type, message, traceback, NULL);
}

gfl_value *gfl_value_error_ex(int code, const char *type, const char *message, const char *traceback, gfl_value *cause)
{
    if (code >= 0)
        return NULL;
    if (!type)
        type = "Error";
    if (!message)
        message = gfl_strerror(code);

    size_t type_len = strlen(type);
    size_t message_len = strlen(message);
    size_t traceback_len = traceback ? strlen(traceback) : 0;
    /* Three strings each well below SIZE_MAX / 4 cannot overflow the sum. */
    if (type_len > SIZE_MAX / 4 || message_len > SIZE_MAX / 4 || traceback_len > SIZE_MAX / 4)
        return NULL;
    size_t storage = type_len + 1 + message_len + 1 + (traceback ? traceback_len + 1 : 0);

    struct gfl_value_error *v = value_alloc(sizeof *v + storage, GFL_VALUE_ERROR);
    if (!v)
        return NULL;
    char *cursor = v->storage;
    v->code = code;
    v->type = store_string(&cursor, type, type_len);
    v->message = store_string(&cursor, message, message_len);
    v->traceback = traceback ? store_string(&cursor, traceback, traceback_len) : NULL;
    v->cause = gfl_value_ref(cause);
    return &v->header;
}

gfl_value *gfl__cancelled_error(const char *message)
{
    return gfl_value_error(GFL_ECANCELED, "CancelledError", message ? message : "cancelled", NULL);
}

/* Whether `cls` is complete enough to be used: its size covers `unref`. */
static bool host_class_valid(const gfl_host_class *cls)
{
    return cls && cls->size >= offsetof(gfl_host_class, unref) + sizeof(cls->unref) &&
           cls->unref != NULL;
}

gfl_value *gfl_value_object(const gfl_host_class *cls, void *object)
{
    if (!host_class_valid(cls))
        return NULL;
    struct gfl_value_object *v = value_alloc(sizeof *v, GFL_VALUE_OBJECT);
    if (!v)
        return NULL;
    v->cls = cls;
    v->object = object;
    if (cls->ref)
        cls->ref(object);
    return &v->header;
}

/* GFL_EINVAL for NULL, GFL_ETYPE unless the value has type `type`. */
static int check_type(const gfl_value *v, gfl_value_type type)
{
    if (!v)
        return GFL_EINVAL;
    return v->type == type ? GFL_OK : GFL_ETYPE;
}

static bool is_container(const gfl_value *v)
{
    return v->type == GFL_VALUE_ARRAY || v->type == GFL_VALUE_MAP;
}

int gfl_value_depth(const gfl_value *v)
{
    if (!v)
        return GFL_EINVAL;
    return is_container(v) ? ((const struct gfl_value_container *)v)->depth : 0;
}

/* A container of `count` item references (copied from a then b, each
 * `n` long; b may be NULL), or NULL. */
static gfl_value *make_container(gfl_value_type type, gfl_value *const *a, gfl_value *const *b, size_t n)
{
    size_t count = b ? 2 * n : n;
    if ((n > 0 && !a) || (b && n > SIZE_MAX / 2) ||
        count > (SIZE_MAX - sizeof(struct gfl_value_container)) / sizeof(gfl_value *))
        return NULL;
    int depth = 0;
    for (size_t i = 0; i < count; i++) {
        gfl_value *item = i < n ? a[i] : b[i - n];
        if (!item)
            return NULL;
        int d = gfl_value_depth(item);
        if (d > depth)
            depth = d;
    }
    if (depth + 1 > GFL_VALUE_MAX_DEPTH)
        return NULL;
    struct gfl_value_container *v =
        value_alloc(sizeof *v + count * sizeof(gfl_value *), type);
    if (!v)
        return NULL;
    v->n = n;
    v->depth = depth + 1;
    for (size_t i = 0; i < count; i++)
        v->items[i] = gfl_value_ref(i < n ? a[i] : b[i - n]);
    return &v->header;
}

gfl_value *gfl_value_array(gfl_value *const *items, size_t n)
{
    return make_container(GFL_VALUE_ARRAY, items, NULL, n);
}

gfl_value *gfl_value_map(gfl_value *const *keys, gfl_value *const *values, size_t n)
{
    if (n > 0 && !values)
        return NULL;
    /* make_container needs a non-NULL second list to build a map. */
    static gfl_value *const none[1] = {NULL};
    return make_container(GFL_VALUE_MAP, keys, n ? values : none, n);
}

int64_t gfl_value_length(const gfl_value *v)
{
    if (!v)
        return GFL_EINVAL;
    if (!is_container(v))
        return GFL_ETYPE;
    return (int64_t)((const struct gfl_value_container *)v)->n;
}

gfl_value *gfl_value_array_get(const gfl_value *v, size_t index)
{
    if (!v || v->type != GFL_VALUE_ARRAY)
        return NULL;
    const struct gfl_value_container *c = (const struct gfl_value_container *)v;
    return index < c->n ? c->items[index] : NULL;
}

int gfl_value_map_entry(const gfl_value *v, size_t index, gfl_value **key, gfl_value **value)
{
    int rc = check_type(v, GFL_VALUE_MAP);
    if (rc < 0)
        return rc;
    const struct gfl_value_container *c = (const struct gfl_value_container *)v;
    if (index >= c->n)
        return GFL_ERANGE;
    if (key)
        *key = c->items[index];
    if (value)
        *value = c->items[c->n + index];
    return GFL_OK;
}

gfl_value *gfl_value_map_find(const gfl_value *v, const char *key, size_t len)
{
    if (!v || v->type != GFL_VALUE_MAP || (!key && len > 0))
        return NULL;
    const struct gfl_value_container *c = (const struct gfl_value_container *)v;
    for (size_t i = 0; i < c->n; i++) {
        const gfl_value *k = c->items[i];
        if (k->type != GFL_VALUE_STRING && k->type != GFL_VALUE_BYTES)
            continue;
        const struct gfl_value_bytes *b = (const struct gfl_value_bytes *)k;
        if (b->len == len && (len == 0 || memcmp(b->data, key, len) == 0))
            return c->items[c->n + i];
    }
    return NULL;
}

/* Frees v; returns the cause it held (a reference for the caller to drop),
 * so that a long chain of causes is released without recursion. Container
 * items are released recursively: their depth is bounded. */
static gfl_value *value_destroy(struct gfl_value *v)
{
    gfl_value *next = NULL;
    if (is_container(v)) {
        struct gfl_value_container *c = (struct gfl_value_container *)v;
        size_t count = v->type == GFL_VALUE_MAP ? 2 * c->n : c->n;
        for (size_t i = 0; i < count; i++)
            gfl_value_unref(c->items[i]);
    } else if (v->type == GFL_VALUE_OBJECT) {
        struct gfl_value_object *o = (struct gfl_value_object *)v;
        o->cls->unref(o->object);
    } else if (v->type == GFL_VALUE_ERROR) {
        next = ((struct gfl_value_error *)v)->cause;
    }
    free(v);
    return next;
}

gfl_value *gfl_value_ref(gfl_value *v)
{
    if (!v || v->immortal)
        return v;
    /* Taking a reference needs no ordering: the caller already holds one. */
    atomic_fetch_add_explicit(&v->refs, 1, memory_order_relaxed);
    return v;
}

void gfl_value_unref(gfl_value *v)
{
    if (!v || v->immortal)
        return;
    /* Release our writes; the last owner acquires everyone's before freeing. */
    while (v && !v->immortal && atomic_fetch_sub_explicit(&v->refs, 1, memory_order_release) == 1) {
        atomic_thread_fence(memory_order_acquire);
        v = value_destroy(v); /* then the cause it held */
    }
}

int gfl_value_type_of(const gfl_value *v)
{
    return v ? v->type : GFL_EINVAL;
}


int gfl_value_get_bool(const gfl_value *v, int *out)
{
    int rc = check_type(v, GFL_VALUE_BOOL);
    if (rc < 0)
        return rc;
    if (!out)
        return GFL_EINVAL;
    *out = ((const struct gfl_value_bool *)v)->truth;
    return GFL_OK;
}

int gfl_value_get_int(const gfl_value *v, int64_t *out)
{
    int rc = check_type(v, GFL_VALUE_INT);
    if (rc < 0)
        return rc;
    if (!out)
        return GFL_EINVAL;
    *out = ((const struct gfl_value_int *)v)->number;
    return GFL_OK;
}

int gfl_value_get_double(const gfl_value *v, double *out)
{
    if (!v || !out)
        return GFL_EINVAL;
    if (v->type == GFL_VALUE_DOUBLE)
        *out = ((const struct gfl_value_double *)v)->number;
    else if (v->type == GFL_VALUE_INT)
        *out = (double)((const struct gfl_value_int *)v)->number;
    else
        return GFL_ETYPE;
    return GFL_OK;
}

int gfl_value_get_bytes(const gfl_value *v, const char **data, size_t *len)
{
    if (!v || !data)
        return GFL_EINVAL;
    if (v->type != GFL_VALUE_BYTES && v->type != GFL_VALUE_STRING)
        return GFL_ETYPE;
    const struct gfl_value_bytes *b = (const struct gfl_value_bytes *)v;
    *data = b->data;
    if (len) /* optional: the data is NUL-terminated */
        *len = b->len;
    return GFL_OK;
}

static const struct gfl_value_error *as_error(const gfl_value *v)
{
    return v && v->type == GFL_VALUE_ERROR ? (const struct gfl_value_error *)v : NULL;
}

int gfl_value_error_code(const gfl_value *v)
{
    int rc = check_type(v, GFL_VALUE_ERROR);
    if (rc < 0)
        return rc;
    return as_error(v)->code;
}

const char *gfl_value_error_type(const gfl_value *v)
{
    const struct gfl_value_error *e = as_error(v);
    return e ? e->type : NULL;
}

const char *gfl_value_error_message(const gfl_value *v)
{
    const struct gfl_value_error *e = as_error(v);
    return e ? e->message : NULL;
}

const char *gfl_value_error_traceback(const gfl_value *v)
{
    const struct gfl_value_error *e = as_error(v);
    return e ? e->traceback : NULL;
}

gfl_value *gfl_value_error_cause(const gfl_value *v)
{
    const struct gfl_value_error *e = as_error(v);
    return e ? e->cause : NULL;
}

int gfl_value_get_object(const gfl_value *v, const gfl_host_class *cls, void **object)
{
    int rc = check_type(v, GFL_VALUE_OBJECT);
    if (rc < 0)
        return rc;
    if (!cls || !object)
        return GFL_EINVAL;
    const struct gfl_value_object *o = (const struct gfl_value_object *)v;
    /* Another host's object is opaque: only its own class unwraps it. */
    if (o->cls != cls)
        return GFL_ETYPE;
    *object = o->object;
    return GFL_OK;
}

const gfl_host_class *gfl_value_object_class(const gfl_value *v)
{
    if (!v || v->type != GFL_VALUE_OBJECT)
        return NULL;
    return ((const struct gfl_value_object *)v)->cls;
}
