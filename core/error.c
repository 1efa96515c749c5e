/*
 * gfl_strerror(): a static description of every GFL_E* code.
 */
#include "internal.h"

#include <string.h>

GFL_EXPORT const char *gfl_strerror(int code)
{
    switch (code) {
    case GFL_OK: return "success";
    case GFL_EPERM: return "operation not permitted";
    case GFL_ENOENT: return "no such entry";
    case GFL_EINTR: return "interrupted";
    case GFL_EIO: return "input/output error";
    case GFL_EBADF: return "bad file descriptor";
    case GFL_EAGAIN: return "resource temporarily unavailable";
    case GFL_ENOMEM: return "out of memory";
    case GFL_EACCES: return "permission denied";
    case GFL_EBUSY: return "resource busy";
    case GFL_EEXIST: return "already exists";
    case GFL_EINVAL: return "invalid argument";
    case GFL_EMFILE: return "too many open files";
    case GFL_EPIPE: return "broken pipe";
    case GFL_ERANGE: return "value out of range";
    case GFL_ENOSYS: return "not implemented";
    case GFL_EADDRINUSE: return "address already in use";
    case GFL_ECONNRESET: return "connection reset by peer";
    case GFL_ENOTCONN: return "not connected";
    case GFL_ETIMEDOUT: return "timed out";
    case GFL_ECONNREFUSED: return "connection refused";
    case GFL_EALREADY: return "operation already in progress";
    case GFL_EINPROGRESS: return "operation in progress";
    case GFL_ECANCELED: return "cancelled";
    case GFL_EUNKNOWN: return "unknown error";
    case GFL_ECLOSED: return "the loop or object is closed";
    case GFL_EWRONGTHREAD: return "called from a thread that does not own the loop";
    case GFL_ESTATE: return "not allowed in the current state";
    case GFL_EPENDING: return "the future is not done yet";
    case GFL_EVERSION: return "ABI version mismatch";
    case GFL_ETYPE: return "value of the wrong type";
    case GFL_ETLS: return "TLS error";
    case GFL_ETLSVERIFY: return "TLS certificate verification failed";
    default: break;
    }
    /* Transports pass other errnos through as -errno (ECONNABORTED, ...). */
    if (code < 0 && code > -4000) {
        const char *text = strerrordesc_np(-code);
        if (text)
            return text;
    }
    return "unknown error";
}
