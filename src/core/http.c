/* HTTP client on the event loop: one curl multi per loop, driven by libuv polls and one timer. */
#include "http.h"

#include "curl_dl.h" /* libcurl, loaded on first use */
#include <errno.h>
#include <stdarg.h>
#include <lauxlib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "budget.h"
#include "engine_int.h"
#include "gate.h"
#include "rbl.h"

#include "host.h"

#define POOL_MAX             16 /* idle easy handles kept for reuse */
#define DEFAULT_MAX_RESPONSE (64u << 20)
#define DEFAULT_CONNECT_MS   10000L
#define MAX_HEADER_BLOCK     (256u << 10)
#define BACKOFF_FIRST_MS     100L
#define BACKOFF_MAX_MS       5000L
/* requests in flight per API server: limits.http_connections */
#define DEFAULT_PER_HOST 32

typedef struct sock_ctx sock_ctx;

/* One per loop. Freed in the close callback of the last uv handle it owns, after
 * rbl_http_close: `live` counts the timer, the socket polls and the retry timers. */
typedef struct endpoint endpoint;

struct rbl_http {
  uv_loop_t *loop;
  CURLM *multi;
  uv_timer_t timer;
  int live;
  int closing;
  sock_ctx *socks;  /* polls not yet closed */
  rbl_http_op *ops; /* requests started and not finished nor cancelled */
  CURL *pool[POOL_MAX];
  int npool;
  endpoint *eps;    /* one per API server seen: its requests in flight and its queue */
  int max_per_host; /* requests in flight per endpoint (and curl's connections to it) */
  int pump_pending; /* a slot was freed: start queued requests */
  int handles;      /* curl easy handles alive: requests in flight plus the idle pool */
};

/* The bounded pool: however wide the fan-out, at most max_per_host requests to one API server
 * are in curl at once (so at most that many connections, or streams of one HTTP/2 connection);
 * the rest wait here in FIFO order, holding no socket and no TLS state. */
struct endpoint {
  char key[200]; /* "host:port" or the unix socket path (op->endpoint) */
  int active;
  rbl_http_op *qhead, *qtail;
  endpoint *next;
};

/* One per socket curl watches; owned by the rbl_http, freed in the poll's close callback. */
struct sock_ctx {
  uv_poll_t poll;
  curl_socket_t fd;
  rbl_http *h;
  sock_ctx *prev, *next;
};

/* One request. Owned by the http layer from start until its callback returns or it is
 * cancelled; the retry timer, when any, is freed in its own close callback. */
struct rbl_http_op {
  rbl_http *h;
  CURL *easy;
  struct curl_slist *hdrs;
  rbl_http_cb cb;
  void *ud;
  int in_multi;
  uv_timer_t *retry;
  int idempotent;
  int attempts_left;
  int attempts;
  long backoff_ms;
  long timeout_ms, connect_timeout_ms;
  size_t max;
  char *buf;
  size_t len, cap;
  char *hbuf;
  size_t hlen, hcap;
  int too_big, nomem;
  uint64_t t0;
  char endpoint[200];
  char errbuf[CURL_ERROR_SIZE];
  rbl_http_op *prev, *next;
  endpoint *ep;       /* its API server */
  int holds_slot;     /* counted in ep->active (from dispatch until freed) */
  rbl_http_op *qnext; /* in ep's queue while queued */
  int queued;
  rbl_http_req *req; /* while queued: a copy of the request, set up on a handle at dispatch */
};

static void maybe_free(rbl_http *h) {
  if (h->closing && h->live == 0) free(h);
}

/* ---- growing buffers ---- */

static int buf_append(char **b, size_t *len, size_t *cap, const char *p, size_t n) {
  if (*len + n + 1 > *cap) {
    size_t c = *cap ? *cap : 4096;
    while (c < *len + n + 1)
      c *= 2;
    char *nb = rbl_budget_realloc(*b, c); /* response buffers count against the run's budget */
    if (!nb) return RBL_ENOMEM;
    *b = nb;
    *cap = c;
  }
  memcpy(*b + *len, p, n);
  *len += n;
  (*b)[*len] = '\0';
  return 0;
}

static size_t on_write(char *p, size_t size, size_t n, void *ud) {
  rbl_http_op *op = ud;
  size_t k = size * n;
  if (op->len + k > op->max) {
    op->too_big = 1;
    return 0; /* curl aborts the transfer with CURLE_WRITE_ERROR */
  }
  if (buf_append(&op->buf, &op->len, &op->cap, p, k) != 0) {
    op->nomem = 1;
    return 0;
  }
  return k;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud) {
  rbl_http_op *op = ud;
  size_t k = size * n;
  if (k >= 5 && memcmp(p, "HTTP/", 5) == 0) op->hlen = 0; /* a new response (after 1xx) */
  if (op->hlen + k > MAX_HEADER_BLOCK) return k;          /* keep what fits; curl caps too */
  if (buf_append(&op->hbuf, &op->hlen, &op->hcap, p, k) != 0) {
    op->nomem = 1;
    return 0;
  }
  return k;
}

/* ---- sockets and the timer, as curl asks ---- */

static void drain(rbl_http *h);

static void on_sock_closed(uv_handle_t *hd) {
  sock_ctx *sc = hd->data;
  rbl_http *h = sc->h;
  free(sc);
  h->live--;
  maybe_free(h);
}

static void sock_close(rbl_http *h, sock_ctx *sc) {
  if (sc->prev)
    sc->prev->next = sc->next;
  else
    h->socks = sc->next;
  if (sc->next) sc->next->prev = sc->prev;
  uv_poll_stop(&sc->poll);
  uv_close((uv_handle_t *)&sc->poll, on_sock_closed);
}

static void on_poll(uv_poll_t *p, int status, int events) {
  sock_ctx *sc = p->data;
  rbl_http *h = sc->h;
  int flags = 0, running;
  if (status < 0) flags = CURL_CSELECT_ERR;
  if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
  if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  curl_multi_socket_action(h->multi, sc->fd, flags, &running);
  drain(h);
}

static int on_socket(CURL *e, curl_socket_t s, int what, void *userp, void *sockp) {
  rbl_http *h = userp;
  sock_ctx *sc = sockp;
  if (what == CURL_POLL_REMOVE) {
    if (sc) {
      sock_close(h, sc);
      if (!h->closing) curl_multi_assign(h->multi, s, NULL);
    }
    return 0;
  }
  if (!sc) {
    sc = calloc(1, sizeof *sc);
    if (!sc) return -1;
    if (uv_poll_init_socket(h->loop, &sc->poll, s) != 0) {
      free(sc);
      return -1;
    }
    sc->poll.data = sc;
    sc->fd = s;
    sc->h = h;
    sc->next = h->socks;
    if (h->socks) h->socks->prev = sc;
    h->socks = sc;
    h->live++;
    curl_multi_assign(h->multi, s, sc);
  }
  int ev = 0;
  if (what & CURL_POLL_IN) ev |= UV_READABLE;
  if (what & CURL_POLL_OUT) ev |= UV_WRITABLE;
  uv_poll_start(&sc->poll, ev, on_poll);
  return 0;
}

static void on_timeout(uv_timer_t *t) {
  rbl_http *h = t->data;
  int running;
  curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  drain(h);
}

static int on_timer_set(CURLM *m, long ms, void *userp) {
  rbl_http *h = userp;
  if (h->closing) return 0;
  if (ms < 0)
    uv_timer_stop(&h->timer);
  else
    uv_timer_start(&h->timer, on_timeout, (uint64_t)ms, 0);
  return 0;
}

/* ---- life of the multi ---- */

int rbl_http_new(rbl_http **out, uv_loop_t *loop) {
  if (rbl_curl_load(NULL, 0) != 0) return RBL_EIO;
  rbl_http *h = calloc(1, sizeof *h);
  if (!h) return RBL_ENOMEM;
  h->loop = loop;
  h->multi = curl_multi_init();
  if (!h->multi) {
    free(h);
    return RBL_ENOMEM;
  }
  curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
  curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
  curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, on_timer_set);
  curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
  h->max_per_host = DEFAULT_PER_HOST;
  curl_multi_setopt(h->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)h->max_per_host);
  curl_multi_setopt(h->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
  uv_timer_init(loop, &h->timer);
  h->timer.data = h;
  h->live = 1;
  *out = h;
  return 0;
}

static void on_timer_closed(uv_handle_t *hd) {
  rbl_http *h = hd->data;
  h->live--;
  maybe_free(h);
}

static void op_free(rbl_http_op *op);

void rbl_http_close(rbl_http *h) {
  if (!h || h->closing) return;
  h->closing = 1;
  while (h->ops)
    op_free(h->ops);
  while (h->eps) {
    endpoint *ep = h->eps;
    h->eps = ep->next;
    free(ep);
  }
  /* closing the cached connections may call on_socket(REMOVE); the rest are closed below */
  curl_multi_cleanup(h->multi);
  h->multi = NULL;
  for (int i = 0; i < h->npool; i++)
    curl_easy_cleanup(h->pool[i]);
  h->handles -= h->npool;
  h->npool = 0;
  while (h->socks)
    sock_close(h, h->socks);
  uv_timer_stop(&h->timer);
  uv_close((uv_handle_t *)&h->timer, on_timer_closed);
}

/* ---- one request ---- */

static CURL *pool_get(rbl_http *h) {
  if (h->npool > 0) return h->pool[--h->npool];
  CURL *e = curl_easy_init();
  if (e) h->handles++;
  return e;
}

static void pool_put(rbl_http *h, CURL *e) {
  if (!h->closing && h->npool < POOL_MAX) {
    curl_easy_reset(e); /* keeps nothing of the request; connections live in the multi */
    h->pool[h->npool++] = e;
  } else {
    curl_easy_cleanup(e);
    h->handles--;
  }
}

static void on_retry_closed(uv_handle_t *hd) {
  rbl_http *h = hd->data;
  free(hd);
  h->live--;
  maybe_free(h);
}

/* ---- the bounded pool: one endpoint per API server, a FIFO of requests waiting for a slot ---- */

static endpoint *endpoint_of(rbl_http *h, const char *key) {
  for (endpoint *ep = h->eps; ep; ep = ep->next)
    if (!strcmp(ep->key, key)) return ep;
  endpoint *ep = calloc(1, sizeof *ep);
  if (!ep) return NULL;
  snprintf(ep->key, sizeof ep->key, "%s", key);
  ep->next = h->eps;
  h->eps = ep;
  return ep;
}

static void queue_unlink(rbl_http_op *op) {
  if (!op->queued) return;
  endpoint *ep = op->ep;
  rbl_http_op **pp = &ep->qhead, *prev = NULL;
  while (*pp && *pp != op) {
    prev = *pp;
    pp = &(*pp)->qnext;
  }
  if (*pp) *pp = op->qnext;
  if (ep->qtail == op) ep->qtail = prev;
  op->qnext = NULL;
  op->queued = 0;
}

/* Hands op to curl and counts it against its endpoint. 0 or RBL_ENOMEM. */
static int dispatch(rbl_http_op *op) {
  if (curl_multi_add_handle(op->h->multi, op->easy) != CURLM_OK) return RBL_ENOMEM;
  op->in_multi = 1;
  op->holds_slot = 1;
  op->ep->active++;
  return 0;
}

static int prepare_queued(rbl_http_op *op);

/* Starts queued requests while their endpoints have free slots (after a request ended). */
static void pump(rbl_http *h) {
  if (!h->pump_pending || h->closing) return;
  h->pump_pending = 0;
  for (endpoint *ep = h->eps; ep; ep = ep->next) {
    while (ep->qhead && ep->active < h->max_per_host) {
      rbl_http_op *op = ep->qhead;
      queue_unlink(op);
      int rc = prepare_queued(op);
      if (rc == 0 && dispatch(op) == 0) continue;
      rbl_http_resp resp = {.err = rc ? rc : RBL_ENOMEM, .attempts = 1};
      snprintf(resp.errmsg, sizeof resp.errmsg, "%s: %s", op->endpoint,
               rc && rc != RBL_ENOMEM ? "the request could not be set up" : "out of memory");
      rbl_http_cb cb = op->cb;
      void *ud = op->ud;
      op_free(op);
      cb(ud, &resp);
      if (h->closing) return;
    }
  }
}

int rbl_http_handles(const rbl_http *h) { return h ? h->handles : 0; }

void rbl_http_set_max_per_host(rbl_http *h, int n) {
  if (!h || n < 1) return;
  h->max_per_host = n;
  if (h->multi) curl_multi_setopt(h->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)n);
  h->pump_pending = 1;
  pump(h);
}

static void req_free(rbl_http_req *r);

/* Stops and frees op without calling its callback. */
static void op_free(rbl_http_op *op) {
  rbl_http *h = op->h;
  queue_unlink(op);
  if (op->holds_slot) {
    op->ep->active--;
    h->pump_pending = 1;
  }
  if (op->prev)
    op->prev->next = op->next;
  else if (h->ops == op)
    h->ops = op->next;
  if (op->next) op->next->prev = op->prev;
  if (op->in_multi) curl_multi_remove_handle(h->multi, op->easy);
  if (op->retry) {
    op->retry->data = h;
    uv_close((uv_handle_t *)op->retry, on_retry_closed);
  }
  if (op->easy) pool_put(h, op->easy);
  req_free(op->req);
  curl_slist_free_all(op->hdrs);
  rbl_budget_free(op->buf);
  rbl_budget_free(op->hbuf);
  free(op);
}

void rbl_http_cancel(rbl_http_op *op) {
  if (!op) return;
  rbl_http *h = op->h;
  op_free(op);
  pump(h);
}

/* "host:port" of the URL, or the unix socket path: what error messages name. */
static void set_endpoint(rbl_http_op *op, const rbl_http_req *req) {
  if (req->unix_socket) {
    snprintf(op->endpoint, sizeof op->endpoint, "%s", req->unix_socket);
    return;
  }
  snprintf(op->endpoint, sizeof op->endpoint, "%s", req->url);
  CURLU *u = curl_url();
  char *host = NULL, *port = NULL;
  if (u && curl_url_set(u, CURLUPART_URL, req->url, 0) == CURLUE_OK &&
      curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
      curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK)
    snprintf(op->endpoint, sizeof op->endpoint, "%s:%s", host, port);
  curl_free(host);
  curl_free(port);
  curl_url_cleanup(u);
}

static int set_blob(CURL *e, CURLoption opt, const char *pem) {
  struct curl_blob b = {(void *)pem, strlen(pem), CURL_BLOB_COPY};
  return curl_easy_setopt(e, opt, &b) == CURLE_OK ? 0 : RBL_EINVAL;
}

static int setup_tls(CURL *e, const rbl_http_req *req) {
  int rc = 0;
  if (req->ca_pem)
    rc |= set_blob(e, CURLOPT_CAINFO_BLOB, req->ca_pem);
  else if (req->ca_file)
    rc |= curl_easy_setopt(e, CURLOPT_CAINFO, req->ca_file) ? RBL_EINVAL : 0;
  if (req->cert_pem)
    rc |= set_blob(e, CURLOPT_SSLCERT_BLOB, req->cert_pem);
  else if (req->cert_file)
    rc |= curl_easy_setopt(e, CURLOPT_SSLCERT, req->cert_file) ? RBL_EINVAL : 0;
  if (req->key_pem)
    rc |= set_blob(e, CURLOPT_SSLKEY_BLOB, req->key_pem);
  else if (req->key_file)
    rc |= curl_easy_setopt(e, CURLOPT_SSLKEY, req->key_file) ? RBL_EINVAL : 0;
  if (req->insecure) {
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
  }
  return rc ? RBL_EINVAL : 0;
}

static int setup_method(rbl_http_op *op, const rbl_http_req *req) {
  CURL *e = op->easy;
  const char *m = req->method;
  if (strcmp(m, "GET") == 0) {
    curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    op->idempotent = 1;
  } else if (strcmp(m, "HEAD") == 0) {
    curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    op->idempotent = 1;
  } else {
    for (const char *c = m; *c; c++)
      if (*c < 'A' || *c > 'Z') return RBL_EINVAL;
    if (strcmp(m, "POST") != 0) curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, m);
    /* a body (possibly empty) so POST/PUT/PATCH send Content-Length */
    if (req->body || strcmp(m, "DELETE") != 0) {
      curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(req->body ? req->body_len : 0));
      if (curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, req->body ? req->body : "") != CURLE_OK)
        return RBL_ENOMEM;
    }
  }
  return 0; /* a body on GET/HEAD is ignored */
}

static int setup_headers(rbl_http_op *op, const rbl_http_req *req) {
  struct curl_slist *l = NULL, *n;
  for (size_t i = 0; i < req->nheaders; i++) {
    if (strpbrk(req->headers[i], "\r\n")) goto bad; /* no header injection */
    if (!(n = curl_slist_append(l, req->headers[i]))) goto bad;
    l = n;
  }
  /* never wait for "100 Continue": dockerd and most APIs do not send it */
  if (!(n = curl_slist_append(l, "Expect:"))) goto bad;
  l = n;
  op->hdrs = l;
  curl_easy_setopt(op->easy, CURLOPT_HTTPHEADER, l);
  return 0;
bad:
  curl_slist_free_all(l);
  return RBL_EINVAL;
}

static int setup_easy(rbl_http_op *op, const rbl_http_req *req) {
  CURL *e = op->easy;
  int rc;
  if (curl_easy_setopt(e, CURLOPT_URL, req->url) != CURLE_OK) return RBL_EINVAL;
#if LIBCURL_VERSION_NUM >= 0x075500
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
#else
  curl_easy_setopt(e, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
  if (req->unix_socket &&
      curl_easy_setopt(e, CURLOPT_UNIX_SOCKET_PATH, req->unix_socket) != CURLE_OK)
    return RBL_EINVAL;
  curl_easy_setopt(e, CURLOPT_PRIVATE, op);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L); /* never: a redirect is the caller's call */
  curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, op->errbuf);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, op);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, op);
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, op->timeout_ms);
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, op->connect_timeout_ms);
  curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)op->max);
  curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
  if ((rc = setup_method(op, req)) != 0) return rc;
  if ((rc = setup_headers(op, req)) != 0) return rc;
  return setup_tls(e, req);
}

static char *dup_str(const char *s, int *fail) {
  if (!s) return NULL;
  char *d = strdup(s);
  if (!d) *fail = 1;
  return d;
}

static void req_free(rbl_http_req *r) {
  if (!r) return;
  free((char *)r->method);
  free((char *)r->url);
  free((char *)r->unix_socket);
  if (r->headers)
    for (size_t i = 0; i < r->nheaders; i++)
      free((char *)r->headers[i]);
  free((void *)r->headers);
  free((char *)r->body);
  free((char *)r->ca_file);
  free((char *)r->ca_pem);
  free((char *)r->cert_file);
  free((char *)r->cert_pem);
  free((char *)r->key_file);
  if (r->key_pem) explicit_bzero((char *)r->key_pem, strlen(r->key_pem));
  free((char *)r->key_pem);
  free(r);
}

/* A deep copy of q (its body may hold NULs), or NULL when memory is short. */
static rbl_http_req *req_dup(const rbl_http_req *q) {
  rbl_http_req *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  int fail = 0;
  r->body_len = q->body_len;
  r->timeout_ms = q->timeout_ms;
  r->connect_timeout_ms = q->connect_timeout_ms;
  r->max_response = q->max_response;
  r->retries = q->retries;
  r->insecure = q->insecure;
  r->method = dup_str(q->method, &fail);
  r->url = dup_str(q->url, &fail);
  r->unix_socket = dup_str(q->unix_socket, &fail);
  r->ca_file = dup_str(q->ca_file, &fail);
  r->ca_pem = dup_str(q->ca_pem, &fail);
  r->cert_file = dup_str(q->cert_file, &fail);
  r->cert_pem = dup_str(q->cert_pem, &fail);
  r->key_file = dup_str(q->key_file, &fail);
  r->key_pem = dup_str(q->key_pem, &fail);
  if (q->nheaders) {
    char **hv = calloc(q->nheaders, sizeof *hv);
    if (hv) {
      r->nheaders = q->nheaders;
      for (size_t i = 0; i < q->nheaders; i++)
        hv[i] = dup_str(q->headers[i], &fail);
    } else {
      fail = 1;
    }
    r->headers = (const char *const *)hv;
  }
  if (q->body) {
    char *b = malloc(q->body_len + 1);
    if (b) {
      memcpy(b, q->body, q->body_len);
      b[q->body_len] = '\0';
    } else {
      fail = 1;
    }
    r->body = b;
  }
  if (fail) {
    req_free(r);
    return NULL;
  }
  return r;
}

/* A queued request gets its handle when a slot frees: 0 or RBL_E*. */
static int prepare_queued(rbl_http_op *op) {
  if (!op->req) return 0;
  op->easy = pool_get(op->h);
  int rc = op->easy ? setup_easy(op, op->req) : RBL_ENOMEM;
  req_free(op->req);
  op->req = NULL;
  return rc;
}

int rbl_http_start(rbl_http *h, const rbl_http_req *req, rbl_http_cb cb, void *ud,
                   rbl_http_op **out) {
  if (!h || h->closing) return RBL_ECANCELED;
  if (!req || !req->url || !req->method || !cb) return RBL_EINVAL;
  rbl_http_op *op = calloc(1, sizeof *op);
  if (!op) return RBL_ENOMEM;
  op->h = h;
  op->cb = cb;
  op->ud = ud;
  op->timeout_ms = req->timeout_ms > 0 ? req->timeout_ms : 0;
  op->connect_timeout_ms =
      req->connect_timeout_ms > 0 ? req->connect_timeout_ms : DEFAULT_CONNECT_MS;
  op->max = req->max_response ? req->max_response : DEFAULT_MAX_RESPONSE;
  op->backoff_ms = BACKOFF_FIRST_MS;
  op->t0 = uv_hrtime();
  set_endpoint(op, req);
  op->easy = pool_get(h);
  int rc = op->easy ? setup_easy(op, req) : RBL_ENOMEM;
  op->attempts_left = op->idempotent && req->retries > 0 ? req->retries : 0;
  if (rc == 0 && !(op->ep = endpoint_of(h, op->endpoint))) rc = RBL_ENOMEM;
  if (rc == 0) {
    if (!op->ep->qhead && op->ep->active < h->max_per_host) {
      rc = dispatch(op);
    } else if (!(op->req = req_dup(req))) {
      rc = RBL_ENOMEM;
    } else { /* FIFO: behind the requests already waiting for this API server */
      /* A queued request holds a copy of itself, not a curl handle: every handle carries a
       * 16 KiB receive buffer, so a 1,000-way fan-out held 16 MiB in handles that only waited.
       * The set-up above checked the request (a bad one fails here, at start, as before); it
       * is set up again on a pooled handle when a slot frees (prepare_queued). */
      curl_slist_free_all(op->hdrs);
      op->hdrs = NULL;
      pool_put(h, op->easy);
      op->easy = NULL;
      op->queued = 1;
      if (op->ep->qtail)
        op->ep->qtail->qnext = op;
      else
        op->ep->qhead = op;
      op->ep->qtail = op;
    }
  }
  if (rc != 0) {
    op_free(op); /* not linked yet: op_free only unlinks what is linked */
    return rc;
  }
  op->attempts = 1;
  op->next = h->ops;
  if (h->ops) h->ops->prev = op;
  h->ops = op;
  if (out) *out = op;
  return 0;
}

/* ---- completion ---- */

/* snprintf that truncates quietly: messages are capped on purpose. */
__attribute__((format(printf, 3, 4))) static void setmsg(char *msg, size_t n, const char *fmt,
                                                         ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, n, fmt, ap);
  va_end(ap);
}

static int is_tls_error(CURLcode rc) {
  switch (rc) {
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_CERTPROBLEM:
  case CURLE_SSL_CIPHER:
  case CURLE_SSL_CACERT_BADFILE:
  case CURLE_SSL_ISSUER_ERROR:
  case CURLE_SSL_CRL_BADFILE:
  case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
  case CURLE_SSL_INVALIDCERTSTATUS:
  case CURLE_SSL_ENGINE_NOTFOUND:
  case CURLE_SSL_ENGINE_SETFAILED:
  case CURLE_SSL_ENGINE_INITFAILED:
  case CURLE_SSL_SHUTDOWN_FAILED:
  case CURLE_USE_SSL_FAILED: return 1;
  default: return 0;
  }
}

static const char *cause(rbl_http_op *op, CURLcode rc) {
  return op->errbuf[0] ? op->errbuf : curl_easy_strerror(rc);
}

/* Maps a finished attempt to 0 or RBL_E* with a message; *conn says whether it failed
 * before a connection was made (the only transport failure worth a retry). */
static int classify(rbl_http_op *op, CURLcode rc, char *msg, size_t n, int *conn) {
  curl_off_t connect_us = 0;
  long oserr = 0;
  *conn = 0;
  if (rc == CURLE_OK) return 0;
  curl_easy_getinfo(op->easy, CURLINFO_CONNECT_TIME_T, &connect_us);
  curl_easy_getinfo(op->easy, CURLINFO_OS_ERRNO, &oserr);
  const char *ep = op->endpoint;
  if ((rc == CURLE_WRITE_ERROR && op->too_big) || rc == CURLE_FILESIZE_EXCEEDED) {
    setmsg(msg, n, "%s: response larger than %zu bytes", ep, op->max);
    return RBL_ETOOBIG;
  }
  if (rc == CURLE_WRITE_ERROR && op->nomem) {
    setmsg(msg, n, "%s: out of memory", ep);
    return RBL_ENOMEM;
  }
  if (rc == CURLE_OPERATION_TIMEDOUT) {
    if (connect_us == 0) {
      *conn = 1;
      long ms = op->timeout_ms && op->timeout_ms < op->connect_timeout_ms ? op->timeout_ms
                                                                          : op->connect_timeout_ms;
      setmsg(msg, n, "connect to %s: timeout after %ld ms", ep, ms);
    } else {
      setmsg(msg, n, "%s: timeout after %ld ms", ep, op->timeout_ms);
    }
    return RBL_ETIMEDOUT;
  }
  if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST ||
      rc == CURLE_COULDNT_RESOLVE_PROXY) {
    *conn = 1;
    if (rc == CURLE_COULDNT_CONNECT && oserr != 0)
      setmsg(msg, n, "connect to %s: %s", ep, strerror((int)oserr));
    else
      setmsg(msg, n, "connect to %s: %s", ep, cause(op, rc));
    return (oserr == EACCES || oserr == EPERM) ? RBL_EDENIED : RBL_ECONNECT;
  }
  if (is_tls_error(rc)) {
    if (rc == CURLE_PEER_FAILED_VERIFICATION)
      setmsg(msg, n, "%s: TLS: certificate verify failed (%s)", ep, cause(op, rc));
    else
      setmsg(msg, n, "%s: TLS: %s", ep, cause(op, rc));
    return RBL_ETLS;
  }
  if ((rc == CURLE_RECV_ERROR || rc == CURLE_SEND_ERROR) && strstr(op->errbuf, "SSL routines")) {
    /* TLS 1.3 reports a refused client certificate as an alert after the handshake */
    setmsg(msg, n, "%s: TLS: %s", ep, op->errbuf);
    return RBL_ETLS;
  }
  if (rc == CURLE_GOT_NOTHING || rc == CURLE_RECV_ERROR || rc == CURLE_SEND_ERROR ||
      rc == CURLE_PARTIAL_FILE) {
    setmsg(msg, n, "%s: connection lost: %s", ep, cause(op, rc));
    return RBL_ECONNECT;
  }
  if (rc == CURLE_OUT_OF_MEMORY) {
    setmsg(msg, n, "%s: out of memory", ep);
    return RBL_ENOMEM;
  }
  setmsg(msg, n, "%s: %s", ep, cause(op, rc));
  return RBL_EPROTO;
}

static void on_retry(uv_timer_t *t) {
  rbl_http_op *op = t->data;
  op->len = op->hlen = 0;
  op->too_big = op->nomem = 0;
  op->errbuf[0] = '\0';
  op->attempts++;
  if (curl_multi_add_handle(op->h->multi, op->easy) == CURLM_OK) {
    op->in_multi = 1;
    return;
  }
  rbl_http_resp resp = {.err = RBL_ENOMEM, .attempts = op->attempts};
  snprintf(resp.errmsg, sizeof resp.errmsg, "%s: out of memory", op->endpoint);
  rbl_http_cb cb = op->cb;
  void *ud = op->ud;
  rbl_http *h = op->h;
  op_free(op);
  cb(ud, &resp);
  pump(h);
}

static int schedule_retry(rbl_http_op *op) {
  rbl_http *h = op->h;
  if (!op->retry) {
    uv_timer_t *t = malloc(sizeof *t);
    if (!t) return RBL_ENOMEM;
    uv_timer_init(h->loop, t);
    t->data = op;
    op->retry = t;
    h->live++;
  }
  op->attempts_left--;
  uv_timer_start(op->retry, on_retry, (uint64_t)op->backoff_ms, 0);
  op->backoff_ms = op->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : op->backoff_ms * 2;
  return 0;
}

static void op_done(rbl_http_op *op, CURLcode rc) {
  rbl_http_resp resp;
  memset(&resp, 0, sizeof resp);
  int conn;
  resp.err = classify(op, rc, resp.errmsg, sizeof resp.errmsg, &conn);
  if (resp.err == 0) curl_easy_getinfo(op->easy, CURLINFO_RESPONSE_CODE, &resp.status);
  curl_multi_remove_handle(op->h->multi, op->easy);
  op->in_multi = 0;
  int retryable =
      (resp.err != 0 && conn) ||
      (resp.err == 0 && (resp.status == 502 || resp.status == 503 || resp.status == 504));
  if (op->attempts_left > 0 && retryable && schedule_retry(op) == 0) return;

  if (resp.err == 0) {
    char *ct = NULL;
    curl_easy_getinfo(op->easy, CURLINFO_CONTENT_TYPE, &ct);
    resp.content_type = ct ? strdup(ct) : NULL;
    if (!op->buf) buf_append(&op->buf, &op->len, &op->cap, "", 0);
    resp.body = op->buf;
    resp.body_len = op->buf ? op->len : 0;
    op->buf = NULL;
    resp.headers = op->hbuf;
    resp.headers_len = op->hbuf ? op->hlen : 0;
    op->hbuf = NULL;
  }
  resp.total_ms = (double)(uv_hrtime() - op->t0) / 1e6;
  resp.attempts = op->attempts;
  rbl_http_cb cb = op->cb;
  void *ud = op->ud;
  op_free(op); /* before the callback, which may start or cancel other requests */
  cb(ud, &resp);
  rbl_budget_free(resp.body);
  rbl_budget_free(resp.headers);
  free(resp.content_type);
}

static void drain(rbl_http *h) {
  CURLMsg *m;
  int left;
  while (h->multi && (m = curl_multi_info_read(h->multi, &left))) {
    if (m->msg != CURLMSG_DONE) continue;
    CURL *e = m->easy_handle;
    CURLcode rc = m->data.result; /* m is invalid once the handle is removed */
    rbl_http_op *op = NULL;
    curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&op);
    if (op) op_done(op, rc);
  }
  pump(h);
}

/* ---- rbl.http: the Lua binding for host modules ---- */

/* One Lua request; freed by push or cancel, whichever the engine calls. */
typedef struct lreq {
  rbl_http_op *op; /* NULL once the callback ran */
  rbl_wait *wait;
  rbl_http_resp resp;
  rbl_gate_ticket ticket; /* what the gate checks in the answer */
  char prim[40];          /* the calling primitive, for a refusal of the answer */
} lreq;

static void lreq_free(lreq *r) {
  rbl_budget_free(r->resp.body);
  rbl_budget_free(r->resp.headers);
  free(r->resp.content_type);
  free(r);
}

static void l_on_done(void *ud, rbl_http_resp *resp) {
  lreq *r = ud;
  r->op = NULL;
  r->resp = *resp; /* steal the buffers */
  resp->body = resp->headers = resp->content_type = NULL;
  rbl_wait_done(r->wait);
}

/* Pushes the header block as {lowercase-name = value}; repeated names are joined by ", ". */
static void push_headers(lua_State *L, const char *p, size_t n) {
  lua_newtable(L);
  const char *end = p + n;
  while (p < end) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    if (!eol) eol = end;
    const char *colon = memchr(p, ':', (size_t)(eol - p));
    if (colon && colon > p) {
      luaL_Buffer b;
      luaL_buffinit(L, &b);
      for (const char *c = p; c < colon; c++)
        luaL_addchar(&b, (*c >= 'A' && *c <= 'Z') ? (char)(*c + 32) : *c);
      luaL_pushresult(&b); /* name */
      const char *v = colon + 1, *ve = eol;
      while (v < ve && (*v == ' ' || *v == '\t'))
        v++;
      while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
        ve--;
      lua_pushvalue(L, -1);
      if (lua_rawget(L, -3) == LUA_TSTRING) { /* name old */
        lua_pushliteral(L, ", ");
        lua_pushlstring(L, v, (size_t)(ve - v));
        lua_concat(L, 3);
      } else {
        lua_pop(L, 1);
        lua_pushlstring(L, v, (size_t)(ve - v));
      }
      lua_rawset(L, -3);
    }
    p = eol + 1;
  }
}

static int l_push(lua_State *L, void *ud) {
  lreq *r = ud;
  if (r->resp.err != 0) {
    if (r->resp.err == RBL_ENOMEM) {
      lreq_free(r);
      rbl__poll_limits(L); /* the body outgrew the run's memory budget: raises "killed" */
      return rbl_raise(L, "failed", "out of memory");
    }
    char msg[sizeof r->resp.errmsg];
    const char *code = rbl_err_name(r->resp.err);
    memcpy(msg, r->resp.errmsg, sizeof msg);
    lreq_free(r);
    return rbl_raise(L, code, "%s", msg);
  }
  /* the gate sees the answer before host Lua does: it learns from it, and may refuse it */
  char why[1024];
  rbl_budget_parse_begin(); /* the gate's parse of the answer is bulk: refused over the budget */
  int refused = rbl_gate_answer(rbl_gate_of(L), &r->ticket, r->resp.status, r->resp.body,
                                r->resp.body_len, why, sizeof why);
  rbl_budget_parse_end();
  if (rbl__limits_hit(L)) { /* the parse outgrew the budget (or a deadline passed): raises */
    lreq_free(r);
    rbl__poll_limits(L);
  }
  if (refused != 0) {
    char prim[sizeof r->prim];
    memcpy(prim, r->prim, sizeof prim);
    lreq_free(r);
    return rbl_refuse(L, prim, "%s", why);
  }
  lua_createtable(L, 0, 5);
  lua_pushinteger(L, r->resp.status);
  lua_setfield(L, -2, "status");
  lua_pushlstring(L, r->resp.body ? r->resp.body : "", r->resp.body_len);
  lua_setfield(L, -2, "body");
  if (r->resp.content_type) {
    lua_pushstring(L, r->resp.content_type);
    lua_setfield(L, -2, "content_type");
  }
  lua_pushnumber(L, r->resp.total_ms);
  lua_setfield(L, -2, "total_ms");
  push_headers(L, r->resp.headers ? r->resp.headers : "", r->resp.headers_len);
  lua_setfield(L, -2, "headers");
  lreq_free(r);
  return 1;
}

static void l_cancel(void *ud) {
  lreq *r = ud;
  if (r->op) rbl_http_cancel(r->op);
  lreq_free(r);
}

static const char *opt_string(lua_State *L, int t, const char *k, size_t *len) {
  const char *s = NULL;
  int ty = lua_getfield(L, t, k);
  if (ty == LUA_TSTRING)
    s = lua_tolstring(L, -1, len); /* kept alive by the table */
  else if (ty != LUA_TNIL)
    luaL_error(L, "http.request: %s must be a string", k);
  lua_pop(L, 1);
  return s;
}

static lua_Number opt_number(lua_State *L, int t, const char *k, lua_Number def) {
  lua_getfield(L, t, k);
  lua_Number v = lua_isnil(L, -1) ? def : luaL_checknumber(L, -1);
  lua_pop(L, 1);
  return v;
}

#define MAX_LUA_HEADERS 64

/* Collects the headers table ({"K: V", ...} or {K = V}) into hv[]; the strings are kept
 * alive in a new table left on the stack. */
static size_t collect_headers(lua_State *L, int t, const char **hv) {
  size_t n = 0;
  lua_newtable(L);
  int keep = lua_gettop(L);
  if (lua_getfield(L, t, "headers") == LUA_TTABLE) {
    lua_pushnil(L);
    while (lua_next(L, keep + 1)) { /* keep hdrs key value */
      int vt = lua_type(L, keep + 3);
      if (vt != LUA_TSTRING && vt != LUA_TNUMBER)
        luaL_error(L, "http.request: header values must be strings");
      if (n == MAX_LUA_HEADERS) luaL_error(L, "http.request: too many headers");
      if (lua_type(L, keep + 2) == LUA_TSTRING)
        lua_pushfstring(L, "%s: %s", lua_tostring(L, keep + 2), lua_tostring(L, keep + 3));
      else
        lua_pushvalue(L, keep + 3);
      hv[n] = lua_tostring(L, -1);
      lua_rawseti(L, keep, (lua_Integer)++n);
      lua_settop(L, keep + 2); /* keep the key for lua_next */
    }
  }
  lua_settop(L, keep);
  return n;
}

static void read_tls(lua_State *L, int t, rbl_http_req *req) {
  if (lua_getfield(L, t, "tls") != LUA_TTABLE) {
    lua_pop(L, 1);
    return;
  }
  int tt = lua_gettop(L);
  req->ca_file = opt_string(L, tt, "ca_file", NULL);
  req->ca_pem = opt_string(L, tt, "ca_pem", NULL);
  req->cert_file = opt_string(L, tt, "cert_file", NULL);
  req->cert_pem = opt_string(L, tt, "cert_pem", NULL);
  req->key_file = opt_string(L, tt, "key_file", NULL);
  req->key_pem = opt_string(L, tt, "key_pem", NULL);
  lua_getfield(L, tt, "insecure");
  req->insecure = lua_toboolean(L, -1);
  lua_pop(L, 1);
  /* the tls table stays on the stack (its strings are in use) until the request starts */
}

/* http.request(call, req) -> {status, body, content_type, total_ms, headers}; yields. */
static int l_request(lua_State *L) {
  luaL_checktype(L, 2, LUA_TTABLE);
  rbl_http_req req;
  memset(&req, 0, sizeof req);
  const char *hv[MAX_LUA_HEADERS];
  req.method = opt_string(L, 2, "method", NULL);
  if (!req.method) req.method = "GET";
  rbl_host_call_check_http(L, 1, req.method);
  size_t url_len = 0;
  req.url = opt_string(L, 2, "url", &url_len);
  luaL_argcheck(L, req.url != NULL, 2, "url required");
  req.unix_socket = opt_string(L, 2, "unix_socket", NULL);
  req.body = opt_string(L, 2, "body", &req.body_len);
  lua_Number to = opt_number(L, 2, "timeout", 0);
  req.timeout_ms = to > 0 ? (long)(to * 1000.0) : 0;
  lua_Number cto = opt_number(L, 2, "connect_timeout", 0);
  req.connect_timeout_ms = cto > 0 ? (long)(cto * 1000.0) : 0;
  lua_Number mx = opt_number(L, 2, "max_response", 0);
  req.max_response = mx > 0 ? (size_t)mx : 0;
  lua_Number rt = opt_number(L, 2, "retries", 0);
  req.retries = rt > 0 ? (rt > 10 ? 10 : (int)rt) : 0;
  req.nheaders = collect_headers(L, 2, hv);
  req.headers = hv;
  read_tls(L, 2, &req);

  /* the gate: nothing leaves unless it classifies the request and its rules allow it */
  rbl_gate_ticket ticket;
  char why[1024];
  const char *prim = rbl_host_call_prim(L, 1);
  rbl_gate_req greq = {.method = req.method,
                       .url = req.url,
                       .url_len = url_len,
                       .unix_socket = req.unix_socket,
                       .body = req.body,
                       .body_len = req.body_len,
                       .headers = hv,
                       .nheaders = req.nheaders,
                       .tenant = rbl_host_call_tenant(L, 1)};
  if (rbl_gate_http(rbl_gate_of(L), &greq, &ticket, why, sizeof why) != 0)
    return rbl_refuse(L, prim, "%s", why);

  rbl_http *h = rbl_engine_http(rbl_engine_of(L));
  if (!h) {
    char cause[256] = "no client for this engine";
    rbl_curl_load(cause, sizeof cause);
    return rbl_raise(L, "failed", "http: %s", cause);
  }
  lreq *r = calloc(1, sizeof *r);
  if (!r) return luaL_error(L, "not enough memory");
  r->ticket = ticket;
  snprintf(r->prim, sizeof r->prim, "%s", prim);
  int rc = rbl_http_start(h, &req, l_on_done, r, &r->op);
  if (rc != 0) {
    free(r);
    return rbl_raise(L, rbl_err_name(rc), "%s %s: cannot start request (%s)", req.method,
                     req.unix_socket ? req.unix_socket : req.url, rbl_err_name(rc));
  }
  r->wait = rbl_wait_new(L, l_push, l_cancel, r);
  return rbl_wait_yield(L, r->wait);
}

/* http.bind_endpoint(class, value): binds the "kube" API server base URL (or the "kube-plugin"
 * credential plugin path, or serve.ha's "kube-lease" "SERVER NAMESPACE") in the gate, once per
 * run; a different second binding is refused. */
static int l_bind_endpoint(lua_State *L) {
  const char *cls = luaL_checkstring(L, 1);
  const char *value = luaL_checkstring(L, 2);
  char why[1024];
  if (rbl_gate_bind(rbl_gate_of(L), cls, value, why, sizeof why) != 0)
    return rbl_refuse(L, !strncmp(cls, "kube", 4) ? "kube" : cls, "%s", why);
  return 0;
}

static const luaL_Reg http_funcs[] = {
    {"request", l_request},
    {"bind_endpoint", l_bind_endpoint},
    {NULL, NULL},
};

int luaopen_rbl_http(lua_State *L) {
  luaL_newlib(L, http_funcs);
  return 1;
}
