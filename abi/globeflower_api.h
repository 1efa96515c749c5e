/*
 * gfl_api: the versioned function table through which bindings and plugins
 * reach the core (the sqlite3ext.h model). One process shares one core this
 * way even when hosts link it statically or load bindings RTLD_LOCAL.
 *
 * Append-only: fields are never reordered or removed; new ones go at the end
 * and GFL_ABI_MINOR is bumped. Before using a field added after the version
 * you compiled against, check it with GFL_API_HAS(api, field).
 * Included by globeflower.h; do not include directly.
 */
#ifndef GLOBEFLOWER_API_H
#define GLOBEFLOWER_API_H

struct gfl_api {
    uint32_t abi_major; /* GFL_ABI_MAJOR of the core */
    uint32_t abi_minor; /* GFL_ABI_MINOR of the core */
    size_t size;        /* sizeof(gfl_api) in the core */

    const char *(*strerror)(int code);
    gfl_loop *(*loop_new)(const gfl_loop_options *opts);
    int (*loop_free)(gfl_loop *loop);
    gfl_loop *(*loop_ref)(gfl_loop *loop);
    int (*loop_unref)(gfl_loop *loop);
    int (*loop_run)(gfl_loop *loop);
    int (*loop_run_once)(gfl_loop *loop, double timeout);
    int (*loop_stop)(gfl_loop *loop);
    double (*loop_time)(const gfl_loop *loop);
    int (*loop_is_running)(const gfl_loop *loop);
    int (*loop_is_closed)(const gfl_loop *loop);
    gfl_loop *(*loop_current)(void);
    int (*loop_set_current)(gfl_loop *loop);
    gfl_handle (*call_soon)(gfl_loop *loop, gfl_callback cb, void *arg);
    gfl_handle (*call_later)(gfl_loop *loop, double delay, gfl_callback cb, void *arg);
    gfl_handle (*call_at)(gfl_loop *loop, double when, gfl_callback cb, void *arg);
    gfl_handle (*call_soon_ex)(gfl_loop *loop, gfl_callback cb, void *arg, gfl_release_fn release);
    gfl_handle (*call_at_ex)(gfl_loop *loop, double when, gfl_callback cb, void *arg, gfl_release_fn release);
    int (*handle_cancel)(gfl_loop *loop, gfl_handle handle);
    int (*handle_is_pending)(const gfl_loop *loop, gfl_handle handle);
    int (*call_soon_threadsafe)(gfl_loop *loop, gfl_callback cb, void *arg);
    int (*add_reader)(gfl_loop *loop, int fd, gfl_callback cb, void *arg);
    int (*add_writer)(gfl_loop *loop, int fd, gfl_callback cb, void *arg);
    int (*remove_reader)(gfl_loop *loop, int fd);
    int (*remove_writer)(gfl_loop *loop, int fd);
    int (*add_signal_handler)(gfl_loop *loop, int signum, gfl_callback cb, void *arg);
    int (*remove_signal_handler)(gfl_loop *loop, int signum);
    int (*loop_set_exception_handler)(gfl_loop *loop, gfl_exception_handler handler, void *ud);
    int (*loop_call_exception_handler)(gfl_loop *loop, const char *message, gfl_value *error);
    int (*loop_set_debug)(gfl_loop *loop, int enabled);
    int (*loop_get_debug)(const gfl_loop *loop);
    int (*loop_set_slow_callback_duration)(gfl_loop *loop, double seconds);
    int (*loop_set_slow_callback_handler)(gfl_loop *loop, gfl_slow_callback_handler handler, void *ud);
    int (*loop_backend_fd)(gfl_loop *loop);
    double (*loop_backend_timeout)(const gfl_loop *loop);
    gfl_value *(*value_nil)(void);
    gfl_value *(*value_bool)(int b);
    gfl_value *(*value_int)(int64_t i);
    gfl_value *(*value_double)(double d);
    gfl_value *(*value_bytes)(const void *data, size_t len);
    gfl_value *(*value_string)(const char *text, size_t len);
    gfl_value *(*value_error)(int code, const char *type, const char *message, const char *traceback);
    gfl_value *(*value_object)(const gfl_host_class *cls, void *object);
    gfl_value *(*value_ref)(gfl_value *v);
    void (*value_unref)(gfl_value *v);
    int (*value_type_of)(const gfl_value *v);
    int (*value_get_bool)(const gfl_value *v, int *out);
    int (*value_get_int)(const gfl_value *v, int64_t *out);
    int (*value_get_double)(const gfl_value *v, double *out);
    int (*value_get_bytes)(const gfl_value *v, const char **data, size_t *len);
    int (*value_error_code)(const gfl_value *v);
    const char *(*value_error_type)(const gfl_value *v);
    const char *(*value_error_message)(const gfl_value *v);
    const char *(*value_error_traceback)(const gfl_value *v);
    int (*value_get_object)(const gfl_value *v, const gfl_host_class *cls, void **object);
    const gfl_host_class *(*value_object_class)(const gfl_value *v);
    gfl_future *(*future_new)(gfl_loop *loop);
    gfl_future *(*future_ref)(gfl_future *f);
    void (*future_unref)(gfl_future *f);
    int (*future_set_result)(gfl_future *f, gfl_value *value);
    int (*future_set_error)(gfl_future *f, gfl_value *error);
    int (*future_cancel)(gfl_future *f, const char *message);
    int (*future_state_of)(const gfl_future *f);
    gfl_value *(*future_value)(gfl_future *f);
    gfl_loop *(*future_loop)(const gfl_future *f);
    int (*future_add_done_callback)(gfl_future *f, gfl_future_callback cb, void *arg);
    int (*future_remove_done_callback)(gfl_future *f, gfl_future_callback cb, void *arg);
    gfl_task *(*task_new)(gfl_loop *loop, gfl_task_step_fn step, void *ud, gfl_release_fn release);
    gfl_task *(*task_ref)(gfl_task *t);
    void (*task_unref)(gfl_task *t);
    gfl_future *(*task_future)(gfl_task *t);
    int (*task_await)(gfl_task *t, gfl_future *awaited);
    int (*task_return)(gfl_task *t, gfl_value *value);
    int (*task_fail)(gfl_task *t, gfl_value *error);
    int (*task_cancel)(gfl_task *t, const char *message);
    gfl_task *(*task_current)(gfl_loop *loop);
    gfl_future *(*run_in_executor)(gfl_loop *loop, gfl_work_fn work, void *arg, gfl_release_fn release);
    gfl_plugin *(*plugin_load)(const char *name, const char *path);
    const char *(*plugin_last_error)(void);
    int (*plugin_unload)(gfl_plugin *plugin);
    const char *(*plugin_name)(const gfl_plugin *plugin);
    int (*plugin_function_count)(const gfl_plugin *plugin);
    const char *(*plugin_function_name)(const gfl_plugin *plugin, int index);
    int (*plugin_function_is_async)(const gfl_plugin *plugin, const char *name);
    int (*plugin_call)(gfl_plugin *plugin, const char *name, gfl_loop *loop, gfl_value *const *args, size_t nargs, gfl_value **result);
    gfl_future *(*plugin_call_async)(gfl_plugin *plugin, const char *name, gfl_loop *loop, gfl_value *const *args, size_t nargs);
    int (*plugin_add_function)(gfl_plugin *self, const char *name, gfl_plugin_function fn, void *ud);
    int (*plugin_add_async_function)(gfl_plugin *self, const char *name, gfl_plugin_async_function fn, void *ud);
    int (*plugin_set_finalizer)(gfl_plugin *self, gfl_release_fn fn, void *ud);
    /* ABI 1.1: transports, DNS, servers, Unix sockets, pipes */
    const gfl_host_class *(*transport_class)(void);
    gfl_transport *(*transport_ref)(gfl_transport *t);
    void (*transport_unref)(gfl_transport *t);
    gfl_loop *(*transport_loop)(const gfl_transport *t);
    int (*transport_write)(gfl_transport *t, const void *data, size_t len);
    int (*transport_writev)(gfl_transport *t, const gfl_iovec *iov, int iovcnt);
    int (*transport_write_eof)(gfl_transport *t);
    int (*transport_can_write_eof)(gfl_transport *t);
    int (*transport_pause_reading)(gfl_transport *t);
    int (*transport_resume_reading)(gfl_transport *t);
    int (*transport_is_reading)(gfl_transport *t);
    int (*transport_set_write_buffer_limits)(gfl_transport *t, int64_t high, int64_t low);
    int (*transport_get_write_buffer_limits)(gfl_transport *t, size_t *high, size_t *low);
    int64_t (*transport_get_write_buffer_size)(gfl_transport *t);
    int (*transport_close)(gfl_transport *t);
    int (*transport_abort)(gfl_transport *t);
    int (*transport_is_closing)(gfl_transport *t);
    gfl_value *(*transport_get_extra_info)(gfl_transport *t, const char *name);
    int (*transport_fileno)(gfl_transport *t);
    int (*transport_get_sockaddr)(gfl_transport *t, int peer, void *addr, size_t *len);
    int (*transport_set_protocol)(gfl_transport *t, const gfl_protocol *proto, void *ud);
    int (*transport_get_protocol)(gfl_transport *t, const gfl_protocol **proto, void **ud);
    const gfl_host_class *(*addrinfo_class)(void);
    gfl_addrinfo *(*addrinfo_new)(void);
    int (*addrinfo_add)(gfl_addrinfo *ai, int family, int socktype, int protocol, const void *addr, size_t addrlen);
    gfl_addrinfo *(*addrinfo_ref)(gfl_addrinfo *ai);
    void (*addrinfo_unref)(gfl_addrinfo *ai);
    int (*addrinfo_count)(const gfl_addrinfo *ai);
    int (*addrinfo_family)(const gfl_addrinfo *ai, int i);
    int (*addrinfo_socktype)(const gfl_addrinfo *ai, int i);
    int (*addrinfo_protocol)(const gfl_addrinfo *ai, int i);
    const void *(*addrinfo_addr)(const gfl_addrinfo *ai, int i, size_t *addrlen);
    const char *(*addrinfo_canonname)(const gfl_addrinfo *ai);
    gfl_future *(*getaddrinfo)(gfl_loop *loop, const char *host, const char *service, int family, int socktype, int protocol, int flags);
    const gfl_host_class *(*nameinfo_class)(void);
    const char *(*nameinfo_host)(const gfl_nameinfo *ni);
    const char *(*nameinfo_service)(const gfl_nameinfo *ni);
    gfl_future *(*getnameinfo)(gfl_loop *loop, const void *addr, size_t addrlen, int flags);
    gfl_future *(*create_connection)(gfl_loop *loop, gfl_protocol_factory factory, void *factory_ud, gfl_release_fn factory_release, const gfl_connect_options *opts);
    gfl_future *(*connect_socket)(gfl_loop *loop, gfl_protocol_factory factory, void *factory_ud, gfl_release_fn factory_release, int fd);
    gfl_future *(*create_server)(gfl_loop *loop, gfl_protocol_factory factory, void *factory_ud, gfl_release_fn factory_release, const gfl_server_options *opts);
    gfl_server *(*server_from_socket)(gfl_loop *loop, gfl_protocol_factory factory, void *factory_ud, gfl_release_fn factory_release, int fd, const gfl_server_options *opts);
    const gfl_host_class *(*server_class)(void);
    gfl_server *(*server_ref)(gfl_server *s);
    void (*server_unref)(gfl_server *s);
    int (*server_start_serving)(gfl_server *s);
    int (*server_is_serving)(gfl_server *s);
    int (*server_close)(gfl_server *s);
    int (*server_close_clients)(gfl_server *s);
    int (*server_abort_clients)(gfl_server *s);
    gfl_future *(*server_wait_closed)(gfl_server *s);
    int (*server_socket_count)(gfl_server *s);
    int (*server_socket_fd)(gfl_server *s, int index);
    int (*server_get_sockaddr)(gfl_server *s, int index, void *addr, size_t *len);
    int (*server_connection_count)(gfl_server *s);
    gfl_future *(*create_unix_connection)(gfl_loop *loop, gfl_protocol_factory factory, void *factory_ud, gfl_release_fn factory_release, const char *path, size_t path_len);
    gfl_future *(*create_unix_server)(gfl_loop *loop, gfl_protocol_factory factory, void *factory_ud, gfl_release_fn factory_release, const char *path, size_t path_len, const gfl_server_options *opts);
    gfl_future *(*connect_read_pipe)(gfl_loop *loop, gfl_protocol_factory factory, void *factory_ud, gfl_release_fn factory_release, int fd);
    gfl_future *(*connect_write_pipe)(gfl_loop *loop, gfl_protocol_factory factory, void *factory_ud, gfl_release_fn factory_release, int fd);
    /* ABI 1.1: datagram endpoints (globeflower_datagram.h) */
    gfl_future *(*create_datagram_endpoint)(gfl_loop *loop, gfl_datagram_protocol_factory factory, void *factory_ud, gfl_release_fn factory_release, const gfl_datagram_options *opts);
    gfl_future *(*datagram_from_socket)(gfl_loop *loop, gfl_datagram_protocol_factory factory, void *factory_ud, gfl_release_fn factory_release, int fd);
    int (*datagram_sendto)(gfl_transport *t, const void *data, size_t len, const struct sockaddr *addr, socklen_t addrlen);
    int (*datagram_set_protocol)(gfl_transport *t, const gfl_datagram_protocol *proto, void *ud);
    int (*datagram_get_protocol)(gfl_transport *t, const gfl_datagram_protocol **proto, void **ud);
    /* ABI 1.1: subprocesses (globeflower_process.h) */
    gfl_future *(*subprocess_exec)(gfl_loop *loop, gfl_subprocess_protocol_factory factory, void *factory_ud, gfl_release_fn factory_release, const gfl_subprocess_options *opts);
    int (*subprocess_pid)(gfl_transport *t);
    int (*subprocess_returncode)(gfl_transport *t, int *returncode);
    gfl_future *(*subprocess_wait)(gfl_transport *t);
    int (*subprocess_send_signal)(gfl_transport *t, int signum);
    int (*subprocess_terminate)(gfl_transport *t);
    int (*subprocess_kill)(gfl_transport *t);
    gfl_transport *(*subprocess_get_pipe_transport)(gfl_transport *t, int fd);
    int (*subprocess_set_protocol)(gfl_transport *t, const gfl_subprocess_protocol *proto, void *ud);
    int (*subprocess_get_protocol)(gfl_transport *t, const gfl_subprocess_protocol **proto, void **ud);
    /* ABI 1.1: TLS (globeflower_tls.h) */
    gfl_tls_context *(*tls_context_new)(const gfl_tls_context_options *opts, gfl_value **error);
    gfl_tls_context *(*tls_context_ref)(gfl_tls_context *ctx);
    void (*tls_context_unref)(gfl_tls_context *ctx);
    int (*tls_context_is_server)(const gfl_tls_context *ctx);
    int (*tls_context_add_sni)(gfl_tls_context *ctx, const char *name, gfl_tls_context *use);
    gfl_future *(*create_tls_connection)(gfl_loop *loop, gfl_protocol_factory factory, void *factory_ud, gfl_release_fn factory_release, const gfl_connect_options *opts, const gfl_tls_options *tls);
    gfl_future *(*create_tls_server)(gfl_loop *loop, gfl_protocol_factory factory, void *factory_ud, gfl_release_fn factory_release, const gfl_server_options *opts, const gfl_tls_options *tls);
    gfl_future *(*start_tls)(gfl_transport *t, const gfl_protocol *proto, void *ud, const gfl_tls_options *tls);
    /* ABI 1.2: releasable done callbacks, errors with a cause */
    int (*future_add_done_callback_ex)(gfl_future *f, gfl_future_callback cb, void *arg, gfl_release_fn release);
    gfl_value *(*value_error_ex)(int code, const char *type, const char *message, const char *traceback, gfl_value *cause);
    gfl_value *(*value_error_cause)(const gfl_value *v);
    /* ABI 1.3: arrays and maps, the export registry (export_function is
     * gfl_export: "export" is a C++ keyword), host pumping */
    gfl_value *(*value_array)(gfl_value *const *items, size_t n);
    gfl_value *(*value_map)(gfl_value *const *keys, gfl_value *const *values, size_t n);
    int64_t (*value_length)(const gfl_value *v);
    gfl_value *(*value_array_get)(const gfl_value *v, size_t index);
    int (*value_map_entry)(const gfl_value *v, size_t index, gfl_value **key, gfl_value **value);
    gfl_value *(*value_map_find)(const gfl_value *v, const char *key, size_t len);
    int (*value_depth)(const gfl_value *v);
    int (*export_function)(gfl_loop *loop, const char *name, gfl_plugin_function fn, gfl_plugin_async_function async_fn, void *ud, gfl_release_fn release);
    int (*unexport)(gfl_loop *loop, const char *name);
    gfl_future *(*call)(gfl_loop *loop, const char *name, gfl_value *const *args, size_t nargs);
    int (*export_count)(gfl_loop *loop);
    const char *(*export_name)(gfl_loop *loop, int index);
    int (*export_is_async)(gfl_loop *loop, const char *name);
    int (*loop_run_for)(gfl_loop *loop, double max_seconds);
    int (*loop_interrupt)(gfl_loop *loop, const char *message, gfl_value *error);
    gfl_value *(*loop_take_interrupt)(gfl_loop *loop);
    gfl_loop *(*loop_acquire)(const void *candidate);
    /* ABI 1.4 */
    int (*loop_at_run_end)(gfl_loop *loop, gfl_callback fn, void *arg);
    /* ABI 1.5: file system (globeflower_fs.h) */
    gfl_future *(*fs_open)(gfl_loop *loop, const char *path, int flags, int mode);
    gfl_future *(*fs_close)(gfl_loop *loop, int fd);
    gfl_future *(*fs_read)(gfl_loop *loop, int fd, size_t len, int64_t offset);
    gfl_future *(*fs_write)(gfl_loop *loop, int fd, const void *data, size_t len, int64_t offset);
    gfl_future *(*fs_stat)(gfl_loop *loop, const char *path);
    gfl_future *(*fs_lstat)(gfl_loop *loop, const char *path);
    gfl_future *(*fs_fstat)(gfl_loop *loop, int fd);
    gfl_future *(*fs_rename)(gfl_loop *loop, const char *from, const char *to);
    gfl_future *(*fs_unlink)(gfl_loop *loop, const char *path);
    gfl_future *(*fs_mkdir)(gfl_loop *loop, const char *path, int mode);
    gfl_future *(*fs_rmdir)(gfl_loop *loop, const char *path);
    gfl_future *(*fs_symlink)(gfl_loop *loop, const char *target, const char *linkpath);
    gfl_future *(*fs_link)(gfl_loop *loop, const char *existing, const char *newpath);
    gfl_future *(*fs_fsync)(gfl_loop *loop, int fd);
    gfl_future *(*fs_fdatasync)(gfl_loop *loop, int fd);
    gfl_future *(*fs_ftruncate)(gfl_loop *loop, int fd, int64_t length);
    gfl_future *(*fs_chmod)(gfl_loop *loop, const char *path, int mode);
    gfl_future *(*fs_chown)(gfl_loop *loop, const char *path, int64_t uid, int64_t gid);
    gfl_future *(*fs_utime)(gfl_loop *loop, const char *path, double atime, double mtime);
    gfl_future *(*fs_scandir)(gfl_loop *loop, const char *path);
    gfl_future *(*fs_readlink)(gfl_loop *loop, const char *path);
    gfl_future *(*fs_realpath)(gfl_loop *loop, const char *path);
    gfl_future *(*fs_mkdtemp)(gfl_loop *loop, const char *prefix);
    gfl_future *(*fs_copyfile)(gfl_loop *loop, const char *from, const char *to, int flags);
    gfl_future *(*fs_readfile)(gfl_loop *loop, const char *path);
    gfl_future *(*fs_writefile)(gfl_loop *loop, const char *path, const void *data, size_t len, int flags);
    int (*fs_watch)(gfl_loop *loop, const char *path, unsigned flags, gfl_fs_watch_fn callback, void *ud, gfl_release_fn release, gfl_fs_watcher **out);
    int (*fs_watch_close)(gfl_fs_watcher *w);
    const char *(*fs_watch_path)(const gfl_fs_watcher *w);
};

/* Whether the table `api` has the function `field`. */
#define GFL_API_HAS(api, field)                                                \
    ((api)->size >= offsetof(gfl_api, field) + sizeof((api)->field) &&         \
     (api)->field != NULL)

#endif
