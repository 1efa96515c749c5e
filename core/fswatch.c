/*
 * File-system watchers (abi/globeflower_fs.h), independent of the OS
 * facility: this file keeps the watchers, polls each one's descriptor with
 * gfl_add_reader and delivers events on the loop thread. The OS part
 * (gfl__fswatch_os_*, internal.h) is fswatch_inotify.c on Linux.
 *
 * Closing from inside the callback only marks the watcher: the drain in
 * progress stops and on_readable frees it once the OS call returned.
 */
#include "internal.h"

#include <string.h>

struct gfl_fs_watcher {
    gfl_loop *loop;
    int fd;
    char *path;
    gfl_fs_watch_fn callback;
    void *ud;
    gfl_release_fn release;
    bool dispatching; /* inside on_readable */
    bool closed;      /* close requested (frees after the dispatch) */
    struct gfl_fs_watcher *next, *prev; /* loop->fs_watchers */
};

static void unlink_watcher(gfl_fs_watcher *w)
{
    gfl_loop *loop = w->loop;
    if (w->prev)
        w->prev->next = w->next;
    else
        loop->fs_watchers = w->next;
    if (w->next)
        w->next->prev = w->prev;
    w->next = w->prev = NULL;
}

/* Stops polling, frees everything, runs release last (it may reenter). */
static void destroy(gfl_fs_watcher *w)
{
    gfl_loop *loop = w->loop;
    gfl_release_fn release = w->release;
    void *ud = w->ud;
    (void)gfl_remove_reader(loop, w->fd);
    gfl__fswatch_os_close(w->fd);
    gfl__free(loop, w->path);
    gfl__free(loop, w);
    if (release)
        release(ud);
}

static void emit(void *ctx, const char *name, int kind)
{
    gfl_fs_watcher *w = ctx;
    if (!w->closed)
        w->callback(w, name, kind, w->ud);
}

static void on_readable(void *arg)
{
    gfl_fs_watcher *w = arg;
    w->dispatching = true;
    (void)gfl__fswatch_os_drain(w->fd, emit, w, &w->closed);
    w->dispatching = false;
    if (w->closed)
        destroy(w);
}

GFL_EXPORT int gfl_fs_watch(gfl_loop *loop, const char *path, unsigned flags, gfl_fs_watch_fn callback, void *ud,
                            gfl_release_fn release, gfl_fs_watcher **out)
{
    int rc = gfl__check_loop(loop);
    if (rc == GFL_OK && (!path || !*path || !callback || !out || flags != 0))
        rc = GFL_EINVAL;
    if (out)
        *out = NULL;
    gfl_fs_watcher *w = NULL;
    if (rc == GFL_OK) {
        w = gfl__calloc(loop, 1, sizeof *w);
        size_t n = strlen(path);
        char *copy = w ? gfl__alloc(loop, n + 1) : NULL;
        if (!copy) {
            gfl__free(loop, w);
            w = NULL;
            rc = GFL_ENOMEM;
        } else {
            memcpy(copy, path, n + 1);
            w->path = copy;
        }
    }
    if (rc == GFL_OK) {
        w->fd = gfl__fswatch_os_open(path);
        if (w->fd < 0)
            rc = w->fd;
        else if ((rc = gfl_add_reader(loop, w->fd, on_readable, w)) < 0)
            gfl__fswatch_os_close(w->fd);
    }
    if (rc < 0) {
        if (w) {
            gfl__free(loop, w->path);
            gfl__free(loop, w);
        }
        if (release)
            release(ud);
        return rc;
    }
    w->loop = loop;
    w->callback = callback;
    w->ud = ud;
    w->release = release;
    w->next = loop->fs_watchers;
    if (w->next)
        w->next->prev = w;
    loop->fs_watchers = w;
    *out = w;
    return GFL_OK;
}

GFL_EXPORT int gfl_fs_watch_close(gfl_fs_watcher *w)
{
    if (!w)
        return GFL_EINVAL;
    if (w->closed)
        return GFL_OK; /* closed inside its callback already */
    gfl_loop *loop = w->loop;
    if (!pthread_equal(loop->owner, pthread_self()))
        return GFL_EWRONGTHREAD;
    unlink_watcher(w);
    w->closed = true;
    if (!w->dispatching)
        destroy(w);
    return GFL_OK;
}

GFL_EXPORT const char *gfl_fs_watch_path(const gfl_fs_watcher *w)
{
    return w ? w->path : NULL;
}

void gfl__fswatch_close_all(gfl_loop *loop)
{
    while (loop->fs_watchers) {
        gfl_fs_watcher *w = loop->fs_watchers;
        unlink_watcher(w);
        w->closed = true;
        if (!w->dispatching)
            destroy(w);
    }
}
