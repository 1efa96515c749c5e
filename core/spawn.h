/*
 * spawn.c: starting a child process (vfork + exec) with exec errors
 * reported to the parent. Private to core/process.c.
 */
#ifndef GFL_CORE_SPAWN_H
#define GFL_CORE_SPAWN_H

#include "internal.h"

#include <sys/types.h>

struct gfl_spawn_request {
    const char *file;         /* searched in PATH when it has no '/' */
    const char *const *argv;
    const char *const *env;   /* NULL: the parent's environ */
    const char *cwd;          /* NULL: unchanged */
    /* fd i of the child: src[i] >= 3 is dup2()ed onto i; -1 leaves i as
     * inherited (clear_cloexec[i]: and makes sure it survives exec). All
     * src fds must be >= 3 so that no dup2 overwrites another source. */
    int src[3];
    bool clear_cloexec[3];
    bool stderr_to_stdout;    /* dup2(1, 2) once 0 and 1 are in place */
    bool setsid;
    int pgroup;               /* 0: unchanged; -1: new group; > 0: join */
    bool close_fds;           /* close every fd >= 3 but pass_fds */
    const int *pass_fds;
    size_t npass_fds;
};

/* Starts the child: 0 and *pid, or a negative GFL code with *error set (a
 * new OSError-named error value, e.g. FileNotFoundError naming the program
 * or the cwd). No child is left behind on failure. */
int gfl__spawn(gfl_loop *loop, const struct gfl_spawn_request *rq, pid_t *pid, gfl_value **error);

/* fd moved (F_DUPFD_CLOEXEC) to a number >= 3 if it is below: the new fd
 * (the old one is closed), or -errno. */
int gfl__fd_above_stdio(int fd);

#endif
