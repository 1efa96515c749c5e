/*
 * Unix stream sockets: clients go through the connector of tcp.c with one
 * AF_UNIX address; servers are ordinary gfl_servers on one socket. Names
 * starting with '\0' are in Linux's abstract namespace (no file).
 */
#include "internal.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* Fills *sun from (path, len); 0 or GFL_EINVAL. */
static int make_addr(const char *path, size_t len, struct sockaddr_un *sun, socklen_t *sl)
{
    if (!path)
        return GFL_EINVAL;
    if (len == 0)
        len = strlen(path);
    if (len == 0)
        return GFL_EINVAL;
    bool abstract = path[0] == '\0';
    /* A pathname needs room for its NUL; an abstract name is exact. */
    if (len > sizeof sun->sun_path - (abstract ? 0 : 1))
        return GFL_EINVAL;
    if (!abstract && memchr(path, '\0', len))
        return GFL_EINVAL;
    memset(sun, 0, sizeof *sun);
    sun->sun_family = AF_UNIX;
    memcpy(sun->sun_path, path, len);
    *sl = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + (abstract ? 0 : 1));
    return GFL_OK;
}

GFL_EXPORT gfl_future *gfl_create_unix_connection(gfl_loop *loop, gfl_protocol_factory factory, void *factory_ud, gfl_release_fn factory_release, const char *path, size_t path_len)
{
    struct sockaddr_un sun;
    socklen_t sl;
    if (gfl__check_loop(loop) < 0 || !factory || make_addr(path, path_len, &sun, &sl) < 0)
        return NULL;
    gfl_addrinfo *ai = gfl_addrinfo_new();
    if (!ai || gfl_addrinfo_add(ai, AF_UNIX, SOCK_STREAM, 0, &sun, sl) < 0) {
        gfl_addrinfo_unref(ai);
        return NULL;
    }
    gfl_future *f = gfl__connect(loop, factory, factory_ud, factory_release, NULL, ai);
    gfl_addrinfo_unref(ai);
    return f;
}

GFL_EXPORT gfl_future *gfl_create_unix_server(gfl_loop *loop, gfl_protocol_factory factory, void *factory_ud, gfl_release_fn factory_release, const char *path, size_t path_len, const gfl_server_options *opts)
{
    struct sockaddr_un sun;
    socklen_t sl;
    if (gfl__check_loop(loop) < 0 || !factory || make_addr(path, path_len, &sun, &sl) < 0)
        return NULL;
    /* Only the fields the caller's struct has (of its size) are read. */
    if (opts && (opts->size < sizeof(size_t) ||
                 (opts->size >= offsetof(gfl_server_options, backlog) + sizeof opts->backlog && opts->backlog < 0)))
        return NULL;
    gfl_future *f = gfl_future_new(loop);
    if (!f)
        return NULL;
    bool abstract = sun.sun_path[0] == '\0';
    struct stat st;
    /* asyncio removes a stale socket file (never anything else). */
    if (!abstract && stat(sun.sun_path, &st) == 0 && S_ISSOCK(st.st_mode))
        (void)unlink(sun.sun_path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        gfl__future_fail_errno(f, errno, "socket");
        if (factory_release)
            factory_release(factory_ud);
        return f;
    }
    gfl_server *s = gfl__server_new(loop, factory, factory_ud, NULL, opts);
    if (!s) {
        close(fd);
        gfl_future_unref(f);
        return NULL;
    }
    int err = 0;
    if (bind(fd, (struct sockaddr *)&sun, sl) < 0 || listen(fd, gfl__server_backlog(s)) < 0)
        err = errno;
    else if (gfl__server_add_socket(s, fd) < 0)
        err = ENOMEM;
    if (err) {
        close(fd);
        gfl__future_fail_errno(f, err, "error while attempting to bind on the Unix socket");
        gfl_server_close(s);
        gfl_server_unref(s);
        if (factory_release)
            factory_release(factory_ud);
        return f;
    }
    if (!abstract && gfl__server_set_unlink(s, sun.sun_path) < 0) {
        gfl__future_fail_errno(f, ENOMEM, NULL);
        gfl_server_close(s);
        gfl_server_unref(s);
        if (factory_release)
            factory_release(factory_ud);
        return f;
    }
    gfl__server_own_release(s, factory_release);
    gfl_value *v = gfl_value_object(gfl_server_class(), s);
    if (v)
        (void)gfl_future_set_result(f, v);
    else
        gfl__future_fail_errno(f, ENOMEM, NULL);
    gfl_value_unref(v);
    gfl_server_unref(s);
    return f;
}
