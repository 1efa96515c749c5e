/*
 * Starting a child: vfork + execve, with the child's failures (exec,
 * chdir, dup2, ...) carried back to the parent through a CLOEXEC pipe, so
 * that a missing program fails the spawn instead of producing a child that
 * exits 127.
 *
 * Why not posix_spawn: it reports exec errors only through memory shared
 * with a CLONE_VM child, which valgrind (and any tool turning vfork into
 * fork) silently loses; and it cannot close inherited fds portably. The
 * child here does what glibc's posix_spawn does to be vfork-safe: every
 * signal is blocked across vfork, and the child resets each caught signal
 * to SIG_DFL before unblocking, so no parent handler ever runs on the
 * shared memory. Between vfork and exec the child only makes system calls
 * on data prepared by the parent (no allocation, no locks).
 */
#include "spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#ifndef NSIG
#define NSIG 65
#endif

/* What failed in the child, written to the error pipe before _exit(127). */
enum stage { ST_EXEC = 1, ST_CHDIR, ST_DUP, ST_SETSID, ST_SETPGID, ST_FDS };

struct child_report {
    int stage;
    int err;
};

/* Everything the child needs, computed before vfork. */
struct plan {
    const struct gfl_spawn_request *rq;
    char *const *argv;
    char *const *envp;
    char **cands; /* execve candidates, in order */
    size_t ncands;
    int *keep;    /* sorted fds >= 3 to keep open (pass_fds + errfd) */
    size_t nkeep;
    int errfd;
    int maxfd;    /* for closing without close_range(2) */
    sigset_t empty;
    struct sigaction dfl;
};

int gfl__fd_above_stdio(int fd)
{
    if (fd >= 3)
        return fd;
    int nfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    int err = errno;
    close(fd);
    return nfd >= 0 ? nfd : -err;
}

/* ------------------------------------------------------------------ */
/* The child (between vfork and exec)                                  */

static void report(const struct plan *pl, int stage, int err)
{
    struct child_report r = {stage, err};
    ssize_t n;
    do
        n = write(pl->errfd, &r, sizeof r);
    while (n < 0 && errno == EINTR);
    _exit(127);
}

/* Closes [lo, hi] (hi < 0: every fd from lo). */
static void close_span(const struct plan *pl, int lo, int hi)
{
    if (hi >= 0 && hi < lo)
        return;
#ifdef SYS_close_range
    if (syscall(SYS_close_range, (unsigned)lo, hi < 0 ? ~0u : (unsigned)hi, 0u) == 0)
        return;
#endif
    int end = hi < 0 ? pl->maxfd : hi;
    for (int fd = lo; fd <= end; fd++)
        (void)close(fd);
}

static int dup2_retry(int from, int to)
{
    int r;
    do
        r = dup2(from, to);
    while (r < 0 && errno == EINTR);
    return r;
}

__attribute__((noinline, noreturn)) static void child_exec(const struct plan *pl)
{
    const struct gfl_spawn_request *rq = pl->rq;
    /* Caught signals back to SIG_DFL before anything can be delivered;
     * SIGPIPE and SIGXFSZ too (Python's restore_signals). Ignored signals
     * stay ignored, as exec would keep them. */
    for (int s = 1; s < NSIG; s++) {
        struct sigaction sa;
        if (s == SIGKILL || s == SIGSTOP || sigaction(s, NULL, &sa) < 0)
            continue;
        bool caught = (sa.sa_flags & SA_SIGINFO) || (sa.sa_handler != SIG_DFL && sa.sa_handler != SIG_IGN);
        bool restore = (s == SIGPIPE || s == SIGXFSZ) && sa.sa_handler != SIG_DFL;
        if (caught || restore)
            (void)sigaction(s, &pl->dfl, NULL);
    }
    if (rq->setsid && setsid() < 0)
        report(pl, ST_SETSID, errno);
    if (rq->pgroup && setpgid(0, rq->pgroup < 0 ? 0 : rq->pgroup) < 0)
        report(pl, ST_SETPGID, errno);
    for (int i = 0; i < 3; i++) {
        if (rq->src[i] >= 0) {
            if (dup2_retry(rq->src[i], i) < 0)
                report(pl, ST_DUP, errno);
        } else if (rq->clear_cloexec[i] && fcntl(i, F_SETFD, 0) < 0) {
            report(pl, ST_DUP, errno);
        }
    }
    if (rq->stderr_to_stdout && dup2_retry(1, 2) < 0)
        report(pl, ST_DUP, errno);
    if (rq->cwd && chdir(rq->cwd) < 0)
        report(pl, ST_CHDIR, errno);
    for (size_t i = 0; i < rq->npass_fds; i++)
        if (fcntl(rq->pass_fds[i], F_SETFD, 0) < 0)
            report(pl, ST_FDS, errno);
    if (rq->close_fds) {
        int lo = 3;
        for (size_t i = 0; i < pl->nkeep; i++) {
            if (pl->keep[i] >= lo) {
                close_span(pl, lo, pl->keep[i] - 1);
                lo = pl->keep[i] + 1;
            }
        }
        close_span(pl, lo, -1);
    }
    (void)sigprocmask(SIG_SETMASK, &pl->empty, NULL);
    /* Python's rule: the first error other than "not there" wins. */
    int saved = 0, last = ENOENT;
    for (size_t i = 0; i < pl->ncands; i++) {
        execve(pl->cands[i], pl->argv, pl->envp);
        last = errno;
        if (last != ENOENT && last != ENOTDIR && saved == 0)
            saved = last;
    }
    report(pl, ST_EXEC, saved ? saved : last);
    _exit(127); /* not reached */
}

/* vfork in a function of its own: nothing of the caller's frame is
 * touched by the child, which never returns from here. */
__attribute__((noinline)) static pid_t start_child(const struct plan *pl)
{
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    pid_t pid = fork(); /* sanitizers' shadow state cannot be shared */
#else
    pid_t pid = vfork();
#endif
    if (pid == 0)
        child_exec(pl);
    return pid;
}

/* ------------------------------------------------------------------ */
/* The parent                                                          */

/* Python's names for the errno values a spawn reports. */
static const char *error_type(int err)
{
    switch (err) {
    case ENOTDIR: return "NotADirectoryError";
    case EISDIR: return "IsADirectoryError";
    case ECHILD: return "ChildProcessError";
    case ESRCH: return "ProcessLookupError";
    default: return gfl__errno_type(err);
    }
}

/* "[Errno 2] No such file or directory: 'name'", as Python words it. */
static gfl_value *named_error(int err, const char *name)
{
    char msg[768];
    if (name)
        snprintf(msg, sizeof msg, "[Errno %d] %s: '%s'", err, strerror(err), name);
    else
        snprintf(msg, sizeof msg, "[Errno %d] %s", err, strerror(err));
    return gfl_value_error(gfl__errno_code(err), error_type(err), msg, NULL);
}

/* The execve candidates: `file` itself when it has a '/', else one per
 * PATH entry (an empty entry is the current directory). One allocation. */
static int build_candidates(gfl_loop *loop, const char *file, const char *const *env, struct plan *pl)
{
    if (strchr(file, '/')) {
        pl->cands = gfl__alloc(loop, sizeof(char *));
        if (!pl->cands)
            return GFL_ENOMEM;
        pl->cands[0] = (char *)file;
        pl->ncands = 1;
        return GFL_OK;
    }
    const char *path = NULL;
    if (env) {
        for (size_t i = 0; env[i]; i++)
            if (strncmp(env[i], "PATH=", 5) == 0) {
                path = env[i] + 5;
                break;
            }
    } else {
        path = getenv("PATH");
    }
    if (!path)
        path = "/bin:/usr/bin"; /* os.defpath */
    size_t ndirs = 1, flen = strlen(file), plen = strlen(path);
    for (const char *c = path; *c; c++)
        ndirs += *c == ':';
    size_t size = ndirs * sizeof(char *) + plen + ndirs * (flen + 2) + 1;
    char **cands = gfl__alloc(loop, size);
    if (!cands)
        return GFL_ENOMEM;
    char *out = (char *)(cands + ndirs);
    size_t n = 0;
    const char *dir = path;
    for (;;) {
        const char *end = strchr(dir, ':');
        size_t dlen = end ? (size_t)(end - dir) : strlen(dir);
        cands[n++] = out;
        memcpy(out, dir, dlen);
        out += dlen;
        if (dlen)
            *out++ = '/';
        memcpy(out, file, flen + 1);
        out += flen + 1;
        if (!end)
            break;
        dir = end + 1;
    }
    pl->cands = cands;
    pl->ncands = n;
    return GFL_OK;
}

static int build_keep(gfl_loop *loop, const struct gfl_spawn_request *rq, struct plan *pl)
{
    size_t n = rq->npass_fds + 1;
    pl->keep = gfl__calloc(loop, n, sizeof(int));
    if (!pl->keep)
        return GFL_ENOMEM;
    for (size_t i = 0; i < rq->npass_fds; i++)
        pl->keep[i] = rq->pass_fds[i];
    pl->keep[n - 1] = pl->errfd;
    for (size_t i = 1; i < n; i++) /* insertion sort: a handful of fds */
        for (size_t j = i; j > 0 && pl->keep[j - 1] > pl->keep[j]; j--) {
            int tmp = pl->keep[j];
            pl->keep[j] = pl->keep[j - 1];
            pl->keep[j - 1] = tmp;
        }
    pl->nkeep = n;
    return GFL_OK;
}

int gfl__spawn(gfl_loop *loop, const struct gfl_spawn_request *rq, pid_t *pidp, gfl_value **error)
{
    struct plan pl;
    memset(&pl, 0, sizeof pl);
    *error = NULL;
    pl.rq = rq;
    pl.argv = (char *const *)rq->argv;
    pl.envp = rq->env ? (char *const *)rq->env : environ;
    pl.errfd = -1;
    if (rq->file[0] == '\0') {
        *error = named_error(ENOENT, rq->file);
        return GFL_ENOENT;
    }
    int rc = build_candidates(loop, rq->file, rq->env, &pl);
    if (rc < 0)
        return rc;
    int ep[2];
    if (pipe2(ep, O_CLOEXEC) < 0) {
        rc = gfl__errno_code(errno);
        *error = gfl__os_error(errno, "pipe");
        goto out;
    }
    /* Above 0-2, so that the child's dup2s cannot overwrite it. */
    pl.errfd = gfl__fd_above_stdio(ep[1]);
    if (pl.errfd < 0) {
        rc = gfl__errno_code(-pl.errfd);
        *error = gfl__os_error(-pl.errfd, "fcntl");
        close(ep[0]);
        goto out;
    }
    if ((rc = build_keep(loop, rq, &pl)) < 0) {
        close(ep[0]);
        close(pl.errfd);
        goto out;
    }
    long maxfd = sysconf(_SC_OPEN_MAX);
    pl.maxfd = maxfd > 0 && maxfd < (1L << 20) ? (int)maxfd : (1 << 20);
    sigemptyset(&pl.empty);
    pl.dfl.sa_handler = SIG_DFL;
    sigemptyset(&pl.dfl.sa_mask);

    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    pid_t pid = start_child(&pl);
    int verr = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    close(pl.errfd);
    if (pid < 0) {
        close(ep[0]);
        rc = gfl__errno_code(verr);
        *error = gfl__os_error(verr, "fork");
        goto out;
    }
    /* EOF: execve succeeded (CLOEXEC closed the pipe); a report: it did
     * not, and the child is exiting. */
    struct child_report r;
    ssize_t n;
    do
        n = read(ep[0], &r, sizeof r);
    while (n < 0 && errno == EINTR);
    close(ep[0]);
    if (n == (ssize_t)sizeof r) {
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
        rc = gfl__errno_code(r.err);
        switch (r.stage) {
        case ST_EXEC: *error = named_error(r.err, rq->file); break;
        case ST_CHDIR: *error = named_error(r.err, rq->cwd); break;
        case ST_SETSID: *error = gfl__os_error(r.err, "setsid"); break;
        case ST_SETPGID: *error = gfl__os_error(r.err, "setpgid"); break;
        default: *error = gfl__os_error(r.err, "dup2"); break;
        }
        goto out;
    }
    *pidp = pid;
    rc = GFL_OK;
out:
    gfl__free(loop, pl.cands);
    gfl__free(loop, pl.keep);
    return rc;
}
