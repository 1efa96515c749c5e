/*
 * TLS (OpenSSL 3) as a transport layer over any stream, asyncio's model:
 * the user's protocol sits on a TLS transport, which sits on the raw stream
 * (TCP, Unix socket, pipe pair, another TLS transport...). The TLS engine
 * runs on memory BIOs, so it never touches a file descriptor.
 *
 * Security defaults (never silently weaker):
 *  - client contexts verify the server's chain against the system CA store
 *    and check its hostname (or IP address); a failure is an error of type
 *    "SSLCertVerificationError" whose message gives OpenSSL's reason
 *    ("certificate verify failed: self-signed certificate", "... certificate
 *    has expired", "... Hostname mismatch, certificate is not valid for
 *    'x'."); other TLS failures are "SSLError" with OpenSSL's reason;
 *  - the only way to turn verification off is the explicitly named
 *    `insecure_skip_verify` option;
 *  - TLS 1.2 is the minimum version; renegotiation is refused.
 *
 * Timing (asyncio's defaults): a handshake that takes longer than 60 s
 * fails ("ConnectionAbortedError", code GFL_ETIMEDOUT); close() sends
 * close_notify, waits up to 30 s for the peer's, then closes the stream;
 * abort() closes at once without close_notify.
 *
 * Extra info (gfl_transport_get_extra_info) on a TLS transport, after the
 * handshake: "peercert" (the peer's certificate, DER bytes, absent when the
 * peer sent none), "peercert_pem" (the same as PEM text), "cipher" (string),
 * "tls_version" ("TLSv1.3", ...), "alpn_protocol" (string, absent when none
 * was agreed), "server_hostname" (a client: the name it verified; a server:
 * the SNI name the client sent), "session_reused" (bool). Other names
 * ("peername", "socket", ...) come from the stream underneath.
 *
 * Included by globeflower.h; do not include directly.
 */
#ifndef GLOBEFLOWER_TLS_H
#define GLOBEFLOWER_TLS_H

/* Error codes of TLS failures (error values also carry the type name). */
#define GFL_ETLS (-4100)       /* "SSLError": a TLS protocol failure */
#define GFL_ETLSVERIFY (-4101) /* "SSLCertVerificationError" */

/* Protocol versions for min_version/max_version (the wire values). */
#define GFL_TLS_VERSION_1_2 0x0303
#define GFL_TLS_VERSION_1_3 0x0304

/* Peer verification (gfl_tls_context_options.verify). */
#define GFL_TLS_VERIFY_DEFAULT 0  /* client: REQUIRED; server: no client certificate asked */
#define GFL_TLS_VERIFY_OPTIONAL 1 /* server: ask for a client certificate, verify it if sent */
#define GFL_TLS_VERIFY_REQUIRED 2 /* client: verify the server; server: demand a valid client certificate */

/* Configuration shared by many connections: reference counted, immutable
 * once made (except gfl_tls_context_add_sni before first use), usable by
 * every loop and thread. */
typedef struct gfl_tls_context gfl_tls_context;

/* A server's SNI hook, called during each handshake with the name the
 * client asked for (NULL when it sent none) and `t`, the TLS transport
 * being made (borrowed: only gfl_transport_get_extra_info on the stream's
 * names is meaningful yet). *use holds the context gfl_tls_context_add_sni
 * chose (or NULL); set it to another server context (borrowed) to switch
 * certificates. Return 0 to go on, a negative value to refuse the
 * handshake (the client gets an unrecognized_name alert). */
typedef int (*gfl_tls_sni_callback)(void *ud, gfl_transport *t, const char *server_name, gfl_tls_context **use);

/* Zero means the default for every field (so `size` first, the rest zero,
 * is a correct client context). Tri-state fields: 0 default, > 0 yes,
 * < 0 no. Strings are copied or loaded at creation. */
typedef struct gfl_tls_context_options {
    size_t size;              /* sizeof(gfl_tls_context_options) */
    int server;               /* 0: a client context, non-zero: a server context */
    const char *ca_file;      /* PEM file of trusted CA certificates */
    const char *ca_path;      /* directory of hashed CA certificates (c_rehash) */
    int default_cas;          /* the system CA store: default yes for clients, no for servers */
    const char *cert_file;    /* PEM certificate (chain): required for servers; a client's own certificate */
    const char *key_file;     /* PEM private key (NULL: in cert_file) */
    const char *key_password; /* for an encrypted key */
    int verify;               /* GFL_TLS_VERIFY_* */
    /* Accept any peer certificate and skip the hostname check. Insecure:
     * only for tests and peers authenticated otherwise. */
    int insecure_skip_verify;
    int check_hostname;       /* clients: default yes (< 0 turns only the name check off) */
    const char *const *alpn_protocols; /* NULL-terminated, in preference order */
    /* GFL_TLS_VERSION_*; 0: TLS 1.2. Anything else (TLS 1.0/1.1 included)
     * is refused: GFL_EINVAL, with a ValueError saying so. */
    int min_version;
    int max_version;          /* GFL_TLS_VERSION_*; 0: the newest OpenSSL knows */
    const char *ciphers;      /* TLS <= 1.2 cipher list, OpenSSL syntax (NULL: OpenSSL's default) */
    const char *ciphersuites; /* TLS 1.3 suites, OpenSSL syntax */
    int session_cache;        /* default yes: clients resume sessions per host, servers issue tickets */
    gfl_tls_sni_callback sni_callback; /* servers */
    void *sni_ud;
} gfl_tls_context_options;

/* A new context (one reference), or NULL: bad options (GFL_EINVAL) or a
 * file that does not load. *error, when `error` is not NULL, then receives
 * a new error value saying why (e.g. "cannot load certificate file x: no
 * such file"). */
GFL_EXPORT gfl_tls_context *gfl_tls_context_new(const gfl_tls_context_options *opts, gfl_value **error);
GFL_EXPORT gfl_tls_context *gfl_tls_context_ref(gfl_tls_context *ctx);
GFL_EXPORT void gfl_tls_context_unref(gfl_tls_context *ctx);
/* 1 for a server context, 0 for a client one, or GFL_EINVAL. */
GFL_EXPORT int gfl_tls_context_is_server(const gfl_tls_context *ctx);
/* Server SNI: a client asking for `name` (exact, case-insensitive, or a
 * "*.example.com" pattern matching one label) gets the certificate of
 * `use` (another server context; a reference is kept). Call before the
 * context serves connections. */
GFL_EXPORT int gfl_tls_context_add_sni(gfl_tls_context *ctx, const char *name, gfl_tls_context *use);

/* Per-connection TLS settings. */
typedef struct gfl_tls_options {
    size_t size;                 /* sizeof(gfl_tls_options) */
    gfl_tls_context *context;    /* required; its role (client/server) is the connection's side */
    /* Clients: the name to verify and send as SNI (an IP address is
     * verified, never sent). gfl_create_tls_connection defaults to the
     * connect host; gfl_start_tls needs it unless verification is off. */
    const char *server_hostname;
    double handshake_timeout;    /* seconds; 0: 60 */
    double shutdown_timeout;     /* seconds; 0: 30 */
} gfl_tls_options;

/* asyncio's create_connection(ssl=ctx, server_hostname=...): connects like
 * gfl_create_connection, then runs the handshake. The protocol factory
 * runs once the handshake succeeded (so a protocol it makes always sees
 * connection_made and connection_lost), then connection_made, then the
 * future resolves to the TLS transport. Connect errors, TLS errors and the
 * handshake timeout fail the future; cancelling it abandons the attempt. */
GFL_EXPORT gfl_future *gfl_create_tls_connection(gfl_loop *loop, gfl_protocol_factory factory, void *factory_ud, gfl_release_fn factory_release, const gfl_connect_options *opts, const gfl_tls_options *tls);
/* asyncio's create_server(ssl=ctx): like gfl_create_server; each accepted
 * connection runs the handshake first and the factory after it. A failed
 * handshake drops the connection (and, in debug mode, is reported to the
 * loop's exception handler). The server counts and closes the streams. */
GFL_EXPORT gfl_future *gfl_create_tls_server(gfl_loop *loop, gfl_protocol_factory factory, void *factory_ud, gfl_release_fn factory_release, const gfl_server_options *opts, const gfl_tls_options *tls);
/* asyncio's loop.start_tls: upgrades the open transport `t` in place.
 * `proto`/`ud` (NULL: t's current protocol) becomes the protocol of the
 * new TLS transport, without a new connection_made; `t` must not be used
 * any more (keep or drop your reference, it is only the raw stream now).
 * The future resolves to the TLS transport after the handshake; if the
 * handshake fails it fails with the error and the protocol then gets
 * connection_lost(error) from the TLS transport. */
GFL_EXPORT gfl_future *gfl_start_tls(gfl_transport *t, const gfl_protocol *proto, void *ud, const gfl_tls_options *tls);

#endif
