/*
 * Transports and protocols: asyncio's model in C.
 *
 * A protocol is a table of callbacks (gfl_protocol) plus a `void *ud`; a
 * transport (gfl_transport) moves bytes for it. Streams are TCP and Unix
 * sockets (clients and servers) and pipes. Included by globeflower.h; do not
 * include directly.
 *
 * Lifetime
 *  - A transport is reference counted. The loop holds a reference until the
 *    protocol's connection_lost has run; pointers handed to protocol
 *    callbacks are borrowed and valid until connection_lost returns. Keep one
 *    longer with gfl_transport_ref. After connection_lost every call returns
 *    GFL_ECLOSED (never a crash).
 *  - Every protocol instance a factory returns gets connection_lost exactly
 *    once (that is where `ud` can be freed); connection_made comes first
 *    unless the loop was closed before it could run.
 *  - connection_lost is always called from the loop's ready queue, never
 *    from inside a transport call (write, close, abort, ...).
 *  - Closing the loop closes every transport and server: connection_lost
 *    is then called during gfl_loop_free (the loop is already closed).
 *  - All functions are loop-thread only (GFL_EWRONGTHREAD otherwise).
 *
 * Errors reach connection_lost as error values whose type names follow
 * Python's OSError subclasses ("ConnectionResetError", "BrokenPipeError",
 * "ConnectionRefusedError", "OSError", ...) and whose code is -errno.
 */
#ifndef GLOBEFLOWER_TRANSPORT_H
#define GLOBEFLOWER_TRANSPORT_H

typedef struct gfl_transport gfl_transport;
typedef struct gfl_server gfl_server;
typedef struct gfl_addrinfo gfl_addrinfo;
typedef struct gfl_nameinfo gfl_nameinfo;

/* Layout-compatible with struct iovec on POSIX systems. */
typedef struct gfl_iovec {
    const void *base;
    size_t len;
} gfl_iovec;

/* ------------------------------------------------------------------ */
/* Protocols                                                           */

typedef struct gfl_protocol {
    size_t size; /* sizeof(gfl_protocol) */
    /* The transport is ready (first callback). */
    void (*connection_made)(gfl_transport *t, void *ud);
    /* `data` is borrowed for the call. Unused when get_buffer is set. */
    void (*data_received)(gfl_transport *t, const void *data, size_t len, void *ud);
    /* The peer shut down its side. Return non-zero to keep the transport
     * open (half-close: you may still write), 0 to have it closed. NULL: 0. */
    int (*eof_received)(gfl_transport *t, void *ud);
    /* Last callback. `error` (borrowed) is NULL after close()/abort() or a
     * clean EOF, an error value otherwise. */
    void (*connection_lost)(gfl_transport *t, gfl_value *error, void *ud);
    /* The write buffer went above the high-water mark / back to low. */
    void (*pause_writing)(gfl_transport *t, void *ud);
    void (*resume_writing)(gfl_transport *t, void *ud);
    /* Buffered (zero-copy) reading, asyncio's BufferedProtocol: when
     * get_buffer is set the transport reads straight into the buffer it
     * returns (at least 1 byte, *size set; NULL aborts the connection with
     * an error) and reports the bytes read with buffer_updated. */
    void *(*get_buffer)(gfl_transport *t, size_t size_hint, size_t *size, void *ud);
    void (*buffer_updated)(gfl_transport *t, size_t nbytes, void *ud);
} gfl_protocol;

/* Creates the protocol instance for a new connection: sets *proto and *ud
 * and returns 0, or returns a GFL_E* code to refuse it (a server then drops
 * the connection; a client's future fails with that code). `t` is the new
 * transport (borrowed; connection_made follows). */
typedef int (*gfl_protocol_factory)(void *factory_ud, gfl_transport *t, const gfl_protocol **proto, void **ud);

/* ------------------------------------------------------------------ */
/* Transports                                                          */

/* The host class of transport values: futures of gfl_create_connection &
 * co. resolve to gfl_value_object(gfl_transport_class(), t); take the
 * transport out with gfl_value_get_object(v, gfl_transport_class(), &p). */
GFL_EXPORT const gfl_host_class *gfl_transport_class(void);
GFL_EXPORT gfl_transport *gfl_transport_ref(gfl_transport *t);
GFL_EXPORT void gfl_transport_unref(gfl_transport *t);
GFL_EXPORT gfl_loop *gfl_transport_loop(const gfl_transport *t);

/* Writes are never partial from the caller's view: what the kernel does not
 * take at once is buffered (copied) and flushed when the fd is writable.
 * 0 on success; GFL_ECLOSED after close/abort/connection loss, GFL_ESTATE
 * after write_eof. A socket error also returns its code and the transport
 * is then lost (connection_lost follows with the error). */
GFL_EXPORT int gfl_transport_write(gfl_transport *t, const void *data, size_t len);
GFL_EXPORT int gfl_transport_writev(gfl_transport *t, const gfl_iovec *iov, int iovcnt);
/* Shuts down the write side once the buffer is flushed. */
GFL_EXPORT int gfl_transport_write_eof(gfl_transport *t);
GFL_EXPORT int gfl_transport_can_write_eof(gfl_transport *t); /* 1/0 or error */
GFL_EXPORT int gfl_transport_pause_reading(gfl_transport *t);
GFL_EXPORT int gfl_transport_resume_reading(gfl_transport *t);
GFL_EXPORT int gfl_transport_is_reading(gfl_transport *t); /* 1/0 or error */
/* asyncio's rules: negative `high` means 64 KiB (or 4 * low when low is
 * given), negative `low` means high / 4; GFL_EINVAL unless low <= high. */
GFL_EXPORT int gfl_transport_set_write_buffer_limits(gfl_transport *t, int64_t high, int64_t low);
GFL_EXPORT int gfl_transport_get_write_buffer_limits(gfl_transport *t, size_t *high, size_t *low);
/* Bytes buffered, or a negative error. */
GFL_EXPORT int64_t gfl_transport_get_write_buffer_size(gfl_transport *t);
/* Flushes the buffer, then closes; connection_lost(NULL) follows. */
GFL_EXPORT int gfl_transport_close(gfl_transport *t);
/* Drops the buffer and closes now; connection_lost(NULL) follows. */
GFL_EXPORT int gfl_transport_abort(gfl_transport *t);
/* 1 once close/abort was called or the connection is being lost. */
GFL_EXPORT int gfl_transport_is_closing(gfl_transport *t);
/* asyncio's get_extra_info: a new value, or NULL when unknown. Names:
 * "peername", "sockname" (strings "host:port", "[v6]:port"; Unix socket
 * paths as bytes, abstract names with their leading NUL), "socket" and
 * "pipe" (the fd as an int), "family" (int). Later layers add their own
 * (TLS: "peercert", "cipher", "alpn_protocol", "tls_version"). */
GFL_EXPORT gfl_value *gfl_transport_get_extra_info(gfl_transport *t, const char *name);
/* The fd, or a negative error (closed). */
GFL_EXPORT int gfl_transport_fileno(gfl_transport *t);
/* The raw peer (peer != 0) or local address (a struct sockaddr) into
 * addr[*len]; *len is set to its length. GFL_ERANGE if it does not fit. */
GFL_EXPORT int gfl_transport_get_sockaddr(gfl_transport *t, int peer, void *addr, size_t *len);
/* asyncio's set_protocol/get_protocol. The old instance gets no further
 * calls (its connection_lost included: it is now the caller's). */
GFL_EXPORT int gfl_transport_set_protocol(gfl_transport *t, const gfl_protocol *proto, void *ud);
GFL_EXPORT int gfl_transport_get_protocol(gfl_transport *t, const gfl_protocol **proto, void **ud);

/* ------------------------------------------------------------------ */
/* DNS                                                                 */

/* A resolved address list: immutable once shared, reference counted,
 * usable from any thread. */
GFL_EXPORT const gfl_host_class *gfl_addrinfo_class(void);
/* An empty list to fill with gfl_addrinfo_add (for pre-resolved addresses). */
GFL_EXPORT gfl_addrinfo *gfl_addrinfo_new(void);
GFL_EXPORT int gfl_addrinfo_add(gfl_addrinfo *ai, int family, int socktype, int protocol, const void *addr, size_t addrlen);
GFL_EXPORT gfl_addrinfo *gfl_addrinfo_ref(gfl_addrinfo *ai);
GFL_EXPORT void gfl_addrinfo_unref(gfl_addrinfo *ai);
GFL_EXPORT int gfl_addrinfo_count(const gfl_addrinfo *ai);
/* Entry `i`: family/socktype/protocol (negative error if out of range). */
GFL_EXPORT int gfl_addrinfo_family(const gfl_addrinfo *ai, int i);
GFL_EXPORT int gfl_addrinfo_socktype(const gfl_addrinfo *ai, int i);
GFL_EXPORT int gfl_addrinfo_protocol(const gfl_addrinfo *ai, int i);
/* The struct sockaddr of entry i (borrowed), NULL if out of range. */
GFL_EXPORT const void *gfl_addrinfo_addr(const gfl_addrinfo *ai, int i, size_t *addrlen);
/* The canonical name (AI_CANONNAME, first entry only) or NULL. */
GFL_EXPORT const char *gfl_addrinfo_canonname(const gfl_addrinfo *ai);

/* getaddrinfo(3) in the loop's thread pool; numeric hosts and ports are
 * resolved at once without a thread hop. The future's value is an object of
 * gfl_addrinfo_class(). Failures are error values of type "gaierror". */
GFL_EXPORT gfl_future *gfl_getaddrinfo(gfl_loop *loop, const char *host, const char *service, int family, int socktype, int protocol, int flags);

GFL_EXPORT const gfl_host_class *gfl_nameinfo_class(void);
GFL_EXPORT const char *gfl_nameinfo_host(const gfl_nameinfo *ni);
GFL_EXPORT const char *gfl_nameinfo_service(const gfl_nameinfo *ni);
/* getnameinfo(3) in the pool; the value is an object of gfl_nameinfo_class. */
GFL_EXPORT gfl_future *gfl_getnameinfo(gfl_loop *loop, const void *addr, size_t addrlen, int flags);

/* ------------------------------------------------------------------ */
/* TCP clients                                                          */

typedef struct gfl_connect_options {
    size_t size;           /* sizeof(gfl_connect_options) */
    const char *host;      /* name or numeric address (or use addrs) */
    const char *port;      /* service name or number */
    int family;            /* AF_UNSPEC (0), AF_INET, AF_INET6 */
    int flags;             /* extra getaddrinfo flags */
    const gfl_addrinfo *addrs; /* pre-resolved addresses: host is ignored */
    const char *local_host;    /* bind before connecting (either may be NULL) */
    const char *local_port;
    /* > 0 enables Happy Eyeballs (RFC 8305; 0.25 s is its recommendation):
     * the next address is tried after this delay, or at once when an
     * attempt fails. 0: one address after another (asyncio's default). */
    double happy_eyeballs_delay;
    /* Reorder addresses alternating families, `interleave` of the first
     * family at a time; 0: 1 with Happy Eyeballs, none without. */
    int interleave;
} gfl_connect_options;

/* A future resolving to the transport (a gfl_transport_class object) once
 * connection_made has run; failing with the connection error (several
 * different errors: "OSError", "Multiple exceptions: ..."). Cancel it to
 * abandon the attempts. factory_release(factory_ud), if set, runs once when
 * the operation no longer needs the factory. */
GFL_EXPORT gfl_future *gfl_create_connection(gfl_loop *loop, gfl_protocol_factory factory, void *factory_ud, gfl_release_fn factory_release, const gfl_connect_options *opts);
/* Wraps an already-connected stream socket (TCP or Unix) or, with
 * gfl_pipe_*, a pipe. The fd belongs to the core once a future is returned
 * (it is closed with the transport, or if the future fails). */
GFL_EXPORT gfl_future *gfl_connect_socket(gfl_loop *loop, gfl_protocol_factory factory, void *factory_ud, gfl_release_fn factory_release, int fd);

/* ------------------------------------------------------------------ */
/* Servers                                                             */

typedef struct gfl_server_options {
    size_t size;              /* sizeof(gfl_server_options) */
    const char *const *hosts; /* NULL-terminated; NULL: every interface */
    const char *port;         /* service; NULL or "0": a free port */
    int family;               /* AF_UNSPEC (0), AF_INET, AF_INET6 */
    int flags;                /* extra getaddrinfo flags (AI_PASSIVE is set) */
    int backlog;              /* 0: 100 */
    int reuse_address;        /* 0: yes (asyncio's POSIX default), < 0: no */
    int reuse_port;           /* non-zero: SO_REUSEPORT */
    int start_serving;        /* 0: yes, < 0: not until gfl_server_start_serving */
    double accept_retry_delay; /* pause after EMFILE & co.; 0: 1 s */
    const gfl_addrinfo *addrs; /* pre-resolved addresses: hosts ignored */
} gfl_server_options;

/* A future resolving to the server (a gfl_server_class object) once it
 * listens on every address. factory_release(factory_ud) runs when the
 * server is freed. */
GFL_EXPORT gfl_future *gfl_create_server(gfl_loop *loop, gfl_protocol_factory factory, void *factory_ud, gfl_release_fn factory_release, const gfl_server_options *opts);
/* A server on an already-listening (or bound) socket: the fd belongs to
 * the server on success. `opts` may be NULL (only backlog, start_serving and
 * accept_retry_delay are used). */
GFL_EXPORT gfl_server *gfl_server_from_socket(gfl_loop *loop, gfl_protocol_factory factory, void *factory_ud, gfl_release_fn factory_release, int fd, const gfl_server_options *opts);

GFL_EXPORT const gfl_host_class *gfl_server_class(void);
GFL_EXPORT gfl_server *gfl_server_ref(gfl_server *s);
GFL_EXPORT void gfl_server_unref(gfl_server *s);
GFL_EXPORT int gfl_server_start_serving(gfl_server *s);
GFL_EXPORT int gfl_server_is_serving(gfl_server *s); /* 1/0 or error */
/* Stops listening (closes the listening sockets); connections stay. */
GFL_EXPORT int gfl_server_close(gfl_server *s);
/* Closes (close_clients) or aborts every connection the server accepted. */
GFL_EXPORT int gfl_server_close_clients(gfl_server *s);
GFL_EXPORT int gfl_server_abort_clients(gfl_server *s);
/* A future resolved (nil) once the server is closed and every connection
 * it accepted is lost, as asyncio's Server.wait_closed. */
GFL_EXPORT gfl_future *gfl_server_wait_closed(gfl_server *s);
GFL_EXPORT int gfl_server_socket_count(gfl_server *s);
GFL_EXPORT int gfl_server_socket_fd(gfl_server *s, int index);
/* The local address of listening socket `index`, as gfl_transport_get_sockaddr. */
GFL_EXPORT int gfl_server_get_sockaddr(gfl_server *s, int index, void *addr, size_t *len);
/* Connections currently open. */
GFL_EXPORT int gfl_server_connection_count(gfl_server *s);

/* ------------------------------------------------------------------ */
/* Unix stream sockets                                                 */

/* `path` of `path_len` bytes (0: strlen(path)); a name starting with '\0'
 * is in Linux's abstract namespace (give its length). */
GFL_EXPORT gfl_future *gfl_create_unix_connection(gfl_loop *loop, gfl_protocol_factory factory, void *factory_ud, gfl_release_fn factory_release, const char *path, size_t path_len);
/* Like gfl_create_server; only backlog, start_serving and
 * accept_retry_delay of `opts` are used (NULL: defaults). A stale socket
 * file at `path` is removed first, as asyncio does. */
GFL_EXPORT gfl_future *gfl_create_unix_server(gfl_loop *loop, gfl_protocol_factory factory, void *factory_ud, gfl_release_fn factory_release, const char *path, size_t path_len, const gfl_server_options *opts);

/* ------------------------------------------------------------------ */
/* Pipes                                                               */

/* Transports on the read or the write end of a pipe (or FIFO, character
 * device or socket). The fd is made non-blocking and belongs to the
 * transport on success. The future resolves after connection_made. A write
 * pipe reports its reader going away as connection_lost (BrokenPipeError
 * when data was pending). Writes to a pipe never raise SIGPIPE. */
GFL_EXPORT gfl_future *gfl_connect_read_pipe(gfl_loop *loop, gfl_protocol_factory factory, void *factory_ud, gfl_release_fn factory_release, int fd);
GFL_EXPORT gfl_future *gfl_connect_write_pipe(gfl_loop *loop, gfl_protocol_factory factory, void *factory_ud, gfl_release_fn factory_release, int fd);

#endif
