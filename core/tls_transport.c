/*
 * The TLS layer: a gfl_transport whose bytes go through an OpenSSL engine
 * on memory BIOs and then to another transport (the "raw" stream), as
 * asyncio's sslproto does. The layer installs itself as the raw stream's
 * protocol; the user's protocol sees only the TLS transport.
 *
 *   raw data_received -> BIO_write(rbio) -> SSL_do_handshake / SSL_read
 *        -> user data_received;   output: BIO_get_mem_data(wbio) -> raw write
 *   user write -> SSL_write (or the backlog until the handshake is done)
 *
 * States: HANDSHAKE -> WRAPPED -> SHUTDOWN (close_notify sent, waiting for
 * the peer's, bounded by the shutdown timeout) -> DONE. The user's protocol
 * is attached after the handshake (factory, then connection_made), except
 * for start_tls, where it is live from the start.
 *
 * Flow control: the raw stream's limits are set to 0/0 so that it reports
 * every time its buffer drains completely (resume_writing); our own
 * pause/resume use the TLS transport's limits on backlog + raw buffer.
 * Reading: pausing the TLS transport pauses the raw stream; what was
 * already received stays in the BIO and is delivered on resume.
 */
#include "internal.h"
#include "tls.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>

#define DEFAULT_HANDSHAKE_TIMEOUT 60.0
#define DEFAULT_SHUTDOWN_TIMEOUT 30.0
#define WRITE_CHUNK (64u * 1024u) /* plaintext per SSL_write: bounds the wbio */
#define GATHER_MAX 16384u         /* small writev parts are joined into one record */

enum tls_state { ST_HANDSHAKE, ST_WRAPPED, ST_SHUTDOWN, ST_DONE };

struct tls_transport {
    struct gfl_transport base;
    gfl_transport *raw; /* reference held until teardown */
    struct gfl_tls_origin *org;
    gfl_tls_context *ctx;
    SSL *ssl;
    BIO *rbio, *wbio; /* owned by ssl */
    enum tls_state state;
    bool installed;    /* raw's protocol is ours: detach it at teardown */
    bool raw_lost;     /* raw's connection_lost ran */
    bool app_live;     /* the user's protocol is attached */
    bool upgrade;      /* made by gfl_start_tls */
    bool peer_eof;     /* raw EOF (with or without close_notify) */
    bool eof_reported; /* the user saw eof_received */
    bool clean_close;  /* close_notify done: the stream's end is no error */
    gfl_future *upgrade_future;
    gfl_handle hs_timer, sd_timer, resume_handle;
    double hs_timeout, sd_timeout;
    char *server_hostname;
    char *session_key;
    unsigned char *backlog; /* plaintext waiting for the handshake */
    size_t boff, blen, bcap;
};

#define TT(t) ((struct tls_transport *)(t))

/* Empties this thread's OpenSSL error queue before an SSL call (so that
 * SSL_get_error sees only that call's errors, and no error passes from one
 * connection to the next). Peeking first: clearing walks the whole queue
 * even when it is empty, which is the usual case. */
static inline void clear_errors(void)
{
    if (ERR_peek_error() != 0)
        ERR_clear_error();
}

static void read_app(struct tls_transport *tt);
static void read_stopped(struct tls_transport *tt, int e);
static void try_shutdown(struct tls_transport *tt);

/* An inert protocol for a raw stream we let go of. */
static const gfl_protocol inert_protocol = {.size = sizeof(gfl_protocol)};

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */

static char *dup_str(gfl_loop *loop, const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *p = gfl__alloc(loop, n);
    if (p)
        memcpy(p, s, n);
    return p;
}

static void cancel_handle(gfl_loop *loop, gfl_handle *h)
{
    if (*h > 0)
        (void)gfl_handle_cancel(loop, *h);
    *h = 0;
}

static bool raw_usable(struct tls_transport *tt)
{
    return tt->raw && !tt->raw_lost && !tt->raw->lost;
}

/* Sends what the engine produced (records, alerts) to the raw stream. */
static void flush_out(struct tls_transport *tt)
{
    char *p = NULL;
    long n = BIO_get_mem_data(tt->wbio, &p);
    if (n <= 0)
        return;
    if (raw_usable(tt))
        (void)gfl_transport_write(tt->raw, p, (size_t)n); /* a failure reaches raw_lost */
    /* Consumed by moving the read position past it: BIO_reset would zero
     * the whole buffer (its allocated size) every time. The next write to
     * the BIO starts at the front of the buffer again. */
    int off = BIO_tell(tt->wbio);
    if (off < 0 || BIO_seek(tt->wbio, off + n) < 0)
        (void)BIO_reset(tt->wbio);
}

static size_t backlog_size(const struct tls_transport *tt)
{
    return tt->blen - tt->boff;
}

static int64_t tls_write_buffer_size(gfl_transport *t)
{
    struct tls_transport *tt = TT(t);
    int64_t n = (int64_t)backlog_size(tt);
    if (raw_usable(tt)) {
        int64_t r = gfl_transport_get_write_buffer_size(tt->raw);
        if (r > 0)
            n += r;
    }
    return n;
}

static int backlog_append(struct tls_transport *tt, const void *p, size_t len)
{
    if (len == 0)
        return GFL_OK;
    if (tt->boff > 0 && tt->boff == tt->blen)
        tt->boff = tt->blen = 0;
    if (tt->blen + len > tt->bcap) {
        size_t cap = tt->bcap ? tt->bcap : 4096;
        while (cap < tt->blen + len)
            cap *= 2;
        unsigned char *b = gfl__realloc(tt->base.loop, tt->backlog, cap);
        if (!b)
            return GFL_ENOMEM;
        tt->backlog = b;
        tt->bcap = cap;
    }
    memcpy(tt->backlog + tt->blen, p, len);
    tt->blen += len;
    return GFL_OK;
}

/* ------------------------------------------------------------------ */
/* Endings                                                             */

static gfl_value *conn_reset_during_handshake(void)
{
    return gfl_value_error(GFL_ECONNRESET, "ConnectionResetError", "Connection lost during SSL handshake", NULL);
}

static gfl_value *aborted_in_handshake(void)
{
    return gfl_value_error(gfl__errno_code(ECONNABORTED), "ConnectionAbortedError", "the transport was closed during the SSL handshake", NULL);
}

/* A TLS transport that never reached the user: drop it (no callbacks). */
static void discard(struct tls_transport *tt)
{
    tt->state = ST_DONE;
    gfl__transport_discard(&tt->base);
}

/* The handshake failed (or was cancelled / timed out): `err` consumed. */
static void handshake_failed(struct tls_transport *tt, gfl_value *err, bool abort_raw)
{
    gfl_loop *loop = tt->base.loop;
    if (!err)
        err = gfl_value_error(GFL_ENOMEM, "MemoryError", NULL, NULL);
    tt->state = ST_DONE;
    cancel_handle(loop, &tt->hs_timer);
    /* Let the peer see our alert, if any, then close the stream. */
    flush_out(tt);
    if (raw_usable(tt))
        (void)(abort_raw ? gfl_transport_abort(tt->raw) : gfl_transport_close(tt->raw));
    if (tt->upgrade) {
        /* start_tls: the protocol is live; it learns through
         * connection_lost, the caller through the future. */
        gfl_future *f = tt->upgrade_future;
        tt->upgrade_future = NULL;
        if (f) {
            gfl__future_fail_value(f, gfl_value_ref(err));
            gfl_future_unref(f);
        }
        gfl__transport_lost(&tt->base, err);
        gfl_value_unref(err);
        return;
    }
    struct gfl_tls_origin *org = tt->org;
    if (!org->server) {
        if (org->handshaking == &tt->base)
            org->handshaking = NULL;
        if (org->future)
            gfl__future_fail_value(org->future, gfl_value_ref(err));
    } else if (gfl_loop_get_debug(loop) == 1 && !loop->closed) {
        (void)gfl_loop_call_exception_handler(loop, "SSL handshake failed", err);
    }
    gfl_value_unref(err);
    discard(tt);
}

/* A failure after the handshake: `err` consumed. */
static void fatal(struct tls_transport *tt, gfl_value *err)
{
    if (tt->state == ST_HANDSHAKE) {
        handshake_failed(tt, err, false);
        return;
    }
    tt->state = ST_DONE;
    cancel_handle(tt->base.loop, &tt->sd_timer);
    flush_out(tt);
    if (raw_usable(tt))
        (void)gfl_transport_close(tt->raw);
    gfl__transport_lost(&tt->base, err);
    gfl_value_unref(err);
}

/* close_notify exchanged (or the peer is gone): close the stream; its
 * connection_lost ends ours. */
static void shutdown_done(struct tls_transport *tt)
{
    tt->state = ST_DONE;
    tt->clean_close = true;
    cancel_handle(tt->base.loop, &tt->sd_timer);
    flush_out(tt);
    if (raw_usable(tt))
        (void)gfl_transport_close(tt->raw);
    else
        gfl__transport_lost(&tt->base, NULL);
}

static void on_shutdown_timeout(void *arg)
{
    struct tls_transport *tt = arg;
    tt->sd_timer = 0;
    if (tt->state != ST_SHUTDOWN)
        return;
    tt->state = ST_DONE;
    if (raw_usable(tt))
        (void)gfl_transport_abort(tt->raw);
    gfl_value *e = gfl_value_error(GFL_ETIMEDOUT, "TimeoutError", "SSL shutdown timed out", NULL);
    gfl__transport_lost(&tt->base, e);
    gfl_value_unref(e);
}

/* close(): send close_notify once the backlog is out. */
static void begin_shutdown(struct tls_transport *tt)
{
    tt->state = ST_SHUTDOWN;
    gfl_handle h = gfl_call_later(tt->base.loop, tt->sd_timeout, on_shutdown_timeout, tt);
    tt->sd_timer = h > 0 ? h : 0;
    try_shutdown(tt);
}

static void try_shutdown(struct tls_transport *tt)
{
    if (tt->state != ST_SHUTDOWN || backlog_size(tt) > 0)
        return; /* the backlog goes first (after the handshake / a read) */
    clear_errors();
    int r = SSL_shutdown(tt->ssl);
    flush_out(tt);
    if (r == 1 || tt->peer_eof) {
        shutdown_done(tt);
        return;
    }
    if (r < 0 && SSL_get_error(tt->ssl, r) != SSL_ERROR_WANT_READ) {
        clear_errors();
        shutdown_done(tt); /* nothing more to say to this peer */
    }
    /* r == 0: ours is sent; the peer's arrives through drain_shutdown. */
}

/* SHUTDOWN: read (and drop) what the peer still sends, up to its
 * close_notify. */
static void drain_shutdown(struct tls_transport *tt)
{
    char *buf = gfl__streams_rbuf(tt->base.loop);
    if (!buf) {
        shutdown_done(tt);
        return;
    }
    for (;;) {
        size_t n = 0;
        clear_errors();
        if (SSL_read_ex(tt->ssl, buf, GFL__RBUF_SIZE, &n))
            continue;
        int e = SSL_get_error(tt->ssl, 0);
        if (e == SSL_ERROR_WANT_READ) {
            flush_out(tt);
            if (tt->peer_eof)
                shutdown_done(tt);
            return;
        }
        clear_errors();
        if (e == SSL_ERROR_ZERO_RETURN) {
            (void)SSL_shutdown(tt->ssl); /* both sides done: returns 1 */
            clear_errors();
        }
        shutdown_done(tt);
        return;
    }
}

/* The peer ended its side (close_notify, or a plain EOF of the stream):
 * eof_received (its answer cannot keep a TLS transport half-open, as in
 * asyncio), then our close_notify and the close. */
static void peer_closed(struct tls_transport *tt)
{
    gfl_transport *t = &tt->base;
    if (!tt->eof_reported && tt->app_live && t->made && !t->lost_scheduled) {
        tt->eof_reported = true;
        if (t->proto_user && t->proto.eof_received)
            (void)t->proto.eof_received(t, t->ud);
    }
    if (tt->state != ST_WRAPPED || t->lost_scheduled || t->lost)
        return;
    t->closing = true;
    begin_shutdown(tt);
}

/* ------------------------------------------------------------------ */
/* Writing                                                             */

/* Encrypts p[len]; *done is what SSL took (less than len only when the
 * engine needs to read first). GFL_OK, or an error (the transport is lost). */
static int encrypt(struct tls_transport *tt, const unsigned char *p, size_t len, size_t *done)
{
    *done = 0;
    while (*done < len) {
        size_t n = len - *done < WRITE_CHUNK ? len - *done : WRITE_CHUNK;
        size_t w = 0;
        clear_errors();
        if (SSL_write_ex(tt->ssl, p + *done, n, &w)) {
            *done += w;
            flush_out(tt);
            continue;
        }
        int e = SSL_get_error(tt->ssl, 0);
        flush_out(tt);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
            return GFL_OK;
        fatal(tt, gfl__tls_error(tt->ssl, e, tt->server_hostname));
        return GFL_ETLS;
    }
    return GFL_OK;
}

static void check_pause(struct tls_transport *tt)
{
    int64_t size = tls_write_buffer_size(&tt->base);
    gfl__transport_maybe_pause(&tt->base, (size_t)size);
}

/* Encrypts the backlog (after the handshake, or after a read unblocked
 * the engine). */
static void flush_backlog(struct tls_transport *tt)
{
    if (backlog_size(tt) == 0 || (tt->state != ST_WRAPPED && tt->state != ST_SHUTDOWN))
        return;
    size_t done = 0;
    if (encrypt(tt, tt->backlog + tt->boff, backlog_size(tt), &done) < 0)
        return;
    tt->boff += done;
    if (tt->boff == tt->blen)
        tt->boff = tt->blen = 0;
    gfl__transport_maybe_resume(&tt->base, (size_t)tls_write_buffer_size(&tt->base));
}

static int tls_writev(gfl_transport *t, const gfl_iovec *iov, int iovcnt, size_t total)
{
    struct tls_transport *tt = TT(t);
    int i = 0;
    size_t done = 0;
    if (tt->state == ST_WRAPPED && backlog_size(tt) == 0) {
        if (iovcnt > 1 && total <= GATHER_MAX) {
            /* One record for a small gather-write. */
            unsigned char buf[GATHER_MAX];
            size_t off = 0;
            for (int k = 0; k < iovcnt; k++) {
                memcpy(buf + off, iov[k].base, iov[k].len);
                off += iov[k].len;
            }
            int rc = encrypt(tt, buf, total, &done);
            if (rc < 0)
                return rc;
            if (done < total) {
                rc = backlog_append(tt, buf + done, total - done);
                if (rc < 0)
                    return rc;
            }
            check_pause(tt);
            return GFL_OK;
        }
        for (; i < iovcnt; i++) {
            int rc = encrypt(tt, iov[i].base, iov[i].len, &done);
            if (rc < 0)
                return rc;
            if (done < iov[i].len)
                break;
        }
        if (i == iovcnt) {
            check_pause(tt);
            return GFL_OK;
        }
    }
    /* Not wrapped yet, or the engine is blocked: keep the rest. */
    for (; i < iovcnt; i++) {
        int rc = backlog_append(tt, (const char *)iov[i].base + done, iov[i].len - done);
        if (rc < 0)
            return rc;
        done = 0;
    }
    check_pause(tt);
    return GFL_OK;
}

/* ------------------------------------------------------------------ */
/* Reading                                                             */

/* Decrypts and delivers application data while the protocol reads. */
static void read_app(struct tls_transport *tt)
{
    gfl_transport *t = &tt->base;
    while (tt->state == ST_WRAPPED && tt->app_live && t->made && t->reading && !t->closing && !t->lost_scheduled && !t->lost) {
        size_t n = 0;
        int ok;
        clear_errors();
        if (t->proto.get_buffer) {
            /* Peek first so that get_buffer is only asked when data is there. */
            unsigned char probe;
            ok = SSL_peek_ex(tt->ssl, &probe, 1, &n);
            if (ok) {
                size_t size = 0;
                size_t hint = (size_t)SSL_pending(tt->ssl);
                void *buf = t->proto.get_buffer(t, hint ? hint : 1, &size, t->ud);
                if (t->lost_scheduled || t->closing || !t->reading)
                    break;
                if (!buf || size == 0) {
                    fatal(tt, gfl_value_error(GFL_EINVAL, "RuntimeError", "get_buffer() returned an empty buffer", NULL));
                    break;
                }
                ok = SSL_read_ex(tt->ssl, buf, size, &n);
                if (ok) {
                    if (t->proto.buffer_updated)
                        t->proto.buffer_updated(t, n, t->ud);
                    continue;
                }
            }
        } else {
            /* Gather several records into the loop's read buffer: one
             * data_received for what arrived together. */
            char *buf = gfl__streams_rbuf(t->loop);
            if (!buf) {
                fatal(tt, gfl_value_error(GFL_ENOMEM, "MemoryError", NULL, NULL));
                break;
            }
            size_t off = 0;
            ok = 1;
            while (off < GFL__RBUF_SIZE && (ok = SSL_read_ex(tt->ssl, buf + off, GFL__RBUF_SIZE - off, &n)))
                off += n;
            /* The reason must be taken before the protocol runs (its
             * writes change the engine's last-call state). */
            int e = ok ? SSL_ERROR_NONE : SSL_get_error(tt->ssl, 0);
            if (off > 0) {
                if (t->proto.data_received)
                    t->proto.data_received(t, buf, off, t->ud);
                if (ok)
                    continue; /* the buffer was full: there may be more */
                if (t->lost_scheduled || t->closing || tt->state != ST_WRAPPED || !t->reading)
                    break; /* a paused protocol: read_app runs again on resume */
            }
            read_stopped(tt, e);
            break;
        }
        read_stopped(tt, SSL_get_error(tt->ssl, 0));
        break;
    }
    if (tt->state == ST_WRAPPED || tt->state == ST_SHUTDOWN) {
        flush_out(tt);
        flush_backlog(tt);
        try_shutdown(tt);
    }
}

/* read_app stopped on SSL error `e`: more input needed, the peer's
 * close_notify, or a failure. */
static void read_stopped(struct tls_transport *tt, int e)
{
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        clear_errors();
        flush_out(tt); /* e.g. a KeyUpdate answer */
        if (tt->peer_eof)
            peer_closed(tt); /* everything before the EOF was delivered */
        return;
    }
    if (e == SSL_ERROR_ZERO_RETURN) {
        clear_errors();
        peer_closed(tt);
        return;
    }
    fatal(tt, gfl__tls_error(tt->ssl, e, tt->server_hostname));
}

/* ------------------------------------------------------------------ */
/* The handshake                                                       */

static void handshake_done(struct tls_transport *tt)
{
    gfl_transport *t = &tt->base;
    cancel_handle(t->loop, &tt->hs_timer);
    tt->state = ST_WRAPPED;
    if (tt->upgrade) {
        gfl_future *f = tt->upgrade_future;
        tt->upgrade_future = NULL;
        if (f) {
            gfl_value *v = gfl_value_object(gfl_transport_class(), t);
            if (v && gfl_future_state_of(f) == GFL_FUTURE_PENDING)
                (void)gfl_future_set_result(f, v);
            gfl_value_unref(v);
            gfl_future_unref(f);
        }
        read_app(tt);
        return;
    }
    struct gfl_tls_origin *org = tt->org;
    int rc = gfl__transport_run_factory(t, org->factory, org->fud);
    if (rc < 0) {
        handshake_failed(tt, gfl_value_error(rc, "OSError", "the protocol factory failed", NULL), false);
        return;
    }
    tt->app_live = true;
    if (!org->server) {
        org->handshaking = NULL;
        if (org->future)
            t->waiter = gfl_future_ref(org->future); /* resolved after connection_made */
    }
    rc = gfl__transport_start(t);
    if (rc < 0) {
        /* Cannot even queue connection_made (out of memory). */
        if (t->waiter) {
            gfl_future_unref(t->waiter);
            t->waiter = NULL;
        }
        tt->app_live = false;
        t->proto_user = NULL;
        handshake_failed(tt, gfl_value_error(rc, "MemoryError", NULL, NULL), true);
    }
    /* Data that came with the handshake waits for connection_made
     * (tls_on_made). */
}

static void do_handshake(struct tls_transport *tt)
{
    clear_errors();
    int r = SSL_do_handshake(tt->ssl);
    int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(tt->ssl, r);
    if (r == 1) {
        flush_out(tt);
        handshake_done(tt);
    } else if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        flush_out(tt);
    } else {
        handshake_failed(tt, gfl__tls_error(tt->ssl, e, tt->server_hostname), false);
    }
}

static void on_handshake_timeout(void *arg)
{
    struct tls_transport *tt = arg;
    tt->hs_timer = 0;
    if (tt->state != ST_HANDSHAKE)
        return;
    char msg[128];
    snprintf(msg, sizeof msg, "SSL handshake is taking longer than %g seconds: aborting the connection", tt->hs_timeout);
    gfl_transport_ref(&tt->base);
    handshake_failed(tt, gfl_value_error(GFL_ETIMEDOUT, "ConnectionAbortedError", msg, NULL), true);
    gfl_transport_unref(&tt->base);
}

static void start_handshake(struct tls_transport *tt)
{
    gfl_handle h = gfl_call_later(tt->base.loop, tt->hs_timeout, on_handshake_timeout, tt);
    tt->hs_timer = h > 0 ? h : 0;
    /* Drain-to-zero notifications drive our resume_writing. */
    (void)gfl_transport_set_write_buffer_limits(tt->raw, 0, 0);
    do_handshake(tt);
}

void gfl__tls_transport_cancel(gfl_transport *t)
{
    struct tls_transport *tt = TT(t);
    if (tt->state != ST_HANDSHAKE)
        return;
    gfl_transport_ref(t);
    handshake_failed(tt, gfl__cancelled_error(NULL), true);
    gfl_transport_unref(t);
}

/* ------------------------------------------------------------------ */
/* The raw stream's protocol                                           */

static void raw_made(gfl_transport *raw, void *ud)
{
    struct tls_transport *tt = ud;
    (void)raw;
    if (tt->state != ST_HANDSHAKE)
        return;
    gfl_transport_ref(&tt->base);
    start_handshake(tt);
    gfl_transport_unref(&tt->base);
}

static void raw_data(gfl_transport *raw, const void *data, size_t len, void *ud)
{
    struct tls_transport *tt = ud;
    (void)raw;
    if (tt->state == ST_DONE)
        return;
    const char *p = data;
    while (len > 0) {
        int n = len > INT32_MAX ? INT32_MAX : (int)len;
        int w = BIO_write(tt->rbio, p, n);
        if (w <= 0) {
            fatal(tt, gfl_value_error(GFL_ENOMEM, "MemoryError", NULL, NULL));
            return;
        }
        p += w;
        len -= (size_t)w;
    }
    gfl_transport_ref(&tt->base);
    switch (tt->state) {
    case ST_HANDSHAKE:
        do_handshake(tt);
        break;
    case ST_WRAPPED:
        read_app(tt);
        break;
    case ST_SHUTDOWN:
        drain_shutdown(tt);
        break;
    case ST_DONE:
        break;
    }
    gfl_transport_unref(&tt->base);
}

static int raw_eof(gfl_transport *raw, void *ud)
{
    struct tls_transport *tt = ud;
    (void)raw;
    tt->peer_eof = true;
    gfl_transport_ref(&tt->base);
    switch (tt->state) {
    case ST_HANDSHAKE:
        handshake_failed(tt, conn_reset_during_handshake(), false);
        break;
    case ST_WRAPPED:
        /* Deliver what is still decodable first; read_app then reports
         * the EOF (at once, when a paused protocol resumes, or after
         * connection_made). */
        read_app(tt);
        break;
    case ST_SHUTDOWN:
        shutdown_done(tt);
        break;
    case ST_DONE:
        break;
    }
    gfl_transport_unref(&tt->base);
    return 1; /* we close the stream ourselves */
}

static void raw_lost_cb(gfl_transport *raw, gfl_value *err, void *ud)
{
    struct tls_transport *tt = ud;
    (void)raw;
    tt->raw_lost = true;
    gfl_transport *t = &tt->base;
    if (t->loop->closed) {
        /* Our own loop_closing runs next and reports this error. */
        if (!t->lost && !t->lost_error && err)
            t->lost_error = gfl_value_ref(err);
        return;
    }
    gfl_transport_ref(t);
    if (tt->state == ST_HANDSHAKE) {
        handshake_failed(tt, err ? gfl_value_ref(err) : conn_reset_during_handshake(), false);
    } else {
        tt->state = ST_DONE;
        cancel_handle(t->loop, &tt->sd_timer);
        gfl__transport_lost(t, tt->clean_close ? NULL : err);
    }
    gfl_transport_unref(t);
}

static void raw_pause(gfl_transport *raw, void *ud)
{
    (void)raw;
    (void)ud; /* raw limits are 0/0: we watch for the drain instead */
}

static void raw_resume(gfl_transport *raw, void *ud)
{
    struct tls_transport *tt = ud;
    (void)raw;
    gfl__transport_maybe_resume(&tt->base, (size_t)tls_write_buffer_size(&tt->base));
}

const gfl_protocol gfl__tls_raw_protocol = {
    .size = sizeof(gfl_protocol),
    .connection_made = raw_made,
    .data_received = raw_data,
    .eof_received = raw_eof,
    .connection_lost = raw_lost_cb,
    .pause_writing = raw_pause,
    .resume_writing = raw_resume,
};

/* ------------------------------------------------------------------ */
/* Transport operations                                                */

static int tls_write_eof(gfl_transport *t)
{
    (void)t;
    return GFL_ENOSYS;
}

static int tls_can_write_eof(gfl_transport *t)
{
    (void)t;
    return 0; /* as asyncio's SSL transports */
}

static void resume_run(void *arg)
{
    struct tls_transport *tt = arg;
    tt->resume_handle = 0;
    gfl_transport_ref(&tt->base);
    read_app(tt);
    gfl_transport_unref(&tt->base);
}

static int tls_set_reading(gfl_transport *t, bool on)
{
    struct tls_transport *tt = TT(t);
    if (tt->state == ST_HANDSHAKE || !raw_usable(tt))
        return GFL_OK; /* the handshake keeps reading the stream */
    if (!on)
        return gfl_transport_pause_reading(tt->raw);
    int rc = gfl_transport_resume_reading(tt->raw);
    /* What the engine already holds is delivered from the ready queue,
     * never inside resume_reading. */
    if (tt->resume_handle <= 0 && t->made) {
        gfl_handle h = gfl_call_soon(t->loop, resume_run, tt);
        tt->resume_handle = h > 0 ? h : 0;
    }
    return rc;
}

static int tls_close(gfl_transport *t)
{
    struct tls_transport *tt = TT(t);
    switch (tt->state) {
    case ST_HANDSHAKE:
        /* asyncio: closing during the handshake aborts. */
        handshake_failed(tt, aborted_in_handshake(), true);
        break;
    case ST_WRAPPED:
        /* The peer's close_notify must get through even if the protocol
         * paused reading. */
        if (raw_usable(tt))
            (void)gfl_transport_resume_reading(tt->raw);
        begin_shutdown(tt);
        break;
    default:
        break;
    }
    return GFL_OK;
}

static int tls_abort(gfl_transport *t)
{
    struct tls_transport *tt = TT(t);
    if (tt->state == ST_HANDSHAKE) {
        handshake_failed(tt, aborted_in_handshake(), true);
        return GFL_OK;
    }
    tt->state = ST_DONE;
    cancel_handle(t->loop, &tt->hs_timer);
    cancel_handle(t->loop, &tt->sd_timer);
    tt->boff = tt->blen = 0;
    if (raw_usable(tt))
        (void)gfl_transport_abort(tt->raw);
    gfl__transport_lost(t, NULL);
    return GFL_OK;
}

static gfl_value *string_value(const char *s)
{
    return s ? gfl_value_string(s, strlen(s)) : NULL;
}

static gfl_value *peercert_value(struct tls_transport *tt, bool pem)
{
    X509 *x = SSL_get0_peer_certificate(tt->ssl);
    if (!x)
        return NULL;
    gfl_value *v = NULL;
    if (!pem) {
        unsigned char *der = NULL;
        int n = i2d_X509(x, &der);
        if (n > 0)
            v = gfl_value_bytes(der, (size_t)n);
        OPENSSL_free(der);
        return v;
    }
    BIO *b = BIO_new(BIO_s_mem());
    if (b && PEM_write_bio_X509(b, x)) {
        char *p = NULL;
        long n = BIO_get_mem_data(b, &p);
        if (n > 0)
            v = gfl_value_string(p, (size_t)n);
    }
    BIO_free(b);
    clear_errors();
    return v;
}

static gfl_value *tls_extra_info(gfl_transport *t, const char *name)
{
    struct tls_transport *tt = TT(t);
    bool ready = tt->ssl && tt->state != ST_HANDSHAKE && SSL_is_init_finished(tt->ssl);
    if (strcmp(name, "server_hostname") == 0) {
        if (!tt->org->server)
            return string_value(tt->server_hostname);
        return tt->ssl ? string_value(SSL_get_servername(tt->ssl, TLSEXT_NAMETYPE_host_name)) : NULL;
    }
    if (strcmp(name, "peercert") == 0)
        return ready ? peercert_value(tt, false) : NULL;
    if (strcmp(name, "peercert_pem") == 0)
        return ready ? peercert_value(tt, true) : NULL;
    if (strcmp(name, "cipher") == 0) {
        const SSL_CIPHER *c = ready ? SSL_get_current_cipher(tt->ssl) : NULL;
        return c ? string_value(SSL_CIPHER_get_name(c)) : NULL;
    }
    if (strcmp(name, "tls_version") == 0)
        return ready ? string_value(SSL_get_version(tt->ssl)) : NULL;
    if (strcmp(name, "alpn_protocol") == 0) {
        const unsigned char *p = NULL;
        unsigned len = 0;
        if (ready)
            SSL_get0_alpn_selected(tt->ssl, &p, &len);
        return p && len ? gfl_value_string((const char *)p, len) : NULL;
    }
    if (strcmp(name, "session_reused") == 0)
        return ready ? gfl_value_bool(SSL_session_reused(tt->ssl)) : NULL;
    return raw_usable(tt) ? gfl_transport_get_extra_info(tt->raw, name) : NULL;
}

static int tls_fileno(gfl_transport *t)
{
    struct tls_transport *tt = TT(t);
    return raw_usable(tt) ? gfl_transport_fileno(tt->raw) : GFL_ECLOSED;
}

static int tls_get_sockaddr(gfl_transport *t, int peer, void *addr, size_t *len)
{
    struct tls_transport *tt = TT(t);
    return raw_usable(tt) ? gfl_transport_get_sockaddr(tt->raw, peer, addr, len) : GFL_ECLOSED;
}

static void tls_teardown(gfl_transport *t)
{
    struct tls_transport *tt = TT(t);
    gfl_loop *loop = t->loop;
    if (!loop->closed) {
        cancel_handle(loop, &tt->hs_timer);
        cancel_handle(loop, &tt->sd_timer);
        cancel_handle(loop, &tt->resume_handle);
    }
    tt->hs_timer = tt->sd_timer = tt->resume_handle = 0;
    tt->state = ST_DONE;
    if (tt->raw) {
        gfl_transport *raw = tt->raw;
        tt->raw = NULL;
        if (tt->installed && !raw->lost) {
            /* Let go of the stream: no callback may reach us any more. */
            gfl__transport_set_proto(raw, &inert_protocol, NULL);
            if (!raw->closing && !loop->closed)
                (void)gfl_transport_abort(raw);
        }
        gfl_transport_unref(raw);
    }
    if (tt->upgrade_future) {
        gfl_future *f = tt->upgrade_future;
        tt->upgrade_future = NULL;
        if (gfl_future_state_of(f) == GFL_FUTURE_PENDING) {
            gfl_value *e = gfl_value_error(GFL_ECONNRESET, "ConnectionResetError", "Connection lost during SSL handshake", NULL);
            gfl__future_fail_value(f, e);
        }
        gfl_future_unref(f);
    }
    if (tt->ssl) {
        gfl__tls_ssl_detach(tt->ssl);
        SSL_free(tt->ssl);
        tt->ssl = NULL;
        tt->rbio = tt->wbio = NULL;
    }
    gfl__free(loop, tt->backlog);
    tt->backlog = NULL;
    tt->boff = tt->blen = tt->bcap = 0;
    if (tt->org) {
        if (tt->org->handshaking == t)
            tt->org->handshaking = NULL;
    }
}

static void tls_destroy(gfl_transport *t)
{
    struct tls_transport *tt = TT(t);
    gfl_loop *loop = t->loop;
    if (tt->raw || tt->ssl)
        tls_teardown(t);
    if (tt->org)
        gfl__tls_origin_unref(tt->org);
    gfl_tls_context_unref(tt->ctx);
    gfl_value_unref(t->lost_error);
    gfl__free(loop, tt->server_hostname);
    gfl__free(loop, tt->session_key);
    gfl__free(loop, tt);
}

static void tls_on_made(gfl_transport *t)
{
    struct tls_transport *tt = TT(t);
    /* Records that came with the handshake, and a peer EOF, wait for
     * connection_made: deliver them now. */
    read_app(tt);
}

static const struct gfl_transport_ops tls_ops = {
    .name = "tls",
    .writev = tls_writev,
    .write_eof = tls_write_eof,
    .can_write_eof = tls_can_write_eof,
    .set_reading = tls_set_reading,
    .write_buffer_size = tls_write_buffer_size,
    .close = tls_close,
    .abort = tls_abort,
    .extra_info = tls_extra_info,
    .fileno = tls_fileno,
    .get_sockaddr = tls_get_sockaddr,
    .teardown = tls_teardown,
    .destroy = tls_destroy,
};

/* ------------------------------------------------------------------ */
/* Construction                                                        */

/* "hostname|peer address": sessions are resumed with the same server. */
static char *make_session_key(gfl_loop *loop, const char *hostname, gfl_transport *raw)
{
    gfl_value *peer = gfl_transport_get_extra_info(raw, "peername");
    const char *p = NULL;
    size_t plen = 0;
    if (peer)
        (void)gfl_value_get_bytes(peer, &p, &plen);
    size_t hlen = hostname ? strlen(hostname) : 0;
    char *key = gfl__alloc(loop, hlen + plen + 2);
    if (key) {
        memcpy(key, hostname ? hostname : "", hlen);
        key[hlen] = '|';
        if (plen)
            memcpy(key + hlen + 1, p, plen);
        key[hlen + 1 + plen] = '\0';
        /* A NUL inside (abstract Unix names) just shortens the key. */
    }
    gfl_value_unref(peer);
    return key;
}

gfl_transport *gfl__tls_transport_new(struct gfl_tls_origin *org, gfl_transport *raw, bool as_protocol, gfl_value **error)
{
    gfl_loop *loop = org->loop;
    *error = NULL;
    struct tls_transport *tt = gfl__calloc(loop, 1, sizeof *tt);
    if (!tt)
        return NULL;
    if (gfl__transport_init(&tt->base, loop, &tls_ops) < 0) {
        gfl__free(loop, tt);
        return NULL;
    }
    tt->base.on_made = tls_on_made;
    tt->state = ST_HANDSHAKE;
    tt->org = org;
    gfl__tls_origin_ref(org);
    tt->ctx = gfl_tls_context_ref(org->ctx);
    tt->hs_timeout = org->handshake_timeout;
    tt->sd_timeout = org->shutdown_timeout;
    tt->raw = gfl_transport_ref(raw);
    bool ok = tt->raw != NULL;
    if (ok && !org->server && org->server_hostname) {
        tt->server_hostname = dup_str(loop, org->server_hostname);
        ok = tt->server_hostname != NULL;
    }
    if (ok && !org->server) {
        tt->session_key = make_session_key(loop, org->server_hostname, raw);
        ok = tt->session_key != NULL;
    }
    if (ok) {
        tt->ssl = gfl__tls_ssl_new(org->ctx, &tt->base, tt->server_hostname, tt->session_key, error);
        ok = tt->ssl != NULL;
    }
    if (ok) {
        tt->rbio = BIO_new(BIO_s_mem());
        tt->wbio = BIO_new(BIO_s_mem());
        if (tt->rbio && tt->wbio) {
            /* An empty BIO means "wait for more", never EOF. */
            BIO_set_mem_eof_return(tt->rbio, -1);
            BIO_set_mem_eof_return(tt->wbio, -1);
            SSL_set_bio(tt->ssl, tt->rbio, tt->wbio);
        } else {
            BIO_free(tt->rbio);
            BIO_free(tt->wbio);
            tt->rbio = tt->wbio = NULL;
            ok = false;
        }
    }
    if (!ok) {
        clear_errors();
        discard(tt); /* raw is not ours yet: teardown only drops the reference */
        return NULL;
    }
    tt->installed = as_protocol;
    return &tt->base;
}

int gfl__tls_transport_upgrade(gfl_transport *t, const gfl_protocol *proto, void *ud, gfl_future *future)
{
    struct tls_transport *tt = TT(t);
    gfl__transport_set_proto(t, proto, ud);
    tt->upgrade = true;
    tt->app_live = true;
    t->made = true; /* the protocol already had its connection_made */
    tt->upgrade_future = gfl_future_ref(future);
    int rc = gfl_transport_set_protocol(tt->raw, &gfl__tls_raw_protocol, tt);
    if (rc < 0)
        return rc;
    tt->installed = true;
    (void)gfl_transport_resume_reading(tt->raw);
    start_handshake(tt);
    return GFL_OK;
}

/* ------------------------------------------------------------------ */
/* Origins                                                             */

struct gfl_tls_origin *gfl__tls_origin_new(gfl_loop *loop, const gfl_tls_options *o, gfl_protocol_factory f, void *fud, gfl_release_fn frel)
{
    struct gfl_tls_origin *org = gfl__calloc(loop, 1, sizeof *org);
    if (!org)
        return NULL;
    org->loop = loop;
    org->refs = 1;
    org->ctx = gfl_tls_context_ref(o->context);
    org->server = gfl_tls_context_is_server(o->context) == 1;
    org->handshake_timeout = o->handshake_timeout > 0 ? o->handshake_timeout : DEFAULT_HANDSHAKE_TIMEOUT;
    org->shutdown_timeout = o->shutdown_timeout > 0 ? o->shutdown_timeout : DEFAULT_SHUTDOWN_TIMEOUT;
    if (o->server_hostname && !org->server) {
        org->server_hostname = dup_str(loop, o->server_hostname);
        if (!org->server_hostname) {
            gfl_tls_context_unref(org->ctx);
            gfl__free(loop, org);
            return NULL;
        }
    }
    org->factory = f;
    org->fud = fud;
    org->frel = frel;
    gfl__loop_memref(loop);
    return org;
}

void gfl__tls_origin_ref(struct gfl_tls_origin *org)
{
    org->refs++;
}

void gfl__tls_origin_unref(struct gfl_tls_origin *org)
{
    if (--org->refs > 0)
        return;
    gfl_loop *loop = org->loop;
    gfl__stream_unregister(loop, &org->node);
    if (org->frel)
        org->frel(org->fud);
    if (org->future)
        gfl_future_unref(org->future);
    if (org->raw_future)
        gfl_future_unref(org->raw_future);
    gfl_tls_context_unref(org->ctx);
    gfl__free(loop, org->server_hostname);
    gfl__free(loop, org);
    gfl__loop_memunref(loop);
}
