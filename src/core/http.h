/* HTTP on the event loop: libcurl's multi interface driven by libuv. Free of Lua. */
#ifndef RBL_HTTP_H
#define RBL_HTTP_H

#include <stddef.h>
#include <uv.h>
#include <lua.h>

typedef struct rbl_http rbl_http;       /* one per loop: the curl multi, its timer and polls */
typedef struct rbl_http_op rbl_http_op; /* one request in flight */

typedef struct rbl_http_req {
  const char *method;         /* "GET", "POST", ... */
  const char *url;            /* http://, https://; with unix_socket the host is ignored */
  const char *unix_socket;    /* optional path of a unix socket endpoint */
  const char *const *headers; /* "Name: value" strings */
  size_t nheaders;
  const char *body; /* optional request body (copied) */
  size_t body_len;
  long timeout_ms;         /* whole request; 0 = none */
  long connect_timeout_ms; /* 0 = 10 s */
  size_t max_response;     /* body cap; 0 = 64 MiB; over it: RBL_ETOOBIG */
  int retries;             /* extra attempts for idempotent methods only, with backoff */
  /* TLS: files or in-memory PEM blobs */
  const char *ca_file, *ca_pem;
  const char *cert_file, *cert_pem;
  const char *key_file, *key_pem;
  int insecure; /* skip peer verification (only when the user set it) */
} rbl_http_req;

typedef struct rbl_http_resp {
  int err;          /* 0 or RBL_E* (connect, timeout, TLS, too big, canceled) */
  char errmsg[256]; /* cause when err != 0, naming the endpoint */
  long status;      /* HTTP status when err == 0 */
  char *body;       /* NUL-terminated, body_len bytes (may hold NULs); counted by the run's
                       byte budget: a stolen body is freed with rbl_budget_free */
  size_t body_len;
  char *content_type; /* or NULL */
  double total_ms;
  /* added: the final response's header block ("Name: value\r\n" lines, status line first),
   * NUL-terminated, or NULL; and how many attempts were made (1 + retries used). */
  char *headers; /* freed with rbl_budget_free, like body */
  size_t headers_len;
  int attempts;
} rbl_http_resp;

/* Called once per started request (never after rbl_http_cancel). resp is owned by the
 * http layer and valid only during the callback; steal resp->body by setting it NULL. */
typedef void (*rbl_http_cb)(void *ud, rbl_http_resp *resp);

int rbl_http_new(rbl_http **out, uv_loop_t *loop);
/* Starts a request; the callback runs from the loop. Returns 0 or RBL_E*. */
int rbl_http_start(rbl_http *h, const rbl_http_req *req, rbl_http_cb cb, void *ud,
                   rbl_http_op **op);
/* At most n requests in flight per API server ("host:port" or unix socket; default 32): a
 * wider fan-out waits in a FIFO per server, so connections and their TLS state stay bounded.
 * A request's timeout counts from when it is handed to curl. */
void rbl_http_set_max_per_host(rbl_http *h, int n);
/* curl handles alive (requests in flight plus up to 16 idle for reuse): a queued request
 * holds a copy of itself, not a handle, so this stays near n whatever the fan-out. */
int rbl_http_handles(const rbl_http *h);
/* Aborts a request in flight; its callback is not called. */
void rbl_http_cancel(rbl_http_op *op);
/* Cancels everything and closes the handles; memory is released in the close callbacks,
 * so the loop must run once more after this. */
void rbl_http_close(rbl_http *h);

/* Lua binding for host-side modules (lua/rbl/<module>.lua): http.request{method, url, unix_socket,
 * headers = {...}, body, timeout, tls = {...}} yields and returns {status, body, content_type,
 * total_ms}; transport errors raise rbl_raise(code, message naming the endpoint). */
int luaopen_rbl_http(lua_State *L);

#endif
