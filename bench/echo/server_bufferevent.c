/*
 * Echo server on libevent bufferevents: what a libevent program would write.
 *
 * An evconnlistener accepts; each connection is a socket bufferevent whose
 * read callback moves its whole input buffer to its output buffer
 * (bufferevent_write_buffer: evbuffer chains move, no copy). Default
 * bufferevent settings (libevent 2.1 reads at most 16 KiB per read() unless
 * told otherwise). With a write backlog above 4 MiB, reading stops until it
 * drains (watermark), like the other servers' backpressure.
 *
 * --tls: the same on bufferevent_openssl (libevent_openssl), an OpenSSL
 * server context with the given certificate, TLS 1.2 or newer, OpenSSL's
 * default ciphers (the same defaults globeflower's server context uses).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <signal.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "echo_common.h"

#define MAX_QUEUED (4 * 1024 * 1024)

static struct event_base *base;
static SSL_CTX *ssl_ctx;
static bool tcp;

static void write_cb(struct bufferevent *bev, void *arg);
static void event_cb(struct bufferevent *bev, short what, void *arg);

static void read_cb(struct bufferevent *bev, void *arg)
{
    (void)arg;
    struct evbuffer *out = bufferevent_get_output(bev);
    bufferevent_write_buffer(bev, bufferevent_get_input(bev));
    if (evbuffer_get_length(out) > MAX_QUEUED) {
        /* Pause: a write callback only while paused (none per message). */
        bufferevent_disable(bev, EV_READ);
        bufferevent_setwatermark(bev, EV_WRITE, MAX_QUEUED / 4, 0);
        bufferevent_setcb(bev, read_cb, write_cb, event_cb, NULL);
    }
}

static void write_cb(struct bufferevent *bev, void *arg)
{
    (void)arg;
    /* Called at the low watermark: resume reading. */
    bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
    bufferevent_setcb(bev, read_cb, NULL, event_cb, NULL);
    bufferevent_enable(bev, EV_READ);
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)arg;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        bufferevent_free(bev);
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
    (void)l;
    (void)sa;
    (void)salen;
    (void)arg;
    if (tcp)
        echo_nodelay(fd);
    struct bufferevent *bev;
    if (ssl_ctx) {
        SSL *ssl = SSL_new(ssl_ctx);
        if (!ssl) {
            close(fd);
            return;
        }
        bev = bufferevent_openssl_socket_new(base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
    } else {
        bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    }
    if (!bev) {
        close(fd);
        return;
    }
    bufferevent_setcb(bev, read_cb, NULL, event_cb, NULL);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    (void)arg;
    event_base_loopbreak(base);
}

int main(int argc, char **argv)
{
    struct echo_args a;
    if (echo_parse(argc, argv, &a, true, false) < 0)
        return 2;
    signal(SIGPIPE, SIG_IGN);
    base = event_base_new();
    if (!base)
        echo_die("event_base_new");
    if (a.tls) {
        ssl_ctx = SSL_CTX_new(TLS_server_method());
        if (!ssl_ctx || SSL_CTX_set_min_proto_version(ssl_ctx, TLS1_2_VERSION) != 1 ||
            SSL_CTX_use_certificate_chain_file(ssl_ctx, a.cert) != 1 ||
            SSL_CTX_use_PrivateKey_file(ssl_ctx, a.key, SSL_FILETYPE_PEM) != 1) {
            ERR_print_errors_fp(stderr);
            return 1;
        }
    }
    tcp = !a.unix_path;
    int lfd = echo_listen(&a);
    struct evconnlistener *l = evconnlistener_new(base, accept_cb, NULL, LEV_OPT_CLOSE_ON_FREE, -1, lfd);
    if (!l)
        echo_die("evconnlistener_new");
    struct event *sigterm = evsignal_new(base, SIGTERM, on_signal, NULL);
    struct event *sigint = evsignal_new(base, SIGINT, on_signal, NULL);
    if (!sigterm || !sigint || event_add(sigterm, NULL) < 0 || event_add(sigint, NULL) < 0)
        echo_die("evsignal_new");
    echo_print_listening(&a, lfd);
    event_base_dispatch(base);
    echo_print_rusage();
    evconnlistener_free(l);
    event_free(sigterm);
    event_free(sigint);
    event_base_free(base);
    if (ssl_ctx)
        SSL_CTX_free(ssl_ctx);
    return 0;
}
