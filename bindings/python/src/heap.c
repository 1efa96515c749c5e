/*
 * glibc's heap trimming against bursts of big Python buffers.
 *
 * A stream server echoing 100 KiB messages keeps one StreamReader buffer
 * per ready connection between data_received and the task that reads it:
 * with 100 connections, about 10 MiB allocated in a burst and freed in a
 * burst, every iteration. glibc hands the top of the heap back to the
 * kernel as soon as more than M_TRIM_THRESHOLD (128 KiB) of it is free, so
 * the next burst faults every page in again: ~25 page faults per request,
 * a third of the server's CPU time. Whether a loop escapes depends on where
 * the last live chunk happens to sit (uvloop escapes it in streams mode and
 * not in protocol mode; so did we, the other way round).
 *
 * glibc raises the thresholds by itself (up to 32 MiB mmap / 64 MiB trim)
 * once the program frees an mmap()ed chunk, taking that as the sign of big
 * temporary buffers; the core's read buffer is never freed, so the sign
 * never comes. Fixed values within that range avoid the faults.
 *
 * They change the allocator of the whole process, so a library must not
 * set them behind the program's back: it is an explicit opt-in, off by
 * default. globeflower.tune_heap() sets them now; GLOBEFLOWER_HEAP_TUNING=1
 * in the environment makes the first loop set them. Either way they are
 * left alone when the environment already chose glibc malloc settings
 * (GLIBC_TUNABLES=glibc.malloc.*, MALLOC_*_).
 */
#include "gflpy.h"

#include <stdlib.h>
#include <string.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

/* Allocations below this come from the heap (glibc's default 128 KiB would
 * mmap/munmap every 256 KiB recv buffer once its adjustment is frozen). */
#define MMAP_THRESHOLD (4 * 1024 * 1024)
/* Free heap kept mapped: the burst of a few hundred 100 KiB messages. */
#define TRIM_THRESHOLD (32 * 1024 * 1024)

/* The environment already chose glibc malloc settings: they win. */
static int environment_chose(void)
{
    static const char *const vars[] = {"MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_",
                                       "MALLOC_MMAP_MAX_"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (getenv(vars[i]))
            return 1;
    const char *tunables = getenv("GLIBC_TUNABLES");
    return tunables && strstr(tunables, "glibc.malloc.") != NULL;
}

static int tuned;

int gflpy_heap_tune(void)
{
#ifdef __GLIBC__
    if (tuned)
        return 1;
    if (environment_chose())
        return 0;
    if (mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1 || mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1)
        return 0;
    tuned = 1;
    return 1;
#else
    return 0;
#endif
}

void gflpy_heap_tune_if_asked(void)
{
    static int checked;
    if (checked)
        return;
    checked = 1;
    const char *opt = getenv("GLOBEFLOWER_HEAP_TUNING");
    if (opt && strcmp(opt, "1") == 0)
        (void)gflpy_heap_tune();
}

/* globeflower.tune_heap(): True when the thresholds are in effect. */
PyObject *gflpy_tune_heap(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    return PyBool_FromLong(gflpy_heap_tune());
}

/* globeflower.heap_tuned(): whether this process tuned the heap. */
PyObject *gflpy_heap_tuned(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    return PyBool_FromLong(tuned);
}
