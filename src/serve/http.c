/* rbl serve's HTTP/1.1 server on libuv: a small strict parser (Content-Length bodies only, CRLF
 * line ends, bounded head and body, deadlines), one request at a time per connection. */
#include "serve.h"
#include "ossl_dl.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HEAD_MAX        16384
#define HEAD_TIMEOUT_MS 10000
#define BODY_TIMEOUT_MS 30000
#define IDLE_TIMEOUT_MS 60000
#define MAX_HEADERS     100

enum { C_HEAD, C_BODY, C_HANDLER, C_WRITING, C_CLOSING };

/* One connection; owned by the server's list, freed in the close callback of its last handle
 * (tcp and timer), or, when the handler still holds it, when it answers. */
struct srv_conn {
  uv_tcp_t tcp;
  uv_timer_t timer;
  srv_http *h;
  char *buf;
  size_t len, cap;
  int state;
  size_t head_len, content_length;
  int keep_alive;
  int open_handles; /* tcp + timer until their close callbacks ran */
  int in_handler;   /* the handler holds the connection until it answers */
  int closed;       /* conn_close ran */
  char saved;       /* the byte the body's NUL terminator replaced */
  SSL *ssl;         /* TLS: the session over memory BIOs, or NULL */
  char *raw;        /* TLS: ciphertext read buffer */
  srv_request req;
  srv_conn *next, *prev;
};

typedef struct wreq {
  uv_write_t w;
  srv_conn *c;
  int close_after;
  char data[];
} wreq;

static const char *reason(int st) {
  switch (st) {
  case 100: return "Continue";
  case 200: return "OK";
  case 202: return "Accepted";
  case 400: return "Bad Request";
  case 401: return "Unauthorized";
  case 403: return "Forbidden";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 408: return "Request Timeout";
  case 409: return "Conflict";
  case 411: return "Length Required";
  case 413: return "Content Too Large";
  case 422: return "Unprocessable Content";
  case 429: return "Too Many Requests";
  case 431: return "Request Header Fields Too Large";
  case 500: return "Internal Server Error";
  case 501: return "Not Implemented";
  case 503: return "Service Unavailable";
  case 505: return "HTTP Version Not Supported";
  default: return "Status";
  }
}

static void conn_free(srv_conn *c) {
  if (c->ssl) SSL_free(c->ssl);
  free(c->raw);
  free(c->req.authorization);
  free(c->buf);
  free(c);
}

static void conn_handle_closed(uv_handle_t *hd) {
  srv_conn *c = hd->data;
  if (--c->open_handles == 0 && !c->in_handler) conn_free(c);
}

static void conn_close(srv_conn *c) {
  if (c->closed) return;
  c->closed = 1;
  c->state = C_CLOSING;
  srv_http *h = c->h;
  if (c->prev)
    c->prev->next = c->next;
  else
    h->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  c->next = c->prev = NULL;
  h->nconns--;
  uv_timer_stop(&c->timer);
  uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
  uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
}

static void write_done(uv_write_t *w, int status) {
  wreq *r = (wreq *)w;
  srv_conn *c = r->c;
  int close_after = r->close_after;
  free(r);
  if (c->closed) return;
  if (status < 0 || close_after || c->h->closing) {
    conn_close(c);
    return;
  }
}

static void sock_write(srv_conn *c, const char *data, size_t len, int close_after) {
  wreq *r = malloc(sizeof *r + len);
  if (!r) {
    conn_close(c);
    return;
  }
  memcpy(r->data, data, len);
  r->c = c;
  r->close_after = close_after;
  uv_buf_t b = uv_buf_init(r->data, (unsigned)len);
  if (uv_write(&r->w, (uv_stream_t *)&c->tcp, &b, 1, write_done) != 0) {
    free(r);
    conn_close(c);
  }
}

/* TLS: sends what the session wrote into its output BIO. */
static void tls_flush(srv_conn *c, int close_after) {
  BIO *w = SSL_get_wbio(c->ssl);
  size_t n = BIO_ctrl_pending(w);
  if (n == 0) {
    if (close_after) conn_close(c);
    return;
  }
  char *buf = malloc(n);
  int got = buf ? BIO_read(w, buf, (int)n) : -1;
  if (got > 0)
    sock_write(c, buf, (size_t)got, close_after);
  else
    conn_close(c);
  free(buf);
}

static void send_raw(srv_conn *c, const char *data, size_t len, int close_after) {
  if (!c->ssl) {
    sock_write(c, data, len, close_after);
    return;
  }
  if (len && SSL_write(c->ssl, data, (int)len) != (int)len) {
    conn_close(c);
    return;
  }
  tls_flush(c, close_after);
}

static void send_response(srv_conn *c, int st, const char *ctype, const char *body, size_t blen,
                          int close_after) {
  char head[512];
  int n = snprintf(head, sizeof head,
                   "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                   "Cache-Control: no-store\r\nConnection: %s\r\n\r\n",
                   st, reason(st), ctype ? ctype : "application/json", blen,
                   close_after ? "close" : "keep-alive");
  char *all = malloc((size_t)n + blen);
  if (!all) {
    conn_close(c);
    return;
  }
  memcpy(all, head, (size_t)n);
  if (blen) memcpy(all + n, body, blen);
  send_raw(c, all, (size_t)n + blen, close_after);
  free(all);
}

/* An error found while reading the request: answer it and close. */
static void fail(srv_conn *c, int st, const char *msg) {
  char body[512];
  int n = snprintf(body, sizeof body, "{\"error\":\"%s\"}\n", msg);
  uv_read_stop((uv_stream_t *)&c->tcp);
  c->state = C_WRITING;
  send_response(c, st, NULL, body, (size_t)n, 1);
}

static void arm(srv_conn *c, uint64_t ms);

static int is_tchar(int ch) { return isalnum(ch) || (ch && strchr("!#$%&'*+-.^_`|~", ch)); }

static int ieq(const char *a, size_t alen, const char *b) {
  return strlen(b) == alen && strncasecmp(a, b, alen) == 0;
}

/* Parses the head in c->buf[0 .. head_len). Returns 0 or an HTTP status to fail with (msg set). */
static int parse_head(srv_conn *c, const char **msg) {
  char *p = c->buf, *end = c->buf + c->head_len - 2; /* the last CRLF ends the header block */
  char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
  if (!eol) eol = end;
  /* request line: METHOD SP TARGET SP HTTP/1.x */
  char *sp1 = memchr(p, ' ', (size_t)(eol - p));
  char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
  if (!sp1 || !sp2) return *msg = "malformed request line", 400;
  size_t ml = (size_t)(sp1 - p), tl = (size_t)(sp2 - sp1 - 1), vl = (size_t)(eol - sp2 - 1);
  if (ml == 0 || ml >= sizeof c->req.method) return *msg = "malformed method", 400;
  for (size_t i = 0; i < ml; i++)
    if (!isupper((unsigned char)p[i])) return *msg = "malformed method", 400;
  if (tl == 0 || tl >= sizeof c->req.path || sp1[1] != '/')
    return *msg = "malformed or too long request target", tl >= sizeof c->req.path ? 414 : 400;
  for (size_t i = 0; i < tl; i++)
    if ((unsigned char)sp1[1 + i] <= 0x20 || (unsigned char)sp1[1 + i] >= 0x7f)
      return *msg = "malformed request target", 400;
  int v11;
  if (vl == 8 && !memcmp(sp2 + 1, "HTTP/1.1", 8))
    v11 = 1;
  else if (vl == 8 && !memcmp(sp2 + 1, "HTTP/1.0", 8))
    v11 = 0;
  else
    return *msg = "only HTTP/1.0 and HTTP/1.1 are spoken", 505;
  memcpy(c->req.method, p, ml);
  c->req.method[ml] = 0;
  memcpy(c->req.path, sp1 + 1, tl);
  c->req.path[tl] = 0;
  c->keep_alive = v11;
  int have_len = 0, nh = 0;
  size_t clen = 0;
  free(c->req.authorization);
  c->req.authorization = NULL;
  for (p = eol + 2; p < end; p = eol + 2) {
    eol = memmem(p, (size_t)(end - p), "\r\n", 2);
    if (!eol) eol = end;
    if (++nh > MAX_HEADERS) return *msg = "too many header fields", 431;
    if (*p == ' ' || *p == '\t') return *msg = "obsolete line folding is not accepted", 400;
    char *colon = memchr(p, ':', (size_t)(eol - p));
    if (!colon || colon == p) return *msg = "malformed header field", 400;
    for (char *q = p; q < colon; q++)
      if (!is_tchar((unsigned char)*q)) return *msg = "malformed header field name", 400;
    char *v = colon + 1, *ve = eol;
    while (v < ve && (*v == ' ' || *v == '\t'))
      v++;
    while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
      ve--;
    for (char *q = v; q < ve; q++)
      if ((unsigned char)*q < 0x20 && *q != '\t')
        return *msg = "control character in a header", 400;
    size_t nl = (size_t)(colon - p), vlen = (size_t)(ve - v);
    if (ieq(p, nl, "content-length")) {
      size_t x = 0;
      if (vlen == 0 || vlen > 15) return *msg = "malformed Content-Length", 400;
      for (size_t i = 0; i < vlen; i++) {
        if (!isdigit((unsigned char)v[i])) return *msg = "malformed Content-Length", 400;
        x = x * 10 + (size_t)(v[i] - '0');
      }
      if (have_len && x != clen) return *msg = "conflicting Content-Length fields", 400;
      have_len = 1;
      clen = x;
    } else if (ieq(p, nl, "transfer-encoding")) {
      return *msg = "Transfer-Encoding is not accepted: send the body with a Content-Length", 411;
    } else if (ieq(p, nl, "connection")) {
      if (vlen == 5 && !strncasecmp(v, "close", 5)) c->keep_alive = 0;
      if (vlen == 10 && !strncasecmp(v, "keep-alive", 10)) c->keep_alive = 1;
    } else if (ieq(p, nl, "authorization")) {
      if (c->req.authorization) return *msg = "repeated Authorization field", 400;
      c->req.authorization = strndup(v, vlen);
      if (!c->req.authorization) return *msg = "out of memory", 503;
    } else if (ieq(p, nl, "expect")) {
      if (!(vlen == 12 && !strncasecmp(v, "100-continue", 12)))
        return *msg = "unsupported Expect", 417;
    }
  }
  if (!have_len && (!strcmp(c->req.method, "POST") || !strcmp(c->req.method, "PUT")))
    return *msg = "a POST needs a Content-Length", 411;
  if (clen > c->h->max_body) return *msg = "request body too large (serve.max_body_kb)", 413;
  size_t cap = c->h->body_cap ? c->h->body_cap(c->req.path) : 0;
  if (cap && clen > cap) return *msg = "request body too large for this endpoint", 413;
  c->content_length = clen;
  return 0;
}

static void process(srv_conn *c) {
  while (c->state == C_HEAD || c->state == C_BODY) {
    if (c->state == C_HEAD) {
      char *e = c->len >= 4 ? memmem(c->buf, c->len, "\r\n\r\n", 4) : NULL;
      if (!e) {
        if (c->len > HEAD_MAX) fail(c, 431, "request head too large");
        return;
      }
      c->head_len = (size_t)(e - c->buf) + 4;
      if (c->head_len > HEAD_MAX) {
        fail(c, 431, "request head too large");
        return;
      }
      const char *msg = NULL;
      int st = parse_head(c, &msg);
      if (st) {
        fail(c, st, msg);
        return;
      }
      c->state = C_BODY;
      if (c->len < c->head_len + c->content_length) {
        /* Expect: 100-continue is answered by reading on; clients also proceed without it. */
        if (memmem(c->buf, c->head_len, "100-continue", 12))
          send_raw(c, "HTTP/1.1 100 Continue\r\n\r\n", 25, 0);
        arm(c, BODY_TIMEOUT_MS);
      }
    }
    if (c->len < c->head_len + c->content_length) return;
    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_timer_stop(&c->timer);
    c->state = C_HANDLER;
    c->in_handler = 1;
    /* NUL-terminate the body in place: there is always room (the buffer is cap + 1). */
    c->req.body = c->buf + c->head_len;
    c->req.body_len = c->content_length;
    c->saved = c->buf[c->head_len + c->content_length];
    c->buf[c->head_len + c->content_length] = 0;
    c->h->handler(c->h->ud, c, &c->req);
    return;
  }
}

static void grow(srv_conn *c) {
  size_t limit = HEAD_MAX + c->h->max_body + 65536;
  if (c->cap - c->len < 16384 && c->cap < limit) {
    size_t ncap = c->cap ? c->cap * 2 : 32768;
    if (ncap > limit) ncap = limit;
    char *n = realloc(c->buf, ncap + 1);
    if (n) {
      c->buf = n;
      c->cap = ncap;
    }
  }
}

static void alloc_cb(uv_handle_t *hd, size_t suggested, uv_buf_t *b) {
  srv_conn *c = hd->data;
  if (c->ssl) {
    *b = uv_buf_init(c->raw, c->raw ? 65536 : 0);
    return;
  }
  grow(c);
  *b = uv_buf_init(c->buf ? c->buf + c->len : NULL, c->buf ? (unsigned)(c->cap - c->len) : 0);
}

/* TLS: decrypts what the session holds into c->buf. Returns -1 when the session failed. */
static int tls_drain(srv_conn *c) {
  if (!SSL_is_init_finished(c->ssl)) {
    int r = SSL_do_handshake(c->ssl);
    tls_flush(c, 0);
    if (r <= 0) {
      int e = SSL_get_error(c->ssl, r);
      return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? 0 : -1;
    }
  }
  for (;;) {
    grow(c);
    if (!c->buf || c->cap == c->len) return 0;
    int r = SSL_read(c->ssl, c->buf + c->len, (int)(c->cap - c->len));
    if (r > 0) {
      c->len += (size_t)r;
      continue;
    }
    int e = SSL_get_error(c->ssl, r);
    tls_flush(c, 0);
    return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? 0 : -1;
  }
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  srv_conn *c = s->data;
  if (n < 0) {
    conn_close(c);
    return;
  }
  if (n == 0) return;
  if (c->state != C_HEAD && c->state != C_BODY) return;
  size_t before = c->len;
  if (c->ssl) {
    if (BIO_write(SSL_get_rbio(c->ssl), c->raw, (int)n) != (int)n || tls_drain(c) < 0) {
      conn_close(c);
      return;
    }
    if (c->closed) return;
  } else
    c->len += (size_t)n;
  if (c->state == C_HEAD && before == 0 && c->len > 0) arm(c, HEAD_TIMEOUT_MS);
  process(c);
}

static void timer_cb(uv_timer_t *t) {
  srv_conn *c = t->data;
  if (c->state == C_HEAD && c->len == 0)
    conn_close(c); /* idle keep-alive connection */
  else if (c->state == C_HEAD || c->state == C_BODY)
    fail(c, 408, "request not received in time");
}

static void arm(srv_conn *c, uint64_t ms) { uv_timer_start(&c->timer, timer_cb, ms, 0); }

void rbl_srv_respond(srv_conn *c, int status, const char *ctype, const char *body, size_t len) {
  c->in_handler = 0;
  if (c->closed) { /* closed while the handler worked: nobody to answer */
    if (c->open_handles == 0) conn_free(c);
    return;
  }
  size_t used = c->head_len + c->content_length;
  c->buf[used] = c->saved;
  int close_after = !c->keep_alive || c->h->closing;
  c->state = C_WRITING;
  send_response(c, status, ctype, body, len, close_after);
  if (close_after || c->closed) return;
  /* Keep-alive: drop the answered request and go on with what is buffered. */
  memmove(c->buf, c->buf + used, c->len - used);
  c->len -= used;
  if (c->ssl && tls_drain(c) < 0) {
    conn_close(c);
    return;
  }
  c->head_len = c->content_length = 0;
  c->state = C_HEAD;
  if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) != 0) {
    conn_close(c);
    return;
  }
  arm(c, c->len ? HEAD_TIMEOUT_MS : IDLE_TIMEOUT_MS);
  process(c);
}

int rbl_srv_conn_alive(const srv_conn *c) { return !c->closed; }
static void on_connection(uv_stream_t *server, int status) {
  srv_http *h = server->data;
  if (status < 0 || h->closing) return;
  srv_conn *c = calloc(1, sizeof *c);
  if (!c) return;
  c->h = h;
  uv_tcp_init(h->loop, &c->tcp);
  uv_timer_init(h->loop, &c->timer);
  c->tcp.data = c->timer.data = c;
  c->open_handles = 2;
  c->next = h->conns;
  if (h->conns) h->conns->prev = c;
  h->conns = c;
  h->nconns++;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
    conn_close(c);
    return;
  }
  struct sockaddr_storage ss;
  int sl = sizeof ss;
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sl) == 0) {
    char ip[48] = "?";
    int port = 0;
    if (ss.ss_family == AF_INET) {
      uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof ip);
      port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    } else if (ss.ss_family == AF_INET6) {
      uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof ip);
      port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    snprintf(c->req.peer, sizeof c->req.peer, "%s:%d", ip, port);
  }
  if (h->nconns > h->max_conns) {
    c->state = C_WRITING;
    send_response(c, 503, NULL, "{\"error\":\"too many connections\"}\n", 33, 1);
    return;
  }
  if (h->tls) {
    c->ssl = SSL_new(h->tls);
    c->raw = malloc(65536);
    BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
    if (!c->ssl || !c->raw || !rb || !wb) {
      BIO_free(rb);
      BIO_free(wb);
      conn_close(c);
      return;
    }
    SSL_set_bio(c->ssl, rb, wb);
    SSL_set_accept_state(c->ssl);
  }
  c->state = C_HEAD;
  arm(c, IDLE_TIMEOUT_MS);
  uv_tcp_nodelay(&c->tcp, 1);
  if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) != 0) conn_close(c);
}

int rbl_srv_http_listen(srv_http *h, uv_loop_t *loop, const char *addr_port, char *err,
                        size_t errlen) {
  char host[256];
  const char *colon = strrchr(addr_port, ':');
  if (!colon || colon == addr_port || (size_t)(colon - addr_port) >= sizeof host || !colon[1]) {
    snprintf(err, errlen, "--listen '%s': want ADDR:PORT (e.g. 127.0.0.1:9095)", addr_port);
    return -1;
  }
  memcpy(host, addr_port, (size_t)(colon - addr_port));
  host[colon - addr_port] = 0;
  char *endp;
  long port = strtol(colon + 1, &endp, 10);
  if (*endp || port < 0 || port > 65535) {
    snprintf(err, errlen, "--listen '%s': the port is not a number in 0-65535", addr_port);
    return -1;
  }
  struct sockaddr_storage ss;
  if (host[0] == '[' && host[strlen(host) - 1] == ']') {
    host[strlen(host) - 1] = 0;
    memmove(host, host + 1, strlen(host));
  }
  if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)&ss) != 0 &&
      uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)&ss) != 0) {
    snprintf(err, errlen, "--listen '%s': '%s' is not an IP address", addr_port, host);
    return -1;
  }
  h->loop = loop;
  if (!h->max_conns) h->max_conns = 1024;
  uv_tcp_init(loop, &h->tcp);
  h->tcp.data = h;
  int rc = uv_tcp_bind(&h->tcp, (struct sockaddr *)&ss, 0);
  if (!rc) rc = uv_listen((uv_stream_t *)&h->tcp, 511, on_connection);
  if (rc) {
    snprintf(err, errlen, "cannot listen on %s: %s", addr_port, uv_strerror(rc));
    return -1;
  }
  return 0;
}

/* The port actually bound (for --listen ADDR:0). */
int rbl_srv_http_port(srv_http *h) {
  struct sockaddr_storage ss;
  int sl = sizeof ss;
  if (uv_tcp_getsockname(&h->tcp, (struct sockaddr *)&ss, &sl) != 0) return -1;
  return ss.ss_family == AF_INET ? ntohs(((struct sockaddr_in *)&ss)->sin_port)
                                 : ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

void rbl_srv_http_stop(srv_http *h) {
  if (h->closing) return;
  h->closing = 1;
  uv_close((uv_handle_t *)&h->tcp, NULL);
  /* Idle connections close now; busy ones close after their answer. */
  for (srv_conn *c = h->conns, *n; c; c = n) {
    n = c->next;
    if (c->state == C_HEAD && c->len == 0) conn_close(c);
  }
}

int rbl_srv_http_tls(srv_http *h, const char *cert, const char *key, char *err, size_t errlen) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx) {
    snprintf(err, errlen, "TLS: cannot create a context");
    return -1;
  }
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  const char *what = NULL;
  if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1)
    what = "serve.tls.cert: cannot load the certificate chain (PEM)";
  else if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
    what = "serve.tls.key: cannot load the private key (PEM)";
  else if (SSL_CTX_check_private_key(ctx) != 1)
    what = "serve.tls: the key does not match the certificate";
  if (what) {
    char e[256];
    ERR_error_string_n(ERR_get_error(), e, sizeof e);
    snprintf(err, errlen, "%s (%s; %s)", what, cert, e);
    ERR_clear_error();
    SSL_CTX_free(ctx);
    return -1;
  }
  h->tls = ctx;
  return 0;
}

void rbl_srv_http_free(srv_http *h) {
  if (h->tls) SSL_CTX_free(h->tls);
  h->tls = NULL;
}

void rbl_srv_http_close_all(srv_http *h) {
  while (h->conns)
    conn_close(h->conns);
}
