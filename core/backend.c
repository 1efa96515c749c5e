/*
 * The backend fd and timeout, for hosts that run their own main loop.
 *
 * libevent does not expose its epoll fd, so we find it. The robust test is
 * the kernel's own bookkeeping: /proc/self/fdinfo/<epfd> lists every fd an
 * epoll instance watches ("tfd: N ..."). The loop's wake eventfd (registered
 * by threadsafe.c on loop->base) is watched by exactly one epoll instance in
 * the process: libevent's for this loop. Reading fdinfo touches nothing, so
 * no wakeup can be lost and unrelated readiness on the loop's other fds
 * cannot confuse it.
 *
 * Fallback (fdinfo without tfd lines, or several matches): the validation
 * the brief describes: make the eventfd readable, keep the eventpoll fds
 * that poll readable, drain it, keep those that no longer do. It fails if
 * the loop has other ready fds at that moment, hence only a fallback.
 *
 * We then hand out our own epoll fd holding libevent's (EPOLLIN), so the
 * host cannot disturb libevent's set, and close it when the loop closes.
 *
 * Limits: Linux with libevent's epoll backend and /proc (else GFL_ENOSYS);
 * libevent timers created outside timers.c are not reflected in
 * gfl_loop_backend_timeout.
 */
#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <event2/event.h>

#define VALIDATION_ATTEMPTS 3

struct fd_list {
    int *fds;
    size_t n, cap;
};

static int list_push(gfl_loop *loop, struct fd_list *l, int fd)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        int *p = gfl__realloc(loop, l->fds, cap * sizeof *p);
        if (!p)
            return GFL_ENOMEM;
        l->fds = p;
        l->cap = cap;
    }
    l->fds[l->n++] = fd;
    return GFL_OK;
}

static bool is_eventpoll(int fd)
{
    char path[64], link[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(path, link, sizeof link - 1);
    if (n <= 0)
        return false;
    link[n] = '\0';
    return strcmp(link, "anon_inode:[eventpoll]") == 0;
}

/* 1 if epoll instance `epfd` watches `target`, 0 if not, -1 if fdinfo has
 * no tfd lines at all (cannot tell). */
static int epoll_watches(int epfd, int target)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", epfd);
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    int found = 0, any = 0, tfd;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "tfd: %d", &tfd) == 1) {
            any = 1;
            if (tfd == target)
                found = 1;
        }
    }
    fclose(f);
    return found ? 1 : any ? 0 : -1;
}

/* Every eventpoll fd of the process except our own backend fd. */
static int scan_eventpolls(gfl_loop *loop, struct fd_list *out)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d) {
        /* Out of descriptors is passing (the caller may ask again later);
         * anything else means there is no /proc to look at. */
        if (errno == EMFILE || errno == ENFILE)
            return GFL_EMFILE;
        return errno == ENOMEM ? GFL_ENOMEM : GFL_ENOSYS;
    }
    int rc = GFL_OK, self = dirfd(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char *end;
        long fd = strtol(e->d_name, &end, 10);
        if (end == e->d_name || *end || fd < 0 || fd == self || fd == loop->backend_fd || fd == loop->io_epfd)
            continue;
        if (is_eventpoll((int)fd) && (rc = list_push(loop, out, (int)fd)) < 0)
            break;
    }
    closedir(d);
    return rc;
}

static bool poll_readable(int fd)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

static void drain(int fd)
{
    uint64_t v;
    while (poll_readable(fd) && read(fd, &v, sizeof v) > 0)
        ;
}

static void poke(int fd)
{
    uint64_t one = 1;
    ssize_t n;
    do
        n = write(fd, &one, sizeof one);
    while (n < 0 && errno == EINTR);
}

/* The brief's readiness validation; leaves the one survivor in c->fds[0]. */
static bool validate_by_readiness(gfl_loop *loop, struct fd_list *c)
{
    int *orig = c->fds;
    size_t norig = c->n;
    int *keep = gfl__alloc(loop, norig * sizeof *keep);
    if (!keep)
        return false;
    bool ok = false;
    for (int attempt = 0; attempt < VALIDATION_ATTEMPTS && !ok; attempt++) {
        size_t n = 0;
        poke(loop->wake_fd);
        for (size_t i = 0; i < norig; i++)
            if (poll_readable(orig[i]))
                keep[n++] = orig[i];
        drain(loop->wake_fd);
        size_t m = 0;
        for (size_t i = 0; i < n; i++)
            if (!poll_readable(keep[i]))
                keep[m++] = keep[i];
        /* Never lose a real wakeup: a call_soon_threadsafe may have written
         * to the eventfd we just drained (or may rely on a write pending). */
        pthread_mutex_lock(&loop->ts_lock);
        bool pending = loop->ts_count > 0 || atomic_load(&loop->ts_wake_pending);
        pthread_mutex_unlock(&loop->ts_lock);
        if (pending)
            poke(loop->wake_fd);
        if (m == 1) {
            orig[0] = keep[0];
            ok = true;
        }
    }
    gfl__free(loop, keep);
    return ok;
}

/* libevent's epoll fd for this loop, or a GFL_E* code. `strict`: only a
 * unique fdinfo match counts (no readiness validation). */
static int find_libevent_epoll(gfl_loop *loop, bool strict)
{
    if (strcmp(event_base_get_method(loop->base), "epoll") != 0 || loop->wake_fd < 0)
        return GFL_ENOSYS;
    struct fd_list all = { 0 }, match = { 0 };
    int rc = scan_eventpolls(loop, &all);
    bool unknown = false;
    for (size_t i = 0; rc == GFL_OK && i < all.n; i++) {
        int w = epoll_watches(all.fds[i], loop->wake_fd);
        if (w < 0)
            unknown = true;
        else if (w == 1)
            rc = list_push(loop, &match, all.fds[i]);
    }
    if (rc == GFL_OK && strict) {
        rc = match.n == 1 ? match.fds[0] : GFL_ENOSYS;
    } else if (rc == GFL_OK) {
        struct fd_list *c = (match.n == 0 && unknown) ? &all : &match;
        if (c->n == 1 || (c->n > 1 && validate_by_readiness(loop, c)))
            rc = c->fds[0];
        else
            rc = GFL_ENOSYS;
    }
    gfl__free(loop, all.fds);
    gfl__free(loop, match.fds);
    return rc;
}

GFL_EXPORT int gfl_loop_backend_fd(gfl_loop *loop)
{
    int rc = gfl__check_loop(loop);
    if (rc < 0)
        return rc;
    if (loop->backend_fd >= 0)
        return loop->backend_fd;
    int inner = find_libevent_epoll(loop, false);
    if (inner < 0)
        return inner;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        return errno == EMFILE || errno == ENFILE ? GFL_EMFILE : GFL_ENOMEM;
    struct epoll_event ev = { .events = EPOLLIN, .data.fd = inner };
    if (epoll_ctl(ep, EPOLL_CTL_ADD, inner, &ev) < 0) {
        int e = errno;
        close(ep);
        return e == ENOMEM ? GFL_ENOMEM : GFL_ENOSYS;
    }
    /* Streams polled directly (iopoll.c) are in our set, not libevent's. */
    int rc2 = gfl__iopoll_attach(loop, ep);
    if (rc2 < 0) {
        close(ep);
        return rc2;
    }
    loop->backend_fd = ep;
    return ep;
}

/* On a bad or closed loop: the (negative) GFL_E* code, never -1, so that it
 * is not mistaken for "nothing scheduled". */
GFL_EXPORT double gfl_loop_backend_timeout(const gfl_loop *loop)
{
    int rc = gfl__check_loop(loop);
    if (rc < 0)
        return rc;
    if (loop->ready_count > 0 || loop->stopping)
        return 0;
    /* timers_next only drops cancelled heap heads: not an observable change. */
    double when = gfl__timers_next((gfl_loop *)loop);
    if (when < 0)
        return -1;
    double delay = when - gfl_loop_time(loop);
    return delay > 0 ? delay : 0;
}

int gfl__libevent_epoll_fd(gfl_loop *loop, int hint)
{
    if (hint >= 0 && loop->wake_fd >= 0 && strcmp(event_base_get_method(loop->base), "epoll") == 0 &&
        is_eventpoll(hint) && epoll_watches(hint, loop->wake_fd) == 1)
        return hint;
    return find_libevent_epoll(loop, true);
}

void gfl__backend_close(gfl_loop *loop)
{
    if (loop->backend_fd >= 0)
        close(loop->backend_fd);
    loop->backend_fd = -1;
}
