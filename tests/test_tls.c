/*
 * TLS over streams, against the real `openssl s_server` / `openssl
 * s_client` programs and against ourselves: handshakes both ways,
 * verification failures (self-signed, wrong host, expired), client
 * certificates, SNI, ALPN, session resumption, start_tls, close_notify,
 * garbage instead of TLS, timeouts, flow control.
 *
 * Certificates are generated for each test by tests/tls/make-certs.sh into
 * a temporary directory (nothing private is committed). openssl processes
 * run on free loopback ports, die with the test process
 * (PR_SET_PDEATHSIG) and are killed at teardown; every wait is bounded.
 */
#include "stream_util.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>

#ifndef GFL_TEST_SRCDIR
#define GFL_TEST_SRCDIR "."
#endif

static gfl_loop *loop;
static char dir[64];
static char openssl_bin[512];

#define MAX_PEERS 4
struct peer {
    bool used;
    pid_t pid; /* 0 once reaped */
    int in; /* its stdin (-1: closed) */
    char log[128];
};
/* Static: teardown reaches them after the test function returned. */
static struct peer peers[MAX_PEERS];

/* ------------------------------------------------------------------ */
/* Processes and files                                                 */

/* dir/name, in one of a few rotating buffers. */
static const char *cert(const char *name)
{
    static char bufs[8][160];
    static int next;
    char *b = bufs[next++ % 8];
    snprintf(b, sizeof bufs[0], "%s/%s", dir, name);
    return b;
}

static void find_openssl(void)
{
    const char *path = getenv("PATH");
    char copy[4096];
    snprintf(copy, sizeof copy, "%s", path ? path : "/usr/bin:/bin");
    for (char *p = strtok(copy, ":"); p; p = strtok(NULL, ":")) {
        snprintf(openssl_bin, sizeof openssl_bin, "%s/openssl", p);
        if (access(openssl_bin, X_OK) == 0)
            return;
    }
    cr_assert_fail("the openssl program is not in PATH");
}

static int wait_exit(pid_t pid, double timeout)
{
    double deadline = now_s() + timeout;
    int status;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return status;
        if (r < 0)
            return -1;
        if (now_s() > deadline)
            return -2;
        usleep(5000);
    }
}

static void run_script(void)
{
    char script[512];
    snprintf(script, sizeof script, "%s/tests/tls/make-certs.sh", GFL_TEST_SRCDIR);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0)
            dup2(devnull, 1);
        execl("/bin/sh", "sh", script, dir, (char *)NULL);
        _exit(127);
    }
    int status = wait_exit(pid, 60);
    cr_assert(status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0, "make-certs.sh failed (status %d)", status);
}

static void setup(void)
{
    signal(SIGPIPE, SIG_IGN);
    loop = gfl_loop_new(NULL);
    cr_assert_not_null(loop);
    snprintf(dir, sizeof dir, "/tmp/gfl-tls-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    find_openssl();
    run_script();
}

static void peer_stop(struct peer *p)
{
    if (p->in >= 0)
        close(p->in);
    p->in = -1;
    if (p->pid > 0) {
        kill(p->pid, SIGTERM);
        if (wait_exit(p->pid, 5) == -2) {
            kill(p->pid, SIGKILL);
            (void)wait_exit(p->pid, 5);
        }
        p->pid = 0;
    }
}

static void remove_dir(void)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char p[512];
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') {
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            unlink(p);
        }
    closedir(d);
    rmdir(dir);
}

static void teardown(void)
{
    for (int i = 0; i < MAX_PEERS; i++)
        if (peers[i].used) {
            peer_stop(&peers[i]);
            peers[i].used = false;
        }
    if (loop)
        cr_assert_eq(gfl_loop_free(loop), 0);
    loop = NULL;
    if (!getenv("GFL_TLS_KEEP")) /* keep the certificates and logs for debugging */
        remove_dir();
}

TestSuite(tls, .init = setup, .fini = teardown, .timeout = 120);

/* Starts `openssl args...` (NULL-terminated) with stdin a pipe and
 * stdout+stderr into dir/<logname>. */
static struct peer *peer_start(const char *logname, const char *const *args)
{
    struct peer *p = NULL;
    for (int i = 0; i < MAX_PEERS && !p; i++)
        if (!peers[i].used)
            p = &peers[i];
    cr_assert_not_null(p, "too many peers");
    const char *argv[64];
    int n = 0;
    argv[n++] = "openssl";
    for (int i = 0; args[i] && n < 63; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    snprintf(p->log, sizeof p->log, "%s", cert(logname));
    /* Close-on-exec: the child must not keep its own stdin's writer. */
    int fds[2];
    cr_assert_eq(pipe2(fds, O_CLOEXEC), 0);
    int logfd = open(p->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    cr_assert_geq(logfd, 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the test */
        dup2(fds[0], 0);
        dup2(logfd, 1);
        dup2(logfd, 2);
        execv(openssl_bin, (char *const *)argv);
        _exit(127);
    }
    close(fds[0]);
    close(logfd);
    p->used = true;
    p->pid = pid;
    p->in = fds[1];
    return p;
}

/* The log so far (static buffer). */
static const char *peer_log(struct peer *p)
{
    static char buf[256 * 1024];
    FILE *f = fopen(p->log, "r");
    size_t n = 0;
    if (f) {
        n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
    }
    buf[n] = '\0';
    return buf;
}

static bool log_has(struct peer *p, const char *s)
{
    return strstr(peer_log(p), s) != NULL;
}

/* Whether one line of the log contains both a and b. */
static bool log_line_has(struct peer *p, const char *a, const char *b)
{
    const char *log = peer_log(p);
    for (const char *line = log; line && *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        char tmp[1024];
        snprintf(tmp, sizeof tmp, "%.*s", (int)(len < sizeof tmp ? len : sizeof tmp - 1), line);
        if (strstr(tmp, a) && strstr(tmp, b))
            return true;
        line = end ? end + 1 : NULL;
    }
    return false;
}

/* Waits (without the loop) for a log line, the peer's readiness. */
static void wait_log(struct peer *p, const char *s)
{
    double deadline = now_s() + 20;
    while (!log_has(p, s)) {
        cr_assert_lt(now_s(), deadline, "openssl never printed \"%s\"; its log:\n%s", s, peer_log(p));
        int status;
        cr_assert_eq(waitpid(p->pid, &status, WNOHANG), 0, "openssl exited early; its log:\n%s", peer_log(p));
        usleep(10000);
    }
}

static void peer_write(struct peer *p, const char *s)
{
    cr_assert_eq(write(p->in, s, strlen(s)), (ssize_t)strlen(s));
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

/* openssl s_server on 127.0.0.1:port with dir/<name>.pem/.key, plus
 * extra arguments; returns once it listens. */
static struct peer *s_server(int port, const char *name, const char *const *extra)
{
    char accept[32], crt[64], key[64];
    snprintf(accept, sizeof accept, "127.0.0.1:%d", port);
    snprintf(crt, sizeof crt, "%s.pem", name);
    snprintf(key, sizeof key, "%s.key", name);
    const char *args[48] = {"s_server", "-accept", accept, "-cert", cert(crt), "-key", cert(key)};
    int n = 7;
    for (int i = 0; extra && extra[i] && n < 47; i++)
        args[n++] = extra[i];
    args[n] = NULL;
    struct peer *p = peer_start("s_server.log", args);
    wait_log(p, "ACCEPT");
    return p;
}

/* ------------------------------------------------------------------ */
/* Our side                                                            */

static gfl_tls_context *make_ctx(const gfl_tls_context_options *o)
{
    gfl_value *err = NULL;
    gfl_tls_context *c = gfl_tls_context_new(o, &err);
    cr_assert_not_null(c, "gfl_tls_context_new: %s", err ? gfl_value_error_message(err) : "?");
    return c;
}

/* A client context trusting the test CA only (loading the system store
 * is slow under valgrind; the tests of the defaults use it). */
static gfl_tls_context *client_ctx(void)
{
    gfl_tls_context_options o = {.size = sizeof o, .ca_file = cert("ca.pem"), .default_cas = -1};
    return make_ctx(&o);
}

static gfl_tls_context *server_ctx(const char *name)
{
    char crt[64], key[64];
    snprintf(crt, sizeof crt, "%s.pem", name);
    snprintf(key, sizeof key, "%s.key", name);
    gfl_tls_context_options o = {.size = sizeof o, .server = 1, .cert_file = cert(crt), .key_file = cert(key)};
    return make_ctx(&o);
}

static gfl_future *tls_connect_ex(struct rec *r, const gfl_protocol *proto, gfl_tls_context *ctx, int port, const char *hostname, double hs_timeout)
{
    (void)proto;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    gfl_connect_options co = {.size = sizeof co, .host = "127.0.0.1", .port = ps};
    gfl_tls_options to = {.size = sizeof to, .context = ctx, .server_hostname = hostname, .handshake_timeout = hs_timeout, .shutdown_timeout = 5};
    gfl_future *f = gfl_create_tls_connection(loop, one_rec_factory, r, NULL, &co, &to);
    cr_assert_not_null(f);
    return f;
}

static gfl_future *tls_connect(struct rec *r, gfl_tls_context *ctx, int port, const char *hostname)
{
    return tls_connect_ex(r, NULL, ctx, port, hostname, 0);
}

/* The transport of a successful connect (a new reference). */
static gfl_transport *await_transport(gfl_future *f)
{
    gfl_transport *t = gfl_transport_ref(await_object(loop, f, gfl_transport_class()));
    gfl_future_unref(f);
    return t;
}

/* The error of a failed future (borrowed; valid until f is unreffed). */
static gfl_value *await_error(gfl_future *f)
{
    RUN_UNTIL(loop, future_done(f), 20);
    cr_assert_eq(gfl_future_state_of(f), GFL_FUTURE_ERROR, "the future did not fail (state %d)", gfl_future_state_of(f));
    return gfl_future_value(f);
}

static gfl_server *start_tls_server(struct srv *s, gfl_tls_context *ctx, int *port)
{
    const char *hosts[] = {"127.0.0.1", NULL};
    gfl_server_options so = {.size = sizeof so, .hosts = hosts, .port = "0"};
    gfl_tls_options to = {.size = sizeof to, .context = ctx, .shutdown_timeout = 5};
    gfl_future *f = gfl_create_tls_server(loop, srv_factory, s, srv_release, &so, &to);
    gfl_server *server = gfl_server_ref(await_object(loop, f, gfl_server_class()));
    gfl_future_unref(f);
    struct sockaddr_in sa;
    size_t len = sizeof sa;
    cr_assert_eq(gfl_server_get_sockaddr(server, 0, &sa, &len), 0);
    *port = ntohs(sa.sin_port);
    return server;
}

/* A string extra-info value copied into buf ("" when absent). */
static const char *info(gfl_transport *t, const char *name)
{
    static char bufs[4][512];
    static int next;
    char *b = bufs[next++ % 4];
    b[0] = '\0';
    gfl_value *v = gfl_transport_get_extra_info(t, name);
    const char *p;
    size_t len;
    if (v && gfl_value_get_bytes(v, &p, &len) == 0)
        snprintf(b, sizeof bufs[0], "%.*s", (int)len, p);
    gfl_value_unref(v);
    return b;
}

static int info_bool(gfl_transport *t, const char *name)
{
    gfl_value *v = gfl_transport_get_extra_info(t, name);
    int b = -1;
    if (v)
        cr_assert_eq(gfl_value_get_bool(v, &b), 0);
    gfl_value_unref(v);
    return b;
}

static void close_and_wait(gfl_transport *t, struct rec *r)
{
    cr_assert_eq(gfl_transport_close(t), 0);
    RUN_UNTIL(loop, r->lost == 1, 20);
    gfl_transport_unref(t);
}

static void expect_bytes(struct rec *r, const char *want)
{
    size_t n = strlen(want);
    RUN_UNTIL(loop, r->len >= n || r->lost, 20);
    cr_assert_eq(r->len, n, "got %zu bytes: %.*s", r->len, (int)r->len, r->buf ? (char *)r->buf : "");
    cr_assert(memcmp(r->buf, want, n) == 0, "got %.*s", (int)n, (char *)r->buf);
}

/* ------------------------------------------------------------------ */
/* Client against s_server                                             */

Test(tls, client_handshake_and_echo_with_s_server)
{
    int port = free_port();
    (void)s_server(port, "server", (const char *[]){"-rev", "-naccept", "1", NULL});
    gfl_tls_context *ctx = client_ctx();
    struct rec r = {.store = true};
    gfl_transport *t = await_transport(tls_connect(&r, ctx, port, "localhost"));
    cr_assert_eq(r.made, 1);
    cr_assert_eq(r.t, t);

    cr_assert_eq(gfl_transport_write(t, "hello world\n", 12), 0);
    expect_bytes(&r, "dlrow olleh\n");

    cr_assert(strncmp(info(t, "tls_version"), "TLSv1.", 6) == 0, "tls_version %s", info(t, "tls_version"));
    cr_assert_neq(info(t, "cipher")[0], '\0');
    cr_assert_str_eq(info(t, "server_hostname"), "localhost");
    cr_assert(strstr(info(t, "peercert_pem"), "BEGIN CERTIFICATE") != NULL);
    gfl_value *der = gfl_transport_get_extra_info(t, "peercert");
    cr_assert_not_null(der);
    cr_assert_eq(gfl_value_type_of(der), GFL_VALUE_BYTES);
    gfl_value_unref(der);
    cr_assert_eq(info_bool(t, "session_reused"), 0);
    cr_assert_str_eq(info(t, "alpn_protocol"), "");
    /* The stream's own names pass through. */
    char want[32];
    snprintf(want, sizeof want, "127.0.0.1:%d", port);
    cr_assert_str_eq(info(t, "peername"), want);
    cr_assert_geq(gfl_transport_fileno(t), 0);
    cr_assert_eq(gfl_transport_can_write_eof(t), 0);
    cr_assert_eq(gfl_transport_write_eof(t), GFL_ENOSYS);

    close_and_wait(t, &r);
    cr_assert_eq(r.lost_code, 0, "connection_lost(%s)", r.lost_type);
    gfl_tls_context_unref(ctx);
    free(r.buf);
}

/* IP addresses are verified against the certificate's IP SAN. */
Test(tls, ip_address_verified)
{
    int port = free_port();
    (void)s_server(port, "server", (const char *[]){"-rev", "-naccept", "1", NULL});
    gfl_tls_context *ctx = client_ctx();
    struct rec r = {.store = true};
    gfl_transport *t = await_transport(tls_connect(&r, ctx, port, "127.0.0.1"));
    cr_assert_eq(gfl_transport_write(t, "ab\n", 3), 0);
    expect_bytes(&r, "ba\n");
    close_and_wait(t, &r);
    gfl_tls_context_unref(ctx);
    free(r.buf);
}

Test(tls, sni_seen_by_s_server)
{
    int port = free_port();
    struct peer *sv = s_server(port, "server",
             (const char *[]){"-rev", "-naccept", "1", "-servername", "other.test", "-cert2", cert("other.pem"), "-key2", cert("other.key"), NULL});
    gfl_tls_context *ctx = client_ctx();
    struct rec r = {.store = true};
    gfl_transport *t = await_transport(tls_connect(&r, ctx, port, "other.test"));
    cr_assert_eq(gfl_transport_write(t, "sni\n", 4), 0);
    expect_bytes(&r, "ins\n");
    cr_assert(strstr(info(t, "peercert_pem"), "BEGIN") != NULL);
    close_and_wait(t, &r);
    /* s_server's output is buffered: read it once it exited. */
    cr_assert_neq(wait_exit(sv->pid, 10), -2, "s_server did not finish");
    sv->pid = 0;
    cr_assert(log_has(sv, "Hostname in TLS extension: \"other.test\""), "log:\n%s", peer_log(sv));
    cr_assert(log_has(sv, "Switching server context"));
    gfl_tls_context_unref(ctx);
    free(r.buf);
}

Test(tls, alpn_with_s_server)
{
    int port = free_port();
    (void)s_server(port, "server", (const char *[]){"-rev", "-naccept", "1", "-alpn", "foo,bar", NULL});
    const char *alpn[] = {"bar", "baz", NULL};
    gfl_tls_context_options o = {.size = sizeof o, .ca_file = cert("ca.pem"), .alpn_protocols = alpn};
    gfl_tls_context *ctx = make_ctx(&o);
    struct rec r = {.store = true};
    gfl_transport *t = await_transport(tls_connect(&r, ctx, port, "localhost"));
    cr_assert_str_eq(info(t, "alpn_protocol"), "bar");
    cr_assert_eq(gfl_transport_write(t, "x\n", 2), 0);
    expect_bytes(&r, "x\n");
    close_and_wait(t, &r);
    gfl_tls_context_unref(ctx);
    free(r.buf);
}

/* ---- verification failures ---- */

static void expect_verify_failure(const char *server_cert, const char *hostname, bool with_ca, const char *reason)
{
    int port = free_port();
    (void)s_server(port, server_cert, (const char *[]){"-rev", "-naccept", "1", NULL});
    gfl_tls_context_options o = {.size = sizeof o, .ca_file = with_ca ? cert("ca.pem") : NULL};
    gfl_tls_context *ctx = make_ctx(&o);
    struct rec r = {0};
    gfl_future *f = tls_connect(&r, ctx, port, hostname);
    gfl_value *e = await_error(f);
    cr_assert_str_eq(gfl_value_error_type(e), "SSLCertVerificationError", "%s: %s", gfl_value_error_type(e), gfl_value_error_message(e));
    cr_assert_eq(gfl_value_error_code(e), GFL_ETLSVERIFY);
    cr_assert(strstr(gfl_value_error_message(e), reason) != NULL, "message: %s", gfl_value_error_message(e));
    cr_assert_eq(r.made, 0, "no protocol for a failed handshake");
    gfl_future_unref(f);
    gfl_tls_context_unref(ctx);
}

Test(tls, self_signed_rejected_by_default)
{
    /* The default client context: the system CA store, nothing else. */
    expect_verify_failure("self", "localhost", false, "certificate verify failed: self-signed certificate");
}

Test(tls, wrong_hostname_rejected)
{
    expect_verify_failure("server", "wrong.example", true, "Hostname mismatch, certificate is not valid for 'wrong.example'");
}

Test(tls, wrong_ip_rejected)
{
    expect_verify_failure("other", "127.0.0.1", true, "IP address mismatch");
}

Test(tls, expired_certificate_rejected)
{
    expect_verify_failure("expired", "localhost", true, "certificate verify failed: certificate has expired");
}

Test(tls, untrusted_ca_rejected)
{
    /* A chain to a CA we do not trust (the system store does not know ours). */
    expect_verify_failure("server", "localhost", false, "unable to get local issuer certificate");
}

/* Only the explicitly named option turns verification off. */
Test(tls, insecure_skip_verify_is_explicit)
{
    int port = free_port();
    (void)s_server(port, "self", (const char *[]){"-rev", "-naccept", "1", NULL});
    gfl_tls_context_options o = {.size = sizeof o, .insecure_skip_verify = 1};
    gfl_tls_context *ctx = make_ctx(&o);
    struct rec r = {.store = true};
    gfl_transport *t = await_transport(tls_connect(&r, ctx, port, "anything.example"));
    cr_assert_eq(gfl_transport_write(t, "ok\n", 3), 0);
    expect_bytes(&r, "ko\n");
    close_and_wait(t, &r);
    gfl_tls_context_unref(ctx);
    free(r.buf);
}

/* ---- client certificates against s_server ---- */

Test(tls, client_certificate_required_by_s_server)
{
    int port = free_port();
    struct peer *sv = s_server(port, "server",
             (const char *[]){"-rev", "-naccept", "1", "-Verify", "1", "-CAfile", cert("ca.pem"), "-verify_return_error", NULL});
    gfl_tls_context_options o = {.size = sizeof o, .ca_file = cert("ca.pem"), .cert_file = cert("client.pem"), .key_file = cert("client.key")};
    gfl_tls_context *ctx = make_ctx(&o);
    struct rec r = {.store = true};
    gfl_transport *t = await_transport(tls_connect(&r, ctx, port, "localhost"));
    cr_assert_eq(gfl_transport_write(t, "cert\n", 5), 0);
    expect_bytes(&r, "trec\n");
    cr_assert(log_has(sv, "globeflower test client"), "log:\n%s", peer_log(sv));
    close_and_wait(t, &r);
    gfl_tls_context_unref(ctx);
    free(r.buf);
}

/* Without a certificate the server refuses. With TLS 1.3 the client's
 * handshake may already be complete then: the refusal arrives either as
 * the connect's error or as connection_lost's. */
static void expect_refused(gfl_future *f, struct rec *r, const char *reason)
{
    RUN_UNTIL(loop, future_done(f), 20);
    gfl_value *e = NULL;
    gfl_transport *t = NULL;
    if (gfl_future_state_of(f) == GFL_FUTURE_ERROR) {
        e = gfl_future_value(f);
        cr_assert_str_eq(gfl_value_error_type(e), "SSLError", "%s", gfl_value_error_message(e));
        cr_assert(strstr(gfl_value_error_message(e), reason) != NULL, "message: %s", gfl_value_error_message(e));
        gfl_future_unref(f);
        return;
    }
    t = await_transport(f);
    (void)gfl_transport_write(t, "x\n", 2);
    RUN_UNTIL(loop, r->lost == 1, 20);
    cr_assert_str_eq(r->lost_type, "SSLError");
    cr_assert_eq(r->lost_code, GFL_ETLS);
    cr_assert_eq(r->len, 0);
    gfl_transport_unref(t);
}

Test(tls, missing_client_certificate_refused_by_s_server)
{
    int port = free_port();
    (void)s_server(port, "server",
             (const char *[]){"-rev", "-naccept", "1", "-Verify", "1", "-CAfile", cert("ca.pem"), "-verify_return_error", NULL});
    gfl_tls_context *ctx = client_ctx();
    struct rec r = {.store = true};
    expect_refused(tls_connect(&r, ctx, port, "localhost"), &r, "certificate required");
    gfl_tls_context_unref(ctx);
    free(r.buf);
}

/* ---- close_notify ---- */

Test(tls, close_sends_close_notify)
{
    int port = free_port();
    struct peer *sv = s_server(port, "server", (const char *[]){"-rev", "-naccept", "1", "-msg", NULL});
    gfl_tls_context *ctx = client_ctx();
    struct rec r = {.store = true};
    gfl_transport *t = await_transport(tls_connect(&r, ctx, port, "localhost"));
    cr_assert_eq(gfl_transport_write(t, "bye\n", 4), 0);
    expect_bytes(&r, "eyb\n");
    close_and_wait(t, &r);
    cr_assert_eq(r.lost_code, 0);
    cr_assert_neq(wait_exit(sv->pid, 10), -2, "s_server did not finish");
    sv->pid = 0;
    cr_assert(log_line_has(sv, "<<<", "close_notify"), "s_server saw no close_notify; log:\n%s", peer_log(sv));
    gfl_tls_context_unref(ctx);
    free(r.buf);
}

Test(tls, abort_skips_close_notify)
{
    int port = free_port();
    struct peer *sv = s_server(port, "server", (const char *[]){"-rev", "-naccept", "1", "-msg", NULL});
    gfl_tls_context *ctx = client_ctx();
    struct rec r = {.store = true};
    gfl_transport *t = await_transport(tls_connect(&r, ctx, port, "localhost"));
    cr_assert_eq(gfl_transport_write(t, "bye\n", 4), 0);
    expect_bytes(&r, "eyb\n");
    cr_assert_eq(gfl_transport_abort(t), 0);
    RUN_UNTIL(loop, r.lost == 1, 10);
    cr_assert_eq(r.lost_code, 0);
    gfl_transport_unref(t);
    cr_assert_neq(wait_exit(sv->pid, 10), -2, "s_server did not finish");
    sv->pid = 0;
    cr_assert(!log_line_has(sv, "<<<", "close_notify"), "abort sent close_notify; log:\n%s", peer_log(sv));
    gfl_tls_context_unref(ctx);
    free(r.buf);
}

/* ------------------------------------------------------------------ */
/* s_client against our server                                         */

Test(tls, s_client_handshake_alpn_and_close_notify)
{
    const char *alpn[] = {"http/1.1", "h2", NULL};
    gfl_tls_context_options o = {.size = sizeof o, .server = 1, .cert_file = cert("server.pem"), .key_file = cert("server.key"), .alpn_protocols = alpn};
    gfl_tls_context *ctx = make_ctx(&o);
    struct srv s = {.tmpl = {.echo = true, .store = true}};
    int port;
    gfl_server *server = start_tls_server(&s, ctx, &port);
    char connect[32];
    snprintf(connect, sizeof connect, "127.0.0.1:%d", port);
    struct peer *cl = peer_start("s_client.log",
               (const char *[]){"s_client", "-connect", connect, "-CAfile", cert("ca.pem"), "-verify_return_error", "-servername", "localhost",
                                "-alpn", "h2,http/1.1", NULL});
    peer_write(cl, "ping-from-s_client\n");
    RUN_UNTIL(loop, log_has(cl, "ping-from-s_client"), 20);
    const char *log = peer_log(cl);
    cr_assert(strstr(log, "Verify return code: 0 (ok)") != NULL, "log:\n%s", log);
    cr_assert(strstr(log, "ALPN protocol: http/1.1") != NULL, "log:\n%s", log);
    cr_assert(strstr(log, "TLSv1.3") != NULL, "log:\n%s", log);
    cr_assert_eq(s.n, 1);
    gfl_transport *st = s.recs[0]->t;
    cr_assert_str_eq(info(st, "alpn_protocol"), "http/1.1");
    cr_assert_str_eq(info(st, "server_hostname"), "localhost");
    cr_assert_null(gfl_transport_get_extra_info(st, "peercert"), "no client certificate was asked for");
    /* s_client ends at stdin EOF with close_notify: a clean EOF here. */
    close(cl->in);
    cl->in = -1;
    RUN_UNTIL(loop, s.recs[0]->lost == 1, 20);
    cr_assert_eq(s.recs[0]->eof, 1);
    cr_assert_eq(s.recs[0]->lost_code, 0, "connection_lost(%s)", s.recs[0]->lost_type);
    cr_assert_neq(wait_exit(cl->pid, 10), -2);
    cl->pid = 0;
    gfl_server_close(server);
    gfl_server_unref(server);
    srv_finish(loop, &s);
    gfl_tls_context_unref(ctx);
}

static int sni_calls;
static char sni_seen[64];
static int sni_cb(void *ud, gfl_transport *t, const char *name, gfl_tls_context **use)
{
    (void)ud;
    cr_assert_not_null(t);
    sni_calls++;
    snprintf(sni_seen, sizeof sni_seen, "%s", name ? name : "(none)");
    if (name && strcmp(name, "refused.test") == 0)
        return -1;
    (void)use; /* keep the list's choice */
    return 0;
}

Test(tls, sni_on_our_server)
{
    gfl_tls_context_options o = {.size = sizeof o, .server = 1, .cert_file = cert("server.pem"), .key_file = cert("server.key"), .sni_callback = sni_cb};
    gfl_tls_context *ctx = make_ctx(&o);
    gfl_tls_context *other = server_ctx("other");
    cr_assert_eq(gfl_tls_context_add_sni(ctx, "other.test", other), 0);
    cr_assert_eq(gfl_tls_context_add_sni(ctx, "x", ctx), GFL_EINVAL);
    gfl_tls_context_unref(other); /* ctx keeps it */
    struct srv s = {.tmpl = {.echo = true}};
    int port;
    gfl_server *server = start_tls_server(&s, ctx, &port);
    char connect[32];
    snprintf(connect, sizeof connect, "127.0.0.1:%d", port);
    struct peer *cl = peer_start("s_client.log",
               (const char *[]){"s_client", "-connect", connect, "-CAfile", cert("ca.pem"), "-verify_return_error", "-servername", "other.test",
                                "-verify_hostname", "other.test", NULL});
    peer_write(cl, "sni-echo\n");
    RUN_UNTIL(loop, log_has(cl, "sni-echo"), 20);
    cr_assert(log_has(cl, "CN = other.test"), "log:\n%s", peer_log(cl));
    cr_assert(log_has(cl, "Verify return code: 0 (ok)"), "log:\n%s", peer_log(cl));
    cr_assert_eq(sni_calls, 1);
    cr_assert_str_eq(sni_seen, "other.test");
    cr_assert_str_eq(info(s.recs[0]->t, "server_hostname"), "other.test");
    peer_stop(cl);

    /* A name the callback refuses never reaches the factory. */
    gfl_tls_context *cctx = client_ctx();
    struct rec r = {0};
    gfl_future *f = tls_connect(&r, cctx, port, "refused.test");
    gfl_value *e = await_error(f);
    cr_assert(strstr(gfl_value_error_message(e), "unrecognized name") != NULL, "%s", gfl_value_error_message(e));
    gfl_future_unref(f);
    cr_assert_eq(s.n, 1);

    gfl_server_close(server);
    gfl_server_unref(server);
    srv_finish(loop, &s);
    gfl_tls_context_unref(cctx);
    gfl_tls_context_unref(ctx);
}

/* ------------------------------------------------------------------ */
/* Ourselves on both sides                                             */

static gfl_tls_context *verifying_server_ctx(void)
{
    gfl_tls_context_options o = {.size = sizeof o, .server = 1, .cert_file = cert("server.pem"), .key_file = cert("server.key"),
                                 .ca_file = cert("ca.pem"), .verify = GFL_TLS_VERIFY_REQUIRED};
    return make_ctx(&o);
}

Test(tls, our_server_requires_client_certificate)
{
    gfl_tls_context *sctx = verifying_server_ctx();
    struct srv s = {.tmpl = {.echo = true}};
    int port;
    gfl_server *server = start_tls_server(&s, sctx, &port);

    gfl_tls_context_options o = {.size = sizeof o, .ca_file = cert("ca.pem"), .cert_file = cert("client.pem"), .key_file = cert("client.key")};
    gfl_tls_context *with = make_ctx(&o);
    struct rec r = {.store = true};
    gfl_transport *t = await_transport(tls_connect(&r, with, port, "localhost"));
    cr_assert_eq(gfl_transport_write(t, "mtls", 4), 0);
    expect_bytes(&r, "mtls");
    cr_assert_eq(s.n, 1);
    cr_assert(strstr(info(s.recs[0]->t, "peercert_pem"), "BEGIN CERTIFICATE") != NULL);
    close_and_wait(t, &r);
    free(r.buf);

    /* No certificate, then one from a CA the server does not trust. */
    gfl_tls_context *without = client_ctx();
    struct rec r2 = {.store = true};
    expect_refused(tls_connect(&r2, without, port, "localhost"), &r2, "certificate required");
    o.cert_file = cert("client2.pem");
    o.key_file = cert("client2.key");
    gfl_tls_context *untrusted = make_ctx(&o);
    struct rec r3 = {.store = true};
    expect_refused(tls_connect(&r3, untrusted, port, "localhost"), &r3, "unknown ca");
    cr_assert_eq(s.n, 1, "refused clients never reach the factory");

    gfl_server_close(server);
    gfl_server_unref(server);
    srv_finish(loop, &s);
    gfl_tls_context_unref(with);
    gfl_tls_context_unref(without);
    gfl_tls_context_unref(untrusted);
    gfl_tls_context_unref(sctx);
}

static void echo_through_tls(const gfl_protocol *client_proto, size_t size)
{
    gfl_tls_context *sctx = server_ctx("server");
    gfl_tls_context *cctx = client_ctx();
    struct srv s = {.tmpl = {.echo = true}};
    int port;
    gfl_server *server = start_tls_server(&s, sctx, &port);
    struct rec r = {.store = true};
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    gfl_connect_options co = {.size = sizeof co, .host = "localhost", .port = ps, .family = AF_INET};
    gfl_tls_options to = {.size = sizeof to, .context = cctx};
    gfl_future *f = gfl_create_tls_connection(loop, one_rec_factory, &r, NULL, &co, &to);
    gfl_transport *t = await_transport(f);
    cr_assert_str_eq(info(t, "server_hostname"), "localhost", "defaults to the host connected to");
    if (client_proto)
        cr_assert_eq(gfl_transport_set_protocol(t, client_proto, &r), 0);
    unsigned char *data = malloc(size);
    for (size_t i = 0; i < size; i++)
        data[i] = (unsigned char)(i * 7 + (i >> 9));
    size_t off = 0, step = size / 5 + 1;
    while (off < size) {
        size_t n = size - off < step ? size - off : step;
        cr_assert_eq(gfl_transport_write(t, data + off, n), 0);
        off += n;
    }
    RUN_UNTIL(loop, r.len >= size, 60);
    cr_assert_eq(r.len, size);
    cr_assert(memcmp(r.buf, data, size) == 0);
    close_and_wait(t, &r);
    cr_assert_eq(r.lost_code, 0);
    RUN_UNTIL(loop, s.recs[0]->lost == 1, 10);
    cr_assert_eq(s.recs[0]->eof, 1, "close_notify is an EOF to the server");
    cr_assert_eq(s.recs[0]->lost_code, 0);
    gfl_server_close(server);
    gfl_server_unref(server);
    srv_finish(loop, &s);
    gfl_tls_context_unref(sctx);
    gfl_tls_context_unref(cctx);
    free(data);
    free(r.buf);
}

Test(tls, echo_4_mib_with_flow_control) { echo_through_tls(NULL, 4 * 1024 * 1024 + 13); }
Test(tls, echo_buffered_protocol) { echo_through_tls(&rec_buffered_protocol, 200 * 1000 + 3); }

Test(tls, session_resumption)
{
    gfl_tls_context *sctx = server_ctx("server");
    gfl_tls_context *cctx = client_ctx();
    struct srv s = {.tmpl = {.echo = true}};
    int port;
    gfl_server *server = start_tls_server(&s, sctx, &port);
    for (int round = 0; round < 2; round++) {
        struct rec r = {.store = true};
        gfl_transport *t = await_transport(tls_connect(&r, cctx, port, "localhost"));
        /* A round trip: the TLS 1.3 tickets arrive before the echo. */
        cr_assert_eq(gfl_transport_write(t, "again", 5), 0);
        expect_bytes(&r, "again");
        cr_assert_eq(info_bool(t, "session_reused"), round == 1, "round %d", round);
        cr_assert_eq(info_bool(s.recs[round]->t, "session_reused"), round == 1);
        close_and_wait(t, &r);
        free(r.buf);
    }
    /* Another context has its own cache. */
    gfl_tls_context *fresh = client_ctx();
    struct rec r = {.store = true};
    gfl_transport *t = await_transport(tls_connect(&r, fresh, port, "localhost"));
    cr_assert_eq(info_bool(t, "session_reused"), 0);
    close_and_wait(t, &r);
    gfl_server_close(server);
    gfl_server_unref(server);
    srv_finish(loop, &s);
    gfl_tls_context_unref(fresh);
    gfl_tls_context_unref(sctx);
    gfl_tls_context_unref(cctx);
}

Test(tls, session_resumption_with_s_server)
{
    int port = free_port();
    (void)s_server(port, "server", (const char *[]){"-rev", "-naccept", "2", NULL});
    gfl_tls_context *ctx = client_ctx();
    for (int round = 0; round < 2; round++) {
        struct rec r = {.store = true};
        gfl_transport *t = await_transport(tls_connect(&r, ctx, port, "localhost"));
        cr_assert_eq(gfl_transport_write(t, "ab\n", 3), 0);
        expect_bytes(&r, "ba\n");
        cr_assert_eq(info_bool(t, "session_reused"), round == 1, "round %d", round);
        close_and_wait(t, &r);
        free(r.buf);
    }
    gfl_tls_context_unref(ctx);
}

/* TLS 1.2 (max_version), a chosen cipher, and 1.2 session resumption. */
Test(tls, tls12_cipher_and_resumption)
{
    gfl_tls_context *sctx = server_ctx("server");
    gfl_tls_context_options o = {.size = sizeof o, .ca_file = cert("ca.pem"), .max_version = GFL_TLS_VERSION_1_2,
                                 .ciphers = "ECDHE-ECDSA-AES128-GCM-SHA256"};
    gfl_tls_context *cctx = make_ctx(&o);
    struct srv s = {.tmpl = {.echo = true}};
    int port;
    gfl_server *server = start_tls_server(&s, sctx, &port);
    for (int round = 0; round < 2; round++) {
        struct rec r = {.store = true};
        gfl_transport *t = await_transport(tls_connect(&r, cctx, port, "localhost"));
        cr_assert_str_eq(info(t, "tls_version"), "TLSv1.2");
        cr_assert_str_eq(info(t, "cipher"), "ECDHE-ECDSA-AES128-GCM-SHA256");
        cr_assert_eq(gfl_transport_write(t, "12", 2), 0);
        expect_bytes(&r, "12");
        cr_assert_eq(info_bool(t, "session_reused"), round == 1, "round %d", round);
        close_and_wait(t, &r);
        free(r.buf);
    }
    gfl_server_close(server);
    gfl_server_unref(server);
    srv_finish(loop, &s);
    gfl_tls_context_unref(sctx);
    gfl_tls_context_unref(cctx);
}

/* Reading paused: what arrives waits in the engine until resume. */
Test(tls, pause_and_resume_reading)
{
    gfl_tls_context *sctx = server_ctx("server");
    gfl_tls_context *cctx = client_ctx();
    struct srv s = {.tmpl = {.echo = true}};
    int port;
    gfl_server *server = start_tls_server(&s, sctx, &port);
    struct rec r = {.store = true, .pause_on_made = true};
    gfl_transport *t = await_transport(tls_connect(&r, cctx, port, "localhost"));
    cr_assert_eq(gfl_transport_is_reading(t), 0);
    cr_assert_eq(gfl_transport_write(t, "paused", 6), 0);
    RUN_UNTIL(loop, s.n == 1 && s.recs[0]->len == 6, 10);
    for (int i = 0; i < 20; i++)
        gfl_loop_run_once(loop, 0.01);
    cr_assert_eq(r.len, 0);
    cr_assert_eq(gfl_transport_resume_reading(t), 0);
    expect_bytes(&r, "paused");
    close_and_wait(t, &r);
    gfl_server_close(server);
    gfl_server_unref(server);
    srv_finish(loop, &s);
    gfl_tls_context_unref(sctx);
    gfl_tls_context_unref(cctx);
    free(r.buf);
}

/* A peer that never answers our close_notify: the shutdown timeout. */
Test(tls, shutdown_timeout)
{
    gfl_tls_context *sctx = server_ctx("server");
    gfl_tls_context *cctx = client_ctx();
    struct srv s = {.tmpl = {.echo = true}};
    int port;
    gfl_server *server = start_tls_server(&s, sctx, &port);
    struct rec r = {.store = true};
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    gfl_connect_options co = {.size = sizeof co, .host = "127.0.0.1", .port = ps};
    gfl_tls_options to = {.size = sizeof to, .context = cctx, .server_hostname = "localhost", .shutdown_timeout = 0.3};
    gfl_transport *t = await_transport(gfl_create_tls_connection(loop, one_rec_factory, &r, NULL, &co, &to));
    cr_assert_eq(gfl_transport_write(t, "hi", 2), 0);
    expect_bytes(&r, "hi");
    cr_assert_eq(gfl_transport_pause_reading(s.recs[0]->t), 0); /* deaf from now on */
    double start = now_s();
    cr_assert_eq(gfl_transport_close(t), 0);
    RUN_UNTIL(loop, r.lost == 1, 10);
    cr_assert_str_eq(r.lost_type, "TimeoutError");
    cr_assert_eq(r.lost_code, GFL_ETIMEDOUT);
    cr_assert_geq(now_s() - start, 0.25);
    gfl_transport_unref(t);
    gfl_server_close(server);
    gfl_server_abort_clients(server);
    gfl_server_unref(server);
    srv_finish(loop, &s);
    gfl_tls_context_unref(sctx);
    gfl_tls_context_unref(cctx);
    free(r.buf);
}

/* A plain server that never speaks: the handshake timeout. */
Test(tls, handshake_timeout)
{
    struct srv s = {0};
    int port;
    gfl_server *server = start_server(loop, &s, NULL, &port);
    gfl_tls_context *ctx = client_ctx();
    struct rec r = {0};
    gfl_future *f = tls_connect_ex(&r, NULL, ctx, port, "localhost", 0.3);
    gfl_value *e = await_error(f);
    cr_assert_str_eq(gfl_value_error_type(e), "ConnectionAbortedError");
    cr_assert_eq(gfl_value_error_code(e), GFL_ETIMEDOUT);
    cr_assert(strstr(gfl_value_error_message(e), "SSL handshake is taking longer than 0.3 seconds") != NULL, "%s", gfl_value_error_message(e));
    gfl_future_unref(f);
    RUN_UNTIL(loop, s.n == 1 && s.recs[0]->lost == 1, 10); /* the stream was closed */
    cr_assert_eq(r.made, 0);
    gfl_server_close(server);
    gfl_server_unref(server);
    srv_finish(loop, &s);
    gfl_tls_context_unref(ctx);
}

Test(tls, cancel_during_handshake)
{
    struct srv s = {0};
    int port;
    gfl_server *server = start_server(loop, &s, NULL, &port);
    gfl_tls_context *ctx = client_ctx();
    struct rec r = {0};
    gfl_future *f = tls_connect(&r, ctx, port, "localhost");
    RUN_UNTIL(loop, s.n == 1 && s.recs[0]->len > 0, 10); /* the ClientHello arrived */
    cr_assert_eq(gfl_future_cancel(f, NULL), 1);
    RUN_UNTIL(loop, s.recs[0]->lost == 1, 10);
    cr_assert_eq(r.made, 0);
    gfl_future_unref(f);
    gfl_server_close(server);
    gfl_server_unref(server);
    srv_finish(loop, &s);
    gfl_tls_context_unref(ctx);
}

/* ---- garbage instead of a TLS record ---- */

static void garbage_made(gfl_transport *t, void *ud)
{
    rec_made(t, ud);
    cr_assert_eq(gfl_transport_write(t, "HTTP/1.0 400 Bad Request\r\n\r\nnot tls at all", 42), 0);
}

static const gfl_protocol garbage_protocol = {
    .size = sizeof(gfl_protocol),
    .connection_made = garbage_made,
    .data_received = rec_data,
    .eof_received = rec_eof,
    .connection_lost = rec_lost,
};

Test(tls, garbage_from_server_is_a_clean_error)
{
    struct srv s = {.proto = &garbage_protocol};
    int port;
    gfl_server *server = start_server(loop, &s, NULL, &port);
    gfl_tls_context *ctx = client_ctx();
    struct rec r = {0};
    gfl_future *f = tls_connect(&r, ctx, port, "localhost");
    gfl_value *e = await_error(f);
    cr_assert_str_eq(gfl_value_error_type(e), "SSLError");
    cr_assert_eq(gfl_value_error_code(e), GFL_ETLS);
    cr_assert(strstr(gfl_value_error_message(e), "wrong version number") != NULL || strstr(gfl_value_error_message(e), "packet length") != NULL,
              "%s", gfl_value_error_message(e));
    gfl_future_unref(f);
    RUN_UNTIL(loop, s.n == 1 && s.recs[0]->lost == 1, 10);
    gfl_server_close(server);
    gfl_server_unref(server);
    srv_finish(loop, &s);
    gfl_tls_context_unref(ctx);
}

static int handler_calls;
static char handler_type[64];
static void handler(gfl_loop *l, const char *message, gfl_value *error, void *ud)
{
    (void)l;
    (void)ud;
    if (strcmp(message, "SSL handshake failed") == 0 && error) {
        handler_calls++;
        snprintf(handler_type, sizeof handler_type, "%s", gfl_value_error_type(error));
    }
}

Test(tls, garbage_to_our_server_drops_the_connection)
{
    gfl_tls_context *sctx = server_ctx("server");
    struct srv s = {0};
    int port;
    gfl_server *server = start_tls_server(&s, sctx, &port);
    cr_assert_eq(gfl_loop_set_exception_handler(loop, handler, NULL), 0);
    cr_assert_eq(gfl_loop_set_debug(loop, 1), 0);
    struct rec r = {.store = true};
    gfl_transport *t = connect_to(loop, &r, "127.0.0.1", port);
    cr_assert_eq(gfl_transport_write(t, "GET / HTTP/1.0\r\n\r\n", 18), 0);
    RUN_UNTIL(loop, r.lost == 1, 10);
    cr_assert_eq(s.n, 0, "the factory never ran");
    cr_assert_eq(handler_calls, 1);
    cr_assert_str_eq(handler_type, "SSLError");
    gfl_transport_unref(t);
    RUN_UNTIL(loop, gfl_server_connection_count(server) == 0, 10);
    gfl_server_close(server);
    gfl_server_unref(server);
    gfl_tls_context_unref(sctx);
    free(r.buf);
}

/* ---- start_tls ---- */

/* A line-based peer: plain text until it upgrades, then it echoes (the
 * server) or records (the client). */
struct upgrader {
    gfl_tls_options tls;
    bool server;
    const char *trigger; /* upgrade after this line arrives */
    const char *reply;   /* sent (in clear) before upgrading */
    gfl_future *f;       /* start_tls's */
    gfl_transport *plain, *tls_t;
    char line[512];
    size_t llen;
    int made, lost, eof;
    int lost_code;
    struct rec got;      /* after the upgrade */
    bool smtp;           /* speak just enough SMTP for s_client -starttls smtp */
};

static void up_made(gfl_transport *t, void *ud)
{
    struct upgrader *u = ud;
    u->made++;
    u->plain = t;
    if (u->smtp)
        cr_assert_eq(gfl_transport_write(t, "220 globeflower ESMTP\r\n", 23), 0);
}

static void up_line(struct upgrader *u, gfl_transport *t, const char *line)
{
    if (u->smtp && strncmp(line, "EHLO", 4) == 0) {
        const char *r = "250-globeflower\r\n250 STARTTLS\r\n";
        cr_assert_eq(gfl_transport_write(t, r, strlen(r)), 0);
        return;
    }
    if (u->trigger && strcmp(line, u->trigger) == 0) {
        if (u->reply)
            cr_assert_eq(gfl_transport_write(t, u->reply, strlen(u->reply)), 0);
        u->f = gfl_start_tls(t, NULL, NULL, &u->tls);
        cr_assert_not_null(u->f);
    }
}

static void up_data(gfl_transport *t, const void *data, size_t len, void *ud)
{
    struct upgrader *u = ud;
    if (u->f) {
        /* Upgraded: only the TLS transport delivers now. */
        cr_assert_neq(t, u->plain);
        u->tls_t = t;
        u->got.store = true;
        rec_append(&u->got, data, len);
        if (u->server)
            cr_assert_eq(gfl_transport_write(t, data, len), 0);
        return;
    }
    const char *p = data;
    for (size_t i = 0; i < len && !u->f; i++) {
        if (u->llen < sizeof u->line - 1)
            u->line[u->llen++] = p[i];
        if (p[i] == '\n') {
            u->line[u->llen] = '\0';
            u->llen = 0;
            up_line(u, t, u->line);
        }
    }
}

static int up_eof(gfl_transport *t, void *ud)
{
    (void)t;
    ((struct upgrader *)ud)->eof++;
    return 0;
}

static void up_lost(gfl_transport *t, gfl_value *err, void *ud)
{
    struct upgrader *u = ud;
    (void)t;
    u->lost++;
    u->lost_code = err ? gfl_value_error_code(err) : 0;
}

static const gfl_protocol upgrader_protocol = {
    .size = sizeof(gfl_protocol),
    .connection_made = up_made,
    .data_received = up_data,
    .eof_received = up_eof,
    .connection_lost = up_lost,
};

static int up_factory(void *fud, gfl_transport *t, const gfl_protocol **p, void **ud)
{
    (void)t;
    *p = &upgrader_protocol;
    *ud = fud;
    return 0;
}

static gfl_server *plain_server(struct upgrader *u, int *port)
{
    const char *hosts[] = {"127.0.0.1", NULL};
    gfl_server_options so = {.size = sizeof so, .hosts = hosts, .port = "0"};
    gfl_future *f = gfl_create_server(loop, up_factory, u, NULL, &so);
    gfl_server *server = gfl_server_ref(await_object(loop, f, gfl_server_class()));
    gfl_future_unref(f);
    struct sockaddr_in sa;
    size_t len = sizeof sa;
    cr_assert_eq(gfl_server_get_sockaddr(server, 0, &sa, &len), 0);
    *port = ntohs(sa.sin_port);
    return server;
}

Test(tls, start_tls_both_sides)
{
    gfl_tls_context *sctx = server_ctx("server");
    gfl_tls_context *cctx = client_ctx();
    struct upgrader su = {.server = true, .trigger = "STARTTLS\r\n", .reply = "GO\r\n"};
    su.tls = (gfl_tls_options){.size = sizeof su.tls, .context = sctx};
    struct upgrader cu = {.trigger = "GO\r\n"};
    cu.tls = (gfl_tls_options){.size = sizeof cu.tls, .context = cctx, .server_hostname = "localhost"};
    int port;
    gfl_server *server = plain_server(&su, &port);
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    gfl_connect_options co = {.size = sizeof co, .host = "127.0.0.1", .port = ps};
    gfl_future *cf = gfl_create_connection(loop, up_factory, &cu, NULL, &co);
    gfl_transport *plain = gfl_transport_ref(await_object(loop, cf, gfl_transport_class()));
    gfl_future_unref(cf);
    cr_assert_eq(gfl_transport_write(plain, "STARTTLS\r\n", 10), 0);
    RUN_UNTIL(loop, cu.f && future_done(cu.f) && su.f && future_done(su.f), 20);
    gfl_transport *t = gfl_transport_ref(await_object(loop, cu.f, gfl_transport_class()));
    cr_assert_neq(t, plain);
    cr_assert(strstr(info(t, "peercert_pem"), "BEGIN CERTIFICATE") != NULL);
    cr_assert_str_eq(info(t, "server_hostname"), "localhost");
    cr_assert_eq(cu.made, 1, "no second connection_made");
    cr_assert_eq(gfl_transport_write(t, "secret", 6), 0);
    RUN_UNTIL(loop, cu.got.len == 6, 10);
    cr_assert(memcmp(cu.got.buf, "secret", 6) == 0);
    cr_assert_eq(su.got.len, 6);
    cr_assert_eq(gfl_transport_close(t), 0);
    RUN_UNTIL(loop, cu.lost == 1 && su.lost == 1, 10);
    cr_assert_eq(cu.lost_code, 0);
    cr_assert_eq(su.lost_code, 0);
    cr_assert_eq(su.eof, 1);
    gfl_transport_unref(t);
    gfl_transport_unref(plain);
    gfl_future_unref(cu.f);
    gfl_future_unref(su.f);
    gfl_server_close(server);
    gfl_server_unref(server);
    free(cu.got.buf);
    free(su.got.buf);
    gfl_tls_context_unref(sctx);
    gfl_tls_context_unref(cctx);
}

Test(tls, start_tls_with_s_client_smtp)
{
    gfl_tls_context *sctx = server_ctx("server");
    struct upgrader su = {.server = true, .smtp = true, .trigger = "STARTTLS\r\n", .reply = "220 2.0.0 Ready to start TLS\r\n"};
    su.tls = (gfl_tls_options){.size = sizeof su.tls, .context = sctx};
    int port;
    gfl_server *server = plain_server(&su, &port);
    char connect[32];
    snprintf(connect, sizeof connect, "127.0.0.1:%d", port);
    struct peer *cl = peer_start("s_client.log",
               (const char *[]){"s_client", "-starttls", "smtp", "-connect", connect, "-CAfile", cert("ca.pem"), "-verify_return_error",
                                "-servername", "localhost", NULL});
    peer_write(cl, "mail-after-starttls\n");
    RUN_UNTIL(loop, log_has(cl, "mail-after-starttls"), 20);
    cr_assert(log_has(cl, "Verify return code: 0 (ok)"), "log:\n%s", peer_log(cl));
    cr_assert_not_null(su.f);
    cr_assert_eq(gfl_future_state_of(su.f), GFL_FUTURE_RESULT);
    close(cl->in);
    cl->in = -1;
    RUN_UNTIL(loop, su.lost == 1, 20);
    cr_assert_eq(su.lost_code, 0);
    peer_stop(cl);
    gfl_future_unref(su.f);
    gfl_server_close(server);
    gfl_server_unref(server);
    free(su.got.buf);
    gfl_tls_context_unref(sctx);
}

/* start_tls whose handshake fails: the future fails and the protocol gets
 * connection_lost with the error. */
Test(tls, start_tls_failure_reaches_the_protocol)
{
    struct upgrader su = {.trigger = "never\r\n"};
    int port;
    gfl_server *server = plain_server(&su, &port);
    gfl_tls_context_options o = {.size = sizeof o}; /* system CAs only */
    gfl_tls_context *cctx = make_ctx(&o);
    struct upgrader cu = {.trigger = "-"};
    cu.tls = (gfl_tls_options){.size = sizeof cu.tls, .context = cctx, .server_hostname = "localhost"};
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    gfl_connect_options co = {.size = sizeof co, .host = "127.0.0.1", .port = ps};
    gfl_future *cf = gfl_create_connection(loop, up_factory, &cu, NULL, &co);
    gfl_transport *plain = gfl_transport_ref(await_object(loop, cf, gfl_transport_class()));
    gfl_future_unref(cf);
    RUN_UNTIL(loop, su.made == 1, 10);
    /* The plain server answers the ClientHello with text. */
    cu.f = gfl_start_tls(plain, NULL, NULL, &cu.tls);
    cr_assert_not_null(cu.f);
    cr_assert_eq(gfl_transport_write(su.plain, "garbage garbage garbage\r\n", 25), 0);
    gfl_value *e = await_error(cu.f);
    cr_assert_str_eq(gfl_value_error_type(e), "SSLError");
    RUN_UNTIL(loop, cu.lost == 1 && su.lost == 1, 10);
    cr_assert_eq(cu.lost_code, GFL_ETLS);
    gfl_future_unref(cu.f);
    gfl_transport_unref(plain);
    gfl_server_close(server);
    gfl_server_unref(server);
    gfl_tls_context_unref(cctx);
}

/* "Any stream": TLS over a Unix socketpair wrapped with
 * gfl_connect_socket, both ends upgraded with start_tls. */
Test(tls, start_tls_over_socketpair)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    gfl_tls_context *sctx = server_ctx("server");
    gfl_tls_context *cctx = client_ctx();
    struct upgrader su = {.server = true}, cu = {0};
    su.tls = (gfl_tls_options){.size = sizeof su.tls, .context = sctx};
    cu.tls = (gfl_tls_options){.size = sizeof cu.tls, .context = cctx, .server_hostname = "localhost"};
    gfl_future *fs = gfl_connect_socket(loop, up_factory, &su, NULL, sv[0]);
    gfl_future *fc = gfl_connect_socket(loop, up_factory, &cu, NULL, sv[1]);
    gfl_transport *ps = gfl_transport_ref(await_object(loop, fs, gfl_transport_class()));
    gfl_transport *pc = gfl_transport_ref(await_object(loop, fc, gfl_transport_class()));
    gfl_future_unref(fs);
    gfl_future_unref(fc);
    su.f = gfl_start_tls(ps, NULL, NULL, &su.tls);
    cu.f = gfl_start_tls(pc, NULL, NULL, &cu.tls);
    cr_assert_not_null(su.f);
    cr_assert_not_null(cu.f);
    gfl_transport *t = gfl_transport_ref(await_object(loop, cu.f, gfl_transport_class()));
    cr_assert_eq(gfl_transport_write(t, "over unix", 9), 0);
    RUN_UNTIL(loop, cu.got.len == 9, 10);
    cr_assert(memcmp(cu.got.buf, "over unix", 9) == 0);
    cr_assert_eq(gfl_transport_close(t), 0);
    RUN_UNTIL(loop, cu.lost == 1 && su.lost == 1, 10);
    cr_assert_eq(cu.lost_code, 0);
    cr_assert_eq(su.lost_code, 0);
    gfl_transport_unref(t);
    gfl_transport_unref(ps);
    gfl_transport_unref(pc);
    gfl_future_unref(su.f);
    gfl_future_unref(cu.f);
    free(su.got.buf);
    free(cu.got.buf);
    gfl_tls_context_unref(sctx);
    gfl_tls_context_unref(cctx);
}

/* ---- lifetime ---- */

Test(tls, loop_closed_with_open_connections)
{
    gfl_tls_context *sctx = server_ctx("server");
    gfl_tls_context *cctx = client_ctx();
    static struct srv s = {.tmpl = {.echo = true}};
    int port;
    gfl_server *server = start_tls_server(&s, sctx, &port);
    static struct rec r = {.store = true};
    gfl_transport *t = await_transport(tls_connect(&r, cctx, port, "localhost"));
    cr_assert_eq(gfl_transport_write(t, "x", 1), 0);
    expect_bytes(&r, "x");
    /* And one connect still handshaking. */
    static struct rec r2;
    gfl_future *pending = tls_connect(&r2, cctx, port, "localhost");
    gfl_loop_run_once(loop, 0);
    cr_assert_eq(gfl_loop_free(loop), 0);
    loop = NULL;
    cr_assert_eq(r.lost, 1, "connection_lost at loop close");
    cr_assert_neq(r.lost_code, 0);
    cr_assert_eq(s.recs[0]->lost, 1);
    cr_assert_neq(gfl_future_state_of(pending), GFL_FUTURE_PENDING);
    gfl_future_unref(pending);
    gfl_transport_unref(t);
    gfl_server_unref(server);
    srv_free(&s);
    free(r.buf);
    gfl_tls_context_unref(sctx);
    gfl_tls_context_unref(cctx);
}

/* ---- contexts and arguments ---- */

Test(tls, context_errors_name_the_reason)
{
    gfl_value *err = NULL;
    gfl_tls_context_options o = {.size = sizeof o, .server = 1};
    cr_assert_null(gfl_tls_context_new(&o, &err));
    cr_assert_str_eq(gfl_value_error_type(err), "ValueError");
    gfl_value_unref(err);

    o.cert_file = cert("missing.pem");
    cr_assert_null(gfl_tls_context_new(&o, &err));
    cr_assert_eq(gfl_value_error_code(err), GFL_ETLS);
    cr_assert(strstr(gfl_value_error_message(err), "missing.pem") != NULL, "%s", gfl_value_error_message(err));
    gfl_value_unref(err);

    o.cert_file = cert("server.pem");
    o.key_file = cert("client.key");
    cr_assert_null(gfl_tls_context_new(&o, &err));
    cr_assert(strstr(gfl_value_error_message(err), "mismatch") != NULL, "%s", gfl_value_error_message(err));
    gfl_value_unref(err);

    gfl_tls_context_options c = {.size = sizeof c, .ca_file = cert("nope.pem")};
    cr_assert_null(gfl_tls_context_new(&c, &err));
    cr_assert(strstr(gfl_value_error_message(err), "nope.pem") != NULL, "%s", gfl_value_error_message(err));
    gfl_value_unref(err);

    const char *bad_alpn[] = {"", NULL};
    gfl_tls_context_options a = {.size = sizeof a, .alpn_protocols = bad_alpn};
    cr_assert_null(gfl_tls_context_new(&a, NULL));
    gfl_tls_context_options v = {.size = sizeof v, .min_version = 0x0304, .max_version = 0x0303};
    cr_assert_null(gfl_tls_context_new(&v, NULL));
    gfl_tls_context_options sni = {.size = sizeof sni, .sni_callback = sni_cb};
    cr_assert_null(gfl_tls_context_new(&sni, NULL), "sni_callback is for servers");
    cr_assert_null(gfl_tls_context_new(NULL, NULL));

    /* An old caller's smaller struct: the rest is default. */
    gfl_tls_context_options small = {.size = offsetof(gfl_tls_context_options, ca_path)};
    gfl_tls_context *ctx = gfl_tls_context_new(&small, NULL);
    cr_assert_not_null(ctx);
    cr_assert_eq(gfl_tls_context_is_server(ctx), 0);
    cr_assert_eq(gfl_tls_context_is_server(NULL), GFL_EINVAL);
    gfl_tls_context_unref(ctx);
    gfl_tls_context_unref(NULL);
}

/* TLS below 1.2 is refused by the C API (issue 12, item 6): the context
 * is not made, even with a cipher list that would allow it, and a client
 * never completes a TLS 1.0 handshake with a real s_server -tls1. */
Test(tls, below_1_2_is_refused)
{
    const int old_versions[] = {0x0300, 0x0301, 0x0302, 0x0305, -1};
    for (size_t i = 0; i < sizeof old_versions / sizeof *old_versions; i++) {
        int v = old_versions[i];
        gfl_tls_context_options mins = {.size = sizeof mins, .min_version = v, .ciphers = "DEFAULT:@SECLEVEL=0"};
        gfl_tls_context_options maxs = {.size = sizeof maxs, .max_version = v};
        const gfl_tls_context_options *both[] = {&mins, &maxs};
        for (int j = 0; j < 2; j++) {
            gfl_value *err = NULL;
            gfl_tls_context *c = gfl_tls_context_new(both[j], &err);
            if (c)
                gfl_tls_context_unref(c);
            cr_assert_null(c, "%s_version 0x%04x accepted", j ? "max" : "min", (unsigned)v);
            cr_assert_not_null(err);
            cr_assert_eq(gfl_value_error_code(err), GFL_EINVAL);
            cr_assert_str_eq(gfl_value_error_type(err), "ValueError");
            cr_assert(strstr(gfl_value_error_message(err), "below 1.2") != NULL, "%s", gfl_value_error_message(err));
            gfl_value_unref(err);
        }
    }

    /* Against a real TLS 1.0-only server: the default floor fails the
     * handshake, whatever the cipher list allows. */
    int port = free_port();
    (void)s_server(port, "server", (const char *[]){"-tls1", "-cipher", "DEFAULT:@SECLEVEL=0", "-naccept", "1", NULL});
    gfl_tls_context_options o = {.size = sizeof o, .insecure_skip_verify = 1, .default_cas = -1,
                                 .ciphers = "DEFAULT:@SECLEVEL=0"};
    gfl_tls_context *ctx = make_ctx(&o);
    struct rec r = {0};
    gfl_future *f = tls_connect(&r, ctx, port, "localhost");
    gfl_value *e = await_error(f);
    cr_assert_eq(gfl_value_error_code(e), GFL_ETLS, "%s: %s", gfl_value_error_type(e), gfl_value_error_message(e));
    cr_assert_eq(r.made, 0, "no connection_made after a refused handshake");
    gfl_future_unref(f);
    gfl_tls_context_unref(ctx);
    free(r.buf);
}

Test(tls, bad_arguments)
{
    gfl_tls_context *cctx = client_ctx();
    gfl_tls_context *sctx = server_ctx("server");
    struct rec r = {0};
    gfl_connect_options co = {.size = sizeof co, .host = "127.0.0.1", .port = "1"};
    gfl_tls_options to = {.size = sizeof to, .context = cctx};
    /* A numeric host is still a hostname to check: fine. No host at all
     * (pre-resolved addresses) needs server_hostname. */
    gfl_addrinfo *ai = gfl_addrinfo_new();
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(1), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(gfl_addrinfo_add(ai, AF_INET, SOCK_STREAM, 0, &sa, sizeof sa), 0);
    gfl_connect_options byaddr = {.size = sizeof byaddr, .addrs = ai};
    cr_assert_null(gfl_create_tls_connection(loop, one_rec_factory, &r, NULL, &byaddr, &to));
    gfl_addrinfo_unref(ai);
    cr_assert_null(gfl_create_tls_connection(loop, one_rec_factory, &r, NULL, &co, NULL));
    gfl_tls_options wrong_role = {.size = sizeof wrong_role, .context = sctx};
    cr_assert_null(gfl_create_tls_connection(loop, one_rec_factory, &r, NULL, &co, &wrong_role));
    gfl_tls_options negative = {.size = sizeof negative, .context = cctx, .handshake_timeout = -1};
    cr_assert_null(gfl_create_tls_connection(loop, one_rec_factory, &r, NULL, &co, &negative));
    gfl_server_options so = {.size = sizeof so};
    cr_assert_null(gfl_create_tls_server(loop, srv_factory, NULL, NULL, &so, &to), "a server needs a server context");
    cr_assert_null(gfl_start_tls(NULL, NULL, NULL, &to));

    /* Connection refused comes through as the connect error. */
    gfl_future *f = gfl_create_tls_connection(loop, one_rec_factory, &r, NULL, &co, &to);
    gfl_value *e = await_error(f);
    cr_assert_str_eq(gfl_value_error_type(e), "ConnectionRefusedError");
    gfl_future_unref(f);
    gfl_tls_context_unref(cctx);
    gfl_tls_context_unref(sctx);
}

/* The factory is released exactly once, whatever the outcome. */
static int releases;
static void count_release(void *p)
{
    (void)p;
    releases++;
}

Test(tls, factory_released_once)
{
    gfl_tls_context *sctx = server_ctx("server");
    gfl_tls_context *cctx = client_ctx();
    struct srv s = {.tmpl = {.echo = true}};
    int port;
    gfl_server *server = start_tls_server(&s, sctx, &port);
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    gfl_connect_options co = {.size = sizeof co, .host = "127.0.0.1", .port = ps};
    gfl_tls_options to = {.size = sizeof to, .context = cctx, .server_hostname = "localhost"};
    struct rec r = {0};
    gfl_future *f = gfl_create_tls_connection(loop, one_rec_factory, &r, count_release, &co, &to);
    gfl_transport *t = await_transport(f);
    close_and_wait(t, &r);
    RUN_UNTIL(loop, releases == 1, 5);
    /* A failing one (wrong name). */
    struct rec r2 = {0};
    to.server_hostname = "wrong.example";
    f = gfl_create_tls_connection(loop, one_rec_factory, &r2, count_release, &co, &to);
    (void)await_error(f);
    gfl_future_unref(f);
    RUN_UNTIL(loop, releases == 2, 5);
    gfl_server_close(server);
    gfl_server_unref(server);
    srv_finish(loop, &s);
    /* Once the last TLS connection (the refused one) is gone. */
    RUN_UNTIL(loop, s.released == 1, 10);
    gfl_tls_context_unref(sctx);
    gfl_tls_context_unref(cctx);
}

/* A server whose bind fails at once (pre-resolved address in use): the
 * inner server releases the TLS origin inside gfl_create_tls_server, which
 * must neither touch it afterwards nor lose the caller's release. */
Test(tls, server_failing_synchronously_releases_the_factory_once)
{
    gfl_tls_context *sctx = server_ctx("server");
    int busy = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sin;
    cr_assert_eq(bind(busy, (struct sockaddr *)&sin, sizeof sin), 0);
    cr_assert_eq(listen(busy, 1), 0);
    cr_assert_eq(getsockname(busy, (struct sockaddr *)&sin, &len), 0);
    gfl_addrinfo *ai = gfl_addrinfo_new();
    cr_assert_eq(gfl_addrinfo_add(ai, AF_INET, SOCK_STREAM, 0, &sin, sizeof sin), 0);
    gfl_server_options so = {.size = sizeof so, .addrs = ai, .reuse_address = -1};
    gfl_tls_options to = {.size = sizeof to, .context = sctx};
    releases = 0;
    gfl_future *f = gfl_create_tls_server(loop, srv_factory, NULL, count_release, &so, &to);
    cr_assert_not_null(f);
    gfl_value *e = await_error(f);
    cr_assert_eq(gfl_value_error_code(e), GFL_EADDRINUSE);
    gfl_future_unref(f);
    cr_assert_eq(releases, 1, "the caller's factory_release ran %d times", releases);
    gfl_addrinfo_unref(ai);
    close(busy);
    gfl_tls_context_unref(sctx);
}

/* ------------------------------------------------------------------ */
/* Caller-owned options                                                */

Test(tls, options_are_copied)
{
    /* Context options, server options (hosts resolved later), TLS options
     * and connect options (the server_hostname defaults to the host) all
     * live in blocks freed right after each call. */
    struct scratch m = scratch_new();
    gfl_tls_context_options *so = scratch_alloc(&m, sizeof *so);
    so->size = sizeof *so;
    so->server = 1;
    so->cert_file = scratch_str(&m, cert("server.pem"));
    so->key_file = scratch_str(&m, cert("server.key"));
    so->alpn_protocols = scratch_strv(&m, (const char *const[]){"x-copied", "h2", NULL});
    so->ciphersuites = scratch_str(&m, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384");
    gfl_tls_context *sctx = make_ctx(so);
    scratch_free(&m);

    m = scratch_new();
    gfl_tls_context_options *co = scratch_alloc(&m, sizeof *co);
    co->size = sizeof *co;
    co->ca_file = scratch_str(&m, cert("ca.pem"));
    co->default_cas = -1;
    co->alpn_protocols = scratch_strv(&m, (const char *const[]){"x-copied", NULL});
    gfl_tls_context *cctx = make_ctx(co);
    scratch_free(&m);

    m = scratch_new();
    gfl_server_options *svo = scratch_alloc(&m, sizeof *svo);
    svo->size = sizeof *svo;
    svo->hosts = scratch_strv(&m, (const char *const[]){"127.0.0.1", "localhost", NULL});
    svo->port = scratch_str(&m, "0");
    svo->family = AF_INET;
    gfl_tls_options *sto = scratch_alloc(&m, sizeof *sto);
    sto->size = sizeof *sto;
    sto->context = sctx;
    sto->shutdown_timeout = 5;
    struct srv s = {.tmpl = {.echo = true}};
    gfl_future *f = gfl_create_tls_server(loop, srv_factory, &s, srv_release, svo, sto);
    cr_assert_not_null(f);
    scratch_free(&m);
    gfl_server *server = gfl_server_ref(await_object(loop, f, gfl_server_class()));
    gfl_future_unref(f);
    struct sockaddr_in sa;
    size_t len = sizeof sa;
    cr_assert_eq(gfl_server_get_sockaddr(server, 0, &sa, &len), 0);
    char ps[16];
    snprintf(ps, sizeof ps, "%d", ntohs(sa.sin_port));

    m = scratch_new();
    gfl_connect_options *cno = scratch_alloc(&m, sizeof *cno);
    cno->size = sizeof *cno;
    cno->host = scratch_str(&m, "localhost");
    cno->port = scratch_str(&m, ps);
    cno->family = AF_INET;
    gfl_tls_options *cto = scratch_alloc(&m, sizeof *cto);
    cto->size = sizeof *cto;
    cto->context = cctx;
    cto->shutdown_timeout = 5;
    struct rec r = {.store = true};
    f = gfl_create_tls_connection(loop, one_rec_factory, &r, NULL, cno, cto);
    cr_assert_not_null(f);
    scratch_free(&m);
    gfl_transport *t = await_transport(f);
    cr_assert_str_eq(info(t, "server_hostname"), "localhost");
    cr_assert_str_eq(info(t, "alpn_protocol"), "x-copied");
    cr_assert_eq(gfl_transport_write(t, "tls", 3), 0);
    expect_bytes(&r, "tls");
    close_and_wait(t, &r);
    gfl_server_close(server);
    gfl_server_unref(server);
    srv_finish(loop, &s);
    gfl_tls_context_unref(sctx);
    gfl_tls_context_unref(cctx);
    free(r.buf);
}
