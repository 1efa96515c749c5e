/*
 * Unix stream sockets: pathname and abstract-namespace servers and
 * clients, stale socket files, cleanup on close, errors.
 */
#include "stream_util.h"

#include <sys/stat.h>

static gfl_loop *loop;
static char path[108];

static void setup(void)
{
    loop = gfl_loop_new(NULL);
    cr_assert_not_null(loop);
    snprintf(path, sizeof path, "/tmp/gfl-test-%d.sock", (int)getpid());
    unlink(path);
}

static void teardown(void)
{
    cr_assert_eq(gfl_loop_free(loop), 0);
    unlink(path);
}

TestSuite(unix_sockets, .init = setup, .fini = teardown, .timeout = 60);

static gfl_server *unix_server(struct srv *s, const char *p, size_t len)
{
    gfl_future *f = gfl_create_unix_server(loop, srv_factory, s, srv_release, p, len, NULL);
    gfl_server *server = gfl_server_ref(await_object(loop, f, gfl_server_class()));
    gfl_future_unref(f);
    return server;
}

static gfl_transport *unix_connect(struct rec *c, const char *p, size_t len)
{
    gfl_future *f = gfl_create_unix_connection(loop, one_rec_factory, c, NULL, p, len);
    gfl_transport *t = gfl_transport_ref(await_object(loop, f, gfl_transport_class()));
    gfl_future_unref(f);
    return t;
}

static void echo(const char *p, size_t len)
{
    struct srv s = {.tmpl = {.echo = true}};
    gfl_server *server = unix_server(&s, p, len);
    struct rec c = {.store = true};
    gfl_transport *t = unix_connect(&c, p, len);
    cr_assert_eq(c.made, 1);
    size_t n = 200000;
    unsigned char *data = malloc(n);
    for (size_t i = 0; i < n; i++)
        data[i] = (unsigned char)(i * 7);
    cr_assert_eq(gfl_transport_write(t, data, n), 0);
    RUN_UNTIL(loop, c.len == n, 10);
    cr_assert(memcmp(c.buf, data, n) == 0);

    gfl_value *peer = gfl_transport_get_extra_info(s.recs[0]->t, "sockname");
    const char *pp;
    size_t pl;
    cr_assert_eq(gfl_value_get_bytes(peer, &pp, &pl), 0);
    cr_assert_eq(pl, len ? len : strlen(p));
    cr_assert(memcmp(pp, p, pl) == 0);
    gfl_value_unref(peer);
    cr_assert_eq(gfl_transport_can_write_eof(t), 1);

    gfl_transport_close(t);
    RUN_UNTIL(loop, c.lost == 1, 5);
    gfl_transport_unref(t);
    gfl_server_close(server);
    gfl_server_unref(server);
    srv_finish(loop, &s);
    cr_assert_eq(s.released, 1);
    free(data);
    free(c.buf);
}

Test(unix_sockets, pathname_echo)
{
    echo(path, 0);
    struct stat st;
    cr_assert_eq(stat(path, &st), -1, "the socket file is removed on close");
}

Test(unix_sockets, abstract_echo)
{
    char name[64];
    int n = snprintf(name, sizeof name, "%cgfl-test-abstract-%d", '\0', (int)getpid());
    echo(name, (size_t)n);
}

Test(unix_sockets, stale_socket_file_is_replaced)
{
    /* A socket file left behind by a dead server. */
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    strcpy(sun.sun_path, path);
    cr_assert_eq(bind(fd, (struct sockaddr *)&sun, sizeof sun), 0);
    close(fd);
    echo(path, 0);
}

Test(unix_sockets, connect_to_missing_path)
{
    struct rec c = {0};
    gfl_future *f = gfl_create_unix_connection(loop, one_rec_factory, &c, NULL, path, 0);
    cr_assert_not_null(f);
    RUN_UNTIL(loop, future_done(f), 5);
    gfl_value *e = gfl_future_value(f);
    cr_assert_eq(gfl_value_error_code(e), GFL_ENOENT);
    cr_assert_str_eq(gfl_value_error_type(e), "FileNotFoundError");
    cr_assert_eq(c.made, 0);
    gfl_future_unref(f);
}

Test(unix_sockets, bad_paths)
{
    char longp[200];
    memset(longp, 'a', sizeof longp - 1);
    longp[sizeof longp - 1] = 0;
    cr_assert_null(gfl_create_unix_connection(loop, one_rec_factory, NULL, NULL, longp, 0));
    cr_assert_null(gfl_create_unix_connection(loop, one_rec_factory, NULL, NULL, NULL, 0));
    cr_assert_null(gfl_create_unix_connection(loop, one_rec_factory, NULL, NULL, "", 0));
    cr_assert_null(gfl_create_unix_server(loop, srv_factory, NULL, NULL, longp, 0, NULL));
    cr_assert_null(gfl_create_unix_server(NULL, srv_factory, NULL, NULL, path, 0, NULL));
}

Test(unix_sockets, bind_in_missing_directory_fails)
{
    struct srv s = {0};
    gfl_future *f = gfl_create_unix_server(loop, srv_factory, &s, srv_release, "/nonexistent-dir/x.sock", 0, NULL);
    cr_assert_not_null(f);
    RUN_UNTIL(loop, future_done(f), 5);
    cr_assert_eq(gfl_future_state_of(f), GFL_FUTURE_ERROR);
    cr_assert_eq(gfl_value_error_code(gfl_future_value(f)), GFL_ENOENT);
    cr_assert_eq(s.released, 1, "the factory is released on failure too");
    gfl_future_unref(f);
}

Test(unix_sockets, socketpair_handed_in)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct rec c = {.store = true};
    gfl_future *f = gfl_connect_socket(loop, one_rec_factory, &c, NULL, sv[0]);
    gfl_transport *t = gfl_transport_ref(await_object(loop, f, gfl_transport_class()));
    gfl_future_unref(f);
    cr_assert_eq(write(sv[1], "abc", 3), 3);
    RUN_UNTIL(loop, c.len == 3, 5);
    cr_assert_eq(gfl_transport_write(t, "xyz", 3), 0);
    char buf[3];
    cr_assert_eq(read(sv[1], buf, 3), 3);
    cr_assert(memcmp(buf, "xyz", 3) == 0);
    /* Peer closes: EOF, then connection_lost(NULL). */
    close(sv[1]);
    RUN_UNTIL(loop, c.lost == 1, 5);
    cr_assert_eq(c.eof, 1);
    cr_assert_eq(c.lost_code, 0);
    gfl_transport_unref(t);
    free(c.buf);
}

Test(unix_sockets, server_options_and_paths_are_the_callers)
{
    /* The path is freed right after the calls; the options are an old
     * caller's (only `size`): nothing past it is read. */
    struct scratch m = scratch_new();
    const char *p = scratch_str(&m, path);
    struct srv s = {.tmpl = {.echo = true}};
    gfl_future *f = gfl_create_unix_server(loop, srv_factory, &s, srv_release, p, 0, short_options());
    cr_assert_not_null(f);
    struct rec c = {.store = true};
    gfl_future *cf = gfl_create_unix_connection(loop, one_rec_factory, &c, NULL, p, 0);
    cr_assert_not_null(cf);
    scratch_free(&m);

    gfl_server *server = gfl_server_ref(await_object(loop, f, gfl_server_class()));
    gfl_future_unref(f);
    cr_assert_eq(gfl_server_is_serving(server), 1, "defaults: serving");
    gfl_transport *t = gfl_transport_ref(await_object(loop, cf, gfl_transport_class()));
    gfl_future_unref(cf);
    cr_assert_eq(gfl_transport_write(t, "unix", 4), 0);
    RUN_UNTIL(loop, c.len == 4, 5);
    gfl_transport_close(t);
    RUN_UNTIL(loop, c.lost, 5);
    gfl_transport_unref(t);
    gfl_server_close(server);
    gfl_server_unref(server);
    free(c.buf);
    srv_finish(loop, &s);
    struct stat st;
    cr_assert_neq(stat(path, &st), 0, "the socket file was removed on close");
}
