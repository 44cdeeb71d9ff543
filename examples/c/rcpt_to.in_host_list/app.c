/*
 * rcpt_to.in_host_list in C: accepts recipients whose domain is local, as
 * Haraka's plugin of that name does.
 *
 * A domain is local when it is listed in config/host_list (one per line,
 * case-insensitive) or matches an extended regular expression in
 * config/host_list_regex (anchored, case-insensitive). At `mail`, a local
 * sender is noted in the transaction note `local_sender`; at `rcpt`, a local
 * recipient is accepted (`ok`), and so is any recipient of a relaying client
 * with a local sender. Other recipients pass on (`cont`) to the next plugin.
 * Both files are read on every call, so edits apply at once.
 */
#include "waraka.h"

#include <regex.h>
#include <stdio.h>
#include <strings.h>

/* Whether `pattern`, anchored, matches all of `domain` (case-insensitive). */
static bool regex_matches(const char *pattern, const char *domain) {
    size_t len = strlen(pattern) + 8;
    char *anchored = malloc(len);
    snprintf(anchored, len, "^(%s)$", pattern);
    regex_t regex;
    int status = regcomp(&regex, anchored, REG_EXTENDED | REG_ICASE | REG_NOSUB);
    free(anchored);
    if (status != 0) {
        waraka_warn("host_list_regex: skipping invalid pattern %s", pattern);
        return false;
    }
    bool matches = regexec(&regex, domain, 0, NULL, 0) == 0;
    regfree(&regex);
    return matches;
}

/* Sets *local to whether `domain` is local; false when the host could not
 * read the configuration. */
static bool is_local(const char *domain, bool *local) {
    char *name = strdup(domain);
    size_t len = strlen(name);
    while (len > 0 && name[len - 1] == '.')
        name[--len] = '\0';
    waraka_lines_t hosts = {0}, patterns = {0};
    bool readable = waraka_config_lines("host_list", &hosts) && waraka_config_lines("host_list_regex", &patterns);
    *local = false;
    for (size_t i = 0; readable && len > 0 && !*local && i < hosts.len; i++)
        *local = strcasecmp(hosts.ptr[i], name) == 0;
    for (size_t i = 0; readable && len > 0 && !*local && i < patterns.len; i++)
        *local = regex_matches(patterns.ptr[i], name);
    waraka_lines_free(&hosts);
    waraka_lines_free(&patterns);
    free(name);
    return readable;
}

void waraka_hook_mail(const waraka_address_t *sender, waraka_verdict_t *verdict) {
    bool local;
    if (!is_local(sender->domain, &local)) {
        waraka_denysoft(verdict, 451, "4.3.0", "host list unavailable");
        return;
    }
    if (local)
        waraka_note_set(WARAKA_TRANSACTION, "local_sender", "true");
}

void waraka_hook_rcpt(const waraka_address_t *recipient, waraka_verdict_t *verdict) {
    /* <postmaster> has no domain, and RFC 5321 requires accepting it. */
    if (recipient->domain[0] == '\0') {
        waraka_ok(verdict, 0, NULL, NULL);
        return;
    }
    bool local;
    if (!is_local(recipient->domain, &local)) {
        waraka_denysoft(verdict, 451, "4.3.0", "host list unavailable");
        return;
    }
    if (local) {
        waraka_ok(verdict, 0, NULL, NULL);
        return;
    }
    char *local_sender = waraka_note_get(WARAKA_TRANSACTION, "local_sender");
    if (local_sender != NULL && waraka_plugin_session_relaying()) {
        waraka_info("relaying for a local sender to %s", recipient->domain);
        waraka_ok(verdict, 0, NULL, NULL);
    }
    free(local_sender);
}

WARAKA_PLUGIN("rcpt_to.in_host_list", "0.1.0")
