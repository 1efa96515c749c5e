/*
 * gfl_api_get(): every exported function is reachable through the table.
 *
 * The exported symbols come from `nm -D --defined-only` of the built library
 * (make check writes them to tests/exports.txt; $GFL_EXPORTS_FILE overrides).
 * The library is dlopen()ed ($GFL_SHLIB overrides its path) and for every
 * exported gfl_* function except gfl_api_get the address dlsym() gives must
 * be one of the table's entries. Conversely every entry must be an exported
 * gfl_* function, distinct from the others and non-NULL.
 */
#include <criterion/criterion.h>

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "globeflower.h"

#ifndef GFL_TEST_BUILDDIR
#define GFL_TEST_BUILDDIR "."
#endif

typedef void (*fnptr)(void);

#define MAX_SYMS 1024

struct exports {
    size_t n;
    char *name[MAX_SYMS];
    char type[MAX_SYMS]; /* nm's letter */
};

static struct exports exports;
static void *lib;
static const gfl_api *table;

static const char *path_from(const char *env, const char *rel, char *buf, size_t len)
{
    const char *p = getenv(env);
    if (p != NULL && *p != '\0')
        return p;
    snprintf(buf, len, "%s/%s", GFL_TEST_BUILDDIR, rel);
    return buf;
}

/* Reads `nm -D --defined-only` output: "[address] type name[@[@]version]". */
static void load_exports(struct exports *ex)
{
    char buf[4096];
    const char *path = path_from("GFL_EXPORTS_FILE", "tests/exports.txt", buf, sizeof buf);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "cannot open the export list %s (run make check, which generates it)", path);

    char line[1024];
    while (fgets(line, sizeof line, f) != NULL) {
        char *tok[3];
        int ntok = 0;
        for (char *t = strtok(line, " \t\r\n"); t != NULL && ntok < 3; t = strtok(NULL, " \t\r\n"))
            tok[ntok++] = t;
        if (ntok < 2)
            continue;
        char *type = tok[ntok - 2], *name = tok[ntok - 1];
        if (strlen(type) != 1)
            continue;
        name[strcspn(name, "@")] = '\0';
        cr_assert_lt(ex->n, (size_t)MAX_SYMS, "too many exported symbols");
        ex->type[ex->n] = type[0];
        ex->name[ex->n] = strdup(name);
        cr_assert_not_null(ex->name[ex->n]);
        ex->n++;
    }
    fclose(f);
}

static int is_function(char type)
{
    return type == 'T' || type == 'W' || type == 'i';
}

static int is_api_function(const struct exports *ex, size_t i)
{
    return is_function(ex->type[i]) && strncmp(ex->name[i], "gfl_", 4) == 0 &&
           strcmp(ex->name[i], "gfl_api_get") != 0;
}

static size_t table_count(size_t size)
{
    size_t first = offsetof(gfl_api, strerror);
    return size > first ? (size - first) / sizeof(fnptr) : 0;
}

static fnptr table_entry(const gfl_api *api, size_t i)
{
    fnptr f;
    memcpy(&f, (const char *)api + offsetof(gfl_api, strerror) + i * sizeof(fnptr), sizeof f);
    return f;
}

static void *fn_address(fnptr f)
{
    void *p;
    memcpy(&p, &f, sizeof p);
    return p;
}

/*
 * The exported API functions whose address is not in the first `size` bytes
 * of `api`. Returns how many; the first one's name goes to *first_missing.
 */
static size_t count_missing(const gfl_api *api, size_t size, const char **first_missing)
{
    size_t missing = 0, n = table_count(size);
    *first_missing = NULL;
    for (size_t i = 0; i < exports.n; i++) {
        if (!is_api_function(&exports, i))
            continue;
        dlerror();
        void *addr = dlsym(lib, exports.name[i]);
        cr_assert_not_null(addr, "dlsym(%s): %s", exports.name[i], dlerror());
        size_t j = 0;
        while (j < n && fn_address(table_entry(api, j)) != addr)
            j++;
        if (j == n) {
            if (missing++ == 0)
                *first_missing = exports.name[i];
            cr_log_info("%s is exported but not in gfl_api", exports.name[i]);
        }
    }
    return missing;
}

static void setup(void)
{
    load_exports(&exports);

    char buf[4096];
    const char *path = path_from("GFL_SHLIB", "lib/.libs/libglobeflower.so", buf, sizeof buf);
    lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    cr_assert_not_null(lib, "dlopen(%s): %s", path, dlerror());

    void *sym = dlsym(lib, "gfl_api_get");
    cr_assert_not_null(sym, "gfl_api_get is not exported");
    const gfl_api *(*get)(void);
    memcpy(&get, &sym, sizeof get);
    table = get();
    cr_assert_not_null(table, "gfl_api_get() returned NULL");
}

static void teardown(void)
{
    if (lib != NULL)
        dlclose(lib);
    for (size_t i = 0; i < exports.n; i++)
        free(exports.name[i]);
    exports.n = 0;
}

TestSuite(api_table, .init = setup, .fini = teardown);

Test(api_table, header_fields)
{
    cr_expect_eq(table->abi_major, (uint32_t)GFL_ABI_MAJOR);
    cr_expect_eq(table->abi_minor, (uint32_t)GFL_ABI_MINOR);
    cr_expect_eq(table->size, sizeof(gfl_api));
    /* The library the test links against and the dlopen()ed one are one
     * object, so there is one table. */
    cr_expect_eq(gfl_api_get(), table);
    cr_expect_eq(gfl_api_get(), gfl_api_get());
}

Test(api_table, export_list_is_sane)
{
    size_t nfuncs = 0, has_get = 0;
    for (size_t i = 0; i < exports.n; i++) {
        if (is_api_function(&exports, i))
            nfuncs++;
        if (strcmp(exports.name[i], "gfl_api_get") == 0)
            has_get = 1;
    }
    cr_assert(has_get, "gfl_api_get missing from the export list");
    cr_assert_gt(nfuncs, 1, "the export list holds no API functions");
    /* One entry per exported function: nothing missing, nothing extra. */
    cr_expect_eq(nfuncs, table_count(table->size),
                 "%zu exported functions besides gfl_api_get, %zu table entries",
                 nfuncs, table_count(table->size));
}

Test(api_table, no_null_entries)
{
    size_t n = table_count(table->size);
    cr_assert_gt(n, 0);
    cr_assert_eq(offsetof(gfl_api, strerror) + n * sizeof(fnptr), table->size,
                 "gfl_api is not header + function pointers");
    for (size_t i = 0; i < n; i++)
        cr_expect_not_null(fn_address(table_entry(table, i)), "gfl_api entry %zu is NULL", i);
}

Test(api_table, every_export_is_in_the_table)
{
    const char *first;
    size_t missing = count_missing(table, table->size, &first);
    cr_expect_eq(missing, 0, "%zu exported function(s) missing from gfl_api, first: %s",
                 missing, first ? first : "?");
}

Test(api_table, every_entry_is_an_exported_function)
{
    size_t n = table_count(table->size);
    for (size_t i = 0; i < n; i++) {
        void *addr = fn_address(table_entry(table, i));
        if (addr == NULL)
            continue; /* no_null_entries reports it */
        Dl_info info;
        cr_assert(dladdr(addr, &info) != 0, "entry %zu points outside any library", i);
        cr_expect(info.dli_saddr == addr && info.dli_sname != NULL &&
                      strncmp(info.dli_sname, "gfl_", 4) == 0,
                  "entry %zu is not an exported gfl_ function (nearest: %s)", i,
                  info.dli_sname ? info.dli_sname : "?");
        if (info.dli_sname != NULL)
            cr_expect_eq(dlsym(lib, info.dli_sname), addr, "entry %zu (%s) is not the exported symbol",
                         i, info.dli_sname);
        for (size_t j = 0; j < i; j++)
            cr_expect_neq(fn_address(table_entry(table, j)), addr,
                          "entries %zu and %zu are the same function (%s)", j, i,
                          info.dli_sname ? info.dli_sname : "?");
    }
}

/* The check itself must notice a function missing from a table. */
Test(api_table, checker_detects_a_missing_function)
{
    size_t n = table_count(table->size);
    cr_assert_gt(n, 1);
    gfl_api *copy = malloc(table->size);
    cr_assert_not_null(copy);
    const char *first;

    /* Unchanged copy: nothing missing. */
    memcpy(copy, table, table->size);
    cr_assert_eq(count_missing(copy, copy->size, &first), 0);

    /* Entry 0 (strerror) overwritten with entry 1: gfl_strerror is missing. */
    fnptr second = table_entry(table, 1);
    memcpy((char *)copy + offsetof(gfl_api, strerror), &second, sizeof second);
    cr_expect_eq(count_missing(copy, copy->size, &first), 1);
    cr_expect_str_eq(first ? first : "", "gfl_strerror");

    /* A table one entry shorter: its last function is missing. */
    memcpy(copy, table, table->size);
    Dl_info info;
    cr_assert(dladdr(fn_address(table_entry(table, n - 1)), &info) != 0);
    cr_expect_eq(count_missing(copy, copy->size - sizeof(fnptr), &first), 1);
    cr_expect_str_eq(first ? first : "", info.dli_sname ? info.dli_sname : "?");

    free(copy);
}

Test(api_table, table_calls_reach_the_core)
{
    cr_expect_eq(table->strerror, gfl_strerror);
    cr_expect_str_eq(table->strerror(GFL_EINVAL), gfl_strerror(GFL_EINVAL));
    cr_expect_str_eq(table->strerror(12345), "unknown error");
}

Test(api_table, strerror_names_every_code)
{
    static const int codes[] = {
        GFL_EPERM, GFL_ENOENT, GFL_EINTR, GFL_EIO, GFL_EBADF, GFL_EAGAIN,
        GFL_ENOMEM, GFL_EACCES, GFL_EBUSY, GFL_EEXIST, GFL_EINVAL, GFL_EMFILE,
        GFL_EPIPE, GFL_ERANGE, GFL_ENOSYS, GFL_EADDRINUSE, GFL_ECONNRESET,
        GFL_ENOTCONN, GFL_ETIMEDOUT, GFL_ECONNREFUSED, GFL_EALREADY,
        GFL_EINPROGRESS, GFL_ECANCELED, GFL_ECLOSED, GFL_EWRONGTHREAD,
        GFL_ESTATE, GFL_EPENDING, GFL_EVERSION, GFL_ETYPE,
    };
    const char *unknown = gfl_strerror(-99999);
    cr_assert_str_eq(unknown, "unknown error");
    cr_expect_str_eq(gfl_strerror(GFL_EUNKNOWN), "unknown error");
    cr_expect_str_eq(gfl_strerror(1), "unknown error");
    cr_expect_str_eq(gfl_strerror(GFL_OK), "success");
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        const char *s = gfl_strerror(codes[i]);
        cr_assert_not_null(s);
        cr_expect_str_neq(s, unknown, "code %d has no message", codes[i]);
        for (size_t j = 0; j < i; j++)
            cr_expect_str_neq(s, gfl_strerror(codes[j]), "codes %d and %d share a message",
                              codes[i], codes[j]);
    }
}
