/*
 * A frame-pumped "engine" host embedding Lua on its own globeflower loop.
 *
 * The host owns the loop and hands it to the lua_State before the script
 * requires "globeflower" (bindings/lua/globeflower_lua.h). Every frame it
 * runs one non-blocking loop iteration, calls the script's frame(n), and
 * sleeps until the next frame: network I/O and timers progress without
 * ever blocking the frame rate.
 *
 *   engine_lua [--frames N] [--fps F] [--free-loop-first] script.lua
 *
 * Exits 0 when the script set the global `result` to "ok". With
 * --free-loop-first the loop is freed before the state is closed (the
 * other teardown order); both must be clean.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include <globeflower.h>

#include "globeflower_lua.h"

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

int main(int argc, char **argv)
{
    int frames = 600;
    double fps = 60;
    int free_loop_first = 0;
    const char *script = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--frames") == 0 && i + 1 < argc)
            frames = atoi(argv[++i]);
        else if (strcmp(argv[i], "--fps") == 0 && i + 1 < argc)
            fps = atof(argv[++i]);
        else if (strcmp(argv[i], "--free-loop-first") == 0)
            free_loop_first = 1;
        else
            script = argv[i];
    }
    if (!script) {
        fprintf(stderr, "usage: %s [--frames N] [--fps F] [--free-loop-first] script.lua\n", argv[0]);
        return 2;
    }

    gfl_loop *loop = gfl_loop_new(NULL);
    if (!loop)
        return 1;
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    gfl_lua_set_loop(L, loop, gfl_api_get()); /* before any require */
    if (luaL_dofile(L, script) != 0) {
        fprintf(stderr, "engine: %s\n", lua_tostring(L, -1));
        lua_close(L);
        gfl_loop_free(loop);
        return 1;
    }

    const double frame = 1.0 / fps;
    double next = now(), worst = 0;
    int n = 0;
    for (; n < frames; n++) {
        double start = now();
        gfl_loop_run_once(loop, 0); /* never blocks */
        lua_getglobal(L, "frame");
        if (lua_isfunction(L, -1)) {
            lua_pushinteger(L, n);
            if (lua_pcall(L, 1, 1, 0) != 0) {
                fprintf(stderr, "engine: frame: %s\n", lua_tostring(L, -1));
                lua_pop(L, 1);
                break;
            }
            int stop = lua_toboolean(L, -1);
            lua_pop(L, 1);
            if (stop)
                break;
        } else {
            lua_pop(L, 1);
        }
        double spent = now() - start;
        if (spent > worst)
            worst = spent;
        next += frame;
        sleep_until(next);
    }
    lua_getglobal(L, "result");
    const char *r = lua_tostring(L, -1);
    int ok = r && strcmp(r, "ok") == 0;
    printf("engine: %d frames at %.0f fps, slowest frame %.2f ms, result %s\n", n, fps, worst * 1e3, r ? r : "(none)");
    lua_pop(L, 1);

    if (free_loop_first) {
        gfl_loop_free(loop);
        lua_close(L);
    } else {
        lua_close(L);
        gfl_loop_free(loop);
    }
    return ok ? 0 : 1;
}
