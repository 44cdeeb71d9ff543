/*
 * The Waraka plugin SDK for C: the exports of the `hooks` and
 * `outbound-hooks` interfaces, which convert the WIT values to
 * NUL-terminated strings and call the plugin's `waraka_hook_*` functions,
 * and the helpers declared in waraka.h.
 */
#include "waraka.h"

#include <stdio.h>

extern const char *const waraka_plugin_name;
extern const char *const waraka_plugin_version;

/* Weak declarations: a hook the plugin does not define is a null address,
 * so describe lists exactly the defined ones and the rest answer `cont`. */
#define WEAK __attribute__((weak))
WEAK void waraka_hook_connect(waraka_verdict_t *verdict);
WEAK void waraka_hook_helo(const char *host, waraka_verdict_t *verdict);
WEAK void waraka_hook_ehlo(const char *host, waraka_verdict_t *verdict);
WEAK void waraka_hook_capabilities(waraka_lines_t *keywords);
WEAK void waraka_hook_auth(const waraka_auth_attempt_t *attempt, waraka_verdict_t *verdict);
WEAK void waraka_hook_unrecognized_command(const char *verb, const char *args, waraka_verdict_t *verdict);
WEAK void waraka_hook_mail(const waraka_address_t *sender, waraka_verdict_t *verdict);
WEAK void waraka_hook_rcpt(const waraka_address_t *recipient, waraka_verdict_t *verdict);
WEAK void waraka_hook_rcpt_ok(const waraka_address_t *recipient, waraka_verdict_t *verdict);
WEAK void waraka_hook_data(waraka_verdict_t *verdict);
WEAK void waraka_hook_data_post(waraka_verdict_t *verdict);
WEAK void waraka_hook_max_data_exceeded(waraka_verdict_t *verdict);
WEAK void waraka_hook_queue(waraka_verdict_t *verdict);
WEAK void waraka_hook_queue_outbound(waraka_verdict_t *verdict);
WEAK void waraka_hook_queue_ok(const char *queue_id);
WEAK void waraka_hook_reset_transaction(void);
WEAK void waraka_hook_disconnect(void);
WEAK void waraka_hook_deny(const waraka_denial_t *denial, waraka_verdict_t *verdict);
WEAK void waraka_hook_send_email(const waraka_delivery_t *delivery, waraka_send_decision_t *decision);
WEAK void waraka_hook_get_mx(const waraka_delivery_t *delivery, waraka_next_hops_t *hops);
WEAK bool waraka_hook_deferred(const waraka_delivery_t *delivery, const waraka_failures_t *failures,
                               uint32_t retry_in, uint32_t *wait);
WEAK bool waraka_hook_bounce(const waraka_delivery_t *delivery, const waraka_failures_t *failures);
WEAK void waraka_hook_delivered(const waraka_delivery_t *delivery, const waraka_lines_t *recipients,
                                const char *host, const char *reply);

/* ---- strings ---- */

static char *dup_n(const uint8_t *ptr, size_t len) {
    char *text = malloc(len + 1);
    if (text == NULL)
        abort();
    memcpy(text, ptr, len);
    text[len] = '\0';
    return text;
}

char *waraka_strdup_wit(const plugin_string_t *text) { return dup_n(text->ptr, text->len); }

plugin_string_t waraka_str(const char *text) { return (plugin_string_t){(uint8_t *)text, strlen(text)}; }

static char *option_dup(const plugin_option_string_t *text) {
    return text->is_some ? waraka_strdup_wit(&text->val) : NULL;
}

/* printf into a new string. */
static char *format_v(const char *format, va_list args) {
    va_list again;
    va_copy(again, args);
    int len = vsnprintf(NULL, 0, format, again);
    va_end(again);
    if (len < 0)
        len = 0;
    char *text = malloc((size_t)len + 1);
    if (text == NULL)
        abort();
    vsnprintf(text, (size_t)len + 1, format, args);
    return text;
}

void waraka_lines_push(waraka_lines_t *lines, const char *line) {
    char **grown = realloc(lines->ptr, (lines->len + 1) * sizeof(char *));
    if (grown == NULL)
        abort();
    lines->ptr = grown;
    lines->ptr[lines->len++] = strdup(line);
}

void waraka_lines_free(waraka_lines_t *lines) {
    for (size_t i = 0; i < lines->len; i++)
        free(lines->ptr[i]);
    free(lines->ptr);
    lines->ptr = NULL;
    lines->len = 0;
}

/* Takes a WIT list of strings into C strings, freeing the WIT list. */
static waraka_lines_t lines_from_wit(plugin_list_string_t *list) {
    waraka_lines_t lines = {0};
    for (size_t i = 0; i < list->len; i++) {
        char *line = waraka_strdup_wit(&list->ptr[i]);
        waraka_lines_push(&lines, line);
        free(line);
    }
    plugin_list_string_free(list);
    return lines;
}

/* ---- values handed to hooks ---- */

static waraka_address_t address_from_wit(const waraka_plugin_types_address_t *wit) {
    waraka_address_t address = {
        .local_part = waraka_strdup_wit(&wit->local_part),
        .domain = waraka_strdup_wit(&wit->domain),
        .params = calloc(wit->params.len + 1, sizeof(waraka_param_t)),
        .params_len = wit->params.len,
    };
    for (size_t i = 0; i < wit->params.len; i++) {
        address.params[i].key = waraka_strdup_wit(&wit->params.ptr[i].key);
        address.params[i].value = option_dup(&wit->params.ptr[i].value);
    }
    return address;
}

static void address_free(waraka_address_t *address) {
    for (size_t i = 0; i < address->params_len; i++) {
        free(address->params[i].key);
        free(address->params[i].value);
    }
    free(address->params);
    free(address->local_part);
    free(address->domain);
}

char *waraka_address_string(const waraka_address_t *address) {
    if (address->domain[0] == '\0')
        return strdup(address->local_part);
    size_t len = strlen(address->local_part) + strlen(address->domain) + 2;
    char *text = malloc(len);
    if (text == NULL)
        abort();
    snprintf(text, len, "%s@%s", address->local_part, address->domain);
    return text;
}

/* ---- verdicts ---- */

static void set_verdict(waraka_verdict_t *verdict, uint8_t tag, unsigned code, const char *enhanced,
                        const char *format, va_list args) {
    waraka_plugin_types_verdict_free(verdict);
    verdict->tag = tag;
    /* Every non-cont case of the union is an option<reply> at one place. */
    waraka_plugin_types_option_reply_t *reply = &verdict->val.ok;
    memset(reply, 0, sizeof *reply);
    if (code == 0 && enhanced == NULL && format == NULL)
        return;
    reply->is_some = true;
    reply->val.code = (uint16_t)code;
    if (enhanced != NULL) {
        reply->val.enhanced.is_some = true;
        plugin_string_dup(&reply->val.enhanced.val, enhanced);
    }
    if (format == NULL)
        return;
    char *text = format_v(format, args);
    size_t count = 1;
    for (const char *c = text; *c; c++)
        count += *c == '\n';
    reply->val.lines.ptr = calloc(count, sizeof(plugin_string_t));
    const char *line = text;
    for (size_t i = 0; i < count; i++) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        plugin_string_dup_n(&reply->val.lines.ptr[i], line, len);
        line += len + 1;
    }
    reply->val.lines.len = count;
    free(text);
}

#define VERDICT_HELPER(fn, TAG)                                                                      \
    void fn(waraka_verdict_t *verdict, unsigned code, const char *enhanced, const char *format, ...) { \
        va_list args;                                                                                \
        va_start(args, format);                                                                      \
        set_verdict(verdict, WARAKA_PLUGIN_TYPES_VERDICT_##TAG, code, enhanced, format, args);      \
        va_end(args);                                                                                \
    }
VERDICT_HELPER(waraka_ok, OK)
VERDICT_HELPER(waraka_deny, DENY)
VERDICT_HELPER(waraka_denysoft, DENYSOFT)
VERDICT_HELPER(waraka_deny_disconnect, DENY_DISCONNECT)
VERDICT_HELPER(waraka_denysoft_disconnect, DENYSOFT_DISCONNECT)
VERDICT_HELPER(waraka_disconnect, DISCONNECT)

/* ---- host calls ---- */

void waraka_log(waraka_plugin_log_level_t level, const char *format, ...) {
    va_list args;
    va_start(args, format);
    char *text = format_v(format, args);
    va_end(args);
    plugin_string_t message = waraka_str(text);
    waraka_plugin_log_log(level, &message);
    free(text);
}

char *waraka_note_get(waraka_scope_t scope, const char *key) {
    plugin_string_t wit_key = waraka_str(key), value;
    if (!waraka_plugin_notes_get((waraka_plugin_notes_scope_t)scope, &wit_key, &value))
        return NULL;
    char *text = waraka_strdup_wit(&value);
    plugin_string_free(&value);
    return text;
}

bool waraka_note_set(waraka_scope_t scope, const char *key, const char *value) {
    plugin_string_t wit_key = waraka_str(key), wit_value = waraka_str(value);
    waraka_plugin_notes_error_t error;
    if (waraka_plugin_notes_set((waraka_plugin_notes_scope_t)scope, &wit_key, &wit_value, &error))
        return true;
    waraka_plugin_notes_error_free(&error);
    return false;
}

bool waraka_note_remove(waraka_scope_t scope, const char *key) {
    plugin_string_t wit_key = waraka_str(key);
    return waraka_plugin_notes_remove((waraka_plugin_notes_scope_t)scope, &wit_key);
}

bool waraka_config_lines(const char *name, waraka_lines_t *lines) {
    plugin_string_t wit_name = waraka_str(name);
    plugin_list_string_t list;
    waraka_plugin_config_error_t error;
    *lines = (waraka_lines_t){0};
    if (!waraka_plugin_config_lines(&wit_name, &list, &error)) {
        waraka_plugin_config_error_free(&error);
        return false;
    }
    *lines = lines_from_wit(&list);
    return true;
}

char *waraka_config_read(const char *name) {
    plugin_string_t wit_name = waraka_str(name);
    plugin_option_string_t text;
    waraka_plugin_config_error_t error;
    if (!waraka_plugin_config_read(&wit_name, &text, &error)) {
        waraka_plugin_config_error_free(&error);
        return NULL;
    }
    char *copy = option_dup(&text);
    plugin_option_string_free(&text);
    return copy;
}

/* `text` without leading and trailing blanks, in place. */
static char *trim(char *text) {
    while (*text == ' ' || *text == '\t')
        text++;
    char *end = text + strlen(text);
    while (end > text && (end[-1] == ' ' || end[-1] == '\t'))
        *--end = '\0';
    return text;
}

char *waraka_setting(const char *name, const char *key) {
    waraka_lines_t lines;
    char *value = NULL;
    waraka_config_lines(name, &lines);
    for (size_t i = 0; i < lines.len && value == NULL; i++) {
        char *equals = strchr(lines.ptr[i], '=');
        if (equals == NULL)
            continue;
        *equals = '\0';
        if (strcmp(trim(lines.ptr[i]), key) == 0)
            value = strdup(trim(equals + 1));
    }
    waraka_lines_free(&lines);
    return value;
}

/* ---- the exported hooks ---- */

void exports_waraka_plugin_hooks_describe(exports_waraka_plugin_hooks_plugin_info_t *ret) {
    const struct {
        const char *name;
        bool defined;
    } hooks[] = {
        {"connect", waraka_hook_connect != NULL},
        {"helo", waraka_hook_helo != NULL},
        {"ehlo", waraka_hook_ehlo != NULL},
        {"capabilities", waraka_hook_capabilities != NULL},
        {"auth", waraka_hook_auth != NULL},
        {"unrecognized-command", waraka_hook_unrecognized_command != NULL},
        {"mail", waraka_hook_mail != NULL},
        {"rcpt", waraka_hook_rcpt != NULL},
        {"rcpt-ok", waraka_hook_rcpt_ok != NULL},
        {"data", waraka_hook_data != NULL},
        {"data-post", waraka_hook_data_post != NULL},
        {"max-data-exceeded", waraka_hook_max_data_exceeded != NULL},
        {"queue", waraka_hook_queue != NULL},
        {"queue-outbound", waraka_hook_queue_outbound != NULL},
        {"queue-ok", waraka_hook_queue_ok != NULL},
        {"reset-transaction", waraka_hook_reset_transaction != NULL},
        {"disconnect", waraka_hook_disconnect != NULL},
        {"deny", waraka_hook_deny != NULL},
        {"send-email", waraka_hook_send_email != NULL},
        {"get-mx", waraka_hook_get_mx != NULL},
        {"deferred", waraka_hook_deferred != NULL},
        {"bounce", waraka_hook_bounce != NULL},
        {"delivered", waraka_hook_delivered != NULL},
    };
    size_t count = sizeof hooks / sizeof hooks[0];
    plugin_string_dup(&ret->name, waraka_plugin_name);
    plugin_string_dup(&ret->version, waraka_plugin_version);
    ret->hooks.ptr = calloc(count, sizeof(plugin_string_t));
    ret->hooks.len = 0;
    for (size_t i = 0; i < count; i++)
        if (hooks[i].defined)
            plugin_string_dup(&ret->hooks.ptr[ret->hooks.len++], hooks[i].name);
}

#define VERDICT_HOOK(hook)                                                      \
    void exports_waraka_plugin_hooks_##hook(exports_waraka_plugin_hooks_verdict_t *ret) { \
        ret->tag = WARAKA_PLUGIN_TYPES_VERDICT_CONT;                              \
        if (waraka_hook_##hook)                                                   \
            waraka_hook_##hook(ret);                                              \
    }
VERDICT_HOOK(connect)
VERDICT_HOOK(data)
VERDICT_HOOK(data_post)
VERDICT_HOOK(max_data_exceeded)
VERDICT_HOOK(queue)
VERDICT_HOOK(queue_outbound)

#define STRING_HOOK(hook)                                                                   \
    void exports_waraka_plugin_hooks_##hook(plugin_string_t *arg, exports_waraka_plugin_hooks_verdict_t *ret) { \
        ret->tag = WARAKA_PLUGIN_TYPES_VERDICT_CONT;                                          \
        char *text = waraka_strdup_wit(arg);                                                  \
        plugin_string_free(arg);                                                              \
        if (waraka_hook_##hook)                                                               \
            waraka_hook_##hook(text, ret);                                                    \
        free(text);                                                                           \
    }
STRING_HOOK(helo)
STRING_HOOK(ehlo)

#define ADDRESS_HOOK(hook)                                                                                   \
    void exports_waraka_plugin_hooks_##hook(exports_waraka_plugin_hooks_address_t *arg,                      \
                                            exports_waraka_plugin_hooks_verdict_t *ret) {                    \
        ret->tag = WARAKA_PLUGIN_TYPES_VERDICT_CONT;                                                           \
        waraka_address_t address = address_from_wit(arg);                                                     \
        waraka_plugin_types_address_free(arg);                                                                 \
        if (waraka_hook_##hook)                                                                                \
            waraka_hook_##hook(&address, ret);                                                                 \
        address_free(&address);                                                                                \
    }
ADDRESS_HOOK(mail)
ADDRESS_HOOK(rcpt)
ADDRESS_HOOK(rcpt_ok)

void exports_waraka_plugin_hooks_capabilities(plugin_list_string_t *ret) {
    waraka_lines_t keywords = {0};
    if (waraka_hook_capabilities)
        waraka_hook_capabilities(&keywords);
    ret->ptr = calloc(keywords.len + 1, sizeof(plugin_string_t));
    ret->len = keywords.len;
    for (size_t i = 0; i < keywords.len; i++)
        plugin_string_dup(&ret->ptr[i], keywords.ptr[i]);
    waraka_lines_free(&keywords);
}

void exports_waraka_plugin_hooks_auth(exports_waraka_plugin_hooks_auth_attempt_t *arg,
                                      exports_waraka_plugin_hooks_verdict_t *ret) {
    ret->tag = WARAKA_PLUGIN_TYPES_VERDICT_CONT;
    waraka_auth_attempt_t attempt = {
        .mechanism = waraka_strdup_wit(&arg->mechanism),
        .user = waraka_strdup_wit(&arg->user),
        .secret = waraka_strdup_wit(&arg->secret),
        .authzid = option_dup(&arg->authzid),
        .challenge = option_dup(&arg->challenge),
    };
    waraka_plugin_types_auth_attempt_free(arg);
    if (waraka_hook_auth)
        waraka_hook_auth(&attempt, ret);
    if (attempt.secret != NULL)
        memset(attempt.secret, 0, strlen(attempt.secret));
    free(attempt.mechanism);
    free(attempt.user);
    free(attempt.secret);
    free(attempt.authzid);
    free(attempt.challenge);
}

void exports_waraka_plugin_hooks_unrecognized_command(plugin_string_t *verb, plugin_string_t *args,
                                                      exports_waraka_plugin_hooks_verdict_t *ret) {
    ret->tag = WARAKA_PLUGIN_TYPES_VERDICT_CONT;
    char *verb_text = waraka_strdup_wit(verb), *args_text = waraka_strdup_wit(args);
    plugin_string_free(verb);
    plugin_string_free(args);
    if (waraka_hook_unrecognized_command)
        waraka_hook_unrecognized_command(verb_text, args_text, ret);
    free(verb_text);
    free(args_text);
}

void exports_waraka_plugin_hooks_queue_ok(plugin_string_t *queue_id) {
    char *text = waraka_strdup_wit(queue_id);
    plugin_string_free(queue_id);
    if (waraka_hook_queue_ok)
        waraka_hook_queue_ok(text);
    free(text);
}

void exports_waraka_plugin_hooks_reset_transaction(void) {
    if (waraka_hook_reset_transaction)
        waraka_hook_reset_transaction();
}

void exports_waraka_plugin_hooks_disconnect(void) {
    if (waraka_hook_disconnect)
        waraka_hook_disconnect();
}

void exports_waraka_plugin_hooks_deny(exports_waraka_plugin_hooks_denial_t *arg,
                                      exports_waraka_plugin_hooks_verdict_t *ret) {
    ret->tag = WARAKA_PLUGIN_TYPES_VERDICT_CONT;
    waraka_denial_t denial = {
        .hook = waraka_strdup_wit(&arg->hook),
        .plugin = waraka_strdup_wit(&arg->plugin),
        .verdict = &arg->verdict,
    };
    if (waraka_hook_deny)
        waraka_hook_deny(&denial, ret);
    free(denial.hook);
    free(denial.plugin);
    waraka_plugin_types_denial_free(arg);
}

/* ---- the exported outbound hooks ---- */

typedef exports_waraka_plugin_outbound_hooks_delivery_t wit_delivery_t;
typedef exports_waraka_plugin_outbound_hooks_list_recipient_failure_t wit_failures_t;

/* Takes a WIT delivery into C strings, freeing it. */
static waraka_delivery_t delivery_from_wit(wit_delivery_t *wit) {
    waraka_delivery_t delivery = {
        .id = waraka_strdup_wit(&wit->id),
        .domain = waraka_strdup_wit(&wit->domain),
        .sender = waraka_strdup_wit(&wit->sender),
        .recipients = lines_from_wit(&wit->recipients),
        .attempts = wit->attempts,
        .arrival_ms = wit->arrival_ms,
    };
    plugin_string_free(&wit->id);
    plugin_string_free(&wit->domain);
    plugin_string_free(&wit->sender);
    return delivery;
}

static void delivery_free(waraka_delivery_t *delivery) {
    free(delivery->id);
    free(delivery->domain);
    free(delivery->sender);
    waraka_lines_free(&delivery->recipients);
}

/* Takes a WIT list of failures into C strings, freeing it. */
static waraka_failures_t failures_from_wit(wit_failures_t *wit) {
    waraka_failures_t failures = {calloc(wit->len + 1, sizeof(waraka_failure_t)), wit->len};
    for (size_t i = 0; i < wit->len; i++) {
        failures.ptr[i].recipient = waraka_strdup_wit(&wit->ptr[i].recipient);
        failures.ptr[i].status = waraka_strdup_wit(&wit->ptr[i].status);
        failures.ptr[i].diagnostic = waraka_strdup_wit(&wit->ptr[i].diagnostic);
    }
    exports_waraka_plugin_outbound_hooks_list_recipient_failure_free(wit);
    return failures;
}

static void failures_free(waraka_failures_t *failures) {
    for (size_t i = 0; i < failures->len; i++) {
        free(failures->ptr[i].recipient);
        free(failures->ptr[i].status);
        free(failures->ptr[i].diagnostic);
    }
    free(failures->ptr);
}

void waraka_delay(waraka_send_decision_t *decision, uint32_t seconds) {
    decision->tag = EXPORTS_WARAKA_PLUGIN_OUTBOUND_HOOKS_SEND_DECISION_DELAY;
    decision->val.delay = seconds;
}

void waraka_drop(waraka_send_decision_t *decision) {
    decision->tag = EXPORTS_WARAKA_PLUGIN_OUTBOUND_HOOKS_SEND_DECISION_DROP;
}

void waraka_next_hops_push(waraka_next_hops_t *hops, const char *host, uint16_t port) {
    waraka_next_hop_t *grown = realloc(hops->ptr, (hops->len + 1) * sizeof(waraka_next_hop_t));
    if (grown == NULL)
        abort();
    hops->ptr = grown;
    hops->ptr[hops->len++] = (waraka_next_hop_t){strdup(host), port};
}

void exports_waraka_plugin_outbound_hooks_send_email(wit_delivery_t *arg, waraka_send_decision_t *ret) {
    ret->tag = EXPORTS_WARAKA_PLUGIN_OUTBOUND_HOOKS_SEND_DECISION_DELIVER;
    waraka_delivery_t delivery = delivery_from_wit(arg);
    if (waraka_hook_send_email)
        waraka_hook_send_email(&delivery, ret);
    delivery_free(&delivery);
}

bool exports_waraka_plugin_outbound_hooks_get_mx(wit_delivery_t *arg,
                                                 exports_waraka_plugin_outbound_hooks_list_next_hop_t *ret) {
    waraka_delivery_t delivery = delivery_from_wit(arg);
    waraka_next_hops_t hops = {0};
    if (waraka_hook_get_mx)
        waraka_hook_get_mx(&delivery, &hops);
    delivery_free(&delivery);
    ret->ptr = calloc(hops.len + 1, sizeof *ret->ptr);
    ret->len = hops.len;
    for (size_t i = 0; i < hops.len; i++) {
        plugin_string_dup(&ret->ptr[i].host, hops.ptr[i].host);
        ret->ptr[i].port = hops.ptr[i].port;
        free(hops.ptr[i].host);
    }
    free(hops.ptr);
    return hops.len > 0;
}

bool exports_waraka_plugin_outbound_hooks_deferred(wit_delivery_t *arg, wit_failures_t *failures_arg,
                                                   uint32_t retry_in, uint32_t *ret) {
    waraka_delivery_t delivery = delivery_from_wit(arg);
    waraka_failures_t failures = failures_from_wit(failures_arg);
    bool replaced = waraka_hook_deferred && waraka_hook_deferred(&delivery, &failures, retry_in, ret);
    delivery_free(&delivery);
    failures_free(&failures);
    return replaced;
}

bool exports_waraka_plugin_outbound_hooks_bounce(wit_delivery_t *arg, wit_failures_t *failures_arg) {
    waraka_delivery_t delivery = delivery_from_wit(arg);
    waraka_failures_t failures = failures_from_wit(failures_arg);
    bool suppressed = waraka_hook_bounce && waraka_hook_bounce(&delivery, &failures);
    delivery_free(&delivery);
    failures_free(&failures);
    return suppressed;
}

void exports_waraka_plugin_outbound_hooks_delivered(wit_delivery_t *arg, plugin_list_string_t *recipients_arg,
                                                    plugin_string_t *host_arg, plugin_string_t *reply_arg) {
    waraka_delivery_t delivery = delivery_from_wit(arg);
    waraka_lines_t recipients = lines_from_wit(recipients_arg);
    char *host = waraka_strdup_wit(host_arg), *reply = waraka_strdup_wit(reply_arg);
    plugin_string_free(host_arg);
    plugin_string_free(reply_arg);
    if (waraka_hook_delivered)
        waraka_hook_delivered(&delivery, &recipients, host, reply);
    delivery_free(&delivery);
    waraka_lines_free(&recipients);
    free(host);
    free(reply);
}
