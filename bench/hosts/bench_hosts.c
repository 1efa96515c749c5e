/*
 * Cross-host call benchmark: a C host with Lua and Python on one loop (as
 * examples/engine embeds them) measuring sequential round trips:
 *
 *   Lua task -> Lua task, Python task -> Python task   (same-host awaits)
 *   Lua -> Python export, Python -> Lua export          (cross-host calls)
 *   Lua -> plugin, Python -> plugin                     (sync and async)
 *
 * The scripts (bench.lua, bench.py) time each case and report it through
 * the host's export bench.result; the host prints the table with ratios
 * against the same-host await of the calling host and of the called host.
 *
 *   bench_hosts --lua bench/hosts/bench.lua --python-path DIRS [--calls N]
 *
 * The host pumps with gfl_loop_run (blocking polls) WITHOUT the GIL, as an
 * engine does; Python's callbacks take it.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <globeflower.h>

#include "embed.h"

#define MAX_ROWS 32

static struct row {
    char name[64];
    char caller[16];
    double seconds, cpu;
    int64_t calls;
} rows[MAX_ROWS];
static int nrows;
static gfl_loop *loop;
static int64_t calls = 20000;

static const char *map_string(gfl_value *m, const char *key)
{
    const char *s = NULL;
    if (gfl_value_get_bytes(gfl_value_map_find(m, key, strlen(key)), &s, NULL) < 0)
        return NULL;
    return s;
}

static double map_double(gfl_value *m, const char *key)
{
    double d = -1;
    gfl_value_get_double(gfl_value_map_find(m, key, strlen(key)), &d);
    return d;
}

/* bench.result({name=, caller=, calls=, seconds=, cpu=}) */
static int export_result(void *ud, gfl_loop *l, gfl_value *const *args, size_t nargs, gfl_value **result)
{
    (void)ud, (void)l;
    const char *name = nargs == 1 ? map_string(args[0], "name") : NULL;
    const char *caller = name ? map_string(args[0], "caller") : NULL;
    if (!caller || nrows == MAX_ROWS) {
        *result = gfl_value_error(GFL_EINVAL, "TypeError", "bench.result takes {name=, caller=, calls=, seconds=, cpu=}", NULL);
        return GFL_EINVAL;
    }
    struct row *r = &rows[nrows++];
    snprintf(r->name, sizeof r->name, "%s", name);
    snprintf(r->caller, sizeof r->caller, "%s", caller);
    r->calls = (int64_t)map_double(args[0], "calls");
    r->seconds = map_double(args[0], "seconds");
    r->cpu = map_double(args[0], "cpu");
    *result = gfl_value_nil();
    return 0;
}

/* bench.calls(): how many round trips each case makes. */
static int export_calls(void *ud, gfl_loop *l, gfl_value *const *args, size_t nargs, gfl_value **result)
{
    (void)ud, (void)l, (void)args, (void)nargs;
    *result = gfl_value_int(calls);
    return *result ? 0 : GFL_ENOMEM;
}

static int export_done(void *ud, gfl_loop *l, gfl_value *const *args, size_t nargs, gfl_value **result)
{
    (void)ud, (void)args, (void)nargs;
    gfl_loop_stop(l);
    *result = gfl_value_nil();
    return 0;
}

static const struct row *row_named(const char *name)
{
    for (int i = 0; i < nrows; i++) {
        if (strcmp(rows[i].name, name) == 0)
            return &rows[i];
    }
    return NULL;
}

static double us_per_call(const struct row *r)
{
    return r && r->calls > 0 ? r->seconds / (double)r->calls * 1e6 : -1;
}

int main(int argc, char **argv)
{
    const char *lua_script = NULL, *py_path = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--lua") == 0 && i + 1 < argc)
            lua_script = argv[++i];
        else if (strcmp(argv[i], "--python-path") == 0 && i + 1 < argc)
            py_path = argv[++i];
        else if (strcmp(argv[i], "--calls") == 0 && i + 1 < argc)
            calls = atoll(argv[++i]);
        else {
            fprintf(stderr, "usage: %s --lua bench.lua --python-path DIRS [--calls N]\n", argv[0]);
            return 2;
        }
    }
    if (!lua_script || calls <= 0) {
        fprintf(stderr, "usage: %s --lua bench.lua --python-path DIRS [--calls N]\n", argv[0]);
        return 2;
    }
    loop = gfl_loop_new(NULL);
    if (!loop || gfl_loop_set_current(loop) < 0 ||
        gfl_export(loop, "bench.result", export_result, NULL, NULL, NULL) < 0 ||
        gfl_export(loop, "bench.calls", export_calls, NULL, NULL, NULL) < 0 ||
        gfl_export(loop, "bench.done", export_done, NULL, NULL, NULL) < 0)
        return 1;
    embed_lua *lua = embed_lua_start(loop, lua_script);
    embed_python *py = lua ? embed_python_start(loop, py_path, "bench_py") : NULL;
    if (!py)
        return 1;
    int rc = gfl_loop_run(loop);

    printf("%-34s %10s %12s %12s %14s %14s\n", "case (sequential round trips)", "calls", "us/call", "calls/s",
           "CPU us/call", "x same-host");
    const struct row *lua_base = row_named("Lua task -> Lua task");
    const struct row *py_base = row_named("Python task -> Python task");
    for (int i = 0; i < nrows; i++) {
        const struct row *r = &rows[i];
        const struct row *base = strcmp(r->caller, "lua") == 0 ? lua_base : py_base;
        double us = us_per_call(r);
        char ratio[32] = "-";
        if (r != base && base)
            snprintf(ratio, sizeof ratio, "%.2fx", us / us_per_call(base));
        printf("%-34s %10lld %12.2f %12.0f %14.2f %14s\n", r->name, (long long)r->calls, us,
               r->seconds > 0 ? (double)r->calls / r->seconds : 0, r->calls ? r->cpu / (double)r->calls * 1e6 : 0,
               ratio);
    }
    /* Cross-host calls against the callee's own same-host await too: a call
     * into Python cannot be cheaper than Python's own task round trip. */
    const char *pairs[][2] = {
        {"Lua -> Python export (coroutine)", "Python task -> Python task"},
        {"Python -> Lua export", "Lua task -> Lua task"},
    };
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        const struct row *a = row_named(pairs[i][0]), *b = row_named(pairs[i][1]);
        if (a && b)
            printf("ratio: %s / %s = %.2fx\n", pairs[i][0], pairs[i][1], us_per_call(a) / us_per_call(b));
    }

    embed_python_close(py);
    embed_lua_close(lua);
    gfl_loop_free(loop);
    return rc < 0 || nrows == 0 ? 1 : 0;
}
