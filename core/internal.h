/*
 * Internal declarations shared by the files of core/. Never installed and
 * never included by bindings or plugins (they use abi/ only).
 */
#ifndef GFL_CORE_INTERNAL_H
#define GFL_CORE_INTERNAL_H

#include "globeflower.h"
#include "globeflower_plugin.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>

struct event_base;
struct event;
struct epoll_event;

/* ---- allocation through the loop's hook ---- */
void *gfl__alloc(gfl_loop *loop, size_t size);
void *gfl__calloc(gfl_loop *loop, size_t n, size_t size); /* overflow-checked */
void *gfl__realloc(gfl_loop *loop, void *ptr, size_t size); /* size > 0 */
void gfl__free(gfl_loop *loop, void *ptr);

/* ---- the handle table: every scheduled callback lives in a slot ---- */
enum gfl_slot_state {
    GFL_SLOT_FREE = 0,
    GFL_SLOT_READY,     /* in the ready queue */
    GFL_SLOT_TIMER,     /* in the timer heap */
    GFL_SLOT_CANCELLED, /* cancelled, still referenced by the heap or queue */
    GFL_SLOT_PARKED,    /* an owned slot (below) that is not queued */
};

enum gfl_slot_kind {
    GFL_SLOT_PLAIN = 0, /* cb(arg) */
    GFL_SLOT_FUTURE,    /* fcb(future, arg); holds a reference to future */
    /* fcb(future, rec->arg) where arg is a struct gfl_future_rel (freed
     * when the slot runs or is dropped; dropped: rec->release(rec->arg)) */
    GFL_SLOT_FUTURE_REL,
    /* cb(arg), owned by one I/O source for its whole life and queued again
     * on every readiness: no allocation or handle per event. Running it
     * parks it instead of freeing it; no public handle ever names it. */
    GFL_SLOT_OWNED,
};

/* The argument of a GFL_SLOT_FUTURE_REL slot (from the loop's allocator). */
struct gfl_future_rel {
    void *arg;
    gfl_release_fn release;
};

/* 32 bytes: a million pending callbacks fit in 32 MB. */
struct gfl_slot {
    union {
        gfl_callback cb;
        gfl_future_callback fcb;
    } fn;
    void *arg;
    union {
        gfl_future *future;     /* GFL_SLOT_FUTURE only */
        gfl_release_fn release; /* GFL_SLOT_PLAIN: called if it never runs */
        uint32_t next_free;     /* GFL_SLOT_FREE only */
    };
    uint32_t generation; /* bumped when freed: stale handles name nothing */
    uint8_t state;
    uint8_t kind;
};

#define GFL_NO_SLOT UINT32_MAX

/* 16 bytes, keys inline so sifting touches only the heap array. */
struct gfl_timer_entry {
    double when;
    uint32_t slot;
    uint32_t seq; /* ties broken by insertion order (wrap-around aware) */
};

struct gfl_threadsafe_item {
    gfl_callback cb;
    void *arg;
};

struct gfl_fd_watch; /* watchers.c */
struct gfl_signal_watch; /* signals.c */
struct gfl_executor; /* executor.c */

struct gfl_loop {
    gfl_realloc_fn realloc;
    void *realloc_ud;

    struct event_base *base;
    /* Bounds a blocking poll: a timerfd, because libevent's own timers run
     * on a coarse clock and would fire up to 4 ms late. */
    int poll_timer_fd;
    bool poll_timer_armed;
    struct event *poll_timeout;
    pthread_t owner;

    int refs;     /* public references: the loop closes when they reach 0 */
    int memrefs;  /* internal references (futures, tasks): memory lifetime */
    bool closed;
    /* close_loop is releasing what the loop held: the futures it cancels
     * (and hosts' release functions) may still settle futures; afterwards
     * gfl_future_set_result/set_error/cancel say GFL_ECLOSED. */
    bool tearing_down;
    bool running;
    bool stopping;

    /* handle table */
    struct gfl_slot *slots;
    uint32_t nslots, slots_cap;
    uint32_t free_head; /* UINT32_MAX: none */

    /* ready queue: ring of slot indices */
    uint32_t *ready;
    size_t ready_head, ready_count, ready_cap;

    /* timers: binary min-heap on (when, seq) */
    struct gfl_timer_entry *timers;
    size_t ntimers, timers_cap, ncancelled_timers;
    uint32_t timer_seq;

    /* gfl_call_soon_threadsafe */
    pthread_mutex_t ts_lock;
    struct gfl_threadsafe_item *ts_items; /* filled by other threads */
    size_t ts_count, ts_cap;
    atomic_bool ts_wake_pending; /* an eventfd write is outstanding */
    int wake_fd;                 /* eventfd */
    struct event *wake_event;

    /* fd watchers (watchers.c), indexed by fd */
    struct gfl_fd_watch **fd_watches;
    int fd_watches_cap;

    /* signals (signals.c) */
    struct gfl_signal_watch *signals;
    struct gfl_signal_wakeup *signal_wakeup; /* signals.c: while any handler */

    /* errors and debug */
    gfl_exception_handler exception_handler;
    void *exception_ud;
    bool debug;
    double slow_callback_duration;
    gfl_slow_callback_handler slow_handler;
    void *slow_ud;

    gfl_task *current_task; /* task.c */
    struct gfl_executor *executor; /* executor.c, created on first use */
    struct gfl_fs_watcher *fs_watchers; /* fswatch.c: the open ones */
    unsigned executor_threads;
    int backend_fd; /* -1 until asked for */
    void (*before_poll)(gfl_loop *loop, void *ud);
    void (*after_poll)(gfl_loop *loop, void *ud);
    void *poll_hook_ud;
    struct gfl_streams *streams; /* transport.c: open transports/servers (NULL: none) */
    /* iopoll.c: our epoll set (stream fds + libevent's epoll fd), -1: none */
    int io_epfd;
    int io_base_fd; /* libevent's epoll fd, in io_epfd */
    /* An fd libevent watched was closed behind our back: its epoll set may
     * keep an entry we cannot delete; renewed before the next poll. */
    bool base_orphaned;
    struct epoll_event *io_events;
    int io_events_cap;
    struct gfl_io_source **io_sources; /* indexed by fd */
    int io_sources_cap;
    uint32_t io_tag; /* the last registration's tag */
    struct gfl_exports *exports; /* registry.c (NULL: none yet) */
    /* gfl_loop_interrupt: the running run/run_once/run_for returns
     * GFL_EINTR after the current callback. */
    bool interrupting;
    gfl_value *interrupt_error; /* kept for gfl_loop_take_interrupt */
    struct gfl_loop *live_prev, *live_next; /* loop.c: the live-loop list */
    /* gfl_loop_at_run_end: called as the current run returns */
    struct gfl_threadsafe_item *run_end;
    uint32_t n_run_end, cap_run_end;
};

/* ---- loop.c ---- */
/* GFL_OK, or GFL_EINVAL / GFL_ECLOSED / GFL_EWRONGTHREAD. Inline: it guards
 * every call on the hot path (a write per message). */
static inline int gfl__check_loop(const gfl_loop *loop)
{
    if (!loop)
        return GFL_EINVAL;
    if (loop->closed)
        return GFL_ECLOSED;
    if (!pthread_equal(loop->owner, pthread_self()))
        return GFL_EWRONGTHREAD;
    return GFL_OK;
}
void gfl__loop_memref(gfl_loop *loop);
void gfl__loop_memunref(gfl_loop *loop);
/* Schedules fcb(future, arg) on the ready queue, holding a future reference
 * until it runs or is dropped. */
int gfl__call_soon_future(gfl_loop *loop, gfl_future_callback fcb, gfl_future *future, void *arg);
/* The same with release(arg) called if it never runs (dropped when the loop
 * closes); release NULL: gfl__call_soon_future. On failure release is not
 * called. */
int gfl__call_soon_future_rel(gfl_loop *loop, gfl_future_callback fcb, gfl_future *future, void *arg, gfl_release_fn release);

/* ---- handles.c: the handle table and ready queue ---- */
int gfl__slot_alloc(gfl_loop *loop, uint32_t *index);
void gfl__slot_release(gfl_loop *loop, uint32_t index);
int gfl__ready_grow(gfl_loop *loop); /* doubles the ring */

/* Appends a slot to the ready queue and sets GFL_SLOT_READY. */
static inline int gfl__ready_push(gfl_loop *loop, uint32_t index)
{
    if (loop->ready_count == loop->ready_cap) {
        int rc = gfl__ready_grow(loop);
        if (rc < 0)
            return rc;
    }
    loop->ready[(loop->ready_head + loop->ready_count) & (loop->ready_cap - 1)] = index;
    loop->ready_count++;
    loop->slots[index].state = GFL_SLOT_READY;
    return GFL_OK;
}

/* Takes the first slot of the ready queue (ready_count > 0). */
static inline uint32_t gfl__ready_pop(gfl_loop *loop)
{
    uint32_t index = loop->ready[loop->ready_head];
    loop->ready_head = (loop->ready_head + 1) & (loop->ready_cap - 1);
    loop->ready_count--;
    return index;
}

/* Owned slots (GFL_SLOT_OWNED): one per I/O source, queued per readiness. */
int gfl__owned_slot_new(gfl_loop *loop, gfl_callback cb, void *arg, uint32_t *index);
/* Gives it up; if it is queued it is dropped (not run) when reached. */
void gfl__owned_slot_free(gfl_loop *loop, uint32_t index);
/* Queues it unless it is queued already; GFL_OK or GFL_ENOMEM. */
static inline int gfl__owned_slot_queue(gfl_loop *loop, uint32_t index)
{
    if (loop->slots[index].state == GFL_SLOT_READY)
        return GFL_OK;
    return gfl__ready_push(loop, index);
}
int gfl__ready_reserve(gfl_loop *loop, size_t extra);     /* room for extra pushes */
gfl_handle gfl__handle_of(const gfl_loop *loop, uint32_t index);
/* The slot a handle names, or NULL for a stale/invalid handle. */
struct gfl_slot *gfl__slot_of(const gfl_loop *loop, gfl_handle handle, uint32_t *index);
/* Drops a slot that will never run (loop closing): releases what it holds. */
void gfl__slot_drop(gfl_loop *loop, uint32_t index);

/* ---- timers.c ---- */
int gfl__timer_push(gfl_loop *loop, double when, uint32_t slot);
/* Moves timers due at `now` to the ready queue; drops cancelled ones. */
int gfl__timers_run_due(gfl_loop *loop, double now);
/* The earliest live deadline, or -1 if none (drops cancelled heads). */
double gfl__timers_next(gfl_loop *loop);
void gfl__timer_cancelled(gfl_loop *loop); /* compacts when most are cancelled */
void gfl__timers_clear(gfl_loop *loop);

/* ---- threadsafe.c ---- */
int gfl__threadsafe_init(gfl_loop *loop);
void gfl__threadsafe_close(gfl_loop *loop);

/* ---- watchers.c ---- */
void gfl__watchers_close(gfl_loop *loop);
void gfl__backend_close(gfl_loop *loop); /* backend.c */

/* backend.c: libevent's epoll fd for this loop, identified without doubt
 * (fdinfo: it watches the loop's wake eventfd), or a GFL_E* code. `hint`
 * (or -1): the fd to check first, before scanning every fd. */
int gfl__libevent_epoll_fd(gfl_loop *loop, int hint);

/* ---- sigdispatch.c: the process-wide signal dispatcher ---- */
struct gfl_signal_port;
/* A loop's port (an eventfd and delivery counters), in the dispatcher's
 * list; NULL and *rc = GFL_ENOMEM/GFL_EMFILE on failure. */
struct gfl_signal_port *gfl__sigport_new(gfl_loop *loop, int *rc);
int gfl__sigport_fd(const struct gfl_signal_port *p);
/* Counts deliveries of signum for the port from now on; installs the
 * process handler if no loop watched signum. GFL_OK or GFL_EINVAL. */
int gfl__sigport_watch(struct gfl_signal_port *p, int signum);
/* Stops counting; restores the saved disposition if no loop watches it. */
void gfl__sigport_unwatch(struct gfl_signal_port *p, int signum);
/* The deliveries counted since the last take (and resets the count). */
unsigned gfl__sigport_take(struct gfl_signal_port *p, int signum);
void gfl__sigport_drain(struct gfl_signal_port *p);
/* Leaves the list (waiting out a running handler), closes, frees. */
void gfl__sigport_free(struct gfl_signal_port *p);

/* ---- iopoll.c: direct epoll for stream fds ---- */
struct gfl_io_source {
    /* Called inside the poll with EV_READ/EV_WRITE (within `interest`). */
    void (*ready)(struct gfl_io_source *src, short what);
    int fd;
    short interest; /* EV_READ|EV_WRITE in the set; 0: not in it */
    uint32_t tag;   /* of the current registration (iopoll.c) */
};
/* Sets up our epoll set at loop creation (hint: see gfl__libevent_epoll_fd);
 * on any failure loop->io_epfd stays -1. */
void gfl__iopoll_init(gfl_loop *loop, int hint);
/* Makes src's registration match `want` (0: removed); GFL_OK or an error. */
int gfl__iopoll_set(gfl_loop *loop, struct gfl_io_source *src, short want);
/* The poll phase when active: waits (block) or not, dispatches. */
void gfl__iopoll_poll(gfl_loop *loop, bool block);
/* Adds our set to another epoll fd (the backend fd), if we have one. */
int gfl__iopoll_attach(gfl_loop *loop, int epfd);
void gfl__iopoll_close(gfl_loop *loop);
/* Closes an fd the loop watched (its events already removed). EBADF means it
 * was closed behind our back, so a poller may keep an entry for the file (a
 * duplicate holds it open) that no fd number reaches: flags the loop. */
void gfl__close_watched_fd(gfl_loop *loop, int fd);
/* A watched fd no longer names the file that was registered (closed behind
 * our back): the same flag, for fds the loop does not own. */
void gfl__note_orphaned_fd(gfl_loop *loop);
/* Before polling: if flagged, rebuilds libevent's set (event_reinit) and
 * re-nests it; the orphaned entries go with the old set. */
void gfl__iopoll_renew(gfl_loop *loop);

/* ---- signals.c ---- */
void gfl__signals_close(gfl_loop *loop);

/* ---- fswatch.c: file-system watchers, over one OS facility ---- */
void gfl__fswatch_close_all(gfl_loop *loop); /* loop closing */

/* The OS facility behind fswatch.c (fswatch_inotify.c on Linux; another
 * platform supplies these three). A watch is a descriptor the loop polls
 * for readability. */
typedef void (*gfl__fswatch_emit_fn)(void *ctx, const char *name, int kind);
/* A new descriptor watching `path` (>= 0), or a negative GFL code. */
int gfl__fswatch_os_open(const char *path);
/* Reads what is pending on fd and emits each event (kind GFL_FS_EVENT_*;
 * name NULL for the watched path itself). Stops early when emit returns
 * with *stop set. 0, or a negative GFL code. */
int gfl__fswatch_os_drain(int fd, gfl__fswatch_emit_fn emit, void *ctx, const bool *stop);
void gfl__fswatch_os_close(int fd);

/* ---- executor.c ---- */
void gfl__executor_close(gfl_loop *loop);

/* ---- value.c ---- */
/* The CancelledError value for a message (new reference; NULL on ENOMEM). */
gfl_value *gfl__cancelled_error(const char *message);

/* ---- future.c ---- */
struct gfl_future_cb {
    gfl_future_callback cb; /* NULL: a waiting task (arg), see below */
    void *arg;
    gfl_release_fn release; /* release(arg) if cb will never run; may be NULL */
};

/* 64 bytes. The done callbacks form one ordered list: entry 0 is kept
 * inline (cb0), so the usual single callback costs no allocation (as in
 * CPython's C future); entries 1.. are callbacks[0..ncallbacks-2]. */
struct gfl_future {
    gfl_loop *loop; /* holds a memref */
    int refs;       /* loop-thread only */
    uint8_t state;  /* gfl_future_state */
    bool retrieved; /* the error was read */
    bool is_task;   /* this is the first member of a struct gfl_task */
    gfl_value *value; /* result, error or CancelledError */
    struct gfl_future_cb cb0;        /* entry 0 (valid when ncallbacks > 0) */
    struct gfl_future_cb *callbacks; /* entries 1.. (NULL until needed) */
    uint32_t ncallbacks, callbacks_cap; /* entries in all; room in callbacks */
};

/* Initialises an embedded future (refs = 1, takes a loop memref). */
void gfl__future_init(gfl_future *f, gfl_loop *loop, bool is_task);
/* Frees what an embedded future holds (not the struct itself). */
void gfl__future_destroy(gfl_future *f);

/* ---- registry.c ---- */
void gfl__exports_close(gfl_loop *loop); /* releases every export */
/* A done future holding `value` (consumed; NULL: out of memory) as its
 * result or error; NULL when out of memory. How the registry and plugin
 * calls report a sync function's outcome. */
gfl_future *gfl__future_settled(gfl_loop *loop, gfl_value *value, bool is_error);

/* ---- misc ---- */
double gfl__monotonic(void);

/* ==== value.c / future.c / task.c: additions (futures & tasks owner) ==== */
/* Completes a pending future with `state` (RESULT, ERROR or CANCELLED) and a
 * borrowed `value` (the future takes its own reference), then schedules its
 * done callbacks. Unlike the public setters it works on a task's future.
 * GFL_ESTATE if already done. */
int gfl__future_complete(gfl_future *f, int state, gfl_value *value);
/* A task waiting on `f`: kept in f's callback list (cb == NULL, arg == task),
 * in registration order with the done callbacks, holding a task reference
 * (the task points back at f weakly, so the two never form a cycle). When f
 * completes, gfl__task_wake runs at once (no user code: it only schedules
 * the task's next step with f's outcome); if f is destroyed still pending,
 * gfl__task_waiter_dropped runs instead. Both consume the waiter's task
 * reference. A done f wakes the task at once. */
int gfl__future_add_waiter(gfl_future *f, gfl_task *t);
void gfl__task_wake(gfl_task *t, gfl_future *done);
void gfl__task_waiter_dropped(gfl_task *t);
/* The last reference to a task went: frees it (gfl_future_unref calls it
 * for futures with is_task set, after the never-retrieved report). */
void gfl__task_destroy(gfl_task *t);
/* ==== end of futures & tasks additions ==== */

/* ==== watchers.c / signals.c / backend.c / executor.c additions (I/O owner) ==== */
/* watchers.c: queues cb(arg) on the ready queue as a plain callback (how
 * readiness and signals are delivered); its handle or a GFL_E* code. */
gfl_handle gfl__queue_plain(gfl_loop *loop, gfl_callback cb, void *arg);
/* (gfl__backend_close, declared above, closes loop->backend_fd if
 * gfl_loop_backend_fd created one; the loop's close path calls it.) */
/* ==== end of I/O additions ==== */

/* ==== transports (streams owner): transport.c, tcp.c, server.c, unix.c,
 * pipe.c, dns.c, sockaddr.c ==== */
#include <sys/socket.h>

/* Every transport, server and pending connect of a loop is on the loop's
 * list, so that closing the loop closes them (gfl__streams_close). */
struct gfl_stream_node {
    struct gfl_stream_node *prev, *next;
    /* Loop closing: release everything (fds, events, memory the loop
     * owns) and unlink the node; called before event_base_free. */
    void (*loop_closing)(struct gfl_stream_node *node);
};

/* Per-loop state, freed when the last node leaves (or at loop close). */
struct gfl_streams {
    struct gfl_stream_node head; /* circular list */
    char *rbuf;                  /* the shared read buffer (one read at a time) */
    size_t rbuf_cap;
};

int gfl__stream_register(gfl_loop *loop, struct gfl_stream_node *n);
void gfl__stream_unregister(gfl_loop *loop, struct gfl_stream_node *n);
/* close_loop calls this first: every transport's connection_lost runs
 * (with a "loop closed" error), servers and pending connects are dropped. */
void gfl__streams_close(gfl_loop *loop);
/* The loop's read buffer (at least GFL__RBUF_SIZE bytes), NULL on ENOMEM. */
#define GFL__RBUF_SIZE (256u * 1024u)
char *gfl__streams_rbuf(gfl_loop *loop);

/* A transport's layer: the public gfl_transport_* functions check the
 * arguments and the state, then dispatch here. The fd stream (transport.c)
 * is one layer; TLS (memory BIOs) is meant to be another that sits on a raw
 * stream by making itself that stream's protocol (gfl_transport_set_protocol)
 * and presenting a gfl_transport of its own to the user's protocol. */
struct gfl_transport_ops {
    const char *name;
    int (*writev)(gfl_transport *t, const gfl_iovec *iov, int iovcnt, size_t total);
    int (*write_eof)(gfl_transport *t);
    int (*can_write_eof)(gfl_transport *t);
    int (*set_reading)(gfl_transport *t, bool on);
    int64_t (*write_buffer_size)(gfl_transport *t);
    int (*close)(gfl_transport *t); /* flush, then gfl__transport_lost */
    int (*abort)(gfl_transport *t);
    gfl_value *(*extra_info)(gfl_transport *t, const char *name);
    int (*fileno)(gfl_transport *t);
    int (*get_sockaddr)(gfl_transport *t, int peer, void *addr, size_t *len);
    /* After connection_lost (or at loop close): release fds/events/buffers. */
    void (*teardown)(gfl_transport *t);
    /* Last reference gone: free the memory (teardown already ran). */
    void (*destroy)(gfl_transport *t);
};

/* The part every layer shares; layers embed it first. */
struct gfl_transport {
    const struct gfl_transport_ops *ops;
    gfl_loop *loop;              /* memref held */
    struct gfl_stream_node node; /* on the loop's list until torn down */
    int refs;                    /* users + the loop's until connection_lost */
    const gfl_protocol *proto_user; /* as given (get_protocol) */
    gfl_protocol proto;          /* a full-size copy; absent fields NULL */
    void *ud;
    size_t high, low;            /* write buffer limits */
    bool writing_paused;         /* pause_writing was delivered */
    bool reading;                /* not paused by the protocol */
    bool closing;                /* close/abort called or being lost */
    bool eof_written;            /* write_eof called */
    bool made;                   /* connection_made ran */
    bool lost_scheduled;         /* connection_lost is queued */
    bool lost;                   /* connection_lost ran: only ECLOSED now */
    gfl_value *lost_error;       /* for the queued connection_lost */
    gfl_handle made_handle, lost_handle;
    gfl_future *waiter;          /* resolved with the transport after made */
    struct gfl_server *server;   /* the server that accepted it, or NULL */
    struct gfl_transport *srv_prev, *srv_next; /* server's connection list */
    void (*on_made)(gfl_transport *t); /* layer hook after connection_made */
};

/* transport.c: the common machinery */
int gfl__transport_init(gfl_transport *t, gfl_loop *loop, const struct gfl_transport_ops *ops);
void gfl__transport_set_proto(gfl_transport *t, const gfl_protocol *proto, void *ud);
/* Schedules connection_made (then the layer's on_made, then resolves
 * t->waiter). */
int gfl__transport_start(gfl_transport *t);
/* Schedules connection_lost(error) (error may be NULL; borrowed) once. */
void gfl__transport_lost(gfl_transport *t, gfl_value *error);
/* A transport that was never started (no protocol calls): tears it down
 * (closing its fd) and drops the loop's reference. */
void gfl__transport_discard(gfl_transport *t);
/* Flow control after the buffer size changed. */
void gfl__transport_maybe_pause(gfl_transport *t, size_t buffered);
void gfl__transport_maybe_resume(gfl_transport *t, size_t buffered);
/* Calls a factory for t: 0 and the protocol set, or its error. */
int gfl__transport_run_factory(gfl_transport *t, gfl_protocol_factory f, void *fud);
/* GFL_FD_SOCKET: the caller guarantees a stream socket (no fstat is made). */
enum gfl_fd_kind { GFL_FD_SOCKET, GFL_FD_READ_PIPE, GFL_FD_WRITE_PIPE };
/* A new fd stream transport (takes the fd on success; NULL: ENOMEM). */
gfl_transport *gfl__fd_transport_new(gfl_loop *loop, int fd, enum gfl_fd_kind kind);
/* Wraps a ready fd (prepared by the caller): runs the factory at once and
 * returns the future resolved after connection_made. On a failed future the
 * fd is closed; on NULL (out of memory) the caller still owns it. */
gfl_future *gfl__fd_transport_open(gfl_loop *loop, int fd, enum gfl_fd_kind kind, gfl_protocol_factory factory, void *fud, gfl_release_fn frel);
/* tcp.c: the connector (Happy Eyeballs) for resolved `addrs`, or for
 * opts->host/port when addrs is NULL. */
gfl_future *gfl__connect(gfl_loop *loop, gfl_protocol_factory factory, void *fud, gfl_release_fn frel, const gfl_connect_options *opts, gfl_addrinfo *addrs);

/* server.c: a transport accepted by `s` was lost. */
void gfl__server_detach(struct gfl_server *s, gfl_transport *t);
gfl_server *gfl__server_new(gfl_loop *loop, gfl_protocol_factory f, void *fud, gfl_release_fn frel, const gfl_server_options *opts);
int gfl__server_add_socket(gfl_server *s, int fd); /* takes the fd on success */
int gfl__server_set_unlink(gfl_server *s, const char *path); /* last socket's file */
int gfl__server_backlog(const gfl_server *s);
/* The server calls frel(factory_ud) when freed (set once it succeeded). */
void gfl__server_own_release(gfl_server *s, gfl_release_fn frel);

/* sockaddr.c */
int gfl__errno_code(int err);                   /* -err, GFL_EIO for 0 */
const char *gfl__errno_type(int err);           /* "ConnectionResetError", ... */
gfl_value *gfl__os_error(int err, const char *what); /* new error value */
int gfl__fd_prepare(int fd);                    /* NONBLOCK + CLOEXEC */
int gfl__sockaddr_format(const struct sockaddr *sa, socklen_t len, char *buf, size_t size);
/* A numeric service (port) above 65535, and the error value saying so
 * (code GFL_EINVAL, type "OverflowError"; a new reference). */
bool gfl__port_out_of_range(const char *service);
gfl_value *gfl__port_error(const char *service);
/* A connect/accept outcome as a future result or error (future borrowed). */
void gfl__future_fail_errno(gfl_future *f, int err, const char *what);
void gfl__future_fail_value(gfl_future *f, gfl_value *err); /* consumes err */

/* dns.c: a resolved list built without a thread hop when possible. */
struct gfl_addrinfo_entry {
    int family, socktype, protocol;
    socklen_t addrlen;
    struct sockaddr_storage addr;
};
struct gfl_addrinfo {
    atomic_int refs;
    int n, cap;
    char *canonname;
    struct gfl_addrinfo_entry *e;
};
/* Extra references to a transport/addrinfo value's object. */
gfl_value *gfl__addrinfo_value(gfl_addrinfo *ai); /* consumes ai */
/* ==== end of transports ==== */

#endif
