/*
 * Subprocesses: asyncio's subprocess_exec / SubprocessTransport /
 * SubprocessProtocol. Included by globeflower.h; do not include directly.
 *
 * A subprocess is a gfl_transport (the lifetime rules of
 * globeflower_transport.h apply) driven by a gfl_subprocess_protocol. Its
 * stdin/stdout/stderr pipes, when asked for, are ordinary pipe transports
 * (gfl_subprocess_get_pipe_transport): write to stdin with
 * gfl_transport_write, close it with gfl_transport_close or
 * gfl_transport_write_eof, pause stdout with gfl_transport_pause_reading.
 * Their events reach the subprocess protocol, as in asyncio:
 * pipe_data_received(fd, data), pipe_connection_lost(fd, error) and the
 * stdin pipe's pause_writing/resume_writing. Do not replace a pipe
 * transport's protocol (gfl_transport_set_protocol): the subprocess learns
 * through it that the pipe closed, and would never report connection_lost.
 *
 * Order of callbacks: connection_made; then pipe_data_received,
 * pipe_connection_lost (once per pipe) and process_exited (once) as they
 * happen; connection_lost last, once the process has exited AND every pipe
 * is closed. gfl_subprocess_wait's futures resolve right after
 * connection_lost (asyncio's Process.wait()).
 *
 * The child is reaped by the core (no zombies, no global SIGCHLD handler):
 * through a pidfd watched by the loop (Linux >= 5.3), else by polling
 * waitpid(pid, WNOHANG) on a timer (1 ms doubling to 100 ms). A SIGCHLD
 * handler would change process-wide state behind the host and race with
 * the host's own; polling only costs latency on kernels without pidfds. (The environment variable
 * GFL_NO_PIDFD=1 forces the polling path, for tests.)
 *
 * Closing: gfl_transport_close (or abort) closes the pipes and, if the
 * child still runs, kills it (SIGKILL) as asyncio's close() does;
 * connection_lost follows once it has been reaped. Closing the loop closes
 * every subprocess transport the same way, then reaps the children at once
 * (waitpid after SIGKILL), so neither zombies nor orphans outlive the loop.
 *
 * The child gets: only fds 0, 1, 2 (every other fd is closed, except
 * pass_fds, unless inherit_fds is set), an empty signal mask, default
 * dispositions for handled signals and for SIGPIPE and SIGXFSZ (Python's
 * restore_signals); ignored signals stay ignored.
 */
#ifndef GLOBEFLOWER_PROCESS_H
#define GLOBEFLOWER_PROCESS_H

typedef struct gfl_subprocess_protocol {
    size_t size; /* sizeof(gfl_subprocess_protocol) */
    /* The process runs and its pipes are open (first callback). */
    void (*connection_made)(gfl_transport *t, void *ud);
    /* Output of the child's stdout (fd 1) or stderr (fd 2); `data` is
     * borrowed for the call. */
    void (*pipe_data_received)(gfl_transport *t, int fd, const void *data, size_t len, void *ud);
    /* Pipe `fd` (0, 1 or 2) closed: `error` (borrowed) is NULL at EOF or
     * after close, an error value otherwise. */
    void (*pipe_connection_lost)(gfl_transport *t, int fd, gfl_value *error, void *ud);
    /* The child exited (gfl_subprocess_returncode now answers). */
    void (*process_exited)(gfl_transport *t, void *ud);
    /* Last callback. `error` is NULL unless the loop was closed. */
    void (*connection_lost)(gfl_transport *t, gfl_value *error, void *ud);
    /* Flow control of the stdin pipe. */
    void (*pause_writing)(gfl_transport *t, void *ud);
    void (*resume_writing)(gfl_transport *t, void *ud);
} gfl_subprocess_protocol;

/* Creates the protocol instance once the child was started: sets *proto
 * and *ud and returns 0, or returns a GFL_E* code (the child is then
 * killed and the future fails with that code). */
typedef int (*gfl_subprocess_protocol_factory)(void *factory_ud, gfl_transport *t, const gfl_subprocess_protocol **proto, void **ud);

/* What a child's stdin (0), stdout (1) or stderr (2) is. */
enum gfl_stdio_mode {
    GFL_STDIO_PIPE = 0,    /* a pipe to the parent (the default, as asyncio's) */
    GFL_STDIO_INHERIT = 1, /* the parent's own fd 0/1/2 (Python's None) */
    GFL_STDIO_DEVNULL = 2, /* /dev/null */
    GFL_STDIO_FD = 3,      /* stdio_fd[i], a caller-owned fd (left open) */
    GFL_STDIO_STDOUT = 4   /* stderr only: wherever stdout goes */
};

typedef struct gfl_subprocess_options {
    size_t size;              /* sizeof(gfl_subprocess_options) */
    const char *const *argv;  /* NULL-terminated; argv[0] required */
    /* The program; NULL: argv[0]. Without a '/' it is searched in PATH as
     * Python does: the PATH of `env` (of the parent's environment when env
     * is NULL), "/bin:/usr/bin" when there is none. */
    const char *file;
    const char *const *env;   /* NULL-terminated "NAME=value"; NULL: inherit */
    const char *cwd;          /* NULL: the parent's */
    int stdio[3];             /* enum gfl_stdio_mode for fds 0, 1, 2 */
    int stdio_fd[3];          /* the fds for GFL_STDIO_FD */
    int start_new_session;    /* non-zero: setsid() in the child */
    /* 0: the parent's group; -1: a new group led by the child
     * (Python's process_group=0); > 0: join that group. */
    int process_group;
    int inherit_fds;          /* non-zero: keep fds not marked CLOEXEC (close_fds=False) */
    const int *pass_fds;      /* fds (>= 3) kept open in the child */
    size_t npass_fds;
} gfl_subprocess_options;

/* Starts the child. The future resolves to the subprocess transport (a
 * gfl_transport_class object) once connection_made has run; it fails,
 * already when returned, if the program cannot be run: FileNotFoundError,
 * PermissionError, ... named after errno, like Python's (a missing cwd is
 * reported with its own name). factory_release(factory_ud) runs once the
 * factory is no longer needed. NULL on bad arguments (no argv, an unknown
 * stdio mode, GFL_STDIO_STDOUT for fds 0/1, a negative fd, ...). */
GFL_EXPORT gfl_future *gfl_subprocess_exec(gfl_loop *loop, gfl_subprocess_protocol_factory factory, void *factory_ud, gfl_release_fn factory_release, const gfl_subprocess_options *opts);

/* The child's pid (> 0), GFL_EINVAL if `t` is not a subprocess. Works
 * after connection_lost too. */
GFL_EXPORT int gfl_subprocess_pid(gfl_transport *t);
/* 1 and *returncode set once the child was reaped (its exit status, or
 * -signal for a child killed by a signal; 255 when the status was lost
 * because someone else reaped it), 0 while it runs. */
GFL_EXPORT int gfl_subprocess_returncode(gfl_transport *t, int *returncode);
/* A new future, resolved with the returncode (an int value) right after
 * connection_lost; already resolved when called after it. Cancelling it
 * affects no other waiter. */
GFL_EXPORT gfl_future *gfl_subprocess_wait(gfl_transport *t);
/* Sends `signum` (through the pidfd when there is one, so never to a
 * recycled pid). 0 also when the child was already reaped (a no-op, as
 * Popen.send_signal); GFL_ECLOSED after connection_lost (asyncio raises
 * ProcessLookupError); GFL_EINVAL for a bad signal. */
GFL_EXPORT int gfl_subprocess_send_signal(gfl_transport *t, int signum);
GFL_EXPORT int gfl_subprocess_terminate(gfl_transport *t); /* SIGTERM */
GFL_EXPORT int gfl_subprocess_kill(gfl_transport *t);      /* SIGKILL */
/* The pipe transport of fd 0, 1 or 2 (borrowed; valid while `t` lives),
 * or NULL when that fd is not a pipe. */
GFL_EXPORT gfl_transport *gfl_subprocess_get_pipe_transport(gfl_transport *t, int fd);
/* asyncio's set_protocol/get_protocol for subprocess transports. */
GFL_EXPORT int gfl_subprocess_set_protocol(gfl_transport *t, const gfl_subprocess_protocol *proto, void *ud);
GFL_EXPORT int gfl_subprocess_get_protocol(gfl_transport *t, const gfl_subprocess_protocol **proto, void **ud);

#endif
