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
 * never comes. The first loop sets fixed values within that range instead,
 * unless the program chose its own through the environment (or opts out
 * with GLOBEFLOWER_HEAP_TUNING=0). It is process-wide, like glibc's own
 * adjustment: at most TRIM_THRESHOLD of free heap stays mapped.
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

static int user_chose(void)
{
    static const char *const vars[] = {"MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_",
                                       "MALLOC_MMAP_MAX_"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (getenv(vars[i]))
            return 1;
    const char *tunables = getenv("GLIBC_TUNABLES");
    if (tunables && strstr(tunables, "glibc.malloc."))
        return 1;
    const char *opt = getenv("GLOBEFLOWER_HEAP_TUNING");
    return opt && strcmp(opt, "0") == 0;
}

void gflpy_heap_tune(void)
{
#ifdef __GLIBC__
    static int done;
    if (done)
        return;
    done = 1;
    if (user_chose())
        return;
    (void)mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    (void)mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD);
#endif
}
