/*
 * gfl_call_soon_threadsafe: other threads append to a mutex-protected array
 * and wake the loop through an eventfd. Only the first call after a drain
 * writes the eventfd, so a burst of calls costs one syscall, not one each.
 * The loop moves the callbacks to the ready queue, where they run in this
 * same iteration.
 */
#include "internal.h"

#include <errno.h>
#include <event2/event.h>
#include <sys/eventfd.h>
#include <string.h>
#include <unistd.h>

static void wake(gfl_loop *loop)
{
    uint64_t one = 1;
    /* EAGAIN means the counter is already non-zero: the loop will wake. */
    while (write(loop->wake_fd, &one, sizeof one) < 0 && errno == EINTR)
        ;
}

/* Moves pending cross-thread callbacks to the ready queue. Done under the
 * lock: the move is a few nanoseconds per callback, and on out-of-memory the
 * rest simply stays queued for the next iteration, so nothing is lost. */
static void drain(gfl_loop *loop)
{
    bool retry = false;
    pthread_mutex_lock(&loop->ts_lock);
    size_t done = 0, count = loop->ts_count;
    if (gfl__ready_reserve(loop, count) == GFL_OK) {
        for (; done < count; done++) {
            uint32_t i;
            if (gfl__slot_alloc(loop, &i) < 0)
                break;
            loop->slots[i].fn.cb = loop->ts_items[done].cb;
            loop->slots[i].arg = loop->ts_items[done].arg;
            gfl__ready_push(loop, i);
        }
    }
    if (done < count) {
        memmove(loop->ts_items, loop->ts_items + done, (count - done) * sizeof *loop->ts_items);
        retry = true;
    }
    loop->ts_count = count - done;
    atomic_store(&loop->ts_wake_pending, retry);
    pthread_mutex_unlock(&loop->ts_lock);
    if (retry)
        wake(loop);
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    uint64_t value;
    while (read(fd, &value, sizeof value) < 0 && errno == EINTR)
        ;
    drain(arg);
}

int gfl__threadsafe_init(gfl_loop *loop)
{
    if (pthread_mutex_init(&loop->ts_lock, NULL) != 0)
        return GFL_ENOMEM;
    atomic_init(&loop->ts_wake_pending, false);
    loop->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (loop->wake_fd < 0)
        goto fail_lock;
    loop->wake_event = event_new(loop->base, loop->wake_fd, EV_READ | EV_PERSIST, on_wake, loop);
    if (!loop->wake_event || event_add(loop->wake_event, NULL) < 0)
        goto fail_fd;
    return GFL_OK;

fail_fd:
    if (loop->wake_event)
        event_free(loop->wake_event);
    loop->wake_event = NULL;
    close(loop->wake_fd);
    loop->wake_fd = -1;
fail_lock:
    pthread_mutex_destroy(&loop->ts_lock);
    return GFL_ENOMEM;
}

void gfl__threadsafe_close(gfl_loop *loop)
{
    /* Pending cross-thread callbacks are dropped without running, like the
     * ready queue of a closed loop. */
    if (loop->wake_event)
        event_free(loop->wake_event);
    loop->wake_event = NULL;
    if (loop->wake_fd >= 0)
        close(loop->wake_fd);
    loop->wake_fd = -1;
    gfl__free(loop, loop->ts_items);
    loop->ts_items = NULL;
    loop->ts_count = loop->ts_cap = 0;
    pthread_mutex_destroy(&loop->ts_lock);
}

int gfl_call_soon_threadsafe(gfl_loop *loop, gfl_callback cb, void *arg)
{
    if (!loop || !cb)
        return GFL_EINVAL;
    int rc = GFL_OK;
    bool need_wake = false;
    pthread_mutex_lock(&loop->ts_lock);
    if (loop->closed) {
        rc = GFL_ECLOSED;
    } else {
        if (loop->ts_count == loop->ts_cap) {
            size_t cap = loop->ts_cap ? loop->ts_cap * 2 : 64;
            struct gfl_threadsafe_item *items = gfl__realloc(loop, loop->ts_items, cap * sizeof *items);
            if (!items)
                rc = GFL_ENOMEM;
            else {
                loop->ts_items = items;
                loop->ts_cap = cap;
            }
        }
        if (rc == GFL_OK) {
            loop->ts_items[loop->ts_count].cb = cb;
            loop->ts_items[loop->ts_count].arg = arg;
            loop->ts_count++;
            need_wake = !atomic_exchange(&loop->ts_wake_pending, true);
        }
    }
    pthread_mutex_unlock(&loop->ts_lock);
    if (need_wake)
        wake(loop);
    return rc;
}
