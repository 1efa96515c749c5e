/*
 * The process-wide signal dispatcher: one sigaction per signal number,
 * shared by every loop that watches it, routing each delivery to each of
 * those loops.
 *
 * Signals are process-wide state, so this is the one place the library
 * touches it, and only on request:
 *   - installed: when the first loop (in any thread) adds a handler for a
 *     signal, sigaction(signum) installs our handler (SA_RESTART, every
 *     signal blocked while it runs); the disposition it replaced is saved;
 *   - restored: when the last loop watching that signal removes its handler
 *     or closes, the saved disposition is put back, unless someone else
 *     replaced ours meanwhile (then theirs stays: we never undo a change
 *     we did not make);
 *   - nothing else: no signal mask is changed, no other signal touched.
 *
 * Each loop that watches signals has a port: an eventfd in its own poll
 * set, and one delivery counter per signal number. The handler (signal
 * context: only lock-free atomics and write(2)) adds one to the counter of
 * every port that wants the signal and writes to its eventfd; the loop takes
 * the counters when it polls (signals.c). So any loop can watch any signal,
 * several loops the same one, and a loop that is not running loses no
 * delivery: the count only grows until it is taken (it saturates rather than
 * wraps). What the kernel itself merges (a signal raised again while it is
 * blocked and pending) arrives once, as with any handler.
 *
 * The handler walks a list of ports with atomic links; a port leaves the list
 * under the lock and is freed only once no handler is running (a counter
 * the handler raises before it reads the list), so it never reads freed
 * memory or writes to a closed fd.
 */
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/eventfd.h>
#include <unistd.h>

#ifndef NSIG
#define NSIG 65
#endif

_Static_assert(ATOMIC_INT_LOCK_FREE == 2 && ATOMIC_POINTER_LOCK_FREE == 2 && ATOMIC_BOOL_LOCK_FREE == 2,
               "the signal handler needs lock-free atomics");

struct gfl_signal_port {
    gfl_loop *loop;
    int fd; /* eventfd, non-blocking */
    atomic_bool wanted[NSIG];
    atomic_uint pending[NSIG]; /* deliveries not yet taken */
    struct gfl_signal_port *_Atomic next;
};

static pthread_mutex_t dispatch_lock = PTHREAD_MUTEX_INITIALIZER;
static struct gfl_signal_port *_Atomic ports; /* the handler's list */
static atomic_int handlers_running;
/* Under dispatch_lock: */
static int watching[NSIG];             /* loops watching each signal */
static struct sigaction saved[NSIG];   /* what our handler replaced */

static void on_process_signal(int signum)
{
    int saved_errno = errno;
    atomic_fetch_add(&handlers_running, 1); /* before reading the list */
    for (struct gfl_signal_port *p = atomic_load(&ports); p; p = atomic_load(&p->next)) {
        if (!atomic_load(&p->wanted[signum]))
            continue;
        unsigned n = atomic_load(&p->pending[signum]);
        while (n != UINT_MAX && !atomic_compare_exchange_weak(&p->pending[signum], &n, n + 1))
            ;
        uint64_t one = 1;
        ssize_t w = write(p->fd, &one, sizeof one); /* EAGAIN: already readable */
        (void)w;
    }
    atomic_fetch_sub(&handlers_running, 1);
    errno = saved_errno;
}

struct gfl_signal_port *gfl__sigport_new(gfl_loop *loop, int *rc)
{
    struct gfl_signal_port *p = gfl__calloc(loop, 1, sizeof *p);
    if (!p) {
        *rc = GFL_ENOMEM;
        return NULL;
    }
    p->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (p->fd < 0) {
        *rc = errno == EMFILE || errno == ENFILE ? GFL_EMFILE : GFL_ENOMEM;
        gfl__free(loop, p);
        return NULL;
    }
    p->loop = loop;
    for (int s = 0; s < NSIG; s++) {
        atomic_init(&p->wanted[s], false);
        atomic_init(&p->pending[s], 0);
    }
    pthread_mutex_lock(&dispatch_lock);
    atomic_store(&p->next, atomic_load(&ports));
    atomic_store(&ports, p);
    pthread_mutex_unlock(&dispatch_lock);
    *rc = GFL_OK;
    return p;
}

int gfl__sigport_fd(const struct gfl_signal_port *p)
{
    return p->fd;
}

int gfl__sigport_watch(struct gfl_signal_port *p, int signum)
{
    int rc = GFL_OK;
    pthread_mutex_lock(&dispatch_lock);
    atomic_store(&p->pending[signum], 0);
    atomic_store(&p->wanted[signum], true);
    if (watching[signum] == 0) {
        struct sigaction sa = {.sa_handler = on_process_signal, .sa_flags = SA_RESTART};
        sigfillset(&sa.sa_mask);
        if (sigaction(signum, &sa, &saved[signum]) < 0) {
            atomic_store(&p->wanted[signum], false);
            rc = GFL_EINVAL;
        }
    }
    if (rc == GFL_OK)
        watching[signum]++;
    pthread_mutex_unlock(&dispatch_lock);
    return rc;
}

void gfl__sigport_unwatch(struct gfl_signal_port *p, int signum)
{
    pthread_mutex_lock(&dispatch_lock);
    atomic_store(&p->wanted[signum], false);
    atomic_store(&p->pending[signum], 0);
    if (--watching[signum] == 0) {
        struct sigaction now;
        if (sigaction(signum, NULL, &now) == 0 && !(now.sa_flags & SA_SIGINFO) &&
            now.sa_handler == on_process_signal)
            (void)sigaction(signum, &saved[signum], NULL);
    }
    pthread_mutex_unlock(&dispatch_lock);
}

unsigned gfl__sigport_take(struct gfl_signal_port *p, int signum)
{
    return atomic_exchange(&p->pending[signum], 0);
}

void gfl__sigport_drain(struct gfl_signal_port *p)
{
    uint64_t n;
    while (read(p->fd, &n, sizeof n) == (ssize_t)sizeof n)
        ;
}

/* The port's signals must all be unwatched already. */
void gfl__sigport_free(struct gfl_signal_port *p)
{
    pthread_mutex_lock(&dispatch_lock);
    struct gfl_signal_port *_Atomic *link = &ports;
    while (atomic_load(link) != p)
        link = &atomic_load(link)->next;
    atomic_store(link, atomic_load(&p->next));
    pthread_mutex_unlock(&dispatch_lock);
    /* A handler that started before the unlink may still hold p. */
    while (atomic_load(&handlers_running) > 0)
        sched_yield();
    close(p->fd);
    gfl__free(p->loop, p);
}
