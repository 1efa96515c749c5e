/*
 * The handle table and the ready queue.
 *
 * Every scheduled callback lives in a slot of one growable array; a handle is
 * (generation << 32 | index). Freeing a slot bumps its generation, so a
 * handle kept after its callback ran or was cancelled names nothing: no
 * use-after-free, and nothing to free for callers that ignore handles.
 * The ready queue is a ring of slot indices.
 */
#include "internal.h"

#define GENERATION_MASK 0x7fffffffu /* keeps handles positive */

static int grow_slots(gfl_loop *loop)
{
    uint32_t cap = loop->slots_cap ? loop->slots_cap * 2 : 256;
    if (cap <= loop->slots_cap || cap >= GFL_NO_SLOT)
        return GFL_ENOMEM;
    struct gfl_slot *slots = gfl__realloc(loop, loop->slots, (size_t)cap * sizeof *slots);
    if (!slots)
        return GFL_ENOMEM;
    loop->slots = slots;
    loop->slots_cap = cap;
    return GFL_OK;
}

int gfl__slot_alloc(gfl_loop *loop, uint32_t *index)
{
    uint32_t i = loop->free_head;
    if (i != GFL_NO_SLOT) {
        loop->free_head = loop->slots[i].next_free;
    } else {
        if (loop->nslots == loop->slots_cap) {
            int rc = grow_slots(loop);
            if (rc < 0)
                return rc;
        }
        i = loop->nslots++;
        loop->slots[i].generation = 1;
    }
    loop->slots[i].kind = GFL_SLOT_PLAIN;
    loop->slots[i].future = NULL;
    loop->slots[i].release = NULL;
    *index = i;
    return GFL_OK;
}

void gfl__slot_release(gfl_loop *loop, uint32_t index)
{
    struct gfl_slot *s = &loop->slots[index];
    uint32_t gen = (s->generation + 1) & GENERATION_MASK;
    s->generation = gen ? gen : 1;
    s->state = GFL_SLOT_FREE;
    s->next_free = loop->free_head;
    loop->free_head = index;
}

void gfl__slot_drop(gfl_loop *loop, uint32_t index)
{
    struct gfl_slot *s = &loop->slots[index];
    bool has_future = s->kind == GFL_SLOT_FUTURE || s->kind == GFL_SLOT_FUTURE_REL;
    gfl_future *f = has_future ? s->future : NULL;
    gfl_release_fn release = s->kind == GFL_SLOT_PLAIN ? s->release : NULL;
    void *arg = s->arg;
    if (s->kind == GFL_SLOT_FUTURE_REL) {
        struct gfl_future_rel *rec = arg;
        arg = rec->arg;
        release = rec->release;
        gfl__free(loop, rec);
    }
    gfl__slot_release(loop, index);
    /* The argument first: it may still point at the future. */
    if (release)
        release(arg);
    if (f)
        gfl_future_unref(f);
}

gfl_handle gfl__handle_of(const gfl_loop *loop, uint32_t index)
{
    return (gfl_handle)((uint64_t)loop->slots[index].generation << 32 | index);
}

struct gfl_slot *gfl__slot_of(const gfl_loop *loop, gfl_handle handle, uint32_t *index)
{
    if (handle <= 0)
        return NULL;
    uint32_t i = (uint32_t)((uint64_t)handle & 0xffffffffu);
    uint32_t gen = (uint32_t)((uint64_t)handle >> 32);
    if (i >= loop->nslots)
        return NULL;
    struct gfl_slot *s = &loop->slots[i];
    if (s->generation != gen || s->state == GFL_SLOT_FREE || s->kind == GFL_SLOT_OWNED)
        return NULL;
    if (index)
        *index = i;
    return s;
}

int gfl__ready_grow(gfl_loop *loop)
{
    size_t cap = loop->ready_cap ? loop->ready_cap * 2 : 256;
    uint32_t *ring = gfl__alloc(loop, cap * sizeof *ring);
    if (!ring)
        return GFL_ENOMEM;
    /* Unroll the ring so it starts at 0 again. */
    for (size_t k = 0; k < loop->ready_count; k++)
        ring[k] = loop->ready[(loop->ready_head + k) & (loop->ready_cap - 1)];
    gfl__free(loop, loop->ready);
    loop->ready = ring;
    loop->ready_cap = cap;
    loop->ready_head = 0;
    return GFL_OK;
}

int gfl__ready_reserve(gfl_loop *loop, size_t extra)
{
    while (loop->ready_count + extra > loop->ready_cap) {
        int rc = gfl__ready_grow(loop);
        if (rc < 0)
            return rc;
    }
    return GFL_OK;
}

int gfl__owned_slot_new(gfl_loop *loop, gfl_callback cb, void *arg, uint32_t *index)
{
    uint32_t i;
    int rc = gfl__slot_alloc(loop, &i);
    if (rc < 0)
        return rc;
    struct gfl_slot *s = &loop->slots[i];
    s->fn.cb = cb;
    s->arg = arg;
    s->kind = GFL_SLOT_OWNED;
    s->state = GFL_SLOT_PARKED;
    *index = i;
    return GFL_OK;
}

void gfl__owned_slot_free(gfl_loop *loop, uint32_t index)
{
    if (index >= loop->nslots) /* the loop closed: the table is gone */
        return;
    struct gfl_slot *s = &loop->slots[index];
    if (s->state == GFL_SLOT_READY) {
        /* The queue still names it: an ordinary cancelled slot from now on,
         * freed when the queue reaches it. */
        s->kind = GFL_SLOT_PLAIN;
        s->release = NULL;
        s->state = GFL_SLOT_CANCELLED;
        return;
    }
    gfl__slot_release(loop, index);
}

gfl_handle gfl_call_soon(gfl_loop *loop, gfl_callback cb, void *arg)
{
    return gfl_call_soon_ex(loop, cb, arg, NULL);
}

gfl_handle gfl_call_soon_ex(gfl_loop *loop, gfl_callback cb, void *arg, gfl_release_fn release)
{
    int rc = gfl__check_loop(loop);
    if (rc < 0)
        return rc;
    if (!cb)
        return GFL_EINVAL;
    uint32_t i;
    if ((rc = gfl__slot_alloc(loop, &i)) < 0)
        return rc;
    loop->slots[i].fn.cb = cb;
    loop->slots[i].arg = arg;
    loop->slots[i].release = release;
    if ((rc = gfl__ready_push(loop, i)) < 0) {
        gfl__slot_release(loop, i);
        return rc;
    }
    return gfl__handle_of(loop, i);
}

static int schedule_future(gfl_loop *loop, gfl_future_callback fcb, gfl_future *future, void *arg, uint8_t kind)
{
    uint32_t i;
    int rc = gfl__slot_alloc(loop, &i);
    if (rc < 0)
        return rc;
    struct gfl_slot *s = &loop->slots[i];
    s->fn.fcb = fcb;
    s->arg = arg;
    s->kind = kind;
    s->future = future;
    if ((rc = gfl__ready_push(loop, i)) < 0) {
        gfl__slot_release(loop, i);
        return rc;
    }
    gfl_future_ref(future);
    return GFL_OK;
}

int gfl__call_soon_future(gfl_loop *loop, gfl_future_callback fcb, gfl_future *future, void *arg)
{
    if (loop->closed)
        return GFL_ECLOSED;
    return schedule_future(loop, fcb, future, arg, GFL_SLOT_FUTURE);
}

int gfl__call_soon_future_rel(gfl_loop *loop, gfl_future_callback fcb, gfl_future *future, void *arg, gfl_release_fn release)
{
    if (!release)
        return gfl__call_soon_future(loop, fcb, future, arg);
    if (loop->closed)
        return GFL_ECLOSED;
    /* A slot has no room for a second function: the pair goes beside it. */
    struct gfl_future_rel *rec = gfl__alloc(loop, sizeof *rec);
    if (!rec)
        return GFL_ENOMEM;
    rec->arg = arg;
    rec->release = release;
    int rc = schedule_future(loop, fcb, future, rec, GFL_SLOT_FUTURE_REL);
    if (rc < 0)
        gfl__free(loop, rec);
    return rc;
}

int gfl_handle_cancel(gfl_loop *loop, gfl_handle handle)
{
    int rc = gfl__check_loop(loop);
    if (rc < 0)
        return rc;
    struct gfl_slot *s = gfl__slot_of(loop, handle, NULL);
    if (!s || s->state == GFL_SLOT_CANCELLED)
        return GFL_ENOENT;
    /* The slot stays referenced by the queue or heap until it is reached;
     * what it holds is released now. */
    bool was_timer = s->state == GFL_SLOT_TIMER;
    s->state = GFL_SLOT_CANCELLED;
    if (s->kind == GFL_SLOT_PLAIN && s->release) {
        gfl_release_fn release = s->release;
        s->release = NULL;
        release(s->arg);
    }
    if (was_timer) {
        loop->ncancelled_timers++;
        gfl__timer_cancelled(loop);
    }
    return GFL_OK;
}

int gfl_handle_is_pending(const gfl_loop *loop, gfl_handle handle)
{
    int rc = gfl__check_loop(loop);
    if (rc < 0)
        return rc;
    const struct gfl_slot *s = gfl__slot_of(loop, handle, NULL);
    return s && (s->state == GFL_SLOT_READY || s->state == GFL_SLOT_TIMER);
}
