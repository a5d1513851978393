/* Text for a terminal: control characters escaped so that no value can drive it. */
#ifndef RBL_TEXTESC_H
#define RBL_TEXTESC_H

#include <stddef.h>

enum {
  RBL_ESC_KEEP_NL = 1, /* '\n' and '\t' pass as they are (multi-line output); else \n, \t */
};

/* Copies s[0,len) with every control character escaped: C0 (below 0x20) and DEL as \xHH, C1 as
 * UTF-8 (U+0080..U+009F) as \u00HH, and every byte that is not part of valid UTF-8 (a raw 8-bit
 * C1 such as 0x9b, CSI to a terminal in 8-bit mode) as \xHH. Returns a malloc'd NUL-terminated
 * string (its length in *outlen when not NULL), or NULL when out of memory. */
char *rbl_escape_ctl(const char *s, size_t len, int flags, size_t *outlen);

/* The length of the valid UTF-8 sequence at p (at most n bytes), or 0 when p starts none. */
size_t rbl_utf8_len(const unsigned char *p, size_t n);

#endif
