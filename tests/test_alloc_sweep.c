/*
 * The malloc-failure sweep, per scenario: every allocation the process
 * makes while a scenario runs (the core's, gfl_value_*, DNS, TLS contexts,
 * plugins, the export registry, and OpenSSL's, libevent's and libc's own)
 * is failed once in turn. A counting run first gives the number N of
 * allocations; then run k fails allocation k. Every run must not crash,
 * must free every block it allocated, and each operation either completes
 * or reports an error (GFL_ENOMEM, a failed future, an error value) within
 * a deadline: a hang counts as a failure.
 *
 * How: this program defines malloc, calloc, realloc, free, the memalign
 * family and strdup/strndup. ELF symbol interposition makes every library
 * in the process call them; they forward to glibc's __libc_* functions
 * (which valgrind replaces, so the valgrind rerun still sees every block).
 * While a scenario is armed, allocations are counted (from every thread)
 * and the live ones are kept in a table: what is left in it after the
 * scenario tore everything down is a leak.
 *
 * Runtime: small scenarios fail every allocation; big ones (TLS, TCP,
 * subprocesses) fail every stride-th, the stride chosen so the whole
 * sweep stays within about a minute (and a larger one under valgrind,
 * GFL_UNDER_VALGRIND). GFL_SWEEP_STRIDE=1 forces a full sweep of all.
 * The table printed at the end says which allocations were failed.
 */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "globeflower.h"

#ifndef GFL_TEST_SRCDIR
#define GFL_TEST_SRCDIR "."
#endif
#ifndef GFL_TEST_BUILDDIR
#define GFL_TEST_BUILDDIR "."
#endif

#if defined(__SANITIZE_ADDRESS__)
/* AddressSanitizer owns malloc: interposing our own would fight it, and its
 * allocator makes the sweep meaningless. The normal build runs the sweep
 * (and again under valgrind). */
Test(alloc_sweep, every_scenario_survives_every_failed_allocation)
{
    cr_skip_test("sanitizer build: ASan replaces malloc, which the sweep interposes (skipped, not failed)");
}
#else

/* ------------------------------------------------------------------ */
/* The interposed allocator                                            */

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);
extern void *__libc_memalign(size_t, size_t);

static atomic_bool armed;
static atomic_long attempts; /* allocations attempted while armed */
static atomic_long fail_at;  /* 1-based; 0: never */
static atomic_long injected;

/* Blocks allocated while armed and not yet freed: open addressing,
 * tombstones, one lock (nothing here may allocate). Pointers are stored
 * disguised, so that under valgrind this table does not keep a leaked
 * block "reachable": valgrind's own leak check still sees it lost. */
#define LIVE_SLOTS (1u << 17)
#define EMPTY 0u
#define TOMBSTONE 1u
#define DISGUISE(p) ((uintptr_t)(p) ^ (uintptr_t)0xA5A5A5A5A5A5A5A5ull)
static uintptr_t live_slots[LIVE_SLOTS];
static const void *live_callers[LIVE_SLOTS]; /* the code that asked */
static atomic_long live_count;
static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;

/* GFL_SWEEP_DEBUG=1: where each live block came from, printed on a leak. */
static bool debug_leaks;
#define TRACE_DEPTH 12
static void *live_traces[LIVE_SLOTS][TRACE_DEPTH];

/* Who made the allocation that was failed on purpose. */
static const void *failed_caller;

static size_t slot_of(const void *p)
{
    uintptr_t x = (uintptr_t)p;
    x ^= x >> 17;
    x *= 0x9E3779B97F4A7C15ull;
    return (size_t)(x >> 20) & (LIVE_SLOTS - 1);
}

static void live_add(void *p, const void *caller)
{
    pthread_mutex_lock(&live_lock);
    for (size_t i = slot_of(p);; i = (i + 1) & (LIVE_SLOTS - 1)) {
        if (live_slots[i] == EMPTY || live_slots[i] == TOMBSTONE) {
            live_slots[i] = DISGUISE(p);
            live_callers[i] = caller;
            if (debug_leaks) {
                memset(live_traces[i], 0, sizeof live_traces[i]);
                backtrace(live_traces[i], TRACE_DEPTH);
            }
            break;
        }
    }
    live_count++;
    pthread_mutex_unlock(&live_lock);
}

/* True when p was in the table. */
static bool live_remove(void *p)
{
    if (atomic_load(&live_count) == 0)
        return false;
    bool found = false;
    pthread_mutex_lock(&live_lock);
    for (size_t i = slot_of(p); live_slots[i] != EMPTY; i = (i + 1) & (LIVE_SLOTS - 1)) {
        if (live_slots[i] == DISGUISE(p)) {
            live_slots[i] = TOMBSTONE;
            live_count--;
            found = true;
            break;
        }
    }
    pthread_mutex_unlock(&live_lock);
    return found;
}

static void live_dump(void)
{
    pthread_mutex_lock(&live_lock);
    for (size_t i = 0; i < LIVE_SLOTS; i++) {
        if (live_slots[i] == EMPTY || live_slots[i] == TOMBSTONE)
            continue;
        fprintf(stderr, "leaked block %p allocated at:\n", (void *)DISGUISE(live_slots[i]));
        int n = 0;
        while (n < TRACE_DEPTH && live_traces[i][n])
            n++;
        backtrace_symbols_fd(live_traces[i], n, 2);
    }
    pthread_mutex_unlock(&live_lock);
}

/* Code in OpenSSL or libevent (not ours, not the test's). */
static bool in_foreign_library(const void *code)
{
    Dl_info info;
    if (!code || !dladdr(code, &info) || !info.dli_fname)
        return false;
    return strstr(info.dli_fname, "libcrypto") || strstr(info.dli_fname, "libssl") ||
           strstr(info.dli_fname, "libevent");
}

/* True when every block left over was made by the dynamic linker (see
 * below), or the failed allocation and every block left over were made by
 * OpenSSL or libevent themselves: what a library keeps after its own
 * allocation failed (OpenSSL's method-store caches do) is that
 * library's, not a leak of ours. A block of ours left over, or an
 * OpenSSL object we forgot to free after our own allocation failed, does
 * not qualify. */
static bool leftovers_are_foreign(void)
{
    bool others = false;
    for (size_t i = 0; i < LIVE_SLOTS; i++) {
        if (live_slots[i] == EMPTY || live_slots[i] == TOMBSTONE)
            continue;
        /* The dynamic linker's: the thread-local block of an executor
         * thread, kept with glibc's cache of thread stacks (when a thread
         * ends before the next run differs with timing, under valgrind). */
        Dl_info info;
        if (dladdr(live_callers[i], &info) && info.dli_fname && strstr(info.dli_fname, "ld-linux"))
            continue;
        if (!in_foreign_library(live_callers[i]))
            return false;
        others = true;
    }
    return !others || in_foreign_library(failed_caller);
}

static void live_reset(void)
{
    pthread_mutex_lock(&live_lock);
    memset(live_slots, 0, sizeof live_slots);
    live_count = 0;
    pthread_mutex_unlock(&live_lock);
}

/* True when this allocation is to fail. */
static bool take_turn(const void *caller)
{
    if (!atomic_load_explicit(&armed, memory_order_relaxed))
        return false;
    long k = atomic_fetch_add(&attempts, 1) + 1;
    if (k == atomic_load(&fail_at)) {
        atomic_fetch_add(&injected, 1);
        failed_caller = caller;
        if (debug_leaks) {
            void *trace[16];
            fprintf(stderr, "failing allocation %ld at:\n", k);
            backtrace_symbols_fd(trace, backtrace(trace, 16), 2);
        }
        return true;
    }
    return false;
}

static void *track(void *p, const void *caller)
{
    if (p && atomic_load_explicit(&armed, memory_order_relaxed))
        live_add(p, caller);
    return p;
}

static void *counted_malloc(size_t n, const void *caller)
{
    if (take_turn(caller)) {
        errno = ENOMEM;
        return NULL;
    }
    return track(__libc_malloc(n), caller);
}

static void *counted_memalign(size_t align, size_t n, const void *caller)
{
    if (take_turn(caller)) {
        errno = ENOMEM;
        return NULL;
    }
    return track(__libc_memalign(align, n), caller);
}

#define CALLER __builtin_return_address(0)

void *malloc(size_t n)
{
    return counted_malloc(n, CALLER);
}

void *calloc(size_t n, size_t size)
{
    if (take_turn(CALLER)) {
        errno = ENOMEM;
        return NULL;
    }
    return track(__libc_calloc(n, size), CALLER);
}

void free(void *p)
{
    if (p)
        live_remove(p);
    __libc_free(p);
}

void *realloc(void *p, size_t n)
{
    if (!p)
        return counted_malloc(n, CALLER);
    if (n == 0) {
        free(p);
        return NULL;
    }
    if (take_turn(CALLER)) {
        errno = ENOMEM;
        return NULL;
    }
    void *q = __libc_realloc(p, n);
    /* A block that existed before the scenario stays untracked when it
     * moves (OpenSSL's per-thread error queue grows that way). */
    if (q && q != p && live_remove(p))
        track(q, CALLER);
    return q;
}

void *memalign(size_t align, size_t n)
{
    return counted_memalign(align, n, CALLER);
}

void *aligned_alloc(size_t align, size_t n)
{
    return counted_memalign(align, n, CALLER);
}

int posix_memalign(void **out, size_t align, size_t n)
{
    void *p = counted_memalign(align, n, CALLER);
    if (!p)
        return ENOMEM;
    *out = p;
    return 0;
}

void *valloc(size_t n)
{
    return counted_memalign((size_t)sysconf(_SC_PAGESIZE), n, CALLER);
}

void *pvalloc(size_t n)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    return counted_memalign(page, (n + page - 1) / page * page, CALLER);
}

char *strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = counted_malloc(n, CALLER);
    return p ? memcpy(p, s, n) : NULL;
}

char *strndup(const char *s, size_t max)
{
    size_t n = strnlen(s, max);
    char *p = counted_malloc(n + 1, CALLER);
    if (!p)
        return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

/* ------------------------------------------------------------------ */
/* Scenario plumbing                                                   */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A scenario returns 0, or -1 when an operation neither completed nor
 * failed cleanly (a hang, or an answer the API does not allow). */
typedef int (*scenario_fn)(void);

static char problem[256]; /* what went wrong in the last run */

#define CHECK(cond, ...)                                                        \
    do {                                                                        \
        if (!(cond)) {                                                          \
            snprintf(problem, sizeof problem, __VA_ARGS__);                     \
            return -1;                                                          \
        }                                                                       \
    } while (0)

/* Either a success or no memory. */
#define OK_OR_ENOMEM(rc) ((rc) >= 0 || (rc) == GFL_ENOMEM)

/* Runs the loop until *flag or the future is done, for at most `seconds`. */
static bool run_until(gfl_loop *loop, const bool *flag, gfl_future *f, double seconds)
{
    double deadline = now_s() + seconds;
    for (;;) {
        if (flag && *flag)
            return true;
        if (f && gfl_future_state_of(f) != GFL_FUTURE_PENDING)
            return true;
        if (now_s() > deadline)
            return false;
        if (gfl_loop_run_once(loop, 0.01) < 0)
            return false;
    }
}

/* The value of a done future as an object of `cls`, or NULL (failed). */
static void *future_object(gfl_future *f, const gfl_host_class *cls)
{
    if (gfl_future_state_of(f) != GFL_FUTURE_RESULT)
        return NULL;
    gfl_value *v = gfl_future_value(f);
    void *obj = NULL;
    if (v && gfl_value_type_of(v) != GFL_VALUE_ERROR)
        gfl_value_get_object(v, cls, &obj);
    return obj;
}

/* The transport a done future resolved to, as a new reference (the
 * future's value may be the last one holding it), or NULL. */
static gfl_transport *future_transport(gfl_future *f)
{
    gfl_transport *t = future_object(f, gfl_transport_class());
    return t ? gfl_transport_ref(t) : NULL;
}

/* A failed future must say why. */
static bool failed_with_error(gfl_future *f)
{
    int state = gfl_future_state_of(f);
    if (state == GFL_FUTURE_CANCELLED)
        return true;
    if (state != GFL_FUTURE_ERROR)
        return false;
    return gfl_future_value(f) != NULL; /* borrowed */
}

/* Frees the loop after giving closing transports a few rounds. */
static int finish_loop(gfl_loop *loop)
{
    for (int i = 0; i < 5; i++)
        gfl_loop_run_once(loop, 0);
    int rc = gfl_loop_free(loop);
    CHECK(rc == 0, "gfl_loop_free: %d", rc);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Stream protocols: an echoing server side, a client that counts        */

#define STREAM_SLOTS 8
struct conn {
    bool used;
    bool echo;
    bool lost;
    size_t received;
    gfl_transport *t;
};
static struct conn conns[STREAM_SLOTS];

static void conn_made(gfl_transport *t, void *ud)
{
    ((struct conn *)ud)->t = t;
}

static void conn_data(gfl_transport *t, const void *data, size_t len, void *ud)
{
    struct conn *c = ud;
    c->received += len;
    if (c->echo && gfl_transport_write(t, data, len) < 0)
        gfl_transport_abort(t);
}

static void conn_lost(gfl_transport *t, gfl_value *error, void *ud)
{
    (void)t;
    (void)error;
    struct conn *c = ud;
    c->lost = true;
    c->t = NULL;
}

static const gfl_protocol conn_protocol = {
    .size = sizeof conn_protocol,
    .connection_made = conn_made,
    .data_received = conn_data,
    .connection_lost = conn_lost,
};

static struct conn *conn_take(bool echo)
{
    for (int i = 0; i < STREAM_SLOTS; i++)
        if (!conns[i].used) {
            conns[i] = (struct conn){.used = true, .echo = echo};
            return &conns[i];
        }
    return NULL;
}

static int releases_owed; /* factory_release calls still to come */

static int conn_factory(void *fud, gfl_transport *t, const gfl_protocol **proto, void **ud)
{
    (void)t;
    struct conn *c = conn_take(fud != NULL);
    if (!c)
        return GFL_ENOMEM;
    *proto = &conn_protocol;
    *ud = c;
    return 0;
}

static void factory_release(void *fud)
{
    (void)fud;
    releases_owed--;
}

static void streams_reset(void)
{
    memset(conns, 0, sizeof conns);
    releases_owed = 0;
}

static bool all_lost(void)
{
    for (int i = 0; i < STREAM_SLOTS; i++)
        if (conns[i].used && !conns[i].lost)
            return false;
    return true;
}

static void abort_all(void)
{
    for (int i = 0; i < STREAM_SLOTS; i++)
        if (conns[i].used && !conns[i].lost && conns[i].t)
            gfl_transport_abort(conns[i].t);
}

/* ------------------------------------------------------------------ */
/* TLS material, made once                                              */

#include "globeflower_datagram.h"
#include "globeflower_process.h"
#include "globeflower_tls.h"
#include "globeflower_transport.h"

static char cert_dir[64];

static const char *cert_path(const char *name)
{
    static char bufs[4][160];
    static int next;
    char *b = bufs[next++ % 4];
    snprintf(b, sizeof bufs[0], "%s/%s", cert_dir, name);
    return b;
}

static void make_certs(void)
{
    snprintf(cert_dir, sizeof cert_dir, "/tmp/gfl-sweep-XXXXXX");
    cr_assert_not_null(mkdtemp(cert_dir));
    char cmd[512];
    snprintf(cmd, sizeof cmd, "sh '%s/tests/tls/make-certs.sh' '%s' >/dev/null", GFL_TEST_SRCDIR, cert_dir);
    cr_assert_eq(system(cmd), 0, "make-certs.sh failed");
}

static void remove_certs(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", cert_dir);
    if (cert_dir[0] && system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", cert_dir);
}

/* ------------------------------------------------------------------ */
/* Scenario: loop and handles (timers, call_soon, threadsafe calls,      */
/* watchers, futures, tasks, interrupts)                                 */

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

static bool watcher_fired;
static void watcher_callback(void *arg)
{
    (void)arg;
    watcher_fired = true;
}

static int scenario_loop(void)
{
    gfl_loop *loop = gfl_loop_new(NULL);
    if (!loop)
        return 0;
    for (int i = 0; i < 70; i++) {
        gfl_handle h = gfl_call_soon(loop, count_callback, NULL);
        CHECK(h > 0 || h == GFL_ENOMEM, "call_soon: %lld", (long long)h);
    }
    for (int i = 0; i < 40; i++) {
        gfl_handle h = gfl_call_later(loop, (i % 5) * 0.0001, count_callback, NULL);
        CHECK(h > 0 || h == GFL_ENOMEM, "call_later: %lld", (long long)h);
        if (h > 0 && i % 3 == 0)
            CHECK(gfl_handle_cancel(loop, h) == 0, "cancel");
    }
    for (int i = 0; i < 20; i++) {
        int rc = gfl_call_soon_threadsafe(loop, count_callback, NULL);
        CHECK(OK_OR_ENOMEM(rc), "call_soon_threadsafe: %d", rc);
    }

    int fds[2];
    CHECK(pipe(fds) == 0, "pipe");
    watcher_fired = false;
    int watching = gfl_add_reader(loop, fds[0], watcher_callback, NULL);
    CHECK(OK_OR_ENOMEM(watching), "add_reader: %d", watching);
    CHECK(write(fds[1], "x", 1) == 1, "write");

    gfl_future *futures[8] = {0};
    for (int i = 0; i < 8; i++) {
        futures[i] = gfl_future_new(loop);
        if (!futures[i])
            continue;
        for (int k = 0; k < 2; k++) {
            int rc = gfl_future_add_done_callback(futures[i], count_future_callback, NULL);
            CHECK(OK_OR_ENOMEM(rc), "add_done_callback: %d", rc);
        }
    }
    struct tiny_coroutine co[4] = {0};
    gfl_task *tasks[4] = {0};
    for (int i = 0; i < 4; i++) {
        co[i].waiting_on = futures[i];
        tasks[i] = gfl_task_new(loop, tiny_step, &co[i], NULL);
    }
    for (int round = 0; round < 3; round++)
        CHECK(gfl_loop_run_once(loop, 0) >= 0, "run_once");
    for (int i = 0; i < 8; i++) {
        if (!futures[i])
            continue;
        gfl_value *v = gfl_value_int(i);
        int rc = i % 2 ? (v ? gfl_future_set_result(futures[i], v) : gfl_future_cancel(futures[i], NULL))
                       : gfl_future_cancel(futures[i], "stop");
        if (v)
            gfl_value_unref(v);
        CHECK(OK_OR_ENOMEM(rc), "completion: %d", rc);
    }
    if (watching >= 0)
        CHECK(run_until(loop, &watcher_fired, NULL, 2), "the reader never fired");
    for (int round = 0; round < 3; round++)
        CHECK(gfl_loop_run_once(loop, 0.001) >= 0, "run_once");


    if (watching >= 0)
        gfl_remove_reader(loop, fds[0]);
    close(fds[0]);
    close(fds[1]);
    for (int i = 0; i < 4; i++)
        if (tasks[i])
            gfl_task_unref(tasks[i]);
    for (int i = 0; i < 8; i++)
        if (futures[i])
            gfl_future_unref(futures[i]);
    return finish_loop(loop);
}

/* ------------------------------------------------------------------ */
/* Scenario: values                                                     */

static int scenario_values(void)
{
    gfl_value *items[6] = {0};
    items[0] = gfl_value_int(1);
    items[1] = gfl_value_string("two", 3);
    items[2] = gfl_value_bytes("\0three", 6);
    items[3] = gfl_value_double(4.5);
    items[4] = gfl_value_error(GFL_ENOMEM, "MemoryError", "five", "tb");
    items[5] = gfl_value_bool(1);
    bool all = true;
    for (int i = 0; i < 6; i++)
        all = all && items[i];
    gfl_value *array = all ? gfl_value_array(items, 6) : NULL;
    gfl_value *keys[3] = {gfl_value_string("a", 1), gfl_value_string("b", 1), gfl_value_string("c", 1)};
    gfl_value *vals[3] = {array ? gfl_value_ref(array) : NULL, gfl_value_nil(), gfl_value_int(7)};
    bool all_keys = keys[0] && keys[1] && keys[2] && vals[0] && vals[1] && vals[2];
    gfl_value *map = all_keys ? gfl_value_map(keys, vals, 3) : NULL;
    if (map) {
        CHECK(gfl_value_length(map) == 3, "map length");
        gfl_value *found = gfl_value_map_find(map, "a", 1);
        CHECK(found && gfl_value_length(found) == 6, "map_find");
        CHECK(gfl_value_depth(map) == 2, "depth %d", gfl_value_depth(map));
        gfl_value *inner[2] = {map, map};
        gfl_value *nested = gfl_value_array(inner, 2);
        if (nested)
            gfl_value_unref(nested);
    }
    gfl_value *cause = items[4] ? gfl_value_ref(items[4]) : NULL;
    gfl_value *chained = gfl_value_error_ex(GFL_EINVAL, "ValueError", "chained", NULL, cause);
    if (chained) {
        CHECK(gfl_value_error_cause(chained) != NULL || !cause, "the cause went missing");
        gfl_value_unref(chained);
    }
    if (cause)
        gfl_value_unref(cause);
    for (int i = 0; i < 3; i++) {
        if (keys[i])
            gfl_value_unref(keys[i]);
        if (vals[i])
            gfl_value_unref(vals[i]);
    }
    if (map)
        gfl_value_unref(map);
    if (array)
        gfl_value_unref(array);
    for (int i = 0; i < 6; i++)
        if (items[i])
            gfl_value_unref(items[i]);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Scenario: executor                                                   */

static gfl_value *work_square(void *arg)
{
    intptr_t n = (intptr_t)arg;
    return gfl_value_int((int64_t)n * n);
}

static int scenario_executor(void)
{
    gfl_loop *loop = gfl_loop_new(NULL);
    if (!loop)
        return 0;
    gfl_future *jobs[4] = {0};
    for (intptr_t i = 0; i < 4; i++)
        jobs[i] = gfl_run_in_executor(loop, work_square, (void *)(i + 2), NULL);
    for (int i = 0; i < 4; i++) {
        if (!jobs[i])
            continue;
        CHECK(run_until(loop, NULL, jobs[i], 5), "executor job %d never finished", i);
        gfl_value *v = gfl_future_value(jobs[i]);
        int64_t got = 0;
        if (v && gfl_value_get_int(v, &got) == 0)
            CHECK(got == (i + 2) * (i + 2), "job %d: %lld", i, (long long)got);
        else
            CHECK(failed_with_error(jobs[i]), "job %d: neither a result nor an error", i);
        gfl_future_unref(jobs[i]);
    }
    return finish_loop(loop);
}

/* ------------------------------------------------------------------ */
/* Scenario: DNS                                                        */

static int scenario_dns(void)
{
    gfl_loop *loop = gfl_loop_new(NULL);
    if (!loop)
        return 0;
    gfl_future *lookups[3];
    lookups[0] = gfl_getaddrinfo(loop, "localhost", "80", AF_INET, SOCK_STREAM, 0, 0);
    lookups[1] = gfl_getaddrinfo(loop, "127.0.0.1", "http", 0, SOCK_STREAM, 0, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(80)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    lookups[2] = gfl_getnameinfo(loop, &sin, sizeof sin, 0);
    for (int i = 0; i < 3; i++) {
        if (!lookups[i])
            continue;
        CHECK(run_until(loop, NULL, lookups[i], 5), "lookup %d never finished", i);
        if (i < 2) {
            gfl_addrinfo *ai = future_object(lookups[i], gfl_addrinfo_class());
            CHECK(ai ? gfl_addrinfo_count(ai) > 0 : failed_with_error(lookups[i]), "lookup %d", i);
        } else {
            gfl_nameinfo *ni = future_object(lookups[i], gfl_nameinfo_class());
            CHECK(ni ? gfl_nameinfo_host(ni) != NULL : failed_with_error(lookups[i]), "nameinfo");
        }
        gfl_future_unref(lookups[i]);
    }
    return finish_loop(loop);
}

/* ------------------------------------------------------------------ */
/* Scenario: signals                                                    */

static bool signal_seen;
static void on_signal(void *arg)
{
    (void)arg;
    signal_seen = true;
}

static int scenario_signals(void)
{
    gfl_loop *loop = gfl_loop_new(NULL);
    if (!loop)
        return 0;
    signal_seen = false;
    int rc = gfl_add_signal_handler(loop, SIGUSR1, on_signal, NULL);
    CHECK(OK_OR_ENOMEM(rc), "add_signal_handler: %d", rc);
    if (rc >= 0) {
        raise(SIGUSR1);
        CHECK(run_until(loop, &signal_seen, NULL, 2), "the signal never arrived");
        CHECK(gfl_remove_signal_handler(loop, SIGUSR1) == 1, "remove_signal_handler");
    }
    return finish_loop(loop);
}

/* ------------------------------------------------------------------ */
/* Scenario: the export registry                                        */

static int export_add(void *ud, gfl_loop *loop, gfl_value *const *args, size_t nargs, gfl_value **result)
{
    (void)ud;
    (void)loop;
    int64_t a = 0, b = 0;
    if (nargs != 2 || gfl_value_get_int(args[0], &a) < 0 || gfl_value_get_int(args[1], &b) < 0)
        return GFL_EINVAL;
    *result = gfl_value_int(a + b);
    return *result ? 0 : GFL_ENOMEM;
}

static gfl_future *export_later(void *ud, gfl_loop *loop, gfl_value *const *args, size_t nargs)
{
    (void)ud;
    (void)args;
    (void)nargs;
    gfl_future *f = gfl_future_new(loop);
    if (f) {
        gfl_value *v = gfl_value_string("later", 5);
        if (v) {
            gfl_future_set_result(f, v);
            gfl_value_unref(v);
        } else {
            gfl_future_cancel(f, NULL);
        }
    }
    return f;
}

static int released_exports;
static void export_release(void *ud)
{
    (void)ud;
    released_exports++;
}

static int scenario_registry(void)
{
    gfl_loop *loop = gfl_loop_new(NULL);
    if (!loop)
        return 0;
    released_exports = 0;
    int expected_releases = 0;
    int rc = gfl_export(loop, "add", export_add, NULL, NULL, export_release);
    CHECK(OK_OR_ENOMEM(rc), "export add: %d", rc);
    expected_releases += rc >= 0;
    rc = gfl_export(loop, "later", NULL, export_later, NULL, export_release);
    CHECK(OK_OR_ENOMEM(rc), "export later: %d", rc);
    expected_releases += rc >= 0;
    int count = gfl_export_count(loop);
    CHECK(count == expected_releases, "export_count %d", count);
    gfl_value *args[2] = {gfl_value_int(2), gfl_value_int(3)};
    if (args[0] && args[1]) {
        const char *names[3] = {"add", "later", "missing"};
        for (int i = 0; i < 3; i++) {
            gfl_future *f = gfl_call(loop, names[i], args, 2);
            if (!f)
                continue;
            CHECK(run_until(loop, NULL, f, 2), "call %s never finished", names[i]);
            CHECK(gfl_future_value(f) != NULL, "call %s", names[i]); /* also marks errors retrieved */
            gfl_future_unref(f);
        }
    }
    for (int i = 0; i < 2; i++)
        if (args[i])
            gfl_value_unref(args[i]);
    if (expected_releases && gfl_export_count(loop) > 0)
        gfl_unexport(loop, "add");
    int frc = finish_loop(loop);
    CHECK(released_exports == expected_releases, "releases %d of %d", released_exports, expected_releases);
    return frc;
}

/* ------------------------------------------------------------------ */
/* Scenario: plugins                                                    */

static char example_so[PATH_MAX];

static int scenario_plugins(void)
{
    gfl_plugin *p = gfl_plugin_load("example", example_so);
    if (!p) {
        CHECK(gfl_plugin_last_error() != NULL, "a failed load says why");
        return 0;
    }
    gfl_loop *loop = gfl_loop_new(NULL);
    if (loop) {
        gfl_value *args[2] = {gfl_value_int(40), gfl_value_int(2)};
        if (args[0] && args[1]) {
            gfl_value *result = NULL;
            int rc = gfl_plugin_call(p, "add", loop, args, 2, &result);
            CHECK(rc >= 0 || rc == GFL_ENOMEM || (result && gfl_value_type_of(result) == GFL_VALUE_ERROR),
                  "plugin add: %d", rc);
            if (result)
                gfl_value_unref(result);
            gfl_future *f = gfl_plugin_call_async(p, "fail", loop, args, 0);
            if (f) {
                CHECK(run_until(loop, NULL, f, 2), "async call never finished");
                CHECK(failed_with_error(f), "fail() did not fail");
                gfl_future_unref(f);
            }
        }
        for (int i = 0; i < 2; i++)
            if (args[i])
                gfl_value_unref(args[i]);
        int rc = finish_loop(loop);
        if (rc < 0)
            return rc;
    }
    CHECK(gfl_plugin_unload(p) == 0, "unload");
    return 0;
}

/* ------------------------------------------------------------------ */
/* Scenarios: TCP and TLS on loopback                                   */

static int server_port(gfl_server *s)
{
    struct sockaddr_storage ss;
    size_t len = sizeof ss;
    if (gfl_server_get_sockaddr(s, 0, &ss, &len) < 0)
        return -1;
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static gfl_tls_context *tls_client_ctx;
static gfl_tls_context *tls_server_ctx;

/* One echo round trip over a server on 127.0.0.1, with or without TLS. */
static int stream_round_trip(bool tls)
{
    streams_reset();
    gfl_loop *loop = gfl_loop_new(NULL);
    if (!loop)
        return 0;
    gfl_tls_options server_tls = {.size = sizeof server_tls, .context = tls_server_ctx, .handshake_timeout = 3};
    gfl_tls_options client_tls = {.size = sizeof client_tls, .context = tls_client_ctx, .server_hostname = "localhost",
                                  .handshake_timeout = 3};
    const char *hosts[] = {"127.0.0.1", NULL};
    gfl_server_options so = {.size = sizeof so, .hosts = hosts, .port = "0"};
    releases_owed++;
    gfl_future *sf = tls ? gfl_create_tls_server(loop, conn_factory, (void *)1, factory_release, &so, &server_tls)
                         : gfl_create_server(loop, conn_factory, (void *)1, factory_release, &so);
    if (!sf)
        releases_owed--; /* NULL: not taken */
    gfl_server *server = NULL;
    if (sf) {
        CHECK(run_until(loop, NULL, sf, 3), "server start never finished");
        server = future_object(sf, gfl_server_class());
        CHECK(server || failed_with_error(sf), "server future failed without an error");
        if (server)
            gfl_server_ref(server);
        gfl_future_unref(sf);
    }
    if (server) {
        int port = server_port(server);
        char port_text[16];
        snprintf(port_text, sizeof port_text, "%d", port);
        gfl_connect_options co = {.size = sizeof co, .host = "127.0.0.1", .port = port_text};
        releases_owed++;
        gfl_future *cf = tls ? gfl_create_tls_connection(loop, conn_factory, NULL, factory_release, &co, &client_tls)
                             : gfl_create_connection(loop, conn_factory, NULL, factory_release, &co);
        if (!cf)
            releases_owed--;
        if (cf) {
            CHECK(run_until(loop, NULL, cf, 5), "connect never finished");
            gfl_transport *t = future_transport(cf);
            CHECK(t || failed_with_error(cf), "connect failed without an error");
            gfl_future_unref(cf);
            if (t) {
                struct conn *client = NULL;
                for (int i = 0; i < STREAM_SLOTS; i++)
                    if (conns[i].used && conns[i].t == t && !conns[i].echo)
                        client = &conns[i];
                CHECK(client, "no client protocol");
                int rc = gfl_transport_write(t, "hello, echo", 11);
                /* GFL_ETLS: OpenSSL reports its own allocation failures as
                 * TLS errors (and the connection is then lost). */
                CHECK(rc == 0 || rc == GFL_ENOMEM || rc == GFL_ECLOSED || (tls && rc == GFL_ETLS), "write: %d", rc);
                double deadline = now_s() + 5;
                while (client->received < 11 && !client->lost && now_s() < deadline)
                    gfl_loop_run_once(loop, 0.01);
                CHECK(client->received == 11 || client->lost || rc < 0, "the echo never came back");
                if (!client->lost)
                    gfl_transport_close(t);
                gfl_transport_unref(t);
            }
        }
        gfl_server_close(server);
        abort_all();
        gfl_future *closed = gfl_server_wait_closed(server);
        if (closed) {
            CHECK(run_until(loop, NULL, closed, 5), "wait_closed never finished");
            gfl_future_unref(closed);
        }
        gfl_server_unref(server);
    }
    abort_all();
    double deadline = now_s() + 3;
    while (!all_lost() && now_s() < deadline)
        gfl_loop_run_once(loop, 0.01);
    CHECK(all_lost(), "a connection never reported connection_lost");
    int rc = finish_loop(loop);
    CHECK(releases_owed == 0, "factory_release owed %d", releases_owed);
    return rc;
}

static int scenario_tcp(void)
{
    return stream_round_trip(false);
}

/* Both contexts, or none (then 0, or -1 if a failure did not say why). */
static int make_tls_contexts(bool session_cache)
{
    /* A session cache would keep each run's session alive past the run. */
    int cache = session_cache ? 0 : -1;
    gfl_tls_context_options server_opts = {.size = sizeof server_opts, .server = 1, .session_cache = cache,
                                           .cert_file = cert_path("server.pem"), .key_file = cert_path("server.key")};
    gfl_tls_context_options client_opts = {.size = sizeof client_opts, .ca_file = cert_path("ca.pem"),
                                           .default_cas = -1, .session_cache = cache};
    gfl_value *err = NULL;
    tls_server_ctx = gfl_tls_context_new(&server_opts, &err);
    if (!tls_server_ctx) {
        CHECK(err, "a failed context says why");
        gfl_value_unref(err);
        return 0;
    }
    tls_client_ctx = gfl_tls_context_new(&client_opts, &err);
    if (!tls_client_ctx) {
        gfl_tls_context_unref(tls_server_ctx);
        tls_server_ctx = NULL;
        CHECK(err, "a failed context says why");
        gfl_value_unref(err);
    }
    return 0;
}

static void drop_tls_contexts(void)
{
    if (tls_client_ctx)
        gfl_tls_context_unref(tls_client_ctx);
    if (tls_server_ctx)
        gfl_tls_context_unref(tls_server_ctx);
    tls_client_ctx = tls_server_ctx = NULL;
    /* OpenSSL keeps a per-thread error queue whose buffers move around
     * between runs; dropping it lets the table see only this run's blocks. */
    OPENSSL_thread_stop();
}

/* tls_context.c: loading certificates, keys, CAs into contexts. */
static int scenario_tls_contexts(void)
{
    int rc = make_tls_contexts(true);
    drop_tls_contexts();
    return rc;
}

/* Handshakes and records: the contexts are made before the scenario is
 * armed (the sweep above covers them), so every allocation of the TLS
 * server, connection and transport is failed in turn. */
static int scenario_tls(void)
{
    int rc = stream_round_trip(true);
    OPENSSL_thread_stop();
    return rc;
}

/* ------------------------------------------------------------------ */
/* Scenario: UDP                                                        */

struct dgram {
    bool lost;
    size_t received;
    gfl_transport *t;
};
static struct dgram dgrams[2];

static void dgram_made(gfl_transport *t, void *ud)
{
    ((struct dgram *)ud)->t = t;
}

static void dgram_received(gfl_transport *t, const void *data, size_t len, const struct sockaddr *addr,
                           socklen_t addrlen, void *ud)
{
    (void)t;
    (void)data;
    (void)addr;
    (void)addrlen;
    ((struct dgram *)ud)->received += len;
}

static void dgram_lost(gfl_transport *t, gfl_value *error, void *ud)
{
    (void)t;
    (void)error;
    ((struct dgram *)ud)->lost = true;
}

static const gfl_datagram_protocol dgram_protocol = {
    .size = sizeof dgram_protocol,
    .connection_made = dgram_made,
    .datagram_received = dgram_received,
    .connection_lost = dgram_lost,
};

static int dgram_factory(void *fud, gfl_transport *t, const gfl_datagram_protocol **proto, void **ud)
{
    (void)t;
    *proto = &dgram_protocol;
    *ud = fud;
    return 0;
}

static gfl_transport *udp_endpoint(gfl_loop *loop, struct dgram *d, const char *remote_port, int *ok)
{
    gfl_datagram_options o = {.size = sizeof o, .local_host = "127.0.0.1", .local_port = "0",
                              .remote_host = remote_port ? "127.0.0.1" : NULL, .remote_port = remote_port};
    *ok = 1;
    gfl_future *f = gfl_create_datagram_endpoint(loop, dgram_factory, d, NULL, &o);
    if (!f)
        return NULL;
    if (!run_until(loop, NULL, f, 3)) {
        *ok = 0;
        snprintf(problem, sizeof problem, "datagram endpoint never finished");
    }
    gfl_transport *t = future_transport(f);
    if (!t && *ok && !failed_with_error(f)) {
        *ok = 0;
        snprintf(problem, sizeof problem, "datagram endpoint failed without an error");
    }
    gfl_future_unref(f);
    return t;
}

static int scenario_udp(void)
{
    memset(dgrams, 0, sizeof dgrams);
    gfl_loop *loop = gfl_loop_new(NULL);
    if (!loop)
        return 0;
    int ok;
    gfl_transport *server = udp_endpoint(loop, &dgrams[0], NULL, &ok);
    if (!ok)
        return -1;
    if (server) {
        struct sockaddr_in sin;
        size_t len = sizeof sin;
        CHECK(gfl_transport_get_sockaddr(server, 0, &sin, &len) == 0, "get_sockaddr");
        char port[16];
        snprintf(port, sizeof port, "%d", ntohs(sin.sin_port));
        gfl_transport *client = udp_endpoint(loop, &dgrams[1], port, &ok);
        if (!ok)
            return -1;
        if (client) {
            int rc = gfl_datagram_sendto(client, "ping", 4, NULL, 0);
            CHECK(OK_OR_ENOMEM(rc) || rc == GFL_ECLOSED, "sendto: %d", rc);
            if (rc == 0) {
                double deadline = now_s() + 2;
                while (!dgrams[0].received && !dgrams[0].lost && !dgrams[1].lost && now_s() < deadline)
                    gfl_loop_run_once(loop, 0.01);
                /* An endpoint that could not be watched is lost with an error. */
                CHECK(dgrams[0].received == 4 || dgrams[0].lost || dgrams[1].lost, "the datagram never arrived");
            }
            gfl_transport_close(client);
            gfl_transport_unref(client);
        }
        gfl_transport_close(server);
        gfl_transport_unref(server);
    }
    double deadline = now_s() + 2;
    while (((dgrams[0].t && !dgrams[0].lost) || (dgrams[1].t && !dgrams[1].lost)) && now_s() < deadline)
        gfl_loop_run_once(loop, 0.01);
    CHECK(!(dgrams[0].t && !dgrams[0].lost) && !(dgrams[1].t && !dgrams[1].lost), "an endpoint was never lost");
    return finish_loop(loop);
}

/* ------------------------------------------------------------------ */
/* Scenario: pipes and subprocesses                                      */

static int pipe_round_trip(gfl_loop *loop)
{
    int fds[2];
    CHECK(pipe2(fds, O_CLOEXEC) == 0, "pipe");
    releases_owed += 2;
    gfl_future *rf = gfl_connect_read_pipe(loop, conn_factory, NULL, factory_release, fds[0]);
    if (!rf) {
        releases_owed--;
        close(fds[0]);
    }
    gfl_future *wf = gfl_connect_write_pipe(loop, conn_factory, NULL, factory_release, fds[1]);
    if (!wf) {
        releases_owed--;
        close(fds[1]);
    }
    gfl_transport *reader = NULL, *writer = NULL;
    if (rf) {
        CHECK(run_until(loop, NULL, rf, 3), "read pipe never connected");
        reader = future_transport(rf);
        CHECK(reader || failed_with_error(rf), "read pipe failed without an error");
        gfl_future_unref(rf);
    }
    if (wf) {
        CHECK(run_until(loop, NULL, wf, 3), "write pipe never connected");
        writer = future_transport(wf);
        CHECK(writer || failed_with_error(wf), "write pipe failed without an error");
        gfl_future_unref(wf);
    }
    if (reader && writer) {
        int rc = gfl_transport_write(writer, "through the pipe", 16);
        CHECK(rc == 0 || rc == GFL_ENOMEM, "pipe write: %d", rc);
        struct conn *r = NULL;
        for (int i = 0; i < STREAM_SLOTS; i++)
            if (conns[i].used && conns[i].t == reader)
                r = &conns[i];
        double deadline = now_s() + 3;
        while (rc == 0 && r && r->received < 16 && !r->lost && now_s() < deadline)
            gfl_loop_run_once(loop, 0.01);
        CHECK(rc < 0 || !r || r->received == 16 || r->lost, "the bytes never came through");
    }
    if (writer) {
        gfl_transport_close(writer);
        gfl_transport_unref(writer);
    }
    if (reader) {
        gfl_transport_close(reader);
        gfl_transport_unref(reader);
    }
    return 0;
}

static bool process_exited;
static void sub_exited(gfl_transport *t, void *ud)
{
    (void)t;
    (void)ud;
    process_exited = true;
}

static bool process_lost;
static void sub_lost(gfl_transport *t, gfl_value *error, void *ud)
{
    (void)t;
    (void)error;
    (void)ud;
    process_lost = true;
}

static size_t process_output;
static void sub_data(gfl_transport *t, int fd, const void *data, size_t len, void *ud)
{
    (void)t;
    (void)fd;
    (void)data;
    (void)ud;
    process_output += len;
}

static const gfl_subprocess_protocol sub_protocol = {
    .size = sizeof sub_protocol,
    .pipe_data_received = sub_data,
    .process_exited = sub_exited,
    .connection_lost = sub_lost,
};

static int sub_factory(void *fud, gfl_transport *t, const gfl_subprocess_protocol **proto, void **ud)
{
    (void)t;
    *proto = &sub_protocol;
    *ud = fud;
    return 0;
}

static int scenario_pipes(void)
{
    streams_reset();
    gfl_loop *loop = gfl_loop_new(NULL);
    if (!loop)
        return 0;
    int rc = pipe_round_trip(loop);
    if (rc < 0)
        return rc;

    process_exited = process_lost = false;
    process_output = 0;
    const char *argv[] = {"/bin/echo", "sweep", NULL};
    gfl_subprocess_options o = {.size = sizeof o, .argv = argv, .stdio = {GFL_STDIO_DEVNULL, GFL_STDIO_PIPE, GFL_STDIO_DEVNULL}};
    releases_owed++;
    gfl_future *f = gfl_subprocess_exec(loop, sub_factory, NULL, factory_release, &o);
    if (!f)
        releases_owed--;
    if (f) {
        CHECK(run_until(loop, NULL, f, 5), "subprocess_exec never finished");
        gfl_transport *t = future_transport(f);
        CHECK(t || failed_with_error(f), "subprocess failed without an error");
        gfl_future_unref(f);
        if (t) {
            CHECK(run_until(loop, &process_lost, NULL, 5), "the subprocess transport was never lost");
            CHECK(process_exited, "no process_exited before connection_lost");
            gfl_transport_close(t);
            gfl_transport_unref(t);
        }
    }
    abort_all();
    double deadline = now_s() + 3;
    while (!all_lost() && now_s() < deadline)
        gfl_loop_run_once(loop, 0.01);
    CHECK(all_lost(), "a pipe never reported connection_lost");
    rc = finish_loop(loop);
    CHECK(releases_owed == 0, "factory_release owed %d", releases_owed);
    return rc;
}

/* ------------------------------------------------------------------ */
/* The sweep                                                             */

struct scenario {
    const char *name;
    scenario_fn run;
    long max_runs; /* the stride is chosen to stay near this many runs */
    /* Filled in by the sweep. */
    struct {
        long allocations, runs, injected, leaks, hangs, leaked_blocks, stride;
        long library_held; /* runs after which only OpenSSL/libevent kept blocks */
        char first_problem[320];
    } r;
};

static struct scenario scenarios[] = {
    {"loop+handles", scenario_loop, 4000, {0}},
    {"values", scenario_values, 4000, {0}},
    {"executor", scenario_executor, 4000, {0}},
    {"dns", scenario_dns, 1500, {0}},
    {"signals", scenario_signals, 4000, {0}},
    {"registry", scenario_registry, 4000, {0}},
    {"plugins", scenario_plugins, 600, {0}},
    {"tcp", scenario_tcp, 1200, {0}},
    {"tls-contexts", scenario_tls_contexts, 2000, {0}},
    {"tls", scenario_tls, 4000, {0}},
    {"udp", scenario_udp, 1500, {0}},
    {"pipes+subprocess", scenario_pipes, 500, {0}},
};

/* One armed run; returns the scenario's verdict, sets *leaked. */
static int armed_run(struct scenario *s, long fail_number, long *leaked, bool *foreign, long *count)
{
    live_reset();
    atomic_store(&attempts, 0);
    atomic_store(&fail_at, fail_number);
    atomic_store(&armed, true);
    problem[0] = '\0';
    int rc = s->run();
    atomic_store(&armed, false);
    atomic_store(&fail_at, 0);
    *count = atomic_load(&attempts);
    /* Executor threads may still be on their way out. */
    for (int i = 0; i < 50 && atomic_load(&live_count) > 0; i++)
        usleep(1000);
    *leaked = atomic_load(&live_count);
    *foreign = *leaked && leftovers_are_foreign();
    if (*leaked && debug_leaks)
        live_dump();
    failed_caller = NULL;
    live_reset();
    return rc;
}

static void sweep(struct scenario *s, double budget_scale)
{
    long leaked, count;
    bool foreign;
    /* Warm-up runs until one leaves nothing behind: one-time library
     * state (libevent's global locks, OpenSSL's provider caches, NSS
     * modules, thread stacks) exists before anything is counted. */
    leaked = 1;
    for (int i = 0; i < 24 && leaked; i++) {
        int rc = armed_run(s, 0, &leaked, &foreign, &count);
        cr_assert_eq(rc, 0, "%s: the clean run failed: %s", s->name, problem);
    }
    cr_assert_eq(leaked, 0, "%s: the clean run leaks %ld blocks", s->name, leaked);
    s->r.allocations = count;
    cr_assert_gt(count, 0, "%s allocates", s->name);

    const char *forced = getenv("GFL_SWEEP_STRIDE");
    long max_runs = (long)(s->max_runs * budget_scale);
    if (max_runs < 20)
        max_runs = 20;
    s->r.stride = forced && atol(forced) > 0 ? atol(forced) : (count + max_runs - 1) / max_runs;
    if (s->r.stride < 1)
        s->r.stride = 1;
    /* GFL_SWEEP_ONLY=name:k runs that one failure (with GFL_SWEEP_DEBUG=1
     * it prints where allocation k was made). */
    const char *only = getenv("GFL_SWEEP_ONLY");
    long first = 1, last = count;
    if (only && *only) {
        size_t len = strcspn(only, ":");
        if (len != strlen(s->name) || strncmp(only, s->name, len) != 0)
            return;
        if (only[len] == ':')
            first = last = atol(only + len + 1);
    }
    for (long k = first; k <= last; k += s->r.stride) {
        long made;
        long before = atomic_load(&injected);
        int rc = armed_run(s, k, &leaked, &foreign, &made);
        s->r.injected += atomic_load(&injected) - before;
        s->r.runs++;
        /* A failed run may leave a process-wide cache (OpenSSL's method
         * stores) unfilled, so the next run fills it: a leak counts when
         * failing the same allocation again leaks again. */
        if (leaked && rc == 0) {
            long again;
            armed_run(s, k, &again, &foreign, &made);
            leaked = again;
        }
        if (rc < 0) {
            s->r.hangs++;
            if (!s->r.first_problem[0])
                snprintf(s->r.first_problem, sizeof s->r.first_problem, "failing allocation %ld: %s", k, problem);
        }
        if (leaked && foreign) {
            s->r.library_held++;
        } else if (leaked) {
            s->r.leaks++;
            s->r.leaked_blocks += leaked;
            if (!s->r.first_problem[0])
                snprintf(s->r.first_problem, sizeof s->r.first_problem, "failing allocation %ld leaked %ld blocks", k,
                         leaked);
        }
    }
}

Test(alloc_sweep, every_scenario_survives_every_failed_allocation, .timeout = 1800)
{
    signal(SIGPIPE, SIG_IGN);
    const char *debug = getenv("GFL_SWEEP_DEBUG");
    if (debug && *debug && strcmp(debug, "0") != 0) {
        void *warm[2];
        backtrace(warm, 2); /* loads what backtrace needs before arming */
        debug_leaks = true;
    }
    make_certs();
    const char *builddir = getenv("abs_top_builddir");
    snprintf(example_so, sizeof example_so, "%s/plugins/.libs/example.so",
             builddir && *builddir ? builddir : GFL_TEST_BUILDDIR);
    cr_assert_eq(access(example_so, R_OK), 0, "example plugin not built: %s", example_so);

    const char *vg = getenv("GFL_UNDER_VALGRIND");
    double scale = vg && *vg && strcmp(vg, "0") != 0 ? 0.02 : 1.0;

    size_t n = sizeof scenarios / sizeof scenarios[0];
    for (size_t i = 0; i < n; i++) {
        double start = now_s();
        bool tls = scenarios[i].run == scenario_tls;
        if (tls) {
            cr_assert_eq(make_tls_contexts(false), 0);
            cr_assert(tls_client_ctx && tls_server_ctx, "TLS contexts: %s", problem);
        }
        sweep(&scenarios[i], scale);
        if (tls)
            drop_tls_contexts();
        fprintf(stderr, "alloc_sweep: %s done in %.1f s\n", scenarios[i].name, now_s() - start);
    }
    remove_certs();

    fprintf(stderr, "\n%-18s %11s %7s %9s %8s %6s %6s %9s\n", "scenario", "allocations", "stride", "injected",
            "crashes", "leaks", "hangs", "lib-held");
    fprintf(stderr, "(stride k: allocations 1, 1+k, 1+2k, ... were failed, one per run; crashes: a crash\n"
                    " ends the test; lib-held: runs after which only blocks OpenSSL/libevent made for\n"
                    " themselves were left, their caches after their own allocation failed)\n");
    bool clean = true;
    for (size_t i = 0; i < n; i++) {
        struct scenario *s = &scenarios[i];
        fprintf(stderr, "%-18s %11ld %7ld %9ld %8d %6ld %6ld %9ld\n", s->name, s->r.allocations, s->r.stride,
                s->r.injected, 0, s->r.leaks, s->r.hangs, s->r.library_held);
        if (s->r.first_problem[0]) {
            fprintf(stderr, "    %s: %s\n", s->name, s->r.first_problem);
            clean = false;
        }
    }
    cr_assert(clean, "the sweep found failures (table above)");
}

#endif /* !__SANITIZE_ADDRESS__ */
