/*
 * A fixed-timestep 60 Hz "engine" embedding Lua and Python on ONE
 * globeflower loop, with the example plugin loaded.
 *
 *   engine [--seconds S] [--fps F] [--budget MS] [--teardown ORDER]
 *          [--no-timing] [--pump-once] --lua game.lua --python-path DIRS
 *
 * Every frame the engine pumps the loop with gfl_loop_run_for(loop, budget)
 * (iterations until nothing is ready or the budget is spent, never
 * blocking), then "renders" (sleeps until the next frame). On that loop:
 *  - Lua (game.lua) runs a TCP server and exports lua.greet / lua.relay;
 *  - Python (game.py) connects to it with asyncio streams and exports
 *    py.square / py.fail;
 *  - each calls the other's exports and the plugin, and awaits the results;
 *  - the engine itself exports engine.frame (the frame number) and
 *    engine.report (scripts report each checked exchange there).
 * At the end it prints the frame-time percentiles and, per kind of
 * exchange, how many ran and how many frames they took, and exits 0 only
 * when every exchange checked out, every round trip finished in the frame
 * it started in, and every frame's work fitted in its period (at most 1% of
 * frames may start late when the OS did not schedule the engine in time;
 * --no-timing, for valgrind, checks neither timing property).
 *
 * ORDER (teardown): python-lua-loop (default), lua-python-loop or
 * loop-first (free the loop while both interpreters still hold it).
 * --pump-once pumps with gfl_loop_run_once(loop, 0) instead, to show what
 * run_for saves (round trips then span frames, and the run fails).
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <globeflower.h>

#include "embed.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_until(double t)
{
    double d = t - now();
    if (d <= 0)
        return;
    struct timespec ts = {(time_t)d, (long)((d - (double)(time_t)d) * 1e9)};
    nanosleep(&ts, NULL);
}

/* ------------------------------------------------------------------ */
/* What the scripts report                                             */

#define MAX_KINDS 32

struct kind_stats {
    char name[48];
    long count, failed;
    long max_frames; /* the most frames one exchange took */
    char last_failure[160];
};

static struct {
    long frame;
    struct kind_stats kinds[MAX_KINDS];
    int nkinds;
    long bad_reports;
} engine;

static struct kind_stats *kind_named(const char *name)
{
    for (int i = 0; i < engine.nkinds; i++) {
        if (strcmp(engine.kinds[i].name, name) == 0)
            return &engine.kinds[i];
    }
    if (engine.nkinds == MAX_KINDS)
        return NULL;
    struct kind_stats *k = &engine.kinds[engine.nkinds++];
    snprintf(k->name, sizeof k->name, "%s", name);
    return k;
}

/* engine.frame(): the current frame number. */
static int export_frame(void *ud, gfl_loop *loop, gfl_value *const *args, size_t nargs, gfl_value **result)
{
    (void)ud, (void)loop, (void)args, (void)nargs;
    *result = gfl_value_int(engine.frame);
    return *result ? 0 : GFL_ENOMEM;
}

static int64_t map_int(gfl_value *m, const char *key)
{
    int64_t i = -1;
    gfl_value_get_int(gfl_value_map_find(m, key, strlen(key)), &i);
    return i;
}

/* engine.report({kind=, start=, finish=, ok=, detail=}): one exchange. */
static int export_report(void *ud, gfl_loop *loop, gfl_value *const *args, size_t nargs, gfl_value **result)
{
    (void)ud, (void)loop;
    const char *kind = NULL, *detail = "";
    int ok = 0;
    if (nargs != 1 || gfl_value_type_of(args[0]) != GFL_VALUE_MAP ||
        gfl_value_get_bytes(gfl_value_map_find(args[0], "kind", 4), &kind, NULL) < 0 ||
        gfl_value_get_bool(gfl_value_map_find(args[0], "ok", 2), &ok) < 0) {
        engine.bad_reports++;
        *result = gfl_value_error(GFL_EINVAL, "TypeError", "engine.report takes {kind=, start=, finish=, ok=}", NULL);
        return GFL_EINVAL;
    }
    gfl_value_get_bytes(gfl_value_map_find(args[0], "detail", 6), &detail, NULL);
    struct kind_stats *k = kind_named(kind);
    if (k) {
        long frames = (long)(map_int(args[0], "finish") - map_int(args[0], "start"));
        k->count++;
        if (frames > k->max_frames)
            k->max_frames = frames;
        if (!ok) {
            k->failed++;
            snprintf(k->last_failure, sizeof k->last_failure, "%s", detail);
        }
    }
    *result = gfl_value_nil();
    return 0;
}

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int interrupted;
static void on_exception(gfl_loop *loop, const char *message, gfl_value *error, void *ud)
{
    (void)loop, (void)ud;
    fprintf(stderr, "engine: %s", message ? message : "error in a callback");
    if (error && gfl_value_type_of(error) == GFL_VALUE_ERROR)
        fprintf(stderr, ": %s: %s", gfl_value_error_type(error), gfl_value_error_message(error));
    fputc('\n', stderr);
    engine.bad_reports++;
}

int main(int argc, char **argv)
{
    double seconds = 10, fps = 60, budget_ms = 4;
    int timing = 1, pump_once = 0;
    const char *lua_script = NULL, *py_path = NULL, *teardown = "python-lua-loop";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--seconds") == 0 && v)
            seconds = atof(argv[++i]);
        else if (strcmp(a, "--fps") == 0 && v)
            fps = atof(argv[++i]);
        else if (strcmp(a, "--budget") == 0 && v)
            budget_ms = atof(argv[++i]);
        else if (strcmp(a, "--teardown") == 0 && v)
            teardown = argv[++i];
        else if (strcmp(a, "--lua") == 0 && v)
            lua_script = argv[++i];
        else if (strcmp(a, "--python-path") == 0 && v)
            py_path = argv[++i];
        else if (strcmp(a, "--no-timing") == 0)
            timing = 0;
        else if (strcmp(a, "--pump-once") == 0)
            pump_once = 1;
        else {
            fprintf(stderr, "engine: unknown argument %s\n", a);
            return 2;
        }
    }
    if (!lua_script || !(fps > 0) || !(seconds > 0) ||
        (strcmp(teardown, "python-lua-loop") && strcmp(teardown, "lua-python-loop") && strcmp(teardown, "loop-first"))) {
        fprintf(stderr, "usage: %s [--seconds S] [--fps F] [--budget MS] [--teardown python-lua-loop|lua-python-loop|loop-first] "
                        "[--no-timing] [--pump-once] --lua game.lua --python-path DIRS\n", argv[0]);
        return 2;
    }

    /* 1. The loop, current for this thread, with the engine's exports. */
    gfl_loop *loop = gfl_loop_new(NULL);
    if (!loop || gfl_loop_set_current(loop) < 0)
        return 1;
    gfl_loop_set_exception_handler(loop, on_exception, NULL);
    if (gfl_export(loop, "engine.frame", export_frame, NULL, NULL, NULL) < 0 ||
        gfl_export(loop, "engine.report", export_report, NULL, NULL, NULL) < 0)
        return 1;
    /* 2. The plugin: one instance per process, the scripts get this one. */
    gfl_plugin *plugin = gfl_plugin_load("example", NULL);
    if (!plugin) {
        fprintf(stderr, "engine: %s\n", gfl_plugin_last_error());
        return 1;
    }
    /* 3. Lua, then Python, both on this loop. */
    embed_lua *lua = embed_lua_start(loop, lua_script);
    embed_python *py = lua ? embed_python_start(loop, py_path, "game") : NULL;
    if (!py) {
        embed_lua_close(lua);
        gfl_loop_free(loop);
        return 1;
    }

    /* 4. The frame loop. */
    const double period = 1.0 / fps, budget = budget_ms / 1e3;
    long frames = lround(seconds * fps), late = 0;
    double *work = calloc((size_t)frames, sizeof *work);
    double next = now();
    long n = 0;
    for (; n < frames && work; n++) {
        engine.frame = n;
        double start = now();
        if (start > next + period)
            late++; /* began after its whole slot had passed: a dropped frame */
        /* --pump-once: one iteration per frame, for comparison: each hop
         * of a cross-host round trip then waits for the next frame. */
        int rc = pump_once ? gfl_loop_run_once(loop, 0) : gfl_loop_run_for(loop, budget);
        if (rc == GFL_EINTR) {
            gfl_value_unref(gfl_loop_take_interrupt(loop));
            interrupted = 1;
            break;
        }
        work[n] = now() - start;
        if (getenv("ENGINE_TRACE") && work[n] > 0.001)
            fprintf(stderr, "frame %ld: %.3f ms (%d callbacks)\n", n, work[n] * 1e3, rc);
        next += period;
        sleep_until(next); /* "render" */
    }

    /* 5. Let the scripts wind down (close their connections, end their
     * tasks): a few blocking pumps, long enough for their 100 ms sleeps. */
    if (embed_lua_call(lua, "finish") < 0 || embed_python_call(py, "finish") < 0)
        engine.bad_reports++;
    for (double until = now() + 0.3; now() < until;)
        gfl_loop_run_once(loop, 0.01);

    /* 6. Results. */
    int ok = work && !interrupted && engine.bad_reports == 0 && engine.nkinds > 0 && n == frames;
    /* A frame that began after its whole slot had passed was not scheduled
     * in time by the OS (a loaded machine); a few are tolerated and shown,
     * frame work over the period never is. */
    long late_allowed = frames / 100;
    if (work && n > 0) {
        double p50, p99, max;
        qsort(work, (size_t)n, sizeof *work, compare_doubles);
        p50 = work[n / 2];
        p99 = work[(size_t)((double)(n - 1) * 0.99)];
        max = work[n - 1];
        printf("engine: %ld frames at %.0f Hz (budget %.1f ms): frame work p50 %.3f ms, p99 %.3f ms, max %.3f ms; "
               "late frames %ld\n", n, fps, budget_ms, p50 * 1e3, p99 * 1e3, max * 1e3, late);
        if (timing && (max > period || late > late_allowed)) {
            printf("engine: FAIL: the frame rate was not held\n");
            ok = 0;
        }
    }
    printf("engine: %-22s %8s %8s %12s\n", "exchange", "count", "failed", "max frames");
    for (int i = 0; i < engine.nkinds; i++) {
        struct kind_stats *k = &engine.kinds[i];
        printf("engine: %-22s %8ld %8ld %12ld\n", k->name, k->count, k->failed, k->max_frames);
        if (k->failed)
            printf("engine:   last failure: %s\n", k->last_failure);
        /* Same-frame round trips are a timing property: not checked under
         * --no-timing (valgrind, where one frame's work can outlast any
         * budget). */
        if (k->failed || k->count == 0 || (timing && k->max_frames != 0))
            ok = 0;
    }
    if (engine.bad_reports)
        printf("engine: %ld errors reported by the scripts or the loop\n", engine.bad_reports);
    free(work);

    /* 7. Teardown, in the order asked for: each must be clean. */
    gfl_plugin_unload(plugin);
    if (strcmp(teardown, "loop-first") == 0) {
        gfl_loop_free(loop);
        embed_python_close(py);
        embed_lua_close(lua);
    } else if (strcmp(teardown, "lua-python-loop") == 0) {
        embed_lua_close(lua);
        embed_python_close(py);
        gfl_loop_free(loop);
    } else {
        embed_python_close(py);
        embed_lua_close(lua);
        gfl_loop_free(loop);
    }
    printf("engine: %s\n", ok ? "every exchange checked out" : "FAILED");
    return ok ? 0 : 1;
}
