/*
 * Terminals: gfl.tty(fd) -> an object that switches the terminal on fd to
 * raw mode and back, and reads or sets its window size (termios and
 * TIOCGWINSZ/TIOCSWINSZ; luv's tty handle without the stream part: wrap
 * the fd with gfl.wrap_fd for that). gfl.openpty() makes a pseudo-terminal
 * pair (posix_openpt), gfl.isatty(fd) tells a terminal.
 *
 * The mode the terminal had when the object first changed it is restored
 * by tty:set_mode("normal"), tty:reset() and when the object is collected
 * (or the state closes), so a script that fails leaves a usable terminal.
 */
#include "gfl_lua.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#define TTY_MT "globeflower.TTY"

typedef struct lua_tty {
    int fd;
    int saved;  /* `original` holds the mode to restore */
    struct termios original;
} lua_tty;

static int check_fd(lua_State *L, int idx, int argn, const char *fname)
{
    lua_Integer fd = gfl_lua_checkinteger(L, idx, argn, fname);
    if (fd < 0 || fd > 0x7fffffff)
        gfl_lua_argerror(L, argn, fname, "a file descriptor >= 0 expected");
    return (int)fd;
}

static int push_errno(lua_State *L, const char *what)
{
    int e = errno;
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", what, strerror(e));
    lua_pushinteger(L, -e);
    return 3;
}

static lua_tty *check_tty(lua_State *L)
{
    return gfl_lua_checkself(L, 1, TTY_MT);
}

static int restore(lua_tty *t)
{
    if (!t->saved)
        return 0;
    int rc = tcsetattr(t->fd, TCSADRAIN, &t->original);
    if (rc == 0)
        t->saved = 0;
    return rc;
}

/* tty:set_mode("raw" | "normal") -> true | nil, msg, code. Raw: bytes as
 * they come (no echo, no line editing, no signals from keys, no output
 * processing), reads return after one byte. */
static int tty_set_mode(lua_State *L)
{
    lua_tty *t = check_tty(L);
    const char *mode = gfl_lua_checklstring(L, 2, 1, "set_mode", NULL);
    if (strcmp(mode, "normal") == 0) {
        if (restore(t) != 0)
            return push_errno(L, "set_mode");
        return lua_pushboolean(L, 1), 1;
    }
    if (strcmp(mode, "raw") != 0)
        return gfl_lua_argerror(L, 1, "set_mode", "\"raw\" or \"normal\" expected, got \"%s\"", mode);
    struct termios now;
    if (tcgetattr(t->fd, &now) != 0)
        return push_errno(L, "set_mode");
    if (!t->saved) {
        t->original = now;
        t->saved = 1;
    }
    struct termios raw = t->saved ? t->original : now;
    raw.c_iflag &= ~(tcflag_t)(BRKINT | ICRNL | INPCK | ISTRIP | IXON);
    raw.c_oflag &= ~(tcflag_t)OPOST;
    raw.c_cflag |= CS8;
    raw.c_lflag &= ~(tcflag_t)(ECHO | ICANON | IEXTEN | ISIG);
    raw.c_cc[VMIN] = 1;
    raw.c_cc[VTIME] = 0;
    if (tcsetattr(t->fd, TCSADRAIN, &raw) != 0)
        return push_errno(L, "set_mode");
    lua_pushboolean(L, 1);
    return 1;
}

/* tty:get_mode() -> "raw" | "normal" (as this object set it), plus a
 * table of the flags that tell: {echo, canonical, signals} */
static int tty_get_mode(lua_State *L)
{
    lua_tty *t = check_tty(L);
    struct termios now;
    if (tcgetattr(t->fd, &now) != 0)
        return push_errno(L, "get_mode");
    lua_pushstring(L, t->saved ? "raw" : "normal");
    lua_createtable(L, 0, 3);
    lua_pushboolean(L, (now.c_lflag & ECHO) != 0);
    lua_setfield(L, -2, "echo");
    lua_pushboolean(L, (now.c_lflag & ICANON) != 0);
    lua_setfield(L, -2, "canonical");
    lua_pushboolean(L, (now.c_lflag & ISIG) != 0);
    lua_setfield(L, -2, "signals");
    return 2;
}

/* tty:reset(): the mode from before the first set_mode */
static int tty_reset(lua_State *L)
{
    if (restore(check_tty(L)) != 0)
        return push_errno(L, "reset");
    lua_pushboolean(L, 1);
    return 1;
}

/* tty:get_winsize() -> columns, rows */
static int tty_get_winsize(lua_State *L)
{
    lua_tty *t = check_tty(L);
    struct winsize ws;
    if (ioctl(t->fd, TIOCGWINSZ, &ws) != 0)
        return push_errno(L, "get_winsize");
    lua_pushinteger(L, ws.ws_col);
    lua_pushinteger(L, ws.ws_row);
    return 2;
}

/* tty:set_winsize(columns, rows): what a terminal emulator (the master
 * side of a pty) tells the program running in it */
static int tty_set_winsize(lua_State *L)
{
    lua_tty *t = check_tty(L);
    lua_Integer cols = gfl_lua_checkinteger(L, 2, 1, "set_winsize");
    lua_Integer rows = gfl_lua_checkinteger(L, 3, 2, "set_winsize");
    if (cols < 0 || cols > 65535)
        return gfl_lua_argerror(L, 1, "set_winsize", "a column count from 0 to 65535 expected");
    if (rows < 0 || rows > 65535)
        return gfl_lua_argerror(L, 2, "set_winsize", "a row count from 0 to 65535 expected");
    struct winsize ws;
    memset(&ws, 0, sizeof ws);
    ws.ws_col = (unsigned short)cols;
    ws.ws_row = (unsigned short)rows;
    if (ioctl(t->fd, TIOCSWINSZ, &ws) != 0)
        return push_errno(L, "set_winsize");
    lua_pushboolean(L, 1);
    return 1;
}

static int tty_fileno(lua_State *L)
{
    lua_pushinteger(L, check_tty(L)->fd);
    return 1;
}

static int tty_gc(lua_State *L)
{
    restore(lua_touserdata(L, 1));
    return 0;
}

/* gfl.tty(fd) -> object | nil, msg, code (not a terminal: ENOTTY) */
static int l_tty(lua_State *L)
{
    int fd = check_fd(L, 1, 1, "tty");
    if (!isatty(fd))
        return push_errno(L, "tty");
    lua_tty *t = gfl_newuserdata(L, sizeof *t);
    memset(t, 0, sizeof *t);
    t->fd = fd;
    luaL_getmetatable(L, TTY_MT);
    lua_setmetatable(L, -2);
    return 1;
}

static int l_isatty(lua_State *L)
{
    lua_pushboolean(L, isatty(check_fd(L, 1, 1, "isatty")) == 1);
    return 1;
}

/* gfl.openpty() -> master fd, slave fd (close-on-exec) | nil, msg, code */
static int l_openpty(lua_State *L)
{
    int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (master < 0)
        return push_errno(L, "openpty");
    char name[128];
    if (grantpt(master) != 0 || unlockpt(master) != 0 || ptsname_r(master, name, sizeof name) != 0) {
        int e = errno;
        close(master);
        errno = e;
        return push_errno(L, "openpty");
    }
    int slave = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (slave < 0) {
        int e = errno;
        close(master);
        errno = e;
        return push_errno(L, "openpty");
    }
    lua_pushinteger(L, master);
    lua_pushinteger(L, slave);
    return 2;
}

/* internal: pipe_fds() -> read fd, write fd (non-blocking, close-on-exec) */
static int l_pipe_fds(lua_State *L)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0)
        return push_errno(L, "pipe");
    lua_pushinteger(L, fds[0]);
    lua_pushinteger(L, fds[1]);
    return 2;
}

/* gfl.close_fd(fd) -> true | nil, msg, code: for fds no stream took over */
static int l_close_fd(lua_State *L)
{
    if (close(check_fd(L, 1, 1, "close_fd")) != 0)
        return push_errno(L, "close_fd");
    lua_pushboolean(L, 1);
    return 1;
}

static const luaL_Reg tty_methods[] = {
    {"set_mode", tty_set_mode},
    {"get_mode", tty_get_mode},
    {"reset", tty_reset},
    {"get_winsize", tty_get_winsize},
    {"set_winsize", tty_set_winsize},
    {"fileno", tty_fileno},
    {NULL, NULL},
};

void gfl_lua_open_tty(lua_State *L, int internal)
{
    gfl_lua_newclass(L, TTY_MT, tty_methods, tty_gc);
    static const luaL_Reg functions[] = {
        {"tty", l_tty},
        {"isatty", l_isatty},
        {"openpty", l_openpty},
        {"pipe_fds", l_pipe_fds},
        {"close_fd", l_close_fd},
        {NULL, NULL},
    };
    gfl_lua_register(L, internal, functions);
}
