/*
 * Direct epoll for stream fds, with libevent's backend nested inside.
 *
 * libevent spends about 280 user-space instructions per ready fd (evmap
 * lookup, activation, its active queue, the callback); a whole request of a
 * raw epoll echo costs 54. When libevent chose epoll and its epoll fd can be
 * identified (backend.c, strictly), the loop polls its own epoll set
 * instead: the fds of stream transports, plus libevent's epoll fd (EPOLLIN).
 * A ready stream fd goes straight to its source's callback (which only
 * queues, as libevent's callbacks do); when libevent's fd is
 * ready, libevent dispatches once without blocking. So an iteration in
 * which only streams are ready costs one epoll_wait, as a raw epoll loop.
 * Everything else (watchers, signals, the poll-timeout timerfd, the
 * threadsafe eventfd) stays on libevent, whose readiness wakes our set.
 *
 * Set up when the loop is created (one more fd per loop). Otherwise (another
 * backend, no /proc, no unique match) loop->io_epfd stays -1 and streams
 * keep using libevent events.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <event2/event.h>

/* An entry's data is the fd and the registration's tag, never a pointer, so
 * that an entry the kernel kept (the fd was closed behind our back while a
 * duplicate holds the file open) can only name nothing. libevent's: */
#define BASE_ENTRY UINT64_MAX

#define EVENTS_MIN 64
#define EVENTS_MAX 4096

void gfl__iopoll_init(gfl_loop *loop, int hint)
{
    int inner = gfl__libevent_epoll_fd(loop, hint);
    if (inner < 0)
        return;
    struct epoll_event *evs = gfl__alloc(loop, EVENTS_MIN * sizeof *evs);
    if (!evs)
        return;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) {
        gfl__free(loop, evs);
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = BASE_ENTRY};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, inner, &ev) < 0) {
        close(ep);
        gfl__free(loop, evs);
        return;
    }
    loop->io_epfd = ep;
    loop->io_base_fd = inner;
    loop->io_events = evs;
    loop->io_events_cap = EVENTS_MIN;
}

static int grow_sources(gfl_loop *loop, int fd)
{
    if (fd < loop->io_sources_cap)
        return GFL_OK;
    size_t cap = loop->io_sources_cap > 0 ? (size_t)loop->io_sources_cap : 64;
    while (cap <= (size_t)fd)
        cap *= 2;
    struct gfl_io_source **t = gfl__realloc(loop, loop->io_sources, cap * sizeof *t);
    if (!t)
        return GFL_ENOMEM;
    memset(t + loop->io_sources_cap, 0, (cap - (size_t)loop->io_sources_cap) * sizeof *t);
    loop->io_sources = t;
    loop->io_sources_cap = (int)cap;
    return GFL_OK;
}

int gfl__iopoll_set(gfl_loop *loop, struct gfl_io_source *src, short want)
{
    if (want == src->interest)
        return GFL_OK;
    int op = !want ? EPOLL_CTL_DEL : src->interest ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    if (op == EPOLL_CTL_ADD) {
        if (src->fd < 0)
            return GFL_EBADF;
        int rc = grow_sources(loop, src->fd);
        if (rc < 0)
            return rc;
        src->tag = ++loop->io_tag;
    }
    struct epoll_event ev = {
        .events = ((want & EV_READ) ? EPOLLIN : 0u) | ((want & EV_WRITE) ? EPOLLOUT : 0u),
        .data.u64 = (uint64_t)src->tag << 32 | (uint32_t)src->fd,
    };
    if (epoll_ctl(loop->io_epfd, op, src->fd, &ev) < 0) {
        int e = errno;
        if (op != EPOLL_CTL_DEL)
            return gfl__errno_code(e);
        /* The fd is gone already; whatever entry is left names nothing. */
    }
    src->interest = want;
    if (op == EPOLL_CTL_ADD)
        loop->io_sources[src->fd] = src;
    else if (op == EPOLL_CTL_DEL && loop->io_sources[src->fd] == src)
        loop->io_sources[src->fd] = NULL;
    return GFL_OK;
}

/* An entry the kernel kept after we forgot it: its fd was closed behind
 * our back while a duplicate keeps the file open, so EPOLL_CTL_DEL (by fd
 * number) could not reach it, and no fd number we hold ever will. It stays
 * level-triggered ready and would make every epoll_wait return at once (the
 * loop spun at 100% CPU). The only way to drop it is to drop the set: build
 * a new one from what we still watch and swap it in under the same fd number
 * (dup3), so the backend fd's registration can be renewed in place. Misuse
 * only: O(watched fds), once per orphaned entry seen. */
static void rebuild_set(gfl_loop *loop)
{
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        return; /* keep the old set: it spins, but it works */
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = BASE_ENTRY};
    bool ok = epoll_ctl(ep, EPOLL_CTL_ADD, loop->io_base_fd, &ev) == 0;
    for (int fd = 0; ok && fd < loop->io_sources_cap; fd++) {
        struct gfl_io_source *src = loop->io_sources[fd];
        if (!src || !src->interest)
            continue;
        src->tag = ++loop->io_tag;
        ev.events = ((src->interest & EV_READ) ? EPOLLIN : 0u) | ((src->interest & EV_WRITE) ? EPOLLOUT : 0u);
        ev.data.u64 = (uint64_t)src->tag << 32 | (uint32_t)fd;
        /* A source whose own fd is closed behind it is an orphan too: it
         * stays in io_sources (its owner removes it) but leaves the set. */
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0 && errno != EBADF && errno != EPERM)
            ok = false;
    }
    /* dup3 closes the old set (its entries, the orphan among them, go with
     * it, and so does its registration in the backend fd: renew that). */
    if (!ok || dup3(ep, loop->io_epfd, O_CLOEXEC) < 0) {
        close(ep);
        return;
    }
    close(ep);
    if (loop->backend_fd >= 0)
        (void)gfl__iopoll_attach(loop, loop->backend_fd);
}

void gfl__iopoll_poll(gfl_loop *loop, bool block)
{
    bool orphan = false;
    struct epoll_event *evs = loop->io_events;
    int cap = loop->io_events_cap;
    int n = epoll_wait(loop->io_epfd, evs, cap, block ? -1 : 0);
    bool base_ready = false;
    for (int i = 0; i < n; i++) {
        uint64_t data = evs[i].data.u64;
        if (data == BASE_ENTRY) {
            base_ready = true;
            continue;
        }
        uint32_t fd = (uint32_t)data;
        struct gfl_io_source *src = fd < (uint32_t)loop->io_sources_cap ? loop->io_sources[fd] : NULL;
        if (!src || src->tag != (uint32_t)(data >> 32)) {
            /* Sources leave the set before they are forgotten, so a ready
             * entry that names nothing is one the kernel kept. */
            orphan = true;
            continue;
        }
        uint32_t e = evs[i].events;
        /* As libevent maps them: an error or hangup wakes both directions. */
        short what = (short)(((e & (EPOLLIN | EPOLLERR | EPOLLHUP)) ? EV_READ : 0) |
                             ((e & (EPOLLOUT | EPOLLERR | EPOLLHUP)) ? EV_WRITE : 0));
        what &= src->interest;
        if (what)
            src->ready(src, what);
    }
    if (n == cap && cap < EVENTS_MAX) { /* full: more may be waiting */
        struct epoll_event *bigger = gfl__realloc(loop, evs, (size_t)cap * 2 * sizeof *evs);
        if (bigger) {
            loop->io_events = bigger;
            loop->io_events_cap = cap * 2;
        }
    }
    if (orphan)
        rebuild_set(loop);
    if (base_ready)
        event_base_loop(loop->base, EVLOOP_NONBLOCK | EVLOOP_ONCE);
}

void gfl__close_watched_fd(gfl_loop *loop, int fd)
{
    if (close(fd) < 0 && errno == EBADF)
        loop->base_orphaned = true;
}

void gfl__note_orphaned_fd(gfl_loop *loop)
{
    loop->base_orphaned = true;
}

/* libevent cannot drop an entry it cannot name either (it ignores the
 * failed EPOLL_CTL_DEL), so its whole backend is rebuilt from its event map:
 * event_reinit, meant for fork, closes its epoll fd and re-adds every event
 * it holds. Its new epoll fd then replaces the old one in our set and the
 * backend fd (the old one left both when it was closed). */
void gfl__iopoll_renew(gfl_loop *loop)
{
    if (!loop->base_orphaned)
        return;
    loop->base_orphaned = false;
    if (event_reinit(loop->base) < 0) {
        (void)gfl_loop_call_exception_handler(loop,
            "poller: could not rebuild libevent's backend after an fd was closed behind the loop", NULL);
        return;
    }
    if (loop->io_epfd < 0 && loop->backend_fd < 0)
        return;
    int inner = gfl__libevent_epoll_fd(loop, loop->io_base_fd);
    if (inner < 0) {
        (void)gfl_loop_call_exception_handler(loop,
            "poller: libevent's rebuilt epoll fd cannot be found; fd watchers may not wake the loop", NULL);
        return;
    }
    if (loop->backend_fd >= 0) {
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = inner};
        (void)epoll_ctl(loop->backend_fd, EPOLL_CTL_ADD, inner, &ev);
    }
    if (loop->io_epfd >= 0) {
        loop->io_base_fd = inner;
        rebuild_set(loop);
    }
}

int gfl__iopoll_attach(gfl_loop *loop, int epfd)
{
    if (loop->io_epfd < 0)
        return GFL_OK;
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = loop->io_epfd};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, loop->io_epfd, &ev) < 0)
        return errno == ENOMEM ? GFL_ENOMEM : GFL_ENOSYS;
    return GFL_OK;
}

void gfl__iopoll_close(gfl_loop *loop)
{
    if (loop->io_epfd >= 0)
        close(loop->io_epfd);
    loop->io_epfd = -1;
    gfl__free(loop, loop->io_events);
    loop->io_events = NULL;
    loop->io_events_cap = 0;
    gfl__free(loop, loop->io_sources);
    loop->io_sources = NULL;
    loop->io_sources_cap = 0;
}
