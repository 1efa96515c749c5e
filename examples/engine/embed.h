/*
 * Embedding Lua and Python on one globeflower loop: the few calls an
 * engine (or any C host) makes, in the order they must happen. Shared by
 * examples/engine and bench/hosts. See docs/embedding.md.
 */
#ifndef GFL_EXAMPLE_EMBED_H
#define GFL_EXAMPLE_EMBED_H

#include <globeflower.h>

typedef struct embed_lua embed_lua;
typedef struct embed_python embed_python;

/* A lua_State that uses `loop` (handed over before any require), with
 * `script` run. NULL after printing why. */
embed_lua *embed_lua_start(gfl_loop *loop, const char *script);
/* Calls the script's global function `name` (no arguments); 0 or -1. */
int embed_lua_call(embed_lua *lua, const char *name);
void embed_lua_close(embed_lua *lua);

/* Initialises CPython (without its signal handlers: the host owns the
 * process's signals), puts `dirs` (':'-separated, may be NULL) in front of
 * sys.path, imports `module` and calls module.start(capsule) where the
 * capsule ("globeflower.loop") names `loop`. Returns with the GIL
 * RELEASED: the host pumps the loop without it. NULL after printing why. */
embed_python *embed_python_start(gfl_loop *loop, const char *dirs, const char *module);
/* Calls module.<name>() with the GIL taken and released again; 0 or -1. */
int embed_python_call(embed_python *py, const char *name);
/* Takes the GIL back and finalises the interpreter. */
void embed_python_close(embed_python *py);

#endif
