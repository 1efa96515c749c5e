/*
 * The loop: lifecycle, one iteration with asyncio's semantics, run/stop,
 * the per-thread current loop, the exception handler and debug mode.
 *
 * One iteration = poll I/O (timeout 0 when callbacks are ready or a stop is
 * pending, else until the next timer) -> move due timers to the ready queue
 * -> run exactly the callbacks that were ready when this phase began.
 */
#include "internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

static _Thread_local gfl_loop *current_loop;

/* Every loop from creation to close, so gfl_loop_acquire can tell a live
 * loop from a stale pointer without touching the memory it points to. */
static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static gfl_loop *live_head;

static void live_add(gfl_loop *loop)
{
    pthread_mutex_lock(&live_lock);
    loop->live_prev = NULL;
    loop->live_next = live_head;
    if (live_head)
        live_head->live_prev = loop;
    live_head = loop;
    pthread_mutex_unlock(&live_lock);
}

static void live_remove(gfl_loop *loop)
{
    pthread_mutex_lock(&live_lock);
    if (loop->live_prev)
        loop->live_prev->live_next = loop->live_next;
    else if (live_head == loop)
        live_head = loop->live_next;
    if (loop->live_next)
        loop->live_next->live_prev = loop->live_prev;
    loop->live_prev = loop->live_next = NULL;
    pthread_mutex_unlock(&live_lock);
}

gfl_loop *gfl_loop_acquire(const void *candidate)
{
    if (!candidate)
        return NULL;
    gfl_loop *found = NULL;
    pthread_mutex_lock(&live_lock);
    for (gfl_loop *l = live_head; l; l = l->live_next) {
        if ((const void *)l == candidate) {
            found = l;
            break;
        }
    }
    /* Referenced under the lock: a close on another thread waits for it. */
    if (found)
        found = gfl_loop_ref(found);
    pthread_mutex_unlock(&live_lock);
    return found;
}

static pthread_once_t library_once = PTHREAD_ONCE_INIT;
static int library_init_result;

/* libevent keeps process-wide state (signal ownership); make it thread-aware
 * once. Our own bases are created NOLOCK: each is used by one thread. */
static void library_init(void)
{
    library_init_result = evthread_use_pthreads();
}

double gfl__monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void *default_realloc(void *ud, void *ptr, size_t size)
{
    (void)ud;
    if (size == 0) {
        free(ptr);
        return NULL;
    }
    return realloc(ptr, size);
}

/* Whether `opts` (of the caller's size) contains `field`. */
#define HAS_OPTION(opts, field) \
    ((opts)->size >= offsetof(gfl_loop_options, field) + sizeof((opts)->field))

static void poll_timeout_fired(evutil_socket_t fd, short what, void *arg)
{
    /* Only there to end the poll; the iteration does the work. */
    (void)what;
    ((gfl_loop *)arg)->poll_timer_armed = false;
    uint64_t expirations;
    while (read(fd, &expirations, sizeof expirations) < 0 && errno == EINTR)
        ;
}

gfl_loop *gfl_loop_new(const gfl_loop_options *opts)
{
    gfl_realloc_fn ralloc = default_realloc;
    void *ralloc_ud = NULL;
    unsigned threads = 4;
    int debug = 0;
    double slow = 0.1;

    if (opts) {
        if (opts->size < sizeof(size_t))
            return NULL;
        if (HAS_OPTION(opts, realloc) && opts->realloc) {
            ralloc = opts->realloc;
            if (HAS_OPTION(opts, realloc_ud))
                ralloc_ud = opts->realloc_ud;
        }
        if (HAS_OPTION(opts, executor_threads) && opts->executor_threads)
            threads = opts->executor_threads;
        if (HAS_OPTION(opts, debug))
            debug = opts->debug;
        if (HAS_OPTION(opts, slow_callback_duration)) {
            double d = opts->slow_callback_duration;
            if (isnan(d) || d < 0)
                return NULL;
            if (d > 0)
                slow = d;
        }
        if (threads > 1024)
            return NULL;
    }
    void (*before_poll)(gfl_loop *, void *) = NULL;
    void (*after_poll)(gfl_loop *, void *) = NULL;
    void *poll_hook_ud = NULL;
    if (opts && HAS_OPTION(opts, poll_hook_ud)) {
        before_poll = opts->before_poll;
        after_poll = opts->after_poll;
        poll_hook_ud = opts->poll_hook_ud;
    }

    pthread_once(&library_once, library_init);
    if (library_init_result != 0)
        return NULL;

    gfl_loop *loop = ralloc(ralloc_ud, NULL, sizeof *loop);
    if (!loop)
        return NULL;
    memset(loop, 0, sizeof *loop);
    loop->realloc = ralloc;
    loop->realloc_ud = ralloc_ud;
    loop->owner = pthread_self();
    loop->refs = 1;
    loop->memrefs = 1;
    loop->free_head = GFL_NO_SLOT;
    loop->wake_fd = -1;
    loop->backend_fd = -1;
    loop->io_epfd = -1;
    loop->io_base_fd = -1;
    loop->debug = debug != 0;
    loop->slow_callback_duration = slow;
    loop->executor_threads = threads;
    loop->before_poll = before_poll;
    loop->after_poll = after_poll;
    loop->poll_hook_ud = poll_hook_ud;

    struct event_config *cfg = event_config_new();
    if (!cfg)
        goto fail;
    event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK);
    /* The lowest free fd now: where libevent's epoll fd will most likely
     * land (iopoll.c checks before it believes it). */
    int epoll_hint = dup(STDERR_FILENO);
    if (epoll_hint >= 0)
        close(epoll_hint);
    loop->base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    if (!loop->base)
        goto fail;
    loop->poll_timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (loop->poll_timer_fd < 0)
        goto fail_base;
    loop->poll_timeout = event_new(loop->base, loop->poll_timer_fd, EV_READ | EV_PERSIST, poll_timeout_fired, loop);
    if (!loop->poll_timeout)
        goto fail_timerfd;
    if (event_add(loop->poll_timeout, NULL) < 0 || gfl__threadsafe_init(loop) < 0)
        goto fail_timer;
    gfl__iopoll_init(loop, epoll_hint); /* optional: streams fall back to libevent */
    live_add(loop);
    return loop;

fail_timer:
    event_free(loop->poll_timeout);
fail_timerfd:
    close(loop->poll_timer_fd);
fail_base:
    event_base_free(loop->base);
fail:
    ralloc(ralloc_ud, loop, 0);
    return NULL;
}

void gfl__loop_memref(gfl_loop *loop)
{
    loop->memrefs++;
}

void gfl__loop_memunref(gfl_loop *loop)
{
    if (--loop->memrefs == 0)
        loop->realloc(loop->realloc_ud, loop, 0);
}

/* Releases everything the loop holds except its own memory. */
static void close_loop(gfl_loop *loop)
{
    /* Under the lock: pool threads read it in gfl_call_soon_threadsafe. */
    live_remove(loop);
    pthread_mutex_lock(&loop->ts_lock);
    loop->closed = true;
    pthread_mutex_unlock(&loop->ts_lock);
    loop->tearing_down = true; /* until the end: futures may still settle */
    gfl__loop_memref(loop); /* dropping futures below may release memrefs */

    gfl__exports_close(loop); /* hosts' release functions, while all else works */

    gfl__streams_close(loop);
    gfl__executor_close(loop);
    gfl__fswatch_close_all(loop); /* before the fd watches they use go */
    gfl__watchers_close(loop);
    gfl__signals_close(loop);
    gfl__backend_close(loop);
    gfl__iopoll_close(loop);

    /* Drop every scheduled callback without running it. */
    while (loop->ready_count > 0) {
        uint32_t i = gfl__ready_pop(loop);
        gfl__slot_drop(loop, i);
    }
    gfl__timers_clear(loop);
    gfl__threadsafe_close(loop);

    event_free(loop->poll_timeout);
    loop->poll_timeout = NULL;
    close(loop->poll_timer_fd);
    loop->poll_timer_fd = -1;
    event_base_free(loop->base);
    loop->base = NULL;

    gfl__free(loop, loop->slots);
    loop->slots = NULL;
    loop->nslots = loop->slots_cap = 0;
    loop->free_head = GFL_NO_SLOT;
    gfl__free(loop, loop->ready);
    loop->ready = NULL;
    loop->ready_cap = 0;
    gfl__free(loop, loop->run_end); /* never closed while running: none pending */
    loop->run_end = NULL;
    loop->n_run_end = loop->cap_run_end = 0;

    gfl_value_unref(loop->interrupt_error);
    loop->interrupt_error = NULL;
    loop->tearing_down = false;
    if (current_loop == loop)
        current_loop = NULL;
    gfl__loop_memunref(loop);
}

static int release_ref(gfl_loop *loop)
{
    bool last = --loop->refs == 0;
    if (last && !loop->closed)
        close_loop(loop);
    gfl__loop_memunref(loop);
    return GFL_OK;
}

int gfl_loop_free(gfl_loop *loop)
{
    if (!loop)
        return GFL_EINVAL;
    if (loop->closed)
        return GFL_ECLOSED;
    if (loop->running)
        return pthread_equal(loop->owner, pthread_self()) ? GFL_EBUSY : GFL_EWRONGTHREAD;
    loop->owner = pthread_self(); /* idle: whoever frees it owns it now */
    close_loop(loop);
    return release_ref(loop);
}

gfl_loop *gfl_loop_ref(gfl_loop *loop)
{
    if (gfl__check_loop(loop) < 0)
        return NULL;
    loop->refs++;
    gfl__loop_memref(loop);
    return loop;
}

int gfl_loop_unref(gfl_loop *loop)
{
    if (!loop || loop->refs <= 0)
        return GFL_EINVAL;
    if (!loop->closed) {
        int rc = gfl__check_loop(loop);
        if (rc < 0)
            return rc;
        if (loop->running && loop->refs == 1)
            return GFL_EBUSY;
    }
    return release_ref(loop);
}

/* Polls I/O for at most `timeout` seconds (negative: no limit). */
static void poll_io(gfl_loop *loop, double timeout)
{
    gfl__iopoll_renew(loop); /* only after an fd was closed behind us */
    if (timeout == 0) {
        /* NONBLOCK alone keeps dispatching while anything is active: a fd
         * that stays readable until the ready queue reads it would spin. */
        if (loop->io_epfd >= 0)
            gfl__iopoll_poll(loop, false);
        else
            event_base_loop(loop->base, EVLOOP_NONBLOCK | EVLOOP_ONCE);
        return;
    }
    if (loop->before_poll)
        loop->before_poll(loop, loop->poll_hook_ud);
    /* One-shot: re-arming replaces an earlier deadline; a poll without one
     * disarms a deadline left from an earlier poll that ended early. */
    if (timeout > 0 || loop->poll_timer_armed) {
        struct itimerspec its = {{0, 0}, {0, 0}}; /* zero: disarm */
        if (timeout > 0) {
            if (timeout > 86400.0 * 365)
                timeout = 86400.0 * 365;
            its.it_value.tv_sec = (time_t)timeout;
            its.it_value.tv_nsec = (long)((timeout - (double)its.it_value.tv_sec) * 1e9);
            if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
                its.it_value.tv_nsec = 1; /* zero would disarm it */
        }
        loop->poll_timer_armed = timeout > 0;
        timerfd_settime(loop->poll_timer_fd, 0, &its, NULL);
    }
    if (loop->io_epfd >= 0)
        gfl__iopoll_poll(loop, true); /* the timerfd bounds it through libevent's fd */
    else
        event_base_loop(loop->base, EVLOOP_ONCE);
    if (loop->after_poll)
        loop->after_poll(loop, loop->poll_hook_ud);
}

static void report_slow(gfl_loop *loop, gfl_callback cb, void *arg, double seconds)
{
    if (loop->slow_handler) {
        loop->slow_handler(loop, cb, arg, seconds, loop->slow_ud);
        return;
    }
    union {
        gfl_callback fn;
        void *ptr;
    } name = {.fn = cb};
    fprintf(stderr, "globeflower: executing callback %p(%p) took %.3f seconds\n", name.ptr, arg, seconds);
}

/* Runs one ready slot (already popped). */
static void run_slot(gfl_loop *loop, uint32_t i)
{
    struct gfl_slot *s = &loop->slots[i];
    if (s->kind == GFL_SLOT_OWNED && !loop->debug) {
        /* Readiness of an I/O source: parked, not freed (its owner may
         * queue it again from the callback's next poll on). */
        s->state = GFL_SLOT_PARKED;
        s->fn.cb(s->arg);
        return;
    }
    if (s->state == GFL_SLOT_CANCELLED) {
        gfl__slot_drop(loop, i);
        return;
    }
    /* Copy out and free the slot first: the callback may schedule more (the
     * array may move) and its handle must already be stale. */
    uint8_t kind = s->kind;
    gfl_callback cb = s->fn.cb;
    gfl_future_callback fcb = s->fn.fcb;
    void *arg = s->arg;
    gfl_future *future = kind == GFL_SLOT_FUTURE || kind == GFL_SLOT_FUTURE_REL ? s->future : NULL;
    if (kind == GFL_SLOT_OWNED) {
        s->state = GFL_SLOT_PARKED;
        kind = GFL_SLOT_PLAIN;
    } else {
        gfl__slot_release(loop, i);
    }
    if (kind == GFL_SLOT_FUTURE_REL) {
        /* It runs: the callback owns the argument, release is not called. */
        struct gfl_future_rel *rec = arg;
        arg = rec->arg;
        gfl__free(loop, rec);
        kind = GFL_SLOT_FUTURE;
    }

    double start = loop->debug ? gfl__monotonic() : 0;
    if (kind == GFL_SLOT_FUTURE) {
        fcb(future, arg);
        gfl_future_unref(future);
    } else {
        cb(arg);
    }
    if (loop->debug) {
        double took = gfl__monotonic() - start;
        if (took >= loop->slow_callback_duration)
            report_slow(loop, kind == GFL_SLOT_FUTURE ? NULL : cb, arg, took);
    }
}

static int iterate(gfl_loop *loop, double timeout)
{
    if (loop->ready_count > 0 || loop->stopping) {
        timeout = 0;
    } else {
        double next = gfl__timers_next(loop);
        if (next >= 0) {
            double wait = next - gfl__monotonic();
            if (wait < 0)
                wait = 0;
            if (timeout < 0 || wait < timeout)
                timeout = wait;
        }
    }
    poll_io(loop, timeout);
    if (loop->closed)
        return 0;
    if (loop->ntimers > 0) /* no clock read when there is no timer */
        gfl__timers_run_due(loop, gfl__monotonic());

    /* Callbacks scheduled from here on wait for the next iteration. */
    size_t n = loop->ready_count, k = 0;
    while (k < n && !loop->closed && !loop->interrupting) {
        run_slot(loop, gfl__ready_pop(loop));
        k++;
    }
    return (int)(k > INT32_MAX ? INT32_MAX : k);
}

/* run/run_once may move the loop to the calling thread when it is idle. */
static int enter(gfl_loop *loop)
{
    if (!loop)
        return GFL_EINVAL;
    if (loop->closed)
        return GFL_ECLOSED;
    if (loop->running)
        return pthread_equal(loop->owner, pthread_self()) ? GFL_ESTATE : GFL_EWRONGTHREAD;
    loop->owner = pthread_self();
    loop->running = true;
    gfl__loop_memref(loop); /* survive gfl_loop_unref from a callback */
    return GFL_OK;
}

int gfl_loop_at_run_end(gfl_loop *loop, gfl_callback fn, void *arg)
{
    int rc = gfl__check_loop(loop);
    if (rc < 0)
        return rc;
    if (!fn)
        return GFL_EINVAL;
    if (!loop->running)
        return GFL_ESTATE;
    if (loop->n_run_end == loop->cap_run_end) {
        uint32_t cap = loop->cap_run_end ? 2 * loop->cap_run_end : 4;
        void *grown = loop->run_end ? gfl__realloc(loop, loop->run_end, cap * sizeof *loop->run_end)
                                    : gfl__calloc(loop, cap, sizeof *loop->run_end);
        if (!grown)
            return GFL_ENOMEM;
        loop->run_end = grown;
        loop->cap_run_end = cap;
    }
    loop->run_end[loop->n_run_end++] = (struct gfl_threadsafe_item){fn, arg};
    return GFL_OK;
}

/* Ends a run: `rc`, or GFL_EINTR when a callback interrupted it. */
static int leave(gfl_loop *loop, int rc)
{
    /* Still running: a run-end callback may register another (it runs
     * too). Index by index, as the array may grow meanwhile. */
    for (uint32_t i = 0; i < loop->n_run_end; i++) {
        struct gfl_threadsafe_item it = loop->run_end[i];
        it.cb(it.arg);
    }
    loop->n_run_end = 0;
    if (loop->interrupting) {
        loop->interrupting = false;
        rc = GFL_EINTR;
    }
    loop->stopping = false;
    loop->running = false;
    gfl__loop_memunref(loop);
    return rc;
}

int gfl_loop_run_once(gfl_loop *loop, double timeout)
{
    if (loop && isnan(timeout))
        return GFL_EINVAL;
    int rc = enter(loop);
    if (rc < 0)
        return rc;
    return leave(loop, iterate(loop, timeout));
}

int gfl_loop_run_for(gfl_loop *loop, double max_seconds)
{
    if (loop && (isnan(max_seconds) || max_seconds < 0))
        return GFL_EINVAL;
    int rc = enter(loop);
    if (rc < 0)
        return rc;
    double deadline = gfl__monotonic() + max_seconds;
    int64_t total = 0;
    for (;;) {
        int n = iterate(loop, 0);
        total += n;
        if (loop->closed || loop->interrupting || loop->stopping)
            break;
        /* Nothing ran and nothing is queued: the loop is idle. */
        if (n == 0 && loop->ready_count == 0)
            break;
        if (gfl__monotonic() >= deadline)
            break;
    }
    return leave(loop, (int)(total > INT32_MAX ? INT32_MAX : total));
}

int gfl_loop_run(gfl_loop *loop)
{
    int rc = enter(loop);
    if (rc < 0)
        return rc;
    while (!loop->closed && !loop->interrupting) {
        iterate(loop, -1);
        if (loop->stopping)
            break;
    }
    return leave(loop, GFL_OK);
}

int gfl_loop_interrupt(gfl_loop *loop, const char *message, gfl_value *error)
{
    int rc = gfl__check_loop(loop);
    if (rc < 0)
        return rc;
    gfl_value_ref(error);
    gfl_value_unref(loop->interrupt_error);
    loop->interrupt_error = error;
    /* Only a running loop has a run to end; otherwise it is just reported. */
    if (loop->running)
        loop->interrupting = true;
    return gfl_loop_call_exception_handler(loop, message ? message : "interrupted by a callback", error);
}

gfl_value *gfl_loop_take_interrupt(gfl_loop *loop)
{
    if (gfl__check_loop(loop) < 0)
        return NULL;
    gfl_value *error = loop->interrupt_error;
    loop->interrupt_error = NULL;
    return error;
}

int gfl_loop_stop(gfl_loop *loop)
{
    int rc = gfl__check_loop(loop);
    if (rc < 0)
        return rc;
    loop->stopping = true;
    return GFL_OK;
}

double gfl_loop_time(const gfl_loop *loop)
{
    if (!loop)
        return GFL_EINVAL;
    return gfl__monotonic();
}

int gfl_loop_is_running(const gfl_loop *loop)
{
    return loop ? loop->running : GFL_EINVAL;
}

int gfl_loop_is_closed(const gfl_loop *loop)
{
    return loop ? loop->closed : GFL_EINVAL;
}

gfl_loop *gfl_loop_current(void)
{
    return current_loop;
}

int gfl_loop_set_current(gfl_loop *loop)
{
    if (loop) {
        int rc = gfl__check_loop(loop);
        if (rc < 0)
            return rc;
    }
    current_loop = loop;
    return GFL_OK;
}

/* ---- errors raised by callbacks ---- */

static void default_exception_handler(gfl_loop *loop, const char *message, gfl_value *error)
{
    (void)loop;
    fprintf(stderr, "globeflower: %s\n", message ? message : "unhandled error in callback");
    if (error && gfl_value_type_of(error) == GFL_VALUE_ERROR) {
        const char *tb = gfl_value_error_traceback(error);
        if (tb && *tb)
            fprintf(stderr, "%s%s", tb, tb[strlen(tb) - 1] == '\n' ? "" : "\n");
        fprintf(stderr, "%s: %s\n", gfl_value_error_type(error), gfl_value_error_message(error));
    }
}

int gfl_loop_set_exception_handler(gfl_loop *loop, gfl_exception_handler handler, void *ud)
{
    int rc = gfl__check_loop(loop);
    if (rc < 0)
        return rc;
    loop->exception_handler = handler;
    loop->exception_ud = handler ? ud : NULL;
    return GFL_OK;
}

int gfl_loop_call_exception_handler(gfl_loop *loop, const char *message, gfl_value *error)
{
    int rc = gfl__check_loop(loop);
    if (rc < 0)
        return rc;
    if (loop->exception_handler)
        loop->exception_handler(loop, message, error, loop->exception_ud);
    else
        default_exception_handler(loop, message, error);
    return GFL_OK;
}

/* ---- debug mode ---- */

int gfl_loop_set_debug(gfl_loop *loop, int enabled)
{
    int rc = gfl__check_loop(loop);
    if (rc < 0)
        return rc;
    loop->debug = enabled != 0;
    return GFL_OK;
}

int gfl_loop_get_debug(const gfl_loop *loop)
{
    int rc = gfl__check_loop(loop);
    return rc < 0 ? rc : loop->debug;
}

int gfl_loop_set_slow_callback_duration(gfl_loop *loop, double seconds)
{
    int rc = gfl__check_loop(loop);
    if (rc < 0)
        return rc;
    if (isnan(seconds) || seconds < 0)
        return GFL_EINVAL;
    loop->slow_callback_duration = seconds;
    return GFL_OK;
}

int gfl_loop_set_slow_callback_handler(gfl_loop *loop, gfl_slow_callback_handler handler, void *ud)
{
    int rc = gfl__check_loop(loop);
    if (rc < 0)
        return rc;
    loop->slow_handler = handler;
    loop->slow_ud = handler ? ud : NULL;
    return GFL_OK;
}
