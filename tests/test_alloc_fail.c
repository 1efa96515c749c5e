/*
 * An allocator that fails the Nth allocation, for every N up to the total a
 * scenario makes: every failure must surface as an error code, never a
 * crash, and when the loop is freed every allocation must have been freed.
 */
#include <criterion/criterion.h>
#include <stdlib.h>

#include "globeflower.h"

struct counting_allocator {
    long allocations; /* successful allocations so far */
    long fail_at;     /* fail this allocation (1-based); 0: never */
    long live;        /* blocks currently allocated */
    long failures;
};

static void *counting_realloc(void *ud, void *ptr, size_t size)
{
    struct counting_allocator *a = ud;
    if (size == 0) {
        if (ptr)
            a->live--;
        free(ptr);
        return NULL;
    }
    /* A failed realloc leaves the old block untouched, as the C one does. */
    if (a->fail_at && a->allocations + 1 == a->fail_at) {
        a->allocations++;
        a->failures++;
        return NULL;
    }
    a->allocations++;
    void *p = realloc(ptr, size);
    if (p && !ptr)
        a->live++;
    return p;
}

static int callbacks_run;
static void count_callback(void *arg)
{
    (void)arg;
    callbacks_run++;
}

static void count_future_callback(gfl_future *f, void *arg)
{
    (void)f;
    (void)arg;
    callbacks_run++;
}

/* A task that awaits one future, then returns. */
struct tiny_coroutine {
    gfl_future *waiting_on;
    int steps;
};

static void tiny_step(gfl_task *task, void *ud, gfl_value *value, gfl_value *error)
{
    struct tiny_coroutine *co = ud;
    (void)value;
    co->steps++;
    if (error || co->steps > 1 || !co->waiting_on) {
        gfl_task_return(task, gfl_value_nil());
        return;
    }
    if (gfl_task_await(task, co->waiting_on) < 0)
        gfl_task_return(task, gfl_value_nil());
}

/* Exercises every allocating path of the core; tolerant of any failure. */
static void scenario(struct counting_allocator *a)
{
    gfl_loop_options opts = {.size = sizeof opts, .realloc = counting_realloc, .realloc_ud = a};
    gfl_loop *loop = gfl_loop_new(&opts);
    if (!loop)
        return;

    /* More than one growth step of every table. */
    for (int i = 0; i < 600; i++) {
        gfl_handle h = gfl_call_soon(loop, count_callback, NULL);
        cr_assert(h > 0 || h == GFL_ENOMEM, "call_soon: %lld", (long long)h);
    }
    for (int i = 0; i < 300; i++) {
        gfl_handle h = gfl_call_later(loop, (i % 7) * 0.0001, count_callback, NULL);
        cr_assert(h > 0 || h == GFL_ENOMEM);
        if (h > 0 && i % 3 == 0)
            cr_assert_eq(gfl_handle_cancel(loop, h), 0);
    }
    for (int i = 0; i < 200; i++) {
        int rc = gfl_call_soon_threadsafe(loop, count_callback, NULL);
        cr_assert(rc == 0 || rc == GFL_ENOMEM);
    }

    gfl_future *futures[40] = {0};
    for (int i = 0; i < 40; i++) {
        futures[i] = gfl_future_new(loop);
        if (!futures[i])
            continue;
        for (int k = 0; k < 3; k++) {
            int rc = gfl_future_add_done_callback(futures[i], count_future_callback, NULL);
            cr_assert(rc == 0 || rc == GFL_ENOMEM);
        }
    }

    struct tiny_coroutine co[10] = {0};
    gfl_task *tasks[10] = {0};
    for (int i = 0; i < 10; i++) {
        co[i].waiting_on = futures[i];
        tasks[i] = gfl_task_new(loop, tiny_step, &co[i], NULL);
    }

    for (int round = 0; round < 3; round++)
        cr_assert(gfl_loop_run_once(loop, 0) >= 0);
    for (int i = 0; i < 40; i++) {
        if (!futures[i])
            continue;
        int rc = i % 2 ? gfl_future_set_result(futures[i], gfl_value_nil()) : gfl_future_cancel(futures[i], NULL);
        cr_assert(rc >= 0 || rc == GFL_ENOMEM, "completion: %d", rc);
    }
    for (int round = 0; round < 5; round++)
        cr_assert(gfl_loop_run_once(loop, 0.001) >= 0);

    for (int i = 0; i < 10; i++)
        if (tasks[i])
            gfl_task_unref(tasks[i]);
    for (int i = 0; i < 40; i++)
        if (futures[i])
            gfl_future_unref(futures[i]);
    cr_assert_eq(gfl_loop_free(loop), 0);
}

Test(alloc_fail, every_allocation_may_fail, .timeout = 300)
{
    struct counting_allocator reference = {0};
    scenario(&reference);
    cr_assert_eq(reference.live, 0, "the clean run frees everything");
    cr_assert_gt(reference.allocations, 20, "the scenario allocates");
    cr_assert_gt(callbacks_run, 600);

    for (long n = 1; n <= reference.allocations; n++) {
        struct counting_allocator a = {.fail_at = n};
        scenario(&a);
        cr_assert_eq(a.failures, 1, "allocation %ld was attempted and failed", n);
        cr_assert_eq(a.live, 0, "failing allocation %ld of %ld leaked %ld blocks", n, reference.allocations, a.live);
    }
}
