/* PromQL tenant scoping: a bounded lexer and parser of PromQL that finds every vector and
 * matrix selector of a query, checks the matchers on the tenant label, and rewrites the query
 * so that each selector carries exactly one `label="tenant"` (or `label=~"t1|t2"`) matcher, as
 * prom-label-proxy does. Free of Lua: the tenant gate calls the checks, rbl.prom.c (prom.c)
 * binds the rewriters for src/families/prom/prom.lua. See src/families/prom/prom.md. */
#ifndef RBL_PROMQL_H
#define RBL_PROMQL_H

#include <stddef.h>

#define RBL_PROMQL_MAX_LEN    32768 /* bytes of query text */
#define RBL_PROMQL_MAX_DEPTH  128   /* nesting of expressions */
#define RBL_PROMQL_MAX_TENANT 256   /* bytes of one tenant name */

/* Return values: 0 allowed; RBL_PROMQL_ESYNTAX the query cannot be parsed (or uses a construct
 * rbl does not scope: info(), a label named twice, over a limit), RBL_PROMQL_ESCOPE it reaches
 * beyond the tenant (another tenant's value, a regex or negative matcher on the label, a
 * selector without the matcher in a check, a function that writes the label). */
enum { RBL_PROMQL_OK = 0, RBL_PROMQL_ESYNTAX = 1, RBL_PROMQL_ESCOPE = 2 };

/* 0 only when every selector of expr carries exactly one matcher on label and it is
 * label="tenant" (equality; the value compared after unquoting). Otherwise nonzero, with a
 * reason in why (always NUL-terminated when whylen > 0). */
int rbl_promql_check(const char *expr, const char *label, const char *tenant, char *why,
                     size_t whylen);

/* Rewrites expr so every selector carries label="tenant": added where the selector has no
 * matcher on label, put in canonical form where it already has label="tenant". Refuses
 * (RBL_PROMQL_ESCOPE) another value, "", != =~ !~ on the label; RBL_PROMQL_ESYNTAX when expr
 * cannot be parsed. On success *out is a malloc'd NUL-terminated string (free it). */
int rbl_promql_scope(const char *expr, const char *label, const char *tenant, char **out, char *why,
                     size_t whylen);

/* The same for a set of tenants (prom.tenants): selectors get label=~"t1|t2|..." (each name
 * regex-escaped); an existing label="tX" with tX in the set is kept (canonical form). */
int rbl_promql_scope_set(const char *expr, const char *label, const char *const *tenants,
                         size_t ntenants, char **out, char *why, size_t whylen);

/* The check for a set: every selector carries exactly one matcher on label, either
 * label="tX" with tX in the set, or label=~ a plain alternation of regex-escaped names all
 * in the set. */
int rbl_promql_check_set(const char *expr, const char *label, const char *const *tenants,
                         size_t ntenants, char *why, size_t whylen);

/* 0 when expr parses (no scoping). */
int rbl_promql_parse(const char *expr, char *why, size_t whylen);

#endif
