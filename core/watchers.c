/*
 * fd readiness watchers: asyncio's add_reader / add_writer.
 *
 * Each watched fd has one gfl_fd_watch (in loop->fd_watches, indexed by fd)
 * holding ONE persistent libevent event whose interest set is the union of
 * the reader and the writer. When libevent reports the fd ready the user's
 * callback is not called there: it is queued on the ready queue so that it
 * runs with the other ready callbacks of the iteration, as in asyncio. The
 * queued handle is remembered so that removing or replacing the watcher
 * cancels a callback that was queued but has not run yet.
 *
 * As with asyncio, remove a watcher before closing its fd: the kernel drops
 * a closed fd from epoll behind libevent's back, so a watcher left on a
 * closed-and-reused fd number may never fire again.
 */
#include "internal.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include <event2/event.h>
#include <event2/event_struct.h>

enum { DIR_READ = 0, DIR_WRITE = 1 };

static const short dir_bits[2] = { EV_READ, EV_WRITE };

struct gfl_fd_watch {
    struct event ev;      /* embedded, so it is allocated through the hook */
    gfl_loop *loop;
    int fd;
    dev_t dev;            /* the file registered (fstat when added) */
    ino_t ino;
    short registered;     /* EV_READ|EV_WRITE currently added; 0: not added */
    gfl_callback cb[2];   /* NULL: no watcher in that direction */
    void *arg[2];
    gfl_handle queued[2]; /* the queued, not yet run callback; 0: none */
};

/* Queues cb(arg) on the ready queue; the handle or a GFL_E* code. Shared
 * with signals.c (declared in internal.h). */
gfl_handle gfl__queue_plain(gfl_loop *loop, gfl_callback cb, void *arg)
{
    uint32_t index;
    int rc = gfl__slot_alloc(loop, &index);
    if (rc < 0)
        return rc;
    struct gfl_slot *s = &loop->slots[index];
    s->fn.cb = cb;
    s->arg = arg;
    s->future = NULL;
    s->kind = GFL_SLOT_PLAIN;
    rc = gfl__ready_push(loop, index);
    if (rc < 0) {
        gfl__slot_release(loop, index);
        return rc;
    }
    return gfl__handle_of(loop, index);
}

static void cancel_queued(struct gfl_fd_watch *w, int dir)
{
    if (w->queued[dir] > 0)
        (void)gfl_handle_cancel(w->loop, w->queued[dir]); /* ENOENT: it ran */
    w->queued[dir] = 0;
}

/* libevent callback, inside the poll phase: only queue, never call user code. */
static void on_fd_ready(evutil_socket_t fd, short what, void *ctx)
{
    struct gfl_fd_watch *w = ctx;
    gfl_loop *loop = w->loop;
    (void)fd;
    for (int dir = DIR_READ; dir <= DIR_WRITE; dir++) {
        if (!(what & dir_bits[dir]) || !w->cb[dir])
            continue;
        /* Still queued from an earlier poll: it will run; don't double it. */
        if (w->queued[dir] > 0 && gfl_handle_is_pending(loop, w->queued[dir]) == 1)
            continue;
        gfl_handle h = gfl__queue_plain(loop, w->cb[dir], w->arg[dir]);
        w->queued[dir] = h > 0 ? h : 0;
        if (h < 0) /* level-triggered: retried next iteration if still ready */
            (void)gfl_loop_call_exception_handler(loop,
                "fd watcher: could not queue the callback (out of memory)", NULL);
    }
}

static short wanted_events(const struct gfl_fd_watch *w)
{
    return (short)((w->cb[DIR_READ] ? EV_READ : 0) | (w->cb[DIR_WRITE] ? EV_WRITE : 0));
}

/* If the fd no longer names the file we registered (closed behind our
 * back, perhaps reused), the poller may keep an entry for that file that
 * event_del cannot reach: the loop renews its poller (iopoll.c). */
static void unregister(struct gfl_fd_watch *w)
{
    struct stat st;
    if (fstat(w->fd, &st) < 0 || st.st_dev != w->dev || st.st_ino != w->ino)
        gfl__note_orphaned_fd(w->loop);
    event_del(&w->ev);
    w->registered = 0;
}

/* Makes the libevent registration match `want` (0: unregistered). */
static int set_interest(struct gfl_fd_watch *w, short want)
{
    if (want == w->registered)
        return GFL_OK;
    if (w->registered)
        unregister(w);
    if (!want)
        return GFL_OK;
    if (event_assign(&w->ev, w->loop->base, w->fd, (short)(want | EV_PERSIST), on_fd_ready, w) < 0)
        return GFL_EINVAL;
    errno = 0;
    if (event_add(&w->ev, NULL) < 0) {
        int e = errno;
        return e > 0 && e < 4000 ? -e : GFL_EIO;
    }
    w->registered = want;
    return GFL_OK;
}

static int grow_table(gfl_loop *loop, int fd)
{
    if (fd < loop->fd_watches_cap)
        return GFL_OK;
    size_t cap = loop->fd_watches_cap > 0 ? (size_t)loop->fd_watches_cap : 16;
    while (cap <= (size_t)fd)
        cap *= 2;
    if (cap > (size_t)INT32_MAX)
        cap = (size_t)fd + 1;
    struct gfl_fd_watch **t = gfl__realloc(loop, loop->fd_watches, cap * sizeof *t);
    if (!t)
        return GFL_ENOMEM;
    memset(t + loop->fd_watches_cap, 0, (cap - (size_t)loop->fd_watches_cap) * sizeof *t);
    loop->fd_watches = t;
    loop->fd_watches_cap = (int)cap;
    return GFL_OK;
}

static void free_watch(gfl_loop *loop, struct gfl_fd_watch *w)
{
    if (w->registered)
        unregister(w);
    loop->fd_watches[w->fd] = NULL;
    gfl__free(loop, w);
}

/* epoll refuses regular files and directories (EPERM, as asyncio reports). */
static int check_fd(const gfl_loop *loop, int fd, struct stat *st_out)
{
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0)
        return GFL_EBADF;
    *st_out = st;
    if ((S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)) &&
        strcmp(event_base_get_method(loop->base), "epoll") == 0)
        return GFL_EPERM;
    return GFL_OK;
}

static int add_watcher(gfl_loop *loop, int fd, int dir, gfl_callback cb, void *arg)
{
    int rc = gfl__check_loop(loop);
    if (rc < 0)
        return rc;
    if (!cb)
        return GFL_EINVAL;
    struct stat st;
    if ((rc = check_fd(loop, fd, &st)) < 0)
        return rc;
    if ((rc = grow_table(loop, fd)) < 0)
        return rc;

    struct gfl_fd_watch *w = loop->fd_watches[fd];
    bool fresh = false;
    if (!w) {
        w = gfl__calloc(loop, 1, sizeof *w);
        if (!w)
            return GFL_ENOMEM;
        w->loop = loop;
        w->fd = fd;
        w->dev = st.st_dev;
        w->ino = st.st_ino;
        loop->fd_watches[fd] = w;
        fresh = true;
    } else if (w->dev != st.st_dev || w->ino != st.st_ino) {
        /* The fd was closed and reused behind the other direction's
         * watcher: register the new file afresh (and renew the poller). */
        (void)set_interest(w, 0);
        w->dev = st.st_dev;
        w->ino = st.st_ino;
    }

    short old = w->registered;
    gfl_callback old_cb = w->cb[dir];
    w->cb[dir] = cb; /* provisional, so wanted_events() sees it */
    rc = set_interest(w, wanted_events(w));
    if (rc < 0) {
        w->cb[dir] = old_cb;
        if (fresh)
            free_watch(loop, w);
        else
            (void)set_interest(w, old); /* it was accepted before */
        return rc;
    }
    cancel_queued(w, dir); /* replacing: the old callback must not run */
    w->arg[dir] = arg;
    return GFL_OK;
}

static int remove_watcher(gfl_loop *loop, int fd, int dir)
{
    int rc = gfl__check_loop(loop);
    if (rc < 0)
        return rc;
    if (fd < 0)
        return GFL_EBADF;
    /* No fstat here: removing the watcher of an fd already closed is fine. */
    if (fd >= loop->fd_watches_cap || !loop->fd_watches[fd] || !loop->fd_watches[fd]->cb[dir])
        return 0;
    struct gfl_fd_watch *w = loop->fd_watches[fd];
    cancel_queued(w, dir);
    w->cb[dir] = NULL;
    w->arg[dir] = NULL;
    short want = wanted_events(w);
    if (!want)
        free_watch(loop, w);
    else
        (void)set_interest(w, want); /* only fails if the fd is gone */
    return 1;
}

GFL_EXPORT int gfl_add_reader(gfl_loop *loop, int fd, gfl_callback cb, void *arg)
{
    return add_watcher(loop, fd, DIR_READ, cb, arg);
}

GFL_EXPORT int gfl_add_writer(gfl_loop *loop, int fd, gfl_callback cb, void *arg)
{
    return add_watcher(loop, fd, DIR_WRITE, cb, arg);
}

GFL_EXPORT int gfl_remove_reader(gfl_loop *loop, int fd)
{
    return remove_watcher(loop, fd, DIR_READ);
}

GFL_EXPORT int gfl_remove_writer(gfl_loop *loop, int fd)
{
    return remove_watcher(loop, fd, DIR_WRITE);
}

/* Loop closing (before event_base_free): queued callbacks are dropped by the
 * scheduler, so only the events and the memory are ours to release. */
void gfl__watchers_close(gfl_loop *loop)
{
    for (int fd = 0; fd < loop->fd_watches_cap; fd++)
        if (loop->fd_watches[fd])
            free_watch(loop, loop->fd_watches[fd]);
    gfl__free(loop, loop->fd_watches);
    loop->fd_watches = NULL;
    loop->fd_watches_cap = 0;
}
