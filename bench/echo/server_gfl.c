/*
 * Echo server on globeflower (public API only).
 *
 * The protocol style (default): gfl_create_server with a protocol whose
 * data_received writes the bytes straight back (gfl_transport_write: the
 * send() is tried at once, only a remainder is copied). --buffered: the
 * buffered protocol instead (get_buffer hands out one shared 256 KiB buffer,
 * buffer_updated writes from it). --tls: gfl_create_tls_server with the
 * given certificate (protocol style only; TLS is OpenSSL on memory BIOs).
 *
 * Backpressure like the other echo servers: pause_writing pauses reading,
 * resume_writing resumes it, with the write-buffer limits set to 4 MiB /
 * 1 MiB (the epoll and bufferevent servers stop reading above 4 MiB queued;
 * asyncio's default 64 KiB would make a 100 KiB echo pause and resume
 * reading on every message, which the others do not do).
 *
 * SIGTERM/SIGINT stop the loop (gfl_add_signal_handler); RUSAGE follows.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <signal.h>

#include "globeflower.h"

#include "echo_common.h"

#define HIGH_WATER (4 * 1024 * 1024)
#define BUF_SIZE (256 * 1024)

static char shared_buf[BUF_SIZE];

static void made(gfl_transport *t, void *ud)
{
    (void)ud;
    (void)gfl_transport_set_write_buffer_limits(t, HIGH_WATER, HIGH_WATER / 4);
}

static void data_received(gfl_transport *t, const void *data, size_t len, void *ud)
{
    (void)ud;
    (void)gfl_transport_write(t, data, len);
}

static void *get_buffer(gfl_transport *t, size_t hint, size_t *size, void *ud)
{
    (void)t;
    (void)hint;
    (void)ud;
    *size = sizeof shared_buf;
    return shared_buf;
}

static void buffer_updated(gfl_transport *t, size_t n, void *ud)
{
    (void)ud;
    (void)gfl_transport_write(t, shared_buf, n);
}

static void pause_writing(gfl_transport *t, void *ud)
{
    (void)ud;
    (void)gfl_transport_pause_reading(t);
}

static void resume_writing(gfl_transport *t, void *ud)
{
    (void)ud;
    (void)gfl_transport_resume_reading(t);
}

static const gfl_protocol echo_protocol = {
    .size = sizeof(gfl_protocol),
    .connection_made = made,
    .data_received = data_received,
    .pause_writing = pause_writing,
    .resume_writing = resume_writing,
};

static const gfl_protocol echo_buffered_protocol = {
    .size = sizeof(gfl_protocol),
    .connection_made = made,
    .pause_writing = pause_writing,
    .resume_writing = resume_writing,
    .get_buffer = get_buffer,
    .buffer_updated = buffer_updated,
};

static int factory(void *fud, gfl_transport *t, const gfl_protocol **proto, void **ud)
{
    (void)t;
    *proto = fud;
    *ud = NULL;
    return 0;
}

static void on_signal(void *arg)
{
    gfl_loop_stop(arg);
}

static void *await_object(gfl_loop *loop, gfl_future *f, const gfl_host_class *cls, const char *what)
{
    while (gfl_future_state_of(f) == GFL_FUTURE_PENDING)
        gfl_loop_run_once(loop, -1);
    void *obj = NULL;
    gfl_value *v = gfl_future_value(f);
    if (gfl_future_state_of(f) != GFL_FUTURE_RESULT || gfl_value_get_object(v, cls, &obj) < 0) {
        fprintf(stderr, "server_gfl: %s: %s\n", what, v ? gfl_value_error_message(v) : "failed");
        exit(1);
    }
    return obj;
}

int main(int argc, char **argv)
{
    struct echo_args a;
    if (echo_parse(argc, argv, &a, true, true) < 0)
        return 2;
    if (a.tls && (a.buffered || a.unix_path)) {
        fprintf(stderr, "server_gfl: --tls is TCP with the protocol style only\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    gfl_loop *loop = gfl_loop_new(NULL);
    if (!loop)
        echo_die("gfl_loop_new");
    if (gfl_add_signal_handler(loop, SIGTERM, on_signal, loop) < 0 || gfl_add_signal_handler(loop, SIGINT, on_signal, loop) < 0)
        echo_die("gfl_add_signal_handler");

    const gfl_protocol *proto = a.buffered ? &echo_buffered_protocol : &echo_protocol;
    const char *hosts[] = {a.host, NULL};
    gfl_server_options so = {.size = sizeof so, .hosts = hosts, .port = a.port, .backlog = 1024};
    gfl_tls_context *ctx = NULL;
    gfl_future *f;
    if (a.unix_path) {
        f = gfl_create_unix_server(loop, factory, (void *)proto, NULL, a.unix_path, 0, &so);
    } else if (a.tls) {
        gfl_tls_context_options co = {.size = sizeof co, .server = 1, .cert_file = a.cert, .key_file = a.key};
        gfl_value *err = NULL;
        ctx = gfl_tls_context_new(&co, &err);
        if (!ctx) {
            fprintf(stderr, "server_gfl: TLS context: %s\n", err ? gfl_value_error_message(err) : "failed");
            return 1;
        }
        gfl_tls_options to = {.size = sizeof to, .context = ctx};
        f = gfl_create_tls_server(loop, factory, (void *)proto, NULL, &so, &to);
    } else {
        f = gfl_create_server(loop, factory, (void *)proto, NULL, &so);
    }
    if (!f)
        echo_die("create server");
    gfl_server *server = gfl_server_ref(await_object(loop, f, gfl_server_class(), "create server"));
    gfl_future_unref(f);

    if (a.unix_path) {
        printf("LISTENING unix=%s\n", a.unix_path);
        fflush(stdout);
    } else {
        echo_print_listening(&a, gfl_server_socket_fd(server, 0));
    }
    gfl_loop_run(loop);
    echo_print_rusage();
    gfl_server_close(server);
    gfl_server_unref(server);
    gfl_loop_free(loop);
    if (ctx)
        gfl_tls_context_unref(ctx);
    return 0;
}
