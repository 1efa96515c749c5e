/*
 * loadgen: a ping-pong load generator for echo servers (TCP, Unix sockets,
 * TLS). Standalone: it does not link globeflower, so the C, Lua and Python
 * echo benchmarks all measure against the same client.
 *
 *   loadgen [options] HOST PORT
 *   loadgen [options] --unix PATH
 *
 * Each of N connections (one thread, epoll, non-blocking) sends a message
 * of M bytes, waits until M bytes came back, and sends the next one (it
 * keeps reading while it sends, so a server that echoes before the whole
 * message arrived never deadlocks against it). A request is one such round
 * trip; its latency runs from the first byte offered to the last byte
 * received. After --warmup seconds (not counted) the counters restart and
 * the run lasts --duration seconds.
 *
 * With --server-pid PID, the server's CPU time (user+sys of every thread,
 * from /proc/PID/stat, clock-tick resolution) is sampled at the start and
 * end of the measured window and reported per request (server_cpu_us;
 * server_user_us is the user-space part of it): the number to
 * compare on a machine where requests/s also depends on what else runs.
 * The client's own CPU use is printed too: near 100% the client, not the
 * server, limits requests/s.
 *
 * Output: '#' comment lines, then one line
 *
 *   RESULT bench=echo impl=LABEL transport=tcp|unix tls=0|1 conns=N size=M
 *          duration_s=... requests=... rps=... mib_s=... p50_us=... p90_us=...
 *          p99_us=... p999_us=... max_us=... client_cpu_pct=...
 *          [tls_version=... tls_cipher=...]
 *          [server_cpu_us=... server_user_us=... server_cpu_pct=...]
 *
 * (on one line). The exit status is 0, or 1 when a connection failed or
 * --verify found a corrupt echo, 2 for bad usage.
 *
 * TLS: OpenSSL, TLS 1.2 or newer, the handshakes happen before the warmup.
 * Without --tls-ca the server's certificate is NOT verified (a benchmark
 * against a throwaway self-signed certificate); with --tls-ca FILE it is,
 * including the name given by --sni (default: HOST).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define RBUF_SIZE (256 * 1024)

/* ------------------------------------------------------------------ */
/* Options                                                             */

static struct {
    const char *host, *port, *unix_path;
    int conns;
    size_t size;
    double duration, warmup;
    bool tls, verify, quiet;
    const char *tls_ca, *sni, *label;
    long server_pid;
} opt = {.conns = 100, .size = 1024, .duration = 5, .warmup = 1, .label = "unknown"};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: loadgen [options] HOST PORT\n"
            "       loadgen [options] --unix PATH\n"
            "Ping-pong load on an echo server; prints requests/s and latency.\n"
            "  -c, --connections N   concurrent connections (default 100)\n"
            "  -s, --size BYTES      message size; k/m suffixes are KiB/MiB (default 1k)\n"
            "  -d, --duration SEC    measured time (default 5)\n"
            "  -w, --warmup SEC      unmeasured time first (default 1)\n"
            "  -u, --unix PATH       connect to a Unix stream socket instead of HOST PORT\n"
            "      --tls             TLS (OpenSSL) on every connection\n"
            "      --tls-ca FILE     verify the server against FILE (default: no verification)\n"
            "      --sni NAME        server name to send and verify (default: HOST)\n"
            "  -p, --server-pid PID  report the server's CPU time per request (/proc/PID/stat)\n"
            "      --verify          check every echoed byte\n"
            "  -l, --label NAME      impl= of the RESULT line (default: unknown)\n"
            "  -q, --quiet           only the RESULT line\n"
            "  -h, --help\n");
}

static bool parse_size(const char *s, size_t *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || v < 1)
        return false;
    if (*end == 'k' || *end == 'K')
        v *= 1024, end++;
    else if (*end == 'm' || *end == 'M')
        v *= 1024 * 1024, end++;
    if (*end || v > (double)(1u << 30))
        return false;
    *out = (size_t)v;
    return true;
}

static bool parse_double(const char *s, double *out, double min)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= min))
        return false;
    *out = v;
    return true;
}

static int parse_args(int argc, char **argv)
{
    enum { O_TLS = 256, O_CA, O_SNI, O_VERIFY };
    static const struct option longopts[] = {
        {"connections", required_argument, NULL, 'c'},
        {"size", required_argument, NULL, 's'},
        {"duration", required_argument, NULL, 'd'},
        {"warmup", required_argument, NULL, 'w'},
        {"unix", required_argument, NULL, 'u'},
        {"tls", no_argument, NULL, O_TLS},
        {"tls-ca", required_argument, NULL, O_CA},
        {"sni", required_argument, NULL, O_SNI},
        {"server-pid", required_argument, NULL, 'p'},
        {"verify", no_argument, NULL, O_VERIFY},
        {"label", required_argument, NULL, 'l'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    char *end;
    while ((c = getopt_long(argc, argv, "c:s:d:w:u:p:l:qh", longopts, NULL)) != -1) {
        switch (c) {
        case 'c':
            opt.conns = (int)strtol(optarg, &end, 10);
            if (*end || opt.conns < 1 || opt.conns > 100000)
                goto bad;
            break;
        case 's':
            if (!parse_size(optarg, &opt.size))
                goto bad;
            break;
        case 'd':
            if (!parse_double(optarg, &opt.duration, 0.01))
                goto bad;
            break;
        case 'w':
            if (!parse_double(optarg, &opt.warmup, 0))
                goto bad;
            break;
        case 'u':
            opt.unix_path = optarg;
            break;
        case O_TLS:
            opt.tls = true;
            break;
        case O_CA:
            opt.tls_ca = optarg;
            break;
        case O_SNI:
            opt.sni = optarg;
            break;
        case 'p':
            opt.server_pid = strtol(optarg, &end, 10);
            if (*end || opt.server_pid <= 0)
                goto bad;
            break;
        case O_VERIFY:
            opt.verify = true;
            break;
        case 'l':
            opt.label = optarg;
            break;
        case 'q':
            opt.quiet = true;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return -1;
        }
    }
    int rest = argc - optind;
    if (opt.unix_path ? rest != 0 : rest != 2) {
        usage(stderr);
        return -1;
    }
    if (!opt.unix_path) {
        opt.host = argv[optind];
        opt.port = argv[optind + 1];
    }
    return 0;
bad:
    fprintf(stderr, "loadgen: bad value for -%c: %s\n", c < 256 ? c : '-', optarg);
    return -1;
}

/* ------------------------------------------------------------------ */
/* Time, latency histogram, CPU                                         */

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Log-linear buckets: 64 per power of two (< 1.6% error), exact below 64 ns. */
#define SUB_BITS 6
#define SUB (1u << SUB_BITS)
#define NBUCKETS ((64 - SUB_BITS + 1) * SUB)

static uint64_t hist[NBUCKETS];
static uint64_t hist_count, hist_max;

static inline unsigned bucket_of(uint64_t v)
{
    if (v < SUB)
        return (unsigned)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v); /* >= SUB_BITS */
    unsigned sub = (unsigned)(v >> (e - SUB_BITS)) & (SUB - 1);
    return (e - SUB_BITS + 1) * SUB + sub;
}

static uint64_t bucket_mid(unsigned b)
{
    if (b < SUB)
        return b;
    unsigned e = b / SUB + SUB_BITS - 1, sub = b % SUB;
    uint64_t lo = ((uint64_t)(SUB + sub)) << (e - SUB_BITS);
    uint64_t width = (uint64_t)1 << (e - SUB_BITS);
    return lo + width / 2;
}

static inline void hist_add(uint64_t v)
{
    hist[bucket_of(v)]++;
    hist_count++;
    if (v > hist_max)
        hist_max = v;
}

static double hist_pct(double p)
{
    if (!hist_count)
        return 0;
    uint64_t rank = (uint64_t)(p / 100.0 * (double)hist_count + 0.5);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned b = 0; b < NBUCKETS; b++) {
        seen += hist[b];
        if (seen >= rank) {
            uint64_t v = bucket_mid(b);
            return (double)(v > hist_max ? hist_max : v);
        }
    }
    return (double)hist_max;
}

static double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
           ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) * 1e-6;
}

/* utime + stime of a process (every thread), seconds; < 0 if unreadable.
 * *user gets utime alone. */
static double proc_cpu_s(long pid, double *user)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* the command name may contain spaces */
    if (!p)
        return -1;
    /* After ") ": state(3) ... utime(14) stime(15). */
    unsigned long long ut = 0, st = 0;
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    double hz = (double)sysconf(_SC_CLK_TCK);
    *user = (double)ut / hz;
    return (double)(ut + st) / hz;
}

/* ------------------------------------------------------------------ */
/* Connections                                                          */

struct conn {
    int fd;
    SSL *ssl;
    size_t sent, recvd;
    uint64_t start;
    bool want_out; /* EPOLLOUT is in the interest set */
    bool ssl_write_blocked; /* SSL_write said WANT_READ: retry on input */
};

static struct conn *conns;
static unsigned char *msg;
static unsigned char *rbuf;
static int epfd;
static SSL_CTX *ssl_ctx;
static uint64_t requests, bytes_moved;
static bool measuring, stopping;
static int failures, corrupt;

static void die(const char *what)
{
    fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void ssl_die(const char *what)
{
    fprintf(stderr, "loadgen: %s:", what);
    unsigned long e;
    while ((e = ERR_get_error()) != 0) {
        char b[256];
        ERR_error_string_n(e, b, sizeof b);
        fprintf(stderr, " %s", b);
    }
    fprintf(stderr, "\n");
    exit(1);
}

static void set_nonblock(int fd, bool on)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK) < 0)
        die("fcntl");
}

static struct addrinfo *resolved;

static int open_socket(void)
{
    int fd;
    if (opt.unix_path) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        size_t len = strlen(opt.unix_path);
        if (len >= sizeof sa.sun_path) {
            fprintf(stderr, "loadgen: Unix path too long\n");
            exit(2);
        }
        memcpy(sa.sun_path, opt.unix_path, len);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            die("socket");
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
            die("connect");
        return fd;
    }
    if (!resolved) {
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
        int rc = getaddrinfo(opt.host, opt.port, &hints, &resolved);
        if (rc) {
            fprintf(stderr, "loadgen: %s:%s: %s\n", opt.host, opt.port, gai_strerror(rc));
            exit(1);
        }
    }
    for (struct addrinfo *ai = resolved; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0)
            continue;
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            return fd;
        }
        close(fd);
    }
    die("connect");
    return -1;
}

static void setup_tls(void)
{
    ssl_ctx = SSL_CTX_new(TLS_client_method());
    if (!ssl_ctx)
        ssl_die("SSL_CTX_new");
    SSL_CTX_set_min_proto_version(ssl_ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ssl_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (opt.tls_ca) {
        if (SSL_CTX_load_verify_locations(ssl_ctx, opt.tls_ca, NULL) != 1)
            ssl_die("cannot load --tls-ca");
        SSL_CTX_set_verify(ssl_ctx, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(ssl_ctx, SSL_VERIFY_NONE, NULL); /* documented: benchmark only */
    }
}

static void tls_handshake(struct conn *c)
{
    c->ssl = SSL_new(ssl_ctx);
    if (!c->ssl)
        ssl_die("SSL_new");
    const char *name = opt.sni ? opt.sni : opt.host;
    if (name) {
        struct in6_addr a6;
        struct in_addr a4;
        bool is_ip = inet_pton(AF_INET, name, &a4) == 1 || inet_pton(AF_INET6, name, &a6) == 1;
        if (!is_ip)
            SSL_set_tlsext_host_name(c->ssl, name);
        if (opt.tls_ca) {
            if (is_ip)
                X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), name);
            else
                SSL_set1_host(c->ssl, name);
        }
    }
    SSL_set_fd(c->ssl, c->fd);
    if (SSL_connect(c->ssl) != 1) /* blocking: before the clock starts */
        ssl_die("TLS handshake");
}

static void set_out(struct conn *c, bool on)
{
    if (c->want_out == on)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        die("epoll_ctl");
    c->want_out = on;
}

static void conn_fail(struct conn *c, const char *what, int err)
{
    if (!stopping)
        fprintf(stderr, "loadgen: connection %d: %s: %s\n", (int)(c - conns), what, err ? strerror(err) : "closed by the server");
    failures++;
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    if (c->ssl) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    close(c->fd);
    c->fd = -1;
}

/* Sends what is left of the current message; false when the conn died. */
static bool do_send(struct conn *c)
{
    while (c->sent < opt.size) {
        size_t left = opt.size - c->sent;
        ssize_t n;
        if (c->ssl) {
            c->ssl_write_blocked = false;
            int len = left > (1u << 30) ? 1 << 30 : (int)left;
            n = SSL_write(c->ssl, msg + c->sent, len);
            if (n <= 0) {
                int e = SSL_get_error(c->ssl, (int)n);
                if (e == SSL_ERROR_WANT_WRITE) {
                    set_out(c, true);
                    return true;
                }
                if (e == SSL_ERROR_WANT_READ) {
                    c->ssl_write_blocked = true;
                    return true;
                }
                ERR_clear_error();
                conn_fail(c, "SSL_write", e == SSL_ERROR_SYSCALL ? errno : 0);
                return false;
            }
        } else {
            n = send(c->fd, msg + c->sent, left, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK) {
                    set_out(c, true);
                    return true;
                }
                if (errno == EINTR)
                    continue;
                conn_fail(c, "send", errno);
                return false;
            }
        }
        c->sent += (size_t)n;
    }
    set_out(c, false);
    return true;
}

static bool start_request(struct conn *c)
{
    c->sent = c->recvd = 0;
    c->start = now_ns();
    return do_send(c);
}

/* Counts `n` echoed bytes; starts the next request when one is complete. */
static bool got(struct conn *c, const unsigned char *p, size_t n)
{
    if (c->recvd + n > c->sent) {
        fprintf(stderr, "loadgen: connection %d: the server sent more than it was sent\n", (int)(c - conns));
        corrupt++;
        conn_fail(c, "protocol", 0);
        return false;
    }
    if (opt.verify && memcmp(p, msg + c->recvd, n) != 0) {
        fprintf(stderr, "loadgen: connection %d: corrupt echo at byte %zu\n", (int)(c - conns), c->recvd);
        corrupt++;
        conn_fail(c, "protocol", 0);
        return false;
    }
    c->recvd += n;
    if (c->recvd < opt.size)
        return true;
    if (measuring) {
        requests++;
        bytes_moved += 2 * opt.size;
        hist_add(now_ns() - c->start);
    }
    if (stopping)
        return true;
    return start_request(c);
}

static void on_readable(struct conn *c)
{
    for (;;) {
        ssize_t n;
        if (c->ssl) {
            n = SSL_read(c->ssl, rbuf, RBUF_SIZE);
            if (n <= 0) {
                int e = SSL_get_error(c->ssl, (int)n);
                if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                    break;
                ERR_clear_error();
                conn_fail(c, "SSL_read", e == SSL_ERROR_SYSCALL ? errno : 0);
                return;
            }
        } else {
            n = recv(c->fd, rbuf, RBUF_SIZE, 0);
            if (n <= 0) {
                if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                    break;
                if (n < 0 && errno == EINTR)
                    continue;
                conn_fail(c, "recv", n < 0 ? errno : 0);
                return;
            }
        }
        if (!got(c, rbuf, (size_t)n))
            return;
        /* A plain socket: one read drained it unless the buffer was full
         * (level-triggered epoll reports the rest). TLS: SSL_read returns
         * one record at a time and may hold more, so loop to WANT_READ. */
        if (!c->ssl && (size_t)n < RBUF_SIZE)
            break;
    }
    if (c->ssl && c->ssl_write_blocked && c->fd >= 0)
        do_send(c);
}

/* ------------------------------------------------------------------ */

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

static void run_until(uint64_t deadline)
{
    struct epoll_event evs[256];
    for (;;) {
        uint64_t now = now_ns();
        if (now >= deadline || interrupted)
            return;
        int timeout = (int)((deadline - now + 999999) / 1000000);
        int n = epoll_wait(epfd, evs, 256, timeout);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c->fd < 0)
                continue;
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                on_readable(c);
            if (c->fd >= 0 && (evs[i].events & EPOLLOUT))
                do_send(c);
        }
        if (failures == opt.conns)
            return;
    }
}

int main(int argc, char **argv)
{
    if (parse_args(argc, argv) < 0)
        return 2;
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_sigint};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    msg = malloc(opt.size);
    rbuf = malloc(RBUF_SIZE);
    conns = calloc((size_t)opt.conns, sizeof *conns);
    if (!msg || !rbuf || !conns)
        die("malloc");
    for (size_t i = 0; i < opt.size; i++)
        msg[i] = (unsigned char)(i * 31u + i / 251u + 7u);
    if (opt.tls)
        setup_tls();
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0)
        die("epoll_create1");

    for (int i = 0; i < opt.conns; i++) {
        struct conn *c = &conns[i];
        c->fd = open_socket();
        if (opt.tls)
            tls_handshake(c);
        set_nonblock(c->fd, true);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0)
            die("epoll_ctl");
    }
    if (!opt.quiet)
        printf("# %d connections to %s%s%s%s, %zu-byte messages, warmup %.1f s, run %.1f s\n", opt.conns,
               opt.unix_path ? opt.unix_path : opt.host, opt.unix_path ? "" : ":", opt.unix_path ? "" : opt.port,
               opt.tls ? (opt.tls_ca ? " (TLS, verified)" : " (TLS, certificate not verified)") : "", opt.size,
               opt.warmup, opt.duration);

    for (int i = 0; i < opt.conns; i++)
        start_request(&conns[i]);
    if (opt.warmup > 0)
        run_until(now_ns() + (uint64_t)(opt.warmup * 1e9));

    double usr0 = 0, usr1 = 0;
    double srv0 = opt.server_pid ? proc_cpu_s(opt.server_pid, &usr0) : -1;
    double cpu0 = self_cpu_s();
    uint64_t t0 = now_ns();
    measuring = true;
    run_until(t0 + (uint64_t)(opt.duration * 1e9));
    measuring = false;
    uint64_t t1 = now_ns();
    double cpu1 = self_cpu_s();
    double srv1 = opt.server_pid ? proc_cpu_s(opt.server_pid, &usr1) : -1;
    stopping = true;

    double secs = (double)(t1 - t0) * 1e-9;
    double rps = (double)requests / secs;
    if (!opt.quiet) {
        printf("# %llu requests in %.2f s: %.0f requests/s, %.1f MiB/s each way\n", (unsigned long long)requests, secs,
               rps, (double)bytes_moved / 2 / secs / (1024 * 1024));
        printf("# latency us: p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f\n", hist_pct(50) / 1e3,
               hist_pct(90) / 1e3, hist_pct(99) / 1e3, hist_pct(99.9) / 1e3, (double)hist_max / 1e3);
        printf("# client CPU %.0f%%", (cpu1 - cpu0) / secs * 100);
        if (srv0 >= 0 && srv1 >= 0)
            printf(", server CPU %.0f%% = %.2f us per request", (srv1 - srv0) / secs * 100,
                   requests ? (srv1 - srv0) * 1e6 / (double)requests : 0.0);
        printf("\n");
    }
    printf("RESULT bench=echo impl=%s transport=%s tls=%d conns=%d size=%zu duration_s=%.3f requests=%llu rps=%.1f "
           "mib_s=%.2f p50_us=%.1f p90_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f client_cpu_pct=%.1f",
           opt.label, opt.unix_path ? "unix" : "tcp", opt.tls ? 1 : 0, opt.conns, opt.size, secs,
           (unsigned long long)requests, rps, (double)bytes_moved / 2 / secs / (1024 * 1024), hist_pct(50) / 1e3,
           hist_pct(90) / 1e3, hist_pct(99) / 1e3, hist_pct(99.9) / 1e3, (double)hist_max / 1e3,
           (cpu1 - cpu0) / secs * 100);
    if (opt.tls && conns[0].ssl)
        printf(" tls_version=%s tls_cipher=%s", SSL_get_version(conns[0].ssl), SSL_get_cipher_name(conns[0].ssl));
    if (srv0 >= 0 && srv1 >= 0)
        printf(" server_cpu_us=%.3f server_user_us=%.3f server_cpu_pct=%.1f",
               requests ? (srv1 - srv0) * 1e6 / (double)requests : 0.0,
               requests ? (usr1 - usr0) * 1e6 / (double)requests : 0.0, (srv1 - srv0) / secs * 100);
    printf("\n");
    fflush(stdout);

    for (int i = 0; i < opt.conns; i++) {
        struct conn *c = &conns[i];
        if (c->fd < 0)
            continue;
        if (c->ssl)
            SSL_free(c->ssl); /* no close_notify: the run is over */
        close(c->fd);
    }
    if (ssl_ctx)
        SSL_CTX_free(ssl_ctx);
    if (resolved)
        freeaddrinfo(resolved);
    free(conns);
    free(rbuf);
    free(msg);
    if (interrupted)
        return 1;
    return failures || corrupt ? 1 : 0;
}
