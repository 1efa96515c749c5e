/*
 * TLS entry points: gfl_create_tls_connection, gfl_create_tls_server and
 * gfl_start_tls. Each puts the TLS layer (tls_transport.c) on a raw
 * stream: clients and servers through a protocol factory of the raw
 * connection, start_tls by taking over an open transport.
 *
 * Client lifetime: an origin (refcounted) holds the user's factory and the
 * caller's future F; the raw connect's future R and F each hold a
 * reference through a done callback. R failing fails F; F cancelled
 * cancels R or the handshake. At loop close the callbacks can no longer
 * run: the origin's stream node drops their references instead.
 */
#include "internal.h"
#include "tls.h"

#include <math.h>
#include <string.h>

/* Copies the caller's options (of its size) and checks them. */
static int copy_tls_options(const gfl_tls_options *in, gfl_tls_options *out)
{
    if (!in || in->size < sizeof(size_t))
        return GFL_EINVAL;
    memset(out, 0, sizeof *out);
    memcpy(out, in, in->size < sizeof *out ? in->size : sizeof *out);
    out->size = sizeof *out;
    if (!out->context || gfl_tls_context_is_server(out->context) < 0)
        return GFL_EINVAL;
    if (out->handshake_timeout < 0 || isnan(out->handshake_timeout) || out->shutdown_timeout < 0 || isnan(out->shutdown_timeout))
        return GFL_EINVAL;
    return GFL_OK;
}

static void origin_release(void *p)
{
    gfl__tls_origin_unref(p);
}

/* ------------------------------------------------------------------ */
/* Clients                                                             */

static void on_raw_done(gfl_future *r, void *arg);
static void on_future_done(gfl_future *f, void *arg);

static void origin_loop_closing(struct gfl_stream_node *n)
{
    struct gfl_tls_origin *org = (struct gfl_tls_origin *)((char *)n - offsetof(struct gfl_tls_origin, node));
    gfl__tls_origin_ref(org);
    gfl__stream_unregister(org->loop, n);
    /* Callbacks that can no longer run give their references back. */
    if (org->watch_future) {
        org->watch_future = false;
        (void)gfl_future_remove_done_callback(org->future, on_future_done, org);
        gfl__tls_origin_unref(org);
    }
    if (org->watch_raw) {
        org->watch_raw = false;
        if (org->raw_future)
            (void)gfl_future_remove_done_callback(org->raw_future, on_raw_done, org);
        gfl__tls_origin_unref(org);
    }
    if (org->future && gfl_future_state_of(org->future) == GFL_FUTURE_PENDING)
        (void)gfl_future_cancel(org->future, "the event loop was closed");
    gfl__tls_origin_unref(org);
}

static void maybe_unregister(struct gfl_tls_origin *org)
{
    if (!org->watch_raw && !org->watch_future)
        gfl__stream_unregister(org->loop, &org->node);
}

/* The raw connect is done: its failure is the caller's. */
static void on_raw_done(gfl_future *r, void *arg)
{
    struct gfl_tls_origin *org = arg;
    org->watch_raw = false;
    if (org->future && gfl_future_state_of(org->future) == GFL_FUTURE_PENDING) {
        int st = gfl_future_state_of(r);
        if (st == GFL_FUTURE_ERROR)
            gfl__future_fail_value(org->future, gfl_value_ref(gfl_future_value(r)));
        else if (st == GFL_FUTURE_CANCELLED)
            (void)gfl_future_cancel(org->future, NULL);
    } else if (gfl_future_state_of(r) == GFL_FUTURE_ERROR) {
        (void)gfl_future_value(r); /* seen: not an unretrieved error */
    }
    if (org->raw_future) {
        gfl_future_unref(org->raw_future);
        org->raw_future = NULL;
    }
    maybe_unregister(org);
    gfl__tls_origin_unref(org);
}

/* The caller's future is done (by us, or cancelled by the caller). */
static void on_future_done(gfl_future *f, void *arg)
{
    struct gfl_tls_origin *org = arg;
    (void)f;
    org->watch_future = false;
    /* The future's value holds the TLS transport, which holds us: let go
     * of it now to break the cycle. */
    gfl_future_unref(org->future);
    org->future = NULL;
    if (org->raw_future && gfl_future_state_of(org->raw_future) == GFL_FUTURE_PENDING)
        (void)gfl_future_cancel(org->raw_future, NULL);
    if (org->handshaking)
        gfl__tls_transport_cancel(org->handshaking);
    maybe_unregister(org);
    gfl__tls_origin_unref(org);
}

/* The raw connection's factory: the TLS layer becomes its protocol. */
static int client_raw_factory(void *fud, gfl_transport *raw, const gfl_protocol **proto, void **ud)
{
    struct gfl_tls_origin *org = fud;
    if (!org->future || gfl_future_state_of(org->future) != GFL_FUTURE_PENDING)
        return GFL_ECANCELED;
    gfl_value *err = NULL;
    gfl_transport *tt = gfl__tls_transport_new(org, raw, true, &err);
    if (!tt) {
        int code = err ? gfl_value_error_code(err) : GFL_ENOMEM;
        gfl__future_fail_value(org->future, err);
        return code;
    }
    org->handshaking = tt;
    *proto = &gfl__tls_raw_protocol;
    *ud = tt;
    return GFL_OK;
}

GFL_EXPORT gfl_future *gfl_create_tls_connection(gfl_loop *loop, gfl_protocol_factory factory, void *factory_ud, gfl_release_fn factory_release, const gfl_connect_options *opts, const gfl_tls_options *tls)
{
    gfl_tls_options o;
    if (gfl__check_loop(loop) < 0 || !factory || !opts || opts->size < sizeof(size_t) || copy_tls_options(tls, &o) < 0)
        return NULL;
    if (gfl_tls_context_is_server(o.context) != 0)
        return NULL; /* a client needs a client context */
    gfl_connect_options co;
    memset(&co, 0, sizeof co);
    memcpy(&co, opts, opts->size < sizeof co ? opts->size : sizeof co);
    /* asyncio: server_hostname defaults to the host connected to. */
    if (!o.server_hostname && !co.addrs)
        o.server_hostname = co.host;
    if ((!o.server_hostname || !*o.server_hostname) && gfl__tls_ctx_checks_hostname(o.context))
        return NULL;

    struct gfl_tls_origin *org = gfl__tls_origin_new(loop, &o, factory, factory_ud, NULL);
    if (!org)
        return NULL;
    org->node.loop_closing = origin_loop_closing;
    org->future = gfl_future_new(loop);
    if (!org->future) {
        gfl__tls_origin_unref(org);
        return NULL;
    }
    gfl__tls_origin_ref(org); /* the connector's, given back through origin_release */
    gfl_future *r = gfl_create_connection(loop, client_raw_factory, org, origin_release, opts);
    if (!r) {
        org->refs--; /* no connector: its reference was never taken */
        gfl__tls_origin_unref(org);
        return NULL;
    }
    /* Committed: the user's factory is released with the origin. */
    org->frel = factory_release;
    org->raw_future = r;
    if (gfl__stream_register(loop, &org->node) == GFL_OK) {
        if (gfl_future_add_done_callback(r, on_raw_done, org) == GFL_OK) {
            org->watch_raw = true;
            gfl__tls_origin_ref(org);
        }
        if (gfl_future_add_done_callback(org->future, on_future_done, org) == GFL_OK) {
            org->watch_future = true;
            gfl__tls_origin_ref(org);
        }
    }
    if (!org->watch_raw || !org->watch_future) {
        /* Out of memory: give up on the attempt now. */
        (void)gfl_future_cancel(r, NULL);
        gfl__future_fail_value(org->future, NULL);
        maybe_unregister(org);
    }
    gfl_future *ret = gfl_future_ref(org->future);
    gfl__tls_origin_unref(org);
    return ret;
}

/* ------------------------------------------------------------------ */
/* Servers                                                             */

static int server_raw_factory(void *fud, gfl_transport *raw, const gfl_protocol **proto, void **ud)
{
    struct gfl_tls_origin *org = fud;
    gfl_value *err = NULL;
    gfl_transport *tt = gfl__tls_transport_new(org, raw, true, &err);
    if (!tt) {
        int code = err ? gfl_value_error_code(err) : GFL_ENOMEM;
        gfl_value_unref(err);
        return code;
    }
    *proto = &gfl__tls_raw_protocol;
    *ud = tt;
    return GFL_OK;
}

GFL_EXPORT gfl_future *gfl_create_tls_server(gfl_loop *loop, gfl_protocol_factory factory, void *factory_ud, gfl_release_fn factory_release, const gfl_server_options *opts, const gfl_tls_options *tls)
{
    gfl_tls_options o;
    if (gfl__check_loop(loop) < 0 || !factory || !opts || opts->size < sizeof(size_t) || copy_tls_options(tls, &o) < 0)
        return NULL;
    if (gfl_tls_context_is_server(o.context) != 1)
        return NULL; /* a server needs a server context */
    struct gfl_tls_origin *org = gfl__tls_origin_new(loop, &o, factory, factory_ud, NULL);
    if (!org)
        return NULL;
    /* The server holds the origin's one reference (released as its
     * factory); each TLS connection holds another. The server may fail and
     * release its reference before gfl_create_server returns: ours keeps
     * the origin alive until then, and the caller's release is already in
     * place, so it runs exactly once, when the origin goes. */
    org->frel = factory_release;
    gfl__tls_origin_ref(org);
    gfl_future *f = gfl_create_server(loop, server_raw_factory, org, origin_release, opts);
    if (!f) {
        /* Refused: the server took nothing and the caller keeps its
         * factory_ud (the contract of a NULL return). */
        org->frel = NULL;
        gfl__tls_origin_unref(org);
    }
    gfl__tls_origin_unref(org);
    return f;
}

/* ------------------------------------------------------------------ */
/* start_tls                                                           */

GFL_EXPORT gfl_future *gfl_start_tls(gfl_transport *t, const gfl_protocol *proto, void *ud, const gfl_tls_options *tls)
{
    gfl_tls_options o;
    if (!t || t->refs <= 0 || gfl__check_loop(t->loop) < 0 || copy_tls_options(tls, &o) < 0)
        return NULL;
    if (t->lost || t->closing || t->lost_scheduled)
        return NULL;
    if (proto && proto->size < sizeof(size_t))
        return NULL;
    if (!proto) {
        proto = t->proto_user;
        ud = t->ud;
    }
    if (!proto)
        return NULL;
    bool server = gfl_tls_context_is_server(o.context) == 1;
    if (!server && (!o.server_hostname || !*o.server_hostname) && gfl__tls_ctx_checks_hostname(o.context))
        return NULL;
    gfl_loop *loop = t->loop;
    struct gfl_tls_origin *org = gfl__tls_origin_new(loop, &o, NULL, NULL, NULL);
    if (!org)
        return NULL;
    gfl_future *f = gfl_future_new(loop);
    gfl_value *err = NULL;
    gfl_transport *tt = f ? gfl__tls_transport_new(org, t, false, &err) : NULL;
    gfl__tls_origin_unref(org); /* tt holds it now */
    gfl_value_unref(err);
    if (!tt) {
        if (f)
            gfl_future_unref(f);
        return NULL;
    }
    if (gfl__tls_transport_upgrade(tt, proto, ud, f) < 0) {
        (void)gfl_future_cancel(f, NULL);
        gfl__transport_discard(tt);
        gfl_future_unref(f);
        return NULL;
    }
    return f;
}
