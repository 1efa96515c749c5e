/*
 * Pipes: transports on the read or the write end of an existing fd (a
 * pipe, FIFO, socket or character device), as asyncio's
 * connect_read_pipe / connect_write_pipe. The fd stream layer of
 * transport.c does the work; this file only checks and prepares the fd.
 */
#include "internal.h"

#include <sys/stat.h>

static gfl_future *open_pipe(gfl_loop *loop, gfl_protocol_factory factory, void *fud, gfl_release_fn frel, int fd, enum gfl_fd_kind kind)
{
    struct stat st;
    if (gfl__check_loop(loop) < 0 || !factory || fd < 0 || fstat(fd, &st) < 0)
        return NULL;
    /* epoll cannot watch regular files (asyncio refuses them too). */
    if (!S_ISFIFO(st.st_mode) && !S_ISSOCK(st.st_mode) && !S_ISCHR(st.st_mode))
        return NULL;
    if (gfl__fd_prepare(fd) < 0)
        return NULL;
    return gfl__fd_transport_open(loop, fd, kind, factory, fud, frel);
}

GFL_EXPORT gfl_future *gfl_connect_read_pipe(gfl_loop *loop, gfl_protocol_factory factory, void *factory_ud, gfl_release_fn factory_release, int fd)
{
    return open_pipe(loop, factory, factory_ud, factory_release, fd, GFL_FD_READ_PIPE);
}

GFL_EXPORT gfl_future *gfl_connect_write_pipe(gfl_loop *loop, gfl_protocol_factory factory, void *factory_ud, gfl_release_fn factory_release, int fd)
{
    return open_pipe(loop, factory, factory_ud, factory_release, fd, GFL_FD_WRITE_PIPE);
}
