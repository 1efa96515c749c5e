/*
 * Subprocesses, in two styles over one object:
 *
 *  - streams, gfl.subprocess(argv, opts) (asyncio's
 *    create_subprocess_exec): the child's stdin/stdout/stderr, when asked
 *    to be pipes, are ordinary stream objects (stream.c) fed from the
 *    subprocess protocol's pipe callbacks;
 *  - protocol style, gfl.subprocess_exec(factory, argv, opts) (asyncio's
 *    loop.subprocess_exec): the protocol table gets connection_made,
 *    pipe_data_received(fd, data), pipe_connection_lost(fd, err),
 *    process_exited(), connection_lost(err), pause_writing(),
 *    resume_writing().
 *
 * The core reaps the child (no SIGCHLD handler) and kills it when the
 * process transport is closed or the loop closes. The loop owns a running
 * process: dropping the Lua object neither kills nor leaks it (streams
 * that become unreachable are aborted, as every stream is).
 */
#include "gfl_lua.h"

#include <stdlib.h>
#include <string.h>

#include "stream.h"

#define PROCESS_MT "globeflower.Process"

typedef struct lua_proc {
    gfl_lua_rt *rt;
    gfl_transport *t; /* one reference once the factory ran */
    int refs;         /* the Lua object, the factory, the transport (until lost) */
    gfl_lua_stream *pipes[3]; /* stream style: one reference each */
    int pipe_lost[3];
    size_t limit;
    gfl_future *create;
    int factory_ref, proto_ref, self_ref; /* protocol style */
    unsigned protocol : 1, attached : 1, lost : 1, exited : 1;
} lua_proc;

static void proc_unref(lua_proc *p)
{
    if (--p->refs > 0)
        return;
    lua_State *L = p->rt->L;
    if (L) {
        luaL_unref(L, LUA_REGISTRYINDEX, p->factory_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, p->proto_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, p->self_ref);
    }
    for (int i = 0; i < 3; i++)
        if (p->pipes[i])
            gfl_lua_stream_unref(p->pipes[i]);
    if (p->t)
        GFL->transport_unref(p->t);
    GFL->future_unref(p->create);
    gfl_lua_rt_unref(p->rt);
    free(p);
}

/* ---- protocol-style calls ---- */

static int push_method(lua_State *L, lua_proc *p, const char *name)
{
    if (p->proto_ref == LUA_NOREF || p->proto_ref == LUA_REFNIL)
        return 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, p->proto_ref);
    lua_getfield(L, -1, name);
    if (lua_type(L, -1) != LUA_TFUNCTION) {
        lua_pop(L, 2);
        return 0;
    }
    lua_insert(L, -2);
    return 1;
}

#define WHAT "Exception in subprocess protocol callback"

/* ---- core callbacks ---- */

static void on_made(gfl_transport *t, void *ud)
{
    (void)t;
    lua_proc *p = ud;
    lua_State *L = p->rt->L;
    if (!p->protocol || !L || !push_method(L, p, "connection_made"))
        return;
    lua_rawgeti(L, LUA_REGISTRYINDEX, p->self_ref);
    gfl_lua_call(p->rt, L, 2, 0, WHAT);
}

static void on_pipe_data(gfl_transport *t, int fd, const void *data, size_t len, void *ud)
{
    (void)t;
    lua_proc *p = ud;
    if (!p->protocol) {
        gfl_lua_stream *s = fd >= 0 && fd < 3 ? p->pipes[fd] : NULL;
        if (s && !p->pipe_lost[fd])
            gfl_lua_stream_protocol.data_received(s->t, data, len, s);
        return;
    }
    lua_State *L = p->rt->L;
    if (!L || !push_method(L, p, "pipe_data_received"))
        return;
    lua_pushinteger(L, fd);
    lua_pushlstring(L, data, len);
    gfl_lua_call(p->rt, L, 3, 0, WHAT);
}

/* A pipe stream is done: what connection_lost does for any stream. */
static void pipe_done(lua_proc *p, int fd, gfl_value *error)
{
    if (p->pipe_lost[fd])
        return;
    p->pipe_lost[fd] = 1;
    gfl_lua_stream *s = p->pipes[fd];
    if (s)
        gfl_lua_stream_protocol.connection_lost(s->t, error, s);
}

static void on_pipe_lost(gfl_transport *t, int fd, gfl_value *error, void *ud)
{
    (void)t;
    lua_proc *p = ud;
    if (fd < 0 || fd > 2)
        return;
    if (!p->protocol) {
        pipe_done(p, fd, error);
        return;
    }
    p->pipe_lost[fd] = 1;
    lua_State *L = p->rt->L;
    if (!L || !push_method(L, p, "pipe_connection_lost"))
        return;
    lua_pushinteger(L, fd);
    if (error)
        gfl_lua_push_error(L, error);
    else
        lua_pushnil(L);
    gfl_lua_call(p->rt, L, 3, 0, WHAT);
}

static void on_exited(gfl_transport *t, void *ud)
{
    (void)t;
    lua_proc *p = ud;
    p->exited = 1;
    lua_State *L = p->rt->L;
    if (p->protocol && L && push_method(L, p, "process_exited"))
        gfl_lua_call(p->rt, L, 1, 0, WHAT);
}

static void on_lost(gfl_transport *t, gfl_value *error, void *ud)
{
    (void)t;
    lua_proc *p = ud;
    lua_State *L = p->rt->L;
    p->lost = 1;
    for (int i = 0; i < 3; i++)
        if (!p->protocol)
            pipe_done(p, i, error);
    if (p->protocol && L && push_method(L, p, "connection_lost")) {
        if (error)
            gfl_lua_push_error(L, error);
        else
            lua_pushnil(L);
        gfl_lua_call(p->rt, L, 2, 0, WHAT);
    }
    if (L) {
        luaL_unref(L, LUA_REGISTRYINDEX, p->proto_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, p->self_ref);
    }
    p->proto_ref = p->self_ref = LUA_NOREF;
    proc_unref(p); /* the transport's share */
}

static void on_pause(gfl_transport *t, void *ud)
{
    (void)t;
    lua_proc *p = ud;
    if (!p->protocol) {
        if (p->pipes[0] && !p->pipe_lost[0])
            gfl_lua_stream_protocol.pause_writing(p->pipes[0]->t, p->pipes[0]);
        return;
    }
    lua_State *L = p->rt->L;
    if (L && push_method(L, p, "pause_writing"))
        gfl_lua_call(p->rt, L, 1, 0, WHAT);
}

static void on_resume(gfl_transport *t, void *ud)
{
    (void)t;
    lua_proc *p = ud;
    if (!p->protocol) {
        if (p->pipes[0] && !p->pipe_lost[0])
            gfl_lua_stream_protocol.resume_writing(p->pipes[0]->t, p->pipes[0]);
        return;
    }
    lua_State *L = p->rt->L;
    if (L && push_method(L, p, "resume_writing"))
        gfl_lua_call(p->rt, L, 1, 0, WHAT);
}

static const gfl_subprocess_protocol proc_protocol = {
    .size = sizeof(gfl_subprocess_protocol),
    .connection_made = on_made,
    .pipe_data_received = on_pipe_data,
    .pipe_connection_lost = on_pipe_lost,
    .process_exited = on_exited,
    .connection_lost = on_lost,
    .pause_writing = on_pause,
    .resume_writing = on_resume,
};

/* Runs inside gfl_subprocess_exec, the child just started. */
static int factory(void *fud, gfl_transport *t, const gfl_subprocess_protocol **proto, void **ud)
{
    lua_proc *p = fud;
    lua_State *L = p->rt->L;
    if (p->attached)
        return GFL_ESTATE;
    if (!L)
        return GFL_ECLOSED;
    if (p->protocol) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, p->factory_ref);
        if (gfl_lua_call(p->rt, L, 0, 1, "Exception in subprocess protocol factory") < 0)
            return GFL_EINVAL;
        if (!lua_istable(L, -1)) {
            lua_pop(L, 1);
            lua_pushliteral(L, "the protocol factory must return a table");
            gfl_lua_report(p->rt, L, "Exception in subprocess protocol factory");
            return GFL_EINVAL;
        }
        p->proto_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    } else {
        for (int i = 0; i < 3; i++) {
            gfl_transport *pt = GFL->subprocess_get_pipe_transport(t, i);
            if (!pt) {
                p->pipe_lost[i] = 1;
                continue;
            }
            gfl_lua_stream *s = gfl_lua_stream_new(p->rt, p->limit);
            if (!s)
                return GFL_ENOMEM;
            s->t = GFL->transport_ref(pt);
            s->attached = 1;
            s->refs++; /* the pipe's share, until pipe_connection_lost */
            p->pipes[i] = s;
        }
    }
    p->attached = 1;
    p->t = GFL->transport_ref(t);
    p->refs++; /* the transport's share, until connection_lost */
    *proto = &proc_protocol;
    *ud = p;
    return 0;
}

static void factory_release(void *fud)
{
    lua_proc *p = fud;
    if (!p->attached && p->rt->L) {
        luaL_unref(p->rt->L, LUA_REGISTRYINDEX, p->self_ref);
        p->self_ref = LUA_NOREF;
    }
    /* A factory that ran but whose child was then killed (the core failed
     * after it) never sees connection_lost for its pipes. */
    if (!p->attached)
        for (int i = 0; i < 3; i++)
            p->pipe_lost[i] = 1;
    proc_unref(p);
}

/* ---- the Lua object ---- */

static lua_proc *check(lua_State *L)
{
    lua_proc **u = gfl_lua_checkself(L, 1, PROCESS_MT);
    if (!*u)
        luaL_error(L, "process already finalised");
    return *u;
}

static int pr_gc(lua_State *L)
{
    lua_proc **u = gfl_lua_checkself(L, 1, PROCESS_MT);
    if (*u)
        proc_unref(*u);
    *u = NULL;
    return 0;
}

/* internal: after the waiter: true, or nil, msg, code */
static int pr_started(lua_State *L)
{
    lua_proc *p = check(L);
    gfl_future *f = p->create;
    if (!f) {
        lua_pushboolean(L, p->t != NULL);
        return 1;
    }
    p->create = NULL;
    int n = 1;
    if (GFL->future_state_of(f) == GFL_FUTURE_RESULT)
        lua_pushboolean(L, 1);
    else
        n = gfl_lua_push_failure_value(L, GFL->future_value(f));
    GFL->future_unref(f);
    return n;
}

/* internal: _pipe(fd) -> the stream of pipe fd, or nil (once per pipe) */
static int pr_pipe(lua_State *L)
{
    lua_proc *p = check(L);
    lua_Integer fd = luaL_checkinteger(L, 2);
    luaL_argcheck(L, fd >= 0 && fd <= 2, 2, "0, 1 or 2 expected");
    gfl_lua_stream *s = p->pipes[fd];
    if (!s || s->lua_alive)
        return 0;
    gfl_lua_stream_push(L, s);
    return 1;
}

static int pr_pid(lua_State *L)
{
    lua_proc *p = check(L);
    int pid = p->t ? GFL->subprocess_pid(p->t) : -1;
    if (pid <= 0)
        return 0;
    lua_pushinteger(L, pid);
    return 1;
}

/* returncode() -> the exit status (-signal when killed by one), or nil
 * while the child runs */
static int pr_returncode(lua_State *L)
{
    lua_proc *p = check(L);
    int rc = 0;
    if (!p->t || GFL->subprocess_returncode(p->t, &rc) != 1)
        return 0;
    lua_pushinteger(L, rc);
    return 1;
}

static int signal_result(lua_State *L, int rc)
{
    if (rc == GFL_ECLOSED)
        return gfl_lua_push_failure(L, rc, "ProcessLookupError: the process is gone");
    if (rc < 0)
        return gfl_lua_push_failure(L, rc, NULL);
    lua_pushboolean(L, 1);
    return 1;
}

static int pr_send_signal(lua_State *L)
{
    lua_proc *p = check(L);
    lua_remove(L, 1);
    int sig = gfl_lua_check_signal(L, 1, 1, "send_signal");
    return signal_result(L, p->t ? GFL->subprocess_send_signal(p->t, sig) : GFL_ECLOSED);
}

static int pr_terminate(lua_State *L)
{
    lua_proc *p = check(L);
    return signal_result(L, p->t ? GFL->subprocess_terminate(p->t) : GFL_ECLOSED);
}

static int pr_kill(lua_State *L)
{
    lua_proc *p = check(L);
    return signal_result(L, p->t ? GFL->subprocess_kill(p->t) : GFL_ECLOSED);
}

/* internal: a future of the returncode, resolved once the child exited
 * and every pipe closed (asyncio's Process.wait) */
static int pr_wait_future(lua_State *L)
{
    lua_proc *p = check(L);
    gfl_future *f = p->t ? GFL->subprocess_wait(p->t) : NULL;
    if (!f)
        return luaL_error(L, "wait: the process never started");
    gfl_lua_future_push(L, p->rt, f);
    GFL->future_unref(f);
    return 1;
}

/* close(): closes the pipes and kills the child if it still runs */
static int pr_close(lua_State *L)
{
    lua_proc *p = check(L);
    if (p->t && !p->lost)
        GFL->transport_close(p->t);
    return 0;
}

static int pr_is_closing(lua_State *L)
{
    lua_proc *p = check(L);
    lua_pushboolean(L, !p->t || p->lost || GFL->transport_is_closing(p->t) == 1);
    return 1;
}

/* Protocol style: the pipe transports, for writing and flow control. */
static gfl_transport *pipe_of(lua_State *L, lua_proc *p, int fd)
{
    gfl_transport *pt = p->t && !p->lost ? GFL->subprocess_get_pipe_transport(p->t, fd) : NULL;
    if (!pt)
        luaL_error(L, "fd %d of this process is not a pipe (or is closed)", fd);
    return pt;
}

/* write(data, ...): to the child's stdin */
static int pr_write(lua_State *L)
{
    lua_proc *p = check(L);
    int n = lua_gettop(L);
    if (p->pipe_lost[0] || p->lost)
        return gfl_lua_push_failure(L, GFL_ECLOSED, "BrokenPipeError: stdin is closed");
    gfl_transport *pt = pipe_of(L, p, 0);
    gfl_iovec iov[16];
    luaL_argcheck(L, n - 1 <= 16, 18, "at most 16 pieces per write");
    for (int i = 2; i <= n; i++)
        iov[i - 2].base = luaL_checklstring(L, i, &iov[i - 2].len);
    int rc = GFL->transport_writev(pt, iov, n - 1);
    if (rc < 0)
        return gfl_lua_push_failure(L, rc, NULL);
    lua_pushboolean(L, 1);
    return 1;
}

/* write_eof(): closes the child's stdin once written */
static int pr_write_eof(lua_State *L)
{
    lua_proc *p = check(L);
    if (!p->pipe_lost[0] && !p->lost)
        GFL->transport_close(pipe_of(L, p, 0));
    return 0;
}

static int pr_pause_reading(lua_State *L)
{
    lua_proc *p = check(L);
    int fd = (int)luaL_optinteger(L, 2, 1);
    if (!p->pipe_lost[fd == 2 ? 2 : 1])
        GFL->transport_pause_reading(pipe_of(L, p, fd == 2 ? 2 : 1));
    return 0;
}

static int pr_resume_reading(lua_State *L)
{
    lua_proc *p = check(L);
    int fd = (int)luaL_optinteger(L, 2, 1);
    if (!p->pipe_lost[fd == 2 ? 2 : 1])
        GFL->transport_resume_reading(pipe_of(L, p, fd == 2 ? 2 : 1));
    return 0;
}

static int pr_get_protocol(lua_State *L)
{
    lua_proc *p = check(L);
    if (p->proto_ref == LUA_NOREF || p->proto_ref == LUA_REFNIL)
        return 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, p->proto_ref);
    return 1;
}

static int pr_set_protocol(lua_State *L)
{
    lua_proc *p = check(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    if (!p->protocol)
        return luaL_error(L, "set_protocol: a stream-style process has no protocol");
    if (p->lost)
        return luaL_error(L, "set_protocol: the process transport is closed");
    lua_pushvalue(L, 2);
    lua_rawseti(L, LUA_REGISTRYINDEX, p->proto_ref);
    return 0;
}

static int pr_tostring(lua_State *L)
{
    lua_proc **u = gfl_lua_checkself(L, 1, PROCESS_MT);
    int pid = *u && (*u)->t ? GFL->subprocess_pid((*u)->t) : -1;
    lua_pushfstring(L, "globeflower.Process: pid %d", pid);
    return 1;
}

static const luaL_Reg process_methods[] = {
    {"_started", pr_started},
    {"_pipe", pr_pipe},
    {"_wait_future", pr_wait_future},
    {"pid", pr_pid},
    {"returncode", pr_returncode},
    {"send_signal", pr_send_signal},
    {"terminate", pr_terminate},
    {"kill", pr_kill},
    {"close", pr_close},
    {"is_closing", pr_is_closing},
    {"write", pr_write},
    {"write_eof", pr_write_eof},
    {"pause_reading", pr_pause_reading},
    {"resume_reading", pr_resume_reading},
    {"get_protocol", pr_get_protocol},
    {"set_protocol", pr_set_protocol},
    {NULL, NULL},
};

/* ---- starting ---- */

static int stdio_mode(lua_State *L, int opts, int fd, int def, int *fdout)
{
    static const char *const names[] = {"stdin", "stdout", "stderr"};
    if (!opts)
        return def;
    lua_getfield(L, opts, names[fd]);
    int mode = def;
    int t = lua_type(L, -1);
    if (t == LUA_TNUMBER) {
        mode = GFL_STDIO_FD;
        *fdout = (int)lua_tointeger(L, -1);
        if (*fdout < 0)
            luaL_error(L, "option '%s': a file descriptor must be >= 0", names[fd]);
    } else if (t == LUA_TSTRING) {
        const char *s = lua_tostring(L, -1);
        if (strcmp(s, "pipe") == 0)
            mode = GFL_STDIO_PIPE;
        else if (strcmp(s, "inherit") == 0)
            mode = GFL_STDIO_INHERIT;
        else if (strcmp(s, "devnull") == 0)
            mode = GFL_STDIO_DEVNULL;
        else if (strcmp(s, "stdout") == 0 && fd == 2)
            mode = GFL_STDIO_STDOUT;
        else
            luaL_error(L, "option '%s': \"pipe\", \"inherit\", \"devnull\"%s or a file descriptor expected",
                       names[fd], fd == 2 ? ", \"stdout\"" : "");
    } else if (t == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
        mode = GFL_STDIO_DEVNULL;
    } else if (t != LUA_TNIL) {
        luaL_error(L, "option '%s': a string or a file descriptor expected", names[fd]);
    }
    lua_pop(L, 1);
    return mode;
}

/* A NULL-terminated array of the strings of the table at idx (a list, and
 * for env also NAME = value pairs), anchored in a new table pushed on the
 * stack (so the strings live while it does). */
static const char **string_list(lua_State *L, int idx, int env, const char *what)
{
    idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
    size_t n = 0;
    lua_newtable(L); /* the anchor */
    int anchor = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        int kt = lua_type(L, -2);
        int vt = lua_type(L, -1);
        if (kt == LUA_TNUMBER) {
            if (vt != LUA_TSTRING && vt != LUA_TNUMBER)
                luaL_error(L, "%s: strings expected", what);
            lua_pushvalue(L, -1);
        } else if (env && kt == LUA_TSTRING) {
            if (vt != LUA_TSTRING && vt != LUA_TNUMBER)
                luaL_error(L, "%s: the value of %s must be a string", what, lua_tostring(L, -2));
            lua_pushvalue(L, -2);
            lua_pushliteral(L, "=");
            lua_pushvalue(L, -3);
            lua_concat(L, 3);
        } else {
            luaL_error(L, "%s: a list of strings expected", what);
        }
        if (strlen(lua_tostring(L, -1)) != gfl_rawlen(L, -1))
            luaL_error(L, "%s: strings must not contain NUL bytes", what);
        lua_rawseti(L, anchor, (int)++n);
        lua_pop(L, 1);
    }
    const char **list = lua_newuserdata(L, (n + 1) * sizeof *list);
    lua_rawseti(L, anchor, (int)n + 1);
    if (!env) {
        /* argv keeps its order: the list part, 1..n */
        for (size_t i = 1; i <= n; i++) {
            lua_rawgeti(L, idx, (int)i);
            if (lua_isnil(L, -1))
                luaL_error(L, "%s: a list without holes expected", what);
            lua_pop(L, 1);
        }
        for (size_t i = 1; i <= n; i++) {
            lua_rawgeti(L, idx, (int)i);
            const char *s = lua_tostring(L, -1); /* numbers: converted in place */
            lua_rawseti(L, anchor, (int)i);
            list[i - 1] = s;
        }
    } else {
        for (size_t i = 1; i <= n; i++) {
            lua_rawgeti(L, anchor, (int)i);
            list[i - 1] = lua_tostring(L, -1);
            lua_pop(L, 1);
        }
    }
    list[n] = NULL;
    return list;
}

/* internal: subprocess(factory | false, argv, opts) -> process, waiter */
static int l_subprocess(lua_State *L)
{
    gfl_lua_rt *rt = gfl_lua_rt_get(L);
    int protocol = lua_toboolean(L, 1);
    if (protocol)
        luaL_checktype(L, 1, LUA_TFUNCTION);
    luaL_checktype(L, 2, LUA_TTABLE);
    luaL_argcheck(L, gfl_rawlen(L, 2) > 0, 2, "argv must name a program");
    int opts = lua_istable(L, 3) ? 3 : 0;
    lua_settop(L, 3);

    gfl_subprocess_options o;
    memset(&o, 0, sizeof o);
    o.size = sizeof o;
    o.argv = string_list(L, 2, 0, "argv");
    /* Streams: asyncio's create_subprocess_exec (inherit unless asked);
     * protocol style: loop.subprocess_exec (pipes unless told). */
    int def = protocol ? GFL_STDIO_PIPE : GFL_STDIO_INHERIT;
    for (int i = 0; i < 3; i++)
        o.stdio[i] = stdio_mode(L, opts, i, def, &o.stdio_fd[i]);
    o.file = gfl_lua_opt_string(L, opts, "file", NULL);
    o.cwd = gfl_lua_opt_string(L, opts, "cwd", NULL);
    o.start_new_session = gfl_lua_opt_bool(L, opts, "start_new_session", 0);
    o.process_group = (int)gfl_lua_opt_number(L, opts, "process_group", 0);
    o.inherit_fds = !gfl_lua_opt_bool(L, opts, "close_fds", 1);
    if (opts) {
        lua_getfield(L, opts, "env");
        if (lua_istable(L, -1))
            o.env = string_list(L, -1, 1, "env");
        else if (!lua_isnil(L, -1))
            return luaL_error(L, "option 'env' must be a table");
        lua_getfield(L, opts, "pass_fds");
        if (lua_istable(L, -1)) {
            size_t n = gfl_rawlen(L, -1);
            int *fds = lua_newuserdata(L, (n ? n : 1) * sizeof *fds);
            for (size_t i = 0; i < n; i++) {
                lua_rawgeti(L, -2, (int)i + 1);
                fds[i] = (int)luaL_checkinteger(L, -1);
                lua_pop(L, 1);
            }
            o.pass_fds = fds;
            o.npass_fds = n;
        } else if (!lua_isnil(L, -1)) {
            return luaL_error(L, "option 'pass_fds' must be a list of file descriptors");
        }
    }
    double limit = gfl_lua_opt_number(L, opts, "limit", 0);

    lua_proc *p = calloc(1, sizeof *p);
    if (!p)
        return luaL_error(L, "subprocess: out of memory");
    p->rt = rt;
    gfl_lua_rt_ref(rt);
    p->protocol = protocol;
    p->limit = limit > 0 ? (size_t)limit : 0;
    p->factory_ref = p->proto_ref = p->self_ref = LUA_NOREF;
    p->refs = 2; /* the Lua object, the core's factory */
    lua_proc **u = gfl_newuserdata(L, sizeof *u);
    *u = p;
    luaL_getmetatable(L, PROCESS_MT);
    lua_setmetatable(L, -2);
    int obj = lua_gettop(L);
    if (protocol) {
        lua_pushvalue(L, 1);
        p->factory_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        lua_pushvalue(L, obj);
        p->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    gfl_future *f = GFL->subprocess_exec(rt->loop, factory, p, factory_release, &o);
    if (!f) {
        factory_release(p);
        return luaL_error(L, "subprocess: bad options (stdio modes, file descriptors)");
    }
    p->create = f;
    lua_pushvalue(L, obj);
    lua_pushlightuserdata(L, f);
    return 2;
}

void gfl_lua_open_process(lua_State *L, int internal)
{
    gfl_lua_newclass(L, PROCESS_MT, process_methods, pr_gc);
    luaL_getmetatable(L, PROCESS_MT);
    lua_pushcfunction(L, pr_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_getfield(L, -1, "__index");
    lua_setfield(L, internal, "Process");
    lua_pop(L, 1);
    lua_pushcfunction(L, l_subprocess);
    lua_setfield(L, internal, "subprocess");
}
