/*
 * Private declarations shared by the TLS files of core/ (tls_context.c,
 * tls_transport.c, tls_connect.c). Included after internal.h.
 */
#ifndef GFL_CORE_TLS_H
#define GFL_CORE_TLS_H

#include <openssl/ssl.h>

/* ---- tls_context.c ---- */

/* A new SSL for one connection of `ctx`, linked to transport `t` (the SNI
 * hook and the session cache find it). Clients get their SNI name, the
 * hostname to verify and a cached session for `session_key`. NULL with
 * *error set (a new error value) on failure. */
SSL *gfl__tls_ssl_new(gfl_tls_context *ctx, gfl_transport *t, const char *server_hostname, const char *session_key, gfl_value **error);
/* Detaches an SSL from its transport (before SSL_free). */
void gfl__tls_ssl_detach(SSL *ssl);
/* Whether the context verifies the peer (clients) / checks hostnames. */
bool gfl__tls_ctx_verifies(const gfl_tls_context *ctx);
bool gfl__tls_ctx_checks_hostname(const gfl_tls_context *ctx);
/* The error value for a failed SSL call (`ret` and SSL_get_error's `err`);
 * reads and clears OpenSSL's error queue. `hostname` names the expected
 * peer in hostname-mismatch messages. */
gfl_value *gfl__tls_error(SSL *ssl, int err, const char *hostname);

/* ---- tls_transport.c: the TLS layer ---- */

/* Where the user's protocol comes from once the handshake succeeds. */
struct gfl_tls_origin {
    gfl_loop *loop; /* memref held */
    int refs;
    bool server;
    gfl_tls_context *ctx;
    char *server_hostname; /* clients */
    double handshake_timeout, shutdown_timeout;
    gfl_protocol_factory factory; /* NULL for start_tls */
    void *fud;
    gfl_release_fn frel; /* runs when the origin is freed */
    /* Clients (tls_connect.c): the caller's future and the connect. */
    gfl_future *future;
    gfl_future *raw_future;
    gfl_transport *handshaking; /* weak: the TLS transport of the connect */
    struct gfl_stream_node node; /* registered while futures are watched */
    bool watch_raw, watch_future; /* done callbacks holding a reference */
};

struct gfl_tls_origin *gfl__tls_origin_new(gfl_loop *loop, const gfl_tls_options *o, gfl_protocol_factory f, void *fud, gfl_release_fn frel);
void gfl__tls_origin_ref(struct gfl_tls_origin *org);
void gfl__tls_origin_unref(struct gfl_tls_origin *org);

/* A TLS transport over `raw` (a reference is taken). `as_protocol`: the
 * caller makes gfl__tls_raw_protocol raw's protocol (a factory), and the
 * handshake starts at raw's connection_made; otherwise see
 * gfl__tls_transport_upgrade. NULL on ENOMEM or an SSL setup failure
 * (*error set when it can say why). */
gfl_transport *gfl__tls_transport_new(struct gfl_tls_origin *org, gfl_transport *raw, bool as_protocol, gfl_value **error);
/* The raw protocol the TLS layer installs on its stream (for factories). */
extern const gfl_protocol gfl__tls_raw_protocol;
/* start_tls: the TLS transport takes over the live protocol proto/ud and
 * starts the handshake now; `future` resolves to it afterwards. */
int gfl__tls_transport_upgrade(gfl_transport *tt, const gfl_protocol *proto, void *ud, gfl_future *future);
/* Ends a handshake in progress (the connect was cancelled). */
void gfl__tls_transport_cancel(gfl_transport *tt);

#endif
