/*
 * A short tour of the globeflower loop: what `./quickstart.sh` runs.
 *
 *   1. timers fire in deadline order, whatever order they were scheduled in
 *   2. a worker thread hands its result back with gfl_call_soon_threadsafe
 *   3. a task (a C coroutine driven by the core) awaits a future that a
 *      timer resolves, then a job run in the thread pool
 *   4. a signal is caught and delivered as an ordinary loop callback
 *   5. a TCP echo server and client (asyncio's protocol/transport model)
 *   6. a subprocess (openssl) makes a certificate, then the same echo over
 *      TLS with the certificate verified and the hostname checked
 */
#include <globeflower.h>

#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static gfl_loop *loop;
static double started;

static void say(const char *what)
{
    printf("  [%6.3f s] %s\n", gfl_loop_time(loop) - started, what);
    fflush(stdout);
}

/* ---- 1. timers ---- */

static int timers_fired;

static void timer_fired(void *arg)
{
    say(arg);
    timers_fired++;
}

/* ---- 2. a thread hands work back ---- */

static char thread_result[64];
static int thread_result_arrived; /* only touched on the loop thread */

static void thread_done(void *arg)
{
    (void)arg;
    say(thread_result);
    thread_result_arrived = 1;
}

static void *worker_thread(void *arg)
{
    (void)arg;
    long sum = 0;
    for (long i = 1; i <= 1000000; i++)
        sum += i;
    snprintf(thread_result, sizeof thread_result, "thread: sum(1..1e6) = %ld, handed back safely", sum);
    /* The only call allowed from another thread; it wakes the loop. */
    gfl_call_soon_threadsafe(loop, thread_done, NULL);
    return NULL;
}

/* ---- 3. a task awaiting futures ---- */

static void resolve_with_answer(void *arg)
{
    gfl_future *f = arg;
    gfl_value *v = gfl_value_int(42);
    gfl_future_set_result(f, v);
    gfl_value_unref(v);
    gfl_future_unref(f);
}

static gfl_value *count_primes(void *arg)
{
    (void)arg;
    int64_t count = 0;
    for (int n = 2; n < 200000; n++) {
        int prime = 1;
        for (int d = 2; d * d <= n; d++)
            if (n % d == 0) {
                prime = 0;
                break;
            }
        count += prime;
    }
    return gfl_value_int(count);
}

/* The coroutine's state: which await it is at. */
struct tour_coroutine {
    int stage;
    char line[96];
};

static void tour_step(gfl_task *task, void *ud, gfl_value *value, gfl_value *error)
{
    struct tour_coroutine *co = ud;
    int64_t n = 0;
    if (error) {
        gfl_task_fail(task, error);
        return;
    }
    switch (co->stage++) {
    case 0: {
        say("task: started, awaiting a future that a timer resolves in 0.3 s");
        gfl_future *f = gfl_future_new(loop);
        gfl_call_later(loop, 0.3, resolve_with_answer, gfl_future_ref(f));
        gfl_task_await(task, f);
        gfl_future_unref(f); /* the task holds its own reference while waiting */
        return;
    }
    case 1: {
        gfl_value_get_int(value, &n);
        snprintf(co->line, sizeof co->line, "task: the future resolved with %lld", (long long)n);
        say(co->line);
        say("task: awaiting a job in the thread pool (counting primes below 200000)");
        gfl_future *job = gfl_run_in_executor(loop, count_primes, NULL, NULL);
        gfl_task_await(task, job);
        gfl_future_unref(job);
        return;
    }
    default:
        gfl_value_get_int(value, &n);
        snprintf(co->line, sizeof co->line, "task: the pool found %lld primes; returning", (long long)n);
        say(co->line);
        gfl_task_return(task, value);
        return;
    }
}

static void task_finished(gfl_future *f, void *arg)
{
    (void)arg;
    int64_t n = 0;
    gfl_value_get_int(gfl_future_value(f), &n);
    char line[80];
    snprintf(line, sizeof line, "done callback: the task's result is %lld", (long long)n);
    say(line);
}

/* ---- 4. a signal ---- */

static void on_sigusr1(void *arg)
{
    (void)arg;
    say("signal: SIGUSR1 caught, delivered as a normal callback (not in signal context)");
    gfl_loop_stop(loop);
}

static void send_signal(void *arg)
{
    (void)arg;
    say("sending SIGUSR1 to ourselves");
    kill(getpid(), SIGUSR1);
}

/* ---- 5 and 6. TCP and TLS ---- */

/* Pumps the loop until `f` is done; returns its value (borrowed). Fine for a
 * linear demo; real code reacts in callbacks or tasks instead. */
static gfl_value *wait_for(gfl_future *f)
{
    while (gfl_future_state_of(f) == GFL_FUTURE_PENDING)
        gfl_loop_run_once(loop, 1.0);
    return gfl_future_value(f);
}

static void *object_of(gfl_value *v, const gfl_host_class *cls, const char *what)
{
    void *object = NULL;
    if (gfl_value_get_object(v, cls, &object) < 0) {
        fprintf(stderr, "tour: %s failed: %s\n", what, v ? gfl_value_error_message(v) : "?");
        exit(1);
    }
    return object;
}

/* The server side: echo whatever arrives. */
static void echo_data(gfl_transport *t, const void *data, size_t len, void *ud)
{
    (void)ud;
    gfl_transport_write(t, data, len);
}

static const gfl_protocol echo_protocol = {.size = sizeof echo_protocol, .data_received = echo_data};

static int echo_factory(void *fud, gfl_transport *t, const gfl_protocol **proto, void **ud)
{
    (void)fud;
    (void)t;
    *proto = &echo_protocol;
    *ud = NULL;
    return 0;
}

/* The client side: send a greeting, print the echo, close. */
struct greeter {
    const char *greeting;
    const char *label;
    int done;
};

static void greeter_made(gfl_transport *t, void *ud)
{
    struct greeter *g = ud;
    gfl_transport_write(t, g->greeting, strlen(g->greeting));
}

static void greeter_data(gfl_transport *t, const void *data, size_t len, void *ud)
{
    struct greeter *g = ud;
    char line[160];
    snprintf(line, sizeof line, "%s client: the server echoed \"%.*s\"", g->label, (int)len, (const char *)data);
    say(line);
    gfl_transport_close(t);
}

static void greeter_lost(gfl_transport *t, gfl_value *error, void *ud)
{
    (void)t;
    (void)error;
    ((struct greeter *)ud)->done = 1;
}

static const gfl_protocol greeter_protocol = {
    .size = sizeof greeter_protocol,
    .connection_made = greeter_made,
    .data_received = greeter_data,
    .connection_lost = greeter_lost,
};

static int greeter_factory(void *fud, gfl_transport *t, const gfl_protocol **proto, void **ud)
{
    (void)t;
    *proto = &greeter_protocol;
    *ud = fud;
    return 0;
}

/* Starts an echo server on 127.0.0.1 (any free port); `tls` may be NULL. */
static gfl_server *start_echo_server(const gfl_tls_options *tls, char *port, size_t port_size)
{
    const char *hosts[] = {"127.0.0.1", NULL};
    gfl_server_options opts = {.size = sizeof opts, .hosts = hosts, .port = "0"};
    gfl_future *f = tls ? gfl_create_tls_server(loop, echo_factory, NULL, NULL, &opts, tls)
                        : gfl_create_server(loop, echo_factory, NULL, NULL, &opts);
    gfl_server *server = gfl_server_ref(object_of(wait_for(f), gfl_server_class(), "create_server"));
    gfl_future_unref(f);
    struct sockaddr_in addr;
    size_t len = sizeof addr;
    gfl_server_get_sockaddr(server, 0, &addr, &len);
    snprintf(port, port_size, "%u", ntohs(addr.sin_port));
    return server;
}

static void greet(const char *label, const char *greeting, const char *port, const gfl_tls_options *tls)
{
    struct greeter g = {.greeting = greeting, .label = label};
    gfl_connect_options opts = {.size = sizeof opts, .host = "127.0.0.1", .port = port};
    gfl_future *f = tls ? gfl_create_tls_connection(loop, greeter_factory, &g, NULL, &opts, tls)
                        : gfl_create_connection(loop, greeter_factory, &g, NULL, &opts);
    gfl_transport *t = object_of(wait_for(f), gfl_transport_class(), "connect");
    if (tls) {
        gfl_value *version = gfl_transport_get_extra_info(t, "tls_version");
        gfl_value *cipher = gfl_transport_get_extra_info(t, "cipher");
        const char *v = "?", *c = "?";
        gfl_value_get_bytes(version, &v, NULL);
        gfl_value_get_bytes(cipher, &c, NULL);
        char line[160];
        snprintf(line, sizeof line, "TLS client: certificate verified for \"localhost\", %s, %s", v, c);
        say(line);
        gfl_value_unref(version);
        gfl_value_unref(cipher);
    }
    gfl_future_unref(f);
    while (!g.done)
        gfl_loop_run_once(loop, 1.0);
}

static void close_server(gfl_server *server)
{
    gfl_server_close(server);
    gfl_future *closed = gfl_server_wait_closed(server);
    wait_for(closed);
    gfl_future_unref(closed);
    gfl_server_unref(server);
}

/* A subprocess protocol that needs no callbacks: output goes to /dev/null. */
static const gfl_subprocess_protocol quiet_protocol = {.size = sizeof quiet_protocol};

static int quiet_factory(void *fud, gfl_transport *t, const gfl_subprocess_protocol **proto, void **ud)
{
    (void)fud;
    (void)t;
    *proto = &quiet_protocol;
    *ud = NULL;
    return 0;
}

/* Runs a program with its output discarded; returns its exit status. */
static int run_quietly(const char *const *argv)
{
    gfl_subprocess_options opts = {
        .size = sizeof opts,
        .argv = argv,
        .stdio = {GFL_STDIO_DEVNULL, GFL_STDIO_DEVNULL, GFL_STDIO_DEVNULL},
    };
    gfl_future *started = gfl_subprocess_exec(loop, quiet_factory, NULL, NULL, &opts);
    if (!started)
        return -1;
    gfl_transport *t = object_of(wait_for(started), gfl_transport_class(), "subprocess");
    gfl_future *exited = gfl_subprocess_wait(t);
    int64_t status = -1;
    gfl_value_get_int(wait_for(exited), &status);
    gfl_future_unref(exited);
    gfl_future_unref(started);
    return (int)status;
}

static void tcp_and_tls(void)
{
    char port[16];
    gfl_server *server = start_echo_server(NULL, port, sizeof port);
    char line[96];
    snprintf(line, sizeof line, "TCP server: listening on 127.0.0.1:%s", port);
    say(line);
    greet("TCP", "hello over TCP", port, NULL);
    close_server(server);

    printf("6. a subprocess makes a certificate, then TLS with verification on:\n");
    char dir[] = "/tmp/gfl-tour-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("tour: mkdtemp");
        return;
    }
    char cert[64], key[64];
    snprintf(cert, sizeof cert, "%s/cert.pem", dir);
    snprintf(key, sizeof key, "%s/key.pem", dir);
    const char *openssl[] = {"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                             "-nodes", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                             "-days", "1", "-keyout", key, "-out", cert, NULL};
    int status = run_quietly(openssl);
    snprintf(line, sizeof line, "subprocess: openssl req -x509 ... exited with status %d", status);
    say(line);
    if (status == 0) {
        gfl_tls_context_options server_opts = {.size = sizeof server_opts, .server = 1, .cert_file = cert, .key_file = key};
        gfl_tls_context_options client_opts = {.size = sizeof client_opts, .ca_file = cert};
        gfl_tls_context *server_ctx = gfl_tls_context_new(&server_opts, NULL);
        gfl_tls_context *client_ctx = gfl_tls_context_new(&client_opts, NULL);
        if (server_ctx && client_ctx) {
            gfl_tls_options server_tls = {.size = sizeof server_tls, .context = server_ctx};
            gfl_tls_options client_tls = {.size = sizeof client_tls, .context = client_ctx, .server_hostname = "localhost"};
            server = start_echo_server(&server_tls, port, sizeof port);
            snprintf(line, sizeof line, "TLS server: listening on 127.0.0.1:%s", port);
            say(line);
            greet("TLS", "hello over TLS", port, &client_tls);
            close_server(server);
        }
        gfl_tls_context_unref(server_ctx);
        gfl_tls_context_unref(client_ctx);
    }
    unlink(cert);
    unlink(key);
    rmdir(dir);
}

int main(void)
{
    loop = gfl_loop_new(NULL);
    if (!loop) {
        fprintf(stderr, "tour: cannot create a loop\n");
        return 1;
    }
    started = gfl_loop_time(loop);
    printf("globeflower tour\n");

    printf("1. timers, scheduled as 0.2 s, 0.1 s, 0.15 s, fire in deadline order:\n");
    gfl_call_later(loop, 0.2, timer_fired, "timer: 0.2 s");
    gfl_call_later(loop, 0.1, timer_fired, "timer: 0.1 s");
    gfl_call_later(loop, 0.15, timer_fired, "timer: 0.15 s");
    gfl_handle cancelled = gfl_call_later(loop, 0.12, timer_fired, "timer: cancelled (never printed)");
    gfl_handle_cancel(loop, cancelled);
    while (timers_fired < 3)
        gfl_loop_run_once(loop, -1); /* sleeps until the next timer */

    printf("2. a worker thread hands its result back:\n");
    pthread_t thread;
    pthread_create(&thread, NULL, worker_thread, NULL);
    while (!thread_result_arrived)
        gfl_loop_run_once(loop, 1.0);
    pthread_join(thread, NULL);

    printf("3. a task awaits a future, then the thread pool:\n");
    struct tour_coroutine co = {0};
    gfl_task *task = gfl_task_new(loop, tour_step, &co, NULL);
    gfl_future_add_done_callback(gfl_task_future(task), task_finished, NULL);
    while (gfl_future_state_of(gfl_task_future(task)) == GFL_FUTURE_PENDING)
        gfl_loop_run_once(loop, 1.0);
    gfl_loop_run_once(loop, 0); /* the done callback */
    gfl_task_unref(task);

    printf("4. signals:\n");
    gfl_add_signal_handler(loop, SIGUSR1, on_sigusr1, NULL);
    gfl_call_later(loop, 0.05, send_signal, NULL);
    gfl_loop_run(loop); /* until the signal handler stops it */

    printf("5. TCP: an echo server and a client:\n");
    tcp_and_tls();

    gfl_loop_free(loop);
    printf("tour finished.\n");
    return 0;
}
