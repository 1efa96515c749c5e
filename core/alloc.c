/* Allocation through the loop's hook (gfl_loop_options.realloc). */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

void *gfl__alloc(gfl_loop *loop, size_t size)
{
    if (size == 0)
        size = 1;
    return loop->realloc(loop->realloc_ud, NULL, size);
}

void *gfl__calloc(gfl_loop *loop, size_t n, size_t size)
{
    if (size != 0 && n > SIZE_MAX / size)
        return NULL;
    void *p = gfl__alloc(loop, n * size);
    if (p)
        memset(p, 0, n * size);
    return p;
}

void *gfl__realloc(gfl_loop *loop, void *ptr, size_t size)
{
    if (size == 0)
        size = 1;
    return loop->realloc(loop->realloc_ud, ptr, size);
}

void gfl__free(gfl_loop *loop, void *ptr)
{
    if (ptr)
        loop->realloc(loop->realloc_ud, ptr, 0);
}
