/*
 * loadgen_rounds: a second, independent ping-pong load generator, to
 * cross-check loadgen's numbers (bench/python/run uses both).
 *
 *   loadgen_rounds [-c N] [-s BYTES] [-d SEC] [-w SEC] [-p PID] [-l LABEL] HOST PORT
 *
 * A different design from loadgen's (one epoll loop, every connection on
 * its own schedule): blocking sockets and rounds. Each round sends one
 * message of BYTES on every connection, then reads the whole echo back
 * from each in turn; a request is one message echoed. A server that only
 * looks fast to one client's scheduling shows up as a disagreement.
 *
 * Output: one line
 *   RESULT bench=echo impl=LABEL gen=rounds conns=N size=M duration_s=...
 *          requests=... rps=... [server_cpu_us=... server_cpu_pct=...]
 * Exit status 0, 1 on a connection error, 2 for bad usage.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* utime + stime of a process, seconds; < 0 if unreadable. */
static double proc_cpu_s(long pid)
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
    char *p = strrchr(buf, ')');
    unsigned long long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static int connect_to(const char *host, const char *port)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
    if (getaddrinfo(host, port, &hints, &res) != 0)
        return -1;
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, res->ai_addr, res->ai_addrlen) < 0) {
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd >= 0) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return fd;
}

static int send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static int recv_all(int fd, char *p, size_t n)
{
    while (n > 0) {
        ssize_t k = recv(fd, p, n, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static size_t parse_size(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    if (*end == 'k' || *end == 'K')
        v *= 1024, end++;
    else if (*end == 'm' || *end == 'M')
        v *= 1024 * 1024, end++;
    return (*end || v < 1 || v > (double)(64u << 20)) ? 0 : (size_t)v;
}

int main(int argc, char **argv)
{
    int conns = 100, c;
    size_t size = 1024;
    double duration = 3, warmup = 0;
    long pid = 0;
    const char *label = "unknown";
    while ((c = getopt(argc, argv, "c:s:d:w:p:l:")) != -1) {
        switch (c) {
        case 'c': conns = atoi(optarg); break;
        case 's': size = parse_size(optarg); break;
        case 'd': duration = atof(optarg); break;
        case 'w': warmup = atof(optarg); break;
        case 'p': pid = atol(optarg); break;
        case 'l': label = optarg; break;
        default: return 2;
        }
    }
    if (optind + 2 != argc || conns < 1 || size == 0 || duration <= 0 || warmup < 0) {
        fprintf(stderr, "usage: loadgen_rounds [-c N] [-s BYTES] [-d SEC] [-w SEC] [-p PID] [-l LABEL] HOST PORT\n");
        return 2;
    }
    int *fds = calloc((size_t)conns, sizeof *fds);
    char *msg = malloc(size), *back = malloc(size);
    if (!fds || !msg || !back)
        return 1;
    for (size_t i = 0; i < size; i++)
        msg[i] = (char)('a' + i % 26);
    for (int i = 0; i < conns; i++)
        if ((fds[i] = connect_to(argv[optind], argv[optind + 1])) < 0) {
            fprintf(stderr, "loadgen_rounds: connection %d: %s\n", i, strerror(errno));
            return 1;
        }
    int status = 0;
    double start = now_s(), measure_from = start + warmup, end = measure_from + duration;
    double cpu0 = -1, t0 = 0;
    unsigned long long requests = 0;
    for (double t = start; t < end; t = now_s()) {
        if (cpu0 < 0 && t >= measure_from) {
            requests = 0;
            t0 = t;
            cpu0 = pid ? proc_cpu_s(pid) : 0;
        }
        for (int i = 0; i < conns && !status; i++)
            if (send_all(fds[i], msg, size) < 0)
                status = 1;
        for (int i = 0; i < conns && !status; i++)
            if (recv_all(fds[i], back, size) < 0 || memcmp(back, msg, size) != 0)
                status = 1;
        if (status) {
            fprintf(stderr, "loadgen_rounds: a connection failed or echoed wrong bytes\n");
            break;
        }
        requests += (unsigned long long)conns;
    }
    double t1 = now_s(), cpu1 = pid ? proc_cpu_s(pid) : 0;
    double secs = cpu0 >= 0 ? t1 - t0 : 0;
    printf("RESULT bench=echo impl=%s gen=rounds conns=%d size=%zu duration_s=%.3f requests=%llu rps=%.1f", label,
           conns, size, secs, requests, secs > 0 ? (double)requests / secs : 0.0);
    if (pid && cpu0 >= 0 && cpu1 >= 0 && requests)
        printf(" server_cpu_us=%.3f server_cpu_pct=%.1f", (cpu1 - cpu0) * 1e6 / (double)requests,
               secs > 0 ? 100.0 * (cpu1 - cpu0) / secs : 0.0);
    printf("\n");
    for (int i = 0; i < conns; i++)
        close(fds[i]);
    free(fds);
    free(msg);
    free(back);
    return status;
}
