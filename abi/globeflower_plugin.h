/*
 * Writing a globeflower plugin: a shared object built only against this
 * header. It exports
 *
 *     int gfl_plugin_init_<name>(const gfl_api *api, gfl_plugin *self);
 *
 * which checks the table with GFL_PLUGIN_CHECK_API, registers its functions
 * through api->plugin_add_function / api->plugin_add_async_function, and
 * returns 0 (or a GFL_E* code to refuse loading). The plugin calls the core
 * only through `api`, never by symbol, so it works in any host.
 */
#ifndef GLOBEFLOWER_PLUGIN_H
#define GLOBEFLOWER_PLUGIN_H

#include "globeflower.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef int (*gfl_plugin_init_fn)(const gfl_api *api, gfl_plugin *self);

/* The name of the entry point of plugin `name`. */
#define GFL_PLUGIN_INIT_PREFIX "gfl_plugin_init_"

/* Refuses (returns GFL_EVERSION from the init function) a core whose ABI
 * major differs or whose table lacks the functions this plugin needs. */
#define GFL_PLUGIN_CHECK_API(api, last_field_used)                          \
    do {                                                                    \
        if ((api) == NULL || (api)->abi_major != GFL_ABI_MAJOR ||            \
            !GFL_API_HAS((api), last_field_used))                            \
            return GFL_EVERSION;                                             \
    } while (0)

/* Registration, called from the init function (also in gfl_api). Names are
 * copied; `ud` is passed to every call. */
GFL_EXPORT int gfl_plugin_add_function(gfl_plugin *self, const char *name, gfl_plugin_function fn, void *ud);
GFL_EXPORT int gfl_plugin_add_async_function(gfl_plugin *self, const char *name, gfl_plugin_async_function fn, void *ud);
/* Runs at gfl_plugin_unload. */
GFL_EXPORT int gfl_plugin_set_finalizer(gfl_plugin *self, gfl_release_fn fn, void *ud);

#ifdef __cplusplus
}
#endif

#endif
