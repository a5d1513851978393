/* `rbl audit verify`: proves a chain untouched and names the first bad record and why. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "audit.h"
#include "ossl_dl.h"
#include "rbl.h"
#include "sha256.h"

/* What verify knows of one hash it has seen: for duplicate / reorder diagnoses. */
typedef struct vseen {
  unsigned char hash[32];
  size_t line;
} vseen;

/* One run: a stretch of consecutive records with the same "run". Owns id and open[]. */
typedef struct vrun {
  char *id;
  size_t first_line, last_line;
  int started, ended, signed_last;
  char **open; /* calls with an intent and no result yet */
  size_t nopen, capopen;
} vrun;

/* The whole verification; owns every pointer in it (freed by verify_free). */
typedef struct vctx {
  const char *path, *want_head;
  int json;
  unsigned char *key;
  size_t keylen;
  EVP_PKEY *pub;
  char pub_fpr[RBL_AUDIT_HASH_LEN + 1];
  const char *data;
  size_t size;
  rbl_audit_hasher *hasher;
  rbl_jcs_buf buf;
  char *incident;
  char last_hash[RBL_AUDIT_HASH_LEN + 1];
  size_t records, last_line;
  vseen *seen;
  size_t capseen;
  vrun *runs;
  size_t nruns;
  size_t head_line;
  size_t sigs, macs;
  int broken;
  size_t bad_line;
  int64_t bad_seq;
  const char *reason;
  char msg[768];
  cJSON *notes;   /* array of strings */
  cJSON *collect; /* rbl_audit_verify_file: every verified record, in order; or NULL */
} vctx;

static const char verify_usage[] =
    "usage: rbl audit verify PATH [--key FILE] [--pubkey FILE] [--head sha256:HEX] [--json]\n"
    "  --key FILE      check the HMAC-SHA256 \"mac\" of every record (the key the run used)\n"
    "  --pubkey FILE   Ed25519 public key (PEM): every run must end with a valid signature\n"
    "  --head H        the file must reach this head (e.g. the report's audit_chain)\n"
    "  --json          print the result as one JSON object\n"
    "exit status: 0 intact (possibly unfinished runs or a torn tail), 1 broken, 2 unreadable or "
    "bad usage\n";

static int verify_fail(vctx *v, size_t line, int64_t seq, const char *reason, const char *fmt,
                       ...) {
  if (v->broken) return -1;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(v->msg, sizeof v->msg, fmt, ap);
  va_end(ap);
  v->broken = 1;
  v->bad_line = line;
  v->bad_seq = seq;
  v->reason = reason;
  return -1;
}

static void verify_note(vctx *v, const char *fmt, ...) {
  char m[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(m, sizeof m, fmt, ap);
  va_end(ap);
  cJSON_AddItemToArray(v->notes, cJSON_CreateString(m));
}

static int verify_unhex(const char *h, unsigned char out[32]) {
  if (strncmp(h, "sha256:", 7) != 0 || strlen(h) != RBL_AUDIT_HASH_LEN) return -1;
  for (int i = 0; i < 32; i++) {
    unsigned v = 0;
    for (int k = 0; k < 2; k++) {
      char c = h[7 + 2 * i + k];
      unsigned d = c >= '0' && c <= '9'   ? (unsigned)(c - '0')
                   : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
                                          : 99;
      if (d == 99) return -1;
      v = v * 16 + d;
    }
    out[i] = (unsigned char)v;
  }
  return 0;
}

static const char *verify_str(const cJSON *rec, const char *name) {
  return cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(rec, name));
}

/* ---- runs ---- */

static char *verify_call_key(const cJSON *call) {
  if (cJSON_IsString(call)) return strdup(call->valuestring);
  return call ? rbl_jcs_string(call, NULL) : NULL;
}

static vrun *verify_run(vctx *v, const char *id, size_t line) {
  vrun *r = v->nruns ? &v->runs[v->nruns - 1] : NULL;
  if (r && strcmp(r->id, id) == 0) return r;
  vrun *n = realloc(v->runs, (v->nruns + 1) * sizeof *n);
  if (!n) return NULL;
  v->runs = n;
  r = &n[v->nruns++];
  memset(r, 0, sizeof *r);
  r->id = strdup(id);
  r->first_line = line;
  return r->id ? r : NULL;
}

static void verify_track_call(vrun *r, const char *kind, const cJSON *rec) {
  char *key = verify_call_key(cJSON_GetObjectItemCaseSensitive(rec, "call"));
  if (!key) return;
  if (strcmp(kind, "intent") == 0) {
    if (r->nopen == r->capopen) {
      size_t cap = r->capopen ? r->capopen * 2 : 8;
      char **n = realloc(r->open, cap * sizeof *n);
      if (!n) {
        free(key);
        return;
      }
      r->open = n;
      r->capopen = cap;
    }
    r->open[r->nopen++] = key;
    return;
  }
  for (size_t i = r->nopen; i-- > 0;) { /* results mostly follow their intent closely */
    if (strcmp(r->open[i], key) == 0) {
      free(r->open[i]);
      r->open[i] = r->open[--r->nopen];
      break;
    }
  }
  free(key);
}

/* With --pubkey every run must end with a valid signature record. */
static int verify_run_end(vctx *v, vrun *r) {
  if (!r || !v->pub || r->signed_last) return 0;
  return verify_fail(v, r->last_line, -1, "unsigned",
                     "unsigned: run %s (lines %zu-%zu) does not end with a signature record, and "
                     "--pubkey requires one",
                     r->id, r->first_line, r->last_line);
}

/* ---- signatures ---- */

static int verify_signature(vctx *v, const cJSON *rec, size_t line, int64_t seq) {
  const char *alg = verify_str(rec, "alg"), *head = verify_str(rec, "head");
  const char *sig = verify_str(rec, "sig"), *fpr = verify_str(rec, "pubkey_sha256");
  const char *prev = verify_str(rec, "prev");
  v->sigs++;
  if (!alg || strcmp(alg, "ed25519") != 0 || !head || !sig || !fpr)
    return verify_fail(v, line, seq, "bad_signature",
                       "bad signature: not an ed25519 signature record");
  if (strcmp(head, prev) != 0)
    return verify_fail(v, line, seq, "bad_signature",
                       "bad signature: its head is not the previous record");
  if (!v->pub) return 1;
  if (strcmp(fpr, v->pub_fpr) != 0)
    return verify_fail(v, line, seq, "bad_signature",
                       "bad signature: signed by another key (pubkey_sha256 %.80s, --pubkey is %s)",
                       fpr, v->pub_fpr);
  unsigned char raw[80];
  size_t slen = strlen(sig), mlen = 0;
  int n = slen == 88 ? EVP_DecodeBlock(raw, (const unsigned char *)sig, 88) : -1;
  char *msg = rbl_audit_sig_message(v->incident, head, &mlen);
  EVP_MD_CTX *c = EVP_MD_CTX_new();
  int ok = n == 66 && msg && c && EVP_DigestVerifyInit(c, NULL, NULL, NULL, v->pub) == 1 &&
           EVP_DigestVerify(c, raw, 64, (const unsigned char *)msg, mlen) == 1;
  EVP_MD_CTX_free(c);
  free(msg);
  if (!ok)
    return verify_fail(v, line, seq, "bad_signature", "bad signature: Ed25519 verification failed");
  return 1;
}

/* ---- continuity diagnoses ---- */

/* The line of the record with this seq later in the file, or 0. */
static size_t verify_find_later(vctx *v, const char *from, size_t line, int64_t seq) {
  const char *p = from, *end = v->data + v->size;
  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p)), *le = nl ? nl : end;
    line++;
    cJSON *j = cJSON_ParseWithLength(p, (size_t)(le - p));
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "seq");
    int hit = cJSON_IsNumber(s) && s->valuedouble == (double)seq;
    cJSON_Delete(j);
    if (hit) return line;
    p = nl ? nl + 1 : end;
  }
  return 0;
}

static int verify_link(vctx *v, int64_t seq, const char *prev, const unsigned char *h, size_t line,
                       const char *next) {
  int64_t want = (int64_t)v->records;
  char genesis[RBL_AUDIT_HASH_LEN + 1];
  if (seq == want) {
    if (v->records == 0) {
      rbl_audit_genesis(v->incident, genesis);
      if (strcmp(prev, genesis) == 0) return 0;
      return verify_fail(v, line, seq, "missing",
                         "missing: the first record's prev is not the genesis "
                         "of incident %s (earlier records deleted, or the record was replaced)",
                         v->incident);
    }
    if (strcmp(prev, v->last_hash) == 0) return 0;
    return verify_fail(v, line, seq, "modified",
                       "modified: prev does not match the hash of the record "
                       "before it (line %zu, seq %" PRId64
                       "): that record was modified or this one replaced",
                       v->last_line, seq - 1);
  }
  if (seq < want) {
    const vseen *s = &v->seen[seq];
    if (memcmp(s->hash, h, 32) == 0)
      return verify_fail(v, line, seq, "duplicated",
                         "duplicated: a copy of line %zu (seq %" PRId64 ")", s->line, seq);
    return verify_fail(v, line, seq, "reordered",
                       "reordered or inserted: seq %" PRId64 " was already at "
                       "line %zu, expected seq %" PRId64,
                       seq, s->line, want);
  }
  size_t later = verify_find_later(v, next, line, want);
  if (later)
    return verify_fail(v, line, seq, "reordered",
                       "reordered: expected seq %" PRId64 " here, found seq %" PRId64
                       "; seq %" PRId64 " comes later, at line %zu",
                       want, seq, want, later);
  if (seq == want + 1)
    return verify_fail(v, line, seq, "missing", "missing: record seq %" PRId64 " was deleted",
                       want);
  return verify_fail(v, line, seq, "missing",
                     "missing: records seq %" PRId64 "..%" PRId64 " were deleted", want, seq - 1);
}

/* ---- one record ---- */

/* Checks the line is the canonical form of rec and its hash (and mac) are right. */
static int verify_content(vctx *v, const cJSON *rec, const char *p, size_t n, size_t line,
                          int64_t seq, const char *hash) {
  static const char *const omit[] = {"hash", "mac"};
  rbl_jcs_piece pieces[8];
  size_t np = 0;
  char h[RBL_AUDIT_HASH_LEN + 1], mac[RBL_AUDIT_MAC_LEN + 1];
  v->buf.len = 0;
  if (rbl_jcs_append_omit(&v->buf, rec, omit, 2, pieces, &np) < 0)
    return verify_fail(v, line, seq, "modified",
                       "modified: not canonicalizable JSON (duplicate key, bad UTF-8 or number)");
  if (v->buf.len != n || memcmp(v->buf.data, p, n) != 0)
    return verify_fail(v, line, seq, "modified",
                       "modified: the line is not in the canonical form the writer wrote");
  if (rbl_audit_hasher_run(v->hasher, v->buf.data, pieces, np, h, v->key ? mac : NULL) < 0)
    return verify_fail(v, line, seq, "modified", "cannot hash (OpenSSL failure)");
  if (strcmp(h, hash) != 0)
    return verify_fail(v, line, seq, "modified", "modified: the content does not match its hash");
  const char *m = verify_str(rec, "mac");
  if (m) v->macs++;
  if (v->key && !m)
    return verify_fail(v, line, seq, "bad_mac", "bad MAC: the record has no mac (--key given)");
  if (v->key && strcmp(m, mac) != 0)
    return verify_fail(v, line, seq, "bad_mac",
                       "bad MAC: the mac does not match (wrong key, or the record was rewritten)");
  return 0;
}

/* Torn bytes before this record: accepted only when this record's "torn" seals exactly them. */
static int verify_torn(vctx *v, const cJSON *rec, size_t line, int64_t seq, size_t region,
                       size_t region_line, const char *p) {
  const cJSON *t = cJSON_GetObjectItemCaseSensitive(rec, "torn");
  if (region == SIZE_MAX && !t) return 0;
  if (!t)
    return verify_fail(v, region_line, -1, "corrupt",
                       "corrupt: line %zu is not a JSON record (garbage in "
                       "the middle of the chain, not sealed as a torn write)",
                       region_line);
  if (region == SIZE_MAX)
    return verify_fail(v, line, seq, "modified",
                       "modified: the torn bytes this record seals are gone");
  const cJSON *bytes = cJSON_GetObjectItemCaseSensitive(t, "bytes");
  const char *sha = verify_str(t, "sha256");
  size_t n = (size_t)(p - (v->data + region)) - 1; /* without the '\n' that ends the region */
  char got[RBL_AUDIT_HASH_LEN + 1];
  unsigned char md[32];
  rbl_sha256(v->data + region, n, md);
  memcpy(got, "sha256:", 7);
  rbl_audit_hex(md, 32, got + 7);
  if (!cJSON_IsNumber(bytes) || bytes->valuedouble != (double)n || !sha || strcmp(sha, got) != 0)
    return verify_fail(v, region_line, -1, "corrupt",
                       "corrupt: lines %zu-%zu are not records and differ "
                       "from the torn write sealed by line %zu",
                       region_line, line - 1, line);
  verify_note(v, "torn write at line %zu (%zu bytes, crash during write), sealed by line %zu",
              region_line, n, line);
  return 0;
}

static int verify_fields(vctx *v, const cJSON *rec, size_t line, int64_t *seq) {
  static const char *const need[] = {"hash", "prev", "incident", "run", "kind", "ts"};
  const cJSON *s = cJSON_GetObjectItemCaseSensitive(rec, "seq");
  *seq = -1;
  if (!cJSON_IsNumber(s) || s->valuedouble < 0 || s->valuedouble != floor(s->valuedouble) ||
      s->valuedouble > 9007199254740992.0)
    return verify_fail(v, line, -1, "modified", "modified: no valid \"seq\"");
  *seq = (int64_t)s->valuedouble;
  for (size_t i = 0; i < sizeof need / sizeof *need; i++)
    if (!verify_str(rec, need[i]))
      return verify_fail(v, line, *seq, "modified", "modified: no string \"%s\"", need[i]);
  return 0;
}

static int verify_remember(vctx *v, const char *hash, const unsigned char *h, size_t line) {
  if (v->records == v->capseen) {
    size_t cap = v->capseen ? v->capseen * 2 : 1024;
    vseen *n = realloc(v->seen, cap * sizeof *n);
    if (!n) return RBL_ENOMEM;
    v->seen = n;
    v->capseen = cap;
  }
  memcpy(v->seen[v->records].hash, h, 32);
  v->seen[v->records].line = line;
  memcpy(v->last_hash, hash, sizeof v->last_hash);
  v->last_line = line;
  v->records++;
  if (v->want_head && strcmp(hash, v->want_head) == 0) v->head_line = line;
  return 0;
}

static int verify_kind(vctx *v, const cJSON *rec, size_t line, int64_t seq) {
  const char *kind = verify_str(rec, "kind"), *run = verify_str(rec, "run");
  vrun *r = v->nruns ? &v->runs[v->nruns - 1] : NULL;
  if (r && strcmp(r->id, run) != 0 && verify_run_end(v, r) < 0) return -1;
  if (!(r = verify_run(v, run, line))) return RBL_ENOMEM;
  r->last_line = line;
  r->signed_last = 0;
  if (strcmp(kind, "run_start") == 0)
    r->started = 1;
  else if (strcmp(kind, "run_end") == 0)
    r->ended = 1;
  else if (strcmp(kind, "intent") == 0 || strcmp(kind, "result") == 0)
    verify_track_call(r, kind, rec);
  else if (strcmp(kind, "signature") == 0) {
    int rc = verify_signature(v, rec, line, seq);
    if (rc < 0) return rc;
    r->signed_last = 1;
  }
  return 0;
}

static int verify_record(vctx *v, const cJSON *rec, const char *p, size_t n, size_t line,
                         size_t region, size_t region_line) {
  int64_t seq;
  unsigned char h[32];
  if (verify_fields(v, rec, line, &seq) < 0) return -1;
  const char *hash = verify_str(rec, "hash"), *inc = verify_str(rec, "incident");
  if (verify_content(v, rec, p, n, line, seq, hash) < 0 || verify_unhex(hash, h) < 0) return -1;
  if (!v->incident && !(v->incident = strdup(inc))) return RBL_ENOMEM;
  if (strcmp(inc, v->incident) != 0)
    return verify_fail(v, line, seq, "wrong_incident",
                       "wrong incident: the record belongs to incident "
                       "%.100s, the chain to %.100s (spliced from another chain)",
                       inc, v->incident);
  if (verify_torn(v, rec, line, seq, region, region_line, p) < 0) return -1;
  if (verify_link(v, seq, verify_str(rec, "prev"), h, line, p + n + (p + n < v->data + v->size)) <
      0)
    return -1;
  if (verify_kind(v, rec, line, seq) < 0) return -1;
  if (v->collect && !cJSON_AddItemToArray(v->collect, cJSON_Duplicate(rec, 1))) return RBL_ENOMEM;
  return verify_remember(v, hash, h, line);
}

/* ---- the file ---- */

static int verify_lines(vctx *v) {
  const char *p = v->data, *end = v->data + v->size;
  size_t line = 0, region = SIZE_MAX, region_line = 0;
  while (p < end && !v->broken) {
    const char *nl = memchr(p, '\n', (size_t)(end - p)), *le = nl ? nl : end, *pe = NULL;
    line++;
    cJSON *j = cJSON_ParseWithLengthOpts(p, (size_t)(le - p), &pe, 0);
    if (!j && region == SIZE_MAX) {
      region = (size_t)(p - v->data);
      region_line = line;
    }
    if (j && (pe != le || !cJSON_IsObject(j)))
      verify_fail(v, line, -1, "modified", "modified: the line is not a single JSON object");
    else if (j && verify_record(v, j, p, (size_t)(le - p), line, region, region_line) == RBL_ENOMEM)
      verify_fail(v, line, -1, "error", "out of memory");
    if (j) region = SIZE_MAX;
    cJSON_Delete(j);
    p = nl ? nl + 1 : end;
  }
  if (v->broken || region == SIZE_MAX) return 0;
  if (v->size && v->data[v->size - 1] == '\n')
    return verify_fail(v, region_line, -1, "corrupt",
                       "corrupt: line %zu is not a JSON record (garbage "
                       "at the end, not a torn write: it ends with a newline)",
                       region_line);
  verify_note(v, "torn tail (crash during write): line %zu, %zu bytes ignored", region_line,
              v->size - region);
  return 0;
}

static void verify_finish(vctx *v) {
  if (!v->broken && v->nruns) verify_run_end(v, &v->runs[v->nruns - 1]);
  if (!v->broken && v->want_head && !v->head_line)
    verify_fail(v, v->last_line, v->records ? (int64_t)v->records - 1 : -1, "truncated",
                "truncated: head %s not reached (the file ends at %s)", v->want_head,
                v->records ? v->last_hash : "no record");
  else if (!v->broken && v->want_head && v->head_line != v->last_line)
    verify_note(v, "head %s is at line %zu; the chain continues after it", v->want_head,
                v->head_line);
  for (size_t i = 0; i < v->nruns && !v->broken; i++) {
    vrun *r = &v->runs[i];
    char calls[160] = "";
    if (r->ended && !r->nopen) continue;
    if (r->nopen)
      snprintf(
          calls, sizeof calls,
          "%s%zu intent(s) without a result (their effect may have happened), first call %.60s",
          r->ended ? "" : "; ", r->nopen, r->open[0]);
    verify_note(v, "run %s (line %zu) unfinished (crashed?): %s%s", r->id, r->first_line,
                r->ended ? "" : "no run_end", calls);
  }
  if (!v->broken && v->nruns && !v->runs[v->nruns - 1].ended && !v->want_head)
    verify_note(v,
                "the last run (%s, line %zu) has no run_end: the chain may have been cut after "
                "line %zu (a crash, or records removed from the end: %s); check it with --head "
                "and the report's audit_chain, or sign runs and verify with --pubkey",
                v->runs[v->nruns - 1].id, v->runs[v->nruns - 1].first_line, v->last_line,
                v->key ? "a MAC cannot show that" : "neither hashes nor a MAC can show that");
  if (!v->key && v->macs) verify_note(v, "records carry a mac; not checked (no --key)");
  if (!v->pub && v->sigs)
    verify_note(v, "%zu signature record(s); not checked (no --pubkey)", v->sigs);
}

/* ---- output ---- */

/* The first line `rbl audit verify` prints for a broken chain. */
static void verify_broken_line(vctx *v, char *out, size_t n) {
  char seq[32] = "";
  if (v->bad_seq >= 0) snprintf(seq, sizeof seq, ", seq %" PRId64, v->bad_seq);
  if (strcmp(v->reason, "truncated") == 0)
    snprintf(out, n, "%s: BROKEN: %s", v->path, v->msg);
  else
    snprintf(out, n, "%s: BROKEN at line %zu%s: %s", v->path, v->bad_line, seq, v->msg);
}

static void verify_print_text(vctx *v) {
  cJSON *n;
  cJSON_ArrayForEach(n, v->notes) printf("%s: note: %s\n", v->path, n->valuestring);
  if (v->broken) {
    char line[1200];
    verify_broken_line(v, line, sizeof line);
    puts(line);
    printf("%s: %zu records verified before it, %zu run(s), last good head %s\n", v->path,
           v->records, v->nruns, v->records ? v->last_hash : "(none)");
    return;
  }
  printf("%s: intact: %zu records, %zu run(s), head %s\n", v->path, v->records, v->nruns,
         v->records ? v->last_hash : "(empty)");
}

static void verify_print_json(vctx *v) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "path", v->path);
  cJSON_AddBoolToObject(o, "intact", !v->broken);
  cJSON_AddNumberToObject(o, "records", (double)v->records);
  cJSON_AddNumberToObject(o, "runs", (double)v->nruns);
  if (v->records)
    cJSON_AddStringToObject(o, "head", v->last_hash);
  else
    cJSON_AddNullToObject(o, "head");
  if (v->broken) {
    cJSON *e = cJSON_AddObjectToObject(o, "error");
    cJSON_AddNumberToObject(e, "line", (double)v->bad_line);
    if (v->bad_seq >= 0) cJSON_AddNumberToObject(e, "seq", (double)v->bad_seq);
    cJSON_AddStringToObject(e, "reason", v->reason);
    cJSON_AddStringToObject(e, "message", v->msg);
  }
  cJSON_AddItemToObject(o, "notes", v->notes);
  v->notes = NULL;
  char *s = cJSON_Print(o);
  if (s) puts(s);
  cJSON_free(s);
  cJSON_Delete(o);
}

/* ---- setup ---- */

static int verify_load_pub(vctx *v, const char *path) {
  char why[320];
  if (rbl_ossl_load(why, sizeof why) != 0) {
    fprintf(stderr, "rbl audit verify: --pubkey %s: %s\n", path, why);
    return -1;
  }
  FILE *f = fopen(path, "re");
  if (!f) {
    fprintf(stderr, "rbl audit verify: --pubkey %s: %s\n", path, strerror(errno));
    return -1;
  }
  v->pub = PEM_read_PUBKEY(f, NULL, NULL, NULL);
  fclose(f);
  unsigned char raw[32];
  size_t rawlen = sizeof raw;
  if (!v->pub || EVP_PKEY_get_id(v->pub) != EVP_PKEY_ED25519 ||
      EVP_PKEY_get_raw_public_key(v->pub, raw, &rawlen) != 1) {
    fprintf(stderr, "rbl audit verify: --pubkey %s: not an Ed25519 public key (PEM)\n", path);
    return -1;
  }
  unsigned char md[32];
  rbl_sha256(raw, rawlen, md);
  memcpy(v->pub_fpr, "sha256:", 7);
  rbl_audit_hex(md, 32, v->pub_fpr + 7);
  return 0;
}

static int verify_args(vctx *v, int argc, char **argv, int *help) {
  const char *key = NULL, *pub = NULL;
  unsigned char tmp[32];
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    int more = i + 1 < argc;
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)
      *help = 1;
    else if (strcmp(a, "--json") == 0)
      v->json = 1;
    else if (strcmp(a, "--key") == 0 && more)
      key = argv[++i];
    else if (strcmp(a, "--pubkey") == 0 && more)
      pub = argv[++i];
    else if (strcmp(a, "--head") == 0 && more)
      v->want_head = argv[++i];
    else if (a[0] != '-' && !v->path)
      v->path = a;
    else {
      fprintf(stderr, "rbl audit verify: %s '%s'\n", a[0] == '-' ? "bad option" : "extra argument",
              a);
      return -1;
    }
  }
  if (*help) return 0;
  if (!v->path) return fprintf(stderr, "rbl audit verify: PATH is required\n"), -1;
  if (v->want_head && verify_unhex(v->want_head, tmp) < 0)
    return fprintf(stderr, "rbl audit verify: --head must be sha256:<64 lower-case hex>\n"), -1;
  char err[512];
  if (key && rbl_audit_load_key(key, &v->key, &v->keylen, err, sizeof err) < 0)
    return fprintf(stderr, "rbl audit verify: %s\n", err), -1;
  if (pub && verify_load_pub(v, pub) < 0) return -1;
  return 0;
}

static int verify_map(vctx *v) {
  int fd = open(v->path, O_RDONLY | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) < 0) {
    fprintf(stderr, "rbl audit verify: %s: %s\n", v->path, strerror(errno));
    if (fd >= 0) close(fd);
    return -1;
  }
  v->size = (size_t)st.st_size;
  v->data = "";
  if (v->size) {
    void *m = mmap(NULL, v->size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
      fprintf(stderr, "rbl audit verify: %s: %s\n", v->path, strerror(errno));
      close(fd);
      return -1;
    }
    madvise(m, v->size, MADV_SEQUENTIAL);
    v->data = m;
  }
  close(fd);
  return 0;
}

static void verify_free(vctx *v) {
  if (v->size) munmap((void *)v->data, v->size);
  if (v->key) explicit_bzero(v->key, v->keylen);
  free(v->key);
  if (v->pub) EVP_PKEY_free(v->pub);
  rbl_audit_hasher_free(v->hasher);
  rbl_jcs_buf_free(&v->buf);
  free(v->incident);
  free(v->seen);
  for (size_t i = 0; i < v->nruns; i++) {
    for (size_t k = 0; k < v->runs[i].nopen; k++)
      free(v->runs[i].open[k]);
    free(v->runs[i].open);
    free(v->runs[i].id);
  }
  free(v->runs);
  cJSON_Delete(v->notes);
  cJSON_Delete(v->collect);
}

int rbl_audit_verify_file(const char *path, const char *key_file, const char *pub_file,
                          rbl_audit_verified *out, char *msg, size_t n) {
  vctx v;
  memset(&v, 0, sizeof v);
  memset(out, 0, sizeof *out);
  v.path = path;
  v.notes = cJSON_CreateArray();
  v.collect = cJSON_CreateArray();
  int rc = 2;
  char err[512];
  if (!v.notes || !v.collect)
    snprintf(msg, n, "out of memory");
  else if (key_file && rbl_audit_load_key(key_file, &v.key, &v.keylen, err, sizeof err) < 0)
    snprintf(msg, n, "%s", err);
  else if (pub_file && verify_load_pub(&v, pub_file) < 0)
    snprintf(msg, n, "--pubkey %s: not a readable Ed25519 public key (PEM)", pub_file);
  else if (v.key && rbl_ossl_load(err, sizeof err) != 0)
    snprintf(msg, n, "%s", err);
  else if (!(v.hasher = rbl_audit_hasher_new(v.key, v.keylen)))
    snprintf(msg, n, "out of memory");
  else if (verify_map(&v) != 0)
    snprintf(msg, n, "%s: cannot read it", path);
  else {
    verify_lines(&v);
    verify_finish(&v);
    if (v.broken) {
      verify_broken_line(&v, msg, n);
      rc = 1;
    } else {
      rc = 0;
      out->records = v.collect;
      v.collect = NULL;
      out->notes = v.notes;
      v.notes = NULL;
      out->macs = v.macs;
      out->sigs = v.sigs;
      out->keyed = v.key != NULL;
      out->pubkeyed = v.pub != NULL;
      snprintf(out->head, sizeof out->head, "%s", v.records ? v.last_hash : "");
    }
  }
  verify_free(&v);
  return rc;
}

int rbl_audit_verify_main(int argc, char **argv) {
  vctx v;
  char err[320];
  int help = 0, rc = 2;
  memset(&v, 0, sizeof v);
  v.notes = cJSON_CreateArray();
  if (verify_args(&v, argc, argv, &help) < 0) {
    fputs(verify_usage, stderr);
  } else if (help) {
    fputs(verify_usage, stdout);
    rc = 0;
  } else if (v.key && rbl_ossl_load(err, sizeof err) != 0) {
    fprintf(stderr, "rbl audit verify: %s\n", err);
  } else if (!(v.hasher = rbl_audit_hasher_new(v.key, v.keylen)) || !v.notes) {
    fprintf(stderr, "rbl audit verify: out of memory\n");
  } else if (verify_map(&v) == 0) {
    verify_lines(&v);
    verify_finish(&v);
    if (v.json)
      verify_print_json(&v);
    else
      verify_print_text(&v);
    rc = v.broken ? 1 : 0;
  }
  fflush(stdout);
  verify_free(&v);
  return rc;
}
