/*
 * Subprocesses: real children (cat, sh, sleep, head, ls, cut) with pipes,
 * exit codes and signals, spawn errors, reaping (no zombies) and fd hygiene
 * (nothing leaks into the child, nothing is left open in the parent).
 */
#include "stream_util.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>

static gfl_loop *loop;

static void setup(void)
{
    signal(SIGPIPE, SIG_DFL);
    loop = gfl_loop_new(NULL);
    cr_assert_not_null(loop);
}

static void teardown(void)
{
    if (loop)
        cr_assert_eq(gfl_loop_free(loop), 0);
}

TestSuite(process, .init = setup, .fini = teardown, .timeout = 120); /* no per-test .timeout: Criterion leaks it */

/* A recording subprocess protocol. */
struct prec {
    gfl_transport *t;
    int made, exited, lost, paused, resumed;
    int pipe_lost[3];
    int pipe_lost_code[3];
    int lost_code;
    int returncode_at_exit;
    bool order_ok;  /* connection_lost came after process_exited and the pipes */
    bool store;     /* keep stdout/stderr (else count) */
    unsigned char *out[3];
    size_t len[3], cap[3];
    bool close_stdin_on_made;
};

static void p_made(gfl_transport *t, void *ud)
{
    struct prec *r = ud;
    r->t = t;
    r->made++;
    cr_assert_eq(r->exited, 0);
    if (r->close_stdin_on_made)
        cr_assert_eq(gfl_transport_close(gfl_subprocess_get_pipe_transport(t, 0)), 0);
}

static void p_data(gfl_transport *t, int fd, const void *data, size_t len, void *ud)
{
    struct prec *r = ud;
    cr_assert_eq(t, r->t);
    cr_assert(fd == 1 || fd == 2);
    cr_assert_eq(r->made, 1);
    if (r->store) {
        if (r->len[fd] + len > r->cap[fd]) {
            size_t cap = r->cap[fd] ? r->cap[fd] : 4096;
            while (cap < r->len[fd] + len)
                cap *= 2;
            r->out[fd] = realloc(r->out[fd], cap + 1);
            cr_assert_not_null(r->out[fd]);
            r->cap[fd] = cap;
        }
        memcpy(r->out[fd] + r->len[fd], data, len);
        r->out[fd][r->len[fd] + len] = 0;
    }
    r->len[fd] += len;
}

static void p_pipe_lost(gfl_transport *t, int fd, gfl_value *err, void *ud)
{
    struct prec *r = ud;
    cr_assert_eq(t, r->t);
    cr_assert(fd >= 0 && fd <= 2);
    r->pipe_lost[fd]++;
    r->pipe_lost_code[fd] = err ? gfl_value_error_code(err) : 0;
}

static void p_exited(gfl_transport *t, void *ud)
{
    struct prec *r = ud;
    cr_assert_eq(t, r->t);
    r->exited++;
    cr_assert_eq(gfl_subprocess_returncode(t, &r->returncode_at_exit), 1);
}

static void p_lost(gfl_transport *t, gfl_value *err, void *ud)
{
    struct prec *r = ud;
    cr_assert_eq(t, r->t);
    r->lost++;
    r->lost_code = err ? gfl_value_error_code(err) : 0;
    r->order_ok = r->exited == 1 || err != NULL;
    for (int fd = 0; fd < 3; fd++)
        if (gfl_subprocess_get_pipe_transport(t, fd) && r->pipe_lost[fd] != 1)
            r->order_ok = false;
}

static void p_pause(gfl_transport *t, void *ud)
{
    (void)t;
    ((struct prec *)ud)->paused++;
}

static void p_resume(gfl_transport *t, void *ud)
{
    (void)t;
    ((struct prec *)ud)->resumed++;
}

static const gfl_subprocess_protocol pproto = {
    .size = sizeof(gfl_subprocess_protocol),
    .connection_made = p_made,
    .pipe_data_received = p_data,
    .pipe_connection_lost = p_pipe_lost,
    .process_exited = p_exited,
    .connection_lost = p_lost,
    .pause_writing = p_pause,
    .resume_writing = p_resume,
};

static int p_factory(void *fud, gfl_transport *t, const gfl_subprocess_protocol **p, void **ud)
{
    (void)t;
    *p = &pproto;
    *ud = fud;
    return 0;
}

static int released;
static void p_release(void *fud)
{
    (void)fud;
    released++;
}

static void prec_free(struct prec *r)
{
    for (int i = 0; i < 3; i++)
        free(r->out[i]);
}

static gfl_transport *spawn(struct prec *r, gfl_subprocess_options *o)
{
    o->size = sizeof *o;
    gfl_future *f = gfl_subprocess_exec(loop, p_factory, r, p_release, o);
    gfl_transport *t = gfl_transport_ref(await_object(loop, f, gfl_transport_class()));
    gfl_future_unref(f);
    cr_assert_eq(r->made, 1);
    cr_assert_gt(gfl_subprocess_pid(t), 0);
    return t;
}

/* Waits for the end (wait future resolved); returns the returncode and
 * checks that the child was reaped. */
static int finish(gfl_transport *t, struct prec *r)
{
    gfl_future *w = gfl_subprocess_wait(t);
    cr_assert_not_null(w);
    RUN_UNTIL(loop, future_done(w), 30);
    cr_assert_eq(r->lost, 1, "the wait future resolves after connection_lost");
    cr_assert(r->order_ok);
    cr_assert_eq(r->exited, 1);
    int64_t code;
    cr_assert_eq(gfl_value_get_int(gfl_future_value(w), &code), 0);
    gfl_future_unref(w);
    int rc;
    cr_assert_eq(gfl_subprocess_returncode(t, &rc), 1);
    cr_assert_eq(rc, code);
    cr_assert_eq(r->returncode_at_exit, code);
    /* no zombie: the core reaped it */
    pid_t pid = gfl_subprocess_pid(t);
    cr_assert_eq(waitpid(pid, NULL, WNOHANG), -1);
    cr_assert_eq(errno, ECHILD);
    /* a wait after the end is already done */
    w = gfl_subprocess_wait(t);
    cr_assert_eq(gfl_future_state_of(w), GFL_FUTURE_RESULT);
    gfl_future_unref(w);
    cr_assert_eq(gfl_subprocess_send_signal(t, SIGTERM), GFL_ECLOSED);
    gfl_transport_unref(t);
    return (int)code;
}

#define ARGV(...) ((const char *const[]){__VA_ARGS__, NULL})

Test(process, echo_through_cat)
{
    struct prec r = {.store = true};
    gfl_subprocess_options o = {.argv = ARGV("cat")}; /* found in PATH */
    gfl_transport *t = spawn(&r, &o);
    gfl_transport *in = gfl_subprocess_get_pipe_transport(t, 0);
    cr_assert_not_null(in);
    cr_assert_not_null(gfl_subprocess_get_pipe_transport(t, 1));
    cr_assert_not_null(gfl_subprocess_get_pipe_transport(t, 2));
    cr_assert_null(gfl_subprocess_get_pipe_transport(t, 3));
    cr_assert_eq(gfl_transport_write(in, "hello ", 6), 0);
    cr_assert_eq(gfl_transport_write(in, "world\n", 6), 0);
    RUN_UNTIL(loop, r.len[1] == 12, 10);
    cr_assert_str_eq((char *)r.out[1], "hello world\n");
    cr_assert_eq(r.exited, 0);
    int rc;
    cr_assert_eq(gfl_subprocess_returncode(t, &rc), 0, "still running");
    /* EOF on stdin: cat exits 0 */
    cr_assert_eq(gfl_transport_write_eof(in), 0);
    cr_assert_eq(finish(t, &r), 0);
    for (int fd = 0; fd < 3; fd++) {
        cr_assert_eq(r.pipe_lost[fd], 1);
        cr_assert_eq(r.pipe_lost_code[fd], 0);
    }
    cr_assert_eq(r.len[2], 0);
    cr_assert_eq(released, 1);
    prec_free(&r);
}

Test(process, exit_codes)
{
    const int codes[] = {0, 1, 3, 255};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        struct prec r = {0};
        char cmd[32];
        snprintf(cmd, sizeof cmd, "exit %d", codes[i]);
        gfl_subprocess_options o = {.argv = ARGV("sh", "-c", cmd)};
        gfl_transport *t = spawn(&r, &o);
        cr_assert_eq(finish(t, &r), codes[i]);
    }
}

Test(process, terminate_and_kill)
{
    struct prec r = {0};
    gfl_subprocess_options o = {.argv = ARGV("sleep", "10")};
    gfl_transport *t = spawn(&r, &o);
    cr_assert_eq(gfl_subprocess_terminate(t), 0);
    cr_assert_eq(finish(t, &r), -SIGTERM);

    struct prec r2 = {0};
    t = spawn(&r2, &o);
    cr_assert_eq(gfl_subprocess_send_signal(t, 0), GFL_EINVAL);
    cr_assert_eq(gfl_subprocess_send_signal(t, 1000), GFL_EINVAL);
    cr_assert_eq(gfl_subprocess_kill(t), 0);
    cr_assert_eq(finish(t, &r2), -SIGKILL);

    struct prec r3 = {0};
    t = spawn(&r3, &o);
    cr_assert_eq(gfl_subprocess_send_signal(t, SIGUSR1), 0);
    cr_assert_eq(finish(t, &r3), -SIGUSR1);
}

Test(process, large_output_while_writing_large_input)
{
    /* cat: 8 MB in while reading everything out (no deadlock: the write
     * side is buffered and flushed as cat reads) */
    struct prec r = {.store = true};
    gfl_subprocess_options o = {.argv = ARGV("cat")};
    gfl_transport *t = spawn(&r, &o);
    size_t n = 8u << 20;
    unsigned char *data = malloc(n);
    for (size_t i = 0; i < n; i++)
        data[i] = (unsigned char)(i * 131 + (i >> 13));
    gfl_transport *in = gfl_subprocess_get_pipe_transport(t, 0);
    cr_assert_eq(gfl_transport_write(in, data, n), 0);
    cr_assert_gt(gfl_transport_get_write_buffer_size(in), 0);
    cr_assert_eq(r.paused, 1, "the stdin pipe's pause_writing reaches the protocol");
    cr_assert_eq(gfl_transport_write_eof(in), 0);
    cr_assert_eq(finish(t, &r), 0);
    cr_assert_eq(r.resumed, 1);
    cr_assert_eq(r.len[1], n);
    cr_assert(memcmp(r.out[1], data, n) == 0);
    free(data);
    prec_free(&r);

    /* head: 20 MB out, stdin unused */
    struct prec r2 = {0};
    gfl_subprocess_options o2 = {.argv = ARGV("head", "-c", "20000000", "/dev/zero"), .stdio = {GFL_STDIO_DEVNULL}};
    t = spawn(&r2, &o2);
    cr_assert_null(gfl_subprocess_get_pipe_transport(t, 0));
    cr_assert_eq(finish(t, &r2), 0);
    cr_assert_eq(r2.len[1], 20000000);
}

Test(process, stderr_separate_and_to_stdout)
{
    struct prec r = {.store = true};
    gfl_subprocess_options o = {.argv = ARGV("sh", "-c", "echo out; echo err >&2; echo out2"), .stdio = {GFL_STDIO_DEVNULL}};
    gfl_transport *t = spawn(&r, &o);
    cr_assert_eq(finish(t, &r), 0);
    cr_assert_str_eq((char *)r.out[1], "out\nout2\n");
    cr_assert_str_eq((char *)r.out[2], "err\n");
    prec_free(&r);

    struct prec r2 = {.store = true};
    gfl_subprocess_options o2 = {.argv = ARGV("sh", "-c", "echo out; echo err >&2; echo out2"),
                                 .stdio = {GFL_STDIO_DEVNULL, GFL_STDIO_PIPE, GFL_STDIO_STDOUT}};
    t = spawn(&r2, &o2);
    cr_assert_null(gfl_subprocess_get_pipe_transport(t, 2));
    cr_assert_eq(finish(t, &r2), 0);
    cr_assert_str_eq((char *)r2.out[1], "out\nerr\nout2\n");
    cr_assert_eq(r2.len[2], 0);
    cr_assert_eq(r2.pipe_lost[2], 0);
    prec_free(&r2);
}

Test(process, env_and_cwd)
{
    struct prec r = {.store = true};
    gfl_subprocess_options o = {
        .argv = ARGV("sh", "-c", "echo \"$FOO\"; echo \"${HOME:-unset}\"; pwd"),
        .env = ARGV("FOO=bar baz", "PATH=/usr/bin:/bin"),
        .cwd = "/",
        .stdio = {GFL_STDIO_DEVNULL},
    };
    gfl_transport *t = spawn(&r, &o);
    cr_assert_eq(finish(t, &r), 0);
    cr_assert_str_eq((char *)r.out[1], "bar baz\nunset\n/\n");
    prec_free(&r);

    /* env NULL inherits */
    setenv("GFL_TEST_INHERITED", "yes", 1);
    struct prec r2 = {.store = true};
    gfl_subprocess_options o2 = {.argv = ARGV("sh", "-c", "echo $GFL_TEST_INHERITED"), .stdio = {GFL_STDIO_DEVNULL}};
    t = spawn(&r2, &o2);
    cr_assert_eq(finish(t, &r2), 0);
    cr_assert_str_eq((char *)r2.out[1], "yes\n");
    prec_free(&r2);
}

static gfl_future *spawn_fails(gfl_subprocess_options *o)
{
    o->size = sizeof *o;
    struct prec r = {0};
    gfl_future *f = gfl_subprocess_exec(loop, p_factory, &r, p_release, o);
    cr_assert_not_null(f);
    cr_assert_eq(gfl_future_state_of(f), GFL_FUTURE_ERROR, "a spawn error fails the future at once");
    for (int i = 0; i < 3; i++)
        gfl_loop_run_once(loop, 0);
    cr_assert_eq(r.made, 0);
    return f;
}

Test(process, exec_errors_fail_the_future)
{
    int before = count_fds();
    gfl_subprocess_options o = {.argv = ARGV("no-such-program-gfl")};
    gfl_future *f = spawn_fails(&o);
    gfl_value *e = gfl_future_value(f);
    cr_assert_eq(gfl_value_error_code(e), GFL_ENOENT);
    cr_assert_str_eq(gfl_value_error_type(e), "FileNotFoundError");
    cr_assert(strstr(gfl_value_error_message(e), "'no-such-program-gfl'") != NULL, "%s", gfl_value_error_message(e));
    gfl_future_unref(f);

    gfl_subprocess_options o2 = {.argv = ARGV("/nonexistent/prog")};
    f = spawn_fails(&o2);
    cr_assert_str_eq(gfl_value_error_type(gfl_future_value(f)), "FileNotFoundError");
    gfl_future_unref(f);

    gfl_subprocess_options o3 = {.argv = ARGV("/etc/passwd")}; /* not executable */
    f = spawn_fails(&o3);
    cr_assert_eq(gfl_value_error_code(gfl_future_value(f)), GFL_EACCES);
    cr_assert_str_eq(gfl_value_error_type(gfl_future_value(f)), "PermissionError");
    gfl_future_unref(f);

    gfl_subprocess_options o4 = {.argv = ARGV("true"), .cwd = "/nonexistent-dir-gfl"};
    f = spawn_fails(&o4);
    cr_assert_str_eq(gfl_value_error_type(gfl_future_value(f)), "FileNotFoundError");
    cr_assert(strstr(gfl_value_error_message(gfl_future_value(f)), "nonexistent-dir-gfl") != NULL);
    gfl_future_unref(f);

    /* `file` overrides argv[0]; an env without PATH searches /bin:/usr/bin */
    struct prec r = {.store = true};
    gfl_subprocess_options o5 = {.argv = ARGV("custom-name", "-c", "echo $0"), .file = "sh", .env = ARGV("X=1"), .stdio = {GFL_STDIO_DEVNULL}};
    gfl_transport *t = spawn(&r, &o5);
    cr_assert_eq(finish(t, &r), 0);
    cr_assert_str_eq((char *)r.out[1], "custom-name\n");
    prec_free(&r);

    cr_assert_eq(released, 5);
    cr_assert_eq(count_fds(), before, "failed spawns leave no fd behind");
    cr_assert_eq(waitpid(-1, NULL, WNOHANG), -1, "and no child");
    cr_assert_eq(errno, ECHILD);
}

/* Names of the fds open in `ls`, one per line (ls -1 /proc/self/fd). */
static void child_fds(const gfl_subprocess_options *tmpl, char *out, size_t size)
{
    struct prec r = {.store = true};
    gfl_subprocess_options o = *tmpl;
    o.argv = ARGV("ls", "-1", "/proc/self/fd");
    o.stdio[0] = GFL_STDIO_DEVNULL;
    gfl_transport *t = spawn(&r, &o);
    cr_assert_eq(finish(t, &r), 0);
    snprintf(out, size, "%s", r.out[1] ? (char *)r.out[1] : "");
    prec_free(&r);
}

Test(process, no_fd_leaks_into_the_child)
{
    /* an fd the host forgot to mark CLOEXEC, and a high one */
    int leaky = dup(1);
    cr_assert_geq(leaky, 3);
    int high = fcntl(1, F_DUPFD, 200);
    cr_assert_geq(high, 200);
    char out[4096];
    gfl_subprocess_options o = {0};
    child_fds(&o, out, sizeof out);
    /* 0, 1, 2 and the directory ls is reading */
    cr_assert_str_eq(out, "0\n1\n2\n3\n", "child fds: %s", out);

    /* pass_fds keeps some; inherit_fds keeps every non-CLOEXEC one */
    int pass[] = {high};
    gfl_subprocess_options o2 = {.pass_fds = pass, .npass_fds = 1};
    child_fds(&o2, out, sizeof out);
    char want[64];
    snprintf(want, sizeof want, "0\n1\n2\n%d\n3\n", high); /* ls sorts by name */
    cr_assert_str_eq(out, want);
    gfl_subprocess_options o3 = {.inherit_fds = 1};
    child_fds(&o3, out, sizeof out);
    char leak[16];
    snprintf(leak, sizeof leak, "\n%d\n", leaky);
    cr_assert(strstr(out, leak) != NULL, "child fds: %s", out);
    close(leaky);
    close(high);
}

Test(process, pass_fds_and_given_fds)
{
    int p[2];
    cr_assert_eq(pipe(p), 0);
    int w = fcntl(p[1], F_DUPFD_CLOEXEC, 50);
    close(p[1]);
    char cmd[64]; /* (dash redirects only single-digit fds with >&N) */
    snprintf(cmd, sizeof cmd, "echo via-pass-fd > /proc/self/fd/%d", w);
    struct prec r = {0};
    int pass[] = {w};
    gfl_subprocess_options o = {.argv = ARGV("sh", "-c", cmd), .pass_fds = pass, .npass_fds = 1, .stdio = {GFL_STDIO_DEVNULL}};
    gfl_transport *t = spawn(&r, &o);
    cr_assert_eq(finish(t, &r), 0);
    char buf[64] = {0};
    cr_assert_eq(read(p[0], buf, sizeof buf - 1), 12);
    cr_assert_str_eq(buf, "via-pass-fd\n");

    /* stdout to a caller's fd (which stays the caller's) */
    struct prec r2 = {0};
    gfl_subprocess_options o2 = {.argv = ARGV("echo", "given"), .stdio = {GFL_STDIO_DEVNULL, GFL_STDIO_FD, GFL_STDIO_INHERIT}, .stdio_fd = {0, w, 0}};
    t = spawn(&r2, &o2);
    cr_assert_null(gfl_subprocess_get_pipe_transport(t, 1));
    cr_assert_eq(finish(t, &r2), 0);
    cr_assert_geq(fcntl(w, F_GETFD), 0, "a given fd is left open");
    memset(buf, 0, sizeof buf);
    cr_assert_eq(read(p[0], buf, sizeof buf - 1), 6);
    cr_assert_str_eq(buf, "given\n");

    /* stdin from a caller's fd: /dev/null gives EOF at once */
    struct prec r3 = {.store = true};
    gfl_subprocess_options o3 = {.argv = ARGV("cat"), .stdio = {GFL_STDIO_DEVNULL}};
    t = spawn(&r3, &o3);
    cr_assert_eq(finish(t, &r3), 0);
    cr_assert_eq(r3.len[1], 0);
    close(w);
    close(p[0]);
}

Test(process, no_fd_leak_in_the_parent_over_many_spawns)
{
    int before = count_fds();
    int cycles = 200;
    for (int i = 0; i < cycles; i++) {
        struct prec r = {0};
        gfl_subprocess_options o = {.argv = ARGV("true")};
        if (i % 2)
            o.stdio[2] = GFL_STDIO_STDOUT;
        gfl_transport *t = spawn(&r, &o);
        cr_assert_eq(finish(t, &r), 0);
    }
    cr_assert_eq(count_fds(), before);
    cr_assert_eq(released, cycles);
}

Test(process, close_kills_a_running_child)
{
    struct prec r = {0};
    gfl_subprocess_options o = {.argv = ARGV("sleep", "10")};
    gfl_transport *t = spawn(&r, &o);
    pid_t pid = gfl_subprocess_pid(t);
    gfl_value *v = gfl_transport_get_extra_info(t, "pid");
    int64_t pv;
    cr_assert_eq(gfl_value_get_int(v, &pv), 0);
    cr_assert_eq(pv, pid);
    gfl_value_unref(v);
    cr_assert_eq(gfl_transport_close(t), 0);
    cr_assert_eq(gfl_transport_is_closing(t), 1);
    cr_assert_eq(finish(t, &r), -SIGKILL);
    cr_assert_eq(kill(pid, 0), -1);
}

Test(process, closing_stdin_in_connection_made)
{
    struct prec r = {.close_stdin_on_made = true, .store = true};
    gfl_subprocess_options o = {.argv = ARGV("sh", "-c", "cat; echo done")};
    gfl_transport *t = spawn(&r, &o);
    cr_assert_eq(finish(t, &r), 0);
    cr_assert_str_eq((char *)r.out[1], "done\n");
    prec_free(&r);
}

Test(process, pidfd_fallback_polls)
{
    setenv("GFL_NO_PIDFD", "1", 1);
    struct prec r = {0};
    gfl_subprocess_options o = {.argv = ARGV("sh", "-c", "exit 7")};
    gfl_transport *t = spawn(&r, &o);
    cr_assert_eq(finish(t, &r), 7);
    struct prec r2 = {0};
    gfl_subprocess_options o2 = {.argv = ARGV("sleep", "10")};
    t = spawn(&r2, &o2);
    cr_assert_eq(gfl_subprocess_terminate(t), 0);
    cr_assert_eq(finish(t, &r2), -SIGTERM);
    unsetenv("GFL_NO_PIDFD");
}

/* Field `n` (1-based) of the child's /proc/<pid>/stat, read by `cut`
 * exec'd directly (so /proc/self is the child itself). */
static long stat_field_of_child(gfl_subprocess_options *o, int n, pid_t *pid)
{
    struct prec r = {.store = true};
    char field[8];
    snprintf(field, sizeof field, "-f%d", n);
    o->argv = ARGV("cut", "-d", " ", field, "/proc/self/stat");
    o->stdio[0] = GFL_STDIO_DEVNULL;
    gfl_transport *t = spawn(&r, o);
    *pid = gfl_subprocess_pid(t);
    cr_assert_eq(finish(t, &r), 0);
    long v = strtol((char *)r.out[1], NULL, 10);
    prec_free(&r);
    return v;
}

Test(process, new_session_and_process_group)
{
    pid_t pid;
    gfl_subprocess_options o = {.start_new_session = 1};
    cr_assert_eq(stat_field_of_child(&o, 6, &pid), pid, "session id");
    gfl_subprocess_options o2 = {.process_group = -1};
    cr_assert_eq(stat_field_of_child(&o2, 5, &pid), pid, "process group id");
    gfl_subprocess_options o3 = {0};
    cr_assert_eq(stat_field_of_child(&o3, 5, &pid), getpgrp(), "the parent's group");
}

Test(process, signal_mask_and_dispositions_reset)
{
    /* a caught signal and a blocked one in the parent */
    signal(SIGUSR2, SIG_IGN);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    struct prec r = {.store = true};
    gfl_subprocess_options o = {.argv = ARGV("sh", "-c", "grep -E '^(SigBlk|SigIgn)' /proc/self/status"), .stdio = {GFL_STDIO_DEVNULL}};
    gfl_transport *t = spawn(&r, &o);
    cr_assert_eq(finish(t, &r), 0);
    /* grep's own status: nothing blocked; SIGUSR2 (12, bit 11) still
     * ignored, as exec keeps ignored signals */
    cr_assert(strstr((char *)r.out[1], "SigBlk:\t0000000000000000") != NULL, "%s", r.out[1]);
    unsigned long long ign = 0;
    const char *p = strstr((char *)r.out[1], "SigIgn:\t");
    cr_assert_not_null(p);
    ign = strtoull(p + 8, NULL, 16);
    cr_assert(ign & (1ull << (SIGUSR2 - 1)));
    cr_assert_eq(ign & (1ull << (SIGPIPE - 1)), 0, "SIGPIPE back to default");
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    prec_free(&r);
}

Test(process, loop_close_kills_and_reaps)
{
    struct prec r = {0};
    gfl_subprocess_options o = {.argv = ARGV("sleep", "10")};
    gfl_transport *t = spawn(&r, &o);
    pid_t pid = gfl_subprocess_pid(t);
    gfl_future *w = gfl_subprocess_wait(t);
    cr_assert_eq(gfl_loop_free(loop), 0);
    loop = NULL;
    cr_assert_eq(r.lost, 1);
    cr_assert_eq(r.lost_code, GFL_ECLOSED);
    for (int fd = 0; fd < 3; fd++)
        cr_assert_eq(r.pipe_lost[fd], 1, "the pipes are lost first");
    cr_assert(r.order_ok);
    cr_assert_eq(waitpid(pid, NULL, WNOHANG), -1, "reaped during gfl_loop_free");
    cr_assert_eq(errno, ECHILD);
    cr_assert_eq(gfl_future_state_of(w), GFL_FUTURE_RESULT);
    int64_t code;
    cr_assert_eq(gfl_value_get_int(gfl_future_value(w), &code), 0);
    cr_assert_eq(code, -SIGKILL);
    int rc;
    cr_assert_eq(gfl_subprocess_returncode(t, &rc), 1);
    cr_assert_eq(rc, -SIGKILL);
    gfl_future_unref(w);
    gfl_transport_unref(t);
}

static int refusing_factory(void *fud, gfl_transport *t, const gfl_subprocess_protocol **p, void **ud)
{
    (void)fud;
    (void)p;
    (void)ud;
    *(pid_t *)fud = gfl_subprocess_pid(t);
    return GFL_EPERM;
}

Test(process, factory_refusal_kills_the_child)
{
    int before = count_fds();
    pid_t pid = 0;
    gfl_subprocess_options o = {.size = sizeof o, .argv = ARGV("sleep", "10")};
    gfl_future *f = gfl_subprocess_exec(loop, refusing_factory, &pid, NULL, &o);
    cr_assert_eq(gfl_future_state_of(f), GFL_FUTURE_ERROR);
    cr_assert_eq(gfl_value_error_code(gfl_future_value(f)), GFL_EPERM);
    gfl_future_unref(f);
    cr_assert_gt(pid, 0);
    cr_assert_eq(waitpid(pid, NULL, WNOHANG), -1);
    cr_assert_eq(errno, ECHILD);
    cr_assert_eq(count_fds(), before);
}

Test(process, stdin_flow_control_and_broken_pipe)
{
    struct prec r = {0};
    gfl_subprocess_options o = {.argv = ARGV("sleep", "10")};
    gfl_transport *t = spawn(&r, &o);
    gfl_transport *in = gfl_subprocess_get_pipe_transport(t, 0);
    cr_assert_eq(gfl_transport_set_write_buffer_limits(in, 1000, 100), 0);
    static char big[1 << 20];
    cr_assert_eq(gfl_transport_write(in, big, sizeof big), 0);
    cr_assert_eq(r.paused, 1);
    /* the child dies with data pending: stdin's pipe is lost with EPIPE */
    cr_assert_eq(gfl_subprocess_kill(t), 0);
    cr_assert_eq(finish(t, &r), -SIGKILL);
    cr_assert_eq(r.pipe_lost_code[0], GFL_EPIPE);
    cr_assert_eq(r.pipe_lost_code[1], 0);
}

Test(process, pipe_transports_are_usable)
{
    struct prec r = {.store = true};
    gfl_subprocess_options o = {.argv = ARGV("cat")};
    gfl_transport *t = spawn(&r, &o);
    gfl_transport *in = gfl_subprocess_get_pipe_transport(t, 0), *out = gfl_subprocess_get_pipe_transport(t, 1);
    cr_assert_eq(gfl_transport_can_write_eof(in), 1);
    cr_assert_eq(gfl_transport_can_write_eof(out), 0);
    gfl_value *v = gfl_transport_get_extra_info(out, "pipe");
    cr_assert_not_null(v);
    gfl_value_unref(v);
    cr_assert_eq(gfl_transport_pause_reading(out), 0);
    cr_assert_eq(gfl_transport_write(in, "abc", 3), 0);
    for (int i = 0; i < 5; i++)
        gfl_loop_run_once(loop, 0.01);
    cr_assert_eq(r.len[1], 0, "stdout paused");
    cr_assert_eq(gfl_transport_resume_reading(out), 0);
    RUN_UNTIL(loop, r.len[1] == 3, 5);
    /* the process transport itself moves no bytes */
    cr_assert_eq(gfl_transport_write(t, "x", 1), GFL_ENOSYS);
    cr_assert_eq(gfl_transport_fileno(t), GFL_ENOSYS);
    /* subprocess calls on a pipe transport are refused */
    cr_assert_eq(gfl_subprocess_pid(in), GFL_EINVAL);
    cr_assert_null(gfl_subprocess_wait(in));
    cr_assert_eq(gfl_transport_close(in), 0);
    cr_assert_eq(finish(t, &r), 0);
    prec_free(&r);
}

static void other_exited(gfl_transport *t, void *ud)
{
    (void)t;
    (*(int *)ud)++;
}

Test(process, set_and_get_protocol)
{
    struct prec r = {0};
    gfl_subprocess_options o = {.argv = ARGV("sh", "-c", "read x"), .stdio = {GFL_STDIO_PIPE, GFL_STDIO_DEVNULL, GFL_STDIO_DEVNULL}};
    gfl_transport *t = spawn(&r, &o);
    const gfl_subprocess_protocol *p;
    void *ud;
    cr_assert_eq(gfl_subprocess_get_protocol(t, &p, &ud), 0);
    cr_assert_eq(p, &pproto);
    cr_assert_eq(ud, &r);
    static const gfl_subprocess_protocol small = {
        .size = offsetof(gfl_subprocess_protocol, connection_lost),
        .process_exited = other_exited,
    };
    int exited = 0;
    cr_assert_eq(gfl_subprocess_set_protocol(t, &small, &exited), 0);
    cr_assert_eq(gfl_transport_write(gfl_subprocess_get_pipe_transport(t, 0), "line\n", 5), 0);
    gfl_future *w = gfl_subprocess_wait(t);
    RUN_UNTIL(loop, future_done(w), 10);
    cr_assert_eq(exited, 1);
    cr_assert_eq(r.exited + r.lost, 0);
    gfl_future_unref(w);
    gfl_transport_unref(t);
}

Test(process, bad_arguments)
{
    struct prec r = {0};
    gfl_subprocess_options o = {.size = sizeof o, .argv = ARGV("true")};
    cr_assert_null(gfl_subprocess_exec(NULL, p_factory, &r, NULL, &o));
    cr_assert_null(gfl_subprocess_exec(loop, NULL, &r, NULL, &o));
    cr_assert_null(gfl_subprocess_exec(loop, p_factory, &r, NULL, NULL));
    gfl_subprocess_options bad = o;
    bad.argv = NULL;
    cr_assert_null(gfl_subprocess_exec(loop, p_factory, &r, NULL, &bad));
    bad = o;
    bad.argv = ARGV(NULL);
    cr_assert_null(gfl_subprocess_exec(loop, p_factory, &r, NULL, &bad));
    bad = o;
    bad.stdio[0] = GFL_STDIO_STDOUT;
    cr_assert_null(gfl_subprocess_exec(loop, p_factory, &r, NULL, &bad));
    bad = o;
    bad.stdio[1] = 99;
    cr_assert_null(gfl_subprocess_exec(loop, p_factory, &r, NULL, &bad));
    bad = o;
    bad.stdio[1] = GFL_STDIO_FD;
    bad.stdio_fd[1] = 987;
    cr_assert_null(gfl_subprocess_exec(loop, p_factory, &r, NULL, &bad));
    bad = o;
    int pf[] = {1};
    bad.pass_fds = pf;
    bad.npass_fds = 1;
    cr_assert_null(gfl_subprocess_exec(loop, p_factory, &r, NULL, &bad));
    bad = o;
    bad.process_group = -5;
    cr_assert_null(gfl_subprocess_exec(loop, p_factory, &r, NULL, &bad));
    cr_assert_eq(gfl_subprocess_pid(NULL), GFL_EINVAL);
    int rc;
    cr_assert_eq(gfl_subprocess_returncode(NULL, &rc), GFL_EINVAL);
    cr_assert_null(gfl_subprocess_wait(NULL));
    cr_assert_eq(gfl_subprocess_send_signal(NULL, SIGTERM), GFL_EINVAL);
    cr_assert_eq(gfl_subprocess_terminate(NULL), GFL_EINVAL);
    cr_assert_eq(gfl_subprocess_kill(NULL), GFL_EINVAL);
    cr_assert_null(gfl_subprocess_get_pipe_transport(NULL, 0));
    cr_assert_eq(gfl_subprocess_set_protocol(NULL, &pproto, NULL), GFL_EINVAL);
    cr_assert_eq(gfl_subprocess_get_protocol(NULL, NULL, NULL), GFL_EINVAL);
    cr_assert_eq(r.made, 0);
    /* an older, shorter options struct */
    struct prec r2 = {0};
    gfl_subprocess_options old = {.argv = ARGV("true")};
    old.size = offsetof(gfl_subprocess_options, stdio);
    gfl_future *f = gfl_subprocess_exec(loop, p_factory, &r2, NULL, &old);
    gfl_transport *t = gfl_transport_ref(await_object(loop, f, gfl_transport_class()));
    gfl_future_unref(f);
    cr_assert_eq(gfl_subprocess_returncode(t, NULL), GFL_EINVAL);
    cr_assert_eq(finish(t, &r2), 0);
}

/* ------------------------------------------------------------------ */
/* Every allocation of a subprocess's life may fail                    */

struct counting_allocator {
    long allocations, fail_at, live, failures;
};

static void *counting_realloc(void *ud, void *ptr, size_t size)
{
    struct counting_allocator *a = ud;
    if (size == 0) {
        if (ptr)
            a->live--;
        free(ptr);
        return NULL;
    }
    a->allocations++;
    if (a->fail_at && a->allocations == a->fail_at) {
        a->failures++;
        return NULL;
    }
    void *p = realloc(ptr, size);
    if (p && !ptr)
        a->live++;
    return p;
}

/* cat with every pipe: write, wait for the echo, close stdin, wait; the
 * loop is freed with whatever is left (a child still running is killed
 * and reaped). Tolerant of any failure. */
static void alloc_scenario(struct counting_allocator *a)
{
    gfl_loop_options lo = {.size = sizeof lo, .realloc = counting_realloc, .realloc_ud = a};
    gfl_loop *l = gfl_loop_new(&lo);
    if (!l)
        return;
    struct prec r = {0};
    gfl_subprocess_options o = {.size = sizeof o, .argv = ARGV("cat")};
    gfl_future *f = gfl_subprocess_exec(l, p_factory, &r, NULL, &o);
    gfl_future *w = NULL;
    for (int i = 0; i < 200 && f && !future_done(f); i++)
        cr_assert_geq(gfl_loop_run_once(l, 0.005), 0);
    if (r.t) {
        w = gfl_subprocess_wait(r.t);
        gfl_transport *in = gfl_subprocess_get_pipe_transport(r.t, 0);
        int rc = gfl_transport_write(in, "ping", 4);
        cr_assert(rc == 0 || rc == GFL_ENOMEM || rc == GFL_ECLOSED, "%d", rc);
        for (int i = 0; i < 200 && r.len[1] < 4 && !r.lost; i++)
            cr_assert_geq(gfl_loop_run_once(l, 0.005), 0);
        (void)gfl_transport_write_eof(in);
        for (int i = 0; i < 200 && !r.lost; i++)
            cr_assert_geq(gfl_loop_run_once(l, 0.005), 0);
    }
    cr_assert_eq(gfl_loop_free(l), 0);
    cr_assert_eq(r.lost, r.made);
    gfl_future_unref(f);
    gfl_future_unref(w);
    cr_assert_eq(waitpid(-1, NULL, WNOHANG), -1, "no child left behind");
    cr_assert_eq(errno, ECHILD);
}

Test(process, every_allocation_may_fail)
{
    int fds = count_fds();
    struct counting_allocator ref = {0};
    alloc_scenario(&ref);
    cr_assert_eq(ref.live, 0);
    cr_assert_gt(ref.allocations, 10);
    for (long n = 1; n <= ref.allocations + 5; n++) {
        struct counting_allocator a = {.fail_at = n};
        alloc_scenario(&a);
        cr_assert_eq(a.live, 0, "failing allocation %ld of %ld leaked %ld blocks", n, ref.allocations, a.live);
    }
    cr_assert_eq(count_fds(), fds);
}

Test(process, options_are_copied)
{
    /* argv, env, cwd, file and pass_fds are the caller's: freed at once. */
    int keep = open("/dev/null", O_RDONLY | O_CLOEXEC);
    cr_assert_geq(keep, 3);
    char script[128];
    snprintf(script, sizeof script, "echo \"$FOO\"; pwd; test -e /proc/self/fd/%d && echo kept", keep);
    struct scratch m = scratch_new();
    gfl_subprocess_options *o = scratch_alloc(&m, sizeof *o);
    o->size = sizeof *o;
    o->argv = scratch_strv(&m, ARGV("sh", "-c", script));
    o->file = scratch_str(&m, "sh");
    o->env = scratch_strv(&m, ARGV("FOO=from the heap", "PATH=/usr/bin:/bin"));
    o->cwd = scratch_str(&m, "/");
    o->stdio[0] = GFL_STDIO_DEVNULL;
    int *fds = scratch_alloc(&m, sizeof *fds);
    fds[0] = keep;
    o->pass_fds = fds;
    o->npass_fds = 1;
    struct prec r = {.store = true};
    gfl_future *f = gfl_subprocess_exec(loop, p_factory, &r, p_release, o);
    cr_assert_not_null(f);
    scratch_free(&m);
    gfl_transport *t = gfl_transport_ref(await_object(loop, f, gfl_transport_class()));
    gfl_future_unref(f);
    cr_assert_eq(finish(t, &r), 0);
    cr_assert_str_eq((char *)r.out[1], "from the heap\n/\nkept\n");
    prec_free(&r);
    close(keep);
}
