/* `rbl audit show`: each run of a chain as a timeline readable at 3 AM (text or one JSON document).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audit.h"
#include "jcs.h"
#include "rbl.h"

static const char show_usage[] =
    "usage: rbl audit show PATH [--run ID] [--tenant T] [--since TIME] [--until TIME] [--json]\n"
    "  prints each run of the chain as a postmortem timeline, one line per record: header\n"
    "  (incident, tenants, runbook, start, user, dry run), step transitions, calls (target,\n"
    "  containers by name and id, argv and exit code, patches before -> after, rollbacks with\n"
    "  what they restored), refusals, failures, logs, typed REPL lines, modules, secrets,\n"
    "  interrupts, warnings, signatures; then the outcome with its exit code.\n"
    "  It does not check integrity: use `rbl audit verify` for that.\n"
    "  --run ID      only this run (its id, a unique prefix of it, or its number: 1 = first)\n"
    "  --tenant T    only records of tenant T (and runs authorised for T)\n"
    "  --since TIME  only records at or after TIME: RFC 3339 (2026-01-17T03:42:15Z, a prefix\n"
    "                such as 2026-01-17T03:42) or an age (90s, 15m, 2h, 1d before now)\n"
    "  --until TIME  only records before TIME (same forms)\n"
    "  --json        the same (filtered) as one JSON document\n"
    "exit status: 0 shown, 2 unreadable, bad usage, a --run that names no run or several,\n"
    "             a bad TIME\n";

/* Milliseconds since the epoch of an RFC 3339 UTC time as the writer prints it; -1 if not one. */
static long long show_ms(const char *ts) {
  struct tm tm;
  int ms = 0;
  memset(&tm, 0, sizeof tm);
  if (!ts || sscanf(ts, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                    &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms) != 7)
    return -1;
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return (long long)timegm(&tm) * 1000 + ms;
}

/* Copies s into out with control characters (C0, DEL, C1) escaped, cut at outlen. */
static const char *show_esc(const char *s, char *out, size_t outlen) {
  size_t o = 0;
  const unsigned char *p = (const unsigned char *)(s ? s : "");
  for (; *p && o + 8 < outlen; p++) {
    if (*p == '\n')
      o += (size_t)snprintf(out + o, outlen - o, "\\n");
    else if (*p == '\t')
      o += (size_t)snprintf(out + o, outlen - o, "\\t");
    else if (*p < 0x20 || *p == 0x7f)
      o += (size_t)snprintf(out + o, outlen - o, "\\x%02x", *p);
    else if (*p == 0xC2 && p[1] >= 0x80 && p[1] <= 0x9F)
      o += (size_t)snprintf(out + o, outlen - o, "\\u%04x", *++p);
    else
      out[o++] = (char)*p;
  }
  if (*p) o += (size_t)snprintf(out + o, outlen - o, "...");
  out[o] = '\0';
  return out;
}

static const char *show_str(const cJSON *o, const char *name) {
  return cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, name));
}

static cJSON *show_copy(const cJSON *o, const char *name) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
  return v ? cJSON_Duplicate(v, 1) : NULL;
}

static void show_add(cJSON *to, const char *name, cJSON *v) {
  if (v) cJSON_AddItemToObject(to, name, v);
}

/* ---- building the document ---- */

static cJSON *show_new_run(cJSON *runs, const cJSON *rec, size_t line) {
  cJSON *r = cJSON_CreateObject();
  show_add(r, "run", show_copy(rec, "run"));
  show_add(r, "incident", show_copy(rec, "incident"));
  cJSON_AddNumberToObject(r, "first_line", (double)line);
  show_add(r, "first_ts", show_copy(rec, "ts"));
  cJSON_AddBoolToObject(r, "finished", 0);
  cJSON_AddItemToObject(r, "events", cJSON_CreateArray());
  cJSON_AddItemToArray(runs, r);
  return r;
}

static void show_run_start(cJSON *r, const cJSON *rec) {
  static const char *const fields[] = {"tenants", "runbook", "modules", "rbl_version",
                                       "host",    "user",    "argv",    "dry_run"};
  show_add(r, "started", show_copy(rec, "ts"));
  for (size_t i = 0; i < sizeof fields / sizeof *fields; i++) {
    cJSON_DeleteItemFromObjectCaseSensitive(r, fields[i]);
    show_add(r, fields[i], show_copy(rec, fields[i]));
  }
}

static cJSON *show_event(cJSON *r, const cJSON *rec, const char *type, size_t line) {
  cJSON *e = cJSON_CreateObject();
  long long t0 = show_ms(show_str(r, "first_ts")), t = show_ms(show_str(rec, "ts"));
  cJSON_AddStringToObject(e, "type", type);
  cJSON_AddNumberToObject(e, "line", (double)line);
  show_add(e, "ts", show_copy(rec, "ts"));
  if (t0 >= 0 && t >= 0) cJSON_AddNumberToObject(e, "offset_ms", (double)(t - t0));
  cJSON_AddItemToArray(cJSON_GetObjectItemCaseSensitive(r, "events"), e);
  return e;
}

/* The intent event of this call in run r (the latest one), or NULL. */
static cJSON *show_find_call(cJSON *r, const cJSON *call) {
  cJSON *evs = cJSON_GetObjectItemCaseSensitive(r, "events");
  for (cJSON *e = evs ? evs->child : NULL; e; e = e->next) {
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "call");
    if (c && call && cJSON_Compare(c, call, 1) && strcmp(show_str(e, "type"), "call") == 0 &&
        !cJSON_GetObjectItemCaseSensitive(e, "status_line"))
      return e;
  }
  return NULL;
}

static void show_result(cJSON *r, const cJSON *rec, size_t line) {
  static const char *const fields[] = {"status",  "duration_ms", "error",
                                       "summary", "before",      "may_have_applied"};
  const cJSON *call = cJSON_GetObjectItemCaseSensitive(rec, "call");
  cJSON *e = show_find_call(r, call);
  if (!e) {
    e = show_event(r, rec, "result", line);
    show_add(e, "call", show_copy(rec, "call"));
  }
  cJSON_DeleteItemFromObjectCaseSensitive(e, "status");
  for (size_t i = 0; i < sizeof fields / sizeof *fields; i++)
    show_add(e, fields[i], show_copy(rec, fields[i]));
  cJSON_AddNumberToObject(e, "status_line", (double)line);
}

/* Any other record kind (repl, module, secret, failed, interrupt, warning, isolation,
 * signature, and kinds this version does not know): every field but the chain's own. */
static void show_other(cJSON *r, const cJSON *rec, const char *kind, size_t line) {
  static const char *const chain_f[] = {"hash",     "prev", "seq", "mac",
                                        "incident", "run",  "ts",  "kind"};
  cJSON *e = show_event(r, rec, "other", line);
  cJSON_AddStringToObject(e, "kind", kind);
  cJSON *f = cJSON_AddObjectToObject(e, "fields");
  const cJSON *it;
  cJSON_ArrayForEach(it, rec) {
    size_t i = 0;
    while (i < sizeof chain_f / sizeof *chain_f && strcmp(it->string, chain_f[i]) != 0)
      i++;
    if (i == sizeof chain_f / sizeof *chain_f)
      cJSON_AddItemToObject(f, it->string, cJSON_Duplicate(it, 1));
  }
  show_add(e, "tenant", show_copy(rec, "tenant"));
}

static void show_record(cJSON *r, const cJSON *rec, size_t line) {
  static const char *const call_f[] = {"call", "prim", "tenant", "target", "args"};
  static const char *const ref_f[] = {"prim", "tenant", "reason", "call"};
  static const char *const step_f[] = {"step", "index", "status", "detail", "duration_ms"};
  const char *kind = show_str(rec, "kind");
  cJSON *e = NULL;
  if (!kind) return;
  if (strcmp(kind, "run_start") == 0) return show_run_start(r, rec);
  if (strcmp(kind, "result") == 0) return show_result(r, rec, line);
  if (strcmp(kind, "run_end") == 0) {
    cJSON_ReplaceItemInObjectCaseSensitive(r, "finished", cJSON_CreateTrue());
    show_add(r, "outcome", show_copy(rec, "outcome"));
    show_add(r, "exit_code", show_copy(rec, "exit_code"));
    show_add(r, "ended", show_copy(rec, "ts"));
  } else if (strcmp(kind, "signature") == 0) {
    cJSON_AddBoolToObject(r, "signed", 1);
  } else if (strcmp(kind, "intent") == 0) {
    e = show_event(r, rec, "call", line);
    for (size_t i = 0; i < 5; i++)
      show_add(e, call_f[i], show_copy(rec, call_f[i]));
    cJSON_AddStringToObject(e, "status", "no result");
  } else if (strcmp(kind, "refused") == 0) {
    e = show_event(r, rec, "refused", line);
    for (size_t i = 0; i < 4; i++)
      show_add(e, ref_f[i], show_copy(rec, ref_f[i]));
  } else if (strcmp(kind, "step") == 0) {
    e = show_event(r, rec, "step", line);
    for (size_t i = 0; i < sizeof step_f / sizeof *step_f; i++)
      show_add(e, step_f[i], show_copy(rec, step_f[i]));
  } else if (strcmp(kind, "log") == 0) {
    e = show_event(r, rec, "log", line);
    show_add(e, "message", show_copy(rec, "message"));
    show_add(e, "tenant", show_copy(rec, "tenant"));
  } else {
    show_other(r, rec, kind, line);
  }
  if (strcmp(kind, "signature") == 0) show_other(r, rec, kind, line);
}

static cJSON *show_build(const char *path, const char *data, size_t size) {
  cJSON *doc = cJSON_CreateObject(), *runs = cJSON_AddArrayToObject(doc, "runs");
  cJSON *bad = cJSON_AddArrayToObject(doc, "unreadable_lines"), *cur = NULL;
  cJSON_AddStringToObject(doc, "path", path);
  const char *p = data, *end = data + size;
  for (size_t line = 1; p < end; line++) {
    const char *nl = memchr(p, '\n', (size_t)(end - p)), *le = nl ? nl : end;
    cJSON *rec = cJSON_ParseWithLength(p, (size_t)(le - p));
    const char *run = show_str(rec, "run");
    if (!cJSON_IsObject(rec) || !run) {
      cJSON_AddItemToArray(bad, cJSON_CreateNumber((double)line));
    } else {
      if (!cur || strcmp(show_str(cur, "run"), run) != 0) cur = show_new_run(runs, rec, line);
      show_record(cur, rec, line);
    }
    cJSON_Delete(rec);
    p = nl ? nl + 1 : end;
  }
  return doc;
}

/* The string field, or "?" when the record did not carry it. */
static const char *show_q(const cJSON *o, const char *name) {
  const char *s = show_str(o, name);
  return s ? s : "?";
}

/* ---- filters ---- */

typedef struct show_opts {
  const char *run, *tenant;
  long long since, until; /* ms since the epoch; -1: none */
} show_opts;

/* An RFC 3339 time or a prefix of one (2026-01-17, 2026-01-17T03:42), else an age before now
 * (90s, 15m, 2h, 1d). -1 when neither. */
static long long show_parse_time(const char *s) {
  char *end;
  double n = strtod(s, &end);
  if (end != s && s[0] != '-' && strlen(s) < 16 &&
      (!strcmp(end, "s") || !strcmp(end, "m") || !strcmp(end, "h") || !strcmp(end, "d"))) {
    double mul = *end == 's' ? 1 : *end == 'm' ? 60 : *end == 'h' ? 3600 : 86400;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 - (long long)(n * mul * 1000);
  }
  struct tm tm;
  int ms = 0, k;
  memset(&tm, 0, sizeof tm);
  k = sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d.%3d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
             &tm.tm_min, &tm.tm_sec, &ms);
  if (k < 3 || tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 || tm.tm_mday > 31) return -1;
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return (long long)timegm(&tm) * 1000 + ms;
}

static int show_has_tenant(const cJSON *r, const char *t) {
  const cJSON *x;
  cJSON_ArrayForEach(x, cJSON_GetObjectItemCaseSensitive(r, "tenants")) {
    if (cJSON_IsString(x) && strcmp(x->valuestring, t) == 0) return 1;
  }
  return 0;
}

/* Does run number n (1-based) with id `id` match --run? Its number, its id, or a unique
 * prefix of its id (uniqueness checked by the caller). */
static int show_run_matches(const char *want, int n, const char *id) {
  char num[16];
  snprintf(num, sizeof num, "%d", n);
  return !strcmp(want, num) || (id && !strncmp(id, want, strlen(want)));
}

/* Removes the runs and events the filters exclude. Returns 0, or 2 after naming a bad --run. */
static int show_filter(cJSON *doc, const show_opts *o) {
  cJSON *runs = cJSON_GetObjectItemCaseSensitive(doc, "runs");
  if (o->run) {
    int n = 0, hits = 0;
    cJSON *r;
    cJSON_ArrayForEach(r, runs) hits += show_run_matches(o->run, ++n, show_str(r, "run"));
    if (hits > 1) {
      fprintf(stderr, "rbl audit show: --run %s matches %d runs; give more of the id\n", o->run,
              hits);
      return 2;
    }
  }
  int n = 0;
  for (cJSON *r = runs ? runs->child : NULL, *next; r; r = next) {
    next = r->next;
    n++;
    int keep = !o->run || show_run_matches(o->run, n, show_str(r, "run"));
    cJSON *evs = cJSON_GetObjectItemCaseSensitive(r, "events");
    int kept = 0, kept_t = 0;
    for (cJSON *e = evs ? evs->child : NULL, *en; keep && e; e = en) {
      en = e->next;
      const char *t = show_str(e, "tenant");
      long long ts = show_ms(show_str(e, "ts"));
      int drop = (o->tenant && t && strcmp(t, o->tenant) != 0) ||
                 (o->since >= 0 && ts >= 0 && ts < o->since) ||
                 (o->until >= 0 && ts >= 0 && ts >= o->until);
      if (drop)
        cJSON_Delete(cJSON_DetachItemViaPointer(evs, e));
      else
        kept++, kept_t += t != NULL;
    }
    if (keep && o->tenant && !show_has_tenant(r, o->tenant) && kept_t == 0) keep = 0;
    if (keep && (o->since >= 0 || o->until >= 0) && kept == 0) keep = 0;
    if (!keep) cJSON_Delete(cJSON_DetachItemViaPointer(runs, r));
  }
  return 0;
}

/* ---- text ---- */

/* A growing line: every piece escaped, the whole cut at a screenful. */
typedef struct show_line {
  char buf[1600];
  size_t n;
} show_line;

static void show_put(show_line *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void show_put(show_line *l, const char *fmt, ...) {
  if (l->n >= sizeof l->buf - 1) return;
  va_list ap;
  va_start(ap, fmt);
  int k = vsnprintf(l->buf + l->n, sizeof l->buf - l->n, fmt, ap);
  va_end(ap);
  if (k > 0) l->n += (size_t)k;
  if (l->n >= sizeof l->buf) l->n = sizeof l->buf - 1;
}

/* A JSON value in a few characters: strings quoted, objects compact, cut at max. */
static void show_put_value(show_line *l, const cJSON *v, size_t max) {
  char esc[256];
  if (!v) return show_put(l, "(absent)");
  cJSON *d = cJSON_Duplicate(v, 1); /* numbers as the chain holds them, not cJSON's 15 digits */
  char *s = d && rbl_jcs_raw_numbers(d) == 0 ? cJSON_PrintUnformatted(d) : NULL;
  cJSON_Delete(d);
  show_esc(s ? s : "?", esc, max < sizeof esc ? max : sizeof esc);
  cJSON_free(s);
  show_put(l, "%s", esc);
}

/* argv (a JSON array of strings) as a command line, elements with spaces quoted. */
static void show_put_argv(show_line *l, const cJSON *argv) {
  char esc[256];
  const cJSON *a;
  int i = 0;
  cJSON_ArrayForEach(a, argv) {
    if (i++ >= 16) return show_put(l, " ...");
    const char *s = cJSON_IsString(a) ? a->valuestring : "[redacted]";
    show_esc(s, esc, sizeof esc < 120 ? sizeof esc : 120);
    show_put(l, strpbrk(s, " \t\"'") || !*s ? "%s\"%s\"" : "%s%s", i > 1 ? " " : "", esc);
  }
}

/* A container as people name it: its name, then the short id. */
static void show_put_target(show_line *l, const cJSON *e) {
  char a[256], b[256], c[256];
  const cJSON *t = cJSON_GetObjectItemCaseSensitive(e, "target");
  if (!t || cJSON_IsNull(t)) t = cJSON_GetObjectItemCaseSensitive(e, "args");
  if (!t) return;
  const char *kind = show_str(t, "kind"), *name = show_str(t, "name"),
             *ns = show_str(t, "namespace");
  const char *ctr = show_str(t, "container");
  if (cJSON_IsString(t)) {
    show_put(l, " %s", show_esc(t->valuestring, a, sizeof a));
  } else if (kind) {
    show_put(l, " %s%s%s", show_esc(kind, a, sizeof a), name ? "/" : "",
             name ? show_esc(name, b, sizeof b) : "");
    if (ns) show_put(l, " ns=%s", show_esc(ns, c, sizeof c));
  } else if (ctr) {
    char id[13];
    snprintf(id, sizeof id, "%s", ctr);
    if (name)
      show_put(l, " %s (%s)", show_esc(name, a, sizeof a), show_esc(id, b, sizeof b));
    else
      show_put(l, " %s", show_esc(id, b, sizeof b));
  } else if (show_str(t, "verb") && show_str(t, "resource")) {
    show_put(l, " %s %s", show_esc(show_str(t, "verb"), a, sizeof a),
             show_esc(show_str(t, "resource"), b, sizeof b));
  } else {
    show_put(l, " ");
    show_put_value(l, t, 100);
  }
}

/* Follows an RFC 6901 pointer into v; NULL when absent. */
static const cJSON *show_pointer(const cJSON *v, const char *ptr) {
  char seg[256];
  while (v && *ptr == '/') {
    size_t n = 0;
    for (ptr++; *ptr && *ptr != '/' && n < sizeof seg - 1; ptr++) {
      if (*ptr == '~' && (ptr[1] == '0' || ptr[1] == '1'))
        seg[n++] = *++ptr == '0' ? '~' : '/';
      else
        seg[n++] = *ptr;
    }
    seg[n] = '\0';
    v = cJSON_IsArray(v) ? cJSON_GetArrayItem(v, atoi(seg))
                         : cJSON_GetObjectItemCaseSensitive(v, seg);
  }
  return v;
}

/* What a field became: from the call's patch (merge or strategic: the value at the path;
 * json: the op on the path), or kube.scale's count. NULL: not known from the record. */
static const cJSON *show_after(const cJSON *e, const char *path, int *removed) {
  const cJSON *args = cJSON_GetObjectItemCaseSensitive(e, "args");
  const char *prim = show_str(e, "prim");
  *removed = 0;
  if (prim && strcmp(prim, "kube.scale") == 0) return cJSON_GetArrayItem(args, 2);
  const cJSON *patch = cJSON_GetArrayItem(args, 2);
  if (cJSON_IsArray(patch)) {
    const cJSON *op;
    cJSON_ArrayForEach(op, patch) {
      const char *p = show_str(op, "path"), *o = show_str(op, "op");
      if (p && o && strcmp(p, path) == 0) {
        *removed = strcmp(o, "remove") == 0;
        return cJSON_GetObjectItemCaseSensitive(op, "value");
      }
    }
    return NULL;
  }
  const cJSON *v = show_pointer(patch, path);
  if (cJSON_IsNull(v)) *removed = 1;
  return v;
}

/* A write's fields before -> after (the before-state the result recorded). */
static void show_put_fields(show_line *l, const cJSON *e) {
  char p[256];
  const cJSON *f, *before = cJSON_GetObjectItemCaseSensitive(e, "before");
  int i = 0;
  cJSON_ArrayForEach(f, cJSON_GetObjectItemCaseSensitive(before, "fields")) {
    const char *path = show_str(f, "path");
    if (!path) continue;
    if (i++ >= 8) return show_put(l, ", ...");
    show_put(l, "%s%s ", i > 1 ? ", " : "  ", show_esc(path, p, sizeof p));
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(f, "exists")))
      show_put_value(l, cJSON_GetObjectItemCaseSensitive(f, "value"), 60);
    else
      show_put(l, "(absent)");
    int removed;
    const cJSON *after = show_after(e, path, &removed);
    show_put(l, " -> ");
    if (removed)
      show_put(l, "(removed)");
    else if (after)
      show_put_value(l, after, 60);
    else
      show_put(l, "?");
  }
}

/* An undo (rbl rollback, rollback "auto"): what it restored, and which call it undid. */
static void show_put_restored(show_line *l, const cJSON *e) {
  char p[256], r[128];
  const cJSON *b = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(e, "args"), 0), *f;
  int i = 0;
  cJSON_ArrayForEach(f, cJSON_GetObjectItemCaseSensitive(b, "fields")) {
    const char *path = show_str(f, "path");
    if (!path) continue;
    if (i++ >= 8) {
      show_put(l, ", ...");
      break;
    }
    show_put(l, "%s%s = ", i > 1 ? ", " : "  restored ", show_esc(path, p, sizeof p));
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(f, "exists")))
      show_put_value(l, cJSON_GetObjectItemCaseSensitive(f, "value"), 60);
    else
      show_put(l, "(absent)");
  }
  const cJSON *call = cJSON_GetObjectItemCaseSensitive(b, "call");
  if (cJSON_IsNumber(call))
    show_put(l, "  (undoes call %d of run %s)", call->valueint,
             show_esc(show_str(b, "run") ? show_str(b, "run") : "?", r, sizeof r));
}

static void show_text_call(show_line *l, const cJSON *e) {
  char prim[128], ten[128], msg[512];
  const cJSON *call = cJSON_GetObjectItemCaseSensitive(e, "call");
  const cJSON *dur = cJSON_GetObjectItemCaseSensitive(e, "duration_ms");
  const cJSON *err = cJSON_GetObjectItemCaseSensitive(e, "error");
  const cJSON *sum = cJSON_GetObjectItemCaseSensitive(e, "summary");
  const cJSON *args = cJSON_GetObjectItemCaseSensitive(e, "args");
  const cJSON *code = cJSON_GetObjectItemCaseSensitive(sum, "exit_code");
  const char *status = show_str(e, "status"), *p = show_str(e, "prim");
  show_esc(p, prim, sizeof prim);
  show_put(l, "call %d %s", cJSON_IsNumber(call) ? call->valueint : 0, prim);
  int is_exec = p && strcmp(p, "exec") == 0, is_dexec = p && strcmp(p, "docker_exec") == 0;
  if (!is_exec) show_put_target(l, e);
  if (is_exec || is_dexec) {
    show_put(l, "%s", is_dexec ? ": " : " ");
    show_put_argv(l, cJSON_GetArrayItem(args, is_exec ? 0 : 1));
  }
  if (show_str(e, "tenant")) show_put(l, " [%s]", show_esc(show_str(e, "tenant"), ten, sizeof ten));
  if (!status || strcmp(status, "no result") == 0)
    return show_put(l, "  NO RESULT (crashed during the call? its effect may have happened)");
  const cJSON *may = cJSON_GetObjectItemCaseSensitive(e, "may_have_applied");
  if (strcmp(status, "canceled") == 0)
    show_put(l, "  CANCELED%s",
             cJSON_IsTrue(may) ? " (its request had left: may have been applied)"
                               : " (nothing had been sent)");
  else if (strcmp(status, "ok") != 0)
    show_put(l, "  %s%s",
             strcmp(status, "error") == 0 ? "ERROR" : show_esc(status, msg, sizeof msg),
             cJSON_IsTrue(may) ? " (after its request left: may have been applied)" : "");
  else if (cJSON_IsNumber(code) && code->valueint != 0)
    show_put(l, "  EXIT %d", code->valueint); /* ran, but failed: not "ok" */
  else if (cJSON_IsNumber(code))
    show_put(l, "  exit 0");
  else
    show_put(l, "  ok");
  if (cJSON_IsNumber(dur)) show_put(l, " %.0fms", dur->valuedouble);
  if (err)
    show_put(l, " %s: %s", show_esc(show_str(err, "code"), ten, sizeof ten),
             show_esc(show_str(err, "message"), msg, sizeof msg));
  if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(sum, "dry_run"))) show_put(l, " (dry run)");
  if (p && strcmp(p, "kube_undo") == 0)
    show_put_restored(l, e);
  else
    show_put_fields(l, e);
  if (show_str(sum, "restartedAt"))
    show_put(l, "  restartedAt %s", show_esc(show_str(sum, "restartedAt"), msg, sizeof msg));
}

/* The records that are neither calls nor steps: each kind with its content. */
static void show_text_other(show_line *l, const cJSON *e) {
  char a[512], b[256], c[256], d[64], e2[64];
  const char *kind = show_str(e, "kind");
  const cJSON *f = cJSON_GetObjectItemCaseSensitive(e, "fields");
  if (!kind) kind = "?";
  if (strcmp(kind, "repl") == 0) {
    show_put(l, "repl%s%s%s> %s", show_str(f, "tenant") ? " [" : "",
             show_str(f, "tenant") ? show_esc(show_str(f, "tenant"), b, sizeof b) : "",
             show_str(f, "tenant") ? "]" : "", show_esc(show_str(f, "line"), a, sizeof a));
    if (show_str(f, "error"))
      show_put(l, "  (%s error: not run)", show_esc(show_q(f, "error"), d, sizeof d));
  } else if (strcmp(kind, "module") == 0) {
    show_put(l, "module %s (%s, %.19s)", show_esc(show_q(f, "name"), a, sizeof a),
             show_esc(show_q(f, "path"), b, sizeof b), show_esc(show_q(f, "sha256"), c, sizeof c));
  } else if (strcmp(kind, "secret") == 0) {
    show_put(l, "secret %s read (its value is never recorded)",
             show_esc(show_q(f, "name"), a, sizeof a));
  } else if (strcmp(kind, "failed") == 0) {
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(f, "error");
    const cJSON *call = cJSON_GetObjectItemCaseSensitive(f, "call");
    show_put(l, "!! FAILED call %d %s%s%s%s before its intent (%s): %s: %s",
             cJSON_IsNumber(call) ? call->valueint : 0, show_esc(show_q(f, "prim"), b, sizeof b),
             show_str(f, "tenant") ? " [" : "",
             show_str(f, "tenant") ? show_esc(show_str(f, "tenant"), c, sizeof c) : "",
             show_str(f, "tenant") ? "]" : "", show_esc(show_q(f, "phase"), d, sizeof d),
             show_esc(show_q(err, "code"), e2, sizeof e2),
             show_esc(show_q(err, "message"), a, sizeof a));
  } else if (strcmp(kind, "interrupt") == 0) {
    show_put(l, "!! INTERRUPT: %s", show_esc(show_q(f, "message"), a, sizeof a));
  } else if (strcmp(kind, "warning") == 0) {
    show_put(l, "!! WARNING ");
    show_put_value(l, f, 300);
  } else if (strcmp(kind, "isolation") == 0) {
    const cJSON *score = cJSON_GetObjectItemCaseSensitive(f, "score");
    show_put(l, "isolation [%s] score %.2f ", show_esc(show_q(f, "tenant"), a, sizeof a),
             cJSON_IsNumber(score) ? score->valuedouble : -1.0);
    show_put_value(l, cJSON_GetObjectItemCaseSensitive(f, "findings"), 300);
  } else if (strcmp(kind, "signature") == 0) {
    show_put(l, "signature %s over %.19s... (key %.19s...)",
             show_esc(show_q(f, "alg"), a, sizeof a), show_esc(show_q(f, "head"), b, sizeof b),
             show_esc(show_q(f, "pubkey_sha256"), c, sizeof c));
  } else {
    show_put(l, "%s ", show_esc(kind, a, sizeof a));
    show_put_value(l, f, 300);
  }
}

static void show_text_event(const cJSON *e) {
  char a[256], b[256], c[512];
  show_line l = {.n = 0};
  const char *type = show_str(e, "type");
  const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "offset_ms");
  const cJSON *idx = cJSON_GetObjectItemCaseSensitive(e, "index");
  if (cJSON_IsNumber(off))
    show_put(&l, "  %+10.3fs  ", off->valuedouble / 1000.0);
  else
    show_put(&l, "  %11s  ", "?");
  if (strcmp(type, "call") == 0 || strcmp(type, "result") == 0) {
    show_text_call(&l, e);
  } else if (strcmp(type, "step") == 0) {
    show_put(&l, "step");
    if (cJSON_IsNumber(idx)) show_put(&l, " %d", idx->valueint);
    show_put(&l, " %s: %s", show_esc(show_str(e, "step"), a, sizeof a),
             show_esc(show_str(e, "status"), b, sizeof b));
    if (show_str(e, "detail")) show_put(&l, "  %s", show_esc(show_str(e, "detail"), c, sizeof c));
  } else if (strcmp(type, "refused") == 0) {
    show_put(&l, "!! REFUSED %s", show_esc(show_str(e, "prim"), a, sizeof a));
    if (show_str(e, "tenant")) show_put(&l, " [%s]", show_esc(show_str(e, "tenant"), b, sizeof b));
    show_put(&l, ": %s", show_esc(show_str(e, "reason"), c, sizeof c));
  } else if (strcmp(type, "log") == 0) {
    show_put(&l, "log: %s", show_esc(show_str(e, "message"), c, sizeof c));
  } else {
    show_text_other(&l, e);
  }
  printf("%.*s\n", (int)l.n, l.buf);
}

static void show_text_tenants(const cJSON *ten, char *out, size_t outlen) {
  char tmp[512];
  size_t n = 0;
  const cJSON *t;
  tmp[0] = '\0';
  cJSON_ArrayForEach(t, ten) {
    if (cJSON_IsString(t) && n + strlen(t->valuestring) + 3 < sizeof tmp)
      n += (size_t)snprintf(tmp + n, sizeof tmp - n, "%s%s", n ? ", " : "", t->valuestring);
  }
  show_esc(n ? tmp : "?", out, outlen);
}

static void show_text_header(const cJSON *r) {
  char a[256], b[256], c[256], d[256];
  const cJSON *rb = cJSON_GetObjectItemCaseSensitive(r, "runbook");
  printf("=== run %s  incident %s%s\n", show_esc(show_str(r, "run"), a, sizeof a),
         show_esc(show_str(r, "incident"), b, sizeof b),
         cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "dry_run")) ? "  (DRY RUN)" : "");
  if (!show_str(r, "started")) printf("    (no run_start record)\n");
  show_text_tenants(cJSON_GetObjectItemCaseSensitive(r, "tenants"), a, sizeof a);
  printf("    tenants: %s\n", a);
  if (rb) {
    const char *sha = show_str(rb, "sha256");
    printf("    runbook: %s (%s%s%.19s)\n", show_esc(show_q(rb, "id"), a, sizeof a),
           show_esc(show_q(rb, "path"), b, sizeof b), sha ? ", " : "", sha ? sha : "");
  }
  printf("    started: %s by %s on %s (rbl %s)\n", show_esc(show_q(r, "first_ts"), a, sizeof a),
         show_esc(show_q(r, "user"), b, sizeof b), show_esc(show_q(r, "host"), c, sizeof c),
         show_esc(show_q(r, "rbl_version"), d, sizeof d));
}

static void show_text_run(const cJSON *r) {
  char a[256];
  const cJSON *e;
  show_text_header(r);
  cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(r, "events")) show_text_event(e);
  if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "finished"))) {
    printf("    outcome: UNFINISHED (no run_end record: crashed or still running?)\n\n");
    return;
  }
  const cJSON *code = cJSON_GetObjectItemCaseSensitive(r, "exit_code");
  long long t0 = show_ms(show_str(r, "first_ts")), t1 = show_ms(show_str(r, "ended"));
  printf("    outcome: %s", show_esc(show_str(r, "outcome"), a, sizeof a));
  if (cJSON_IsNumber(code)) printf(" (exit %d)", code->valueint);
  if (t0 >= 0 && t1 >= 0) printf(" after %.3fs", (double)(t1 - t0) / 1000.0);
  printf("%s\n\n", cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "signed")) ? ", signed" : "");
}

static void show_text(const cJSON *doc) {
  const cJSON *r, *bad = cJSON_GetObjectItemCaseSensitive(doc, "unreadable_lines");
  cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(doc, "runs")) show_text_run(r);
  if (cJSON_GetArraySize(bad) > 0) {
    char *s = cJSON_PrintUnformatted(bad);
    printf("unreadable lines (torn write or damage; run `rbl audit verify`): %s\n", s ? s : "?");
    cJSON_free(s);
  }
}

static char *show_read(const char *path, size_t *size) {
  FILE *f = fopen(path, "re");
  if (!f) return NULL;
  size_t cap = 1 << 16, n = 0, r;
  char *buf = malloc(cap);
  while (buf && (r = fread(buf + n, 1, cap - n, f)) > 0) {
    n += r;
    if (n == cap) {
      char *nb = realloc(buf, cap *= 2);
      if (!nb) free(buf);
      buf = nb;
    }
  }
  int bad = ferror(f);
  fclose(f);
  if (bad) {
    free(buf);
    return NULL;
  }
  *size = n;
  return buf;
}

/* The value of option argv[*i] (given as --opt V or --opt=V), or NULL after complaining. */
static const char *show_value(int argc, char **argv, int *i, const char *opt) {
  size_t n = strlen(opt);
  if (strncmp(argv[*i], opt, n) == 0 && argv[*i][n] == '=') return argv[*i] + n + 1;
  if (*i + 1 < argc) return argv[++*i];
  fprintf(stderr, "rbl audit show: %s needs a value\n%s", opt, show_usage);
  return NULL;
}

static int show_is(const char *a, const char *opt) {
  size_t n = strlen(opt);
  return strncmp(a, opt, n) == 0 && (a[n] == '\0' || a[n] == '=');
}

int rbl_audit_show_main(int argc, char **argv) {
  const char *path = NULL;
  int json = 0;
  show_opts o = {.run = NULL, .tenant = NULL, .since = -1, .until = -1};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = NULL;
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) return fputs(show_usage, stdout), 0;
    if (strcmp(a, "--json") == 0) {
      json = 1;
    } else if (show_is(a, "--run") || show_is(a, "--tenant")) {
      if (!(v = show_value(argc, argv, &i, a[2] == 'r' ? "--run" : "--tenant"))) return 2;
      *(a[2] == 'r' ? &o.run : &o.tenant) = v;
    } else if (show_is(a, "--since") || show_is(a, "--until")) {
      int since = a[2] == 's';
      if (!(v = show_value(argc, argv, &i, since ? "--since" : "--until"))) return 2;
      long long t = show_parse_time(v);
      if (t < 0)
        return fprintf(stderr,
                       "rbl audit show: %s '%s': use RFC 3339 (2026-01-17T03:42:15Z, or a prefix "
                       "such as 2026-01-17T03:42) or an age (90s, 15m, 2h, 1d)\n",
                       since ? "--since" : "--until", v),
               2;
      *(since ? &o.since : &o.until) = t;
    } else if (a[0] != '-' && !path) {
      path = a;
    } else {
      return fprintf(stderr, "rbl audit show: bad argument '%s'\n%s", a, show_usage), 2;
    }
  }
  if (!path) return fprintf(stderr, "rbl audit show: PATH is required\n%s", show_usage), 2;
  size_t size = 0;
  errno = 0;
  char *data = show_read(path, &size);
  if (!data)
    return fprintf(stderr, "rbl audit show: %s: %s\n", path, strerror(errno ? errno : EIO)), 2;
  cJSON *doc = show_build(path, data, size);
  free(data);
  int rc = show_filter(doc, &o);
  if (rc == 0 && o.run && cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(doc, "runs")) == 0) {
    fprintf(stderr, "rbl audit show: no run %s in %s\n", o.run, path);
    rc = 2;
  }
  if (rc == 0 && json) {
    /* every number as the chain holds it: integers digit for digit, doubles that round-trip */
    char *s = rbl_jcs_raw_numbers(doc) == 0 ? cJSON_Print(doc) : NULL;
    if (s) {
      puts(s);
    } else {
      fprintf(stderr, "rbl audit show: out of memory\n");
      rc = 2;
    }
    cJSON_free(s);
  } else if (rc == 0) {
    show_text(doc);
  }
  cJSON_Delete(doc);
  fflush(stdout);
  return rc;
}
