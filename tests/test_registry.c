/* The loop's registry of named functions: gfl_export / gfl_call. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <string.h>

#include "globeflower.h"

static gfl_loop *loop;

static void setup(void)
{
    loop = gfl_loop_new(NULL);
    cr_assert_not_null(loop);
}

static void teardown(void)
{
    if (loop)
        cr_assert_eq(gfl_loop_free(loop), 0);
    loop = NULL;
}

TestSuite(registry, .init = setup, .fini = teardown);

static int released;
static void release_counter(void *ud)
{
    (void)ud;
    released++;
}

/* twice(x): 2 * x for an int; a TypeError otherwise. */
static int twice(void *ud, gfl_loop *l, gfl_value *const *args, size_t nargs, gfl_value **result)
{
    (void)ud, (void)l;
    int64_t x;
    if (nargs != 1 || gfl_value_get_int(args[0], &x) < 0) {
        *result = gfl_value_error(GFL_EINVAL, "TypeError", "twice() takes one int", NULL);
        return GFL_EINVAL;
    }
    *result = gfl_value_int(2 * x);
    return 0;
}

/* echo(v): an already-resolved future (a cancelled one for a wrong count). */
static gfl_future *echo_async(void *ud, gfl_loop *l, gfl_value *const *args, size_t nargs)
{
    (void)ud;
    gfl_future *f = gfl_future_new(l);
    if (f && nargs == 1)
        gfl_future_set_result(f, args[0]);
    else if (f)
        gfl_future_cancel(f, "echo takes one argument");
    return f;
}

static gfl_value *await_value(gfl_future *f, int want_state)
{
    for (int i = 0; i < 100 && gfl_future_state_of(f) == GFL_FUTURE_PENDING; i++)
        gfl_loop_run_once(loop, 0);
    cr_assert_eq(gfl_future_state_of(f), want_state);
    return gfl_future_value(f);
}

Test(registry, sync_and_async_exports_are_called_by_name)
{
    released = 0;
    cr_assert_eq(gfl_export(loop, "c.twice", twice, NULL, NULL, release_counter), 0);
    cr_assert_eq(gfl_export(loop, "c.echo", NULL, echo_async, NULL, release_counter), 0);
    cr_assert_eq(gfl_export_count(loop), 2);
    cr_assert_str_eq(gfl_export_name(loop, 0), "c.twice");
    cr_assert_str_eq(gfl_export_name(loop, 1), "c.echo");
    cr_assert_null(gfl_export_name(loop, 2));
    cr_assert_eq(gfl_export_is_async(loop, "c.twice"), 0);
    cr_assert_eq(gfl_export_is_async(loop, "c.echo"), 1);
    cr_assert_eq(gfl_export_is_async(loop, "nope"), GFL_ENOENT);

    gfl_value *x = gfl_value_int(21);
    gfl_future *f = gfl_call(loop, "c.twice", &x, 1);
    cr_assert_not_null(f);
    int64_t i;
    cr_assert_eq(gfl_value_get_int(await_value(f, GFL_FUTURE_RESULT), &i), 0);
    cr_assert_eq(i, 42);
    gfl_future_unref(f);

    f = gfl_call(loop, "c.echo", &x, 1);
    cr_assert_eq(gfl_value_get_int(await_value(f, GFL_FUTURE_RESULT), &i), 0);
    cr_assert_eq(i, 21);
    gfl_future_unref(f);
    gfl_value_unref(x);
    cr_assert_eq(released, 0);
}

Test(registry, errors_settle_the_callers_future)
{
    cr_assert_eq(gfl_export(loop, "twice", twice, NULL, NULL, NULL), 0);
    /* Wrong arity: the function's own error, with its type. */
    gfl_future *f = gfl_call(loop, "twice", NULL, 0);
    gfl_value *e = await_value(f, GFL_FUTURE_ERROR);
    cr_assert_str_eq(gfl_value_error_type(e), "TypeError");
    cr_assert_str_eq(gfl_value_error_message(e), "twice() takes one int");
    gfl_future_unref(f);

    /* Unknown name: a LookupError naming it. */
    f = gfl_call(loop, "missing.fn", NULL, 0);
    e = await_value(f, GFL_FUTURE_ERROR);
    cr_assert_eq(gfl_value_error_code(e), GFL_ENOENT);
    cr_assert_str_eq(gfl_value_error_type(e), "LookupError");
    cr_assert(strstr(gfl_value_error_message(e), "'missing.fn'"));
    gfl_future_unref(f);

    /* Bad arguments to gfl_call itself. */
    gfl_value *args[] = {NULL};
    cr_assert_null(gfl_call(loop, "twice", args, 1));
    cr_assert_null(gfl_call(loop, NULL, NULL, 0));
    cr_assert_null(gfl_call(NULL, "twice", NULL, 0));
    cr_assert_null(gfl_call(loop, "twice", NULL, 1));
}

Test(registry, names_are_checked_and_unique)
{
    released = 0;
    cr_assert_eq(gfl_export(loop, "a", twice, NULL, NULL, release_counter), 0);
    cr_assert_eq(gfl_export(loop, "a", twice, NULL, NULL, release_counter), GFL_EEXIST);
    cr_assert_eq(released, 0, "a refused export does not release: the caller keeps ud");
    const char *bad[] = {"", "a b", "a-b", "a/b", "caf\xc3\xa9"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(gfl_export(loop, bad[i], twice, NULL, NULL, NULL), GFL_EINVAL, "%s", bad[i]);
    char longname[200];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    cr_assert_eq(gfl_export(loop, longname, twice, NULL, NULL, NULL), GFL_EINVAL);
    cr_assert_eq(gfl_export(loop, NULL, twice, NULL, NULL, NULL), GFL_EINVAL);
    cr_assert_eq(gfl_export(loop, "b", NULL, NULL, NULL, NULL), GFL_EINVAL, "no function");
    cr_assert_eq(gfl_export(loop, "b", twice, echo_async, NULL, NULL), GFL_EINVAL, "both kinds");
    cr_assert_eq(gfl_unexport(loop, "b"), GFL_ENOENT);
    cr_assert_eq(gfl_unexport(loop, "a"), 0);
    cr_assert_eq(released, 1);
    cr_assert_eq(gfl_export_count(loop), 0);
    /* The name is free again. */
    cr_assert_eq(gfl_export(loop, "a", twice, NULL, NULL, NULL), 0);
}

/* Unexports itself (as a host unloading would) while being called. */
static int self_removing(void *ud, gfl_loop *l, gfl_value *const *args, size_t nargs, gfl_value **result)
{
    (void)args, (void)nargs;
    cr_assert_eq(gfl_unexport(l, "gone"), 0);
    cr_assert_eq(released, 0, "release waits for the call to return");
    *result = gfl_value_string(ud, strlen(ud));
    return 0;
}

Test(registry, an_export_may_remove_itself_during_a_call)
{
    released = 0;
    static char text[] = "still here";
    cr_assert_eq(gfl_export(loop, "gone", self_removing, NULL, text, release_counter), 0);
    gfl_future *f = gfl_call(loop, "gone", NULL, 0);
    const char *data;
    cr_assert_eq(gfl_value_get_bytes(await_value(f, GFL_FUTURE_RESULT), &data, NULL), 0);
    cr_assert_str_eq(data, "still here");
    gfl_future_unref(f);
    cr_assert_eq(released, 1);
    f = gfl_call(loop, "gone", NULL, 0);
    await_value(f, GFL_FUTURE_ERROR);
    gfl_future_unref(f);
}

Test(registry, closing_the_loop_releases_every_export)
{
    released = 0;
    cr_assert_eq(gfl_export(loop, "one", twice, NULL, NULL, release_counter), 0);
    cr_assert_eq(gfl_export(loop, "two", NULL, echo_async, NULL, release_counter), 0);
    cr_assert_eq(gfl_loop_free(loop), 0);
    loop = NULL;
    cr_assert_eq(released, 2);
}

struct thread_result {
    int export_rc, count_rc;
    gfl_future *call;
};

static void *from_other_thread(void *arg)
{
    struct thread_result *r = arg;
    r->export_rc = gfl_export(loop, "t", twice, NULL, NULL, NULL);
    r->count_rc = gfl_export_count(loop);
    r->call = gfl_call(loop, "t", NULL, 0);
    return NULL;
}

Test(registry, other_threads_are_refused)
{
    struct thread_result r;
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, from_other_thread, &r), 0);
    pthread_join(th, NULL);
    cr_assert_eq(r.export_rc, GFL_EWRONGTHREAD);
    cr_assert_eq(r.count_rc, GFL_EWRONGTHREAD);
    cr_assert_null(r.call);
}

Test(registry, plugins_and_exports_share_one_calling_convention)
{
    /* A plugin's function exported under a name of the host's choosing:
     * callers cannot tell it from a host's export. */
    const gfl_api *api = gfl_api_get();
    cr_assert(GFL_API_HAS(api, loop_acquire));
    gfl_plugin *p = api->plugin_load("example", NULL);
    cr_assert_not_null(p, "%s", api->plugin_last_error());
    cr_assert_eq(api->export_function(loop, "ex.twice", twice, NULL, NULL, NULL), 0);
    gfl_value *args[] = {gfl_value_int(2), gfl_value_int(3)};
    gfl_future *f = api->plugin_call_async(p, "add", loop, args, 2);
    int64_t i;
    cr_assert_eq(gfl_value_get_int(await_value(f, GFL_FUTURE_RESULT), &i), 0);
    cr_assert_eq(i, 5);
    gfl_future_unref(f);
    f = api->call(loop, "ex.twice", args, 1);
    cr_assert_eq(gfl_value_get_int(await_value(f, GFL_FUTURE_RESULT), &i), 0);
    cr_assert_eq(i, 4);
    gfl_future_unref(f);
    gfl_value_unref(args[0]);
    gfl_value_unref(args[1]);
    cr_assert_eq(api->plugin_unload(p), 0);
}
