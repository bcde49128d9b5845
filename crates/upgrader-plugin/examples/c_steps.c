/*
 * An upgrader step plugin written in C: any language with a C ABI can write steps.
 * Build: cc -shared -fPIC -I crates/upgrader-plugin/include c_steps.c -o libc_steps.so
 * Use:   <plugin library="c_steps" method="count_items"/>
 *
 * count_items reads how many rows `items` has and records it in `item_counts`, with
 * bound parameters; every statement runs in the upgrade's transaction.
 */
#include <stdio.h>
#include <string.h>

#include "upgrader_plugin.h"

const uint32_t upgrader_plugin_abi = UPGRADER_PLUGIN_ABI_VERSION;

static const upgrader_str step_names[] = {UPGRADER_STR("count_items"), UPGRADER_STR("refuse")};
const upgrader_step_list upgrader_plugin_steps = {2, step_names};

static int32_t remember_count(void *user, const upgrader_value *cells, size_t count) {
    if (count != 1 || cells[0].kind != UPGRADER_VALUE_INT) {
        return 1;
    }
    *(int64_t *)user = cells[0].int_value;
    return 0;
}

static int32_t fail_with_host_error(const upgrader_host *host, const char *what) {
    upgrader_str why = host->last_error(host->ctx);
    char message[512];
    int n = snprintf(message, sizeof message, "%s: %.*s", what, (int)why.len, (const char *)why.ptr);
    upgrader_str view = {(const uint8_t *)message, n < 0 ? 0 : (size_t)n};
    host->fail(host->ctx, view);
    return UPGRADER_STATUS_ERROR;
}

int32_t upgrader_step_count_items(const upgrader_host *host) {
    if (host->abi_version != UPGRADER_PLUGIN_ABI_VERSION) {
        return UPGRADER_STATUS_ERROR;
    }
    int64_t items = -1;
    if (host->query(host->ctx, UPGRADER_STR("SELECT count(*) FROM items"), NULL, 0,
                    remember_count, &items) != 0) {
        return fail_with_host_error(host, "counting items");
    }
    upgrader_value params[2];
    memset(params, 0, sizeof params);
    params[0].kind = UPGRADER_VALUE_TEXT;
    params[0].bytes = UPGRADER_STR("from C; it's \"quoted\"");
    params[1].kind = UPGRADER_VALUE_INT;
    params[1].int_value = items;
    uint64_t changed = 0;
    if (host->execute(host->ctx, UPGRADER_STR("INSERT INTO item_counts (label, n) VALUES (?, ?)"),
                      params, 2, &changed) != 0) {
        return fail_with_host_error(host, "recording the count");
    }
    char line[64];
    int n = snprintf(line, sizeof line, "counted %lld items", (long long)items);
    upgrader_str message = {(const uint8_t *)line, (size_t)n};
    host->log(host->ctx, UPGRADER_LOG_INFO, message);
    return changed == 1 ? UPGRADER_STATUS_OK : UPGRADER_STATUS_ERROR;
}

/* Fails on purpose, with its own message. */
int32_t upgrader_step_refuse(const upgrader_host *host) {
    host->fail(host->ctx, UPGRADER_STR("the C step refuses: items are not ready"));
    return UPGRADER_STATUS_ERROR;
}
