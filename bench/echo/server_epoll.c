/*
 * Echo server on raw epoll: the floor for server_gfl.
 *
 * Level-triggered, one thread. Per readiness: one read() into a shared
 * 256 KiB buffer (globeflower's read size), then send() it back at once when
 * nothing is queued; only the remainder is copied into the connection's
 * buffer, and EPOLLOUT is watched only while that buffer is non-empty (the
 * same syscall pattern as globeflower's transports, without the loop).
 * Reading stops while more than 4 MiB are queued (backpressure).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <signal.h>
#include <sys/epoll.h>

#include "echo_common.h"

#define RBUF_SIZE (256 * 1024)
#define MAX_QUEUED (4 * 1024 * 1024)

struct conn {
    int fd;
    unsigned events; /* current interest */
    char *wbuf;
    size_t woff, wlen, wcap; /* wbuf[woff, wlen) is pending */
};

static int epfd;
static char rbuf[RBUF_SIZE];
static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static void conn_close(struct conn *c)
{
    close(c->fd); /* also leaves the epoll set */
    free(c->wbuf);
    free(c);
}

static void set_events(struct conn *c, unsigned events)
{
    if (c->events == events)
        return;
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        echo_die("epoll_ctl");
    c->events = events;
}

static void update_events(struct conn *c)
{
    size_t queued = c->wlen - c->woff;
    unsigned ev = queued > MAX_QUEUED ? 0 : EPOLLIN;
    if (queued)
        ev |= EPOLLOUT;
    set_events(c, ev);
}

/* 0, or -1 when the connection is gone (closed and freed). */
static int queue(struct conn *c, const char *p, size_t n)
{
    if (c->woff > 0 && c->woff == c->wlen)
        c->woff = c->wlen = 0;
    if (c->wlen + n > c->wcap) {
        if (c->woff > 0) { /* compact first */
            memmove(c->wbuf, c->wbuf + c->woff, c->wlen - c->woff);
            c->wlen -= c->woff;
            c->woff = 0;
        }
        if (c->wlen + n > c->wcap) {
            size_t cap = c->wcap ? c->wcap : 16384;
            while (cap < c->wlen + n)
                cap *= 2;
            char *b = realloc(c->wbuf, cap);
            if (!b) {
                conn_close(c);
                return -1;
            }
            c->wbuf = b;
            c->wcap = cap;
        }
    }
    memcpy(c->wbuf + c->wlen, p, n);
    c->wlen += n;
    return 0;
}

/* The handlers return 0, or -1 when they closed (and freed) `c`. */
static int on_read(struct conn *c)
{
    ssize_t n = read(c->fd, rbuf, sizeof rbuf);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return 0;
        conn_close(c);
        return -1;
    }
    size_t done = 0;
    if (c->wlen == c->woff) {
        ssize_t w = send(c->fd, rbuf, (size_t)n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno != EAGAIN) {
                conn_close(c);
                return -1;
            }
            w = 0;
        }
        done = (size_t)w;
        if (done == (size_t)n)
            return 0;
    }
    if (queue(c, rbuf + done, (size_t)n - done) < 0)
        return -1;
    update_events(c);
    return 0;
}

static int on_write(struct conn *c)
{
    ssize_t w = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff, MSG_NOSIGNAL);
    if (w < 0) {
        if (errno == EAGAIN || errno == EINTR)
            return 0;
        conn_close(c);
        return -1;
    }
    c->woff += (size_t)w;
    if (c->woff == c->wlen)
        c->woff = c->wlen = 0;
    update_events(c);
    return 0;
}

static void on_accept(int lfd, bool tcp)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                perror("accept4");
            return;
        }
        if (tcp)
            echo_nodelay(fd);
        struct conn *c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        c->fd = fd;
        c->events = EPOLLIN;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
            echo_die("epoll_ctl");
    }
}

int main(int argc, char **argv)
{
    struct echo_args a;
    if (echo_parse(argc, argv, &a, false, false) < 0)
        return 2;
    struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART: epoll_wait returns EINTR */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    int lfd = echo_listen(&a);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0)
        echo_die("epoll_create1");
    static int listener_tag;
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = &listener_tag};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &lev) < 0)
        echo_die("epoll_ctl");
    echo_print_listening(&a, lfd);

    struct epoll_event evs[256];
    while (!stop) {
        int n = epoll_wait(epfd, evs, 256, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            echo_die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == &listener_tag) {
                on_accept(lfd, !a.unix_path);
                continue;
            }
            struct conn *c = evs[i].data.ptr;
            /* Writable first (the buffered data is older), then readable:
             * the same order as globeflower's io_run. */
            unsigned e = evs[i].events;
            if ((e & EPOLLOUT) && on_write(c) < 0)
                continue;
            if (e & (EPOLLIN | EPOLLHUP | EPOLLERR))
                (void)on_read(c);
        }
    }
    echo_print_rusage();
    return 0;
}
