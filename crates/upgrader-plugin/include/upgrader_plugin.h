/*
 * upgrader_plugin.h: the C ABI of upgrader step plugins (ABI version 1).
 *
 * A plugin is a shared library that exports:
 *   - const uint32_t upgrader_plugin_abi = UPGRADER_PLUGIN_ABI_VERSION;
 *       data, not a function: upgrader reads it from the file before loading it;
 *   - const upgrader_step_list upgrader_plugin_steps = { count, names };
 *       the names of its steps, listed in errors about a missing step;
 *   - int32_t upgrader_step_NAME(const upgrader_host *host);   for each step NAME,
 *       called inside the upgrade's transaction; returns UPGRADER_STATUS_OK, or calls
 *       host->fail(...) and returns UPGRADER_STATUS_ERROR.
 *
 * Only borrowed views cross the boundary: strings are (pointer, length) pairs, not
 * NUL-terminated, valid for the duration of the call that passes them; the receiver
 * copies what it keeps. Nothing is ever freed by the other side.
 *
 * The Rust definitions are upgrader_plugin::abi; a test checks that this header agrees.
 */
#ifndef UPGRADER_PLUGIN_H
#define UPGRADER_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define UPGRADER_PLUGIN_ABI_VERSION 1

#define UPGRADER_STATUS_OK 0
#define UPGRADER_STATUS_ERROR 1
#define UPGRADER_STATUS_PANIC 2

#define UPGRADER_VALUE_NULL 0
#define UPGRADER_VALUE_INT 1
#define UPGRADER_VALUE_FLOAT 2
#define UPGRADER_VALUE_TEXT 3
#define UPGRADER_VALUE_BLOB 4

#define UPGRADER_LOG_ERROR 1
#define UPGRADER_LOG_WARN 2
#define UPGRADER_LOG_INFO 3
#define UPGRADER_LOG_DEBUG 4

/* A borrowed run of bytes (UTF-8 where text is meant), not NUL-terminated. */
typedef struct upgrader_str {
    const uint8_t *ptr;
    size_t len;
} upgrader_str;

/* A value bound to a statement ('?' placeholders) or read from a row. */
typedef struct upgrader_value {
    uint32_t kind;      /* UPGRADER_VALUE_* */
    int64_t int_value;  /* UPGRADER_VALUE_INT */
    double float_value; /* UPGRADER_VALUE_FLOAT */
    upgrader_str bytes; /* UPGRADER_VALUE_TEXT, UPGRADER_VALUE_BLOB */
} upgrader_value;

/* Receives one row of a query; the cells are valid only during the call. Return 0 to
 * go on, anything else to stop the query with an error. */
typedef int32_t (*upgrader_row_fn)(void *user, const upgrader_value *cells, size_t count);

/* What upgrader offers a step. Every function returns 0 on success; on failure,
 * last_error() says why (valid until the next call). */
typedef struct upgrader_host {
    uint32_t abi_version; /* UPGRADER_PLUGIN_ABI_VERSION of the host */
    uint32_t size;        /* sizeof(upgrader_host) as the host built it */
    void *ctx;            /* pass back to every function */
    int32_t (*execute)(void *ctx, upgrader_str sql, const upgrader_value *params,
                       size_t count, uint64_t *changed);
    int32_t (*query)(void *ctx, upgrader_str sql, const upgrader_value *params,
                     size_t count, upgrader_row_fn on_row, void *user);
    upgrader_str (*last_error)(void *ctx);
    void (*log)(void *ctx, uint32_t level, upgrader_str message);
    void (*fail)(void *ctx, upgrader_str message);
} upgrader_host;

typedef int32_t (*upgrader_step_fn)(const upgrader_host *host);

typedef struct upgrader_step_list {
    size_t count;
    const upgrader_str *names;
} upgrader_step_list;

/* A view of a C string literal or NUL-terminated string. */
#define UPGRADER_STR(s) ((upgrader_str){(const uint8_t *)(s), sizeof(s) - 1})

#ifdef __cplusplus
}
#endif

#endif /* UPGRADER_PLUGIN_H */
