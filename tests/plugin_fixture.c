/*
 * A test-only plugin for tests/test_plugin.c: the loader's edge cases that
 * the example plugin should not contain. Built like a real plugin (against
 * abi/ only, never linked to the core) as tests/.libs/fixture.so, and loaded
 * with an explicit path under several names, one entry point each:
 *
 *   fixture                  loads; records what registration returned and
 *                            offers functions that bend the calling contract
 *   refuse                   a plugin "built for ABI major + 1"
 *   refuse_positive          an init returning a positive number
 *   register_then_refuse     registers functions, then refuses (no leak)
 */
#include <globeflower_plugin.h>

#include <stdio.h>
#include <string.h>

#define EXPORT __attribute__((visibility("default")))

static const gfl_api *api;
static int finalized;         /* finaliser runs, across loads */
static char codes[256];       /* registration results seen by the init */

static int fn_codes(void *ud, gfl_loop *loop, gfl_value *const *args, size_t nargs, gfl_value **result)
{
    (void)ud, (void)loop, (void)args, (void)nargs;
    *result = api->value_string(codes, strlen(codes));
    return *result ? 0 : GFL_ENOMEM;
}

static int fn_finalized(void *ud, gfl_loop *loop, gfl_value *const *args, size_t nargs, gfl_value **result)
{
    (void)ud, (void)loop, (void)args, (void)nargs;
    *result = api->value_int(finalized);
    return *result ? 0 : GFL_ENOMEM;
}

/* Fails with a bare code: the core must make the error value. */
static int fn_raw_fail(void *ud, gfl_loop *loop, gfl_value *const *args, size_t nargs, gfl_value **result)
{
    (void)ud, (void)loop, (void)args, (void)nargs, (void)result;
    return GFL_EIO;
}

/* Fails but leaves a non-error value: the core must drop it. */
static int fn_non_error_fail(void *ud, gfl_loop *loop, gfl_value *const *args, size_t nargs, gfl_value **result)
{
    (void)ud, (void)loop, (void)args, (void)nargs;
    *result = api->value_int(42);
    return GFL_EPERM;
}

/* Succeeds without a result: nil. */
static int fn_no_result(void *ud, gfl_loop *loop, gfl_value *const *args, size_t nargs, gfl_value **result)
{
    (void)ud, (void)loop, (void)args, (void)nargs, (void)result;
    return 0;
}

/* Returns a status outside the contract, with a value to drop. */
static int fn_positive(void *ud, gfl_loop *loop, gfl_value *const *args, size_t nargs, gfl_value **result)
{
    (void)ud, (void)loop, (void)args, (void)nargs;
    *result = api->value_int(1);
    return 1;
}

/* Unloads its own plugin while being called. */
static int fn_unload_self(void *ud, gfl_loop *loop, gfl_value *const *args, size_t nargs, gfl_value **result)
{
    (void)loop, (void)args, (void)nargs;
    *result = api->value_int(api->plugin_unload(ud));
    return *result ? 0 : GFL_ENOMEM;
}

static gfl_future *fn_null_future(void *ud, gfl_loop *loop, gfl_value *const *args, size_t nargs)
{
    (void)ud, (void)loop, (void)args, (void)nargs;
    return NULL;
}

static void finalize(void *ud)
{
    (void)ud;
    finalized++;
}

EXPORT int gfl_plugin_init_fixture(const gfl_api *core_api, gfl_plugin *self);
int gfl_plugin_init_fixture(const gfl_api *core_api, gfl_plugin *self)
{
    GFL_PLUGIN_CHECK_API(core_api, plugin_set_finalizer);
    api = core_api;

    int rc;
    if ((rc = api->plugin_add_function(self, "codes", fn_codes, NULL)) < 0 ||
        (rc = api->plugin_add_function(self, "finalized", fn_finalized, NULL)) < 0 ||
        (rc = api->plugin_add_function(self, "raw_fail", fn_raw_fail, NULL)) < 0 ||
        (rc = api->plugin_add_function(self, "non_error_fail", fn_non_error_fail, NULL)) < 0 ||
        (rc = api->plugin_add_function(self, "no_result", fn_no_result, NULL)) < 0 ||
        (rc = api->plugin_add_function(self, "positive", fn_positive, NULL)) < 0 ||
        (rc = api->plugin_add_function(self, "unload_self", fn_unload_self, self)) < 0 ||
        (rc = api->plugin_add_async_function(self, "null_future", fn_null_future, NULL)) < 0 ||
        (rc = api->plugin_set_finalizer(self, finalize, NULL)) < 0)
        return rc;

    /* Misuse during init; the test compares these with what it expects. */
    snprintf(codes, sizeof codes,
             "dup=%d dup_async=%d bad_name=%d digit_first=%d empty=%d null_name=%d "
             "null_fn=%d null_self=%d unload_self=%d",
             api->plugin_add_function(self, "codes", fn_codes, NULL),
             api->plugin_add_async_function(self, "raw_fail", fn_null_future, NULL),
             api->plugin_add_function(self, "no-dashes", fn_codes, NULL),
             api->plugin_add_function(self, "1st", fn_codes, NULL),
             api->plugin_add_function(self, "", fn_codes, NULL),
             api->plugin_add_function(self, NULL, fn_codes, NULL),
             api->plugin_add_function(self, "null_fn", NULL, NULL),
             api->plugin_add_function(NULL, "null_self", fn_codes, NULL),
             api->plugin_unload(self));
    return 0;
}

/* What GFL_PLUGIN_CHECK_API does in a plugin compiled for ABI major + 1. */
EXPORT int gfl_plugin_init_refuse(const gfl_api *core_api, gfl_plugin *self);
int gfl_plugin_init_refuse(const gfl_api *core_api, gfl_plugin *self)
{
    (void)self;
    if (core_api == NULL || core_api->abi_major != GFL_ABI_MAJOR + 1)
        return GFL_EVERSION;
    return 0;
}

EXPORT int gfl_plugin_init_refuse_positive(const gfl_api *core_api, gfl_plugin *self);
int gfl_plugin_init_refuse_positive(const gfl_api *core_api, gfl_plugin *self)
{
    (void)core_api, (void)self;
    return 7;
}

EXPORT int gfl_plugin_init_register_then_refuse(const gfl_api *core_api, gfl_plugin *self);
int gfl_plugin_init_register_then_refuse(const gfl_api *core_api, gfl_plugin *self)
{
    GFL_PLUGIN_CHECK_API(core_api, plugin_set_finalizer);
    core_api->plugin_add_function(self, "a", fn_codes, NULL);
    core_api->plugin_add_async_function(self, "b", fn_null_future, NULL);
    core_api->plugin_set_finalizer(self, finalize, NULL); /* must not run */
    return GFL_ENOMEM;
}
