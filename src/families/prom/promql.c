/* PromQL tenant scoping (see promql.h). The lexer turns the whole query into tokens first
 * (bounded by RBL_PROMQL_MAX_LEN); the parser is recursive descent with precedence climbing,
 * bounded by RBL_PROMQL_MAX_DEPTH. Rewriting splices the original text: each selector gets an
 * edit (insert the matcher, or replace the existing tenant matcher by its canonical form), so
 * comments, spacing and everything else the user wrote reach Prometheus unchanged.
 *
 * Where PromQL is ambiguous the parser takes the reading that scopes more: an identifier in
 * operand position that is not a call, an aggregation or inf/nan is a metric selector. A query
 * the parser reads differently from Prometheus then fails at Prometheus; it cannot widen. */
#include "promql.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum {
  T_EOF,
  T_IDENT,
  T_NUM,
  T_DUR,
  T_STR,
  T_LPAREN,
  T_RPAREN,
  T_LBRACE,
  T_RBRACE,
  T_LBRACK,
  T_RBRACK,
  T_COMMA,
  T_COLON,
  T_AT,
  T_ASSIGN, /* = */
  T_EQL,    /* == */
  T_NEQ,    /* != */
  T_RE,     /* =~ */
  T_NRE,    /* !~ */
  T_LT,
  T_LTE,
  T_GT,
  T_GTE,
  T_ADD,
  T_SUB,
  T_MUL,
  T_DIV,
  T_MOD,
  T_POW,
};

typedef struct tok {
  int t;
  size_t pos, len;
} tok;

typedef struct edit {
  size_t pos, del; /* replace s[pos, pos+del) */
  int kind;        /* 0: the matcher; 1: the matcher and ","; 2: "{" matcher "}" */
  size_t vtok;     /* del > 0: the token of the value the query named */
} edit;

enum { MODE_PARSE, MODE_CHECK, MODE_SCOPE };

typedef struct parser {
  const char *s;
  size_t n;
  tok *toks;
  size_t ntok, cap, i;
  int depth;
  int err;
  char *why;
  size_t whylen;
  int mode;
  const char *label;
  size_t label_len;
  const char *const *tenants;
  size_t ntenants;
  int set;     /* a set of tenants (regex matcher) rather than one */
  char *buf;   /* scratch for unquoted strings: n + 1 bytes */
  char *buf2;  /* a second one (label name and value of one matcher) */
  edit *edits; /* in increasing pos order */
  size_t nedits, capedits;
} parser;

static int fail(parser *P, int code, size_t pos, const char *fmt, ...) {
  if (P->err) return P->err;
  P->err = code;
  if (P->why && P->whylen > 0) {
    int k = 0;
    if (code == RBL_PROMQL_ESYNTAX && pos != (size_t)-1)
      k = snprintf(P->why, P->whylen, "parse error at char %zu: ", pos + 1);
    if (k < 0) k = 0;
    if ((size_t)k < P->whylen) {
      va_list ap;
      va_start(ap, fmt);
      vsnprintf(P->why + k, P->whylen - (size_t)k, fmt, ap);
      va_end(ap);
    }
  }
  return code;
}

/* ---- UTF-8 ---- */

/* Length of the valid UTF-8 sequence at s (n bytes left), or 0 when invalid. */
static size_t utf8_len(const unsigned char *s, size_t n) {
  unsigned c = s[0];
  if (c < 0x80) return 1;
  size_t len;
  uint32_t cp;
  if (c >= 0xc2 && c <= 0xdf)
    len = 2, cp = c & 0x1f;
  else if (c >= 0xe0 && c <= 0xef)
    len = 3, cp = c & 0x0f;
  else if (c >= 0xf0 && c <= 0xf4)
    len = 4, cp = c & 0x07;
  else
    return 0;
  if (n < len) return 0;
  for (size_t k = 1; k < len; k++) {
    if ((s[k] & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (s[k] & 0x3f);
  }
  if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff))) return 0;
  if (cp >= 0xd800 && cp <= 0xdfff) return 0;
  return len;
}

static int utf8_valid(const char *s, size_t n) {
  const unsigned char *p = (const unsigned char *)s;
  for (size_t i = 0; i < n;) {
    size_t l = utf8_len(p + i, n - i);
    if (!l) return 0;
    i += l;
  }
  return 1;
}

static size_t utf8_put(char *o, uint32_t cp) {
  if (cp < 0x80) {
    o[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    o[0] = (char)(0xc0 | (cp >> 6));
    o[1] = (char)(0x80 | (cp & 0x3f));
    return 2;
  }
  if (cp < 0x10000) {
    o[0] = (char)(0xe0 | (cp >> 12));
    o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
    o[2] = (char)(0x80 | (cp & 0x3f));
    return 3;
  }
  o[0] = (char)(0xf0 | (cp >> 18));
  o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
  o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
  o[3] = (char)(0x80 | (cp & 0x3f));
  return 4;
}

/* ---- strings: Go's strconv.Unquote, which Prometheus uses ---- */

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Decodes the quoted string s[0..len) (with its quotes) into out (len bytes suffice); returns
 * the decoded length, or -1 when it is not a valid literal. out may be NULL (validate only). */
static long unquote(const char *s, size_t len, char *out) {
  if (len < 2 || s[len - 1] != s[0]) return -1;
  char q = s[0];
  size_t o = 0;
  char tmp[4];
  if (q == '`') {
    for (size_t i = 1; i + 1 < len; i++) {
      if (s[i] == '`') return -1;
      if (s[i] == '\r') continue; /* Go drops carriage returns from raw strings */
      if (out) out[o] = s[i];
      o++;
    }
    return (long)o;
  }
  if (q != '"' && q != '\'') return -1;
  for (size_t i = 1; i + 1 < len;) {
    unsigned char c = (unsigned char)s[i];
    if (c == (unsigned char)q || c == '\n') return -1;
    if (c != '\\') {
      if (out) out[o] = (char)c;
      o++, i++;
      continue;
    }
    if (i + 2 >= len) return -1; /* a backslash just before the closing quote */
    char e = s[i + 1];
    i += 2;
    int v = -1;
    switch (e) {
    case 'a': v = 7; break;
    case 'b': v = 8; break;
    case 'f': v = 12; break;
    case 'n': v = 10; break;
    case 'r': v = 13; break;
    case 't': v = 9; break;
    case 'v': v = 11; break;
    case '\\': v = '\\'; break;
    case '\'':
    case '"':
      if (e != q) return -1;
      v = e;
      break;
    case '0':
    case '1':
    case '2':
    case '3':
    case '4':
    case '5':
    case '6':
    case '7': {
      if (i + 2 > len - 1) return -1;
      int a = e - '0', b = s[i] - '0', d = s[i + 1] - '0';
      if (b < 0 || b > 7 || d < 0 || d > 7) return -1;
      int x = a * 64 + b * 8 + d;
      if (x > 255) return -1;
      i += 2;
      v = x;
      break;
    }
    case 'x': {
      if (i + 2 > len - 1) return -1;
      int a = hexval(s[i]), b = hexval(s[i + 1]);
      if (a < 0 || b < 0) return -1;
      i += 2;
      v = a * 16 + b;
      break;
    }
    case 'u':
    case 'U': {
      size_t nd = e == 'u' ? 4 : 8;
      if (i + nd > len - 1) return -1;
      uint32_t cp = 0;
      for (size_t k = 0; k < nd; k++) {
        int h = hexval(s[i + k]);
        if (h < 0) return -1;
        cp = cp * 16 + (uint32_t)h;
      }
      i += nd;
      if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return -1;
      size_t l = utf8_put(tmp, cp);
      if (out) memcpy(out + o, tmp, l);
      o += l;
      continue;
    }
    default: return -1;
    }
    if (out) out[o] = (char)v;
    o++;
  }
  return (long)o;
}

/* ---- lexer ---- */

static int is_alpha(int c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static int is_digit(int c) { return c >= '0' && c <= '9'; }
static int is_alnum(int c) { return is_alpha(c) || is_digit(c); }

static int push_tok(parser *P, int t, size_t pos, size_t len) {
  if (P->ntok == P->cap) {
    size_t nc = P->cap ? P->cap * 2 : 64;
    tok *nt = realloc(P->toks, nc * sizeof *nt);
    if (!nt) return fail(P, RBL_PROMQL_ESYNTAX, (size_t)-1, "out of memory");
    P->toks = nt;
    P->cap = nc;
  }
  P->toks[P->ntok++] = (tok){t, pos, len};
  return 0;
}

/* A duration: one or more (digits unit), units ms s m h d w y. Returns its length or 0. */
static size_t scan_duration(const char *s, size_t n, size_t i) {
  size_t start = i;
  int parts = 0;
  while (i < n && is_digit((unsigned char)s[i])) {
    size_t j = i;
    while (j < n && is_digit((unsigned char)s[j]))
      j++;
    if (j >= n) return 0;
    size_t u = 0;
    if (s[j] == 'm' && j + 1 < n && s[j + 1] == 's')
      u = 2;
    else if (strchr("smhdwy", s[j]) && s[j] != '\0')
      u = 1;
    if (!u) return 0;
    i = j + u;
    parts++;
  }
  if (!parts) return 0;
  if (i < n && is_alnum((unsigned char)s[i])) return 0;
  return i - start;
}

/* A number: decimal with fraction and exponent, or hex. Returns its length or 0. */
static size_t scan_number(const char *s, size_t n, size_t i) {
  size_t start = i;
  if (i + 1 < n && s[i] == '0' && (s[i + 1] == 'x' || s[i + 1] == 'X')) {
    i += 2;
    size_t d = i;
    while (i < n && hexval(s[i]) >= 0)
      i++;
    if (i == d) return 0;
  } else {
    size_t d = 0;
    while (i < n && is_digit((unsigned char)s[i]))
      i++, d++;
    if (i < n && s[i] == '.') {
      i++;
      while (i < n && is_digit((unsigned char)s[i]))
        i++, d++;
    }
    if (!d) return 0;
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
      size_t j = i + 1;
      if (j < n && (s[j] == '+' || s[j] == '-')) j++;
      size_t e = j;
      while (j < n && is_digit((unsigned char)s[j]))
        j++;
      if (j == e) return 0;
      i = j;
    }
  }
  if (i < n && (is_alnum((unsigned char)s[i]) || s[i] == '.')) return 0;
  return i - start;
}

static int lex(parser *P) {
  const char *s = P->s;
  size_t n = P->n, i = 0;
  int brack = 0;
  for (;;) {
    while (i < n) {
      char c = s[i];
      if (c == ' ' || c == '\t' || c == '\n' || c == '\r')
        i++;
      else if (c == '#') {
        while (i < n && s[i] != '\n')
          i++;
      } else
        break;
    }
    if (i >= n) return push_tok(P, T_EOF, n, 0);
    unsigned char c = (unsigned char)s[i];
    size_t start = i;
    int t = -1;
    size_t len = 1;
    if (is_digit(c) || (c == '.' && i + 1 < n && is_digit((unsigned char)s[i + 1]))) {
      size_t l = scan_duration(s, n, i);
      if (l)
        t = T_DUR, len = l;
      else if ((l = scan_number(s, n, i)))
        t = T_NUM, len = l;
      else
        return fail(P, RBL_PROMQL_ESYNTAX, i, "bad number or duration");
    } else if (is_alpha(c) || (c == ':' && !brack)) {
      size_t j = i + 1;
      while (j < n && (is_alnum((unsigned char)s[j]) || s[j] == ':'))
        j++;
      t = T_IDENT, len = j - i;
    } else if (c == '"' || c == '\'' || c == '`') {
      size_t j = i + 1;
      for (;;) {
        if (j >= n) return fail(P, RBL_PROMQL_ESYNTAX, i, "unterminated string");
        if (s[j] == (char)c) break;
        if (c != '`' && s[j] == '\n') return fail(P, RBL_PROMQL_ESYNTAX, j, "newline in string");
        if (c != '`' && s[j] == '\\') j++;
        j++;
      }
      len = j + 1 - i;
      if (unquote(s + i, len, NULL) < 0)
        return fail(P, RBL_PROMQL_ESYNTAX, i, "invalid escape in string");
      t = T_STR;
    } else {
      char d = i + 1 < n ? s[i + 1] : '\0';
      switch (c) {
      case '(': t = T_LPAREN; break;
      case ')': t = T_RPAREN; break;
      case '{': t = T_LBRACE; break;
      case '}': t = T_RBRACE; break;
      case '[':
        if (brack) return fail(P, RBL_PROMQL_ESYNTAX, i, "nested [");
        brack = 1, t = T_LBRACK;
        break;
      case ']':
        if (!brack) return fail(P, RBL_PROMQL_ESYNTAX, i, "unexpected ]");
        brack = 0, t = T_RBRACK;
        break;
      case ',': t = T_COMMA; break;
      case ':': t = T_COLON; break;
      case '@': t = T_AT; break;
      case '+': t = T_ADD; break;
      case '-': t = T_SUB; break;
      case '*': t = T_MUL; break;
      case '/': t = T_DIV; break;
      case '%': t = T_MOD; break;
      case '^': t = T_POW; break;
      case '=':
        if (d == '=')
          t = T_EQL, len = 2;
        else if (d == '~')
          t = T_RE, len = 2;
        else
          t = T_ASSIGN;
        break;
      case '!':
        if (d == '=')
          t = T_NEQ, len = 2;
        else if (d == '~')
          t = T_NRE, len = 2;
        else
          return fail(P, RBL_PROMQL_ESYNTAX, i, "unexpected !");
        break;
      case '<':
        if (d == '=')
          t = T_LTE, len = 2;
        else
          t = T_LT;
        break;
      case '>':
        if (d == '=')
          t = T_GTE, len = 2;
        else
          t = T_GT;
        break;
      default:
        if (c < 0x20 || c >= 0x7f)
          return fail(P, RBL_PROMQL_ESYNTAX, i, "unexpected byte 0x%02x", (unsigned)c);
        return fail(P, RBL_PROMQL_ESYNTAX, i, "unexpected character '%c'", c);
      }
    }
    if (push_tok(P, t, start, len)) return P->err;
    i = start + len;
  }
}

/* ---- parser ---- */

static const tok *cur(parser *P) { return &P->toks[P->i]; }
static const tok *peek(parser *P, size_t k) {
  size_t j = P->i + k;
  return &P->toks[j < P->ntok ? j : P->ntok - 1];
}
static void next(parser *P) {
  if (P->toks[P->i].t != T_EOF) P->i++;
}

static int tok_is(parser *P, const tok *t, const char *kw) {
  return t->t == T_IDENT && t->len == strlen(kw) && !strncasecmp(P->s + t->pos, kw, t->len);
}
static int tok_exact(parser *P, const tok *t, const char *name) {
  return t->t == T_IDENT && t->len == strlen(name) && !memcmp(P->s + t->pos, name, t->len);
}

static const char *tok_name(int t) {
  static const char *const names[] = {"end of input",
                                      "identifier",
                                      "number",
                                      "duration",
                                      "string",
                                      "(",
                                      ")",
                                      "{",
                                      "}",
                                      "[",
                                      "]",
                                      ",",
                                      ":",
                                      "@",
                                      "=",
                                      "==",
                                      "!=",
                                      "=~",
                                      "!~",
                                      "<",
                                      "<=",
                                      ">",
                                      ">=",
                                      "+",
                                      "-",
                                      "*",
                                      "/",
                                      "%",
                                      "^"};
  return t >= 0 && t <= T_POW ? names[t] : "token";
}

static int unexpected(parser *P, const char *want) {
  const tok *t = cur(P);
  if (t->t == T_IDENT || t->t == T_NUM || t->t == T_DUR)
    return fail(P, RBL_PROMQL_ESYNTAX, t->pos, "unexpected %s \"%.*s\"%s%s", tok_name(t->t),
                (int)(t->len > 40 ? 40 : t->len), P->s + t->pos, want ? ", expected " : "",
                want ? want : "");
  return fail(P, RBL_PROMQL_ESYNTAX, t->pos, "unexpected %s%s%s", tok_name(t->t),
              want ? ", expected " : "", want ? want : "");
}

static int expect(parser *P, int t, const char *want) {
  if (cur(P)->t != t) return unexpected(P, want);
  next(P);
  return 0;
}

static int enter(parser *P) {
  if (++P->depth > RBL_PROMQL_MAX_DEPTH)
    return fail(P, RBL_PROMQL_ESYNTAX, cur(P)->pos, "expression nested deeper than %d",
                RBL_PROMQL_MAX_DEPTH);
  return 0;
}

static void expr(parser *P);

static int is_aggregator(parser *P, const tok *t) {
  static const char *const aggs[] = {"sum",          "avg",      "count",  "min",         "max",
                                     "group",        "stddev",   "stdvar", "topk",        "bottomk",
                                     "count_values", "quantile", "limitk", "limit_ratio", NULL};
  for (int k = 0; aggs[k]; k++)
    if (tok_is(P, t, aggs[k])) return 1;
  return 0;
}

/* The decoded name of a label-name token (identifier or string) into out; -1 when invalid. */
static long name_of(parser *P, const tok *t, char *out) {
  if (t->t == T_IDENT) {
    memcpy(out, P->s + t->pos, t->len);
    return (long)t->len;
  }
  return unquote(P->s + t->pos, t->len, out);
}

static int is_label(parser *P, const char *name, long len) {
  return len == (long)P->label_len && !memcmp(name, P->label, P->label_len);
}

/* ( label, label, ... ) in by/without/on/ignoring/group_left/group_right; trailing comma ok. */
static void label_list(parser *P) {
  if (expect(P, T_LPAREN, "( after a grouping keyword")) return;
  while (cur(P)->t != T_RPAREN) {
    const tok *t = cur(P);
    if (t->t == T_IDENT) {
      size_t k = 0;
      while (k < t->len && P->s[t->pos + k] != ':')
        k++;
      if (k < t->len) {
        fail(P, RBL_PROMQL_ESYNTAX, t->pos, "invalid label name");
        return;
      }
    } else if (t->t != T_STR) {
      unexpected(P, "a label name");
      return;
    }
    next(P);
    if (cur(P)->t == T_COMMA)
      next(P);
    else if (cur(P)->t != T_RPAREN) {
      unexpected(P, ", or )");
      return;
    }
  }
  next(P);
}

static int tenant_in_set(parser *P, const char *v, size_t len) {
  for (size_t k = 0; k < P->ntenants; k++)
    if (strlen(P->tenants[k]) == len && !memcmp(P->tenants[k], v, len)) return 1;
  return 0;
}

/* Is v a plain alternation of regex-escaped names, each in the set? (check_set) */
static int regex_in_set(parser *P, const char *v, size_t len) {
  char name[RBL_PROMQL_MAX_TENANT + 1];
  size_t nl = 0;
  for (size_t i = 0; i <= len; i++) {
    if (i == len || v[i] == '|') {
      if (nl == 0 || !tenant_in_set(P, name, nl)) return 0;
      nl = 0;
      continue;
    }
    char c = v[i];
    if (c == '\\') {
      if (i + 1 >= len || !strchr("\\.+*?()|[]{}^$", v[i + 1])) return 0;
      c = v[++i];
    } else if (strchr(".+*?()[]{}^$", c)) {
      return 0;
    }
    if (nl >= RBL_PROMQL_MAX_TENANT) return 0;
    name[nl++] = c;
  }
  return 1;
}

static int add_edit(parser *P, size_t pos, size_t del, int kind, size_t vtok) {
  if (P->mode != MODE_SCOPE) return 0;
  if (P->nedits == P->capedits) {
    size_t nc = P->capedits ? P->capedits * 2 : 16;
    edit *ne = realloc(P->edits, nc * sizeof *ne);
    if (!ne) return fail(P, RBL_PROMQL_ESYNTAX, (size_t)-1, "out of memory");
    P->edits = ne;
    P->capedits = nc;
  }
  P->edits[P->nedits++] = (edit){pos, del, kind, vtok};
  return 0;
}

/* A vector or matrix selector: [name] [{ matchers }]. The name token, if any, was consumed. */
static void selector(parser *P, const tok *name) {
  size_t sel_pos = name ? name->pos : cur(P)->pos;
  size_t nlab = 0, nother = name ? 1 : 0;
  size_t lab_pos = 0, lab_end = 0, lab_vtok = 0;
  size_t brace_pos = 0;
  int has_brace = 0;
  if (cur(P)->t == T_LBRACE) {
    has_brace = 1;
    brace_pos = cur(P)->pos;
    next(P);
    while (cur(P)->t != T_RBRACE) {
      const tok *lt = cur(P);
      if (lt->t != T_IDENT && lt->t != T_STR) {
        unexpected(P, "a label matcher");
        return;
      }
      next(P);
      int op = cur(P)->t;
      if (lt->t == T_STR && (op == T_COMMA || op == T_RBRACE)) {
        nother++; /* {"metric.name"}: the metric name as a string */
      } else {
        if (op != T_ASSIGN && op != T_NEQ && op != T_RE && op != T_NRE) {
          unexpected(P, "=, !=, =~ or !~");
          return;
        }
        next(P);
        const tok *vt = cur(P);
        if (vt->t != T_STR) {
          unexpected(P, "a string");
          return;
        }
        next(P);
        long nl = name_of(P, lt, P->buf2);
        if (nl < 0) {
          fail(P, RBL_PROMQL_ESYNTAX, lt->pos, "invalid label name");
          return;
        }
        if (lt->t == T_IDENT && memchr(P->buf2, ':', (size_t)nl)) {
          fail(P, RBL_PROMQL_ESYNTAX, lt->pos, "invalid label name");
          return;
        }
        if (P->mode != MODE_PARSE && is_label(P, P->buf2, nl)) {
          long vl = unquote(P->s + vt->pos, vt->len, P->buf);
          if (vl < 0) {
            fail(P, RBL_PROMQL_ESYNTAX, vt->pos, "invalid string");
            return;
          }
          int ok;
          if (op == T_ASSIGN) {
            ok = P->set ? tenant_in_set(P, P->buf, (size_t)vl)
                        : ((size_t)vl == strlen(P->tenants[0]) &&
                           !memcmp(P->buf, P->tenants[0], (size_t)vl));
          } else {
            ok = op == T_RE && P->mode == MODE_CHECK && P->set &&
                 regex_in_set(P, P->buf, (size_t)vl);
          }
          if (!ok) {
            const char *what = op == T_ASSIGN ? "names"
                               : op == T_NEQ  ? "excludes"
                               : op == T_RE   ? "matches a regex on"
                                              : "excludes a regex on";
            if (op == T_ASSIGN && vl == 0)
              fail(P, RBL_PROMQL_ESCOPE, (size_t)-1,
                   "the selector at char %zu matches series without the %s label", sel_pos + 1,
                   P->label);
            else if (op == T_ASSIGN)
              fail(P, RBL_PROMQL_ESCOPE, (size_t)-1,
                   "the selector at char %zu names %s \"%.*s\", which is not %s", sel_pos + 1,
                   P->label, (int)(vl > 64 ? 64 : vl), P->buf,
                   P->set ? "an authorised tenant of this run" : "the call's tenant");
            else
              fail(P, RBL_PROMQL_ESCOPE, (size_t)-1,
                   "the selector at char %zu %s the %s label (only %s=\"...\" is allowed)",
                   sel_pos + 1, what, P->label, P->label);
            return;
          }
          nlab++;
          lab_pos = lt->pos;
          lab_end = vt->pos + vt->len;
          lab_vtok = (size_t)(vt - P->toks);
        } else {
          nother++;
        }
      }
      if (cur(P)->t == T_COMMA)
        next(P);
      else if (cur(P)->t != T_RBRACE) {
        unexpected(P, ", or }");
        return;
      }
    }
    next(P);
  }
  if (nother == 0 && nlab == 0) {
    fail(P, RBL_PROMQL_ESYNTAX, sel_pos, "a vector selector must contain at least one matcher");
    return;
  }
  if (P->mode == MODE_PARSE) return;
  if (nlab > 1) {
    fail(P, RBL_PROMQL_ESYNTAX, sel_pos, "the selector names the %s label more than once",
         P->label);
    return;
  }
  if (P->mode == MODE_CHECK) {
    if (nlab == 0)
      fail(P, RBL_PROMQL_ESCOPE, (size_t)-1, "the selector at char %zu has no %s matcher",
           sel_pos + 1, P->label);
    return;
  }
  if (nlab == 1) {
    add_edit(P, lab_pos, lab_end - lab_pos, 0, lab_vtok); /* canonical form, same value */
  } else if (has_brace) {
    add_edit(P, brace_pos + 1, 0, nother ? 1 : 0, 0);
  } else {
    add_edit(P, name->pos + name->len, 0, 2, 0);
  }
}

/* A function call's or aggregation's argument list; the ( is current. check_arg: the index of
 * an argument that must not be a string naming the tenant label (-1: none). */
static void args(parser *P, int check_arg, const char *fname) {
  if (expect(P, T_LPAREN, "(")) return;
  int k = 0;
  if (cur(P)->t != T_RPAREN) {
    for (;;) {
      size_t start = P->i;
      expr(P);
      if (P->err) return;
      if (k == check_arg && P->i == start + 1 && P->toks[start].t == T_STR &&
          P->mode != MODE_PARSE) {
        const tok *st = &P->toks[start];
        long l = unquote(P->s + st->pos, st->len, P->buf);
        if (l >= 0 && is_label(P, P->buf, l)) {
          fail(P, RBL_PROMQL_ESCOPE, (size_t)-1,
               "%s() at char %zu writes the %s label, which rbl sets", fname, st->pos + 1,
               P->label);
          return;
        }
      }
      k++;
      if (cur(P)->t == T_COMMA)
        next(P);
      else
        break;
    }
  }
  expect(P, T_RPAREN, ", or )");
}

static void primary(parser *P) {
  const tok *t = cur(P);
  switch (t->t) {
  case T_NUM:
  case T_STR: next(P); return;
  case T_LPAREN:
    next(P);
    expr(P);
    if (!P->err) expect(P, T_RPAREN, ")");
    return;
  case T_LBRACE: selector(P, NULL); return;
  case T_IDENT: {
    const tok *nx = peek(P, 1);
    if (is_aggregator(P, t) &&
        (nx->t == T_LPAREN || tok_is(P, nx, "by") || tok_is(P, nx, "without"))) {
      int cv = tok_is(P, t, "count_values");
      next(P);
      int grouped = 0;
      if (tok_is(P, cur(P), "by") || tok_is(P, cur(P), "without")) {
        next(P);
        label_list(P);
        grouped = 1;
        if (P->err) return;
      }
      if (cur(P)->t == T_LPAREN && peek(P, 1)->t == T_RPAREN) {
        unexpected(P, "an aggregation argument");
        return;
      }
      args(P, cv ? 0 : -1, "count_values");
      if (P->err) return;
      if (!grouped && (tok_is(P, cur(P), "by") || tok_is(P, cur(P), "without"))) {
        next(P);
        label_list(P);
      }
      return;
    }
    if (nx->t == T_LPAREN) {
      if (tok_exact(P, t, "info")) {
        fail(P, RBL_PROMQL_ESYNTAX, t->pos,
             "info() is not supported: it reads target_info series the query does not name");
        return;
      }
      int lr = tok_exact(P, t, "label_replace") || tok_exact(P, t, "label_join");
      const char *fname = tok_exact(P, t, "label_join") ? "label_join" : "label_replace";
      next(P);
      args(P, lr ? 1 : -1, fname);
      return;
    }
    if (tok_is(P, t, "inf") || tok_is(P, t, "nan")) {
      if (nx->t == T_LBRACE) {
        fail(P, RBL_PROMQL_ESYNTAX, t->pos,
             "a metric named inf or nan must be written {__name__=\"...\"}");
        return;
      }
      next(P);
      return;
    }
    next(P);
    selector(P, t);
    return;
  }
  default: unexpected(P, "an expression"); return;
  }
}

/* offset, @, [range] and [range:step] after an operand. */
static void postfix(parser *P) {
  primary(P);
  while (!P->err) {
    const tok *t = cur(P);
    if (t->t == T_LBRACK) {
      next(P);
      if (cur(P)->t != T_DUR && cur(P)->t != T_NUM) {
        unexpected(P, "a duration");
        return;
      }
      next(P);
      if (cur(P)->t == T_COLON) {
        next(P);
        if (cur(P)->t == T_DUR || cur(P)->t == T_NUM) next(P);
      }
      if (expect(P, T_RBRACK, "]")) return;
    } else if (tok_is(P, t, "offset")) {
      next(P);
      if (cur(P)->t == T_SUB || cur(P)->t == T_ADD) next(P);
      if (cur(P)->t != T_DUR && cur(P)->t != T_NUM) {
        unexpected(P, "a duration after offset");
        return;
      }
      next(P);
    } else if (t->t == T_AT) {
      next(P);
      if (tok_is(P, cur(P), "start") || tok_is(P, cur(P), "end")) {
        next(P);
        if (expect(P, T_LPAREN, "(")) return;
        if (expect(P, T_RPAREN, ")")) return;
      } else {
        if (cur(P)->t == T_SUB || cur(P)->t == T_ADD) next(P);
        if (cur(P)->t != T_NUM) {
          unexpected(P, "a timestamp after @");
          return;
        }
        next(P);
      }
    } else {
      return;
    }
  }
}

static void unary(parser *P) {
  if (enter(P)) return;
  if (cur(P)->t == T_ADD || cur(P)->t == T_SUB) {
    next(P);
    unary(P);
  } else {
    postfix(P);
  }
  P->depth--;
}

/* The binary operator at the current token: its precedence (0: none) and associativity. */
static int binop(parser *P, int *right, int *cmp) {
  const tok *t = cur(P);
  *right = 0, *cmp = 0;
  switch (t->t) {
  case T_POW: *right = 1; return 6;
  case T_MUL:
  case T_DIV:
  case T_MOD: return 5;
  case T_ADD:
  case T_SUB: return 4;
  case T_EQL:
  case T_NEQ:
  case T_LT:
  case T_LTE:
  case T_GT:
  case T_GTE: *cmp = 1; return 3;
  case T_IDENT:
    if (tok_is(P, t, "atan2")) return 5;
    if (tok_is(P, t, "and") || tok_is(P, t, "unless")) return 2;
    if (tok_is(P, t, "or")) return 1;
    return 0;
  default: return 0;
  }
}

static void binary(parser *P, int minprec) {
  if (enter(P)) return;
  unary(P);
  while (!P->err) {
    int right, cmp;
    int prec = binop(P, &right, &cmp);
    if (!prec || prec < minprec) break;
    next(P);
    if (tok_is(P, cur(P), "bool")) next(P);
    if (tok_is(P, cur(P), "on") || tok_is(P, cur(P), "ignoring")) {
      next(P);
      label_list(P);
      if (P->err) break;
      if (tok_is(P, cur(P), "group_left") || tok_is(P, cur(P), "group_right")) {
        next(P);
        if (cur(P)->t == T_LPAREN) label_list(P);
        if (P->err) break;
      }
    }
    binary(P, right ? prec : prec + 1);
  }
  P->depth--;
}

static void expr(parser *P) { binary(P, 1); }

/* ---- entry points ---- */

static int valid_label(const char *l) {
  size_t n = l ? strlen(l) : 0;
  if (n == 0 || n > 128 || !is_alpha((unsigned char)l[0])) return 0;
  for (size_t i = 1; i < n; i++)
    if (!is_alnum((unsigned char)l[i])) return 0;
  return 1;
}

static int valid_tenant(const char *t) {
  size_t n = t ? strlen(t) : 0;
  if (n == 0 || n > RBL_PROMQL_MAX_TENANT || !utf8_valid(t, n)) return 0;
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)t[i] < 0x20 || t[i] == 0x7f) return 0;
  return 1;
}

static int run(parser *P, const char *expr_s) {
  if (P->why && P->whylen) P->why[0] = '\0';
  if (!expr_s) return fail(P, RBL_PROMQL_ESYNTAX, (size_t)-1, "no query");
  size_t n = strnlen(expr_s, RBL_PROMQL_MAX_LEN + 1);
  if (n > RBL_PROMQL_MAX_LEN)
    return fail(P, RBL_PROMQL_ESYNTAX, (size_t)-1, "the query is longer than %d bytes",
                RBL_PROMQL_MAX_LEN);
  if (P->mode != MODE_PARSE) {
    if (!valid_label(P->label))
      return fail(P, RBL_PROMQL_ESYNTAX, (size_t)-1, "invalid tenant label name");
    P->label_len = strlen(P->label);
    if (P->ntenants == 0)
      return fail(P, RBL_PROMQL_ESCOPE, (size_t)-1, "no authorised tenant to scope the query to");
    for (size_t k = 0; k < P->ntenants; k++)
      if (!valid_tenant(P->tenants[k]))
        return fail(P, RBL_PROMQL_ESCOPE, (size_t)-1,
                    "tenant name %zu is empty, too long, or not printable UTF-8", k + 1);
  }
  P->s = expr_s;
  P->n = n;
  if (!utf8_valid(expr_s, n))
    return fail(P, RBL_PROMQL_ESYNTAX, (size_t)-1, "the query is not valid UTF-8");
  P->buf = malloc(n + 1);
  P->buf2 = malloc(n + 1);
  if (!P->buf || !P->buf2) return fail(P, RBL_PROMQL_ESYNTAX, (size_t)-1, "out of memory");
  if (lex(P)) return P->err;
  if (P->ntok == 1) return fail(P, RBL_PROMQL_ESYNTAX, (size_t)-1, "empty query");
  expr(P);
  if (!P->err && cur(P)->t != T_EOF) unexpected(P, "an operator or the end of the query");
  return P->err;
}

static void done(parser *P) {
  free(P->toks);
  free(P->buf);
  free(P->buf2);
  free(P->edits);
}

/* The matcher text rbl adds: label="t" or label=~"t1|t2" (appends to o, returns length). */
static size_t matcher_text(parser *P, const char *value, int regex, char *o) {
  size_t k = 0;
  memcpy(o + k, P->label, P->label_len);
  k += P->label_len;
  o[k++] = '=';
  if (regex) o[k++] = '~';
  o[k++] = '"';
  if (!regex) {
    for (const char *c = value; *c; c++) {
      if (*c == '\\' || *c == '"') o[k++] = '\\';
      o[k++] = *c;
    }
  } else {
    for (size_t t = 0; t < P->ntenants; t++) {
      if (t) o[k++] = '|';
      for (const char *c = P->tenants[t]; *c; c++) {
        if (strchr("\\.+*?()|[]{}^$", *c)) { /* regex escape, then string escape */
          o[k++] = '\\';
          o[k++] = '\\';
        } else if (*c == '"') {
          o[k++] = '\\';
        }
        o[k++] = *c;
      }
    }
  }
  o[k++] = '"';
  return k;
}

static int rewrite(parser *P, char **out) {
  /* the longest possible addition per edit: {label=~"..."}, with every byte escaped thrice */
  size_t per = P->label_len + 8;
  for (size_t t = 0; t < P->ntenants; t++)
    per += 3 * strlen(P->tenants[t]) + 1;
  if (P->nedits > (SIZE_MAX - P->n - 1) / per)
    return fail(P, RBL_PROMQL_ESYNTAX, (size_t)-1, "out of memory");
  char *o = malloc(P->n + 1 + P->nedits * per);
  if (!o) return fail(P, RBL_PROMQL_ESYNTAX, (size_t)-1, "out of memory");
  size_t k = 0, at = 0;
  for (size_t e = 0; e < P->nedits; e++) {
    const edit *ed = &P->edits[e];
    memcpy(o + k, P->s + at, ed->pos - at);
    k += ed->pos - at;
    if (ed->kind == 2) o[k++] = '{';
    if (ed->del) {
      /* keep the tenant the query named (it is one of the allowed ones) */
      const tok *vt = &P->toks[ed->vtok];
      long vl = vt->t == T_STR ? unquote(P->s + vt->pos, vt->len, P->buf) : -1;
      if (vl < 0) {
        free(o);
        return fail(P, RBL_PROMQL_ESYNTAX, ed->pos, "internal error: lost a matcher");
      }
      P->buf[vl] = '\0';
      k += matcher_text(P, P->buf, 0, o + k);
    } else {
      k += matcher_text(P, P->tenants[0], P->set, o + k);
    }
    if (ed->kind == 1) o[k++] = ',';
    if (ed->kind == 2) o[k++] = '}';
    at = ed->pos + ed->del;
  }
  memcpy(o + k, P->s + at, P->n - at);
  k += P->n - at;
  o[k] = '\0';
  if (k > RBL_PROMQL_MAX_LEN) { /* the check (the gate's) must accept what scope produces */
    free(o);
    return fail(P, RBL_PROMQL_ESYNTAX, (size_t)-1, "the scoped query would be longer than %d bytes",
                RBL_PROMQL_MAX_LEN);
  }
  *out = o;
  return 0;
}

static int do_scope(const char *expr_s, const char *label, const char *const *tenants, size_t nt,
                    int set, char **out, char *why, size_t whylen) {
  parser P;
  memset(&P, 0, sizeof P);
  P.why = why, P.whylen = whylen, P.mode = MODE_SCOPE;
  P.label = label, P.tenants = tenants, P.ntenants = nt, P.set = set;
  if (out) *out = NULL;
  int rc = run(&P, expr_s);
  if (!rc) rc = rewrite(&P, out);
  done(&P);
  return rc;
}

static int do_check(const char *expr_s, const char *label, const char *const *tenants, size_t nt,
                    int set, char *why, size_t whylen) {
  parser P;
  memset(&P, 0, sizeof P);
  P.why = why, P.whylen = whylen, P.mode = MODE_CHECK;
  P.label = label, P.tenants = tenants, P.ntenants = nt, P.set = set;
  int rc = run(&P, expr_s);
  done(&P);
  return rc;
}

int rbl_promql_check(const char *expr_s, const char *label, const char *tenant, char *why,
                     size_t whylen) {
  const char *ts[1] = {tenant};
  return do_check(expr_s, label, ts, tenant ? 1 : 0, 0, why, whylen);
}

int rbl_promql_scope(const char *expr_s, const char *label, const char *tenant, char **out,
                     char *why, size_t whylen) {
  const char *ts[1] = {tenant};
  return do_scope(expr_s, label, ts, tenant ? 1 : 0, 0, out, why, whylen);
}

int rbl_promql_scope_set(const char *expr_s, const char *label, const char *const *tenants,
                         size_t ntenants, char **out, char *why, size_t whylen) {
  return do_scope(expr_s, label, tenants, tenants ? ntenants : 0, 1, out, why, whylen);
}

int rbl_promql_check_set(const char *expr_s, const char *label, const char *const *tenants,
                         size_t ntenants, char *why, size_t whylen) {
  return do_check(expr_s, label, tenants, tenants ? ntenants : 0, 1, why, whylen);
}

int rbl_promql_parse(const char *expr_s, char *why, size_t whylen) {
  parser P;
  memset(&P, 0, sizeof P);
  P.why = why, P.whylen = whylen, P.mode = MODE_PARSE;
  int rc = run(&P, expr_s);
  done(&P);
  return rc;
}
