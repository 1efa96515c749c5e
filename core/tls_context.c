/*
 * TLS contexts: gfl_tls_context_options turned into an OpenSSL SSL_CTX,
 * plus what OpenSSL leaves to the application: the client session cache
 * (one resumable session per server), server SNI (name -> context), ALPN
 * selection, and the error values of failed TLS calls.
 *
 * A context is shared by loops and threads: its reference count is atomic
 * and the session cache has a lock; everything else is read-only after
 * gfl_tls_context_new (gfl_tls_context_add_sni is documented as setup).
 */
#include "internal.h"
#include "tls.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#define SESSION_SLOTS 32 /* servers remembered per client context */

struct sni_entry {
    char *name;
    gfl_tls_context *ctx;
};

struct session_slot {
    char *key;
    SSL_SESSION *sess;
    uint64_t used; /* LRU stamp */
};

struct gfl_tls_context {
    atomic_int refs;
    SSL_CTX *ssl_ctx;
    bool server;
    bool verify;         /* clients: the server's chain is verified */
    bool check_hostname; /* clients: and its name */
    bool session_cache;
    unsigned char *alpn; /* wire format: length-prefixed names */
    size_t alpn_len;
    gfl_tls_sni_callback sni_cb;
    void *sni_ud;
    struct sni_entry *sni;
    size_t nsni;
    pthread_mutex_t lock; /* the session cache */
    struct session_slot sessions[SESSION_SLOTS];
    uint64_t clock;
};

/* SSL ex_data slots: the transport and the client session key. */
static int ex_transport = -1, ex_session_key = -1;
static pthread_once_t ex_once = PTHREAD_ONCE_INIT;

static void ex_init(void)
{
    ex_transport = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    ex_session_key = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

/* ------------------------------------------------------------------ */
/* Errors                                                              */

/* The reason of OpenSSL error `e` ("no such file", "wrong version number"). */
static const char *reason_of(unsigned long e)
{
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    return r ? r : "unknown error";
}

/* An error value naming `what` and the last queued OpenSSL reason; clears
 * the queue. */
static gfl_value *ctx_error(const char *what, const char *arg)
{
    unsigned long e = ERR_peek_last_error();
    char msg[512];
    if (arg)
        snprintf(msg, sizeof msg, "%s '%s': %s", what, arg, reason_of(e));
    else
        snprintf(msg, sizeof msg, "%s: %s", what, reason_of(e));
    ERR_clear_error();
    return gfl_value_error(GFL_ETLS, "SSLError", msg, NULL);
}

static bool is_ip_address(const char *s)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

gfl_value *gfl__tls_error(SSL *ssl, int err, const char *hostname)
{
    char msg[512];
    unsigned long e = ERR_peek_last_error();
    if (err == SSL_ERROR_SSL && ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) == SSL_R_CERTIFICATE_VERIFY_FAILED) {
        long v = SSL_get_verify_result(ssl);
        ERR_clear_error();
        if (v == X509_V_ERR_HOSTNAME_MISMATCH)
            snprintf(msg, sizeof msg, "certificate verify failed: Hostname mismatch, certificate is not valid for '%s'.", hostname ? hostname : "");
        else if (v == X509_V_ERR_IP_ADDRESS_MISMATCH)
            snprintf(msg, sizeof msg, "certificate verify failed: IP address mismatch, certificate is not valid for '%s'.", hostname ? hostname : "");
        else
            snprintf(msg, sizeof msg, "certificate verify failed: %s", X509_verify_cert_error_string(v));
        return gfl_value_error(GFL_ETLSVERIFY, "SSLCertVerificationError", msg, NULL);
    }
    if (err == SSL_ERROR_SSL && e)
        snprintf(msg, sizeof msg, "%s", reason_of(e));
    else if (err == SSL_ERROR_SYSCALL || err == SSL_ERROR_ZERO_RETURN)
        snprintf(msg, sizeof msg, "EOF occurred in violation of protocol");
    else
        snprintf(msg, sizeof msg, "TLS error %d", err);
    ERR_clear_error();
    return gfl_value_error(GFL_ETLS, "SSLError", msg, NULL);
}

/* ------------------------------------------------------------------ */
/* Callbacks OpenSSL calls                                             */

static int password_cb(char *buf, int size, int rwflag, void *ud)
{
    (void)rwflag;
    const char *pw = ud;
    size_t n = pw ? strlen(pw) : 0;
    if (n > (size_t)size)
        return -1;
    memcpy(buf, pw, n);
    return (int)n;
}

/* Server ALPN: the first of our protocols the client offers (server
 * preference, as CPython); no overlap continues without ALPN. */
static int alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in, unsigned int inlen, void *arg)
{
    gfl_tls_context *c = arg;
    (void)ssl;
    unsigned char *sel = NULL;
    if (SSL_select_next_proto(&sel, outlen, c->alpn, (unsigned)c->alpn_len, in, inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

/* Exact (case-insensitive) or "*.suffix" matching exactly one label. */
static bool sni_match(const char *pattern, const char *name)
{
    if (strcasecmp(pattern, name) == 0)
        return true;
    if (pattern[0] != '*' || pattern[1] != '.')
        return false;
    const char *dot = strchr(name, '.');
    return dot && dot != name && strcasecmp(dot, pattern + 1) == 0;
}

static int servername_cb(SSL *ssl, int *alert, void *arg)
{
    gfl_tls_context *c = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    gfl_tls_context *use = NULL;
    for (size_t i = 0; name && i < c->nsni && !use; i++)
        if (sni_match(c->sni[i].name, name))
            use = c->sni[i].ctx;
    if (c->sni_cb) {
        gfl_transport *t = SSL_get_ex_data(ssl, ex_transport);
        if (c->sni_cb(c->sni_ud, t, name, &use) < 0) {
            *alert = SSL_AD_UNRECOGNIZED_NAME;
            return SSL_TLSEXT_ERR_ALERT_FATAL;
        }
    }
    if (use && use != c) {
        if (!use->server || !SSL_set_SSL_CTX(ssl, use->ssl_ctx)) {
            *alert = SSL_AD_INTERNAL_ERROR;
            return SSL_TLSEXT_ERR_ALERT_FATAL;
        }
    }
    return SSL_TLSEXT_ERR_OK;
}

/* Client session cache: OpenSSL hands over each new session (TLS 1.3
 * tickets arrive after the handshake); keep the newest per server key. */
static int new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    gfl_tls_context *c = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), 0);
    const char *key = SSL_get_ex_data(ssl, ex_session_key);
    if (!c || !key || !SSL_SESSION_is_resumable(sess))
        return 0;
    pthread_mutex_lock(&c->lock);
    struct session_slot *slot = NULL, *oldest = &c->sessions[0];
    for (int i = 0; i < SESSION_SLOTS && !slot; i++) {
        struct session_slot *s = &c->sessions[i];
        if (s->key && strcmp(s->key, key) == 0)
            slot = s;
        else if (!s->key || (oldest->key && s->used < oldest->used))
            oldest = s;
    }
    if (!slot) {
        slot = oldest;
        free(slot->key);
        slot->key = strdup(key);
    }
    if (slot->sess)
        SSL_SESSION_free(slot->sess);
    slot->sess = slot->key ? sess : NULL;
    slot->used = ++c->clock;
    pthread_mutex_unlock(&c->lock);
    return slot->sess ? 1 : 0; /* 1: we keep OpenSSL's reference */
}

/* A new reference to the cached session for `key`, or NULL. */
static SSL_SESSION *session_lookup(gfl_tls_context *c, const char *key)
{
    SSL_SESSION *sess = NULL;
    pthread_mutex_lock(&c->lock);
    for (int i = 0; i < SESSION_SLOTS; i++) {
        struct session_slot *s = &c->sessions[i];
        if (s->key && strcmp(s->key, key) == 0) {
            if (s->sess && SSL_SESSION_is_resumable(s->sess) && SSL_SESSION_up_ref(s->sess))
                sess = s->sess;
            s->used = ++c->clock;
            break;
        }
    }
    pthread_mutex_unlock(&c->lock);
    return sess;
}

/* Insecure on purpose, only reached through insecure_skip_verify. */
static int accept_any_cb(int ok, X509_STORE_CTX *store)
{
    (void)ok;
    (void)store;
    return 1;
}

/* ------------------------------------------------------------------ */
/* Construction                                                        */

/* Whether `opts` (of the caller's size) contains `field`. */
#define HAS(opts, field) ((opts)->size >= offsetof(gfl_tls_context_options, field) + sizeof((opts)->field))

static gfl_value *invalid(const char *msg)
{
    return gfl_value_error(GFL_EINVAL, "ValueError", msg, NULL);
}

static gfl_value *build_alpn(gfl_tls_context *c, const char *const *list)
{
    size_t total = 0, n = 0;
    for (; list[n]; n++) {
        size_t len = strlen(list[n]);
        if (len == 0 || len > 255)
            return invalid("an ALPN protocol name must be 1 to 255 bytes");
        total += len + 1;
    }
    if (n == 0)
        return NULL;
    c->alpn = malloc(total);
    if (!c->alpn)
        return gfl_value_error(GFL_ENOMEM, "MemoryError", NULL, NULL);
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(list[i]);
        c->alpn[c->alpn_len++] = (unsigned char)len;
        memcpy(c->alpn + c->alpn_len, list[i], len);
        c->alpn_len += len;
    }
    return NULL;
}

/* TLS 1.2 is the floor (the header's promise): 1.0 and 1.1 are refused
 * even as a maximum, which would otherwise only fail every handshake. */
static bool version_ok(int v)
{
    return v == 0 || v == GFL_TLS_VERSION_1_2 || v == GFL_TLS_VERSION_1_3;
}

/* Applies the options to c->ssl_ctx; NULL or the error. */
static gfl_value *configure(gfl_tls_context *c, const gfl_tls_context_options *o)
{
    SSL_CTX *sc = c->ssl_ctx;
    if (!version_ok(o->min_version) || !version_ok(o->max_version) || (o->max_version && o->min_version > o->max_version))
        return invalid("min_version/max_version must be GFL_TLS_VERSION_1_2 or GFL_TLS_VERSION_1_3 "
                       "(TLS below 1.2 is refused), min <= max");
    if (o->verify < GFL_TLS_VERIFY_DEFAULT || o->verify > GFL_TLS_VERIFY_REQUIRED)
        return invalid("verify must be a GFL_TLS_VERIFY_* value");
    if (c->server && !o->cert_file)
        return invalid("a server context needs cert_file");
    if (!o->cert_file && o->key_file)
        return invalid("key_file needs cert_file");

    /* Secure defaults: TLS 1.2+, no renegotiation, no compression. */
    SSL_CTX_set_options(sc, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | (c->server ? SSL_OP_CIPHER_SERVER_PREFERENCE : 0));
    SSL_CTX_set_mode(sc, SSL_MODE_RELEASE_BUFFERS);
    if (!SSL_CTX_set_min_proto_version(sc, o->min_version ? o->min_version : TLS1_2_VERSION) ||
        (o->max_version && !SSL_CTX_set_max_proto_version(sc, o->max_version)))
        return ctx_error("cannot set the protocol versions", NULL);
    if (o->ciphers && !SSL_CTX_set_cipher_list(sc, o->ciphers))
        return ctx_error("cannot set ciphers", o->ciphers);
    if (o->ciphersuites && !SSL_CTX_set_ciphersuites(sc, o->ciphersuites))
        return ctx_error("cannot set ciphersuites", o->ciphersuites);

    /* Trust anchors. */
    if ((o->ca_file || o->ca_path) && !SSL_CTX_load_verify_locations(sc, o->ca_file, o->ca_path))
        return ctx_error("cannot load CA certificates from", o->ca_file ? o->ca_file : o->ca_path);
    bool default_cas = o->default_cas > 0 || (o->default_cas == 0 && !c->server);
    if (default_cas && !SSL_CTX_set_default_verify_paths(sc))
        return ctx_error("cannot load the system CA store", NULL);

    /* Our own certificate. */
    if (o->cert_file) {
        SSL_CTX_set_default_passwd_cb(sc, password_cb);
        SSL_CTX_set_default_passwd_cb_userdata(sc, (void *)o->key_password);
        gfl_value *err = NULL;
        if (!SSL_CTX_use_certificate_chain_file(sc, o->cert_file))
            err = ctx_error("cannot load certificate file", o->cert_file);
        else if (!SSL_CTX_use_PrivateKey_file(sc, o->key_file ? o->key_file : o->cert_file, SSL_FILETYPE_PEM))
            err = ctx_error("cannot load private key file", o->key_file ? o->key_file : o->cert_file);
        else if (!SSL_CTX_check_private_key(sc))
            err = ctx_error("the private key does not match the certificate in", o->cert_file);
        /* The password is the caller's: never keep a pointer to it. */
        SSL_CTX_set_default_passwd_cb(sc, NULL);
        SSL_CTX_set_default_passwd_cb_userdata(sc, NULL);
        if (err)
            return err;
    }

    /* Verification. */
    if (c->server) {
        int mode = SSL_VERIFY_NONE;
        if (o->verify == GFL_TLS_VERIFY_OPTIONAL)
            mode = SSL_VERIFY_PEER | SSL_VERIFY_CLIENT_ONCE;
        else if (o->verify == GFL_TLS_VERIFY_REQUIRED)
            mode = SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT | SSL_VERIFY_CLIENT_ONCE;
        SSL_CTX_set_verify(sc, mode, o->insecure_skip_verify ? accept_any_cb : NULL);
        if (mode != SSL_VERIFY_NONE && o->ca_file) {
            /* Tell clients which CAs we accept. */
            STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(o->ca_file);
            if (names)
                SSL_CTX_set_client_CA_list(sc, names);
            ERR_clear_error();
        }
        SSL_CTX_set_tlsext_servername_callback(sc, servername_cb);
        SSL_CTX_set_tlsext_servername_arg(sc, c);
        /* Needed for resumption when client certificates are verified. */
        static const unsigned char sid_ctx[] = "globeflower";
        SSL_CTX_set_session_id_context(sc, sid_ctx, sizeof sid_ctx - 1);
    } else {
        c->verify = !o->insecure_skip_verify;
        c->check_hostname = c->verify && o->check_hostname >= 0;
        SSL_CTX_set_verify(sc, c->verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
    }

    /* ALPN. */
    if (o->alpn_protocols) {
        gfl_value *err = build_alpn(c, o->alpn_protocols);
        if (err)
            return err;
        if (c->alpn_len > 0) {
            if (c->server)
                SSL_CTX_set_alpn_select_cb(sc, alpn_select_cb, c);
            else if (SSL_CTX_set_alpn_protos(sc, c->alpn, (unsigned)c->alpn_len) != 0)
                return ctx_error("cannot set ALPN protocols", NULL);
        }
    }

    /* Sessions. */
    c->session_cache = o->session_cache >= 0;
    if (!c->session_cache) {
        SSL_CTX_set_session_cache_mode(sc, SSL_SESS_CACHE_OFF);
        SSL_CTX_set_options(sc, SSL_OP_NO_TICKET);
        if (c->server)
            SSL_CTX_set_num_tickets(sc, 0);
    } else if (!c->server) {
        SSL_CTX_set_session_cache_mode(sc, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
        SSL_CTX_sess_set_new_cb(sc, new_session_cb);
    }

    if (HAS(o, sni_callback)) {
        c->sni_cb = o->sni_callback;
        c->sni_ud = HAS(o, sni_ud) ? o->sni_ud : NULL;
    }
    if (c->sni_cb && !c->server)
        return invalid("sni_callback is for server contexts");
    return NULL;
}

static void context_free(gfl_tls_context *c)
{
    for (int i = 0; i < SESSION_SLOTS; i++) {
        free(c->sessions[i].key);
        if (c->sessions[i].sess)
            SSL_SESSION_free(c->sessions[i].sess);
    }
    for (size_t i = 0; i < c->nsni; i++) {
        free(c->sni[i].name);
        gfl_tls_context_unref(c->sni[i].ctx);
    }
    free(c->sni);
    free(c->alpn);
    if (c->ssl_ctx)
        SSL_CTX_free(c->ssl_ctx);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

GFL_EXPORT gfl_tls_context *gfl_tls_context_new(const gfl_tls_context_options *opts, gfl_value **error)
{
    if (error)
        *error = NULL;
    if (!opts || opts->size < sizeof(size_t)) {
        if (error)
            *error = invalid("gfl_tls_context_new needs options (with size set)");
        return NULL;
    }
    /* Copy what the caller's struct has; the rest stays zero (default). */
    gfl_tls_context_options o;
    memset(&o, 0, sizeof o);
    memcpy(&o, opts, opts->size < sizeof o ? opts->size : sizeof o);
    o.size = opts->size < sizeof o ? opts->size : sizeof o;

    (void)pthread_once(&ex_once, ex_init);
    gfl_tls_context *c = calloc(1, sizeof *c);
    if (!c) {
        if (error)
            *error = gfl_value_error(GFL_ENOMEM, "MemoryError", NULL, NULL);
        return NULL;
    }
    atomic_init(&c->refs, 1);
    pthread_mutex_init(&c->lock, NULL);
    c->server = o.server != 0;
    ERR_clear_error();
    gfl_value *err = NULL;
    c->ssl_ctx = SSL_CTX_new(c->server ? TLS_server_method() : TLS_client_method());
    if (!c->ssl_ctx || ex_transport < 0 || ex_session_key < 0)
        err = ctx_error("cannot create an SSL context", NULL);
    else if (!SSL_CTX_set_ex_data(c->ssl_ctx, 0, c))
        err = ctx_error("cannot create an SSL context", NULL);
    else
        err = configure(c, &o);
    if (err) {
        if (error)
            *error = err;
        else
            gfl_value_unref(err);
        context_free(c);
        return NULL;
    }
    return c;
}

GFL_EXPORT gfl_tls_context *gfl_tls_context_ref(gfl_tls_context *ctx)
{
    if (!ctx)
        return NULL;
    atomic_fetch_add(&ctx->refs, 1);
    return ctx;
}

GFL_EXPORT void gfl_tls_context_unref(gfl_tls_context *ctx)
{
    if (ctx && atomic_fetch_sub(&ctx->refs, 1) == 1)
        context_free(ctx);
}

GFL_EXPORT int gfl_tls_context_is_server(const gfl_tls_context *ctx)
{
    return ctx ? ctx->server : GFL_EINVAL;
}

GFL_EXPORT int gfl_tls_context_add_sni(gfl_tls_context *ctx, const char *name, gfl_tls_context *use)
{
    if (!ctx || !name || !*name || !use || !ctx->server || !use->server || use == ctx)
        return GFL_EINVAL;
    struct sni_entry *e = realloc(ctx->sni, (ctx->nsni + 1) * sizeof *e);
    if (!e)
        return GFL_ENOMEM;
    ctx->sni = e;
    char *copy = strdup(name);
    if (!copy)
        return GFL_ENOMEM;
    e[ctx->nsni].name = copy;
    e[ctx->nsni].ctx = gfl_tls_context_ref(use);
    ctx->nsni++;
    return GFL_OK;
}

/* ------------------------------------------------------------------ */
/* Per-connection SSL objects                                          */

bool gfl__tls_ctx_verifies(const gfl_tls_context *ctx)
{
    return ctx->verify;
}

bool gfl__tls_ctx_checks_hostname(const gfl_tls_context *ctx)
{
    return ctx->check_hostname;
}

SSL *gfl__tls_ssl_new(gfl_tls_context *ctx, gfl_transport *t, const char *server_hostname, const char *session_key, gfl_value **error)
{
    *error = NULL;
    ERR_clear_error();
    SSL *ssl = SSL_new(ctx->ssl_ctx);
    if (!ssl || !SSL_set_ex_data(ssl, ex_transport, t)) {
        *error = ctx_error("cannot create an SSL connection", NULL);
        if (ssl)
            SSL_free(ssl);
        return NULL;
    }
    if (ctx->server) {
        SSL_set_accept_state(ssl);
        return ssl;
    }
    SSL_set_connect_state(ssl);
    bool ip = server_hostname && is_ip_address(server_hostname);
    bool ok = true;
    /* RFC 6066: SNI carries DNS names only. */
    if (server_hostname && *server_hostname && !ip)
        ok = SSL_set_tlsext_host_name(ssl, server_hostname) == 1;
    if (ok && ctx->check_hostname) {
        if (!server_hostname || !*server_hostname) {
            SSL_free(ssl);
            *error = invalid("server_hostname is required when the hostname is checked");
            return NULL;
        }
        if (ip) {
            ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), server_hostname) == 1;
        } else {
            SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
            ok = SSL_set1_host(ssl, server_hostname) == 1;
        }
    }
    if (ok && session_key && ctx->session_cache) {
        ok = SSL_set_ex_data(ssl, ex_session_key, (void *)session_key) == 1;
        SSL_SESSION *sess = ok ? session_lookup(ctx, session_key) : NULL;
        if (sess) {
            (void)SSL_set_session(ssl, sess);
            SSL_SESSION_free(sess);
        }
    }
    if (!ok) {
        *error = ctx_error("cannot set up the SSL connection for", server_hostname);
        SSL_free(ssl);
        return NULL;
    }
    return ssl;
}

void gfl__tls_ssl_detach(SSL *ssl)
{
    (void)SSL_set_ex_data(ssl, ex_transport, NULL);
    (void)SSL_set_ex_data(ssl, ex_session_key, NULL);
}
