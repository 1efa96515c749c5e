/*
 * Subprocess transports, as asyncio's BaseSubprocessTransport: a child
 * (started by spawn.c), up to three pipe transports (the fd stream layer
 * of transport.c, with an internal protocol forwarding to the subprocess
 * protocol), and the reaper.
 *
 * Reaping: a pidfd (pidfd_open, Linux >= 5.3) watched with a one-shot
 * libevent read event; it polls readable once the child exits, then
 * waitpid(pid, WNOHANG) collects it. The pidfd also pins the pid, so
 * signals sent through it can never reach a recycled pid. Without pidfds,
 * a timer polls waitpid(pid, WNOHANG) (1 ms doubling to 100 ms): unlike a
 * SIGCHLD handler it needs no process-wide state.
 *
 * connection_lost comes once the child was reaped and every pipe closed
 * (asyncio's _try_finish); the wait futures resolve right after it.
 */
#include "internal.h"
#include "spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#define POLL_MIN 0.001
#define POLL_MAX 0.1

struct proc;

/* One of the child's stdio pipes, seen from the parent. */
struct pipe_link {
    struct proc *p;
    int fd;           /* 0, 1 or 2: the child's fd */
    gfl_transport *t; /* NULL: not a pipe; else we hold a reference */
    bool started;
    bool lost;        /* its connection_lost ran */
};

struct proc {
    struct gfl_transport base;
    pid_t pid;     /* -1 until started */
    int pidfd;     /* -1: polling */
    struct event pidev;
    bool pidev_added;
    gfl_handle reap_handle; /* the queued reap or the poll timer */
    double poll_delay;
    bool exited;   /* reaped: returncode is valid */
    int returncode;
    gfl_subprocess_protocol sp; /* full-size copy */
    const gfl_subprocess_protocol *sp_user;
    gfl_protocol sproto; /* made/lost for transport.c */
    struct pipe_link pipes[3];
    gfl_future **waiters;
    size_t nwaiters, waiters_cap;
    void (*base_loop_closing)(struct gfl_stream_node *n);
};

#define P(t) ((struct proc *)(t))

static const struct gfl_transport_ops proc_ops;

static void set_sproto(struct proc *p, const gfl_subprocess_protocol *sp, void *ud)
{
    size_t n = sp->size < sizeof p->sp ? sp->size : sizeof p->sp;
    memset(&p->sp, 0, sizeof p->sp);
    memcpy(&p->sp, sp, n);
    p->sp.size = sizeof p->sp;
    p->sp_user = sp;
    memset(&p->sproto, 0, sizeof p->sproto);
    p->sproto.size = sizeof p->sproto;
    p->sproto.connection_made = p->sp.connection_made;
    p->sproto.connection_lost = p->sp.connection_lost;
    gfl__transport_set_proto(&p->base, &p->sproto, ud);
}

static bool delivering(const struct proc *p)
{
    return p->base.proto_user == &p->sproto && !p->base.lost;
}

/* asyncio's _try_finish: connection_lost once the child was reaped and
 * every pipe closed. Never while the loop closes (its own loop_closing
 * delivers connection_lost then). */
static void try_finish(struct proc *p)
{
    gfl_transport *t = &p->base;
    if (!p->exited || t->lost_scheduled || t->lost || t->loop->closed)
        return;
    for (int i = 0; i < 3; i++)
        if (p->pipes[i].t && !p->pipes[i].lost)
            return;
    gfl__transport_lost(t, NULL);
}

/* ------------------------------------------------------------------ */
/* The pipes' protocol: forwards to the subprocess protocol            */

static void pipe_data(gfl_transport *t, const void *data, size_t len, void *ud)
{
    struct pipe_link *l = ud;
    struct proc *p = l->p;
    (void)t;
    if (delivering(p) && p->sp.pipe_data_received)
        p->sp.pipe_data_received(&p->base, l->fd, data, len, p->base.ud);
}

static void pipe_lost(gfl_transport *t, gfl_value *error, void *ud)
{
    struct pipe_link *l = ud;
    struct proc *p = l->p;
    (void)t;
    l->lost = true;
    gfl_transport_ref(&p->base);
    if (delivering(p) && p->sp.pipe_connection_lost)
        p->sp.pipe_connection_lost(&p->base, l->fd, error, p->base.ud);
    try_finish(p);
    gfl_transport_unref(&p->base);
}

static void pipe_pause(gfl_transport *t, void *ud)
{
    struct pipe_link *l = ud;
    (void)t;
    if (delivering(l->p) && l->p->sp.pause_writing)
        l->p->sp.pause_writing(&l->p->base, l->p->base.ud);
}

static void pipe_resume(gfl_transport *t, void *ud)
{
    struct pipe_link *l = ud;
    (void)t;
    if (delivering(l->p) && l->p->sp.resume_writing)
        l->p->sp.resume_writing(&l->p->base, l->p->base.ud);
}

static const gfl_protocol pipe_protocol = {
    .size = sizeof(gfl_protocol),
    .data_received = pipe_data,
    .connection_lost = pipe_lost,
    .pause_writing = pipe_pause,
    .resume_writing = pipe_resume,
};

/* For a pipe cut off from a process that is gone. */
static const gfl_protocol silent_protocol = {.size = sizeof(gfl_protocol)};

/* ------------------------------------------------------------------ */
/* Reaping                                                             */

static int pidfd_open_(pid_t pid)
{
#ifdef SYS_pidfd_open
    const char *off = getenv("GFL_NO_PIDFD");
    if (off && off[0] == '1')
        return -1;
    return (int)syscall(SYS_pidfd_open, pid, 0u);
#else
    (void)pid;
    errno = ENOSYS;
    return -1;
#endif
}

/* Collects the child's status: true once it is reaped. */
static bool try_reap(struct proc *p, bool block)
{
    if (p->exited)
        return true;
    if (p->pid <= 0)
        return false;
    int st = 0;
    pid_t r;
    do
        r = waitpid(p->pid, &st, block ? 0 : WNOHANG);
    while (r < 0 && errno == EINTR);
    if (r == 0)
        return false;
    if (r < 0)
        p->returncode = 255; /* ECHILD: reaped elsewhere (SIGCHLD ignored?) */
    else if (WIFEXITED(st))
        p->returncode = WEXITSTATUS(st);
    else if (WIFSIGNALED(st))
        p->returncode = -WTERMSIG(st);
    else
        return false; /* stopped/continued: not without WUNTRACED */
    p->exited = true;
    return true;
}

static void stop_watch(struct proc *p)
{
    if (p->pidev_added) {
        event_del(&p->pidev);
        p->pidev_added = false;
    }
    if (p->reap_handle > 0)
        (void)gfl_handle_cancel(p->base.loop, p->reap_handle);
    p->reap_handle = 0;
    if (p->pidfd >= 0) {
        close(p->pidfd);
        p->pidfd = -1;
    }
}

static void reap_run(void *arg);

static void watch(struct proc *p)
{
    if (p->exited || p->base.loop->closed)
        return;
    if (p->pidfd >= 0) {
        if (!p->pidev_added)
            p->pidev_added = event_add(&p->pidev, NULL) == 0;
        if (p->pidev_added)
            return;
    }
    /* Polling (no pidfd, or the event could not be added). */
    gfl_handle h = gfl_call_later(p->base.loop, p->poll_delay, reap_run, p);
    if (h < 0) {
        /* Out of memory for the timer: poll again on the next turn rather
         * than never reap the child; say so if even that cannot queue. */
        h = gfl__queue_plain(p->base.loop, reap_run, p);
        if (h < 0)
            (void)gfl_loop_call_exception_handler(p->base.loop,
                "subprocess: cannot schedule waiting for the child (out of memory)", NULL);
    }
    p->reap_handle = h > 0 ? h : 0;
    p->poll_delay = p->poll_delay * 2 < POLL_MAX ? p->poll_delay * 2 : POLL_MAX;
}

static void reap_run(void *arg)
{
    struct proc *p = arg;
    p->reap_handle = 0;
    if (p->exited)
        return;
    if (!try_reap(p, false)) {
        watch(p); /* spurious wake-up, or the next poll */
        return;
    }
    stop_watch(p);
    gfl_transport *t = &p->base;
    gfl_transport_ref(t);
    if (delivering(p) && p->sp.process_exited)
        p->sp.process_exited(t, t->ud);
    try_finish(p);
    gfl_transport_unref(t);
}

/* libevent's callback (inside the poll): only queue. */
static void on_pidfd(evutil_socket_t fd, short what, void *arg)
{
    struct proc *p = arg;
    (void)fd;
    (void)what;
    p->pidev_added = false; /* one-shot */
    if (p->reap_handle > 0)
        return;
    gfl_handle h = gfl__queue_plain(p->base.loop, reap_run, p);
    if (h > 0)
        p->reap_handle = h;
    else
        p->pidev_added = event_add(&p->pidev, NULL) == 0; /* retry */
}

static int signal_child(struct proc *p, int sig)
{
    if (p->exited || p->pid <= 0)
        return GFL_OK; /* Popen.send_signal: nothing once reaped */
#ifdef SYS_pidfd_send_signal
    if (p->pidfd >= 0) {
        if (syscall(SYS_pidfd_send_signal, p->pidfd, sig, NULL, 0u) == 0)
            return GFL_OK;
        if (errno == ESRCH)
            return GFL_OK; /* exited, not reaped yet */
        if (errno != ENOSYS)
            return gfl__errno_code(errno);
    }
#endif
    /* Not reaped yet, so the pid cannot have been recycled. */
    if (kill(p->pid, sig) < 0 && errno != ESRCH)
        return gfl__errno_code(errno);
    return GFL_OK;
}

/* ------------------------------------------------------------------ */
/* Transport operations                                                */

static int proc_writev(gfl_transport *t, const gfl_iovec *iov, int iovcnt, size_t total)
{
    (void)t;
    (void)iov;
    (void)iovcnt;
    (void)total;
    return GFL_ENOSYS; /* write to gfl_subprocess_get_pipe_transport(t, 0) */
}

static int proc_write_eof(gfl_transport *t)
{
    (void)t;
    return GFL_ENOSYS;
}

static int proc_can_write_eof(gfl_transport *t)
{
    (void)t;
    return 0;
}

static int proc_set_reading(gfl_transport *t, bool on)
{
    (void)t;
    (void)on;
    return GFL_ENOSYS;
}

static int64_t proc_write_buffer_size(gfl_transport *t)
{
    (void)t;
    return 0;
}

/* asyncio's close(): close the pipes, kill a child still running. */
static int close_or_abort(gfl_transport *t, bool abort)
{
    struct proc *p = P(t);
    for (int i = 0; i < 3; i++) {
        struct pipe_link *l = &p->pipes[i];
        if (l->t && !l->lost)
            (void)(abort ? gfl_transport_abort(l->t) : gfl_transport_close(l->t));
    }
    int rc = signal_child(p, SIGKILL);
    try_finish(p); /* everything may already be over */
    return rc;
}

static int proc_close(gfl_transport *t)
{
    return close_or_abort(t, false);
}

static int proc_abort(gfl_transport *t)
{
    return close_or_abort(t, true);
}

static gfl_value *proc_extra_info(gfl_transport *t, const char *name)
{
    if (strcmp(name, "pid") == 0 || strcmp(name, "subprocess") == 0)
        return gfl_value_int(P(t)->pid);
    return NULL;
}

static int proc_fileno(gfl_transport *t)
{
    (void)t;
    return GFL_ENOSYS;
}

static int proc_get_sockaddr(gfl_transport *t, int peer, void *addr, size_t *len)
{
    (void)t;
    (void)peer;
    (void)addr;
    (void)len;
    return GFL_ENOSYS;
}

static void resolve_waiters(struct proc *p)
{
    for (size_t i = 0; i < p->nwaiters; i++) {
        gfl_future *w = p->waiters[i];
        if (gfl_future_state_of(w) == GFL_FUTURE_PENDING) {
            gfl_value *v = gfl_value_int(p->returncode);
            if (v)
                (void)gfl_future_set_result(w, v);
            else
                gfl__future_fail_value(w, NULL);
            gfl_value_unref(v);
        }
        gfl_future_unref(w);
    }
    p->nwaiters = 0;
}

/* After connection_lost, at loop close, or for a transport never started:
 * nothing may outlive this but the memory. */
static void proc_teardown(gfl_transport *t)
{
    struct proc *p = P(t);
    for (int i = 0; i < 3; i++) {
        struct pipe_link *l = &p->pipes[i];
        if (!l->t || l->lost)
            continue;
        l->lost = true;
        if (!l->started) {
            gfl__transport_discard(l->t); /* closes its fd */
        } else {
            /* Not reached in practice (connection_lost waits for the
             * pipes, loop close closes them first): cut it off. */
            gfl__transport_set_proto(l->t, &silent_protocol, NULL);
            (void)gfl_transport_abort(l->t);
        }
    }
    /* A child still running is killed, then reaped at once: SIGKILL
     * cannot be caught, so the wait is short, and no zombie remains. */
    if (!p->exited && p->pid > 0) {
        (void)signal_child(p, SIGKILL);
        (void)try_reap(p, true);
    }
    stop_watch(p);
    resolve_waiters(p);
}

static void proc_destroy(gfl_transport *t)
{
    struct proc *p = P(t);
    gfl_loop *loop = t->loop;
    if (!t->lost) /* never started: teardown did not run */
        proc_teardown(t);
    for (int i = 0; i < 3; i++)
        if (p->pipes[i].t)
            gfl_transport_unref(p->pipes[i].t);
    gfl__free(loop, p->waiters);
    gfl_value_unref(t->lost_error);
    gfl__free(loop, p);
}

static void proc_on_made(gfl_transport *t)
{
    watch(P(t)); /* so process_exited never precedes connection_made */
}

static const struct gfl_transport_ops proc_ops = {
    .name = "subprocess",
    .writev = proc_writev,
    .write_eof = proc_write_eof,
    .can_write_eof = proc_can_write_eof,
    .set_reading = proc_set_reading,
    .write_buffer_size = proc_write_buffer_size,
    .close = proc_close,
    .abort = proc_abort,
    .extra_info = proc_extra_info,
    .fileno = proc_fileno,
    .get_sockaddr = proc_get_sockaddr,
    .teardown = proc_teardown,
    .destroy = proc_destroy,
};

/* Loop closing: the pipes first (their pipe_connection_lost precedes the
 * process's connection_lost), then the common path, whose teardown kills
 * and reaps a child still running. */
static void proc_loop_closing(struct gfl_stream_node *n)
{
    struct proc *p = (struct proc *)((char *)n - offsetof(struct gfl_transport, node));
    gfl_transport_ref(&p->base);
    for (int i = 0; i < 3; i++) {
        struct pipe_link *l = &p->pipes[i];
        if (l->t && l->started && l->t->node.next)
            l->t->node.loop_closing(&l->t->node);
    }
    p->base_loop_closing(n);
    gfl_transport_unref(&p->base);
}

/* ------------------------------------------------------------------ */
/* Starting                                                            */

static int validate(const gfl_subprocess_options *o)
{
    if (!o->argv || !o->argv[0])
        return GFL_EINVAL;
    for (int i = 0; i < 3; i++) {
        int m = o->stdio[i];
        if (m < GFL_STDIO_PIPE || m > GFL_STDIO_STDOUT)
            return GFL_EINVAL;
        if (m == GFL_STDIO_STDOUT && i != 2)
            return GFL_EINVAL;
        if (m == GFL_STDIO_FD && (o->stdio_fd[i] < 0 || fcntl(o->stdio_fd[i], F_GETFD) < 0))
            return GFL_EINVAL;
    }
    if (o->npass_fds && !o->pass_fds)
        return GFL_EINVAL;
    for (size_t i = 0; i < o->npass_fds; i++)
        if (o->pass_fds[i] < 3 || fcntl(o->pass_fds[i], F_GETFD) < 0)
            return GFL_EINVAL;
    if (o->process_group < -1)
        return GFL_EINVAL;
    return GFL_OK;
}

/* The child's ends of its stdio (closed by the parent after the spawn). */
struct child_fds {
    int own[3]; /* fds opened for the child, -1: none */
};

static void close_child_fds(struct child_fds *c)
{
    for (int i = 0; i < 3; i++)
        if (c->own[i] >= 0) {
            close(c->own[i]);
            c->own[i] = -1;
        }
}

/* Prepares fd i of the child; for a pipe, *parent_end gets our end. */
static int prepare_stdio(const gfl_subprocess_options *o, int i, struct gfl_spawn_request *rq, struct child_fds *c, int *parent_end, gfl_value **error)
{
    rq->src[i] = -1;
    switch (o->stdio[i]) {
    case GFL_STDIO_INHERIT:
    case GFL_STDIO_STDOUT:
        return GFL_OK;
    case GFL_STDIO_FD: {
        int fd = o->stdio_fd[i];
        if (fd == i) {
            rq->clear_cloexec[i] = true;
            return GFL_OK;
        }
        if (fd >= 3) {
            rq->src[i] = fd; /* the caller's: not ours to close */
            return GFL_OK;
        }
        int dup = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (dup < 0)
            goto fail;
        c->own[i] = rq->src[i] = dup;
        return GFL_OK;
    }
    case GFL_STDIO_DEVNULL: {
        int fd = open("/dev/null", (i == 0 ? O_RDONLY : O_WRONLY) | O_CLOEXEC);
        if (fd < 0)
            goto fail;
        if ((fd = gfl__fd_above_stdio(fd)) < 0) {
            errno = -fd;
            goto fail;
        }
        c->own[i] = rq->src[i] = fd;
        return GFL_OK;
    }
    default: { /* GFL_STDIO_PIPE */
        int pp[2];
        if (pipe2(pp, O_CLOEXEC) < 0)
            goto fail;
        int child = i == 0 ? pp[0] : pp[1];
        int parent = i == 0 ? pp[1] : pp[0];
        child = gfl__fd_above_stdio(child);
        if (child < 0) {
            close(parent);
            errno = -child;
            goto fail;
        }
        c->own[i] = rq->src[i] = child;
        if (gfl__fd_prepare(parent) < 0) { /* non-blocking: our end only */
            int e = errno;
            close(parent);
            errno = e;
            goto fail;
        }
        *parent_end = parent;
        return GFL_OK;
    }
    }
fail:;
    int e = errno;
    *error = gfl__os_error(e, i == 0 ? "stdin" : i == 1 ? "stdout" : "stderr");
    return gfl__errno_code(e);
}

static int make_pipe_transport(struct proc *p, int i, int fd)
{
    struct pipe_link *l = &p->pipes[i];
    gfl_transport *pt = gfl__fd_transport_new(p->base.loop, fd, i == 0 ? GFL_FD_WRITE_PIPE : GFL_FD_READ_PIPE);
    if (!pt)
        return GFL_ENOMEM;
    l->t = gfl_transport_ref(pt); /* ours, for get_pipe_transport */
    gfl__transport_set_proto(pt, &pipe_protocol, l);
    return GFL_OK;
}

GFL_EXPORT gfl_future *gfl_subprocess_exec(gfl_loop *loop, gfl_subprocess_protocol_factory factory, void *factory_ud, gfl_release_fn factory_release, const gfl_subprocess_options *opts)
{
    if (gfl__check_loop(loop) < 0 || !factory || !opts || opts->size < sizeof(size_t))
        return NULL;
    gfl_subprocess_options o;
    memset(&o, 0, sizeof o);
    memcpy(&o, opts, opts->size < sizeof o ? opts->size : sizeof o);
    o.size = sizeof o;
    if (validate(&o) < 0)
        return NULL;

    gfl_future *f = gfl_future_new(loop);
    if (!f)
        return NULL;
    struct proc *p = gfl__alloc(loop, sizeof *p);
    if (!p || gfl__transport_init(&p->base, loop, &proc_ops) < 0) {
        gfl__free(loop, p);
        gfl_future_unref(f);
        return NULL;
    }
    memset((char *)p + sizeof p->base, 0, sizeof *p - sizeof p->base);
    p->pid = -1;
    p->pidfd = -1;
    p->poll_delay = POLL_MIN;
    for (int i = 0; i < 3; i++) {
        p->pipes[i].p = p;
        p->pipes[i].fd = i;
    }
    p->base.on_made = proc_on_made;
    p->base_loop_closing = p->base.node.loop_closing;
    p->base.node.loop_closing = proc_loop_closing;

    struct gfl_spawn_request rq;
    memset(&rq, 0, sizeof rq);
    rq.file = o.file ? o.file : o.argv[0];
    rq.argv = o.argv;
    rq.env = o.env;
    rq.cwd = o.cwd;
    rq.stderr_to_stdout = o.stdio[2] == GFL_STDIO_STDOUT;
    rq.setsid = o.start_new_session != 0;
    rq.pgroup = o.process_group;
    rq.close_fds = !o.inherit_fds;
    rq.pass_fds = o.pass_fds;
    rq.npass_fds = o.npass_fds;

    struct child_fds cf = {{-1, -1, -1}};
    int parent_end[3] = {-1, -1, -1};
    gfl_value *error = NULL;
    int rc = GFL_OK;
    for (int i = 0; i < 3 && rc == GFL_OK; i++)
        rc = prepare_stdio(&o, i, &rq, &cf, &parent_end[i], &error);
    pid_t pid = -1;
    if (rc == GFL_OK)
        rc = gfl__spawn(loop, &rq, &pid, &error);
    close_child_fds(&cf);
    if (rc == GFL_OK) {
        p->pid = pid;
        p->pidfd = pidfd_open_(pid);
        if (p->pidfd >= 0) {
            p->pidfd = gfl__fd_above_stdio(p->pidfd);
            if (p->pidfd >= 0)
                event_assign(&p->pidev, loop->base, p->pidfd, EV_READ, on_pidfd, p);
        }
        if (p->pidfd < 0)
            p->pidfd = -1;
    }
    /* Our pipe ends become transports (each owns its fd from here). */
    for (int i = 0; i < 3; i++) {
        if (parent_end[i] < 0)
            continue;
        if (rc == GFL_OK && (rc = make_pipe_transport(p, i, parent_end[i])) == GFL_OK)
            continue;
        close(parent_end[i]);
    }
    if (rc == GFL_OK) {
        const gfl_subprocess_protocol *sp = NULL;
        void *ud = NULL;
        rc = factory(factory_ud, &p->base, &sp, &ud);
        if (rc == GFL_OK && (!sp || sp->size < sizeof(size_t)))
            rc = GFL_EINVAL;
        if (rc == GFL_OK)
            set_sproto(p, sp, ud);
        else if (!error)
            error = gfl_value_error(rc, "OSError", "the protocol factory failed", NULL);
    }
    if (rc == GFL_OK) {
        /* The pipes' connection_made before the process's (asyncio
         * connects the pipes first). */
        for (int i = 0; i < 3 && rc == GFL_OK; i++) {
            struct pipe_link *l = &p->pipes[i];
            if (l->t && (rc = gfl__transport_start(l->t)) == GFL_OK)
                l->started = true;
        }
        if (rc == GFL_OK) {
            p->base.waiter = gfl_future_ref(f);
            if ((rc = gfl__transport_start(&p->base)) < 0) {
                gfl_future_unref(p->base.waiter);
                p->base.waiter = NULL;
            }
        }
        if (rc < 0) {
            /* Started pipes are torn down with the process. */
            for (int i = 0; i < 3; i++)
                if (p->pipes[i].started) {
                    p->pipes[i].lost = true;
                    gfl__transport_discard(p->pipes[i].t);
                }
        }
    }
    if (factory_release)
        factory_release(factory_ud);
    if (rc < 0) {
        /* Kills and reaps a child that was started; closes the pipes. */
        gfl__transport_discard(&p->base);
        if (!error && rc != GFL_ENOMEM)
            error = gfl_value_error(rc, "OSError", NULL, NULL);
        gfl__future_fail_value(f, error); /* NULL: MemoryError */
    }
    return f;
}

/* ------------------------------------------------------------------ */
/* Subprocess entry points                                             */

/* A subprocess transport on its loop's thread; `lost_ok`: also after
 * connection_lost (and on a closed loop). */
static int check(gfl_transport *t, bool lost_ok)
{
    if (!t || t->refs <= 0 || t->ops != &proc_ops)
        return GFL_EINVAL;
    int rc = gfl__check_loop(t->loop);
    if (rc == GFL_ECLOSED && lost_ok)
        rc = GFL_OK;
    if (rc < 0)
        return rc;
    return t->lost && !lost_ok ? GFL_ECLOSED : GFL_OK;
}

GFL_EXPORT int gfl_subprocess_pid(gfl_transport *t)
{
    int rc = check(t, true);
    if (rc < 0)
        return rc;
    return P(t)->pid > 0 ? P(t)->pid : GFL_ESTATE;
}

GFL_EXPORT int gfl_subprocess_returncode(gfl_transport *t, int *returncode)
{
    int rc = check(t, true);
    if (rc < 0)
        return rc;
    if (!returncode)
        return GFL_EINVAL;
    if (!P(t)->exited)
        return 0;
    *returncode = P(t)->returncode;
    return 1;
}

GFL_EXPORT gfl_future *gfl_subprocess_wait(gfl_transport *t)
{
    if (check(t, true) < 0 || t->loop->closed)
        return NULL;
    struct proc *p = P(t);
    gfl_future *f = gfl_future_new(t->loop);
    if (!f)
        return NULL;
    if (t->lost) {
        gfl_value *v = gfl_value_int(p->returncode);
        if (!v) {
            gfl_future_unref(f);
            return NULL;
        }
        (void)gfl_future_set_result(f, v);
        gfl_value_unref(v);
        return f;
    }
    if (p->nwaiters == p->waiters_cap) {
        size_t cap = p->waiters_cap ? p->waiters_cap * 2 : 4;
        gfl_future **w = gfl__realloc(t->loop, p->waiters, cap * sizeof *w);
        if (!w) {
            gfl_future_unref(f);
            return NULL;
        }
        p->waiters = w;
        p->waiters_cap = cap;
    }
    p->waiters[p->nwaiters++] = gfl_future_ref(f);
    return f;
}

GFL_EXPORT int gfl_subprocess_send_signal(gfl_transport *t, int signum)
{
    int rc = check(t, false);
    if (rc < 0)
        return rc;
    if (signum <= 0 || signum >= NSIG)
        return GFL_EINVAL;
    return signal_child(P(t), signum);
}

GFL_EXPORT int gfl_subprocess_terminate(gfl_transport *t)
{
    return gfl_subprocess_send_signal(t, SIGTERM);
}

GFL_EXPORT int gfl_subprocess_kill(gfl_transport *t)
{
    return gfl_subprocess_send_signal(t, SIGKILL);
}

GFL_EXPORT gfl_transport *gfl_subprocess_get_pipe_transport(gfl_transport *t, int fd)
{
    if (check(t, true) < 0 || fd < 0 || fd > 2)
        return NULL;
    return P(t)->pipes[fd].t;
}

GFL_EXPORT int gfl_subprocess_set_protocol(gfl_transport *t, const gfl_subprocess_protocol *proto, void *ud)
{
    int rc = check(t, false);
    if (rc < 0)
        return rc;
    if (!proto || proto->size < sizeof(size_t))
        return GFL_EINVAL;
    set_sproto(P(t), proto, ud);
    return GFL_OK;
}

GFL_EXPORT int gfl_subprocess_get_protocol(gfl_transport *t, const gfl_subprocess_protocol **proto, void **ud)
{
    int rc = check(t, false);
    if (rc < 0)
        return rc;
    if (!proto && !ud)
        return GFL_EINVAL;
    if (t->proto_user != &P(t)->sproto)
        return GFL_ESTATE; /* a stream protocol was set instead */
    if (proto)
        *proto = P(t)->sp_user;
    if (ud)
        *ud = t->ud;
    return GFL_OK;
}
