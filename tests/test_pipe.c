/*
 * Pipe transports: the read end and the write end of existing fds.
 * SIGPIPE keeps its default disposition here: a write to a pipe whose
 * reader left must not kill the process.
 */
#include "stream_util.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

static gfl_loop *loop;

static void setup(void)
{
    signal(SIGPIPE, SIG_DFL);
    loop = gfl_loop_new(NULL);
    cr_assert_not_null(loop);
}

static void teardown(void)
{
    cr_assert_eq(gfl_loop_free(loop), 0);
}

TestSuite(pipes, .init = setup, .fini = teardown, .timeout = 60);

static gfl_transport *open_end(struct rec *r, int fd, bool write_end)
{
    gfl_future *f = write_end ? gfl_connect_write_pipe(loop, one_rec_factory, r, NULL, fd)
                              : gfl_connect_read_pipe(loop, one_rec_factory, r, NULL, fd);
    gfl_transport *t = gfl_transport_ref(await_object(loop, f, gfl_transport_class()));
    gfl_future_unref(f);
    cr_assert_eq(r->made, 1);
    return t;
}

Test(pipes, read_pipe_data_then_eof)
{
    int p[2];
    cr_assert_eq(pipe(p), 0);
    struct rec r = {.store = true};
    gfl_transport *t = open_end(&r, p[0], false);
    cr_assert(fcntl(p[0], F_GETFL) & O_NONBLOCK);
    cr_assert(fcntl(p[0], F_GETFD) & FD_CLOEXEC);
    cr_assert_eq(gfl_transport_can_write_eof(t), 0);
    cr_assert_eq(gfl_transport_write(t, "x", 1), GFL_ENOSYS);
    gfl_value *v = gfl_transport_get_extra_info(t, "pipe");
    int64_t fd;
    cr_assert_eq(gfl_value_get_int(v, &fd), 0);
    cr_assert_eq(fd, p[0]);
    gfl_value_unref(v);
    cr_assert_eq(write(p[1], "hello", 5), 5);
    RUN_UNTIL(loop, r.len == 5, 5);
    cr_assert(memcmp(r.buf, "hello", 5) == 0);
    /* pause_reading holds data back */
    cr_assert_eq(gfl_transport_pause_reading(t), 0);
    cr_assert_eq(gfl_transport_is_reading(t), 0);
    cr_assert_eq(write(p[1], "more", 4), 4);
    for (int i = 0; i < 5; i++)
        gfl_loop_run_once(loop, 0.01);
    cr_assert_eq(r.len, 5);
    cr_assert_eq(gfl_transport_resume_reading(t), 0);
    RUN_UNTIL(loop, r.len == 9, 5);
    close(p[1]);
    RUN_UNTIL(loop, r.lost == 1, 5);
    cr_assert_eq(r.eof, 1);
    cr_assert_eq(r.lost_code, 0);
    cr_assert_eq(fcntl(p[0], F_GETFD), -1, "the transport closed its fd");
    gfl_transport_unref(t);
    free(r.buf);
}

Test(pipes, write_pipe_and_flow_control)
{
    int p[2];
    cr_assert_eq(pipe(p), 0);
    struct rec r = {0};
    gfl_transport *t = open_end(&r, p[1], true);
    cr_assert_eq(gfl_transport_can_write_eof(t), 1);
    cr_assert_eq(gfl_transport_set_write_buffer_limits(t, 4096, 1024), 0);
    static char big[1 << 20];
    memset(big, 'z', sizeof big);
    /* A pipe holds 64 KiB: the rest is buffered and pause_writing fires. */
    cr_assert_eq(gfl_transport_write(t, big, sizeof big), 0);
    cr_assert_eq(r.paused, 1);
    cr_assert_gt(gfl_transport_get_write_buffer_size(t), 0);
    /* Drain from the other end (blocking reads). */
    size_t got = 0;
    static char buf[65536];
    while (got < sizeof big) {
        gfl_loop_run_once(loop, 0.001);
        ssize_t n = read(p[0], buf, sizeof buf);
        cr_assert_gt(n, 0);
        for (ssize_t i = 0; i < n; i++)
            cr_assert_eq(buf[i], 'z');
        got += (size_t)n;
    }
    RUN_UNTIL(loop, r.resumed == 1, 5);
    cr_assert_eq(gfl_transport_get_write_buffer_size(t), 0);
    /* write_eof closes a pipe (it has no half-close). */
    cr_assert_eq(gfl_transport_write_eof(t), 0);
    RUN_UNTIL(loop, r.lost == 1, 5);
    cr_assert_eq(read(p[0], buf, 1), 0, "the reader sees EOF");
    gfl_transport_unref(t);
    close(p[0]);
}

Test(pipes, reader_leaves_with_data_pending_no_sigpipe)
{
    int p[2];
    cr_assert_eq(pipe(p), 0);
    struct rec r = {0};
    gfl_transport *t = open_end(&r, p[1], true);
    static char big[256 * 1024];
    cr_assert_eq(gfl_transport_write(t, big, sizeof big), 0);
    cr_assert_gt(gfl_transport_get_write_buffer_size(t), 0);
    close(p[0]); /* the reader goes away */
    RUN_UNTIL(loop, r.lost == 1, 5);
    cr_assert_eq(r.lost_code, GFL_EPIPE);
    cr_assert_str_eq(r.lost_type, "BrokenPipeError");
    gfl_transport_unref(t);
}

Test(pipes, write_into_a_closed_pipe_no_sigpipe)
{
    int p[2];
    cr_assert_eq(pipe(p), 0);
    struct rec r = {0};
    gfl_transport *t = open_end(&r, p[1], true);
    close(p[0]);
    /* Written before the loop noticed: EPIPE, not a signal. */
    int rc = gfl_transport_write(t, "x", 1);
    cr_assert_eq(rc, GFL_EPIPE);
    RUN_UNTIL(loop, r.lost == 1, 5);
    cr_assert_eq(r.lost_code, GFL_EPIPE);
    gfl_transport_unref(t);
}

Test(pipes, idle_writer_sees_reader_leave)
{
    int p[2];
    cr_assert_eq(pipe(p), 0);
    struct rec r = {0};
    gfl_transport *t = open_end(&r, p[1], true);
    close(p[0]);
    RUN_UNTIL(loop, r.lost == 1, 5);
    cr_assert_eq(r.lost_code, 0, "nothing was lost: a clean close");
    gfl_transport_unref(t);
}

Test(pipes, rejects_regular_files_and_bad_fds)
{
    char tmpl[] = "/tmp/gfl-pipe-XXXXXX";
    int fd = mkstemp(tmpl);
    cr_assert_geq(fd, 0);
    unlink(tmpl);
    cr_assert_null(gfl_connect_read_pipe(loop, one_rec_factory, NULL, NULL, fd));
    cr_assert_null(gfl_connect_write_pipe(loop, one_rec_factory, NULL, NULL, fd));
    close(fd);
    cr_assert_null(gfl_connect_read_pipe(loop, one_rec_factory, NULL, NULL, -1));
    cr_assert_null(gfl_connect_read_pipe(loop, NULL, NULL, NULL, 0));
    cr_assert_null(gfl_connect_read_pipe(NULL, one_rec_factory, NULL, NULL, 0));
}

Test(pipes, write_pipe_on_a_pty_stays_open_when_the_terminal_is_readable)
{
    /* A pty slave polls readable whenever the master writes: that must not
     * be taken for "the reader left" (only FIFOs and sockets mean that). */
    int master = posix_openpt(O_RDWR | O_NOCTTY);
    cr_assert_geq(master, 0);
    cr_assert_eq(grantpt(master), 0);
    cr_assert_eq(unlockpt(master), 0);
    int slave = open(ptsname(master), O_RDWR | O_NOCTTY);
    cr_assert_geq(slave, 0);
    struct rec r = {0};
    gfl_transport *t = open_end(&r, slave, true);
    cr_assert_eq(write(master, "typed\n", 6), 6); /* the slave is now readable */
    for (int i = 0; i < 20; i++)
        gfl_loop_run_once(loop, 0.01);
    cr_assert_eq(r.lost, 0, "the transport stayed open");
    cr_assert_eq(gfl_transport_write(t, "out\n", 4), 0);
    for (int i = 0; i < 5; i++)
        gfl_loop_run_once(loop, 0.01);
    char buf[64];
    ssize_t n = read(master, buf, sizeof buf);
    cr_assert_gt(n, 0, "what the transport wrote reached the terminal");
    gfl_transport_close(t);
    RUN_UNTIL(loop, r.lost == 1, 5);
    gfl_transport_unref(t);
    close(master);
}
