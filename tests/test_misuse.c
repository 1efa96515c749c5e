/* API misuse gets an error code: never a crash. */
#include <criterion/criterion.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "globeflower.h"

static void nothing(void *arg)
{
    (void)arg;
}

Test(misuse, null_loop_everywhere)
{
    cr_assert_eq(gfl_loop_free(NULL), GFL_EINVAL);
    cr_assert_null(gfl_loop_ref(NULL));
    cr_assert_eq(gfl_loop_unref(NULL), GFL_EINVAL);
    cr_assert_eq(gfl_loop_run(NULL), GFL_EINVAL);
    cr_assert_eq(gfl_loop_run_once(NULL, 0), GFL_EINVAL);
    cr_assert_eq(gfl_loop_stop(NULL), GFL_EINVAL);
    cr_assert_lt(gfl_loop_time(NULL), 0);
    cr_assert_eq(gfl_loop_is_running(NULL), GFL_EINVAL);
    cr_assert_eq(gfl_loop_is_closed(NULL), GFL_EINVAL);
    cr_assert_eq(gfl_call_soon(NULL, nothing, NULL), GFL_EINVAL);
    cr_assert_eq(gfl_call_later(NULL, 1, nothing, NULL), GFL_EINVAL);
    cr_assert_eq(gfl_call_at(NULL, 1, nothing, NULL), GFL_EINVAL);
    cr_assert_eq(gfl_handle_cancel(NULL, 1), GFL_EINVAL);
    cr_assert_eq(gfl_handle_is_pending(NULL, 1), GFL_EINVAL);
    cr_assert_eq(gfl_add_reader(NULL, 0, nothing, NULL), GFL_EINVAL);
    cr_assert_eq(gfl_add_writer(NULL, 0, nothing, NULL), GFL_EINVAL);
    cr_assert_eq(gfl_remove_reader(NULL, 0), GFL_EINVAL);
    cr_assert_eq(gfl_remove_writer(NULL, 0), GFL_EINVAL);
    cr_assert_eq(gfl_add_signal_handler(NULL, 10, nothing, NULL), GFL_EINVAL);
    cr_assert_eq(gfl_remove_signal_handler(NULL, 10), GFL_EINVAL);
    cr_assert_eq(gfl_loop_set_exception_handler(NULL, NULL, NULL), GFL_EINVAL);
    cr_assert_eq(gfl_loop_call_exception_handler(NULL, "x", NULL), GFL_EINVAL);
    cr_assert_eq(gfl_loop_set_debug(NULL, 1), GFL_EINVAL);
    cr_assert_eq(gfl_loop_get_debug(NULL), GFL_EINVAL);
    cr_assert_eq(gfl_loop_set_slow_callback_duration(NULL, 1), GFL_EINVAL);
    cr_assert_eq(gfl_loop_set_slow_callback_handler(NULL, NULL, NULL), GFL_EINVAL);
    cr_assert_lt(gfl_loop_backend_fd(NULL), 0);
    cr_assert_lt(gfl_loop_backend_timeout(NULL), -1);
    cr_assert_null(gfl_future_new(NULL));
    cr_assert_null(gfl_task_new(NULL, NULL, NULL, NULL));
    cr_assert_null(gfl_run_in_executor(NULL, NULL, NULL, NULL));
}

Test(misuse, bad_callbacks_and_times)
{
    gfl_loop *loop = gfl_loop_new(NULL);
    cr_assert_eq(gfl_call_soon(loop, NULL, NULL), GFL_EINVAL);
    cr_assert_eq(gfl_call_later(loop, 1, NULL, NULL), GFL_EINVAL);
    cr_assert_eq(gfl_call_later(loop, NAN, nothing, NULL), GFL_EINVAL);
    cr_assert_eq(gfl_call_at(loop, NAN, nothing, NULL), GFL_EINVAL);
    cr_assert_eq(gfl_loop_run_once(loop, NAN), GFL_EINVAL);
    cr_assert_eq(gfl_loop_set_slow_callback_duration(loop, -1), GFL_EINVAL);
    cr_assert_eq(gfl_loop_set_slow_callback_duration(loop, NAN), GFL_EINVAL);
    /* A negative delay is "as soon as possible", as in asyncio. */
    cr_assert_gt(gfl_call_later(loop, -5, nothing, NULL), 0);
    cr_assert_eq(gfl_loop_run_once(loop, 0), 1);
    gfl_loop_free(loop);
}

Test(misuse, bad_options)
{
    gfl_loop_options opts;
    memset(&opts, 0, sizeof opts);
    cr_assert_null(gfl_loop_new(&opts), "size 0 is not a valid options struct");
    opts.size = sizeof opts;
    opts.slow_callback_duration = -1;
    cr_assert_null(gfl_loop_new(&opts));
    opts.slow_callback_duration = NAN;
    cr_assert_null(gfl_loop_new(&opts));
    opts.slow_callback_duration = 0;
    opts.executor_threads = 100000;
    cr_assert_null(gfl_loop_new(&opts));
    /* An older caller's smaller struct is fine: missing fields default. */
    opts.executor_threads = 0;
    opts.size = offsetof(gfl_loop_options, executor_threads);
    gfl_loop *loop = gfl_loop_new(&opts);
    cr_assert_not_null(loop);
    gfl_loop_free(loop);
}

Test(misuse, closed_loop_reports_closed)
{
    gfl_loop *loop = gfl_loop_new(NULL);
    gfl_loop *kept = gfl_loop_ref(loop);
    cr_assert_eq(gfl_loop_free(loop), 0);
    cr_assert_eq(gfl_call_soon(kept, nothing, NULL), GFL_ECLOSED);
    cr_assert_eq(gfl_call_later(kept, 1, nothing, NULL), GFL_ECLOSED);
    cr_assert_eq(gfl_call_soon_threadsafe(kept, nothing, NULL), GFL_ECLOSED);
    cr_assert_eq(gfl_loop_run(kept), GFL_ECLOSED);
    cr_assert_eq(gfl_loop_stop(kept), GFL_ECLOSED);
    cr_assert_eq(gfl_loop_free(kept), GFL_ECLOSED);
    cr_assert_eq(gfl_add_reader(kept, 0, nothing, NULL), GFL_ECLOSED);
    cr_assert_null(gfl_future_new(kept));
    cr_assert_null(gfl_loop_ref(kept));
    cr_assert_eq(gfl_loop_unref(kept), 0);
}

static gfl_loop *shared;
static void *wrong_thread_calls(void *arg)
{
    (void)arg;
    static int results[8];
    results[0] = (int)gfl_call_soon(shared, nothing, NULL);
    results[1] = (int)gfl_call_later(shared, 1, nothing, NULL);
    results[2] = gfl_add_reader(shared, 0, nothing, NULL);
    results[3] = gfl_loop_stop(shared);
    results[4] = gfl_remove_reader(shared, 0);
    results[5] = gfl_future_new(shared) == NULL ? GFL_EWRONGTHREAD : 0;
    results[6] = gfl_call_soon_threadsafe(shared, nothing, NULL); /* allowed */
    return results;
}

Test(misuse, other_threads_get_wrong_thread)
{
    shared = gfl_loop_new(NULL);
    pthread_t t;
    int *results;
    pthread_create(&t, NULL, wrong_thread_calls, NULL);
    pthread_join(t, (void **)&results);
    for (int i = 0; i < 6; i++)
        cr_assert_eq(results[i], GFL_EWRONGTHREAD, "call %d", i);
    cr_assert_eq(results[6], 0);
    cr_assert_eq(gfl_loop_run_once(shared, 0), 1);
    gfl_loop_free(shared);
}

static void *free_idle_loop(void *arg)
{
    return (void *)(intptr_t)gfl_loop_free(arg);
}

Test(misuse, an_idle_loop_may_be_freed_from_another_thread)
{
    /* A host (or Python's loop.close()) may close the loop elsewhere. */
    gfl_loop *loop = gfl_loop_new(NULL);
    gfl_call_soon(loop, nothing, NULL);
    pthread_t t;
    void *rc;
    pthread_create(&t, NULL, free_idle_loop, loop);
    pthread_join(t, &rc);
    cr_assert_eq((intptr_t)rc, 0);
}

Test(misuse, strerror_names_every_code)
{
    int codes[] = {GFL_OK, GFL_EPERM, GFL_ENOENT, GFL_EINTR, GFL_EIO, GFL_EBADF, GFL_EAGAIN, GFL_ENOMEM,
                   GFL_EACCES, GFL_EBUSY, GFL_EEXIST, GFL_EINVAL, GFL_EMFILE, GFL_EPIPE, GFL_ERANGE,
                   GFL_ENOSYS, GFL_EADDRINUSE, GFL_ECONNRESET, GFL_ENOTCONN, GFL_ETIMEDOUT,
                   GFL_ECONNREFUSED, GFL_EALREADY, GFL_EINPROGRESS, GFL_ECANCELED, GFL_EUNKNOWN,
                   GFL_ECLOSED, GFL_EWRONGTHREAD, GFL_ESTATE, GFL_EPENDING, GFL_EVERSION, GFL_ETYPE,
                   GFL_ETLS, GFL_ETLSVERIFY, -ECONNABORTED, -ENETUNREACH};
    const char *unknown = gfl_strerror(-987654);
    cr_assert_not_null(unknown);
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        const char *s = gfl_strerror(codes[i]);
        cr_assert_not_null(s);
        cr_assert_gt(strlen(s), 0);
        if (codes[i] != GFL_EUNKNOWN)
            cr_assert_str_neq(s, unknown, "code %d has its own message", codes[i]);
    }
}
