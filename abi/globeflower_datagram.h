/*
 * Datagram endpoints (UDP, Unix datagram sockets): asyncio's
 * create_datagram_endpoint / DatagramTransport / DatagramProtocol.
 * Included by globeflower.h; do not include directly.
 *
 * A datagram endpoint is a gfl_transport (see globeflower_transport.h for
 * the lifetime rules, which all apply), driven by a gfl_datagram_protocol
 * instead of a gfl_protocol. The generic transport functions work on it:
 *  - gfl_transport_close (flushes buffered datagrams, then
 *    connection_lost(NULL)), gfl_transport_abort, gfl_transport_is_closing;
 *  - gfl_transport_get_write_buffer_size (payload bytes of datagrams
 *    waiting for the socket) and the write buffer limits, which drive
 *    pause_writing / resume_writing as for streams;
 *  - gfl_transport_pause_reading / resume_reading / is_reading;
 *  - gfl_transport_get_extra_info: "sockname", "peername" (connected
 *    endpoints only), "socket", "family"; gfl_transport_fileno;
 *    gfl_transport_get_sockaddr;
 *  - gfl_transport_write / writev send ONE datagram (the iovecs gathered)
 *    to the connected peer or the default remote address;
 *  - gfl_transport_write_eof: GFL_ENOSYS (can_write_eof is 0).
 * gfl_transport_set_protocol/get_protocol take stream protocols: use
 * gfl_datagram_set_protocol/get_protocol instead (after
 * gfl_transport_set_protocol, datagrams and errors are no longer delivered).
 *
 * Sending never blocks and never splits: a datagram is handed to the kernel
 * at once; only when the socket is full (EAGAIN) is it copied into a queue
 * flushed, in order, when the socket is writable. As in asyncio, an OS
 * error while sending or receiving (ICMP port unreachable on a connected
 * socket: ConnectionRefusedError; a datagram too big: OSError EMSGSIZE; ...)
 * is reported to error_received and the endpoint stays open: it never
 * reaches connection_lost.
 */
#ifndef GLOBEFLOWER_DATAGRAM_H
#define GLOBEFLOWER_DATAGRAM_H

#include <sys/socket.h>

typedef struct gfl_datagram_protocol {
    size_t size; /* sizeof(gfl_datagram_protocol) */
    /* The endpoint is ready (first callback). */
    void (*connection_made)(gfl_transport *t, void *ud);
    /* One datagram; `data` and `addr` (the sender, as recvfrom(2) gives
     * it; NULL with addrlen 0 when the kernel gives none) are borrowed for
     * the call. Zero-length datagrams are delivered. */
    void (*datagram_received)(gfl_transport *t, const void *data, size_t len, const struct sockaddr *addr, socklen_t addrlen, void *ud);
    /* A send or receive failed (an OSError-named error value, borrowed).
     * The endpoint stays open. Called from the ready queue or, for a send
     * that fails at once, from inside gfl_datagram_sendto (asyncio's
     * behaviour). */
    void (*error_received)(gfl_transport *t, gfl_value *error, void *ud);
    /* Last callback; `error` is NULL after close/abort. */
    void (*connection_lost)(gfl_transport *t, gfl_value *error, void *ud);
    /* The queue of unsent datagrams went above the high-water mark / back
     * to the low one. */
    void (*pause_writing)(gfl_transport *t, void *ud);
    void (*resume_writing)(gfl_transport *t, void *ud);
} gfl_datagram_protocol;

/* As gfl_protocol_factory, for datagram protocols. */
typedef int (*gfl_datagram_protocol_factory)(void *factory_ud, gfl_transport *t, const gfl_datagram_protocol **proto, void **ud);

typedef struct gfl_datagram_options {
    size_t size; /* sizeof(gfl_datagram_options) */
    /* bind(2) here (host NULL: every interface; port NULL or "0": any) */
    const char *local_host;
    const char *local_port;
    /* connect(2) here: datagrams then go (and only come) from this peer */
    const char *remote_host;
    const char *remote_port;
    /* AF_UNSPEC (0), AF_INET, AF_INET6, or AF_UNIX (addresses then
     * given through local_addrs/remote_addrs). Required (not 0) when no
     * address at all is given. */
    int family;
    int protocol; /* socket protocol; 0: the default */
    int flags;    /* extra getaddrinfo flags */
    int reuse_port;      /* non-zero: SO_REUSEPORT */
    /* non-zero: SO_BROADCAST; a remote address is then NOT connected to,
     * only used as the default destination (asyncio's allow_broadcast) */
    int allow_broadcast;
    /* Pre-resolved addresses: used instead of (local|remote)_host/port.
     * Entries may be AF_UNIX addresses (a stale socket file at a local
     * path is removed before binding, as asyncio does). */
    const gfl_addrinfo *local_addrs;
    const gfl_addrinfo *remote_addrs;
} gfl_datagram_options;

/* Resolves the addresses (in the thread pool unless numeric) and, as
 * asyncio does, tries the first address of each (family, protocol) both
 * lists share: socket, options, bind, connect. The future resolves to the
 * endpoint (a gfl_transport_class object) once connection_made has run, or
 * fails with the first attempt's error. factory_release(factory_ud), if
 * set, runs once when the factory is no longer needed. NULL on bad
 * arguments (opts NULL, no address and no family, an unknown family). */
GFL_EXPORT gfl_future *gfl_create_datagram_endpoint(gfl_loop *loop, gfl_datagram_protocol_factory factory, void *factory_ud, gfl_release_fn factory_release, const gfl_datagram_options *opts);
/* Wraps an existing datagram socket (SOCK_DGRAM; bound or connected or
 * neither). The fd belongs to the core once a future is returned (it is
 * closed with the endpoint, or if the future fails). */
GFL_EXPORT gfl_future *gfl_datagram_from_socket(gfl_loop *loop, gfl_datagram_protocol_factory factory, void *factory_ud, gfl_release_fn factory_release, int fd);

/* Sends one datagram of `len` bytes (0 is allowed) to `addr`, or with addr
 * NULL to the connected peer / default remote address. On a connected
 * endpoint `addr` must be NULL or the peer's address. 0 when the datagram
 * was sent, queued, or failed with an OS error (which then went to
 * error_received); GFL_EINVAL (bad arguments, not a datagram endpoint),
 * GFL_ENOTCONN (addr NULL and no default destination), GFL_ECLOSED
 * (closing or closed), GFL_ENOMEM. gfl_transport_write/writev answer the
 * same way. */
GFL_EXPORT int gfl_datagram_sendto(gfl_transport *t, const void *data, size_t len, const struct sockaddr *addr, socklen_t addrlen);
/* asyncio's set_protocol/get_protocol for datagram endpoints. */
GFL_EXPORT int gfl_datagram_set_protocol(gfl_transport *t, const gfl_datagram_protocol *proto, void *ud);
GFL_EXPORT int gfl_datagram_get_protocol(gfl_transport *t, const gfl_datagram_protocol **proto, void **ud);

#endif
