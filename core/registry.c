/*
 * The loop's registry of named functions (gfl_export / gfl_call): how hosts
 * and plugins on one loop call each other without knowing each other.
 *
 * An entry is reference counted: the registry holds one reference, and a
 * call in progress holds another, so a function that unexports itself (or
 * its whole host) from inside a call keeps running on a live entry, and
 * release(ud) runs only when both are gone. Entries live in an array in
 * export order; names are short, and a call looks a name up linearly (a
 * loop has tens of exports, not thousands, and the lookup is a few
 * strcmp calls next to a future allocation).
 */
#include "internal.h"

#include <stdio.h>
#include <string.h>

#define EXPORT_NAME_MAX 128

struct gfl_export_entry {
    char *name;
    gfl_plugin_function fn;
    gfl_plugin_async_function async_fn;
    void *ud;
    gfl_release_fn release;
    int refs;
};

struct gfl_exports {
    struct gfl_export_entry **entries;
    size_t n, cap;
};

/* [A-Za-z0-9_.]{1,128}: printable in messages, usable as a module path. */
static bool valid_name(const char *name)
{
    size_t n = 0;
    for (; name[n]; n++) {
        char c = name[n];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                  (c >= '0' && c <= '9') || c == '_' || c == '.';
        if (n >= EXPORT_NAME_MAX || !ok)
            return false;
    }
    return n > 0;
}

static void entry_unref(gfl_loop *loop, struct gfl_export_entry *e)
{
    if (--e->refs > 0)
        return;
    /* Copied first: release may free memory the entry points into. */
    gfl_release_fn release = e->release;
    void *ud = e->ud;
    gfl__free(loop, e->name);
    gfl__free(loop, e);
    if (release)
        release(ud);
}

static struct gfl_export_entry *find(const gfl_loop *loop, const char *name, size_t *index)
{
    const struct gfl_exports *x = loop->exports;
    if (!x)
        return NULL;
    for (size_t i = 0; i < x->n; i++) {
        if (strcmp(x->entries[i]->name, name) == 0) {
            if (index)
                *index = i;
            return x->entries[i];
        }
    }
    return NULL;
}

int gfl_export(gfl_loop *loop, const char *name, gfl_plugin_function fn,
               gfl_plugin_async_function async_fn, void *ud, gfl_release_fn release)
{
    int rc = gfl__check_loop(loop);
    if (rc < 0)
        return rc;
    if (!name || !valid_name(name) || (!fn == !async_fn))
        return GFL_EINVAL;
    if (find(loop, name, NULL))
        return GFL_EEXIST;

    struct gfl_exports *x = loop->exports;
    if (!x) {
        x = gfl__calloc(loop, 1, sizeof *x);
        if (!x)
            return GFL_ENOMEM;
        loop->exports = x;
    }
    if (x->n == x->cap) {
        if (x->cap >= INT32_MAX / 2)
            return GFL_ENOMEM;
        size_t cap = x->cap ? 2 * x->cap : 8;
        struct gfl_export_entry **entries = x->entries
            ? gfl__realloc(loop, x->entries, cap * sizeof *entries)
            : gfl__calloc(loop, cap, sizeof *entries);
        if (!entries)
            return GFL_ENOMEM;
        x->entries = entries;
        x->cap = cap;
    }
    struct gfl_export_entry *e = gfl__calloc(loop, 1, sizeof *e);
    size_t len = strlen(name);
    char *copy = e ? gfl__alloc(loop, len + 1) : NULL;
    if (!copy) {
        gfl__free(loop, e);
        return GFL_ENOMEM;
    }
    memcpy(copy, name, len + 1);
    *e = (struct gfl_export_entry){
        .name = copy, .fn = fn, .async_fn = async_fn, .ud = ud, .release = release, .refs = 1,
    };
    x->entries[x->n++] = e;
    return GFL_OK;
}

int gfl_unexport(gfl_loop *loop, const char *name)
{
    int rc = gfl__check_loop(loop);
    if (rc < 0)
        return rc;
    if (!name)
        return GFL_EINVAL;
    size_t i;
    struct gfl_export_entry *e = find(loop, name, &i);
    if (!e)
        return GFL_ENOENT;
    struct gfl_exports *x = loop->exports;
    memmove(&x->entries[i], &x->entries[i + 1], (x->n - i - 1) * sizeof *x->entries);
    x->n--;
    entry_unref(loop, e);
    return GFL_OK;
}

int gfl_export_count(gfl_loop *loop)
{
    int rc = gfl__check_loop(loop);
    if (rc < 0)
        return rc;
    return loop->exports ? (int)loop->exports->n : 0;
}

const char *gfl_export_name(gfl_loop *loop, int index)
{
    if (gfl__check_loop(loop) < 0 || !loop->exports || index < 0 ||
        (size_t)index >= loop->exports->n)
        return NULL;
    return loop->exports->entries[index]->name;
}

int gfl_export_is_async(gfl_loop *loop, const char *name)
{
    int rc = gfl__check_loop(loop);
    if (rc < 0)
        return rc;
    if (!name)
        return GFL_EINVAL;
    const struct gfl_export_entry *e = find(loop, name, NULL);
    if (!e)
        return GFL_ENOENT;
    return e->async_fn ? 1 : 0;
}

gfl_future *gfl__future_settled(gfl_loop *loop, gfl_value *value, bool is_error)
{
    if (!value)
        return NULL;
    gfl_future *f = gfl_future_new(loop);
    if (f) {
        int rc = is_error ? gfl_future_set_error(f, value) : gfl_future_set_result(f, value);
        if (rc < 0) {
            gfl_future_unref(f);
            f = NULL;
        }
    }
    gfl_value_unref(value);
    return f;
}

/* "<name>: <what>" as an error value of `code` and `type`. */
static gfl_value *call_error(int code, const char *type, const char *name, const char *what)
{
    char msg[EXPORT_NAME_MAX + 160];
    snprintf(msg, sizeof msg, "%.*s: %s", EXPORT_NAME_MAX, name, what);
    return gfl_value_error(code, type, msg, NULL);
}

gfl_future *gfl_call(gfl_loop *loop, const char *name, gfl_value *const *args, size_t nargs)
{
    if (gfl__check_loop(loop) < 0 || !name || (!args && nargs > 0))
        return NULL;
    for (size_t i = 0; i < nargs; i++) {
        if (!args[i])
            return NULL;
    }
    struct gfl_export_entry *e = find(loop, name, NULL);
    if (!e) {
        char shown[EXPORT_NAME_MAX + 1];
        size_t k = 0;
        for (; name[k] && k < EXPORT_NAME_MAX; k++)
            shown[k] = (name[k] >= 0x20 && name[k] < 0x7f) ? name[k] : '?';
        shown[k] = '\0';
        char what[EXPORT_NAME_MAX + 64];
        snprintf(what, sizeof what, "nothing is exported under the name '%s'", shown);
        return gfl__future_settled(loop, gfl_value_error(GFL_ENOENT, "LookupError", what, NULL), true);
    }

    e->refs++; /* the call's own: the function may unexport itself */
    gfl_future *f;
    if (e->async_fn) {
        f = e->async_fn(e->ud, loop, args, nargs);
        if (!f)
            f = gfl__future_settled(loop, call_error(GFL_EUNKNOWN, NULL, e->name, "returned no future"), true);
    } else {
        gfl_value *out = NULL;
        int rc = e->fn(e->ud, loop, args, nargs, &out);
        if (rc == 0) {
            f = gfl__future_settled(loop, out ? out : gfl_value_nil(), false);
        } else if (rc < 0 && out && gfl_value_type_of(out) == GFL_VALUE_ERROR) {
            f = gfl__future_settled(loop, out, true);
        } else {
            gfl_value_unref(out);
            f = gfl__future_settled(loop, call_error(rc < 0 ? rc : GFL_EUNKNOWN, NULL, e->name,
                                         rc < 0 ? gfl_strerror(rc) : "returned an invalid status"),
                        true);
        }
    }
    entry_unref(loop, e);
    return f;
}

/* The loop is closing: every export goes (release runs for each). */
void gfl__exports_close(gfl_loop *loop)
{
    struct gfl_exports *x = loop->exports;
    if (!x)
        return;
    /* Release functions may look at the registry: detach it first. */
    loop->exports = NULL;
    for (size_t i = 0; i < x->n; i++)
        entry_unref(loop, x->entries[i]);
    gfl__free(loop, x->entries);
    gfl__free(loop, x);
}
