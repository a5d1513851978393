/* The notify family's C half (see notify.h and notify.md). */
#include "notify.h"
#include "audit.h"
#include "engine_int.h"

#include "curl_dl.h" /* curl_getdate, from libcurl loaded on first use */
#include "ossl_dl.h"
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SECRET_FILE_MAX (1u << 20)

static int valid_secret_name(const char *s) {
  if (!*s) return 0;
  for (; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
          *s == '_'))
      return 0;
  return 1;
}

static char *read_secret_file(const char *path, size_t *len, char *why, size_t whylen,
                              const char *name) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(why, whylen, "secret %s: its configured file cannot be opened", name);
    return NULL;
  }
  char *buf = malloc(SECRET_FILE_MAX + 1);
  size_t n = buf ? fread(buf, 1, SECRET_FILE_MAX + 1, f) : 0;
  int bad = !buf || ferror(f) || n > SECRET_FILE_MAX;
  fclose(f);
  if (bad) {
    free(buf);
    snprintf(why, whylen, "secret %s: its configured file cannot be read (or is over 1 MiB)", name);
    return NULL;
  }
  if (n > 0 && buf[n - 1] == '\n') n--; /* as secret(): one trailing newline */
  buf[n] = 0;
  *len = n;
  return buf;
}

char *rbl_notify_secret(lua_State *L, const char *name, size_t *len, char *why, size_t whylen) {
  if (!valid_secret_name(name)) {
    snprintf(why, whylen, "secret name must be letters, digits and _");
    return NULL;
  }
  int top = lua_gettop(L);
  luaL_checkstack(L, 4, "notify");
  lua_getfield(L, LUA_REGISTRYINDEX, "rbl.config");
  rbl__raw_field(L, -1, "secrets");
  rbl__raw_field(L, -1, name);
  char *v = NULL;
  if (lua_type(L, -1) == LUA_TSTRING) {
    char *path = strdup(lua_tostring(L, -1));
    lua_settop(L, top);
    if (!path) return NULL;
    v = read_secret_file(path, len, why, whylen, name);
    free(path);
    return v;
  }
  lua_settop(L, top);
  const char *env = getenv(name);
  if (!env) {
    snprintf(why, whylen, "secret %s: no such environment variable or configured file", name);
    return NULL;
  }
  v = strdup(env);
  if (v) *len = strlen(v);
  return v;
}

int rbl_notify_hmac_hex(const char *key, size_t keylen, const char *msg, size_t msglen,
                        char out[65]) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int maclen = 0;
  if (rbl_ossl_load(NULL, 0) != 0) return -1;
  if (!HMAC(EVP_sha256(), key, (int)keylen, (const unsigned char *)msg, msglen, mac, &maclen) ||
      maclen != 32)
    return -1;
  static const char hex[] = "0123456789abcdef";
  for (unsigned i = 0; i < 32; i++) {
    out[2 * i] = hex[mac[i] >> 4];
    out[2 * i + 1] = hex[mac[i] & 15];
  }
  out[64] = 0;
  return 0;
}

/* Whether the channel at the top of the stack sends to url (1), or not (0). */
static int channel_matches(lua_State *L, const char *url) {
  int ch = lua_gettop(L);
  int match = 0;
  if (rbl__raw_field(L, ch, "url") == LUA_TSTRING) {
    match = !strcmp(lua_tostring(L, -1), url);
    lua_settop(L, ch);
    return match;
  }
  lua_settop(L, ch);
  rbl__raw_field(L, ch, "type");
  const char *type = lua_tostring(L, -1);
  if (lua_type(L, -1) != LUA_TSTRING) type = "";
  if (!strcmp(type, "pagerduty")) {
    match = !strcmp(url, RBL_NOTIFY_PAGERDUTY_URL);
  } else if (!strcmp(type, "slack") || !strcmp(type, "webhook")) {
    if (rbl__raw_field(L, ch, "webhook") == LUA_TSTRING) {
      char why[160];
      size_t len = 0;
      char *v = rbl_notify_secret(L, lua_tostring(L, -1), &len, why, sizeof why);
      match = v && strlen(v) == len && !strcmp(v, url);
      free(v);
    }
  }
  lua_settop(L, ch);
  return match;
}

int rbl_notify_allowed(lua_State *L, const char *method, const char *url, char *why,
                       size_t whylen) {
  if (!method || strcmp(method, "POST") != 0) {
    snprintf(why, whylen, "notify: only POST is sent to a notification channel");
    return -1;
  }
  if (!url || !*url) {
    snprintf(why, whylen, "notify: no destination");
    return -1;
  }
  int top = lua_gettop(L);
  luaL_checkstack(L, 8, "notify");
  lua_getfield(L, LUA_REGISTRYINDEX, "rbl.config");
  rbl__raw_field(L, -1, "notify");
  rbl__raw_field(L, -1, "channels");
  int chans = lua_gettop(L);
  int found = 0;
  if (lua_istable(L, chans)) {
    lua_pushnil(L);
    while (!found && lua_next(L, chans)) {
      if (lua_istable(L, -1)) found = channel_matches(L, url);
      lua_pop(L, 1);
    }
  }
  lua_settop(L, top);
  if (found) return 0;
  snprintf(why, whylen, "notify: the destination is not a channel the config names");
  return -1;
}

/* ---- rbl.notify.c ---- */

static int l_secret(lua_State *L) {
  char why[200];
  size_t len = 0;
  char *v = rbl_notify_secret(L, luaL_checkstring(L, 1), &len, why, sizeof why);
  if (!v) {
    lua_pushnil(L);
    lua_pushstring(L, why);
    return 2;
  }
  lua_pushlstring(L, v, len);
  memset(v, 0, len);
  free(v);
  return 1;
}

static int l_hmac(lua_State *L) {
  size_t kl, ml;
  const char *k = luaL_checklstring(L, 1, &kl);
  const char *m = luaL_checklstring(L, 2, &ml);
  char out[65];
  if (rbl_notify_hmac_hex(k, kl, m, ml, out) != 0) return luaL_error(L, "hmac: failed");
  lua_pushstring(L, out);
  return 1;
}

/* http_date(s): an HTTP date (RFC 9110 IMF-fixdate, or the obsolete forms) as unix seconds. */
static int l_http_date(lua_State *L) {
  const char *d = luaL_checkstring(L, 1);
  char err[256];
  if (rbl_curl_load(err, sizeof err) != 0) return luaL_error(L, "http_date: %s", err);
  time_t t = curl_getdate(d, NULL);
  if (t == (time_t)-1) return 0;
  lua_pushinteger(L, (lua_Integer)t);
  return 1;
}

static int l_audit_head(lua_State *L) {
  rbl_engine *e = rbl_engine_of(L);
  if (!e->audit) return 0;
  lua_pushstring(L, rbl_audit_head(e->audit));
  return 1;
}

static int l_allowed(lua_State *L) {
  char why[200];
  if (rbl_notify_allowed(L, luaL_checkstring(L, 1), luaL_checkstring(L, 2), why, sizeof why) == 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_pushnil(L);
  lua_pushstring(L, why);
  return 2;
}

static const luaL_Reg funcs[] = {{"secret", l_secret},       {"hmac_sha256_hex", l_hmac},
                                 {"http_date", l_http_date}, {"audit_head", l_audit_head},
                                 {"allowed", l_allowed},     {NULL, NULL}};

int luaopen_rbl_notify_c(lua_State *L) {
  luaL_newlib(L, funcs);
  return 1;
}
