/* Embedding Lua and Python on one globeflower loop (see embed.h). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "embed.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "globeflower_lua.h"

/* ------------------------------------------------------------------ */
/* Lua                                                                 */

struct embed_lua {
    lua_State *L;
};

embed_lua *embed_lua_start(gfl_loop *loop, const char *script)
{
    embed_lua *lua = calloc(1, sizeof *lua);
    if (!lua)
        return NULL;
    lua->L = luaL_newstate();
    if (!lua->L) {
        free(lua);
        return NULL;
    }
    luaL_openlibs(lua->L);
    /* Before the script's require "globeflower": the module then runs on
     * the host's loop instead of making its own. */
    gfl_lua_set_loop(lua->L, loop, gfl_api_get());
    if (luaL_dofile(lua->L, script) != 0) {
        fprintf(stderr, "embed: lua: %s\n", lua_tostring(lua->L, -1));
        embed_lua_close(lua);
        return NULL;
    }
    return lua;
}

int embed_lua_call(embed_lua *lua, const char *name)
{
    lua_getglobal(lua->L, name);
    if (!lua_isfunction(lua->L, -1)) {
        lua_pop(lua->L, 1);
        return 0;
    }
    if (lua_pcall(lua->L, 0, 0, 0) != 0) {
        fprintf(stderr, "embed: lua: %s: %s\n", name, lua_tostring(lua->L, -1));
        lua_pop(lua->L, 1);
        return -1;
    }
    return 0;
}

void embed_lua_close(embed_lua *lua)
{
    if (!lua)
        return;
    lua_close(lua->L);
    free(lua);
}

/* ------------------------------------------------------------------ */
/* Python                                                              */

struct embed_python {
    PyObject *module;
    PyThreadState *saved; /* the main thread's state while the GIL is released */
};

static void print_python_error(const char *what)
{
    fprintf(stderr, "embed: python: %s failed:\n", what);
    PyErr_Print();
}

/* Inserts each ':'-separated entry of `dirs` at the front of sys.path. */
static int prepend_paths(const char *dirs)
{
    PyObject *path = PySys_GetObject("path"); /* borrowed */
    if (!path || !dirs)
        return path ? 0 : -1;
    int rc = 0;
    char *copy = strdup(dirs), *save = NULL;
    Py_ssize_t at = 0;
    for (char *d = copy ? strtok_r(copy, ":", &save) : NULL; d && rc == 0; d = strtok_r(NULL, ":", &save)) {
        PyObject *s = PyUnicode_DecodeFSDefault(d);
        rc = s ? PyList_Insert(path, at++, s) : -1;
        Py_XDECREF(s);
    }
    free(copy);
    return copy ? rc : -1;
}

embed_python *embed_python_start(gfl_loop *loop, const char *dirs, const char *module)
{
    embed_python *py = calloc(1, sizeof *py);
    if (!py)
        return NULL;
    Py_InitializeEx(0); /* 0: leave SIGINT and friends to the host */
    if (prepend_paths(dirs) < 0) {
        print_python_error("sys.path");
        goto fail;
    }
    py->module = PyImport_ImportModule(module);
    if (!py->module) {
        print_python_error("import");
        goto fail;
    }
    PyObject *cap = PyCapsule_New(loop, "globeflower.loop", NULL);
    PyObject *r = cap ? PyObject_CallMethod(py->module, "start", "O", cap) : NULL;
    Py_XDECREF(cap);
    if (!r) {
        print_python_error("start");
        goto fail;
    }
    Py_DECREF(r);
    /* Pumping happens without the GIL: Python's callbacks take it when the
     * core calls them, and Python's own threads run between frames. */
    py->saved = PyEval_SaveThread();
    return py;

fail:
    Py_XDECREF(py->module);
    Py_FinalizeEx();
    free(py);
    return NULL;
}

int embed_python_call(embed_python *py, const char *name)
{
    PyGILState_STATE g = PyGILState_Ensure();
    PyObject *r = PyObject_CallMethod(py->module, name, NULL);
    int rc = r ? 0 : -1;
    if (!r)
        print_python_error(name);
    Py_XDECREF(r);
    PyGILState_Release(g);
    return rc;
}

void embed_python_close(embed_python *py)
{
    if (!py)
        return;
    PyEval_RestoreThread(py->saved);
    Py_CLEAR(py->module);
    if (Py_FinalizeEx() < 0)
        fprintf(stderr, "embed: python: Py_FinalizeEx reported an error\n");
    free(py);
}
