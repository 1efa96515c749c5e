/*
 * Shared by the echo servers (server_gfl.c, server_epoll.c,
 * server_bufferevent.c): the command line, the listening socket of the
 * servers that make their own, and the two lines a server prints:
 *
 *   LISTENING port=<port>        (or unix=<path>) once it accepts connections
 *   RUSAGE user_s=... sys_s=...  when it stops (SIGTERM or SIGINT)
 *
 * Command line (every server):
 *   --host H       address to listen on (default 127.0.0.1)
 *   --port P       TCP port (default 0: a free one, printed on LISTENING)
 *   --unix PATH    a Unix stream socket instead of TCP
 *   --tls          TLS (servers that support it), with
 *   --cert F --key F  the PEM certificate and key
 *   --buffered     server_gfl only: the buffered protocol (get_buffer)
 */
#ifndef GFL_ECHO_COMMON_H
#define GFL_ECHO_COMMON_H

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

struct echo_args {
    const char *host, *port, *unix_path;
    const char *cert, *key;
    bool tls, buffered;
};

static inline void echo_usage(const char *prog, bool tls, bool buffered)
{
    fprintf(stderr, "usage: %s [--host H] [--port P | --unix PATH]%s%s\n", prog,
            tls ? " [--tls --cert FILE --key FILE]" : "", buffered ? " [--buffered]" : "");
}

static inline int echo_parse(int argc, char **argv, struct echo_args *a, bool tls_ok, bool buffered_ok)
{
    memset(a, 0, sizeof *a);
    a->host = "127.0.0.1";
    a->port = "0";
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        const char **val = NULL;
        if (strcmp(s, "--host") == 0)
            val = &a->host;
        else if (strcmp(s, "--port") == 0)
            val = &a->port;
        else if (strcmp(s, "--unix") == 0)
            val = &a->unix_path;
        else if (strcmp(s, "--cert") == 0 && tls_ok)
            val = &a->cert;
        else if (strcmp(s, "--key") == 0 && tls_ok)
            val = &a->key;
        else if (strcmp(s, "--tls") == 0 && tls_ok)
            a->tls = true;
        else if (strcmp(s, "--buffered") == 0 && buffered_ok)
            a->buffered = true;
        else
            goto bad;
        if (val) {
            if (++i >= argc)
                goto bad;
            *val = argv[i];
        }
    }
    if (a->tls && (!a->cert || !a->key))
        goto bad;
    return 0;
bad:
    echo_usage(argv[0], tls_ok, buffered_ok);
    return -1;
}

static inline void echo_die(const char *what)
{
    fprintf(stderr, "echo server: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* A non-blocking listening socket as the arguments say. */
static inline int echo_listen(const struct echo_args *a)
{
    int fd;
    if (a->unix_path) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        if (strlen(a->unix_path) >= sizeof sa.sun_path) {
            errno = ENAMETOOLONG;
            echo_die("--unix");
        }
        strcpy(sa.sun_path, a->unix_path);
        unlink(a->unix_path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
            echo_die("bind");
    } else {
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai;
        int rc = getaddrinfo(a->host, a->port, &hints, &ai);
        if (rc) {
            fprintf(stderr, "echo server: %s:%s: %s\n", a->host, a->port, gai_strerror(rc));
            exit(1);
        }
        fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        int one = 1;
        if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
            bind(fd, ai->ai_addr, ai->ai_addrlen) < 0)
            echo_die("bind");
        freeaddrinfo(ai);
    }
    if (listen(fd, 1024) < 0)
        echo_die("listen");
    return fd;
}

/* TCP_NODELAY on an accepted TCP socket (what globeflower does). */
static inline void echo_nodelay(int fd)
{
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static inline void echo_print_listening(const struct echo_args *a, int fd)
{
    if (a->unix_path) {
        printf("LISTENING unix=%s\n", a->unix_path);
    } else {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        int port = 0;
        if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0)
            port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                  : ((struct sockaddr_in *)&ss)->sin_port);
        printf("LISTENING port=%d\n", port);
    }
    fflush(stdout);
}

static inline void echo_print_rusage(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("RUSAGE user_s=%.6f sys_s=%.6f\n", (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6,
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6);
    fflush(stdout);
}

#endif
