/* strpat.c: Lua 5.4 pattern matching (find/match/gmatch/gsub) with a step budget so the sandbox can
 * stop runaway patterns. */
#include "strpat.h"

#include <ctype.h>
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

/* Same limits as stock Lua so results (and "too complex" errors) agree. */
#define MAX_CAPTURES 32
#define MAX_DEPTH    200

/* Capture length markers: still open, or a position capture "()". */
#define CAP_OPEN     (-1)
#define CAP_POSITION (-2)

typedef struct {
  const char *start;
  ptrdiff_t len; /* >= 0, CAP_OPEN or CAP_POSITION */
} capture;

/* Everything lives on the C stack: an error raised mid-match leaks nothing. */
typedef struct {
  lua_State *L;
  const char *subj;     /* subject start */
  const char *subj_end; /* one past the subject */
  const char *pat_end;  /* one past the pattern */
  int depth_left;       /* recursion budget ("pattern too complex") */
  int ncap;             /* captures started so far */
  unsigned steps_left;  /* steps until the next poll */
  capture cap[MAX_CAPTURES];
} matcher;

static _Atomic(rbl_strpat_poll_fn) g_poll; /* NULL: static storage is zeroed */

void rbl_strpat_set_poll(rbl_strpat_poll_fn fn) {
  atomic_store_explicit(&g_poll, fn, memory_order_relaxed);
}

/* ------------------------------------------------------------------ budget */

/* Out of line so the per-step fast path stays a decrement and a branch. */
static void __attribute__((noinline)) poll_now(matcher *m) {
  rbl_strpat_poll_fn fn = atomic_load_explicit(&g_poll, memory_order_relaxed);
  m->steps_left = RBL_STRPAT_POLL_INTERVAL;
  if (fn != NULL) {
    int top = lua_gettop(m->L);
    luaL_checkstack(m->L, LUA_MINSTACK, "strpat poll");
    fn(m->L); /* may raise; we hold nothing that needs freeing */
    lua_settop(m->L, top);
  }
}

static inline void step(matcher *m) {
  if (--m->steps_left == 0) poll_now(m);
}

/* Charges a bulk operation (memcmp of a back-reference) in one go. */
static void steps(matcher *m, size_t n) {
  while (n >= m->steps_left) {
    n -= m->steps_left;
    poll_now(m); /* resets steps_left */
  }
  m->steps_left -= (unsigned)n;
}

static void matcher_init(matcher *m, lua_State *L, const char *s, size_t slen, const char *p,
                         size_t plen) {
  m->L = L;
  m->subj = s;
  m->subj_end = s + slen;
  m->pat_end = p + plen;
  m->steps_left = RBL_STRPAT_POLL_INTERVAL;
  m->depth_left = MAX_DEPTH;
  m->ncap = 0;
}

/* Fresh capture/depth state for a new start position; the budget carries on. */
static void matcher_restart(matcher *m) {
  m->depth_left = MAX_DEPTH;
  m->ncap = 0;
}

/* ---------------------------------------------------------- char classes */

/* %x-style class letter test; unknown letters stand for themselves. */
static int class_has(int c, int cl) {
  int r;
  switch (tolower(cl)) {
  case 'a': r = isalpha(c); break;
  case 'c': r = iscntrl(c); break;
  case 'd': r = isdigit(c); break;
  case 'g': r = isgraph(c); break;
  case 'l': r = islower(c); break;
  case 'p': r = ispunct(c); break;
  case 's': r = isspace(c); break;
  case 'u': r = isupper(c); break;
  case 'w': r = isalnum(c); break;
  case 'x': r = isxdigit(c); break;
  case 'z': r = c == 0; break; /* deprecated but still in stock 5.4 */
  default: return cl == c;
  }
  if (isupper(cl)) r = !r;
  return r != 0;
}

/* Set test; 'open' is the '[' and 'close' the matching ']'. */
static int set_has(int c, const char *open, const char *close) {
  const char *p = open + 1;
  int want = 1;
  if (*p == '^') {
    want = 0;
    p++;
  }
  for (; p < close; p++) {
    unsigned char lo = (unsigned char)*p;
    if (lo == '%') {
      p++;
      if (class_has(c, (unsigned char)*p)) return want;
    } else if (p + 2 < close && p[1] == '-') {
      if (lo <= c && c <= (unsigned char)p[2]) return want;
      p += 2;
    } else if (lo == c) {
      return want;
    }
  }
  return !want;
}

/*
 * End of the single-character class starting at p ('.', '%x', '[set]' or a
 * literal).  Errors are raised only when the matcher reaches the item, which
 * is what stock Lua does, so a malformed tail that is never reached is fine.
 */
static const char *item_end(matcher *m, const char *p) {
  const char *pe = m->pat_end;
  if (*p == '%') {
    if (p + 1 >= pe) luaL_error(m->L, "malformed pattern (ends with '%%')");
    return p + 2;
  }
  if (*p != '[') return p + 1;
  p++;
  if (p < pe && *p == '^') p++;
  /* The first member is taken literally even if it is ']'. */
  for (;;) {
    if (p >= pe) luaL_error(m->L, "malformed pattern (missing ']')");
    if (*p++ == '%' && p < pe) p++;
    if (p < pe && *p == ']') return p + 1;
  }
}

/* Does the class [p, ep) accept character c? */
static int item_has(int c, const char *p, const char *ep) {
  switch (*p) {
  case '.': return 1;
  case '%': return class_has(c, (unsigned char)p[1]);
  case '[': return set_has(c, p, ep - 1);
  default: return (unsigned char)*p == c;
  }
}

/* One step of the budget per subject character examined. */
static int item_at(matcher *m, const char *s, const char *p, const char *ep) {
  step(m);
  return s < m->subj_end && item_has((unsigned char)*s, p, ep);
}

/* ---------------------------------------------------------------- matcher */

static const char *match_here(matcher *m, const char *s, const char *p);

/* Longest run first, then give back one character at a time. */
static const char *match_greedy(matcher *m, const char *s, const char *p, const char *ep) {
  ptrdiff_t n = 0;
  while (item_at(m, s + n, p, ep))
    n++;
  for (;; n--) {
    const char *r = match_here(m, s + n, ep + 1);
    if (r != NULL || n == 0) return r;
  }
}

/* Shortest run first, extending one character per failed attempt. */
static const char *match_lazy(matcher *m, const char *s, const char *p, const char *ep) {
  for (;;) {
    const char *r = match_here(m, s, ep + 1);
    if (r != NULL) return r;
    if (!item_at(m, s, p, ep)) return NULL;
    s++;
  }
}

static const char *open_capture(matcher *m, const char *s, const char *p, ptrdiff_t kind) {
  const char *r;
  if (m->ncap >= MAX_CAPTURES) luaL_error(m->L, "too many captures");
  m->cap[m->ncap].start = s;
  m->cap[m->ncap].len = kind;
  m->ncap++;
  r = match_here(m, s, p);
  if (r == NULL) m->ncap--; /* undo so a retry from elsewhere sees a clean slate */
  return r;
}

static const char *close_capture(matcher *m, const char *s, const char *p) {
  int i = m->ncap - 1;
  const char *r;
  while (i >= 0 && m->cap[i].len != CAP_OPEN)
    i--;
  if (i < 0) luaL_error(m->L, "invalid pattern capture");
  m->cap[i].len = s - m->cap[i].start;
  r = match_here(m, s, p);
  if (r == NULL) m->cap[i].len = CAP_OPEN;
  return r;
}

/* %1-%9 in a pattern: the text of an earlier, closed capture. */
static const char *match_backref(matcher *m, const char *s, int digit) {
  int i = digit - '1';
  ptrdiff_t len;
  if (i < 0 || i >= m->ncap || m->cap[i].len == CAP_OPEN)
    luaL_error(m->L, "invalid capture index %%%d", i + 1);
  len = m->cap[i].len;
  /* A position capture has no text; stock never matches it either. */
  if (len < 0 || m->subj_end - s < len) return NULL;
  steps(m, (size_t)len + 1);
  return memcmp(m->cap[i].start, s, (size_t)len) == 0 ? s + len : NULL;
}

/* %bxy: p points at x; y must follow. */
static const char *match_balance(matcher *m, const char *s, const char *p) {
  int depth = 1;
  if (p + 1 >= m->pat_end) luaL_error(m->L, "malformed pattern (missing arguments to '%%b')");
  step(m);
  if (s >= m->subj_end || *s != p[0]) return NULL;
  while (++s < m->subj_end) {
    step(m);
    if (*s == p[1]) {
      if (--depth == 0) return s + 1;
    } else if (*s == p[0]) {
      depth++;
    }
  }
  return NULL;
}

/* %f[set]: p points at '['; returns the pattern after the set, or NULL. */
static const char *match_frontier(matcher *m, const char *s, const char *p) {
  const char *ep;
  int before, here;
  if (p >= m->pat_end || *p != '[') luaL_error(m->L, "missing '[' after '%%f' in pattern");
  ep = item_end(m, p);
  step(m);
  /* The subject is treated as framed by '\0' on both sides. */
  before = s == m->subj ? 0 : (unsigned char)s[-1];
  here = s < m->subj_end ? (unsigned char)*s : 0;
  if (!set_has(before, p, ep - 1) && set_has(here, p, ep - 1)) return ep;
  return NULL;
}

/*
 * Match pattern p against the subject at s; returns the end of the match.
 * Only quantifiers that must try several continuations and captures recurse;
 * plain items loop, so depth grows with the pattern, never with the subject.
 */
static const char *match_here(matcher *m, const char *s, const char *p) {
  const char *pe = m->pat_end;
  if (m->depth_left-- == 0) luaL_error(m->L, "pattern too complex");
  while (p < pe && s != NULL) {
    const char *ep;
    int ok;
    switch (*p) {
    case '(':
      if (p + 1 < pe && p[1] == ')')
        s = open_capture(m, s, p + 2, CAP_POSITION);
      else
        s = open_capture(m, s, p + 1, CAP_OPEN);
      goto done;
    case ')': s = close_capture(m, s, p + 1); goto done;
    case '$':
      if (p + 1 == pe) {
        s = s == m->subj_end ? s : NULL;
        goto done;
      }
      break; /* a '$' elsewhere is a literal */
    case '%': {
      int next = p + 1 < pe ? (unsigned char)p[1] : 0;
      if (next == 'b') {
        s = match_balance(m, s, p + 2);
        p += 4;
        continue;
      }
      if (next == 'f') {
        p = match_frontier(m, s, p + 2);
        if (p == NULL) s = NULL;
        continue;
      }
      if (isdigit(next)) {
        s = match_backref(m, s, next);
        p += 2;
        continue;
      }
      break;
    }
    default: break;
    }
    ep = item_end(m, p);
    ok = item_at(m, s, p, ep);
    switch (ep < pe ? *ep : '\0') {
    case '?':
      if (ok) {
        const char *r = match_here(m, s + 1, ep + 1);
        if (r != NULL) {
          s = r;
          goto done;
        }
      }
      p = ep + 1;
      break;
    case '+': s = ok ? match_greedy(m, s + 1, p, ep) : NULL; goto done;
    case '*':
      if (ok) {
        s = match_greedy(m, s, p, ep);
        goto done;
      }
      p = ep + 1;
      break;
    case '-':
      if (ok) {
        s = match_lazy(m, s, p, ep);
        goto done;
      }
      p = ep + 1;
      break;
    default:
      if (!ok)
        s = NULL;
      else {
        s++;
        p = ep;
      }
      break;
    }
  }
done:
  m->depth_left++;
  return s;
}

/* ------------------------------------------------------------- front ends */

/* 1-based, possibly negative init -> 0-based offset (may exceed len). */
static size_t start_offset(lua_Integer pos, size_t len) {
  if (pos > 0) return (size_t)pos - 1;
  if (pos == 0 || pos < -(lua_Integer)len) return 0;
  return len + (size_t)pos;
}

/* Any magic character at all?  Plain patterns take the memchr fast path. */
static int has_specials(const char *p, size_t len) {
  size_t i;
  for (i = 0; i < len; i++) {
    switch (p[i]) {
    case '^':
    case '$':
    case '*':
    case '+':
    case '?':
    case '.':
    case '(':
    case '[':
    case '%':
    case '-': return 1;
    default: break;
    }
  }
  return 0;
}

static const char *find_plain(const char *s, size_t slen, const char *p, size_t plen) {
  const char *end = s + slen;
  if (plen == 0) return s;
  if (plen > slen) return NULL;
  end -= plen - 1; /* last possible start + 1 */
  while (s < end) {
    s = memchr(s, p[0], (size_t)(end - s));
    if (s == NULL) return NULL;
    if (memcmp(s + 1, p + 1, plen - 1) == 0) return s;
    s++;
  }
  return NULL;
}

/*
 * If every match must begin with one fixed byte, return it (else -1) so the
 * unanchored loops can memchr to candidates.  Skipped positions would fail on
 * the first item without reaching anything that could raise an error.
 */
static int leading_literal(const char *p, const char *pe) {
  if (p >= pe) return -1;
  switch (*p) {
  case '(':
  case ')':
  case '%':
  case '[':
  case '.': return -1;
  case '$':
    if (p + 1 == pe) return -1;
    break;
  default: break;
  }
  if (p + 1 < pe && (p[1] == '*' || p[1] == '?' || p[1] == '-')) return -1;
  return (unsigned char)*p;
}

/* Next start position to try at or after s, or NULL if none can match. */
static const char *next_candidate(const matcher *m, const char *s, int lead) {
  if (lead < 0) return s;
  if (s >= m->subj_end) return NULL;
  return memchr(s, lead, (size_t)(m->subj_end - s));
}

/* Text of capture i into *text (length returned), or pushes a position. */
static ptrdiff_t capture_text(matcher *m, int i, const char *s, const char *e, const char **text) {
  if (i >= m->ncap) {
    if (i != 0) luaL_error(m->L, "invalid capture index %%%d", i + 1);
    *text = s; /* no captures: %1 / first value is the whole match */
    return e - s;
  }
  if (m->cap[i].len == CAP_OPEN) luaL_error(m->L, "unfinished capture");
  *text = m->cap[i].start;
  if (m->cap[i].len == CAP_POSITION) lua_pushinteger(m->L, (m->cap[i].start - m->subj) + 1);
  return m->cap[i].len;
}

static void push_capture(matcher *m, int i, const char *s, const char *e) {
  const char *text;
  ptrdiff_t len = capture_text(m, i, s, e, &text);
  if (len != CAP_POSITION) lua_pushlstring(m->L, text, (size_t)len);
}

/* Pushes all captures (or the whole match if s is given and there are none). */
static int push_captures(matcher *m, const char *s, const char *e) {
  int n = (m->ncap == 0 && s != NULL) ? 1 : m->ncap;
  int i;
  luaL_checkstack(m->L, n, "too many captures");
  for (i = 0; i < n; i++)
    push_capture(m, i, s, e);
  return n;
}

static int find_or_match(lua_State *L, int is_find) {
  size_t slen, plen;
  const char *s = luaL_checklstring(L, 1, &slen);
  const char *p = luaL_checklstring(L, 2, &plen);
  size_t init = start_offset(luaL_optinteger(L, 3, 1), slen);
  if (init > slen) {
    luaL_pushfail(L);
    return 1;
  }
  if (is_find && (lua_toboolean(L, 4) || !has_specials(p, plen))) {
    const char *hit = find_plain(s + init, slen - init, p, plen);
    if (hit != NULL) {
      lua_pushinteger(L, (hit - s) + 1);
      lua_pushinteger(L, (lua_Integer)((size_t)(hit - s) + plen));
      return 2;
    }
  } else {
    matcher m;
    int anchored = plen > 0 && *p == '^';
    const char *at = s + init;
    int lead;
    if (anchored) {
      p++;
      plen--;
    }
    matcher_init(&m, L, s, slen, p, plen);
    lead = anchored ? -1 : leading_literal(p, m.pat_end);
    while ((at = next_candidate(&m, at, lead)) != NULL) {
      const char *e;
      matcher_restart(&m);
      e = match_here(&m, at, p);
      if (e != NULL) {
        if (!is_find) return push_captures(&m, at, e);
        lua_pushinteger(L, (at - s) + 1);
        lua_pushinteger(L, e - s);
        return push_captures(&m, NULL, NULL) + 2;
      }
      if (anchored || at >= m.subj_end) break;
      at++;
    }
  }
  luaL_pushfail(L);
  return 1;
}

static int strpat_find(lua_State *L) { return find_or_match(L, 1); }

static int strpat_match(lua_State *L) { return find_or_match(L, 0); }

/* ------------------------------------------------------------------ gmatch */

/* Iterator state; offsets rather than pointers so it survives any GC. */
typedef struct {
  size_t pos;     /* next start offset (may be len + 1: exhausted) */
  ptrdiff_t last; /* end offset of the previous match, or -1 */
} gmatch_state;

static int gmatch_step(lua_State *L) {
  size_t slen, plen;
  const char *s = lua_tolstring(L, lua_upvalueindex(1), &slen);
  const char *p = lua_tolstring(L, lua_upvalueindex(2), &plen);
  gmatch_state *st = lua_touserdata(L, lua_upvalueindex(3));
  matcher m;
  const char *at;
  int lead;
  if (st->pos > slen) return 0;
  matcher_init(&m, L, s, slen, p, plen);
  /* '^' is not an anchor here (it would stop the iteration): literal. */
  lead = leading_literal(p, m.pat_end);
  at = s + st->pos;
  while ((at = next_candidate(&m, at, lead)) != NULL) {
    const char *e;
    matcher_restart(&m);
    e = match_here(&m, at, p);
    if (e != NULL && e - s != st->last) {
      /* State is updated only after the match, so a poll error
         leaves the iterator where it was. */
      st->pos = (size_t)(e - s);
      st->last = e - s;
      return push_captures(&m, at, e);
    }
    if (at >= m.subj_end) break;
    at++;
  }
  st->pos = slen + 1;
  return 0;
}

static int strpat_gmatch(lua_State *L) {
  size_t slen, init;
  gmatch_state *st;
  luaL_checklstring(L, 1, &slen);
  luaL_checkstring(L, 2);
  init = start_offset(luaL_optinteger(L, 3, 1), slen);
  lua_settop(L, 2); /* the closure keeps subject and pattern alive */
  st = lua_newuserdatauv(L, sizeof *st, 0);
  st->pos = init > slen ? slen + 1 : init;
  st->last = -1;
  lua_pushcclosure(L, gmatch_step, 3);
  return 1;
}

/* ------------------------------------------------------------------- gsub */

/* Expands a replacement string: %0-%9 and %%. */
static void add_template(matcher *m, luaL_Buffer *b, const char *s, const char *e) {
  size_t len;
  const char *r = lua_tolstring(m->L, 3, &len);
  const char *rend = r + len;
  const char *pct;
  while ((pct = memchr(r, '%', (size_t)(rend - r))) != NULL) {
    int c;
    luaL_addlstring(b, r, (size_t)(pct - r));
    c = pct + 1 < rend ? (unsigned char)pct[1] : 0;
    if (c == '%') {
      luaL_addchar(b, '%');
    } else if (c == '0') {
      luaL_addlstring(b, s, (size_t)(e - s));
    } else if (isdigit(c)) {
      const char *text;
      ptrdiff_t n = capture_text(m, c - '1', s, e, &text);
      if (n == CAP_POSITION)
        luaL_addvalue(b); /* the pushed integer, as text */
      else
        luaL_addlstring(b, text, (size_t)n);
    } else {
      luaL_error(m->L, "invalid use of '%%' in replacement string");
    }
    r = pct + 2;
  }
  luaL_addlstring(b, r, (size_t)(rend - r));
}

/* Appends the replacement for match [s, e) according to argument 3. */
static void add_replacement(matcher *m, luaL_Buffer *b, const char *s, const char *e, int kind) {
  lua_State *L = m->L;
  if (kind == LUA_TFUNCTION) {
    int n;
    lua_pushvalue(L, 3);
    n = push_captures(m, s, e);
    lua_call(L, n, 1);
  } else if (kind == LUA_TTABLE) {
    push_capture(m, 0, s, e);
    lua_gettable(L, 3);
  } else {
    add_template(m, b, s, e);
    return;
  }
  if (!lua_toboolean(L, -1)) { /* nil/false keeps the matched text */
    lua_pop(L, 1);
    luaL_addlstring(b, s, (size_t)(e - s));
  } else if (!lua_isstring(L, -1)) {
    luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
  } else {
    luaL_addvalue(b);
  }
}

static int strpat_gsub(lua_State *L) {
  size_t slen, plen;
  const char *s = luaL_checklstring(L, 1, &slen);
  const char *p = luaL_checklstring(L, 2, &plen);
  int kind = lua_type(L, 3);
  lua_Integer max_n = luaL_optinteger(L, 4, (lua_Integer)slen + 1);
  int anchored = plen > 0 && *p == '^';
  const char *src = s, *last = NULL;
  lua_Integer n = 0;
  int lead;
  matcher m;
  luaL_Buffer b;
  luaL_argexpected(
      L, kind == LUA_TNUMBER || kind == LUA_TSTRING || kind == LUA_TFUNCTION || kind == LUA_TTABLE,
      3, "string/function/table");
  if (anchored) {
    p++;
    plen--;
  }
  matcher_init(&m, L, s, slen, p, plen);
  lead = anchored ? -1 : leading_literal(p, m.pat_end);
  luaL_buffinit(L, &b);
  while (n < max_n) {
    const char *e, *cand = next_candidate(&m, src, lead);
    if (cand == NULL) break;
    if (cand != src) { /* copy text that cannot start a match */
      luaL_addlstring(&b, src, (size_t)(cand - src));
      src = cand;
    }
    matcher_restart(&m);
    e = match_here(&m, src, p);
    if (e != NULL && e != last) {
      n++;
      add_replacement(&m, &b, src, e, kind);
      src = last = e;
    } else if (src < m.subj_end) {
      luaL_addchar(&b, *src++);
    } else {
      break;
    }
    if (anchored) break;
  }
  luaL_addlstring(&b, src, (size_t)(m.subj_end - src));
  luaL_pushresult(&b);
  lua_pushinteger(L, n);
  return 2;
}

/* ------------------------------------------------------------------ open */

int luaopen_rbl_strpat(lua_State *L) {
  static const luaL_Reg funcs[] = {
      {"find", strpat_find},
      {"match", strpat_match},
      {"gmatch", strpat_gmatch},
      {"gsub", strpat_gsub},
      {NULL, NULL},
  };
  luaL_newlib(L, funcs);
  return 1;
}
