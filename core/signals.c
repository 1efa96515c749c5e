/*
 * Signal handlers delivered as ordinary loop callbacks (asyncio's
 * add_signal_handler), in every loop.
 *
 * The process-wide part (the sigaction, what it replaced and when it is
 * restored) is sigdispatch.c. Here, per loop: the first handler gives the
 * loop a port (an eventfd polled with its other fds, plus delivery
 * counters); the last one removed, or closing the loop, frees it.
 *
 * When the port's eventfd is readable (the poll phase, not signal context)
 * we take each watched signal's counter and queue the user's callback:
 * one call per delivery, none lost while the loop was not running. The
 * calls for one signal run one per ready-queue turn (a callback that
 * re-queues itself while deliveries remain), so a signal storm costs a
 * counter, not a queue entry per delivery.
 */
#include "internal.h"

#include <limits.h>
#include <stdint.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#ifndef NSIG
#define NSIG 65
#endif

struct gfl_signal_watch {
    gfl_loop *loop;
    int signum;
    gfl_callback cb;
    void *arg;
    unsigned undelivered; /* deliveries taken from the port, not yet called */
    gfl_handle queued;    /* run_delivery queued, not yet run; 0: none */
    struct gfl_signal_watch *next;
};

/* The loop's port and the event that polls its eventfd. */
struct gfl_signal_wakeup {
    struct event ev; /* embedded, so it is allocated through the hook */
    struct gfl_signal_port *port;
};

static void cancel_queued(struct gfl_signal_watch *w)
{
    if (w->queued > 0)
        (void)gfl_handle_cancel(w->loop, w->queued); /* ENOENT: it ran */
    w->queued = 0;
}

static void run_delivery(void *arg);

static void queue_delivery(struct gfl_signal_watch *w)
{
    if (w->queued > 0 && gfl_handle_is_pending(w->loop, w->queued) == 1)
        return;
    gfl_handle h = gfl__queue_plain(w->loop, run_delivery, w);
    w->queued = h > 0 ? h : 0;
    if (h < 0) {
        /* The count stays, and the port is made readable again so the next
         * poll retries: waiting for another signal could wait forever. */
        uint64_t one = 1;
        if (w->loop->signal_wakeup)
            (void)!write(gfl__sigport_fd(w->loop->signal_wakeup->port), &one, sizeof one);
        (void)gfl_loop_call_exception_handler(w->loop,
            "signal handler: could not queue the callback (out of memory); delivery deferred", NULL);
    }
}

/* One delivery: the user's callback, once. It may remove or replace the
 * handler (freeing w), so w is not touched after it. */
static void run_delivery(void *arg)
{
    struct gfl_signal_watch *w = arg;
    w->queued = 0;
    if (w->undelivered == 0)
        return;
    w->undelivered--;
    gfl_callback cb = w->cb;
    void *cb_arg = w->arg;
    if (w->undelivered > 0)
        queue_delivery(w);
    cb(cb_arg);
}

/* libevent callback, in the poll phase (not signal context): only queue. */
static void on_wakeup(evutil_socket_t fd, short what, void *ctx)
{
    gfl_loop *loop = ctx;
    (void)fd;
    (void)what;
    struct gfl_signal_port *port = loop->signal_wakeup->port;
    gfl__sigport_drain(port);
    for (struct gfl_signal_watch *w = loop->signals; w; w = w->next) {
        unsigned n = gfl__sigport_take(port, w->signum);
        w->undelivered = n > UINT_MAX - w->undelivered ? UINT_MAX : w->undelivered + n;
        if (w->undelivered > 0)
            queue_delivery(w);
    }
}

static int open_wakeup(gfl_loop *loop)
{
    if (loop->signal_wakeup)
        return GFL_OK;
    struct gfl_signal_wakeup *wk = gfl__calloc(loop, 1, sizeof *wk);
    if (!wk)
        return GFL_ENOMEM;
    int rc;
    wk->port = gfl__sigport_new(loop, &rc);
    if (!wk->port) {
        gfl__free(loop, wk);
        return rc;
    }
    if (event_assign(&wk->ev, loop->base, gfl__sigport_fd(wk->port), EV_READ | EV_PERSIST, on_wakeup, loop) < 0 ||
        event_add(&wk->ev, NULL) < 0) {
        gfl__sigport_free(wk->port);
        gfl__free(loop, wk);
        return GFL_ENOMEM;
    }
    loop->signal_wakeup = wk;
    return GFL_OK;
}

static void close_wakeup(gfl_loop *loop)
{
    struct gfl_signal_wakeup *wk = loop->signal_wakeup;
    if (!wk)
        return;
    loop->signal_wakeup = NULL;
    event_del(&wk->ev);
    gfl__sigport_free(wk->port);
    gfl__free(loop, wk);
}

static struct gfl_signal_watch **find(gfl_loop *loop, int signum)
{
    struct gfl_signal_watch **p = &loop->signals;
    while (*p && (*p)->signum != signum)
        p = &(*p)->next;
    return p;
}

static bool valid_signum(int signum)
{
    return signum > 0 && signum < NSIG && signum != SIGKILL && signum != SIGSTOP;
}

GFL_EXPORT int gfl_add_signal_handler(gfl_loop *loop, int signum, gfl_callback cb, void *arg)
{
    int rc = gfl__check_loop(loop);
    if (rc < 0)
        return rc;
    if (!valid_signum(signum) || !cb)
        return GFL_EINVAL;

    struct gfl_signal_watch *w = *find(loop, signum);
    if (w) { /* replace: the old callback must not run any more; deliveries
              * not yet called go to the new one */
        cancel_queued(w);
        w->cb = cb;
        w->arg = arg;
        if (w->undelivered > 0)
            queue_delivery(w);
        return GFL_OK;
    }

    if ((rc = open_wakeup(loop)) < 0)
        return rc;
    w = gfl__calloc(loop, 1, sizeof *w);
    if (!w) {
        rc = GFL_ENOMEM;
        goto fail;
    }
    w->loop = loop;
    w->signum = signum;
    w->cb = cb;
    w->arg = arg;
    if ((rc = gfl__sigport_watch(loop->signal_wakeup->port, signum)) < 0) {
        gfl__free(loop, w);
        goto fail;
    }
    w->next = loop->signals;
    loop->signals = w;
    return GFL_OK;

fail:
    if (!loop->signals)
        close_wakeup(loop);
    return rc;
}

static void free_watch(gfl_loop *loop, struct gfl_signal_watch *w)
{
    cancel_queued(w);
    gfl__sigport_unwatch(loop->signal_wakeup->port, w->signum);
    gfl__free(loop, w);
}

GFL_EXPORT int gfl_remove_signal_handler(gfl_loop *loop, int signum)
{
    int rc = gfl__check_loop(loop);
    if (rc < 0)
        return rc;
    if (!valid_signum(signum))
        return GFL_EINVAL;
    struct gfl_signal_watch **p = find(loop, signum);
    struct gfl_signal_watch *w = *p;
    if (!w)
        return 0;
    *p = w->next;
    free_watch(loop, w);
    if (!loop->signals)
        close_wakeup(loop);
    return 1;
}

/* Loop closing (before event_base_free): queued callbacks are dropped by the
 * scheduler; we stop watching (restoring dispositions no other loop needs)
 * and free the port. */
void gfl__signals_close(gfl_loop *loop)
{
    while (loop->signals) {
        struct gfl_signal_watch *w = loop->signals;
        loop->signals = w->next;
        w->queued = 0; /* the scheduler drops it */
        free_watch(loop, w);
    }
    close_wakeup(loop);
}
