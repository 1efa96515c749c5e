/*
 * The Linux facility behind fswatch.c: one inotify instance per watcher
 * (so each watcher is one pollable descriptor, and closing it drops its
 * watch with it).
 */
#include "internal.h"

#include <errno.h>
#include <stdalign.h>
#include <sys/inotify.h>
#include <unistd.h>

#define WATCH_MASK (IN_MODIFY | IN_ATTRIB | IN_CREATE | IN_DELETE | IN_DELETE_SELF | \
                    IN_MOVED_FROM | IN_MOVED_TO | IN_MOVE_SELF)

int gfl__fswatch_os_open(const char *path)
{
    int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd < 0)
        return gfl__errno_code(errno);
    if (inotify_add_watch(fd, path, WATCH_MASK) < 0) {
        int err = errno;
        close(fd);
        return gfl__errno_code(err);
    }
    return fd;
}

static int kind_of(uint32_t mask)
{
    if (mask & IN_CREATE)
        return GFL_FS_EVENT_CREATE;
    if (mask & (IN_DELETE | IN_DELETE_SELF))
        return GFL_FS_EVENT_DELETE;
    if (mask & (IN_MOVED_FROM | IN_MOVED_TO | IN_MOVE_SELF))
        return GFL_FS_EVENT_RENAME;
    if (mask & (IN_MODIFY | IN_ATTRIB | IN_Q_OVERFLOW))
        return GFL_FS_EVENT_CHANGE;
    return 0; /* IN_IGNORED (the watch went with its file), IN_UNMOUNT */
}

int gfl__fswatch_os_drain(int fd, gfl__fswatch_emit_fn emit, void *ctx, const bool *stop)
{
    alignas(struct inotify_event) char buf[16 * 1024];
    while (!*stop) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno == EAGAIN ? GFL_OK : gfl__errno_code(errno);
        if (n == 0)
            return GFL_OK;
        for (char *p = buf; p < buf + n && !*stop;) {
            const struct inotify_event *ev = (const struct inotify_event *)p;
            int kind = kind_of(ev->mask);
            if (kind)
                emit(ctx, ev->len > 0 && ev->name[0] ? ev->name : NULL, kind);
            p += sizeof *ev + ev->len;
        }
    }
    return GFL_OK;
}

void gfl__fswatch_os_close(int fd)
{
    if (fd >= 0)
        close(fd);
}
