/*
 * The plugin loader (core/plugin.c) with the example plugin
 * (plugins/example) and a test-only fixture plugin (tests/plugin_fixture.c).
 *
 * Where the plugins are (set by make check; the defaults fit an in-tree
 * build run by hand):
 *   GFL_TEST_PLUGIN_DIR       the directory holding example.so
 *                             (default <builddir>/plugins/.libs)
 *   GFL_TEST_FIXTURE_PLUGIN   the fixture's .so
 *                             (default <builddir>/tests/.libs/fixture.so)
 * <builddir> is $abs_top_builddir, else the one configure compiled in.
 * Each test runs in its own process (Criterion), so tests may setenv.
 */
#include <criterion/criterion.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "globeflower_plugin.h"

#ifndef GFL_TEST_BUILDDIR
#define GFL_TEST_BUILDDIR "."
#endif

static char example_dir[PATH_MAX];
static char example_so[PATH_MAX + 16];
static char fixture_so[PATH_MAX];
static gfl_loop *loop;

static void setup(void)
{
    const char *builddir = getenv("abs_top_builddir");
    if (!builddir || !*builddir)
        builddir = GFL_TEST_BUILDDIR;
    const char *dir = getenv("GFL_TEST_PLUGIN_DIR");
    if (dir && *dir)
        snprintf(example_dir, sizeof example_dir, "%s", dir);
    else
        snprintf(example_dir, sizeof example_dir, "%s/plugins/.libs", builddir);
    snprintf(example_so, sizeof example_so, "%s/example.so", example_dir);
    const char *fixture = getenv("GFL_TEST_FIXTURE_PLUGIN");
    if (fixture && *fixture)
        snprintf(fixture_so, sizeof fixture_so, "%s", fixture);
    else
        snprintf(fixture_so, sizeof fixture_so, "%s/tests/.libs/fixture.so", builddir);
    cr_assert_eq(access(example_so, R_OK), 0, "example plugin not built: %s", example_so);
    cr_assert_eq(access(fixture_so, R_OK), 0, "fixture plugin not built: %s", fixture_so);

    /* Loading by name (path NULL) searches here first. */
    cr_assert_eq(setenv("GFL_PLUGIN_PATH", example_dir, 1), 0);
    loop = gfl_loop_new(NULL);
    cr_assert_not_null(loop);
}

static void teardown(void)
{
    if (loop)
        cr_assert_eq(gfl_loop_free(loop), 0);
    loop = NULL;
}

TestSuite(plugin, .init = setup, .fini = teardown);

/* ------------------------------------------------------------------ */
/* Helpers                                                             */

static gfl_plugin *load_example(void)
{
    gfl_plugin *p = gfl_plugin_load("example", NULL);
    cr_assert_not_null(p, "loading example: %s", gfl_plugin_last_error());
    return p;
}

static gfl_plugin *load_fixture(void)
{
    gfl_plugin *p = gfl_plugin_load("fixture", fixture_so);
    cr_assert_not_null(p, "loading fixture: %s", gfl_plugin_last_error());
    return p;
}

/* Asserts that the last load failed with a message containing `part`. */
static void assert_error_contains(const char *part)
{
    const char *msg = gfl_plugin_last_error();
    cr_assert_not_null(msg, "no error message");
    cr_assert_not_null(strstr(msg, part), "error \"%s\" does not mention \"%s\"", msg, part);
}

/* A sync call that must succeed; returns the result (caller unrefs). */
static gfl_value *call_ok(gfl_plugin *p, const char *fn, gfl_value *const *args, size_t nargs)
{
    gfl_value *result = NULL;
    int rc = gfl_plugin_call(p, fn, loop, args, nargs, &result);
    cr_assert_eq(rc, 0, "%s: %s (%s)", fn, gfl_strerror(rc),
                 result ? gfl_value_error_message(result) : "no value");
    cr_assert_not_null(result);
    return result;
}

static void assert_int(gfl_value *v, int64_t expected)
{
    int64_t i = 0;
    cr_assert_eq(gfl_value_get_int(v, &i), 0, "not an int (type %d)", gfl_value_type_of(v));
    cr_assert_eq(i, expected, "%lld != %lld", (long long)i, (long long)expected);
}

static void assert_bytes(gfl_value *v, int type, const char *expected, size_t len)
{
    const char *data;
    size_t n;
    cr_assert_eq(gfl_value_type_of(v), type);
    cr_assert_eq(gfl_value_get_bytes(v, &data, &n), 0);
    cr_assert_eq(n, len);
    cr_assert_eq(memcmp(data, expected, len), 0);
}

static void assert_error(gfl_value *v, int code, const char *type, const char *message_part)
{
    cr_assert_eq(gfl_value_type_of(v), GFL_VALUE_ERROR, "not an error value");
    cr_assert_eq(gfl_value_error_code(v), code, "code %d, expected %d",
                 gfl_value_error_code(v), code);
    if (type)
        cr_assert_str_eq(gfl_value_error_type(v), type);
    if (message_part)
        cr_assert_not_null(strstr(gfl_value_error_message(v), message_part),
                           "message \"%s\" does not mention \"%s\"",
                           gfl_value_error_message(v), message_part);
}

/* Pumps the loop (each iteration bounded) until `f` is done. */
static void await_future(gfl_future *f, double max_seconds)
{
    if (getenv("GFL_UNDER_VALGRIND"))
        max_seconds *= 20;
    double deadline = gfl_loop_time(loop) + max_seconds;
    while (gfl_future_state_of(f) == GFL_FUTURE_PENDING && gfl_loop_time(loop) < deadline)
        cr_assert_geq(gfl_loop_run_once(loop, 0.05), 0);
    cr_assert_neq(gfl_future_state_of(f), GFL_FUTURE_PENDING, "future still pending");
}

/* ------------------------------------------------------------------ */
/* Loading and listing                                                 */

Test(plugin, loads_by_name_and_lists_functions)
{
    gfl_plugin *p = load_example();
    cr_assert_null(gfl_plugin_last_error(), "a successful load leaves no error");
    cr_assert_str_eq(gfl_plugin_name(p), "example");
    cr_assert_eq(gfl_plugin_function_count(p), 4);

    const char *expected[] = {"add", "concat", "sleep_then_echo", "fail"};
    const int is_async[] = {0, 0, 1, 1};
    for (int i = 0; i < 4; i++) {
        const char *name = gfl_plugin_function_name(p, i);
        cr_assert_not_null(name);
        cr_assert_str_eq(name, expected[i]);
        cr_assert_eq(gfl_plugin_function_is_async(p, name), is_async[i], "%s", name);
    }
    cr_assert_null(gfl_plugin_function_name(p, 4));
    cr_assert_null(gfl_plugin_function_name(p, -1));
    cr_assert_eq(gfl_plugin_function_is_async(p, "nope"), GFL_ENOENT);
    cr_assert_eq(gfl_plugin_unload(p), 0);
}

Test(plugin, loads_by_explicit_path)
{
    gfl_plugin *p = gfl_plugin_load("example", example_so);
    cr_assert_not_null(p, "%s", gfl_plugin_last_error());
    cr_assert_eq(gfl_plugin_function_count(p), 4);
    cr_assert_eq(gfl_plugin_unload(p), 0);
}

Test(plugin, explicit_bare_file_name_means_the_working_directory)
{
    cr_assert_eq(chdir(example_dir), 0);
    gfl_plugin *p = gfl_plugin_load("example", "example.so");
    cr_assert_not_null(p, "%s", gfl_plugin_last_error());
    cr_assert_eq(gfl_plugin_unload(p), 0);
}

Test(plugin, search_path_skips_empty_and_missing_directories)
{
    char path[2 * PATH_MAX];
    snprintf(path, sizeof path, "::/nonexistent/globeflower::%s:", example_dir);
    cr_assert_eq(setenv("GFL_PLUGIN_PATH", path, 1), 0);
    gfl_plugin *p = load_example();
    cr_assert_eq(gfl_plugin_unload(p), 0);
}

Test(plugin, search_stops_at_the_first_match_even_if_broken)
{
    char dir[] = "/tmp/gfl-plugin-test-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char bogus[PATH_MAX];
    snprintf(bogus, sizeof bogus, "%s/example.so", dir);
    FILE *f = fopen(bogus, "w");
    cr_assert_not_null(f);
    fputs("not an ELF file\n", f);
    fclose(f);

    char path[2 * PATH_MAX];
    snprintf(path, sizeof path, "%s:%s", dir, example_dir);
    cr_assert_eq(setenv("GFL_PLUGIN_PATH", path, 1), 0);
    cr_assert_null(gfl_plugin_load("example", NULL));
    assert_error_contains(bogus);

    unlink(bogus);
    rmdir(dir);
}

Test(plugin, loads_once_per_process_and_counts_references)
{
    gfl_plugin *a = load_fixture();
    gfl_value *v = call_ok(a, "finalized", NULL, 0);
    int64_t before;
    cr_assert_eq(gfl_value_get_int(v, &before), 0);
    gfl_value_unref(v);

    /* Every host asking for the name gets the same instance, whatever path
     * it gives: the init does not run again. */
    gfl_plugin *b = load_fixture();
    cr_assert_eq(a, b);
    gfl_plugin *c = gfl_plugin_load("fixture", NULL);
    cr_assert_eq(a, c, "%s", gfl_plugin_last_error() ? gfl_plugin_last_error() : "");

    /* Two unloads leave it loaded and callable; the finaliser has not run. */
    cr_assert_eq(gfl_plugin_unload(c), 0);
    cr_assert_eq(gfl_plugin_unload(b), 0);
    v = call_ok(a, "finalized", NULL, 0);
    assert_int(v, before);
    gfl_value_unref(v);

    /* The last one finalises; a later load is a fresh instance. */
    cr_assert_eq(gfl_plugin_unload(a), 0);
    cr_assert_eq(gfl_plugin_unload(a), GFL_EINVAL, "an unloaded handle is refused, not used");
    gfl_plugin *d = load_fixture();
    v = call_ok(d, "finalized", NULL, 0);
    assert_int(v, before + 1);
    gfl_value_unref(v);
    cr_assert_eq(gfl_plugin_unload(d), 0);
}

static void *load_in_thread(void *arg)
{
    (void)arg;
    return gfl_plugin_load("example", NULL);
}

Test(plugin, loads_from_threads_share_one_instance)
{
    pthread_t th[4];
    void *got[4];
    for (int i = 0; i < 4; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, load_in_thread, NULL), 0);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(pthread_join(th[i], &got[i]), 0);
    for (int i = 0; i < 4; i++) {
        cr_assert_not_null(got[i]);
        cr_assert_eq(got[i], got[0]);
    }
    for (int i = 0; i < 4; i++)
        cr_assert_eq(gfl_plugin_unload(got[i]), 0);
}

Test(plugin, reachable_through_the_api_table)
{
    const gfl_api *api = gfl_api_get();
    gfl_plugin *p = api->plugin_load("example", NULL);
    cr_assert_not_null(p, "%s", api->plugin_last_error());
    cr_assert_eq(api->plugin_function_count(p), 4);
    cr_assert_eq(api->plugin_unload(p), 0);
}

/* ------------------------------------------------------------------ */
/* Load failures                                                       */

Test(plugin, rejects_bad_names)
{
    const char *bad[] = {
        "", "a-b", "a b", "../example", "example.so", "x/y", "caf\xc3\xa9",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_null(gfl_plugin_load(bad[i], NULL), "\"%s\" accepted", bad[i]);
        assert_error_contains("invalid plugin name");
    }
    cr_assert_null(gfl_plugin_load(NULL, NULL));
    assert_error_contains("invalid plugin name");
    cr_assert_null(gfl_plugin_load(NULL, example_so));
    assert_error_contains("invalid plugin name");
    /* At most 64 characters. */
    char longest[66];
    memset(longest, 'x', 65);
    longest[65] = '\0';
    cr_assert_null(gfl_plugin_load(longest, NULL));
    assert_error_contains("invalid plugin name");
    longest[64] = '\0';
    cr_assert_null(gfl_plugin_load(longest, NULL));
    assert_error_contains("not found");
}

Test(plugin, missing_plugin_names_the_paths_searched)
{
    cr_assert_null(gfl_plugin_load("no_such_plugin", NULL));
    assert_error_contains("plugin no_such_plugin not found");
    char expected[PATH_MAX + 32];
    snprintf(expected, sizeof expected, "%s/no_such_plugin.so", example_dir);
    assert_error_contains(expected);
    assert_error_contains("$GFL_PLUGIN_PATH");
}

Test(plugin, missing_file_names_the_path)
{
    cr_assert_null(gfl_plugin_load("example", "/nonexistent/dir/example.so"));
    assert_error_contains("/nonexistent/dir/example.so");
    assert_error_contains("cannot load plugin example");
    cr_assert_null(gfl_plugin_load("example", ""));
    assert_error_contains("empty path");
}

Test(plugin, file_that_is_not_a_library)
{
    char file[] = "/tmp/gfl-plugin-test-XXXXXX";
    int fd = mkstemp(file);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, "garbage", 7), 7);
    close(fd);
    cr_assert_null(gfl_plugin_load("example", file));
    assert_error_contains(file);
    unlink(file);
}

Test(plugin, missing_entry_point_names_file_and_symbol)
{
    cr_assert_null(gfl_plugin_load("other", example_so));
    assert_error_contains("gfl_plugin_init_other");
    assert_error_contains(example_so);
}

Test(plugin, refusing_init_reports_the_reason)
{
    cr_assert_null(gfl_plugin_load("refuse", fixture_so));
    char expected[256];
    snprintf(expected, sizeof expected, "plugin refuse refused to load: %s", gfl_strerror(GFL_EVERSION));
    cr_assert_str_eq(gfl_plugin_last_error(), expected);

    cr_assert_null(gfl_plugin_load("refuse_positive", fixture_so));
    assert_error_contains("plugin refuse_positive refused to load");
    assert_error_contains("7");
}

Test(plugin, refusing_init_drops_its_registrations_without_finalising)
{
    gfl_plugin *p = load_fixture();
    gfl_value *before = call_ok(p, "finalized", NULL, 0);

    /* The registrations are freed (valgrind checks), the finaliser it set
     * does not run. */
    cr_assert_null(gfl_plugin_load("register_then_refuse", fixture_so));
    char expected[256];
    snprintf(expected, sizeof expected, "plugin register_then_refuse refused to load: %s",
             gfl_strerror(GFL_ENOMEM));
    cr_assert_str_eq(gfl_plugin_last_error(), expected);

    gfl_value *after = call_ok(p, "finalized", NULL, 0);
    int64_t b, a;
    gfl_value_get_int(before, &b);
    gfl_value_get_int(after, &a);
    cr_assert_eq(a, b);
    gfl_value_unref(before);
    gfl_value_unref(after);
    cr_assert_eq(gfl_plugin_unload(p), 0);
}

/* A check the plugin side does: exercised with doctored tables. */
static int check_api(const gfl_api *api)
{
    GFL_PLUGIN_CHECK_API(api, plugin_set_finalizer);
    return 0;
}

Test(plugin, check_api_macro_refuses_other_majors_and_short_tables)
{
    const gfl_api *real = gfl_api_get();
    cr_assert_eq(check_api(real), 0);
    cr_assert_eq(check_api(NULL), GFL_EVERSION);

    gfl_api copy = *real;
    copy.abi_major = GFL_ABI_MAJOR + 1;
    cr_assert_eq(check_api(&copy), GFL_EVERSION);

    copy = *real;
    copy.size = offsetof(gfl_api, plugin_set_finalizer); /* an older core */
    cr_assert_eq(check_api(&copy), GFL_EVERSION);

    copy = *real;
    copy.plugin_set_finalizer = NULL;
    cr_assert_eq(check_api(&copy), GFL_EVERSION);
}

static void *load_missing_in_thread(void *arg)
{
    (void)arg;
    gfl_plugin *p = gfl_plugin_load("thread_missing", NULL);
    const char *msg = gfl_plugin_last_error();
    return (void *)(intptr_t)(p == NULL && msg && strstr(msg, "thread_missing"));
}

Test(plugin, last_error_is_per_thread)
{
    cr_assert_null(gfl_plugin_load("main_missing", NULL));
    pthread_t t;
    void *ok;
    cr_assert_eq(pthread_create(&t, NULL, load_missing_in_thread, NULL), 0);
    cr_assert_eq(pthread_join(t, &ok), 0);
    cr_assert(ok != NULL, "the other thread saw the wrong message");
    assert_error_contains("main_missing");

    /* A successful load clears it. */
    gfl_plugin *p = load_example();
    cr_assert_null(gfl_plugin_last_error());
    cr_assert_eq(gfl_plugin_unload(p), 0);
}

/* ------------------------------------------------------------------ */
/* Registration rules                                                  */

static int dummy_fn(void *ud, gfl_loop *l, gfl_value *const *args, size_t nargs, gfl_value **result)
{
    (void)ud, (void)l, (void)args, (void)nargs, (void)result;
    return 0;
}

static gfl_future *dummy_async(void *ud, gfl_loop *l, gfl_value *const *args, size_t nargs)
{
    (void)ud, (void)l, (void)args, (void)nargs;
    return NULL;
}

static void dummy_release(void *ud)
{
    (void)ud;
}

Test(plugin, registration_only_during_init)
{
    gfl_plugin *p = load_example();
    cr_assert_eq(gfl_plugin_add_function(p, "late", dummy_fn, NULL), GFL_ESTATE);
    cr_assert_eq(gfl_plugin_add_async_function(p, "late", dummy_async, NULL), GFL_ESTATE);
    cr_assert_eq(gfl_plugin_set_finalizer(p, dummy_release, NULL), GFL_ESTATE);
    cr_assert_eq(gfl_plugin_function_count(p), 4);
    cr_assert_eq(gfl_plugin_add_function(NULL, "x", dummy_fn, NULL), GFL_EINVAL);
    cr_assert_eq(gfl_plugin_set_finalizer(NULL, dummy_release, NULL), GFL_EINVAL);
    cr_assert_eq(gfl_plugin_unload(p), 0);
}

Test(plugin, registration_misuse_during_init)
{
    gfl_plugin *p = load_fixture();
    gfl_value *codes = call_ok(p, "codes", NULL, 0);
    char expected[256];
    snprintf(expected, sizeof expected,
             "dup=%d dup_async=%d bad_name=%d digit_first=%d empty=%d null_name=%d "
             "null_fn=%d null_self=%d unload_self=%d",
             GFL_EEXIST, GFL_EEXIST, GFL_EINVAL, GFL_EINVAL, GFL_EINVAL, GFL_EINVAL,
             GFL_EINVAL, GFL_EINVAL, GFL_ESTATE);
    const char *data;
    size_t len;
    cr_assert_eq(gfl_value_get_bytes(codes, &data, &len), 0);
    cr_assert_str_eq(data, expected);
    gfl_value_unref(codes);
    cr_assert_eq(gfl_plugin_unload(p), 0);
}

Test(plugin, unload_runs_the_finaliser_once)
{
    gfl_plugin *p = load_fixture();
    gfl_value *v = call_ok(p, "finalized", NULL, 0);
    int64_t before;
    cr_assert_eq(gfl_value_get_int(v, &before), 0);
    gfl_value_unref(v);
    cr_assert_eq(gfl_plugin_unload(p), 0);

    /* The shared object stays mapped, so its counter survives. */
    p = load_fixture();
    v = call_ok(p, "finalized", NULL, 0);
    assert_int(v, before + 1);
    gfl_value_unref(v);
    cr_assert_eq(gfl_plugin_unload(p), 0);
    cr_assert_eq(gfl_plugin_unload(NULL), GFL_EINVAL);
}

Test(plugin, a_function_may_unload_its_own_plugin)
{
    gfl_plugin *p = load_fixture();
    gfl_value *r = call_ok(p, "unload_self", NULL, 0);
    assert_int(r, 0);
    gfl_value_unref(r);
    /* p is gone; valgrind checks the core did not touch it afterwards. */
}

/* ------------------------------------------------------------------ */
/* Sync calls                                                          */

Test(plugin, add_adds_ints)
{
    gfl_plugin *p = load_example();
    gfl_value *args[] = {gfl_value_int(40), gfl_value_int(2)};
    gfl_value *r = call_ok(p, "add", args, 2);
    assert_int(r, 42);
    gfl_value_unref(r);
    gfl_value_unref(args[0]);
    gfl_value_unref(args[1]);
    cr_assert_eq(gfl_plugin_unload(p), 0);
}

Test(plugin, add_rejects_wrong_types_and_counts)
{
    gfl_plugin *p = load_example();
    gfl_value *args[] = {gfl_value_int(1), gfl_value_string("2", 1)};
    gfl_value *r = NULL;
    cr_assert_eq(gfl_plugin_call(p, "add", loop, args, 2, &r), GFL_ETYPE);
    cr_assert_not_null(r);
    assert_error(r, GFL_ETYPE, "TypeError", "add() takes two ints, not int and string");
    gfl_value_unref(r);

    r = NULL;
    cr_assert_eq(gfl_plugin_call(p, "add", loop, args, 1, &r), GFL_EINVAL);
    assert_error(r, GFL_EINVAL, "TypeError", "exactly 2 arguments (1 given)");
    gfl_value_unref(r);

    gfl_value *big[] = {gfl_value_int(INT64_MAX), gfl_value_int(1)};
    r = NULL;
    cr_assert_eq(gfl_plugin_call(p, "add", loop, big, 2, &r), GFL_ERANGE);
    assert_error(r, GFL_ERANGE, "OverflowError", NULL);
    gfl_value_unref(r);

    for (int i = 0; i < 2; i++) {
        gfl_value_unref(args[i]);
        gfl_value_unref(big[i]);
    }
    cr_assert_eq(gfl_plugin_unload(p), 0);
}

Test(plugin, concat_joins_strings_and_bytes)
{
    gfl_plugin *p = load_example();
    gfl_value *args[] = {gfl_value_string("foo", 3), gfl_value_string("", 0),
                         gfl_value_string("bar", 3), gfl_value_bytes("\0!", 2)};
    gfl_value *r = call_ok(p, "concat", args, 3);
    assert_bytes(r, GFL_VALUE_STRING, "foobar", 6);
    gfl_value_unref(r);

    r = call_ok(p, "concat", args, 4);
    assert_bytes(r, GFL_VALUE_BYTES, "foobar\0!", 8);
    gfl_value_unref(r);

    r = call_ok(p, "concat", NULL, 0);
    assert_bytes(r, GFL_VALUE_STRING, "", 0);
    gfl_value_unref(r);

    gfl_value *bad[] = {args[0], gfl_value_double(1.5)};
    r = NULL;
    cr_assert_eq(gfl_plugin_call(p, "concat", loop, bad, 2, &r), GFL_ETYPE);
    assert_error(r, GFL_ETYPE, "TypeError", "argument 2 must be a string or bytes, not double");
    gfl_value_unref(r);
    gfl_value_unref(bad[1]);

    for (int i = 0; i < 4; i++)
        gfl_value_unref(args[i]);
    cr_assert_eq(gfl_plugin_unload(p), 0);
}

Test(plugin, sync_call_contract_is_normalised)
{
    gfl_plugin *p = load_fixture();
    gfl_value *r = NULL;

    /* A bare negative code becomes an error value. */
    cr_assert_eq(gfl_plugin_call(p, "raw_fail", loop, NULL, 0, &r), GFL_EIO);
    assert_error(r, GFL_EIO, "Error", "fixture.raw_fail");
    gfl_value_unref(r);

    /* A non-error value left with a failure is dropped (valgrind). */
    r = NULL;
    cr_assert_eq(gfl_plugin_call(p, "non_error_fail", loop, NULL, 0, &r), GFL_EPERM);
    assert_error(r, GFL_EPERM, NULL, "fixture.non_error_fail");
    gfl_value_unref(r);

    /* Success without a value is nil. */
    r = call_ok(p, "no_result", NULL, 0);
    cr_assert_eq(gfl_value_type_of(r), GFL_VALUE_NIL);
    gfl_value_unref(r);

    /* A positive status is outside the contract. */
    r = NULL;
    cr_assert_eq(gfl_plugin_call(p, "positive", loop, NULL, 0, &r), GFL_EUNKNOWN);
    assert_error(r, GFL_EUNKNOWN, NULL, "invalid status 1");
    gfl_value_unref(r);

    cr_assert_eq(gfl_plugin_unload(p), 0);
}

Test(plugin, call_validates_arguments)
{
    gfl_plugin *p = load_example();
    gfl_value *one = gfl_value_int(1);
    gfl_value *args[] = {one, one};
    gfl_value *with_null[] = {one, NULL};
    gfl_value *r = (gfl_value *)&r; /* must be reset to NULL */

    cr_assert_eq(gfl_plugin_call(NULL, "add", loop, args, 2, &r), GFL_EINVAL);
    cr_assert_null(r);
    cr_assert_eq(gfl_plugin_call(p, NULL, loop, args, 2, &r), GFL_EINVAL);
    cr_assert_eq(gfl_plugin_call(p, "add", NULL, args, 2, &r), GFL_EINVAL);
    cr_assert_eq(gfl_plugin_call(p, "add", loop, NULL, 2, &r), GFL_EINVAL);
    cr_assert_eq(gfl_plugin_call(p, "add", loop, with_null, 2, &r), GFL_EINVAL);
    cr_assert_eq(gfl_plugin_call(p, "add", loop, args, 2, NULL), GFL_EINVAL);
    cr_assert_null(r);

    /* Unknown function: ENOENT with an error value to raise. */
    cr_assert_eq(gfl_plugin_call(p, "nope", loop, args, 2, &r), GFL_ENOENT);
    assert_error(r, GFL_ENOENT, "AttributeError", "example.nope");
    gfl_value_unref(r);

    /* An async function cannot be called synchronously. */
    r = NULL;
    cr_assert_eq(gfl_plugin_call(p, "fail", loop, NULL, 0, &r), GFL_ESTATE);
    assert_error(r, GFL_ESTATE, NULL, "gfl_plugin_call_async");
    gfl_value_unref(r);

    /* A closed loop. */
    gfl_loop *closed = gfl_loop_new(NULL);
    cr_assert_not_null(closed);
    gfl_loop_ref(closed);
    cr_assert_eq(gfl_loop_free(closed), 0);
    r = NULL;
    cr_assert_eq(gfl_plugin_call(p, "add", closed, args, 2, &r), GFL_ECLOSED);
    cr_assert_null(r);
    cr_assert_null(gfl_plugin_call_async(p, "add", closed, args, 2));
    cr_assert_eq(gfl_loop_unref(closed), 0);

    gfl_value_unref(one);
    cr_assert_eq(gfl_plugin_unload(p), 0);
}

/* ------------------------------------------------------------------ */
/* Async calls                                                         */

Test(plugin, sleep_then_echo_resolves_after_the_delay)
{
    gfl_plugin *p = load_example();
    gfl_value *args[] = {gfl_value_double(0.05), gfl_value_string("hello", 5)};
    double start = gfl_loop_time(loop);
    gfl_future *f = gfl_plugin_call_async(p, "sleep_then_echo", loop, args, 2);
    cr_assert_not_null(f);
    /* The plugin keeps its own references: ours may go now. */
    gfl_value_unref(args[0]);
    gfl_value_unref(args[1]);
    cr_assert_eq(gfl_future_state_of(f), GFL_FUTURE_PENDING);

    await_future(f, 5.0);
    cr_assert_geq(gfl_loop_time(loop) - start, 0.045);
    cr_assert_eq(gfl_future_state_of(f), GFL_FUTURE_RESULT);
    assert_bytes(gfl_future_value(f), GFL_VALUE_STRING, "hello", 5);
    gfl_future_unref(f);
    cr_assert_eq(gfl_plugin_unload(p), 0);
}

Test(plugin, sleep_then_echo_outlives_unload_and_dropped_future)
{
    gfl_plugin *p = load_example();
    gfl_value *args[] = {gfl_value_int(0), gfl_value_int(7)};
    gfl_future *kept = gfl_plugin_call_async(p, "sleep_then_echo", loop, args, 2);
    gfl_future *dropped = gfl_plugin_call_async(p, "sleep_then_echo", loop, args, 2);
    gfl_future *cancelled = gfl_plugin_call_async(p, "sleep_then_echo", loop, args, 2);
    cr_assert(kept && dropped && cancelled);
    gfl_value_unref(args[0]);
    gfl_value_unref(args[1]);

    gfl_future_unref(dropped);
    cr_assert_eq(gfl_future_cancel(cancelled, NULL), 1);
    /* The code stays mapped: the pending timers still work. */
    cr_assert_eq(gfl_plugin_unload(p), 0);

    await_future(kept, 5.0);
    assert_int(gfl_future_value(kept), 7);
    /* Let the cancelled one's timer run and free its state (valgrind). */
    for (int i = 0; i < 3; i++)
        gfl_loop_run_once(loop, 0);
    cr_assert_eq(gfl_future_state_of(cancelled), GFL_FUTURE_CANCELLED);
    gfl_future_unref(cancelled);
    gfl_future_unref(kept);
}

Test(plugin, sleep_then_echo_rejects_bad_arguments)
{
    gfl_plugin *p = load_example();
    gfl_value *args[] = {gfl_value_string("soon", 4), gfl_value_nil()};
    gfl_future *f = gfl_plugin_call_async(p, "sleep_then_echo", loop, args, 2);
    cr_assert_not_null(f);
    cr_assert_eq(gfl_future_state_of(f), GFL_FUTURE_ERROR);
    assert_error(gfl_future_value(f), GFL_ETYPE, "TypeError", "sleep_then_echo()");
    gfl_future_unref(f);
    gfl_value_unref(args[0]);
    gfl_value_unref(args[1]);
    cr_assert_eq(gfl_plugin_unload(p), 0);
}

Test(plugin, fail_fails_its_future)
{
    gfl_plugin *p = load_example();
    gfl_future *f = gfl_plugin_call_async(p, "fail", loop, NULL, 0);
    cr_assert_not_null(f);
    await_future(f, 1.0);
    cr_assert_eq(gfl_future_state_of(f), GFL_FUTURE_ERROR);
    assert_error(gfl_future_value(f), GFL_EIO, "ExampleError", "fail() failed");
    gfl_future_unref(f);

    gfl_value *msg = gfl_value_string("custom message", 14);
    f = gfl_plugin_call_async(p, "fail", loop, &msg, 1);
    cr_assert_not_null(f);
    await_future(f, 1.0);
    assert_error(gfl_future_value(f), GFL_EIO, "ExampleError", "custom message");
    gfl_future_unref(f);
    gfl_value_unref(msg);
    cr_assert_eq(gfl_plugin_unload(p), 0);
}

Test(plugin, call_async_wraps_sync_functions)
{
    gfl_plugin *p = load_example();
    gfl_value *args[] = {gfl_value_int(2), gfl_value_int(3)};
    gfl_future *f = gfl_plugin_call_async(p, "add", loop, args, 2);
    cr_assert_not_null(f);
    cr_assert_eq(gfl_future_state_of(f), GFL_FUTURE_RESULT);
    assert_int(gfl_future_value(f), 5);
    gfl_future_unref(f);

    gfl_value *bad[] = {args[0], gfl_value_nil()};
    f = gfl_plugin_call_async(p, "add", loop, bad, 2);
    cr_assert_not_null(f);
    cr_assert_eq(gfl_future_state_of(f), GFL_FUTURE_ERROR);
    assert_error(gfl_future_value(f), GFL_ETYPE, "TypeError", "not int and nil");
    gfl_future_unref(f);

    gfl_value_unref(bad[1]);
    gfl_value_unref(args[0]);
    gfl_value_unref(args[1]);
    cr_assert_eq(gfl_plugin_unload(p), 0);
}

Test(plugin, call_async_reports_call_failures_as_failed_futures)
{
    gfl_plugin *p = load_example();
    gfl_future *f = gfl_plugin_call_async(p, "nope", loop, NULL, 0);
    cr_assert_not_null(f);
    cr_assert_eq(gfl_future_state_of(f), GFL_FUTURE_ERROR);
    assert_error(gfl_future_value(f), GFL_ENOENT, "AttributeError", "example.nope");
    gfl_future_unref(f);

    /* Invalid arguments are NULL. */
    gfl_value *one = gfl_value_int(1);
    gfl_value *with_null[] = {one, NULL};
    cr_assert_null(gfl_plugin_call_async(NULL, "add", loop, NULL, 0));
    cr_assert_null(gfl_plugin_call_async(p, NULL, loop, NULL, 0));
    cr_assert_null(gfl_plugin_call_async(p, "add", NULL, NULL, 0));
    cr_assert_null(gfl_plugin_call_async(p, "add", loop, NULL, 1));
    cr_assert_null(gfl_plugin_call_async(p, "add", loop, with_null, 2));
    gfl_value_unref(one);
    cr_assert_eq(gfl_plugin_unload(p), 0);

    /* An async function returning NULL. */
    p = load_fixture();
    f = gfl_plugin_call_async(p, "null_future", loop, NULL, 0);
    cr_assert_not_null(f);
    assert_error(gfl_future_value(f), GFL_EUNKNOWN, NULL, "fixture.null_future: returned no future");
    gfl_future_unref(f);
    cr_assert_eq(gfl_plugin_unload(p), 0);
}

static void *call_from_thread(void *arg)
{
    gfl_plugin *p = arg;
    gfl_value *r = NULL;
    int rc = gfl_plugin_call(p, "concat", loop, NULL, 0, &r);
    gfl_value_unref(r);
    return (void *)(intptr_t)rc;
}

Test(plugin, calls_only_from_the_loop_thread)
{
    gfl_plugin *p = load_example();
    pthread_t t;
    void *rc;
    cr_assert_eq(pthread_create(&t, NULL, call_from_thread, p), 0);
    cr_assert_eq(pthread_join(t, &rc), 0);
    cr_assert_eq((int)(intptr_t)rc, GFL_EWRONGTHREAD);
    cr_assert_eq(gfl_plugin_unload(p), 0);
}

Test(plugin, introspection_rejects_null)
{
    cr_assert_null(gfl_plugin_name(NULL));
    cr_assert_eq(gfl_plugin_function_count(NULL), GFL_EINVAL);
    cr_assert_null(gfl_plugin_function_name(NULL, 0));
    cr_assert_eq(gfl_plugin_function_is_async(NULL, "add"), GFL_EINVAL);
    gfl_plugin *p = load_example();
    cr_assert_eq(gfl_plugin_function_is_async(p, NULL), GFL_EINVAL);
    cr_assert_eq(gfl_plugin_unload(p), 0);
}
