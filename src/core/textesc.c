/* Escaping control characters for terminal output (see textesc.h): the REPL's echo, print. */
#include "textesc.h"

#include <stdio.h>
#include <stdlib.h>

size_t rbl_utf8_len(const unsigned char *p, size_t n) {
  size_t k = p[0] < 0x80             ? 1
             : (p[0] & 0xe0) == 0xc0 ? 2
             : (p[0] & 0xf0) == 0xe0 ? 3
             : (p[0] & 0xf8) == 0xf0 ? 4
                                     : 0;
  if (!k || k > n) return 0;
  for (size_t i = 1; i < k; i++)
    if ((p[i] & 0xc0) != 0x80) return 0;
  if (k == 2 && p[0] < 0xc2) return 0;                 /* overlong */
  if (k == 3 && p[0] == 0xe0 && p[1] < 0xa0) return 0; /* overlong */
  if (k == 3 && p[0] == 0xed && p[1] > 0x9f) return 0; /* surrogate */
  if (k == 4 && p[0] == 0xf0 && p[1] < 0x90) return 0; /* overlong */
  if (k == 4 && (p[0] > 0xf4 || (p[0] == 0xf4 && p[1] > 0x8f))) return 0;
  return k;
}

char *rbl_escape_ctl(const char *s, size_t len, int flags, size_t *outlen) {
  const unsigned char *p = (const unsigned char *)s;
  char *out = malloc(len * 6 + 1); /* the worst case: every byte becomes \u00HH */
  if (!out) return NULL;
  size_t o = 0;
  for (size_t i = 0; i < len;) {
    unsigned char c = p[i];
    size_t k = rbl_utf8_len(p + i, len - i);
    if ((c == '\n' || c == '\t') && (flags & RBL_ESC_KEEP_NL)) {
      out[o++] = (char)c;
      i++;
    } else if (c == '\n' || c == '\t') {
      out[o++] = '\\';
      out[o++] = c == '\n' ? 'n' : 't';
      i++;
    } else if (!k || c < 0x20 || c == 0x7f) {
      o += (size_t)snprintf(out + o, 5, "\\x%02x", c);
      i++;
    } else if (k == 2 && c == 0xc2 && p[i + 1] <= 0x9f) {
      o += (size_t)snprintf(out + o, 7, "\\u%04x", p[i + 1]);
      i += 2;
    } else {
      for (size_t j = 0; j < k; j++)
        out[o++] = (char)p[i + j];
      i += k;
    }
  }
  out[o] = 0;
  if (outlen) *outlen = o;
  return out;
}
