/* `rbl audit show`: each run of a chain as a timeline readable at 3 AM (text or one JSON document).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audit.h"
#include "rbl.h"

static const char show_usage[] =
    "usage: rbl audit show PATH [--json]\n"
    "  prints each run of the chain as a timeline: header (incident, tenants, runbook, start,\n"
    "  user, dry run), step transitions, calls with duration and status, refusals, logs, outcome.\n"
    "  It does not check integrity: use `rbl audit verify` for that.\n"
    "  --json  the same as one JSON document\n";

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
  static const char *const fields[] = {"status", "duration_ms", "error", "summary"};
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

static void show_record(cJSON *r, const cJSON *rec, size_t line) {
  static const char *const call_f[] = {"call", "prim", "tenant", "target", "args"};
  static const char *const ref_f[] = {"prim", "tenant", "reason", "call"};
  static const char *const step_f[] = {"step", "index", "status"};
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
    for (size_t i = 0; i < 3; i++)
      show_add(e, step_f[i], show_copy(rec, step_f[i]));
  } else if (strcmp(kind, "log") == 0) {
    show_add(show_event(r, rec, "log", line), "message", show_copy(rec, "message"));
  } else {
    show_add(show_event(r, rec, "other", line), "kind", show_copy(rec, "kind"));
  }
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

/* ---- text ---- */

/* A short description of a call's target: kind/name, a container, or compact JSON. */
static void show_target(const cJSON *e, char *out, size_t outlen) {
  const cJSON *t = cJSON_GetObjectItemCaseSensitive(e, "target");
  char tmp[512];
  out[0] = '\0';
  if (!t || cJSON_IsNull(t)) t = cJSON_GetObjectItemCaseSensitive(e, "args");
  if (!t) return;
  if (cJSON_IsString(t)) {
    show_esc(t->valuestring, out, outlen);
  } else if (show_str(t, "kind") && show_str(t, "name")) {
    const char *ns = show_str(t, "namespace");
    snprintf(tmp, sizeof tmp, "%s/%s%s%s", show_str(t, "kind"), show_str(t, "name"),
             ns ? " ns=" : "", ns ? ns : "");
    show_esc(tmp, out, outlen);
  } else if (show_str(t, "container")) {
    show_esc(show_str(t, "container"), out, outlen);
  } else {
    char *s = cJSON_PrintUnformatted(t);
    show_esc(s, out, outlen < 100 ? outlen : 100);
    free(s);
  }
}

static void show_text_call(const cJSON *e) {
  char prim[128], tgt[256], ten[128], msg[512];
  const cJSON *call = cJSON_GetObjectItemCaseSensitive(e, "call");
  const cJSON *dur = cJSON_GetObjectItemCaseSensitive(e, "duration_ms");
  const cJSON *err = cJSON_GetObjectItemCaseSensitive(e, "error");
  const char *status = show_str(e, "status");
  char *cs = call ? cJSON_PrintUnformatted(call) : NULL;
  show_target(e, tgt, sizeof tgt);
  printf("call %s %s %s [%s]", cs ? cs : "?", show_esc(show_str(e, "prim"), prim, sizeof prim), tgt,
         show_esc(show_str(e, "tenant"), ten, sizeof ten));
  free(cs);
  if (!status || strcmp(status, "no result") == 0) {
    printf("  NO RESULT (crashed during the call? its effect may have happened)\n");
    return;
  }
  printf("  %s", strcmp(status, "ok") == 0 ? "ok" : "ERROR");
  if (cJSON_IsNumber(dur)) printf(" %.0fms", dur->valuedouble);
  if (err)
    printf(" %s: %s", show_esc(show_str(err, "code"), ten, sizeof ten),
           show_esc(show_str(err, "message"), msg, sizeof msg));
  printf("\n");
}

static void show_text_event(const cJSON *e) {
  char a[256], b[256], c[512];
  const char *type = show_str(e, "type");
  const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "offset_ms");
  const cJSON *idx = cJSON_GetObjectItemCaseSensitive(e, "index");
  if (cJSON_IsNumber(off))
    printf("  %+10.3fs  ", off->valuedouble / 1000.0);
  else
    printf("  %11s  ", "?");
  if (strcmp(type, "call") == 0 || strcmp(type, "result") == 0) return show_text_call(e);
  if (strcmp(type, "step") == 0) {
    printf("step");
    if (cJSON_IsNumber(idx)) printf(" %d", idx->valueint);
    printf(" %s: %s\n", show_esc(show_str(e, "step"), a, sizeof a),
           show_esc(show_str(e, "status"), b, sizeof b));
  } else if (strcmp(type, "refused") == 0) {
    printf("!! REFUSED %s [%s]: %s\n", show_esc(show_str(e, "prim"), a, sizeof a),
           show_esc(show_str(e, "tenant"), b, sizeof b),
           show_esc(show_str(e, "reason"), c, sizeof c));
  } else if (strcmp(type, "log") == 0) {
    printf("log: %s\n", show_esc(show_str(e, "message"), c, sizeof c));
  } else {
    printf("(%s record)\n", show_esc(show_str(e, "kind"), a, sizeof a));
  }
}

/* The string field, or "?" when the record did not carry it. */
static const char *show_q(const cJSON *o, const char *name) {
  const char *s = show_str(o, name);
  return s ? s : "?";
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
    free(s);
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

int rbl_audit_show_main(int argc, char **argv) {
  const char *path = NULL;
  int json = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
      return fputs(show_usage, stdout), 0;
    if (strcmp(argv[i], "--json") == 0)
      json = 1;
    else if (argv[i][0] != '-' && !path)
      path = argv[i];
    else
      return fprintf(stderr, "rbl audit show: bad argument '%s'\n%s", argv[i], show_usage), 2;
  }
  if (!path) return fprintf(stderr, "rbl audit show: PATH is required\n%s", show_usage), 2;
  size_t size = 0;
  errno = 0;
  char *data = show_read(path, &size);
  if (!data)
    return fprintf(stderr, "rbl audit show: %s: %s\n", path, strerror(errno ? errno : EIO)), 2;
  cJSON *doc = show_build(path, data, size);
  free(data);
  if (json) {
    char *s = cJSON_Print(doc);
    if (s) puts(s);
    free(s);
  } else {
    show_text(doc);
  }
  cJSON_Delete(doc);
  fflush(stdout);
  return 0;
}
