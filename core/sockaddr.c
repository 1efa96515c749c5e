/*
 * Small helpers shared by the stream files: errno -> GFL code and Python
 * OSError type names, fd preparation, printable socket addresses.
 */
#include "internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>

int gfl__errno_code(int err)
{
    /* errno values are small positive ints; ours start at 4000. */
    if (err <= 0 || err >= 4000)
        return GFL_EIO;
    return -err;
}

/* The names asyncio code catches (Python maps errno to these subclasses). */
const char *gfl__errno_type(int err)
{
    switch (err) {
    case ECONNREFUSED: return "ConnectionRefusedError";
    case ECONNRESET: return "ConnectionResetError";
    case ECONNABORTED: return "ConnectionAbortedError";
    case EPIPE:
    case ESHUTDOWN: return "BrokenPipeError";
    case ETIMEDOUT: return "TimeoutError";
    case ENOENT: return "FileNotFoundError";
    case EEXIST: return "FileExistsError";
    case ENOTDIR: return "NotADirectoryError";
    case EISDIR: return "IsADirectoryError";
    case EACCES:
    case EPERM: return "PermissionError";
    case EAGAIN: return "BlockingIOError";
    case EINTR: return "InterruptedError";
    default: return "OSError";
    }
}

gfl_value *gfl__os_error(int err, const char *what)
{
    char msg[256];
    if (what)
        snprintf(msg, sizeof msg, "[Errno %d] %s: %s", err, what, strerror(err));
    else
        snprintf(msg, sizeof msg, "[Errno %d] %s", err, strerror(err));
    return gfl_value_error(gfl__errno_code(err), gfl__errno_type(err), msg, NULL);
}

int gfl__fd_prepare(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        return gfl__errno_code(errno);
    if (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return gfl__errno_code(errno);
    int fdfl = fcntl(fd, F_GETFD);
    if (fdfl < 0)
        return gfl__errno_code(errno);
    if (!(fdfl & FD_CLOEXEC) && fcntl(fd, F_SETFD, fdfl | FD_CLOEXEC) < 0)
        return gfl__errno_code(errno);
    return GFL_OK;
}

int gfl__sockaddr_format(const struct sockaddr *sa, socklen_t len, char *buf, size_t size)
{
    char host[INET6_ADDRSTRLEN];
    if (!sa || size == 0)
        return GFL_EINVAL;
    if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        snprintf(buf, size, "%s:%u", host, (unsigned)ntohs(in->sin_port));
        return GFL_OK;
    }
    if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        if (in6->sin6_scope_id)
            snprintf(buf, size, "[%s%%%u]:%u", host, (unsigned)in6->sin6_scope_id, (unsigned)ntohs(in6->sin6_port));
        else
            snprintf(buf, size, "[%s]:%u", host, (unsigned)ntohs(in6->sin6_port));
        return GFL_OK;
    }
    return GFL_EINVAL;
}

void gfl__future_fail_value(gfl_future *f, gfl_value *err)
{
    if (!err)
        err = gfl_value_error(GFL_ENOMEM, "MemoryError", NULL, NULL);
    if (err && gfl_future_state_of(f) == GFL_FUTURE_PENDING)
        (void)gfl_future_set_error(f, err);
    gfl_value_unref(err);
}

void gfl__future_fail_errno(gfl_future *f, int err, const char *what)
{
    gfl__future_fail_value(f, gfl__os_error(err, what));
}

/* glibc's getaddrinfo takes a numeric service above 65535 modulo 65536
 * (99999 would listen on 34463), so a numeric port is checked here. */
bool gfl__port_out_of_range(const char *service)
{
    if (!service || !*service)
        return false;
    unsigned long port = 0;
    for (const char *p = service; *p; p++) {
        if (*p < '0' || *p > '9')
            return false; /* a service name: getaddrinfo's to judge */
        port = port * 10 + (unsigned long)(*p - '0');
        if (port > 65535)
            return true;
    }
    return false;
}

gfl_value *gfl__port_error(const char *service)
{
    char msg[96];
    snprintf(msg, sizeof msg, "port must be 0-65535 (got %.20s%s)", service, strlen(service) > 20 ? "..." : "");
    /* What Python's socket module raises for such a port. */
    return gfl_value_error(GFL_EINVAL, "OverflowError", msg, NULL);
}
