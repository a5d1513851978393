/* YAML -> cJSON over libyaml's event parser, with anchors, aliases and merge keys. */
/* <yaml.h> on the include path is src/core/yaml.h, which brings in libyaml's own <yaml.h>. */
#include <yaml.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* An anchored node of the current document; owned by the builder, freed at the end
 * of the document (anchors do not cross documents). */
typedef struct yaml_anchor {
  char *name;
  cJSON *node; /* a private copy, duplicated on each alias */
  long count;  /* nodes in node, charged again on each alias */
  struct yaml_anchor *next;
} yaml_anchor;

typedef struct builder {
  yaml_parser_t parser;
  yaml_anchor *anchors;
  long nodes;
  int depth;
  char *err;
  size_t errlen;
} builder;

static void fail_at(builder *b, yaml_mark_t m, const char *fmt, ...) {
  if (!b->err || b->errlen == 0 || b->err[0]) return;
  int n = snprintf(b->err, b->errlen, "line %zu, column %zu: ", m.line + 1, m.column + 1);
  if (n < 0 || (size_t)n >= b->errlen) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(b->err + n, b->errlen - (size_t)n, fmt, ap);
  va_end(ap);
}

static int next_event(builder *b, yaml_event_t *ev) {
  if (yaml_parser_parse(&b->parser, ev)) return 0;
  yaml_parser_t *p = &b->parser;
  yaml_mark_t m = p->problem_mark;
  if (p->error == YAML_MEMORY_ERROR) {
    fail_at(b, m, "out of memory");
  } else if (p->context) {
    fail_at(b, m, "%s (%s, line %zu)", p->problem ? p->problem : "syntax error", p->context,
            p->context_mark.line + 1);
  } else {
    fail_at(b, m, "%s", p->problem ? p->problem : "syntax error");
  }
  return -1;
}

static void free_anchors(builder *b) {
  while (b->anchors) {
    yaml_anchor *a = b->anchors;
    b->anchors = a->next;
    free(a->name);
    cJSON_Delete(a->node);
    free(a);
  }
}

static int charge(builder *b, long n, yaml_mark_t m) {
  if (b->nodes + n > RBL_YAML_MAX_NODES) {
    fail_at(b, m, "more than %ld nodes (alias expansion?)", RBL_YAML_MAX_NODES);
    return -1;
  }
  b->nodes += n;
  return 0;
}

/* ---- scalars ---- */

static int all_in(const char *s, const char *set) {
  if (!*s) return 0;
  for (; *s; s++)
    if (!strchr(set, *s)) return 0;
  return 1;
}

/* A decimal float: [-+]? ( digits [. digits*] | . digits ) ( [eE] [-+]? digits )? */
static int is_float(const char *s) {
  if (*s == '-' || *s == '+') s++;
  int digits = 0;
  while (*s >= '0' && *s <= '9')
    s++, digits++;
  if (*s == '.') {
    s++;
    while (*s >= '0' && *s <= '9')
      s++, digits++;
  }
  if (!digits) return 0;
  if (*s == 'e' || *s == 'E') {
    s++;
    if (*s == '-' || *s == '+') s++;
    if (!(*s >= '0' && *s <= '9')) return 0;
    while (*s >= '0' && *s <= '9')
      s++;
  }
  return *s == '\0';
}

static cJSON *plain_scalar(const char *s) {
  if (!*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL"))
    return cJSON_CreateNull();
  if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE")) return cJSON_CreateTrue();
  if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE")) return cJSON_CreateFalse();
  const char *d = (*s == '-' || *s == '+') ? s + 1 : s;
  if ((d[0] == '0' && (d[1] == 'x' || d[1] == 'o')) && d == s) {
    int hex = d[1] == 'x';
    if (all_in(d + 2, hex ? "0123456789abcdefABCDEF" : "01234567")) {
      errno = 0;
      unsigned long long v = strtoull(d + 2, NULL, hex ? 16 : 8);
      if (errno == 0) return cJSON_CreateNumber((double)v);
    }
    return cJSON_CreateString(s);
  }
  if (all_in(d, "0123456789") || is_float(s)) {
    errno = 0;
    double v = strtod(s, NULL);
    if (errno == 0) return cJSON_CreateNumber(v);
  }
  return cJSON_CreateString(s);
}

static cJSON *make_scalar(yaml_event_t *ev) {
  const char *val = (const char *)ev->data.scalar.value;
  const char *tag = (const char *)ev->data.scalar.tag;
  if (tag && !strcmp(tag, YAML_STR_TAG)) return cJSON_CreateString(val);
  if (ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) return cJSON_CreateString(val);
  return plain_scalar(val);
}

/* ---- nodes ---- */

static cJSON *parse_node(builder *b, yaml_event_t *ev);

static int set_member(cJSON *obj, const char *key, cJSON *val) {
  if (cJSON_GetObjectItemCaseSensitive(obj, key))
    return cJSON_ReplaceItemInObjectCaseSensitive(obj, key, val) ? 0 : -1;
  cJSON_AddItemToObject(obj, key, val);
  return 0;
}

/* "<<: *base" or "<<: [*a, *b]": copies members obj does not have yet. */
static int merge_into(builder *b, cJSON *obj, cJSON *src, yaml_mark_t m) {
  if (cJSON_IsArray(src)) {
    for (cJSON *c = src->child; c; c = c->next)
      if (merge_into(b, obj, c, m)) return -1;
    return 0;
  }
  if (!cJSON_IsObject(src)) {
    fail_at(b, m, "a merge key (<<) needs a mapping or a list of mappings");
    return -1;
  }
  for (cJSON *c = src->child; c; c = c->next) {
    if (cJSON_GetObjectItemCaseSensitive(obj, c->string)) continue;
    cJSON *dup = cJSON_Duplicate(c, 1);
    if (!dup) return -1;
    cJSON_AddItemToObject(obj, c->string, dup);
  }
  return 0;
}

static cJSON *parse_mapping(builder *b) {
  cJSON *obj = cJSON_CreateObject();
  yaml_event_t kev, vev;
  for (;;) {
    if (next_event(b, &kev)) goto fail;
    if (kev.type == YAML_MAPPING_END_EVENT) {
      yaml_event_delete(&kev);
      return obj;
    }
    if (kev.type != YAML_SCALAR_EVENT) {
      fail_at(b, kev.start_mark, "only scalar mapping keys are supported");
      yaml_event_delete(&kev);
      goto fail;
    }
    int merge = kev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
                !strcmp((const char *)kev.data.scalar.value, "<<");
    char *key = strdup((const char *)kev.data.scalar.value);
    yaml_mark_t km = kev.start_mark;
    yaml_event_delete(&kev);
    if (!key) goto fail;
    cJSON *val = NULL;
    if (next_event(b, &vev) == 0) val = parse_node(b, &vev);
    if (!val) {
      free(key);
      goto fail;
    }
    int rc = merge ? merge_into(b, obj, val, km) : set_member(obj, key, val);
    if (merge) cJSON_Delete(val);
    free(key);
    if (rc) goto fail;
  }
fail:
  cJSON_Delete(obj);
  return NULL;
}

static cJSON *parse_sequence(builder *b) {
  cJSON *arr = cJSON_CreateArray();
  yaml_event_t ev;
  for (;;) {
    if (next_event(b, &ev)) break;
    if (ev.type == YAML_SEQUENCE_END_EVENT) {
      yaml_event_delete(&ev);
      return arr;
    }
    cJSON *item = parse_node(b, &ev);
    if (!item) break;
    cJSON_AddItemToArray(arr, item);
  }
  cJSON_Delete(arr);
  return NULL;
}

static cJSON *parse_alias(builder *b, yaml_event_t *ev) {
  const char *name = (const char *)ev->data.alias.anchor;
  for (yaml_anchor *a = b->anchors; a; a = a->next) {
    if (strcmp(a->name, name)) continue;
    if (charge(b, a->count, ev->start_mark)) return NULL;
    return cJSON_Duplicate(a->node, 1);
  }
  fail_at(b, ev->start_mark, "unknown alias *%s", name);
  return NULL;
}

static int remember(builder *b, const char *name, cJSON *node, long count) {
  yaml_anchor *a = calloc(1, sizeof *a);
  if (!a) return -1;
  a->name = strdup(name);
  a->node = cJSON_Duplicate(node, 1);
  a->count = count;
  if (!a->name || !a->node) {
    free(a->name);
    cJSON_Delete(a->node);
    free(a);
    return -1;
  }
  a->next = b->anchors; /* newest first: a redefined anchor shadows the old one */
  b->anchors = a;
  return 0;
}

/* Builds the node ev starts; consumes ev. */
static cJSON *parse_node(builder *b, yaml_event_t *ev) {
  yaml_mark_t m = ev->start_mark;
  const char *anchor = NULL;
  long before = b->nodes;
  cJSON *node = NULL;
  if (ev->type == YAML_ALIAS_EVENT) {
    node = parse_alias(b, ev);
    yaml_event_delete(ev);
    return node;
  }
  if (charge(b, 1, m)) {
    yaml_event_delete(ev);
    return NULL;
  }
  char *anchor_copy = NULL;
  if (ev->type == YAML_SCALAR_EVENT) {
    anchor = (const char *)ev->data.scalar.anchor;
    node = make_scalar(ev);
  } else if (ev->type == YAML_SEQUENCE_START_EVENT || ev->type == YAML_MAPPING_START_EVENT) {
    int seq = ev->type == YAML_SEQUENCE_START_EVENT;
    anchor = (const char *)(seq ? ev->data.sequence_start.anchor : ev->data.mapping_start.anchor);
    if (anchor && !(anchor_copy = strdup(anchor))) {
      yaml_event_delete(ev);
      return NULL;
    }
    anchor = NULL;
    if (++b->depth > RBL_YAML_MAX_DEPTH) {
      fail_at(b, m, "nested deeper than %d", RBL_YAML_MAX_DEPTH);
      yaml_event_delete(ev);
      free(anchor_copy);
      return NULL;
    }
    yaml_event_delete(ev);
    node = seq ? parse_sequence(b) : parse_mapping(b);
    b->depth--;
  } else {
    fail_at(b, m, "unexpected YAML event %d", (int)ev->type);
  }
  if (node && (anchor || anchor_copy)) {
    if (remember(b, anchor ? anchor : anchor_copy, node, b->nodes - before)) {
      cJSON_Delete(node);
      node = NULL;
    }
  }
  free(anchor_copy);
  if (ev->type == YAML_SCALAR_EVENT) yaml_event_delete(ev);
  return node;
}

static int parse_stream(builder *b, cJSON *docs) {
  yaml_event_t ev;
  for (;;) {
    if (next_event(b, &ev)) return -1;
    yaml_event_type_t t = ev.type;
    yaml_event_delete(&ev);
    if (t == YAML_STREAM_END_EVENT) return 0;
    if (t != YAML_DOCUMENT_START_EVENT) continue; /* STREAM_START */
    if (next_event(b, &ev)) return -1;
    cJSON *doc = parse_node(b, &ev);
    if (!doc) return -1;
    cJSON_AddItemToArray(docs, doc);
    if (next_event(b, &ev)) return -1; /* DOCUMENT_END */
    yaml_event_delete(&ev);
    free_anchors(b);
  }
}

cJSON *rbl_yaml_parse(const char *buf, size_t len, char *err, size_t errlen) {
  builder b;
  memset(&b, 0, sizeof b);
  b.err = err;
  b.errlen = errlen;
  if (err && errlen) err[0] = '\0';
  if (!yaml_parser_initialize(&b.parser)) {
    if (err && errlen) snprintf(err, errlen, "out of memory");
    return NULL;
  }
  yaml_parser_set_input_string(&b.parser, (const unsigned char *)buf, len);
  cJSON *docs = cJSON_CreateArray();
  int rc = docs ? parse_stream(&b, docs) : -1;
  free_anchors(&b);
  yaml_parser_delete(&b.parser);
  if (rc) {
    cJSON_Delete(docs);
    if (err && errlen && !err[0]) snprintf(err, errlen, "out of memory");
    return NULL;
  }
  return docs;
}
