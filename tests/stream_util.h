/*
 * Helpers shared by the stream tests: a recording protocol (optionally
 * echoing), factories, and loop drivers with deadlines.
 */
#ifndef GFL_TEST_STREAM_UTIL_H
#define GFL_TEST_STREAM_UTIL_H

#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "globeflower.h"

struct rec {
    gfl_transport *t;
    int made, eof, lost, paused, resumed;
    int lost_code; /* 0: connection_lost(NULL) */
    char lost_type[64];
    unsigned char *buf;
    size_t len, cap;
    bool echo;        /* write back what arrives */
    int keep_open;    /* eof_received's answer */
    bool pause_on_made;
    bool store;       /* keep the bytes (else only count them) */
    size_t max_wbuf;  /* largest write buffer seen from pause callbacks */
    /* buffered protocol */
    unsigned char bbuf[1000];
};

static inline void rec_made(gfl_transport *t, void *ud)
{
    struct rec *r = ud;
    r->t = t;
    r->made++;
    if (r->pause_on_made)
        cr_assert_eq(gfl_transport_pause_reading(t), 0);
}

static inline void rec_append(struct rec *r, const void *data, size_t len)
{
    if (r->store) {
        if (r->len + len > r->cap) {
            size_t cap = r->cap ? r->cap : 4096;
            while (cap < r->len + len)
                cap *= 2;
            r->buf = realloc(r->buf, cap);
            cr_assert_not_null(r->buf);
            r->cap = cap;
        }
        memcpy(r->buf + r->len, data, len);
    }
    r->len += len;
}

static inline void rec_data(gfl_transport *t, const void *data, size_t len, void *ud)
{
    struct rec *r = ud;
    rec_append(r, data, len);
    if (r->echo)
        cr_assert_eq(gfl_transport_write(t, data, len), 0);
}

static inline int rec_eof(gfl_transport *t, void *ud)
{
    struct rec *r = ud;
    (void)t;
    r->eof++;
    return r->keep_open;
}

static inline void rec_lost(gfl_transport *t, gfl_value *err, void *ud)
{
    struct rec *r = ud;
    cr_assert_eq(t, r->t ? r->t : t);
    r->lost++;
    if (err) {
        r->lost_code = gfl_value_error_code(err);
        snprintf(r->lost_type, sizeof r->lost_type, "%s", gfl_value_error_type(err));
    }
}

static inline void rec_pause(gfl_transport *t, void *ud)
{
    struct rec *r = ud;
    r->paused++;
    int64_t n = gfl_transport_get_write_buffer_size(t);
    if (n > 0 && (size_t)n > r->max_wbuf)
        r->max_wbuf = (size_t)n;
}

static inline void rec_resume(gfl_transport *t, void *ud)
{
    struct rec *r = ud;
    (void)t;
    r->resumed++;
}

static inline void *rec_get_buffer(gfl_transport *t, size_t hint, size_t *size, void *ud)
{
    struct rec *r = ud;
    (void)t;
    cr_assert_gt(hint, 0);
    *size = sizeof r->bbuf;
    return r->bbuf;
}

static inline void rec_buffer_updated(gfl_transport *t, size_t n, void *ud)
{
    struct rec *r = ud;
    cr_assert_leq(n, sizeof r->bbuf);
    rec_data(t, r->bbuf, n, ud);
}

static const gfl_protocol rec_protocol = {
    .size = sizeof(gfl_protocol),
    .connection_made = rec_made,
    .data_received = rec_data,
    .eof_received = rec_eof,
    .connection_lost = rec_lost,
    .pause_writing = rec_pause,
    .resume_writing = rec_resume,
};

static const gfl_protocol rec_buffered_protocol = {
    .size = sizeof(gfl_protocol),
    .connection_made = rec_made,
    .eof_received = rec_eof,
    .connection_lost = rec_lost,
    .pause_writing = rec_pause,
    .resume_writing = rec_resume,
    .get_buffer = rec_get_buffer,
    .buffer_updated = rec_buffer_updated,
};

/* A client factory: hands out the one struct rec passed as factory_ud. */
static inline int one_rec_factory(void *fud, gfl_transport *t, const gfl_protocol **p, void **ud)
{
    (void)t;
    *p = &rec_protocol;
    *ud = fud;
    return 0;
}

/* A server: every connection gets a new rec configured like `tmpl`. */
#define MAX_RECS 2048
struct srv {
    struct rec tmpl;
    const gfl_protocol *proto;
    struct rec *recs[MAX_RECS];
    int n;
    int released;
};

static inline int srv_factory(void *fud, gfl_transport *t, const gfl_protocol **p, void **ud)
{
    struct srv *s = fud;
    (void)t;
    cr_assert_lt(s->n, MAX_RECS);
    struct rec *r = calloc(1, sizeof *r);
    cr_assert_not_null(r);
    r->echo = s->tmpl.echo;
    r->keep_open = s->tmpl.keep_open;
    r->pause_on_made = s->tmpl.pause_on_made;
    r->store = s->tmpl.store;
    s->recs[s->n++] = r;
    *p = s->proto ? s->proto : &rec_protocol;
    *ud = r;
    return 0;
}

static inline void srv_release(void *fud)
{
    ((struct srv *)fud)->released++;
}

static inline void srv_free(struct srv *s)
{
    for (int i = 0; i < s->n; i++) {
        free(s->recs[i]->buf);
        free(s->recs[i]);
    }
    s->n = 0;
}

static inline double now_s(void);
static inline int gfl_test_all_lost(const struct srv *s)
{
    for (int i = 0; i < s->n; i++)
        if (s->recs[i]->lost != 1)
            return 0;
    return 1;
}

static inline double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Runs the loop until *flag becomes true (or `cond` holds); fails after
 * `timeout` seconds. */
#define RUN_UNTIL(loop, cond, timeout)                                          \
    do {                                                                        \
        double _deadline = now_s() + (timeout);                                 \
        while (!(cond)) {                                                       \
            cr_assert_lt(now_s(), _deadline, "timed out waiting for " #cond);   \
            cr_assert_geq(gfl_loop_run_once((loop), 0.05), 0);                  \
        }                                                                       \
    } while (0)

static inline bool future_done(gfl_future *f)
{
    return gfl_future_state_of(f) != GFL_FUTURE_PENDING;
}

/* Waits for a future resolving to an object of `cls`; returns it (borrowed
 * from the future's value). */
static inline void *await_object(gfl_loop *loop, gfl_future *f, const gfl_host_class *cls)
{
    cr_assert_not_null(f);
    RUN_UNTIL(loop, future_done(f), 10);
    gfl_value *v = gfl_future_value(f);
    cr_assert_eq(gfl_future_state_of(f), GFL_FUTURE_RESULT, "future failed: %s: %s",
                 gfl_value_error_type(v) ? gfl_value_error_type(v) : "?",
                 gfl_value_error_message(v) ? gfl_value_error_message(v) : "?");
    void *obj = NULL;
    cr_assert_eq(gfl_value_get_object(v, cls, &obj), 0);
    return obj;
}

/* Waits until every connection the server accepted has been lost (so
 * that no protocol callback can reach a freed rec), then frees them. */
static inline void srv_finish(gfl_loop *loop, struct srv *s)
{
    RUN_UNTIL(loop, gfl_test_all_lost(s), 10);
    srv_free(s);
}

/* A TCP echo-style server on 127.0.0.1, port chosen by the kernel. */
static inline gfl_server *start_server(gfl_loop *loop, struct srv *s, const char *host, int *port)
{
    const char *hosts[] = {host ? host : "127.0.0.1", NULL};
    gfl_server_options so = {.size = sizeof so, .hosts = hosts, .port = "0"};
    gfl_future *f = gfl_create_server(loop, srv_factory, s, srv_release, &so);
    gfl_server *server = gfl_server_ref(await_object(loop, f, gfl_server_class()));
    gfl_future_unref(f);
    struct sockaddr_storage ss;
    size_t len = sizeof ss;
    cr_assert_eq(gfl_server_get_sockaddr(server, 0, &ss, &len), 0);
    *port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port : ((struct sockaddr_in6 *)&ss)->sin6_port);
    return server;
}

static inline gfl_transport *connect_to(gfl_loop *loop, struct rec *r, const char *host, int port)
{
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    gfl_connect_options co = {.size = sizeof co, .host = host, .port = ps};
    gfl_future *f = gfl_create_connection(loop, one_rec_factory, r, NULL, &co);
    gfl_transport *t = gfl_transport_ref(await_object(loop, f, gfl_transport_class()));
    gfl_future_unref(f);
    cr_assert_eq(r->made, 1);
    return t;
}

static inline int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    cr_assert_not_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the DIR's own fd */
}

/* Caller-owned memory for option structs and everything they point to
 * (strings, arrays), to check that the core copies what it keeps. The
 * block is scribbled over and then made inaccessible right after the call,
 * before the loop runs: like freeing it, except that any later access by
 * the core faults at once, in every run (not only under valgrind, which
 * reports it too, with the stack of the read). */
#include <sys/mman.h>

struct scratch {
    char *base;
    size_t used, cap;
};

static inline struct scratch scratch_new(void)
{
    struct scratch m = {.cap = 16384};
    void *p = mmap(NULL, m.cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(p, MAP_FAILED);
    m.base = p;
    return m;
}

static inline void *scratch_alloc(struct scratch *m, size_t n)
{
    size_t at = (m->used + 15) & ~(size_t)15;
    cr_assert_leq(at + n, m->cap, "scratch block too small");
    m->used = at + n;
    memset(m->base + at, 0, n);
    return m->base + at;
}

static inline const char *scratch_str(struct scratch *m, const char *text)
{
    size_t n = strlen(text) + 1;
    char *p = scratch_alloc(m, n);
    memcpy(p, text, n);
    return p;
}

/* A NULL-terminated copy of `list` (NULL-terminated too). */
static inline const char *const *scratch_strv(struct scratch *m, const char *const *list)
{
    size_t n = 0;
    while (list[n])
        n++;
    const char **v = scratch_alloc(m, (n + 1) * sizeof *v);
    for (size_t i = 0; i < n; i++)
        v[i] = scratch_str(m, list[i]);
    v[n] = NULL;
    return v;
}

/* An old caller's options struct: only its `size` field (set to
 * sizeof(size_t)), placed right before an inaccessible page, so that
 * reading any later field faults. Returned as void * for any options type;
 * the pages stay reserved until the test process ends. */
static inline void *short_options(void)
{
    long page = sysconf(_SC_PAGESIZE);
    char *p = mmap(NULL, (size_t)page * 2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq((void *)p, MAP_FAILED);
    cr_assert_eq(mprotect(p + page, (size_t)page, PROT_NONE), 0);
    size_t *size = (size_t *)(void *)(p + page - sizeof(size_t));
    *size = sizeof(size_t);
    return size;
}

/* "Frees" the block: scribbled, then no access at all. The pages stay
 * reserved (never handed out again) until the test process ends. */
static inline void scratch_free(struct scratch *m)
{
    memset(m->base, 0xa5, m->cap);
    cr_assert_eq(mprotect(m->base, m->cap, PROT_NONE), 0);
    m->base = NULL;
}

#endif
