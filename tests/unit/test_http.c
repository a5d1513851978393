/* Tests of src/core/http.c against a small HTTP/1.1 server on the same loop, openssl s_server
 * for TLS, and dockerd's /_ping over its unix socket when one is there. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <fcntl.h>

#include <lua.h>

#include "budget.h"
#include "http.h"
#include "rbl.h"

/* http.o also holds the Lua binding; these stand in for the engine when the test links
 * without it (weak: the real ones win when present). */
__attribute__((weak)) void *rbl_wait_new(lua_State *L, void *p, void *c, void *ud) { return NULL; }
__attribute__((weak)) int rbl_wait_yield(lua_State *L, void *w) { return 0; }
__attribute__((weak)) void rbl_wait_done(void *w) {}
__attribute__((weak)) void *rbl_engine_of(lua_State *L) { return NULL; }
__attribute__((weak)) void *rbl_engine_http(void *e) { return NULL; }
__attribute__((weak)) int rbl_raise(lua_State *L, const char *code, const char *fmt, ...) {
  return 0;
}
__attribute__((weak)) int rbl_host_call_check_http(lua_State *L, int idx, const char *m) {
  return 0;
}

/* ---- a tiny HTTP/1.1 server ---- */

typedef struct srv srv;
typedef struct conn {
  uv_tcp_t tcp;
  uv_timer_t delay;
  srv *s;
  char *buf;
  size_t len, cap;
  int handles; /* uv handles still open; freed at 0 */
  int closing;
  int close_after;   /* Connection: close */
  char pending[256]; /* the response path waiting on the delay timer */
  struct conn *next;
} conn;

struct srv {
  uv_tcp_t tcp;
  uv_loop_t *loop;
  int port;
  int conns;    /* connections accepted */
  int open;     /* connections still open */
  int max_open; /* the most connections open at once */
  int reqs;
  int status_hits;
  conn *list;
};

typedef struct wreq {
  uv_write_t w;
  conn *c;
  int close_after;
  char data[];
} wreq;

static void conn_closed(uv_handle_t *h) {
  conn *c = h->data;
  if (--c->handles == 0) {
    free(c->buf);
    free(c);
  }
}

static void conn_close(conn *c) {
  if (c->closing) return;
  c->closing = 1;
  c->s->open--;
  for (conn **p = &c->s->list; *p; p = &(*p)->next)
    if (*p == c) {
      *p = c->next;
      break;
    }
  uv_close((uv_handle_t *)&c->tcp, conn_closed);
  uv_close((uv_handle_t *)&c->delay, conn_closed);
}

static void on_written(uv_write_t *w, int status) {
  wreq *r = (wreq *)w;
  if (r->close_after || status < 0) conn_close(r->c);
  free(r);
}

static void send_raw(conn *c, const char *head, const char *body, size_t blen) {
  size_t hl = strlen(head);
  wreq *r = malloc(sizeof *r + hl + blen);
  memcpy(r->data, head, hl);
  if (blen) memcpy(r->data + hl, body, blen);
  r->c = c;
  r->close_after = c->close_after;
  uv_buf_t b = uv_buf_init(r->data, (unsigned)(hl + blen));
  if (uv_write(&r->w, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0) {
    free(r);
    conn_close(c);
  }
}

static void send_resp(conn *c, int status, const char *extra, const char *body, size_t blen) {
  char head[512];
  snprintf(head, sizeof head,
           "HTTP/1.1 %d X\r\nContent-Type: text/plain\r\nX-Test: 1\r\nX-Test: 2\r\n%s"
           "Content-Length: %zu\r\n%s\r\n",
           status, extra ? extra : "", blen, c->close_after ? "Connection: close\r\n" : "");
  send_raw(c, head, body, blen);
}

static void respond(conn *c, const char *method, const char *path, const char *body, size_t blen);

static void on_delay(uv_timer_t *t) {
  conn *c = t->data;
  send_resp(c, 200, NULL, "slow", 4);
}

static void respond(conn *c, const char *method, const char *path, const char *body, size_t blen) {
  c->s->reqs++;
  long n = 0;
  if (strcmp(path, "/hello") == 0) {
    send_resp(c, 200, NULL, "hello", 5);
  } else if (strcmp(path, "/echo") == 0) {
    size_t ml = strlen(method);
    char *out = malloc(ml + 1 + blen);
    memcpy(out, method, ml);
    out[ml] = ' ';
    memcpy(out + ml + 1, body, blen);
    send_resp(c, 200, NULL, out, ml + 1 + blen);
    free(out);
  } else if (sscanf(path, "/slow/%ld", &n) == 1) {
    uv_timer_start(&c->delay, on_delay, (uint64_t)n, 0);
  } else if (sscanf(path, "/big/%ld", &n) == 1) {
    char *out = malloc((size_t)n + 1);
    memset(out, 'x', (size_t)n);
    send_resp(c, 200, NULL, out, (size_t)n);
    free(out);
  } else if (sscanf(path, "/chunked/%ld", &n) == 1) {
    char *out = malloc((size_t)n + 64);
    size_t k = (size_t)sprintf(out, "%lx\r\n", n);
    memset(out + k, 'y', (size_t)n);
    k += (size_t)n;
    k += (size_t)sprintf(out + k, "\r\n0\r\n\r\n");
    send_raw(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", out, k);
    free(out);
  } else if (sscanf(path, "/status/%ld", &n) == 1) {
    c->s->status_hits++;
    send_resp(c, (int)n, NULL, "status", 6);
  } else if (strcmp(path, "/redirect") == 0) {
    send_resp(c, 302, "Location: /hello\r\n", "", 0);
  } else {
    send_resp(c, 404, NULL, "nope", 4);
  }
}

/* Handles every complete request in the buffer (curl sends one at a time). */
static void parse(conn *c) {
  for (;;) {
    char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
    if (!end) return;
    size_t hlen = (size_t)(end - c->buf) + 4;
    char method[16] = "", path[256] = "";
    sscanf(c->buf, "%15s %255s", method, path);
    size_t clen = 0;
    char *cl = strcasestr(c->buf, "\r\nContent-Length:");
    if (cl && cl < end) clen = strtoul(cl + 17, NULL, 10);
    char *cc = strcasestr(c->buf, "\r\nConnection: close");
    if (cc && cc < end) c->close_after = 1;
    if (c->len < hlen + clen) return;
    if (strcmp(path, "/close") == 0) {
      c->close_after = 1;
      strcpy(path, "/hello");
    }
    respond(c, method, path, c->buf + hlen, clen);
    memmove(c->buf, c->buf + hlen + clen, c->len - hlen - clen);
    c->len -= hlen + clen;
  }
}

static void on_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b) {
  conn *c = h->data;
  if (c->cap - c->len < 65536) {
    c->cap = c->cap * 2 + 65536;
    c->buf = realloc(c->buf, c->cap);
  }
  *b = uv_buf_init(c->buf + c->len, (unsigned)(c->cap - c->len));
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b) {
  conn *c = st->data;
  if (n < 0) {
    conn_close(c);
    return;
  }
  c->len += (size_t)n;
  parse(c);
}

static void on_conn(uv_stream_t *l, int status) {
  srv *s = l->data;
  conn *c = calloc(1, sizeof *c);
  c->s = s;
  uv_tcp_init(s->loop, &c->tcp);
  uv_timer_init(s->loop, &c->delay);
  c->tcp.data = c->delay.data = c;
  c->handles = 2;
  s->open++;
  c->next = s->list;
  s->list = c;
  if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0) {
    conn_close(c);
    return;
  }
  s->conns++;
  if (s->open > s->max_open) s->max_open = s->open;
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void srv_start(srv *s, uv_loop_t *loop) {
  memset(s, 0, sizeof *s);
  s->loop = loop;
  struct sockaddr_in a;
  uv_ip4_addr("127.0.0.1", 0, &a);
  assert_int_equal(uv_tcp_init(loop, &s->tcp), 0);
  s->tcp.data = s;
  assert_int_equal(uv_tcp_bind(&s->tcp, (struct sockaddr *)&a, 0), 0);
  assert_int_equal(uv_listen((uv_stream_t *)&s->tcp, 256, on_conn), 0);
  struct sockaddr_in got;
  int len = sizeof got;
  uv_tcp_getsockname(&s->tcp, (struct sockaddr *)&got, &len);
  s->port = ntohs(got.sin_port);
}

static void srv_stop(srv *s) {
  while (s->list)
    conn_close(s->list);
  uv_close((uv_handle_t *)&s->tcp, NULL);
}

/* ---- fixture: one loop, one server, one client ---- */

typedef struct fx {
  uv_loop_t loop;
  srv s;
  rbl_http *h;
  uv_timer_t tick; /* wakes uv_run so run_until can check its condition */
} fx;

typedef struct result {
  int called;
  int err;
  char errmsg[256];
  long status;
  char *body;
  size_t body_len;
  char ctype[64];
  char *headers;
  int attempts;
  double total_ms;
} result;

static void on_result(void *ud, rbl_http_resp *r) {
  result *res = ud;
  res->called++;
  res->err = r->err;
  snprintf(res->errmsg, sizeof res->errmsg, "%s", r->errmsg);
  res->status = r->status;
  res->body = r->body;
  res->body_len = r->body_len;
  r->body = NULL;
  snprintf(res->ctype, sizeof res->ctype, "%s", r->content_type ? r->content_type : "");
  res->headers = r->headers ? strdup(r->headers) : NULL;
  res->attempts = r->attempts;
  res->total_ms = r->total_ms;
}

static void result_free(result *r) {
  rbl_budget_free(r->body);
  free(r->headers);
  memset(r, 0, sizeof *r);
}

static void on_tick(uv_timer_t *t) {}

static int setup(void **state) {
  fx *f = calloc(1, sizeof *f);
  uv_loop_init(&f->loop);
  srv_start(&f->s, &f->loop);
  assert_int_equal(rbl_http_new(&f->h, &f->loop), 0);
  uv_timer_init(&f->loop, &f->tick);
  uv_timer_start(&f->tick, on_tick, 20, 20);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fx *f = *state;
  if (f->h) rbl_http_close(f->h);
  srv_stop(&f->s);
  uv_close((uv_handle_t *)&f->tick, NULL);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  /* every handle closed: the http layer released everything in close callbacks */
  assert_int_equal(uv_loop_close(&f->loop), 0);
  free(f);
  return 0;
}

static int run_until(fx *f, int *counter, int want, int max_ms) {
  uint64_t t0 = uv_now(&f->loop);
  while (*counter < want && uv_now(&f->loop) - t0 < (uint64_t)max_ms)
    uv_run(&f->loop, UV_RUN_ONCE);
  return *counter >= want;
}

static void run_for(fx *f, int ms) {
  uint64_t t0 = uv_now(&f->loop);
  while (uv_now(&f->loop) - t0 < (uint64_t)ms)
    uv_run(&f->loop, UV_RUN_ONCE);
}

static void url(fx *f, char *buf, size_t n, const char *path) {
  snprintf(buf, n, "http://127.0.0.1:%d%s", f->s.port, path);
}

static void start(fx *f, rbl_http_req *rq, result *res, rbl_http_op **op) {
  assert_int_equal(rbl_http_start(f->h, rq, on_result, res, op), 0);
}

/* ---- tests ---- */

static void test_get(void **state) {
  fx *f = *state;
  char u[128];
  url(f, u, sizeof u, "/hello");
  rbl_http_req rq = {.method = "GET", .url = u};
  result r = {0};
  start(f, &rq, &r, NULL);
  assert_true(run_until(f, &r.called, 1, 5000));
  assert_int_equal(r.err, 0);
  assert_int_equal(r.status, 200);
  assert_int_equal(r.body_len, 5);
  assert_memory_equal(r.body, "hello", 5);
  assert_string_equal(r.ctype, "text/plain");
  assert_non_null(strstr(r.headers, "X-Test: 1"));
  assert_int_equal(r.attempts, 1);
  result_free(&r);
}

static void test_post_binary(void **state) {
  fx *f = *state;
  char u[128];
  url(f, u, sizeof u, "/echo");
  const char *hdrs[] = {"Content-Type: application/octet-stream"};
  rbl_http_req rq = {.method = "POST",
                     .url = u,
                     .body = "abc\0def",
                     .body_len = 7,
                     .headers = hdrs,
                     .nheaders = 1};
  result r = {0};
  start(f, &rq, &r, NULL);
  assert_true(run_until(f, &r.called, 1, 5000));
  assert_int_equal(r.err, 0);
  assert_int_equal(r.body_len, 12);
  assert_memory_equal(r.body, "POST abc\0def", 12);
  result_free(&r);

  rq.method = "PUT";
  start(f, &rq, &r, NULL);
  assert_true(run_until(f, &r.called, 1, 5000));
  assert_int_equal(r.body_len, 11);
  assert_memory_equal(r.body, "PUT abc\0def", 11);
  result_free(&r);

  rq.method = "DELETE"; /* without a body */
  rq.body = NULL;
  rq.body_len = 0;
  start(f, &rq, &r, NULL);
  assert_true(run_until(f, &r.called, 1, 5000));
  assert_int_equal(r.body_len, 7);
  assert_memory_equal(r.body, "DELETE ", 7);
  result_free(&r);
}

/* Sequential requests on one connection: the multi's connection cache keeps it. */
static void test_keepalive(void **state) {
  fx *f = *state;
  char u[128];
  url(f, u, sizeof u, "/hello");
  rbl_http_req rq = {.method = "GET", .url = u};
  for (int i = 0; i < 20; i++) {
    result r = {0};
    start(f, &rq, &r, NULL);
    assert_true(run_until(f, &r.called, 1, 5000));
    assert_int_equal(r.status, 200);
    result_free(&r);
  }
  assert_int_equal(f->s.reqs, 20);
  assert_int_equal(f->s.conns, 1);
  /* a response with Connection: close is not reused */
  url(f, u, sizeof u, "/close");
  result r = {0};
  start(f, &rq, &r, NULL);
  assert_true(run_until(f, &r.called, 1, 5000));
  url(f, u, sizeof u, "/hello");
  result_free(&r);
  start(f, &rq, &r, NULL);
  assert_true(run_until(f, &r.called, 1, 5000));
  assert_int_equal(r.status, 200);
  assert_int_equal(f->s.conns, 2);
  result_free(&r);
}

static void test_timeout(void **state) {
  fx *f = *state;
  char u[128], want[128];
  url(f, u, sizeof u, "/slow/3000");
  rbl_http_req rq = {.method = "GET", .url = u, .timeout_ms = 200, .retries = 3};
  result r = {0};
  start(f, &rq, &r, NULL);
  assert_true(run_until(f, &r.called, 1, 5000));
  assert_int_equal(r.err, RBL_ETIMEDOUT);
  snprintf(want, sizeof want, "127.0.0.1:%d: timeout after 200 ms", f->s.port);
  assert_string_equal(r.errmsg, want);
  assert_int_equal(r.attempts, 1); /* a timeout after connecting is not retried */
  assert_true(r.total_ms < 1500);
  result_free(&r);
}

static void test_size_cap(void **state) {
  fx *f = *state;
  char u[128];
  rbl_http_req rq = {.method = "GET", .url = u, .max_response = 1000};
  result r = {0};
  url(f, u, sizeof u, "/big/100000"); /* Content-Length known */
  start(f, &rq, &r, NULL);
  assert_true(run_until(f, &r.called, 1, 5000));
  assert_int_equal(r.err, RBL_ETOOBIG);
  assert_non_null(strstr(r.errmsg, "response larger than 1000 bytes"));
  result_free(&r);
  url(f, u, sizeof u, "/chunked/100000"); /* length unknown: cut while reading */
  start(f, &rq, &r, NULL);
  assert_true(run_until(f, &r.called, 1, 5000));
  assert_int_equal(r.err, RBL_ETOOBIG);
  result_free(&r);
  url(f, u, sizeof u, "/big/1000"); /* exactly at the cap */
  start(f, &rq, &r, NULL);
  assert_true(run_until(f, &r.called, 1, 5000));
  assert_int_equal(r.err, 0);
  assert_int_equal(r.body_len, 1000);
  result_free(&r);
  url(f, u, sizeof u, "/chunked/5000000"); /* several MiB under the default cap */
  rq.max_response = 0;
  start(f, &rq, &r, NULL);
  assert_true(run_until(f, &r.called, 1, 5000));
  assert_int_equal(r.err, 0);
  assert_int_equal(r.body_len, 5000000);
  result_free(&r);
}

static void test_cancel(void **state) {
  fx *f = *state;
  char u[128];
  url(f, u, sizeof u, "/slow/300");
  rbl_http_req rq = {.method = "GET", .url = u};
  result r = {0}, r2 = {0};
  rbl_http_op *op, *op2;
  start(f, &rq, &r, &op);
  start(f, &rq, &r2, &op2);
  int zero = 0;
  run_until(f, &zero, 1, 100);
  assert_int_equal(f->s.open, 2);
  rbl_http_cancel(op);
  assert_true(run_until(f, &r2.called, 1, 5000));
  run_for(f, 100);
  assert_int_equal(r.called, 0);
  assert_int_equal(r2.status, 200);
  result_free(&r2);
  /* cancelled while waiting to retry */
  url(f, u, sizeof u, "/status/503");
  rq.retries = 5;
  f->s.status_hits = 0;
  start(f, &rq, &r, &op);
  while (f->s.status_hits < 1)
    uv_run(&f->loop, UV_RUN_ONCE);
  run_for(f, 30);
  rbl_http_cancel(op);
  run_for(f, 500);
  assert_int_equal(r.called, 0);
  assert_int_equal(f->s.status_hits, 1);
}

static void test_retry_get_only(void **state) {
  fx *f = *state;
  char u[128];
  url(f, u, sizeof u, "/status/503");
  rbl_http_req rq = {.method = "GET", .url = u, .retries = 2};
  result r = {0};
  start(f, &rq, &r, NULL);
  assert_true(run_until(f, &r.called, 1, 5000));
  assert_int_equal(r.err, 0);
  assert_int_equal(r.status, 503);
  assert_int_equal(r.attempts, 3);
  assert_int_equal(f->s.status_hits, 3);
  assert_true(r.total_ms >= 290); /* 100 + 200 ms of backoff */
  result_free(&r);

  f->s.status_hits = 0;
  rq.method = "POST";
  start(f, &rq, &r, NULL);
  assert_true(run_until(f, &r.called, 1, 5000));
  assert_int_equal(r.status, 503);
  assert_int_equal(f->s.status_hits, 1);
  result_free(&r);

  f->s.status_hits = 0;
  rq.method = "GET";
  url(f, u, sizeof u, "/status/500"); /* not a retryable status */
  start(f, &rq, &r, NULL);
  assert_true(run_until(f, &r.called, 1, 5000));
  assert_int_equal(r.status, 500);
  assert_int_equal(f->s.status_hits, 1);
  result_free(&r);

  /* connect refused: retried for GET, not for POST */
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  bind(fd, (struct sockaddr *)&a, sizeof a);
  socklen_t al = sizeof a;
  getsockname(fd, (struct sockaddr *)&a, &al);
  close(fd); /* a port nobody listens on */
  snprintf(u, sizeof u, "http://127.0.0.1:%d/x", ntohs(a.sin_port));
  start(f, &rq, &r, NULL);
  assert_true(run_until(f, &r.called, 1, 5000));
  assert_int_equal(r.err, RBL_ECONNECT);
  assert_int_equal(r.attempts, 3);
  char want[128];
  snprintf(want, sizeof want, "connect to 127.0.0.1:%d: Connection refused", ntohs(a.sin_port));
  assert_string_equal(r.errmsg, want);
  result_free(&r);
  rq.method = "POST";
  start(f, &rq, &r, NULL);
  assert_true(run_until(f, &r.called, 1, 5000));
  assert_int_equal(r.err, RBL_ECONNECT);
  assert_int_equal(r.attempts, 1);
  result_free(&r);
}

static void test_no_redirect(void **state) {
  fx *f = *state;
  char u[128];
  url(f, u, sizeof u, "/redirect");
  rbl_http_req rq = {.method = "GET", .url = u};
  result r = {0};
  start(f, &rq, &r, NULL);
  assert_true(run_until(f, &r.called, 1, 5000));
  assert_int_equal(r.status, 302);
  assert_int_equal(f->s.reqs, 1);
  result_free(&r);
}

static void test_bad_input(void **state) {
  fx *f = *state;
  char u[128];
  url(f, u, sizeof u, "/hello");
  const char *hdrs[] = {"X-Evil: a\r\nX-Injected: b"};
  rbl_http_req rq = {.method = "GET", .url = u, .headers = hdrs, .nheaders = 1};
  result r = {0};
  assert_int_equal(rbl_http_start(f->h, &rq, on_result, &r, NULL), RBL_EINVAL);
  rq.nheaders = 0;
  rq.method = "get\r\n";
  assert_int_equal(rbl_http_start(f->h, &rq, on_result, &r, NULL), RBL_EINVAL);
  rq.method = "GET";
  rq.url = "file:///etc/passwd";
  assert_int_equal(rbl_http_start(f->h, &rq, on_result, &r, NULL), 0);
  assert_true(run_until(f, &r.called, 1, 5000));
  assert_int_equal(r.err, RBL_EPROTO); /* protocol not allowed */
  result_free(&r);
}

static void test_unix_missing(void **state) {
  fx *f = *state;
  rbl_http_req rq = {.method = "GET",
                     .url = "http://localhost/_ping",
                     .unix_socket = "/tmp/rbl-test-missing.sock",
                     .retries = 1};
  result r = {0};
  unlink("/tmp/rbl-test-missing.sock");
  start(f, &rq, &r, NULL);
  assert_true(run_until(f, &r.called, 1, 5000));
  assert_int_equal(r.err, RBL_ECONNECT);
  assert_string_equal(r.errmsg, "connect to /tmp/rbl-test-missing.sock: No such file or directory");
  assert_int_equal(r.attempts, 2);
  result_free(&r);
}

/* Permission denied on the socket maps to RBL_EDENIED: checked in a child running as nobody. */
static void test_unix_denied(void **state) {
  fx *f = *state;
  if (geteuid() != 0) skip();
  const char *path = "/tmp/rbl-test-denied.sock";
  unlink(path);
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  strcpy(a.sun_path, path);
  assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
  listen(fd, 4);
  chmod(path, 0600);
  pid_t pid = fork();
  if (pid == 0) {
    if (setgid(65534) != 0 || setuid(65534) != 0) _exit(3);
    uv_loop_t loop;
    uv_loop_init(&loop);
    rbl_http *h;
    rbl_http_new(&h, &loop);
    rbl_http_req rq = {.method = "GET", .url = "http://localhost/_ping", .unix_socket = path};
    result r = {0};
    rbl_http_start(h, &rq, on_result, &r, NULL);
    while (!r.called)
      uv_run(&loop, UV_RUN_ONCE);
    rbl_http_close(h);
    uv_run(&loop, UV_RUN_DEFAULT);
    int ok = r.err == RBL_EDENIED &&
             strcmp(r.errmsg, "connect to /tmp/rbl-test-denied.sock: Permission denied") == 0;
    if (!ok) fprintf(stderr, "denied: err %d msg %s\n", r.err, r.errmsg);
    _exit(ok ? 0 : 1);
  }
  int st = 0;
  waitpid(pid, &st, 0);
  close(fd);
  unlink(path);
  (void)f;
  assert_true(WIFEXITED(st));
  assert_int_equal(WEXITSTATUS(st), 0);
}

static void test_docker_ping(void **state) {
  fx *f = *state;
  struct stat st;
  if (stat("/var/run/docker.sock", &st) != 0) skip();
  rbl_http_req rq = {.method = "GET",
                     .url = "http://localhost/_ping",
                     .unix_socket = "/var/run/docker.sock",
                     .timeout_ms = 5000};
  result r = {0};
  for (int i = 0; i < 3; i++) {
    start(f, &rq, &r, NULL);
    assert_true(run_until(f, &r.called, 1, 6000));
    if (r.err == RBL_ECONNECT) skip(); /* no daemon behind the socket */
    assert_int_equal(r.err, 0);
    assert_int_equal(r.status, 200);
    assert_memory_equal(r.body, "OK", 2);
    assert_non_null(strstr(r.headers, "Api-Version:"));
    result_free(&r);
  }
}

static void test_concurrent(void **state) {
  fx *f = *state;
  enum { N = 100 };
  char u[128];
  url(f, u, sizeof u, "/slow/100");
  rbl_http_req rq = {.method = "GET", .url = u, .timeout_ms = 10000};
  static result rs[N];
  memset(rs, 0, sizeof rs);
  int done = 0;
  for (int i = 0; i < N; i++)
    start(f, &rq, &rs[i], NULL);
  uint64_t t0 = uv_now(&f->loop);
  while (done < N && uv_now(&f->loop) - t0 < 10000) {
    uv_run(&f->loop, UV_RUN_ONCE);
    done = 0;
    for (int i = 0; i < N; i++)
      done += rs[i].called;
  }
  assert_int_equal(done, N);
  for (int i = 0; i < N; i++) {
    assert_int_equal(rs[i].err, 0);
    assert_int_equal(rs[i].status, 200);
    result_free(&rs[i]);
  }
  assert_true(uv_now(&f->loop) - t0 < 3000); /* in parallel, not one after another */
  assert_int_equal(f->s.reqs, N);
  /* the connections stay cached: a second wave reuses them */
  int conns = f->s.conns;
  url(f, u, sizeof u, "/hello");
  for (int i = 0; i < 10; i++) {
    result r = {0};
    start(f, &rq, &r, NULL);
    assert_true(run_until(f, &r.called, 1, 5000));
    result_free(&r);
  }
  assert_int_equal(f->s.conns, conns);
}

/* The bounded pool: 40 requests with 4 slots use at most 4 connections, queue in between
 * (so they take at least 10 rounds), and all complete. */
static void test_pool_bounded(void **state) {
  fx *f = *state;
  enum { N = 40 };
  rbl_http_set_max_per_host(f->h, 4);
  char u[128];
  url(f, u, sizeof u, "/slow/50");
  rbl_http_req rq = {.method = "GET", .url = u, .timeout_ms = 10000};
  static result rs[N];
  memset(rs, 0, sizeof rs);
  for (int i = 0; i < N; i++)
    start(f, &rq, &rs[i], NULL);
  uint64_t t0 = uv_now(&f->loop);
  int done = 0;
  while (done < N && uv_now(&f->loop) - t0 < 20000) {
    uv_run(&f->loop, UV_RUN_ONCE);
    done = 0;
    for (int i = 0; i < N; i++)
      done += rs[i].called;
  }
  assert_int_equal(done, N);
  for (int i = 0; i < N; i++) {
    assert_int_equal(rs[i].err, 0);
    assert_int_equal(rs[i].status, 200);
    result_free(&rs[i]);
  }
  assert_true(f->s.max_open <= 4);
  assert_true(f->s.conns <= 4); /* kept alive and reused, never more than the pool */
  assert_true(uv_now(&f->loop) - t0 >= (N / 4) * 50 - 20);
}

/* A queued request holds a copy of itself, not a curl handle (each carries a 16 KiB receive
 * buffer): 200 requests behind 2 slots keep at most 2 + 16 handles alive, and what a queued
 * request sends is what it was started with, though the caller's buffers change meanwhile. */
static void test_pool_queue_holds_no_handles(void **state) {
  fx *f = *state;
  enum { N = 200 };
  rbl_http_set_max_per_host(f->h, 2);
  char u[128], body[16], hdr[64];
  static result rs[N];
  memset(rs, 0, sizeof rs);
  const char *hdrs[] = {hdr};
  rbl_http_req rq = {
      .method = "POST", .url = u, .headers = hdrs, .nheaders = 1, .timeout_ms = 20000};
  for (int i = 0; i < N; i++) {
    url(f, u, sizeof u, i % 2 ? "/echo" : "/slow/5");
    snprintf(body, sizeof body, "b%03d", i);
    snprintf(hdr, sizeof hdr, "X-N: %d", i);
    rq.body = body;
    rq.body_len = strlen(body);
    start(f, &rq, &rs[i], NULL);
  }
  memset(u, 'x', sizeof u - 1); /* the caller's buffers change while most requests wait */
  memset(body, 'y', sizeof body - 1);
  memset(hdr, 'z', sizeof hdr - 1);
  u[sizeof u - 1] = body[sizeof body - 1] = hdr[sizeof hdr - 1] = '\0';
  assert_true(rbl_http_handles(f->h) <= 2 + 16);
  uint64_t t0 = uv_now(&f->loop);
  int done = 0, most = 0;
  while (done < N && uv_now(&f->loop) - t0 < 30000) {
    uv_run(&f->loop, UV_RUN_ONCE);
    if (rbl_http_handles(f->h) > most) most = rbl_http_handles(f->h);
    done = 0;
    for (int i = 0; i < N; i++)
      done += rs[i].called;
  }
  assert_int_equal(done, N);
  assert_true(most <= 2 + 16);
  for (int i = 0; i < N; i++) {
    assert_int_equal(rs[i].err, 0);
    assert_int_equal(rs[i].status, 200);
    if (i % 2) {
      char want[16];
      int n = snprintf(want, sizeof want, "POST b%03d", i);
      assert_int_equal(rs[i].body_len, (size_t)n);
      assert_memory_equal(rs[i].body, want, (size_t)n);
    }
    result_free(&rs[i]);
  }
}

/* A queued request: its timeout starts when it is sent, and cancelling it while it waits
 * leaves the rest of the queue running. */
static void test_pool_queue(void **state) {
  fx *f = *state;
  rbl_http_set_max_per_host(f->h, 1);
  char slow[128], fast[128];
  url(f, slow, sizeof slow, "/slow/300");
  url(f, fast, sizeof fast, "/slow/20");
  rbl_http_req a = {.method = "GET", .url = slow, .timeout_ms = 10000};
  rbl_http_req b = {.method = "GET", .url = fast, .timeout_ms = 200};
  result ra = {0}, rb = {0}, rc = {0};
  rbl_http_op *cancelled = NULL;
  start(f, &a, &ra, NULL);
  start(f, &b, &rc, &cancelled); /* queued, then cancelled */
  start(f, &b, &rb, NULL);       /* queued behind both; waits ~300 ms, runs 20 ms */
  int zero = 0;
  run_until(f, &zero, 1, 50);
  rbl_http_cancel(cancelled);
  assert_true(run_until(f, &rb.called, 1, 5000));
  assert_int_equal(ra.called, 1);
  assert_int_equal(rc.called, 0);
  assert_int_equal(rb.err, 0); /* 200 ms timeout, yet more than 200 ms after it was started */
  assert_int_equal(rb.status, 200);
  assert_true(rb.total_ms >= 250);
  assert_int_equal(f->s.reqs, 2);
  result_free(&ra);
  result_free(&rb);
}

static void test_close_in_flight(void **state) {
  fx *f = *state;
  char u[128];
  url(f, u, sizeof u, "/slow/200");
  rbl_http_req rq = {.method = "GET", .url = u, .retries = 1};
  result r[5] = {{0}};
  for (int i = 0; i < 5; i++)
    start(f, &rq, &r[i], NULL);
  int zero = 0;
  run_until(f, &zero, 1, 50);
  rbl_http_close(f->h);
  f->h = NULL;
  run_for(f, 400);
  for (int i = 0; i < 5; i++)
    assert_int_equal(r[i].called, 0);
}

/* ---- TLS against openssl s_server with a CA made here ---- */

static char tls_dir[64];
static int tls_port, mtls_port; /* s_server without and with a required client certificate */
static pid_t tls_pid, mtls_pid;

static char *slurp(const char *dir, const char *name) {
  char p[256];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  FILE *fp = fopen(p, "rb");
  if (!fp) return NULL;
  static char bufs[4][16384];
  static int nb;
  char *b = bufs[nb++ % 4];
  size_t n = fread(b, 1, sizeof bufs[0] - 1, fp);
  b[n] = 0;
  fclose(fp);
  return b;
}

static int sh(const char *fmt, ...) {
  char cmd[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  return system(cmd);
}

static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  bind(fd, (struct sockaddr *)&a, sizeof a);
  socklen_t al = sizeof a;
  getsockname(fd, (struct sockaddr *)&a, &al);
  close(fd);
  return ntohs(a.sin_port);
}

static pid_t s_server(int port, const char *verify) {
  pid_t pid = fork();
  if (pid == 0) {
    const char *d = tls_dir;
    char acc[32], cert[128], key[128], ca[128];
    snprintf(acc, sizeof acc, "127.0.0.1:%d", port);
    snprintf(cert, sizeof cert, "%s/srv.pem", d);
    snprintf(key, sizeof key, "%s/srv.key", d);
    snprintf(ca, sizeof ca, "%s/ca.pem", d);
    int null = open("/dev/null", O_WRONLY);
    dup2(null, 1);
    dup2(null, 2);
    execlp("openssl", "openssl", "s_server", "-accept", acc, "-cert", cert, "-key", key, "-CAfile",
           ca, verify, "1", "-www", "-quiet", (char *)NULL);
    _exit(127);
  }
  return pid;
}

static int wait_port(int port) {
  for (int i = 0; i < 100; i++) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    if (ok) return 1;
    usleep(50000);
  }
  return 0;
}

static int tls_setup(void **state) {
  strcpy(tls_dir, "/tmp/rbl-http-tls-XXXXXX");
  if (!mkdtemp(tls_dir)) return -1;
  const char *d = tls_dir;
  int rc = sh("cd %s && printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > san.ext &&"
              " openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj "
              "/CN=rbl-test-ca 2>/dev/null &&"
              " openssl req -x509 -newkey rsa:2048 -nodes -keyout other.key -out other.pem -days 2 "
              "-subj /CN=other-ca 2>/dev/null &&"
              " openssl req -newkey rsa:2048 -nodes -keyout srv.key -out srv.csr -subj "
              "/CN=localhost 2>/dev/null &&"
              " openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out "
              "srv.pem -days 2 -extfile san.ext 2>/dev/null &&"
              " openssl req -newkey rsa:2048 -nodes -keyout cli.key -out cli.csr -subj /CN=client "
              "2>/dev/null &&"
              " openssl x509 -req -in cli.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out "
              "cli.pem -days 2 2>/dev/null",
              d);
  if (rc != 0) return -1;
  tls_port = free_port();
  tls_pid = s_server(tls_port, "-verify");
  mtls_port = free_port();
  mtls_pid = s_server(mtls_port, "-Verify");
  if (!wait_port(tls_port) || !wait_port(mtls_port)) return -1;
  return setup(state);
}

static int tls_teardown(void **state) {
  pid_t pids[] = {tls_pid, mtls_pid};
  for (int i = 0; i < 2; i++)
    if (pids[i] > 0) {
      kill(pids[i], SIGTERM);
      waitpid(pids[i], NULL, 0);
    }
  sh("rm -rf %s", tls_dir);
  return teardown(state);
}

static void tls_get_port(fx *f, int port, rbl_http_req *rq, result *r) {
  char u[128];
  snprintf(u, sizeof u, "https://localhost:%d/", port);
  rq->method = "GET";
  rq->url = u;
  rq->timeout_ms = 5000;
  memset(r, 0, sizeof *r);
  start(f, rq, r, NULL);
  assert_true(run_until(f, &r->called, 1, 6000));
}

static void tls_get(fx *f, rbl_http_req *rq, result *r) { tls_get_port(f, tls_port, rq, r); }

static void test_tls(void **state) {
  fx *f = *state;
  char ca[128], other[128];
  snprintf(ca, sizeof ca, "%s/ca.pem", tls_dir);
  snprintf(other, sizeof other, "%s/other.pem", tls_dir);
  result r;
  rbl_http_req rq = {.ca_file = ca};
  tls_get(f, &rq, &r); /* CA from a file */
  assert_int_equal(r.err, 0);
  assert_int_equal(r.status, 200);
  result_free(&r);

  rbl_http_req rq2 = {.ca_pem = slurp(tls_dir, "ca.pem")}; /* CA as a PEM blob */
  tls_get(f, &rq2, &r);
  assert_int_equal(r.err, 0);
  assert_int_equal(r.status, 200);
  result_free(&r);

  rbl_http_req rq3 = {.ca_file = other}; /* the wrong CA */
  tls_get(f, &rq3, &r);
  assert_int_equal(r.err, RBL_ETLS);
  assert_non_null(strstr(r.errmsg, "TLS: certificate verify failed"));
  char want[64];
  snprintf(want, sizeof want, "localhost:%d: ", tls_port);
  assert_memory_equal(r.errmsg, want, strlen(want));
  result_free(&r);

  rbl_http_req rq4 = {.ca_pem = slurp(tls_dir, "other.pem")};
  tls_get(f, &rq4, &r);
  assert_int_equal(r.err, RBL_ETLS);
  result_free(&r);

  rbl_http_req rq5 = {.insecure = 1}; /* only when asked */
  tls_get(f, &rq5, &r);
  assert_int_equal(r.err, 0);
  result_free(&r);

  /* a server that requires a client certificate: refused without, fine with files or blobs */
  rbl_http_req rq6 = {.ca_file = ca};
  tls_get_port(f, mtls_port, &rq6, &r);
  assert_int_equal(r.err, RBL_ETLS);
  assert_non_null(strstr(r.errmsg, "TLS: "));
  result_free(&r);
  char cf[128], kf[128];
  snprintf(cf, sizeof cf, "%s/cli.pem", tls_dir);
  snprintf(kf, sizeof kf, "%s/cli.key", tls_dir);
  rbl_http_req rq7 = {.ca_file = ca, .cert_file = cf, .key_file = kf};
  tls_get_port(f, mtls_port, &rq7, &r);
  assert_int_equal(r.err, 0);
  assert_int_equal(r.status, 200);
  result_free(&r);
  rbl_http_req rq8 = {.ca_pem = slurp(tls_dir, "ca.pem"),
                      .cert_pem = slurp(tls_dir, "cli.pem"),
                      .key_pem = slurp(tls_dir, "cli.key")};
  tls_get_port(f, mtls_port, &rq8, &r);
  assert_int_equal(r.err, 0);
  assert_int_equal(r.status, 200);
  result_free(&r);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_get, setup, teardown),
      cmocka_unit_test_setup_teardown(test_pool_bounded, setup, teardown),
      cmocka_unit_test_setup_teardown(test_pool_queue_holds_no_handles, setup, teardown),
      cmocka_unit_test_setup_teardown(test_pool_queue, setup, teardown),
      cmocka_unit_test_setup_teardown(test_post_binary, setup, teardown),
      cmocka_unit_test_setup_teardown(test_keepalive, setup, teardown),
      cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
      cmocka_unit_test_setup_teardown(test_size_cap, setup, teardown),
      cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
      cmocka_unit_test_setup_teardown(test_retry_get_only, setup, teardown),
      cmocka_unit_test_setup_teardown(test_no_redirect, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_input, setup, teardown),
      cmocka_unit_test_setup_teardown(test_unix_missing, setup, teardown),
      cmocka_unit_test_setup_teardown(test_unix_denied, setup, teardown),
      cmocka_unit_test_setup_teardown(test_docker_ping, setup, teardown),
      cmocka_unit_test_setup_teardown(test_concurrent, setup, teardown),
      cmocka_unit_test_setup_teardown(test_close_in_flight, setup, teardown),
      cmocka_unit_test_setup_teardown(test_tls, tls_setup, tls_teardown),
  };
  return cmocka_run_group_tests_name("http", tests, NULL, NULL);
}
