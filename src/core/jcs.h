/* RFC 8785 JSON Canonicalization Scheme (JCS) over cJSON values: the bytes the audit chain hashes.
 */
#ifndef RBL_JCS_H
#define RBL_JCS_H

#include <stddef.h>
#include <cjson/cJSON.h>

/* A growable byte buffer; zero-initialise it, free it with rbl_jcs_buf_free. */
typedef struct rbl_jcs_buf {
  char *data; /* owned; NUL-terminated after every successful append */
  size_t len, cap;
} rbl_jcs_buf;

/* A byte range [off, off + len) of a rbl_jcs_buf. */
typedef struct rbl_jcs_piece {
  size_t off, len;
} rbl_jcs_piece;

void rbl_jcs_buf_free(rbl_jcs_buf *b);
int rbl_jcs_buf_put(rbl_jcs_buf *b, const void *p, size_t n);

/* Appends the canonical form of item to b. Returns 0, RBL_EINVAL (non-finite number,
 * invalid UTF-8, duplicate key, raw value) or RBL_ENOMEM; b is then left as it was. */
int rbl_jcs_append(rbl_jcs_buf *b, const cJSON *item);

/* Appends the canonical form of the object obj to b and fills pieces[] (at most 2*nomit+3
 * entries) with ranges of b whose concatenation is the canonical form of obj without
 * its top-level members named in omit[]. */
int rbl_jcs_append_omit(rbl_jcs_buf *b, const cJSON *obj, const char *const *omit, size_t nomit,
                        rbl_jcs_piece *pieces, size_t *npieces);

/* The ECMAScript Number::toString form of v (RFC 8785 3.2.2.3) into out (>= 32 bytes).
 * Returns the length, or RBL_EINVAL for NaN and infinities. */
int rbl_jcs_number(double v, char *out);

/* Turns every number in j into a raw literal of its rbl_jcs_number form: cJSON_Print then shows
 * each number as the chain holds it (every digit of an integer, doubles that round-trip) instead of
 * cJSON's 15 significant digits. For printing only: rbl_jcs_append refuses raw values. Returns 0
 * or RBL_ENOMEM (numbers converted so far stay converted). */
int rbl_jcs_raw_numbers(cJSON *j);

/* Compares two UTF-8 strings by their UTF-16 code units (RFC 8785 3.2.3). */
int rbl_jcs_keycmp(const char *a, const char *b);

/* Canonical form of item as a malloc'd NUL-terminated string (len optional), or NULL. */
char *rbl_jcs_string(const cJSON *item, size_t *len);

#endif
