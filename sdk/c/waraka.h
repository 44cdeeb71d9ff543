/*
 * The Waraka plugin SDK for C, over the bindings wit-bindgen generates for
 * the `outbound-plugin` world (`build/plugin.h`, written by `waraka plugin
 * build`).
 *
 * A plugin defines the hooks it wants as `waraka_hook_NAME` functions (the
 * outbound hooks too) and names itself once with WARAKA_PLUGIN; the SDK
 * lists exactly the defined hooks in `describe`, so the host calls nothing
 * else:
 *
 *     #include "waraka.h"
 *
 *     void waraka_hook_rcpt(const waraka_address_t *rcpt, waraka_verdict_t *verdict) {
 *         if (strcmp(rcpt->local_part, "spam") == 0)
 *             waraka_deny(verdict, 550, "5.7.1", "%s is refused", rcpt->local_part);
 *     }
 *
 *     WARAKA_PLUGIN("rcpt_to.no_spam", "0.1.0")
 *
 * The verdict starts as `cont`; the waraka_ok/deny/... helpers replace it.
 * Every string the SDK hands a hook is NUL-terminated and owned by the SDK
 * for the duration of the call; every `char *` an SDK function returns is
 * the caller's to free(). The other host imports (session, envelope,
 * message, kv, dns, blobstore, files, sql, forward, authentication) are called
 * through the generated `waraka_plugin_*` functions of `build/plugin.h`;
 * waraka_str() and waraka_strdup_wit() convert strings for them.
 */
#ifndef WARAKA_H
#define WARAKA_H

#include "plugin.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/* What a hook decided (the WIT `verdict`); starts as `cont`. */
typedef waraka_plugin_types_verdict_t waraka_verdict_t;

/* One ESMTP parameter: `SIZE=1000` has key "SIZE" and value "1000";
 * a parameter without a value has value NULL. */
typedef struct waraka_param_t {
    char *key;
    char *value;
} waraka_param_t;

/* A mailbox of MAIL FROM or RCPT TO. `<>` has an empty local part and
 * domain; `<postmaster>` has an empty domain. */
typedef struct waraka_address_t {
    char *local_part;
    char *domain;
    waraka_param_t *params;
    size_t params_len;
} waraka_address_t;

/* Credentials collected by the host's SASL exchange; authzid and challenge
 * are NULL when absent. */
typedef struct waraka_auth_attempt_t {
    char *mechanism;
    char *user;
    char *secret;
    char *authzid;
    char *challenge;
} waraka_auth_attempt_t;

/* A rejection about to be sent, for the deny hook. */
typedef struct waraka_denial_t {
    char *hook;
    char *plugin;
    const waraka_verdict_t *verdict;
} waraka_denial_t;

/* A list of NUL-terminated strings; free it with waraka_lines_free. */
typedef struct waraka_lines_t {
    char **ptr;
    size_t len;
} waraka_lines_t;

/* Where a note lives: shared by the whole server, one connection, or one
 * transaction. */
typedef enum waraka_scope_t {
    WARAKA_SERVER = WARAKA_PLUGIN_TYPES_SCOPE_SERVER,
    WARAKA_CONNECTION = WARAKA_PLUGIN_TYPES_SCOPE_CONNECTION,
    WARAKA_TRANSACTION = WARAKA_PLUGIN_TYPES_SCOPE_TRANSACTION,
} waraka_scope_t;

/* The plugin's name and version, for describe. */
#define WARAKA_PLUGIN(name, version)                 \
    const char *const waraka_plugin_name = (name);   \
    const char *const waraka_plugin_version = (version);

/* The hooks. Define the ones the plugin needs, with exactly these
 * signatures; the SDK calls and describes only those. */
void waraka_hook_connect(waraka_verdict_t *verdict);
void waraka_hook_helo(const char *host, waraka_verdict_t *verdict);
void waraka_hook_ehlo(const char *host, waraka_verdict_t *verdict);
/* Append EHLO keywords with waraka_lines_push. */
void waraka_hook_capabilities(waraka_lines_t *keywords);
void waraka_hook_auth(const waraka_auth_attempt_t *attempt, waraka_verdict_t *verdict);
void waraka_hook_unrecognized_command(const char *verb, const char *args, waraka_verdict_t *verdict);
void waraka_hook_mail(const waraka_address_t *sender, waraka_verdict_t *verdict);
/* The candidate is the last entry of envelope recipients while this runs. */
void waraka_hook_rcpt(const waraka_address_t *recipient, waraka_verdict_t *verdict);
void waraka_hook_rcpt_ok(const waraka_address_t *recipient, waraka_verdict_t *verdict);
void waraka_hook_data(waraka_verdict_t *verdict);
void waraka_hook_data_post(waraka_verdict_t *verdict);
void waraka_hook_max_data_exceeded(waraka_verdict_t *verdict);
void waraka_hook_queue(waraka_verdict_t *verdict);
void waraka_hook_queue_outbound(waraka_verdict_t *verdict);
void waraka_hook_queue_ok(const char *queue_id);
void waraka_hook_reset_transaction(void);
void waraka_hook_disconnect(void);
void waraka_hook_deny(const waraka_denial_t *denial, waraka_verdict_t *verdict);

/* A queue entry the outbound hooks are asked about: a message for the
 * recipients of one domain. */
typedef struct waraka_delivery_t {
    char *id;                  /* the queue id, as `waraka queue list` shows it */
    char *domain;              /* the destination domain, lower-case */
    char *sender;              /* `local@domain`; empty for a bounce */
    waraka_lines_t recipients; /* the recipients still to deliver */
    uint32_t attempts;         /* failed attempts so far */
    uint64_t arrival_ms;       /* when it was queued, in ms since the epoch */
} waraka_delivery_t;

/* A recipient that failed: enhanced status ("5.1.1") and the remote reply
 * or the local reason. */
typedef struct waraka_failure_t {
    char *recipient;
    char *status;
    char *diagnostic;
} waraka_failure_t;

typedef struct waraka_failures_t {
    waraka_failure_t *ptr;
    size_t len;
} waraka_failures_t;

/* What send_email decided; starts as "deliver now". */
typedef exports_waraka_plugin_outbound_hooks_send_decision_t waraka_send_decision_t;

/* A server to deliver to: a host name or an IP address, and a port. */
typedef struct waraka_next_hop_t {
    char *host;
    uint16_t port;
} waraka_next_hop_t;

typedef struct waraka_next_hops_t {
    waraka_next_hop_t *ptr;
    size_t len;
} waraka_next_hops_t;

/* The outbound hooks (docs/hooks.md, "Outbound hooks"), asked by the
 * delivery worker without a session; define the ones the plugin needs.
 * send_email: waraka_delay or waraka_drop change the decision.
 * get_mx: servers pushed with waraka_next_hops_push replace MX lookup and
 * routes for this delivery; none pushed leaves it to them.
 * deferred: return true and set *wait to replace the schedule's wait
 * (retry_in seconds).
 * bounce: return true to suppress the DSN to the sender.
 * delivered: `host` accepted `recipients` with `reply`. */
void waraka_hook_send_email(const waraka_delivery_t *delivery, waraka_send_decision_t *decision);
void waraka_hook_get_mx(const waraka_delivery_t *delivery, waraka_next_hops_t *hops);
bool waraka_hook_deferred(const waraka_delivery_t *delivery, const waraka_failures_t *failures, uint32_t retry_in,
                          uint32_t *wait);
bool waraka_hook_bounce(const waraka_delivery_t *delivery, const waraka_failures_t *failures);
void waraka_hook_delivered(const waraka_delivery_t *delivery, const waraka_lines_t *recipients, const char *host,
                           const char *reply);

/* send_email decisions: wait `seconds` first (not a failed attempt), or
 * drop the entry (the plugin took care of the mail; no delivery, no DSN). */
void waraka_delay(waraka_send_decision_t *decision, uint32_t seconds);
void waraka_drop(waraka_send_decision_t *decision);
void waraka_next_hops_push(waraka_next_hops_t *hops, const char *host, uint16_t port);

/* Verdicts. `code` 0, `enhanced` NULL and `format` NULL keep the hook's
 * default reply; `format` is printf-style and gives the reply text. */
void waraka_ok(waraka_verdict_t *verdict, unsigned code, const char *enhanced, const char *format, ...)
    __attribute__((format(printf, 4, 5)));
void waraka_deny(waraka_verdict_t *verdict, unsigned code, const char *enhanced, const char *format, ...)
    __attribute__((format(printf, 4, 5)));
void waraka_denysoft(waraka_verdict_t *verdict, unsigned code, const char *enhanced, const char *format, ...)
    __attribute__((format(printf, 4, 5)));
void waraka_deny_disconnect(waraka_verdict_t *verdict, unsigned code, const char *enhanced, const char *format, ...)
    __attribute__((format(printf, 4, 5)));
void waraka_denysoft_disconnect(waraka_verdict_t *verdict, unsigned code, const char *enhanced,
                                const char *format, ...) __attribute__((format(printf, 4, 5)));
void waraka_disconnect(waraka_verdict_t *verdict, unsigned code, const char *enhanced, const char *format, ...)
    __attribute__((format(printf, 4, 5)));

/* Logging, printf-style, tagged by the host with plugin, connection and
 * transaction. */
void waraka_log(waraka_plugin_log_level_t level, const char *format, ...) __attribute__((format(printf, 2, 3)));
#define waraka_trace(...) waraka_log(WARAKA_PLUGIN_LOG_LEVEL_TRACE, __VA_ARGS__)
#define waraka_debug(...) waraka_log(WARAKA_PLUGIN_LOG_LEVEL_DEBUG, __VA_ARGS__)
#define waraka_info(...) waraka_log(WARAKA_PLUGIN_LOG_LEVEL_INFO, __VA_ARGS__)
#define waraka_warn(...) waraka_log(WARAKA_PLUGIN_LOG_LEVEL_WARN, __VA_ARGS__)
#define waraka_error(...) waraka_log(WARAKA_PLUGIN_LOG_LEVEL_ERROR, __VA_ARGS__)

/* Notes shared between plugins. waraka_note_get returns NULL when the key
 * is not set; waraka_note_set returns false when a limit refused it. */
char *waraka_note_get(waraka_scope_t scope, const char *key);
bool waraka_note_set(waraka_scope_t scope, const char *key, const char *value);
bool waraka_note_remove(waraka_scope_t scope, const char *key);

/* Configuration under the instance's config/. waraka_config_lines gives the
 * lines without blanks and comments (none when the file does not exist) and
 * returns false when the host could not read it; waraka_config_read gives
 * the whole text, NULL when missing or unreadable; waraka_setting gives the
 * value of `key = value` in an INI-style file, NULL when absent. */
bool waraka_config_lines(const char *name, waraka_lines_t *lines);
char *waraka_config_read(const char *name);
char *waraka_setting(const char *name, const char *key);

/* Lists of strings. */
void waraka_lines_push(waraka_lines_t *lines, const char *line);
void waraka_lines_free(waraka_lines_t *lines);

/* `local@domain` of an address (the local part alone for `<postmaster>`). */
char *waraka_address_string(const waraka_address_t *address);

/* A WIT string borrowing a C string, for calls into build/plugin.h. */
plugin_string_t waraka_str(const char *text);
/* A NUL-terminated copy of a WIT string. */
char *waraka_strdup_wit(const plugin_string_t *text);

#ifdef __cplusplus
}
#endif

#endif
