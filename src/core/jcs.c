/* RFC 8785 (JCS): canonical JSON text of a cJSON value, the input of every audit hash. */
#include "jcs.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rbl.h"

/* One member of an object being written: its item, and where it landed in the buffer. */
typedef struct jcs_member {
  const cJSON *item;
  size_t start, end;
} jcs_member;

static int jcs_value(rbl_jcs_buf *b, const cJSON *item);

void rbl_jcs_buf_free(rbl_jcs_buf *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

static int jcs_reserve(rbl_jcs_buf *b, size_t n) {
  if (b->cap - b->len > n) return 0;
  size_t cap = b->cap ? b->cap : 256;
  while (cap - b->len <= n) {
    if (cap > SIZE_MAX / 2) return RBL_ENOMEM;
    cap *= 2;
  }
  char *p = realloc(b->data, cap);
  if (!p) return RBL_ENOMEM;
  b->data = p;
  b->cap = cap;
  return 0;
}

int rbl_jcs_buf_put(rbl_jcs_buf *b, const void *p, size_t n) {
  if (jcs_reserve(b, n) < 0) return RBL_ENOMEM;
  memcpy(b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = '\0';
  return 0;
}

static int jcs_putc(rbl_jcs_buf *b, char c) {
  if (b->cap - b->len <= 1 && jcs_reserve(b, 1) < 0) return RBL_ENOMEM;
  b->data[b->len++] = c;
  b->data[b->len] = '\0';
  return 0;
}

/* Formats the shortest round-tripping decimal digits of v (v finite, non-zero, positive):
 * digits into d (no dot, no trailing zeros), returns the count; *n is the decimal exponent
 * such that v = 0.d * 10^n. */
static int jcs_shortest(double v, char *d, int *n) {
  char tmp[40];
  for (int p = 1; p <= 17; p++) {
    snprintf(tmp, sizeof tmp, "%.*e", p - 1, v);
    if (strtod(tmp, NULL) == v || p == 17) break;
  }
  int k = 0;
  const char *s = tmp;
  for (; *s && *s != 'e'; s++)
    if (*s >= '0' && *s <= '9') d[k++] = *s;
  while (k > 1 && d[k - 1] == '0')
    k--;
  d[k] = '\0';
  *n = atoi(s + 1) + 1;
  return k;
}

int rbl_jcs_number(double v, char *out) {
  if (!isfinite(v)) return RBL_EINVAL;
  if (v == 0) return (int)strlen(strcpy(out, "0")); /* -0 too */
  if (fabs(v) < 9007199254740992.0 && v == trunc(v)) return snprintf(out, 32, "%lld", (long long)v);
  char d[24], *o = out;
  int n, k = jcs_shortest(fabs(v), d, &n);
  if (v < 0) *o++ = '-';
  if (k <= n && n <= 21) {
    o += sprintf(o, "%s%.*s", d, n - k, "000000000000000000000");
  } else if (0 < n && n <= 21) {
    o += sprintf(o, "%.*s.%s", n, d, d + n);
  } else if (-6 < n && n <= 0) {
    o += sprintf(o, "0.%.*s%s", -n, "000000", d);
  } else {
    int e = n - 1;
    o += sprintf(o, "%c%s%s%s", d[0], k > 1 ? "." : "", d + 1, "e");
    o += sprintf(o, "%c%d", e < 0 ? '-' : '+', e < 0 ? -e : e);
  }
  return (int)(o - out);
}

int rbl_jcs_raw_numbers(cJSON *j) {
  for (cJSON *c = j; c; c = c->next) {
    if (cJSON_IsNumber(c)) {
      char num[32];
      int n = rbl_jcs_number(c->valuedouble, num);
      if (n > 0) { /* a number's valuestring is NULL: nothing to free */
        c->valuestring = cJSON_malloc((size_t)n + 1);
        if (!c->valuestring) return RBL_ENOMEM;
        memcpy(c->valuestring, num, (size_t)n + 1);
        c->type = cJSON_Raw | (c->type & cJSON_StringIsConst);
      }
    }
    if (c->child && rbl_jcs_raw_numbers(c->child) != 0) return RBL_ENOMEM;
  }
  return 0;
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if it is not valid (RFC 3629). */
static int jcs_utf8_len(const unsigned char *s) {
  unsigned c = s[0];
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return (s[1] & 0xC0) == 0x80 ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    unsigned lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    return s[1] >= lo && s[1] <= hi && (s[2] & 0xC0) == 0x80 ? 3 : 0;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    unsigned lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    return s[1] >= lo && s[1] <= hi && (s[2] & 0xC0) == 0x80 && (s[3] & 0xC0) == 0x80 ? 4 : 0;
  }
  return 0;
}

/* Writes s as a JSON string with the escaping of ECMAScript JSON.stringify. */
static int jcs_string(rbl_jcs_buf *b, const char *str) {
  static const char hex[] = "0123456789abcdef";
  const unsigned char *s = (const unsigned char *)str;
  size_t n = strlen(str);
  if (jcs_reserve(b, n * 6 + 2) < 0) return RBL_ENOMEM;
  char *o = b->data + b->len;
  *o++ = '"';
  while (*s) {
    unsigned c = *s;
    if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
      *o++ = (char)*s++;
      continue;
    }
    if (c >= 0x80) {
      int l = jcs_utf8_len(s);
      if (!l) return RBL_EINVAL;
      memcpy(o, s, (size_t)l);
      o += l, s += l;
      continue;
    }
    *o++ = '\\';
    switch (c) {
    case '"': *o++ = '"'; break;
    case '\\': *o++ = '\\'; break;
    case '\b': *o++ = 'b'; break;
    case '\f': *o++ = 'f'; break;
    case '\n': *o++ = 'n'; break;
    case '\r': *o++ = 'r'; break;
    case '\t': *o++ = 't'; break;
    default: o += sprintf(o, "u00%c%c", hex[c >> 4], hex[c & 15]); break;
    }
    s++;
  }
  *o++ = '"';
  b->len = (size_t)(o - b->data);
  b->data[b->len] = '\0';
  return 0;
}

/* UTF-8 byte order equals code point order; UTF-16 order differs only in that
 * supplementary characters (lead byte F0..F4, surrogates D800..) sort before U+E000..U+FFFF
 * (lead byte EE, EF). At the first differing byte both strings are at the same position
 * inside equal prefixes, so the lead bytes decide. */
int rbl_jcs_keycmp(const char *a, const char *b) {
  const unsigned char *x = (const unsigned char *)a, *y = (const unsigned char *)b;
  while (*x && *x == *y)
    x++, y++;
  unsigned cx = *x, cy = *y;
  if (cx >= 0xF0 && (cy == 0xEE || cy == 0xEF)) return -1;
  if (cy >= 0xF0 && (cx == 0xEE || cx == 0xEF)) return 1;
  return (int)cx - (int)cy;
}

static int jcs_member_cmp(const void *p, const void *q) {
  const jcs_member *a = p, *b = q;
  return rbl_jcs_keycmp(a->item->string, b->item->string);
}

static int jcs_array(rbl_jcs_buf *b, const cJSON *arr) {
  if (jcs_putc(b, '[') < 0) return RBL_ENOMEM;
  for (const cJSON *c = arr->child; c; c = c->next) {
    if (c != arr->child && jcs_putc(b, ',') < 0) return RBL_ENOMEM;
    int rc = jcs_value(b, c);
    if (rc < 0) return rc;
  }
  return jcs_putc(b, ']');
}

/* Collects and sorts obj's members into *out (malloc'd unless it fits in stack[16]). */
static int jcs_sorted(const cJSON *obj, jcs_member *stack, jcs_member **out, size_t *count) {
  size_t n = 0;
  for (const cJSON *c = obj->child; c; c = c->next)
    n++;
  jcs_member *m = n <= 16 ? stack : malloc(n * sizeof *m);
  if (!m) return RBL_ENOMEM;
  size_t i = 0;
  for (const cJSON *c = obj->child; c; c = c->next, i++) {
    m[i].item = c;
    if (!c->string) {
      if (m != stack) free(m);
      return RBL_EINVAL;
    }
  }
  qsort(m, n, sizeof *m, jcs_member_cmp);
  for (i = 1; i < n; i++) {
    if (strcmp(m[i - 1].item->string, m[i].item->string) == 0) { /* I-JSON: no duplicates */
      if (m != stack) free(m);
      return RBL_EINVAL;
    }
  }
  *out = m;
  *count = n;
  return 0;
}

/* Writes the members in m[] (sorted) as an object, recording where each one lands. */
static int jcs_members(rbl_jcs_buf *b, jcs_member *m, size_t n) {
  int rc = jcs_putc(b, '{');
  for (size_t i = 0; i < n && rc == 0; i++) {
    if (i && (rc = jcs_putc(b, ',')) < 0) break;
    m[i].start = b->len;
    if ((rc = jcs_string(b, m[i].item->string)) < 0 || (rc = jcs_putc(b, ':')) < 0) break;
    rc = jcs_value(b, m[i].item);
    m[i].end = b->len;
  }
  return rc < 0 ? rc : jcs_putc(b, '}');
}

static int jcs_object(rbl_jcs_buf *b, const cJSON *obj) {
  jcs_member stack[16], *m;
  size_t n;
  int rc = jcs_sorted(obj, stack, &m, &n);
  if (rc < 0) return rc;
  rc = jcs_members(b, m, n);
  if (m != stack) free(m);
  return rc;
}

static int jcs_value(rbl_jcs_buf *b, const cJSON *item) {
  char num[32];
  switch (item->type & 0xFF) {
  case cJSON_NULL: return rbl_jcs_buf_put(b, "null", 4);
  case cJSON_True: return rbl_jcs_buf_put(b, "true", 4);
  case cJSON_False: return rbl_jcs_buf_put(b, "false", 5);
  case cJSON_String: return item->valuestring ? jcs_string(b, item->valuestring) : RBL_EINVAL;
  case cJSON_Array: return jcs_array(b, item);
  case cJSON_Object: return jcs_object(b, item);
  case cJSON_Number: {
    int n = rbl_jcs_number(item->valuedouble, num);
    return n < 0 ? n : rbl_jcs_buf_put(b, num, (size_t)n);
  }
  default: return RBL_EINVAL; /* cJSON_Raw, cJSON_Invalid */
  }
}

int rbl_jcs_append(rbl_jcs_buf *b, const cJSON *item) {
  size_t mark = b->len;
  int rc = item ? jcs_value(b, item) : RBL_EINVAL;
  if (rc < 0) {
    b->len = mark;
    if (b->data) b->data[mark] = '\0';
  }
  return rc;
}

static int jcs_omitted(const char *key, const char *const *omit, size_t nomit) {
  for (size_t i = 0; i < nomit; i++)
    if (strcmp(key, omit[i]) == 0) return 1;
  return 0;
}

/* Pieces of the buffer that spell the object without the omitted members: "{", then each
 * run of consecutive kept members (with the comma before it unless it is the first run),
 * then "}"; a run that reaches the last member carries the "}" along. */
static size_t jcs_pieces(const jcs_member *m, size_t n, size_t open, size_t close,
                         const char *const *omit, size_t nomit, rbl_jcs_piece *p) {
  size_t np = 0, i = 0;
  int first = 1, last_kept = 0;
  while (i < n) {
    if (jcs_omitted(m[i].item->string, omit, nomit)) {
      i++;
      continue;
    }
    size_t a = i, s;
    while (i < n && !jcs_omitted(m[i].item->string, omit, nomit))
      i++;
    if (first) {
      if (a != 0) p[np++] = (rbl_jcs_piece){open, 1};
      s = a == 0 ? open : m[a].start;
    } else {
      s = m[a].start - 1;
    }
    first = 0;
    last_kept = i == n;
    size_t e = last_kept ? close + 1 : m[i - 1].end;
    p[np++] = (rbl_jcs_piece){s, e - s};
  }
  if (first) p[np++] = (rbl_jcs_piece){open, 1};
  if (!last_kept) p[np++] = (rbl_jcs_piece){close, 1};
  return np;
}

int rbl_jcs_append_omit(rbl_jcs_buf *b, const cJSON *obj, const char *const *omit, size_t nomit,
                        rbl_jcs_piece *pieces, size_t *npieces) {
  if (!obj || !cJSON_IsObject(obj)) return RBL_EINVAL;
  jcs_member stack[16], *m;
  size_t n, open = b->len;
  int rc = jcs_sorted(obj, stack, &m, &n);
  if (rc < 0) return rc;
  rc = jcs_members(b, m, n);
  if (rc == 0) *npieces = jcs_pieces(m, n, open, b->len - 1, omit, nomit, pieces);
  if (m != stack) free(m);
  if (rc < 0) {
    b->len = open;
    if (b->data) b->data[open] = '\0';
  }
  return rc;
}

char *rbl_jcs_string(const cJSON *item, size_t *len) {
  rbl_jcs_buf b = {0};
  if (rbl_jcs_append(&b, item) < 0 || (!b.data && rbl_jcs_buf_put(&b, "", 0) < 0)) {
    rbl_jcs_buf_free(&b);
    return NULL;
  }
  if (len) *len = b.len;
  return b.data;
}
