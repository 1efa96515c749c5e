/*
 * DNS: getaddrinfo/getnameinfo in the loop's thread pool, results as host
 * objects of the core's own classes (gfl_addrinfo, gfl_nameinfo) so that any
 * host can read them. Numeric hosts and ports never leave the loop thread:
 * getaddrinfo(AI_NUMERICHOST|AI_NUMERICSERV) cannot block, so it is tried
 * first and the future is completed at once.
 *
 * These objects are loop-independent (made in pool threads, read anywhere),
 * so they use the C allocator and atomic reference counts, like values.
 */
#include "internal.h"

#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- gfl_addrinfo ---- */

static void ai_class_ref(void *o) { gfl_addrinfo_ref(o); }
static void ai_class_unref(void *o) { gfl_addrinfo_unref(o); }

static const gfl_host_class addrinfo_class = {
    .size = sizeof(gfl_host_class),
    .name = "globeflower.addrinfo",
    .ref = ai_class_ref,
    .unref = ai_class_unref,
};

GFL_EXPORT const gfl_host_class *gfl_addrinfo_class(void)
{
    return &addrinfo_class;
}

GFL_EXPORT gfl_addrinfo *gfl_addrinfo_new(void)
{
    gfl_addrinfo *ai = calloc(1, sizeof *ai);
    if (ai)
        atomic_init(&ai->refs, 1);
    return ai;
}

GFL_EXPORT int gfl_addrinfo_add(gfl_addrinfo *ai, int family, int socktype, int protocol, const void *addr, size_t addrlen)
{
    if (!ai || !addr || addrlen < sizeof(sa_family_t) || addrlen > sizeof(struct sockaddr_storage))
        return GFL_EINVAL;
    if (((const struct sockaddr *)addr)->sa_family != family)
        return GFL_EINVAL;
    if (ai->n == ai->cap) {
        int cap = ai->cap ? ai->cap * 2 : 4;
        struct gfl_addrinfo_entry *e = realloc(ai->e, (size_t)cap * sizeof *e);
        if (!e)
            return GFL_ENOMEM;
        ai->e = e;
        ai->cap = cap;
    }
    struct gfl_addrinfo_entry *e = &ai->e[ai->n++];
    memset(e, 0, sizeof *e);
    e->family = family;
    e->socktype = socktype;
    e->protocol = protocol;
    e->addrlen = (socklen_t)addrlen;
    memcpy(&e->addr, addr, addrlen);
    return GFL_OK;
}

GFL_EXPORT gfl_addrinfo *gfl_addrinfo_ref(gfl_addrinfo *ai)
{
    if (ai)
        atomic_fetch_add(&ai->refs, 1);
    return ai;
}

GFL_EXPORT void gfl_addrinfo_unref(gfl_addrinfo *ai)
{
    if (!ai || atomic_fetch_sub(&ai->refs, 1) != 1)
        return;
    free(ai->canonname);
    free(ai->e);
    free(ai);
}

GFL_EXPORT int gfl_addrinfo_count(const gfl_addrinfo *ai)
{
    return ai ? ai->n : GFL_EINVAL;
}

static const struct gfl_addrinfo_entry *entry(const gfl_addrinfo *ai, int i)
{
    return ai && i >= 0 && i < ai->n ? &ai->e[i] : NULL;
}

GFL_EXPORT int gfl_addrinfo_family(const gfl_addrinfo *ai, int i)
{
    const struct gfl_addrinfo_entry *e = entry(ai, i);
    return e ? e->family : GFL_EINVAL;
}

GFL_EXPORT int gfl_addrinfo_socktype(const gfl_addrinfo *ai, int i)
{
    const struct gfl_addrinfo_entry *e = entry(ai, i);
    return e ? e->socktype : GFL_EINVAL;
}

GFL_EXPORT int gfl_addrinfo_protocol(const gfl_addrinfo *ai, int i)
{
    const struct gfl_addrinfo_entry *e = entry(ai, i);
    return e ? e->protocol : GFL_EINVAL;
}

GFL_EXPORT const void *gfl_addrinfo_addr(const gfl_addrinfo *ai, int i, size_t *addrlen)
{
    const struct gfl_addrinfo_entry *e = entry(ai, i);
    if (!e)
        return NULL;
    if (addrlen)
        *addrlen = e->addrlen;
    return &e->addr;
}

GFL_EXPORT const char *gfl_addrinfo_canonname(const gfl_addrinfo *ai)
{
    return ai ? ai->canonname : NULL;
}

gfl_value *gfl__addrinfo_value(gfl_addrinfo *ai)
{
    gfl_value *v = gfl_value_object(&addrinfo_class, ai);
    gfl_addrinfo_unref(ai);
    return v;
}

/* ---- getaddrinfo ---- */

static gfl_value *gai_value(int rc)
{
    int code;
    switch (rc) {
    case EAI_SYSTEM: code = gfl__errno_code(errno); break;
    case EAI_MEMORY: code = GFL_ENOMEM; break;
    case EAI_AGAIN: code = GFL_EAGAIN; break;
    case EAI_FAMILY:
    case EAI_SOCKTYPE:
    case EAI_BADFLAGS: code = GFL_EINVAL; break;
    case EAI_NONAME:
    case EAI_SERVICE:
#ifdef EAI_NODATA
    case EAI_NODATA:
#endif
        code = GFL_ENOENT;
        break;
    default: code = GFL_EUNKNOWN; break;
    }
    char msg[160];
    snprintf(msg, sizeof msg, "[Errno %d] %s", rc, gai_strerror(rc));
    return gfl_value_error(code, "gaierror", msg, NULL);
}

/* The whole list as a value (or a gaierror value). */
static gfl_value *resolve(const char *host, const char *service, const struct addrinfo *hints)
{
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, service, hints, &res);
    if (rc != 0)
        return gai_value(rc);
    gfl_addrinfo *ai = gfl_addrinfo_new();
    if (!ai) {
        freeaddrinfo(res);
        return NULL;
    }
    for (struct addrinfo *p = res; p; p = p->ai_next) {
        if (p->ai_addrlen > sizeof(struct sockaddr_storage))
            continue;
        if (gfl_addrinfo_add(ai, p->ai_family, p->ai_socktype, p->ai_protocol, p->ai_addr, p->ai_addrlen) < 0) {
            freeaddrinfo(res);
            gfl_addrinfo_unref(ai);
            return NULL;
        }
        if (p == res && p->ai_canonname)
            ai->canonname = strdup(p->ai_canonname);
    }
    freeaddrinfo(res);
    return gfl__addrinfo_value(ai);
}

struct gai_job {
    struct addrinfo hints;
    char *host, *service;
};

static gfl_value *gai_work(void *arg)
{
    struct gai_job *j = arg;
    return resolve(j->host, j->service, &j->hints);
}

static void gai_release(void *arg)
{
    struct gai_job *j = arg;
    free(j->host);
    free(j->service);
    free(j);
}

static bool all_digits(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!isdigit((unsigned char)*s))
            return false;
    return true;
}

static gfl_future *done_future(gfl_loop *loop, gfl_value *v)
{
    gfl_future *f = gfl_future_new(loop);
    if (!f) {
        gfl_value_unref(v);
        return NULL;
    }
    if (!v)
        gfl__future_fail_value(f, NULL);
    else if (gfl_value_type_of(v) == GFL_VALUE_ERROR) {
        (void)gfl_future_set_error(f, v);
        gfl_value_unref(v);
    } else {
        (void)gfl_future_set_result(f, v);
        gfl_value_unref(v);
    }
    return f;
}

GFL_EXPORT gfl_future *gfl_getaddrinfo(gfl_loop *loop, const char *host, const char *service, int family, int socktype, int protocol, int flags)
{
    if (gfl__check_loop(loop) < 0 || (!host && !service))
        return NULL;
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = family;
    hints.ai_socktype = socktype;
    hints.ai_protocol = protocol;
    hints.ai_flags = flags;

    /* Every host's connect, bind and lookup comes through here. */
    if (gfl__port_out_of_range(service))
        return done_future(loop, gfl__port_error(service));

    if (!service || all_digits(service)) {
        struct addrinfo nh = hints;
        nh.ai_flags |= AI_NUMERICHOST | AI_NUMERICSERV;
        struct addrinfo *res = NULL;
        int rc = getaddrinfo(host, service, &nh, &res);
        if (rc == 0) {
            freeaddrinfo(res);
            return done_future(loop, resolve(host, service, &nh));
        }
        if (rc != EAI_NONAME)
            return done_future(loop, gai_value(rc));
        /* Not numeric: a real lookup, in the pool. */
    }

    struct gai_job *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    j->hints = hints;
    j->host = host ? strdup(host) : NULL;
    j->service = service ? strdup(service) : NULL;
    if ((host && !j->host) || (service && !j->service)) {
        gai_release(j);
        return NULL;
    }
    gfl_future *f = gfl_run_in_executor(loop, gai_work, j, gai_release);
    if (!f)
        gai_release(j);
    return f;
}

/* ---- getnameinfo ---- */

struct gfl_nameinfo {
    atomic_int refs;
    char host[NI_MAXHOST];
    char service[NI_MAXSERV];
};

static void ni_ref(void *o)
{
    atomic_fetch_add(&((gfl_nameinfo *)o)->refs, 1);
}

static void ni_unref(void *o)
{
    gfl_nameinfo *ni = o;
    if (atomic_fetch_sub(&ni->refs, 1) == 1)
        free(ni);
}

static const gfl_host_class nameinfo_class = {
    .size = sizeof(gfl_host_class),
    .name = "globeflower.nameinfo",
    .ref = ni_ref,
    .unref = ni_unref,
};

GFL_EXPORT const gfl_host_class *gfl_nameinfo_class(void)
{
    return &nameinfo_class;
}

GFL_EXPORT const char *gfl_nameinfo_host(const gfl_nameinfo *ni)
{
    return ni ? ni->host : NULL;
}

GFL_EXPORT const char *gfl_nameinfo_service(const gfl_nameinfo *ni)
{
    return ni ? ni->service : NULL;
}

struct gni_job {
    struct sockaddr_storage addr;
    socklen_t len;
    int flags;
};

static gfl_value *gni_run(const struct gni_job *j)
{
    gfl_nameinfo *ni = calloc(1, sizeof *ni);
    if (!ni)
        return NULL;
    atomic_init(&ni->refs, 1);
    int rc = getnameinfo((const struct sockaddr *)&j->addr, j->len, ni->host, sizeof ni->host, ni->service, sizeof ni->service, j->flags);
    if (rc != 0) {
        free(ni);
        return gai_value(rc);
    }
    gfl_value *v = gfl_value_object(&nameinfo_class, ni);
    ni_unref(ni);
    return v;
}

static gfl_value *gni_work(void *arg)
{
    return gni_run(arg);
}

GFL_EXPORT gfl_future *gfl_getnameinfo(gfl_loop *loop, const void *addr, size_t addrlen, int flags)
{
    if (gfl__check_loop(loop) < 0 || !addr || addrlen < sizeof(sa_family_t) || addrlen > sizeof(struct sockaddr_storage))
        return NULL;
    struct gni_job *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    memcpy(&j->addr, addr, addrlen);
    j->len = (socklen_t)addrlen;
    j->flags = flags;
    if ((flags & (NI_NUMERICHOST | NI_NUMERICSERV)) == (NI_NUMERICHOST | NI_NUMERICSERV)) {
        gfl_future *f = done_future(loop, gni_run(j)); /* cannot block */
        free(j);
        return f;
    }
    gfl_future *f = gfl_run_in_executor(loop, gni_work, j, free);
    if (!f)
        free(j);
    return f;
}
