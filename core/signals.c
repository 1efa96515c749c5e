/*
 * Signal handlers delivered as ordinary loop callbacks (asyncio's
 * add_signal_handler).
 *
 * libevent catches the signal (its handler only writes to a socketpair) and
 * calls us back from the loop's poll phase, outside signal context; we then
 * queue the user's callback on the ready queue, like fd watchers do. A
 * signal raised again while its callback is still queued is coalesced into
 * that one call (the kernel coalesces pending signals the same way).
 *
 * Several loops: libevent delivers signals to ONE event_base per process
 * (the one that added a signal or ran most recently), and a base that lost
 * that role silently stops seeing its signals. So one loop at a time may own
 * signal handlers: the first loop to add one owns them until it has removed
 * its last handler (or closed); meanwhile another loop gets GFL_EBUSY. This
 * is the one piece of process-wide state here, and it only mirrors
 * libevent's own (signals are process-wide).
 */
#include "internal.h"

#include <event2/event.h>
#include <event2/event_struct.h>

#ifndef NSIG
#define NSIG 65
#endif

struct gfl_signal_watch {
    struct event ev; /* embedded, so it is allocated through the hook */
    gfl_loop *loop;
    int signum;
    gfl_callback cb;
    void *arg;
    gfl_handle queued; /* queued, not yet run; 0: none */
    struct gfl_signal_watch *next;
};

static pthread_mutex_t owner_lock = PTHREAD_MUTEX_INITIALIZER;
static const gfl_loop *owner; /* the loop whose handlers libevent serves */

static int claim_signals(const gfl_loop *loop)
{
    int rc = GFL_OK;
    pthread_mutex_lock(&owner_lock);
    if (owner && owner != loop)
        rc = GFL_EBUSY;
    else
        owner = loop;
    pthread_mutex_unlock(&owner_lock);
    return rc;
}

static void release_signals(const gfl_loop *loop)
{
    pthread_mutex_lock(&owner_lock);
    if (owner == loop)
        owner = NULL;
    pthread_mutex_unlock(&owner_lock);
}

static void cancel_queued(struct gfl_signal_watch *w)
{
    if (w->queued > 0)
        (void)gfl_handle_cancel(w->loop, w->queued); /* ENOENT: it ran */
    w->queued = 0;
}

/* libevent callback, in the poll phase (not signal context): only queue. */
static void on_signal(evutil_socket_t signum, short what, void *ctx)
{
    struct gfl_signal_watch *w = ctx;
    (void)signum;
    (void)what;
    if (w->queued > 0 && gfl_handle_is_pending(w->loop, w->queued) == 1)
        return;
    gfl_handle h = gfl__queue_plain(w->loop, w->cb, w->arg);
    w->queued = h > 0 ? h : 0;
    if (h < 0)
        (void)gfl_loop_call_exception_handler(w->loop,
            "signal handler: could not queue the callback (out of memory); signal lost", NULL);
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
    if (w) { /* replace: the old callback must not run any more */
        cancel_queued(w);
        w->cb = cb;
        w->arg = arg;
        return GFL_OK;
    }

    if ((rc = claim_signals(loop)) < 0)
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
    if (evsignal_assign(&w->ev, loop->base, signum, on_signal, w) < 0 ||
        evsignal_add(&w->ev, NULL) < 0) {
        gfl__free(loop, w);
        rc = GFL_EINVAL;
        goto fail;
    }
    w->next = loop->signals;
    loop->signals = w;
    return GFL_OK;

fail:
    if (!loop->signals)
        release_signals(loop);
    return rc;
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
    cancel_queued(w);
    evsignal_del(&w->ev); /* libevent restores the previous disposition */
    gfl__free(loop, w);
    if (!loop->signals)
        release_signals(loop);
    return 1;
}

/* Loop closing (before event_base_free): queued callbacks are dropped by the
 * scheduler; we release the events, the memory and signal ownership. */
void gfl__signals_close(gfl_loop *loop)
{
    while (loop->signals) {
        struct gfl_signal_watch *w = loop->signals;
        loop->signals = w->next;
        evsignal_del(&w->ev);
        gfl__free(loop, w);
    }
    release_signals(loop);
}
