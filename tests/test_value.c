/* gfl_value: every type round-trips, errors, host objects, atomic refcounts. */
#include <criterion/criterion.h>

#include <globeflower.h>

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

Test(value, nil_and_bools_are_immortal_singletons)
{
    gfl_value *nil = gfl_value_nil();
    cr_assert_not_null(nil);
    cr_assert_eq(gfl_value_type_of(nil), GFL_VALUE_NIL);
    cr_assert_eq(gfl_value_nil(), nil);
    cr_assert_eq(gfl_value_ref(nil), nil);
    /* Unref as often as you like: statics are never freed. */
    for (int i = 0; i < 10; i++)
        gfl_value_unref(nil);
    cr_assert_eq(gfl_value_type_of(nil), GFL_VALUE_NIL);

    gfl_value *t = gfl_value_bool(42), *f = gfl_value_bool(0);
    cr_assert_eq(gfl_value_bool(1), t);
    cr_assert_eq(gfl_value_bool(0), f);
    cr_assert_neq(t, f);
    int b = -1;
    cr_assert_eq(gfl_value_get_bool(t, &b), 0);
    cr_assert_eq(b, 1);
    cr_assert_eq(gfl_value_get_bool(f, &b), 0);
    cr_assert_eq(b, 0);
    gfl_value_unref(t);
    gfl_value_unref(f);
    gfl_value_unref(t);
}

Test(value, int_round_trips)
{
    const int64_t samples[] = {0, 1, -1, INT64_MAX, INT64_MIN, 1234567890123LL};
    for (size_t i = 0; i < sizeof samples / sizeof samples[0]; i++) {
        gfl_value *v = gfl_value_int(samples[i]);
        cr_assert_not_null(v);
        cr_assert_eq(gfl_value_type_of(v), GFL_VALUE_INT);
        int64_t out = 0;
        cr_assert_eq(gfl_value_get_int(v, &out), 0);
        cr_assert_eq(out, samples[i]);
        gfl_value_unref(v);
    }
}

Test(value, double_round_trips_and_ints_convert)
{
    gfl_value *v = gfl_value_double(3.25);
    double d = 0;
    cr_assert_eq(gfl_value_type_of(v), GFL_VALUE_DOUBLE);
    cr_assert_eq(gfl_value_get_double(v, &d), 0);
    cr_assert_eq(d, 3.25);
    int64_t i = 0;
    cr_assert_eq(gfl_value_get_int(v, &i), GFL_ETYPE, "doubles do not narrow to ints");
    gfl_value_unref(v);

    v = gfl_value_double(NAN);
    cr_assert_eq(gfl_value_get_double(v, &d), 0);
    cr_assert(isnan(d));
    gfl_value_unref(v);

    v = gfl_value_int(-7);
    cr_assert_eq(gfl_value_get_double(v, &d), 0);
    cr_assert_eq(d, -7.0);
    gfl_value_unref(v);
}

Test(value, bytes_keep_embedded_nuls_and_are_terminated)
{
    const char raw[] = {'a', '\0', 'b', '\0', 'c'};
    gfl_value *v = gfl_value_bytes(raw, sizeof raw);
    cr_assert_not_null(v);
    cr_assert_eq(gfl_value_type_of(v), GFL_VALUE_BYTES);
    const char *data = NULL;
    size_t len = 0;
    cr_assert_eq(gfl_value_get_bytes(v, &data, &len), 0);
    cr_assert_eq(len, sizeof raw);
    cr_assert_eq(memcmp(data, raw, sizeof raw), 0);
    cr_assert_eq(data[len], '\0');
    gfl_value_unref(v);
}

Test(value, strings_round_trip)
{
    const char text[] = "h\xc3\xa9llo\0w\xc3\xb6rld"; /* UTF-8 with a NUL inside */
    size_t n = sizeof text - 1;
    gfl_value *v = gfl_value_string(text, n);
    cr_assert_eq(gfl_value_type_of(v), GFL_VALUE_STRING);
    const char *data = NULL;
    size_t len = 0;
    cr_assert_eq(gfl_value_get_bytes(v, &data, &len), 0);
    cr_assert_eq(len, n);
    cr_assert_eq(memcmp(data, text, n), 0);
    cr_assert_eq(data[n], '\0');
    cr_assert_neq(data, text, "the value owns a copy");
    /* len is optional: the data is NUL-terminated. */
    cr_assert_eq(gfl_value_get_bytes(v, &data, NULL), 0);
    gfl_value_unref(v);
}

Test(value, empty_bytes_and_strings)
{
    gfl_value *v = gfl_value_string(NULL, 0);
    cr_assert_not_null(v);
    const char *data = NULL;
    size_t len = 99;
    cr_assert_eq(gfl_value_get_bytes(v, &data, &len), 0);
    cr_assert_eq(len, 0);
    cr_assert_str_eq(data, "");
    gfl_value_unref(v);

    v = gfl_value_bytes("", 0);
    cr_assert_eq(gfl_value_get_bytes(v, &data, &len), 0);
    cr_assert_eq(len, 0);
    gfl_value_unref(v);
}

Test(value, error_with_everything)
{
    gfl_value *e = gfl_value_error(GFL_ETIMEDOUT, "TimeoutError", "took too long", "at line 3\n");
    cr_assert_not_null(e);
    cr_assert_eq(gfl_value_type_of(e), GFL_VALUE_ERROR);
    cr_assert_eq(gfl_value_error_code(e), GFL_ETIMEDOUT);
    cr_assert_str_eq(gfl_value_error_type(e), "TimeoutError");
    cr_assert_str_eq(gfl_value_error_message(e), "took too long");
    cr_assert_str_eq(gfl_value_error_traceback(e), "at line 3\n");
    gfl_value_unref(e);
}

Test(value, error_defaults)
{
    gfl_value *e = gfl_value_error(GFL_ECONNREFUSED, NULL, NULL, NULL);
    cr_assert_not_null(e);
    cr_assert_str_eq(gfl_value_error_type(e), "Error");
    cr_assert_str_eq(gfl_value_error_message(e), gfl_strerror(GFL_ECONNREFUSED));
    cr_assert_null(gfl_value_error_traceback(e));
    gfl_value_unref(e);
}

Test(value, error_copies_its_strings)
{
    char type[] = "ValueError", message[] = "bad", tb[] = "tb";
    gfl_value *e = gfl_value_error(GFL_EINVAL, type, message, tb);
    memset(type, 'x', sizeof type - 1);
    memset(message, 'x', sizeof message - 1);
    memset(tb, 'x', sizeof tb - 1);
    cr_assert_str_eq(gfl_value_error_type(e), "ValueError");
    cr_assert_str_eq(gfl_value_error_message(e), "bad");
    cr_assert_str_eq(gfl_value_error_traceback(e), "tb");
    gfl_value_unref(e);
}

Test(value, error_code_must_be_negative)
{
    cr_assert_null(gfl_value_error(0, NULL, NULL, NULL));
    cr_assert_null(gfl_value_error(5, "E", "m", NULL));
    gfl_value *e = gfl_value_error(GFL_EUNKNOWN, NULL, NULL, NULL);
    cr_assert_eq(gfl_value_error_code(e), GFL_EUNKNOWN);
    gfl_value_unref(e);
}

/* A host class that counts its ref/unref calls on the object itself. */
struct counted {
    atomic_int refs;
    atomic_int unrefs;
};

static void counted_ref(void *object)
{
    atomic_fetch_add(&((struct counted *)object)->refs, 1);
}

static void counted_unref(void *object)
{
    atomic_fetch_add(&((struct counted *)object)->unrefs, 1);
}

static const gfl_host_class counted_class = {sizeof(gfl_host_class), "counted", counted_ref, counted_unref};
static const gfl_host_class other_class = {sizeof(gfl_host_class), "other", counted_ref, counted_unref};

Test(value, host_object_ref_and_unref_hooks)
{
    struct counted obj = {0, 0};
    gfl_value *v = gfl_value_object(&counted_class, &obj);
    cr_assert_not_null(v);
    cr_assert_eq(gfl_value_type_of(v), GFL_VALUE_OBJECT);
    cr_assert_eq(atomic_load(&obj.refs), 1, "ref is called when the value takes the object");
    cr_assert_eq(atomic_load(&obj.unrefs), 0);
    cr_assert_eq(gfl_value_object_class(v), &counted_class);

    void *out = NULL;
    cr_assert_eq(gfl_value_get_object(v, &counted_class, &out), 0);
    cr_assert_eq(out, &obj);

    /* Extra value references do not touch the host object. */
    gfl_value_ref(v);
    gfl_value_unref(v);
    cr_assert_eq(atomic_load(&obj.refs), 1);
    cr_assert_eq(atomic_load(&obj.unrefs), 0);

    gfl_value_unref(v);
    cr_assert_eq(atomic_load(&obj.unrefs), 1, "unref is called when the value is destroyed");
}

Test(value, another_hosts_object_is_opaque)
{
    struct counted obj = {0, 0};
    gfl_value *v = gfl_value_object(&counted_class, &obj);
    void *out = (void *)&out;
    cr_assert_eq(gfl_value_get_object(v, &other_class, &out), GFL_ETYPE);
    cr_assert_eq(out, (void *)&out, "out untouched on failure");
    cr_assert_eq(gfl_value_object_class(v), &counted_class);
    gfl_value_unref(v);
    cr_assert_eq(atomic_load(&obj.unrefs), 1);
}

static void only_unref(void *object)
{
    (*(int *)object)++;
}

Test(value, host_class_without_ref_hook)
{
    static const gfl_host_class no_ref = {sizeof(gfl_host_class), "noref", NULL, only_unref};
    int unrefs = 0;
    gfl_value *v = gfl_value_object(&no_ref, &unrefs);
    cr_assert_not_null(v);
    gfl_value_unref(v);
    cr_assert_eq(unrefs, 1);
}

Test(value, invalid_host_classes_are_refused)
{
    int obj = 0;
    static const gfl_host_class no_unref = {sizeof(gfl_host_class), "x", NULL, NULL};
    static const gfl_host_class too_small = {offsetof(gfl_host_class, unref), "x", NULL, only_unref};
    cr_assert_null(gfl_value_object(NULL, &obj));
    cr_assert_null(gfl_value_object(&no_unref, &obj));
    cr_assert_null(gfl_value_object(&too_small, &obj));
    cr_assert_eq(obj, 0);
}

Test(value, readers_check_types)
{
    gfl_value *i = gfl_value_int(1);
    gfl_value *s = gfl_value_string("x", 1);
    int b;
    double d;
    int64_t n;
    const char *data;
    size_t len;
    void *obj;

    cr_assert_eq(gfl_value_get_bool(i, &b), GFL_ETYPE);
    cr_assert_eq(gfl_value_get_int(s, &n), GFL_ETYPE);
    cr_assert_eq(gfl_value_get_double(s, &d), GFL_ETYPE);
    cr_assert_eq(gfl_value_get_bytes(i, &data, &len), GFL_ETYPE);
    cr_assert_eq(gfl_value_get_bytes(gfl_value_nil(), &data, &len), GFL_ETYPE);
    cr_assert_eq(gfl_value_get_object(i, &counted_class, &obj), GFL_ETYPE);
    cr_assert_eq(gfl_value_error_code(i), GFL_ETYPE);
    cr_assert_null(gfl_value_error_type(s));
    cr_assert_null(gfl_value_error_message(s));
    cr_assert_null(gfl_value_error_traceback(s));
    cr_assert_null(gfl_value_object_class(s));
    gfl_value_unref(i);
    gfl_value_unref(s);
}

Test(value, null_input)
{
    int b;
    double d;
    int64_t n;
    const char *data;
    size_t len;
    void *obj;

    cr_assert_eq(gfl_value_type_of(NULL), GFL_EINVAL);
    cr_assert_eq(gfl_value_get_bool(NULL, &b), GFL_EINVAL);
    cr_assert_eq(gfl_value_get_int(NULL, &n), GFL_EINVAL);
    cr_assert_eq(gfl_value_get_double(NULL, &d), GFL_EINVAL);
    cr_assert_eq(gfl_value_get_bytes(NULL, &data, &len), GFL_EINVAL);
    cr_assert_eq(gfl_value_error_code(NULL), GFL_EINVAL);
    cr_assert_null(gfl_value_error_type(NULL));
    cr_assert_null(gfl_value_error_message(NULL));
    cr_assert_null(gfl_value_error_traceback(NULL));
    cr_assert_eq(gfl_value_get_object(NULL, &counted_class, &obj), GFL_EINVAL);
    cr_assert_null(gfl_value_object_class(NULL));
    cr_assert_null(gfl_value_ref(NULL));
    gfl_value_unref(NULL); /* a no-op */

    /* NULL output pointers. */
    gfl_value *i = gfl_value_int(1);
    gfl_value *s = gfl_value_bytes("x", 1);
    struct counted c = {0, 0};
    gfl_value *o = gfl_value_object(&counted_class, &c);
    cr_assert_eq(gfl_value_get_bool(gfl_value_bool(1), NULL), GFL_EINVAL);
    cr_assert_eq(gfl_value_get_int(i, NULL), GFL_EINVAL);
    cr_assert_eq(gfl_value_get_double(i, NULL), GFL_EINVAL);
    cr_assert_eq(gfl_value_get_bytes(s, NULL, &len), GFL_EINVAL);
    cr_assert_eq(gfl_value_get_object(o, &counted_class, NULL), GFL_EINVAL);
    cr_assert_eq(gfl_value_get_object(o, NULL, &obj), GFL_EINVAL);
    gfl_value_unref(i);
    gfl_value_unref(s);
    gfl_value_unref(o);

    /* Data pointers that are NULL but claim a length. */
    cr_assert_null(gfl_value_bytes(NULL, 3));
    cr_assert_null(gfl_value_string(NULL, 1));
    cr_assert_null(gfl_value_bytes("x", SIZE_MAX));
}

/* ---- atomic reference counts ---- */

#define REF_THREADS 8
#define REF_ROUNDS 100000

static void *ref_unref_many(void *arg)
{
    gfl_value *v = arg;
    for (int i = 0; i < REF_ROUNDS; i++) {
        gfl_value_ref(v);
        gfl_value_unref(v);
    }
    return NULL;
}

static void *ref_many_then_unref_many(void *arg)
{
    gfl_value *v = arg;
    for (int i = 0; i < REF_ROUNDS; i++)
        gfl_value_ref(v);
    for (int i = 0; i < REF_ROUNDS; i++)
        gfl_value_unref(v);
    return NULL;
}

static void hammer(void *(*fn)(void *), gfl_value *v)
{
    pthread_t threads[REF_THREADS];
    for (int i = 0; i < REF_THREADS; i++)
        cr_assert_eq(pthread_create(&threads[i], NULL, fn, v), 0);
    for (int i = 0; i < REF_THREADS; i++)
        pthread_join(threads[i], NULL);
}

Test(value, refcount_is_balanced_across_threads)
{
    struct counted obj = {0, 0};
    gfl_value *v = gfl_value_object(&counted_class, &obj);
    hammer(ref_unref_many, v);
    hammer(ref_many_then_unref_many, v);
    /* Still alive: the test's own reference is the last one. */
    cr_assert_eq(atomic_load(&obj.unrefs), 0);
    void *out = NULL;
    cr_assert_eq(gfl_value_get_object(v, &counted_class, &out), 0);
    gfl_value_unref(v);
    cr_assert_eq(atomic_load(&obj.unrefs), 1, "destroyed exactly once");
    cr_assert_eq(atomic_load(&obj.refs), 1);
}

/* Threads each drop one of the references handed to them: exactly one of
 * them destroys the value. */
static void *drop_one(void *arg)
{
    gfl_value_unref(arg);
    return NULL;
}

Test(value, last_unref_in_any_thread_destroys_once)
{
    for (int round = 0; round < 200; round++) {
        struct counted obj = {0, 0};
        gfl_value *v = gfl_value_object(&counted_class, &obj);
        for (int i = 1; i < REF_THREADS; i++)
            gfl_value_ref(v);
        hammer(drop_one, v);
        cr_assert_eq(atomic_load(&obj.unrefs), 1);
    }
}

/* ---- errors carrying the host's own error object ---- */

Test(value, error_with_a_cause_keeps_the_hosts_object)
{
    struct counted exc = {0};
    gfl_value *obj = gfl_value_object(&counted_class, &exc);
    cr_assert_not_null(obj);
    gfl_value *e = gfl_value_error_ex(GFL_EINVAL, "ValueError", "bad", "tb", obj);
    cr_assert_not_null(e);
    gfl_value_unref(obj); /* the error keeps its own reference */
    cr_assert_eq(atomic_load(&exc.unrefs), 0);
    cr_assert_eq(gfl_value_error_code(e), GFL_EINVAL);
    cr_assert_str_eq(gfl_value_error_type(e), "ValueError");
    cr_assert_str_eq(gfl_value_error_message(e), "bad");
    cr_assert_str_eq(gfl_value_error_traceback(e), "tb");
    gfl_value *cause = gfl_value_error_cause(e); /* borrowed */
    cr_assert_eq(cause, obj);
    void *back = NULL;
    cr_assert_eq(gfl_value_get_object(cause, &counted_class, &back), 0);
    cr_assert_eq(back, &exc, "the host gets its very own object back");
    gfl_value_unref(e);
    cr_assert_eq(atomic_load(&exc.refs), 1);
    cr_assert_eq(atomic_load(&exc.unrefs), 1, "released with the error");
}

Test(value, error_cause_is_optional_and_only_on_errors)
{
    gfl_value *plain = gfl_value_error(GFL_EIO, NULL, NULL, NULL);
    cr_assert_null(gfl_value_error_cause(plain));
    gfl_value *ex = gfl_value_error_ex(GFL_EIO, NULL, NULL, NULL, NULL);
    cr_assert_not_null(ex);
    cr_assert_null(gfl_value_error_cause(ex));
    cr_assert_str_eq(gfl_value_error_type(ex), "Error");
    cr_assert_null(gfl_value_error_ex(0, "E", "m", NULL, plain), "code must be negative");
    /* Any value may be a cause, another error too. */
    gfl_value *chained = gfl_value_error_ex(GFL_EPIPE, "BrokenPipeError", "write", NULL, plain);
    cr_assert_eq(gfl_value_error_cause(chained), plain);
    gfl_value *i = gfl_value_int(3);
    cr_assert_null(gfl_value_error_cause(i));
    cr_assert_null(gfl_value_error_cause(NULL));
    gfl_value_unref(i);
    gfl_value_unref(plain);
    gfl_value_unref(ex);
    gfl_value_unref(chained);
}

Test(value, long_cause_chains_are_freed_without_recursion)
{
    gfl_value *e = gfl_value_error(GFL_EIO, NULL, "root", NULL);
    for (int i = 0; i < 300000; i++) {
        gfl_value *next = gfl_value_error_ex(GFL_EIO, NULL, "wrap", NULL, e);
        cr_assert_not_null(next);
        gfl_value_unref(e);
        e = next;
    }
    gfl_value_unref(e); /* a recursive free would overflow the stack */
}

/* ------------------------------------------------------------------ */
/* Arrays and maps (ABI 1.3)                                           */

Test(value, arrays_hold_references_to_their_items)
{
    gfl_value *s = gfl_value_string("hi", 2);
    gfl_value *items[] = {gfl_value_int(1), s, gfl_value_nil()};
    gfl_value *a = gfl_value_array(items, 3);
    cr_assert_not_null(a);
    cr_assert_eq(gfl_value_type_of(a), GFL_VALUE_ARRAY);
    cr_assert_eq(gfl_value_length(a), 3);
    cr_assert_eq(gfl_value_depth(a), 1);
    gfl_value_unref(items[0]);
    gfl_value_unref(s); /* the array keeps the item alive */
    int64_t i;
    cr_assert_eq(gfl_value_get_int(gfl_value_array_get(a, 0), &i), 0);
    cr_assert_eq(i, 1);
    const char *data;
    cr_assert_eq(gfl_value_get_bytes(gfl_value_array_get(a, 1), &data, NULL), 0);
    cr_assert_str_eq(data, "hi");
    cr_assert_eq(gfl_value_type_of(gfl_value_array_get(a, 2)), GFL_VALUE_NIL);
    cr_assert_null(gfl_value_array_get(a, 3));
    gfl_value_unref(a);

    gfl_value *empty = gfl_value_array(NULL, 0);
    cr_assert_not_null(empty);
    cr_assert_eq(gfl_value_length(empty), 0);
    gfl_value_unref(empty);
}

Test(value, maps_keep_order_and_find_string_keys)
{
    gfl_value *keys[] = {gfl_value_string("b", 1), gfl_value_int(7), gfl_value_bytes("a", 1)};
    gfl_value *vals[] = {gfl_value_int(2), gfl_value_string("seven", 5), gfl_value_bool(1)};
    gfl_value *m = gfl_value_map(keys, vals, 3);
    for (int k = 0; k < 3; k++) {
        gfl_value_unref(keys[k]);
        gfl_value_unref(vals[k]);
    }
    cr_assert_not_null(m);
    cr_assert_eq(gfl_value_type_of(m), GFL_VALUE_MAP);
    cr_assert_eq(gfl_value_length(m), 3);
    gfl_value *k, *v;
    cr_assert_eq(gfl_value_map_entry(m, 1, &k, &v), 0);
    int64_t i;
    cr_assert_eq(gfl_value_get_int(k, &i), 0);
    cr_assert_eq(i, 7);
    cr_assert_eq(gfl_value_type_of(v), GFL_VALUE_STRING);
    cr_assert_eq(gfl_value_map_entry(m, 3, &k, &v), GFL_ERANGE);
    cr_assert_eq(gfl_value_get_int(gfl_value_map_find(m, "b", 1), &i), 0);
    cr_assert_eq(i, 2);
    cr_assert_eq(gfl_value_type_of(gfl_value_map_find(m, "a", 1)), GFL_VALUE_BOOL);
    cr_assert_null(gfl_value_map_find(m, "c", 1));
    cr_assert_null(gfl_value_array_get(m, 0), "a map is not an array");
    gfl_value_unref(m);
}

Test(value, containers_reject_bad_input_and_excess_depth)
{
    gfl_value *items[] = {gfl_value_int(1), NULL};
    cr_assert_null(gfl_value_array(items, 2), "NULL item");
    cr_assert_null(gfl_value_array(NULL, 1));
    cr_assert_null(gfl_value_map(items, NULL, 1));
    cr_assert_null(gfl_value_map(items, items, 2));
    gfl_value_unref(items[0]);
    cr_assert_eq(gfl_value_length(NULL), GFL_EINVAL);
    gfl_value *n = gfl_value_int(3);
    cr_assert_eq(gfl_value_length(n), GFL_ETYPE);
    cr_assert_eq(gfl_value_depth(n), 0);
    cr_assert_eq(gfl_value_map_entry(n, 0, NULL, NULL), GFL_ETYPE);

    /* Nest to the limit: one more level is refused, nothing leaks. */
    gfl_value *v = n;
    for (int d = 1; d <= GFL_VALUE_MAX_DEPTH; d++) {
        gfl_value *a = gfl_value_array(&v, 1);
        cr_assert_not_null(a, "depth %d", d);
        gfl_value_unref(v);
        v = a;
        cr_assert_eq(gfl_value_depth(v), d);
    }
    cr_assert_null(gfl_value_array(&v, 1));
    gfl_value *key = gfl_value_string("k", 1);
    cr_assert_null(gfl_value_map(&key, &v, 1));
    cr_assert_null(gfl_value_map(&v, &key, 1), "keys count too");
    gfl_value_unref(key);
    gfl_value_unref(v); /* frees the whole chain (valgrind checks) */
}

Test(value, containers_reachable_through_the_api_table)
{
    const gfl_api *api = gfl_api_get();
    cr_assert(GFL_API_HAS(api, value_depth));
    gfl_value *x = api->value_int(5);
    gfl_value *a = api->value_array(&x, 1);
    cr_assert_eq(api->value_length(a), 1);
    cr_assert_eq(api->value_array_get(a, 0), x);
    api->value_unref(x);
    api->value_unref(a);
}
