/* The notify family's C half: the gate's decision for notification requests, the one secret
 * resolver both the gate and src/families/notify/notify.lua use, and the webhook signature. */
#ifndef RBL_NOTIFY_H
#define RBL_NOTIFY_H

#include <lua.h>
#include <stddef.h>

/* PagerDuty's Events API v2 endpoint, the default of a "pagerduty" channel without url. */
#define RBL_NOTIFY_PAGERDUTY_URL "https://events.pagerduty.com/v2/enqueue"

/* The gate's decision for a request of the notify class, from facts it reads itself: 0 only
 * for a POST whose url is exactly the destination of a channel in the registry's rbl.config
 * (notify.channels[*]: its url when set; else the pagerduty endpoint for type "pagerduty";
 * else, for "slack" and "webhook", the value of the secret its `webhook` names, resolved as
 * secret() does). Otherwise -1 with why filled; why never contains the url or a secret. */
int rbl_notify_allowed(lua_State *L, const char *method, const char *url, char *why, size_t whylen);

/* The value of secret NAME exactly as secret() resolves it: the file config.secrets[NAME]
 * names (its contents, one trailing newline stripped), else the environment variable NAME.
 * Returns a malloc'd string (caller frees; *len its length) or NULL with why filled. The
 * config table is read with raw access only. */
char *rbl_notify_secret(lua_State *L, const char *name, size_t *len, char *why, size_t whylen);

/* HMAC-SHA256 of msg under key as 64 lowercase hex digits and a NUL (out: 65 bytes). */
int rbl_notify_hmac_hex(const char *key, size_t keylen, const char *msg, size_t msglen,
                        char out[65]);

/* rbl.notify.c: secret(name) -> value | nil, why; hmac_sha256_hex(key, msg) -> hex;
 * http_date(s) -> unix seconds | nil; audit_head() -> hex | nil; allowed(method, url) ->
 * true | nil, why (the gate's decision, for tests and rbl check). */
int luaopen_rbl_notify_c(lua_State *L);

#endif
