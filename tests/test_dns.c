/*
 * DNS: gfl_getaddrinfo / gfl_getnameinfo and the address list objects.
 * No external network: numeric hosts, "localhost" from /etc/hosts, and
 * lookups that fail without asking a server.
 */
#include "stream_util.h"

#include <globeflower_datagram.h>
#include <netdb.h>

static gfl_loop *loop;

static void setup(void)
{
    loop = gfl_loop_new(NULL);
    cr_assert_not_null(loop);
}

static void teardown(void)
{
    cr_assert_eq(gfl_loop_free(loop), 0);
}

TestSuite(dns, .init = setup, .fini = teardown, .timeout = 60);

Test(dns, numeric_host_resolves_without_the_pool)
{
    gfl_future *f = gfl_getaddrinfo(loop, "127.0.0.1", "8080", AF_UNSPEC, SOCK_STREAM, 0, 0);
    cr_assert_not_null(f);
    /* Done before the loop ran: no thread hop. */
    cr_assert_eq(gfl_future_state_of(f), GFL_FUTURE_RESULT);
    void *obj;
    cr_assert_eq(gfl_value_get_object(gfl_future_value(f), gfl_addrinfo_class(), &obj), 0);
    gfl_addrinfo *ai = obj;
    cr_assert_eq(gfl_addrinfo_count(ai), 1);
    cr_assert_eq(gfl_addrinfo_family(ai, 0), AF_INET);
    cr_assert_eq(gfl_addrinfo_socktype(ai, 0), SOCK_STREAM);
    size_t len;
    const struct sockaddr_in *in = gfl_addrinfo_addr(ai, 0, &len);
    cr_assert_eq(len, sizeof *in);
    cr_assert_eq(ntohs(in->sin_port), 8080);
    cr_assert_eq(in->sin_addr.s_addr, htonl(INADDR_LOOPBACK));
    cr_assert_null(gfl_addrinfo_addr(ai, 1, &len));
    cr_assert_eq(gfl_addrinfo_family(ai, -1), GFL_EINVAL);
    gfl_future_unref(f);

    f = gfl_getaddrinfo(loop, "::1", NULL, AF_INET6, SOCK_STREAM, 0, 0);
    cr_assert_eq(gfl_future_state_of(f), GFL_FUTURE_RESULT);
    cr_assert_eq(gfl_value_get_object(gfl_future_value(f), gfl_addrinfo_class(), &obj), 0);
    cr_assert_eq(gfl_addrinfo_family(obj, 0), AF_INET6);
    gfl_future_unref(f);
}

Test(dns, localhost_through_the_pool)
{
    gfl_future *f = gfl_getaddrinfo(loop, "localhost", "http", AF_INET, SOCK_STREAM, 0, 0);
    cr_assert_not_null(f);
    RUN_UNTIL(loop, future_done(f), 10);
    cr_assert_eq(gfl_future_state_of(f), GFL_FUTURE_RESULT, "%s", gfl_value_error_message(gfl_future_value(f)));
    void *obj;
    cr_assert_eq(gfl_value_get_object(gfl_future_value(f), gfl_addrinfo_class(), &obj), 0);
    cr_assert_geq(gfl_addrinfo_count(obj), 1);
    const struct sockaddr_in *in = gfl_addrinfo_addr(obj, 0, NULL);
    cr_assert_eq(in->sin_family, AF_INET);
    cr_assert_eq(ntohs(in->sin_port), 80, "service names resolve too");
    cr_assert_eq(ntohl(in->sin_addr.s_addr) >> 24, 127);
    gfl_future_unref(f);
}

Test(dns, failure_is_a_gaierror)
{
    /* AI_NUMERICHOST with a name: fails inside getaddrinfo, no server. */
    gfl_future *f = gfl_getaddrinfo(loop, "not-a-number.invalid", "80", AF_UNSPEC, SOCK_STREAM, 0, AI_NUMERICHOST);
    cr_assert_not_null(f);
    RUN_UNTIL(loop, future_done(f), 10);
    cr_assert_eq(gfl_future_state_of(f), GFL_FUTURE_ERROR);
    gfl_value *e = gfl_future_value(f);
    cr_assert_str_eq(gfl_value_error_type(e), "gaierror");
    cr_assert_eq(gfl_value_error_code(e), GFL_ENOENT);
    gfl_future_unref(f);
    /* A bad service name. */
    f = gfl_getaddrinfo(loop, "127.0.0.1", "no-such-service-xyz", AF_UNSPEC, SOCK_STREAM, 0, 0);
    RUN_UNTIL(loop, future_done(f), 10);
    cr_assert_eq(gfl_future_state_of(f), GFL_FUTURE_ERROR);
    cr_assert_str_eq(gfl_value_error_type(gfl_future_value(f)), "gaierror");
    gfl_future_unref(f);
}

Test(dns, getnameinfo_numeric_and_pool)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(443), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    gfl_future *f = gfl_getnameinfo(loop, &a, sizeof a, NI_NUMERICHOST | NI_NUMERICSERV);
    cr_assert_eq(gfl_future_state_of(f), GFL_FUTURE_RESULT);
    void *obj;
    cr_assert_eq(gfl_value_get_object(gfl_future_value(f), gfl_nameinfo_class(), &obj), 0);
    cr_assert_str_eq(gfl_nameinfo_host(obj), "127.0.0.1");
    cr_assert_str_eq(gfl_nameinfo_service(obj), "443");
    gfl_future_unref(f);

    f = gfl_getnameinfo(loop, &a, sizeof a, NI_NUMERICHOST);
    RUN_UNTIL(loop, future_done(f), 10);
    cr_assert_eq(gfl_value_get_object(gfl_future_value(f), gfl_nameinfo_class(), &obj), 0);
    cr_assert_str_eq(gfl_nameinfo_service(obj), "https");
    gfl_future_unref(f);
}

Test(dns, addrinfo_objects_and_bad_arguments)
{
    gfl_addrinfo *ai = gfl_addrinfo_new();
    cr_assert_not_null(ai);
    struct sockaddr_in a = {.sin_family = AF_INET};
    cr_assert_eq(gfl_addrinfo_add(ai, AF_INET6, SOCK_STREAM, 0, &a, sizeof a), GFL_EINVAL, "family must match");
    cr_assert_eq(gfl_addrinfo_add(ai, AF_INET, SOCK_STREAM, 0, NULL, sizeof a), GFL_EINVAL);
    cr_assert_eq(gfl_addrinfo_add(ai, AF_INET, SOCK_STREAM, 0, &a, 100000), GFL_EINVAL);
    for (int i = 0; i < 10; i++)
        cr_assert_eq(gfl_addrinfo_add(ai, AF_INET, SOCK_STREAM, 6, &a, sizeof a), 0);
    cr_assert_eq(gfl_addrinfo_count(ai), 10);
    cr_assert_eq(gfl_addrinfo_protocol(ai, 9), 6);
    cr_assert_null(gfl_addrinfo_canonname(ai));
    gfl_value *v = gfl_value_object(gfl_addrinfo_class(), ai);
    gfl_addrinfo_unref(ai); /* the value keeps it */
    void *obj;
    cr_assert_eq(gfl_value_get_object(v, gfl_addrinfo_class(), &obj), 0);
    cr_assert_eq(gfl_addrinfo_count(obj), 10);
    cr_assert_eq(gfl_value_get_object(v, gfl_transport_class(), &obj), GFL_ETYPE);
    gfl_value_unref(v);

    cr_assert_eq(gfl_addrinfo_count(NULL), GFL_EINVAL);
    cr_assert_null(gfl_getaddrinfo(NULL, "127.0.0.1", "1", 0, 0, 0, 0));
    cr_assert_null(gfl_getaddrinfo(loop, NULL, NULL, 0, 0, 0, 0));
    cr_assert_null(gfl_getnameinfo(loop, NULL, 0, 0));
    cr_assert_null(gfl_getnameinfo(loop, &a, 1, 0));
    cr_assert_null(gfl_nameinfo_host(NULL));
}

/* glibc takes numeric services above 65535 modulo 65536: the core refuses
 * them, for lookups, connections and servers alike, with a clear error. */
static void assert_port_refused(gfl_future *f, const char *port)
{
    cr_assert_not_null(f);
    RUN_UNTIL(loop, future_done(f), 10);
    cr_assert_eq(gfl_future_state_of(f), GFL_FUTURE_ERROR, "port %s was accepted", port);
    gfl_value *e = gfl_future_value(f);
    cr_assert_eq(gfl_value_error_code(e), GFL_EINVAL);
    cr_assert_str_eq(gfl_value_error_type(e), "OverflowError");
    cr_assert_not_null(strstr(gfl_value_error_message(e), "port must be 0-65535"), "%s", gfl_value_error_message(e));
    gfl_future_unref(f);
}

Test(dns, ports_above_65535_are_refused)
{
    const char *bad[] = {"65536", "70000", "73616", "99999", "123456789012345678901234567890"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_port_refused(gfl_getaddrinfo(loop, "127.0.0.1", bad[i], AF_UNSPEC, SOCK_STREAM, 0, 0), bad[i]);
    /* The edges still resolve. */
    gfl_future *f = gfl_getaddrinfo(loop, "127.0.0.1", "65535", AF_INET, SOCK_STREAM, 0, 0);
    cr_assert_eq(gfl_future_state_of(f), GFL_FUTURE_RESULT);
    gfl_future_unref(f);
    f = gfl_getaddrinfo(loop, "127.0.0.1", "0", AF_INET, SOCK_STREAM, 0, 0);
    cr_assert_eq(gfl_future_state_of(f), GFL_FUTURE_RESULT);
    gfl_future_unref(f);
}

static int never_called_factory(void *ud, gfl_transport *t, const gfl_protocol **proto, void **pud)
{
    (void)ud, (void)t, (void)proto, (void)pud;
    cr_assert_fail("no connection may be made on a wrapped port");
    return -1;
}

static int releases;
static void count_release(void *ud)
{
    (void)ud;
    releases++;
}

Test(dns, connect_and_serve_on_ports_above_65535_fail)
{
    releases = 0;
    gfl_connect_options co = {.size = sizeof co, .host = "127.0.0.1", .port = "73616"};
    assert_port_refused(gfl_create_connection(loop, never_called_factory, NULL, count_release, &co), "73616");
    gfl_connect_options local = {.size = sizeof local, .host = "127.0.0.1", .port = "1", .local_host = "127.0.0.1",
                                 .local_port = "65536"};
    assert_port_refused(gfl_create_connection(loop, never_called_factory, NULL, count_release, &local), "65536");
    const char *hosts[] = {"127.0.0.1", NULL};
    gfl_server_options so = {.size = sizeof so, .hosts = hosts, .port = "99999"};
    assert_port_refused(gfl_create_server(loop, never_called_factory, NULL, count_release, &so), "99999");
    gfl_server_options any = {.size = sizeof any, .port = "99999"};
    assert_port_refused(gfl_create_server(loop, never_called_factory, NULL, count_release, &any), "99999");
    RUN_UNTIL(loop, releases == 4, 10);
    cr_assert_eq(releases, 4, "each factory is released exactly once");
}

static int never_called_datagram_factory(void *ud, gfl_transport *t, const gfl_datagram_protocol **proto, void **pud)
{
    (void)ud, (void)t, (void)proto, (void)pud;
    cr_assert_fail("no endpoint may be made on a wrapped port");
    return -1;
}

Test(dns, datagram_endpoints_on_ports_above_65535_fail)
{
    releases = 0;
    gfl_datagram_options local = {.size = sizeof local, .local_host = "127.0.0.1", .local_port = "70000"};
    assert_port_refused(gfl_create_datagram_endpoint(loop, never_called_datagram_factory, NULL, count_release, &local),
                        "70000");
    gfl_datagram_options remote = {.size = sizeof remote, .remote_host = "127.0.0.1", .remote_port = "65536"};
    assert_port_refused(gfl_create_datagram_endpoint(loop, never_called_datagram_factory, NULL, count_release, &remote),
                        "65536");
    RUN_UNTIL(loop, releases == 2, 10);
    cr_assert_eq(releases, 2);
}
