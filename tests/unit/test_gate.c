/* Tests for src/core/gate.c: the decision functions driven directly, with adversarial requests
 * and crafted answers (no Lua state, no network). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gate.h"

#define SOCK "/var/run/docker.sock"
#define KUBE "https://10.0.0.1:6443"
#define DV   "http://docker/v1.41"
#define IDA  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define IDB  "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define IDC  "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
#define EXA  "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"

static char why[1024];

/* The header lines of the next request; NULL: none, except that a PATCH gets the Content-Type rbl
 * sends for its body's shape (an array: a json patch; else a strategic merge patch). */
static const char *const *hdrs;
static size_t nhdrs;
static const char *const JSON_PATCH[] = {"Content-Type: application/json-patch+json"};
static const char *const STRATEGIC[] = {"Content-Type: application/strategic-merge-patch+json"};

static rbl_gate *gate(void) {
  rbl_gate *g = rbl_gate_new();
  assert_non_null(g);
  rbl_gate_set(g, "docker.host", "unix://" SOCK);
  rbl_gate_add_tenant(g, "prod-tenant-7", 0, NULL, 0);
  rbl_gate_add_tenant(g, "prod-tenant-77", 0, NULL, 0);
  const char *nss[] = {"team-b", "team-b-jobs"};
  rbl_gate_add_tenant(g, "tb", 1, nss, 2);
  assert_int_equal(rbl_gate_bind(g, "kube", KUBE "/", why, sizeof why), 0);
  return g;
}

/* One request: 0 allowed, -1 refused; *t receives the ticket. */
static int req_t(rbl_gate *g, const char *method, const char *url, size_t len, const char *sock,
                 const char *body, const char *tenant, rbl_gate_ticket *t) {
  rbl_gate_req r = {.method = method,
                    .url = url,
                    .url_len = len,
                    .unix_socket = sock,
                    .body = body,
                    .body_len = body ? strlen(body) : 0,
                    .headers = hdrs,
                    .nheaders = nhdrs,
                    .tenant = tenant};
  if (!hdrs && !strcmp(method, "PATCH")) {
    r.headers = body && body[0] == '[' ? JSON_PATCH : STRATEGIC;
    r.nheaders = 1;
  }
  why[0] = 0;
  return rbl_gate_http(g, &r, t, why, sizeof why);
}

static int dreq(rbl_gate *g, const char *method, const char *path, const char *tenant) {
  char url[2048];
  rbl_gate_ticket t;
  snprintf(url, sizeof url, "http://docker%s", path);
  return req_t(g, method, url, strlen(url), SOCK, NULL, tenant, &t);
}

static int kreq(rbl_gate *g, const char *method, const char *path, const char *body,
                const char *tenant) {
  char url[2048];
  rbl_gate_ticket t;
  snprintf(url, sizeof url, KUBE "%s", path);
  return req_t(g, method, url, strlen(url), NULL, body, tenant, &t);
}

/* A request and its answer: the ticket of the request goes with the answer. */
static int exchange(rbl_gate *g, const char *method, const char *url, const char *sock,
                    const char *tenant, long status, const char *answer) {
  rbl_gate_ticket t;
  if (req_t(g, method, url, strlen(url), sock, NULL, tenant, &t) != 0) return -2;
  return rbl_gate_answer(g, &t, status, answer, strlen(answer), why, sizeof why);
}

static char *inspect_answer(const char *id, const char *label) {
  static char b[512];
  if (label)
    snprintf(b, sizeof b, "{\"Id\":\"%s\",\"Config\":{\"Labels\":{\"rbl.tenant\":\"%s\"}}}", id,
             label);
  else
    snprintf(b, sizeof b, "{\"Id\":\"%s\",\"Config\":{\"Labels\":{}}}", id);
  return b;
}

/* Teaches the gate that tenant owns id (a resolution read answered by the "daemon"). */
static void learn_ctr(rbl_gate *g, const char *ref, const char *id, const char *tenant) {
  char url[256];
  snprintf(url, sizeof url, DV "/containers/%s/json", ref);
  assert_int_equal(exchange(g, "GET", url, SOCK, tenant, 200, inspect_answer(id, tenant)), 0);
}

static const char *DISCOVERY =
    "{\"kind\":\"APIGroupDiscoveryList\",\"items\":[{\"metadata\":{},\"versions\":[{\"version\":"
    "\"v1\",\"resources\":["
    "{\"resource\":\"configmaps\",\"scope\":\"Namespaced\"},"
    "{\"resource\":\"pods\",\"scope\":\"Namespaced\",\"subresources\":[{\"subresource\":\"log\"},"
    "{\"subresource\":\"exec\"},{\"subresource\":\"status\"}]},"
    "{\"resource\":\"serviceaccounts\",\"scope\":\"Namespaced\",\"subresources\":[{"
    "\"subresource\":\"token\"}]},"
    "{\"resource\":\"namespaces\",\"scope\":\"Cluster\"},"
    "{\"resource\":\"nodes\",\"scope\":\"Cluster\"}]}]}]}";
static const char *APIS_DISCOVERY =
    "{\"kind\":\"APIGroupDiscoveryList\",\"items\":["
    "{\"metadata\":{\"name\":\"apps\"},\"versions\":[{\"version\":\"v1\",\"resources\":["
    "{\"resource\":\"deployments\",\"scope\":\"Namespaced\",\"subresources\":[{\"subresource\":"
    "\"scale\"}]}]}]},"
    "{\"metadata\":{\"name\":\"rbac.authorization.k8s.io\"},\"versions\":[{\"version\":\"v1\","
    "\"resources\":[{\"resource\":\"clusterroles\",\"scope\":\"Cluster\"}]}]}]}";
static const char *NAMESPACES =
    "{\"items\":[{\"metadata\":{\"name\":\"prod-tenant-7\",\"labels\":{\"rbl.io/tenant\":"
    "\"prod-tenant-7\"}}},{\"metadata\":{\"name\":\"prod-tenant-7-jobs\",\"labels\":{\"rbl.io/"
    "tenant\":\"prod-tenant-7\"}}},{\"metadata\":{\"name\":\"prod-tenant-77\",\"labels\":{\"rbl."
    "io/tenant\":\"prod-tenant-77\"}}},{\"metadata\":{\"name\":\"stolen\",\"labels\":{}}}]}";

/* A gate that has seen discovery and prod-tenant-7's namespaces. */
static rbl_gate *kgate(void) {
  rbl_gate *g = gate();
  assert_int_equal(exchange(g, "GET", KUBE "/api", NULL, NULL, 200, DISCOVERY), 0);
  assert_int_equal(exchange(g, "GET", KUBE "/apis", NULL, NULL, 200, APIS_DISCOVERY), 0);
  assert_int_equal(exchange(g, "GET",
                            KUBE "/api/v1/namespaces?labelSelector=rbl.io%2Ftenant%3Dprod-tenant-7",
                            NULL, "prod-tenant-7", 200, NAMESPACES),
                   0);
  return g;
}

/* ---- endpoints ---- */

static void test_endpoints(void **st) {
  rbl_gate *g = gate();
  rbl_gate_ticket t;
  assert_int_equal(dreq(g, "GET", "/_ping", NULL), 0);
  assert_int_equal(dreq(g, "GET", "/v1.41/version", NULL), 0);
  assert_int_equal(dreq(g, "GET", "/info", NULL), 0);
  /* another unix socket, another host, a URL prefix trick */
  const char *u = "http://docker/_ping";
  assert_int_equal(req_t(g, "GET", u, strlen(u), "/tmp/evil.sock", NULL, NULL, &t), -1);
  assert_non_null(strstr(why, "cannot classify"));
  u = "https://evil.example/api";
  assert_int_equal(req_t(g, "GET", u, strlen(u), NULL, NULL, "prod-tenant-7", &t), -1);
  assert_non_null(strstr(why, "cannot classify"));
  u = "https://10.0.0.1:6443@evil.example/api";
  assert_int_equal(req_t(g, "GET", u, strlen(u), NULL, NULL, NULL, &t), -1);
  u = "https://10.0.0.1:64430/api";
  assert_int_equal(req_t(g, "GET", u, strlen(u), NULL, NULL, NULL, &t), -1);
  /* the kube server URL over the docker socket is not the kube class */
  u = KUBE "/api";
  assert_int_equal(req_t(g, "GET", u, strlen(u), SOCK, NULL, NULL, &t), -1);
  /* sealed bindings */
  assert_int_equal(rbl_gate_bind(g, "kube", KUBE, why, sizeof why), 0);
  assert_int_equal(rbl_gate_bind(g, "kube", "https://evil.example", why, sizeof why), -1);
  assert_int_equal(rbl_gate_bind(g, "prom", "https://x", why, sizeof why), -1);
  /* a query without the tenant's matcher: refused, named (test_prom has the rules) */
  rbl_gate_set(g, "prom.url", "https://prom.example:9090");
  u = "https://prom.example:9090/api/v1/query?query=up";
  assert_int_equal(req_t(g, "GET", u, strlen(u), NULL, NULL, "prod-tenant-7", &t), -1);
  assert_non_null(strstr(why, "prom"));
  rbl_gate_free(g);
  /* an unbound kube class: nothing is kube */
  g = rbl_gate_new();
  u = KUBE "/api";
  assert_int_equal(req_t(g, "GET", u, strlen(u), NULL, NULL, NULL, &t), -1);
  assert_int_equal(rbl_gate_bind(g, "kube", "https://h:1/?x", why, sizeof why), -1);
  assert_int_equal(rbl_gate_bind(g, "kube", "https://user@h:1", why, sizeof why), -1);
  rbl_gate_free(g);
  /* a docker tcp endpoint */
  g = rbl_gate_new();
  rbl_gate_set(g, "docker.host", "tcp://127.0.0.1:2376");
  u = "https://127.0.0.1:2376/_ping";
  assert_int_equal(req_t(g, "GET", u, strlen(u), NULL, NULL, NULL, &t), 0);
  u = "http://127.0.0.1:2376/_ping";
  assert_int_equal(req_t(g, "GET", u, strlen(u), NULL, NULL, NULL, &t), 0);
  u = "http://127.0.0.1:2377/_ping";
  assert_int_equal(req_t(g, "GET", u, strlen(u), NULL, NULL, NULL, &t), -1);
  rbl_gate_free(g);
}

static void test_url_hygiene(void **st) {
  rbl_gate *g = kgate();
  rbl_gate_ticket t;
  static const char *const bad[] = {
      "/api/v1/namespaces/prod-tenant-7/configmaps/a%2Fb",
      "/api/v1/namespaces/prod-tenant-7/configmaps/a%2fb",
      "/api/v1/namespaces/prod-tenant-7/configmaps/%2e%2e",
      "/api/v1/namespaces/prod-tenant-7/configmaps/../../prod-tenant-8/configmaps/x",
      "/api/v1/namespaces/../prod-tenant-8/configmaps/x",
      "/api/v1/namespaces/prod-tenant-7/configmaps/./x",
      "/api/v1/namespaces/prod-tenant-7//configmaps/x",
      "/api/v1/namespaces/prod-tenant-7/configmaps/x/",
      "/api/v1/namespaces/prod-tenant-7/configmaps/x;y",
      "/api/v1/namespaces/prod-tenant-7/configmaps/x#frag",
      "/api/v1/namespaces/prod-tenant-7/configmaps/x y",
      "/api/v1/namespaces/prod-tenant-7/configmaps/x\\..\\y",
      "/api/v1/namespaces/prod-tenant-7/configmaps/x\x01",
      "/api/v1/namespaces/prod-tenant-7/configmaps/\xc3\xa9",
      "//api/v1/namespaces/prod-tenant-7/configmaps",
      NULL};
  for (int i = 0; bad[i]; i++) {
    if (kreq(g, "GET", bad[i], NULL, "prod-tenant-7") != -1) fail_msg("allowed: %s", bad[i]);
  }
  /* an embedded NUL: the C string would stop early, the length does not */
  const char nul[] = KUBE "/api/v1/namespaces/prod-tenant-7/configmaps/db\0pool";
  assert_int_equal(req_t(g, "GET", nul, sizeof nul - 1, NULL, NULL, "prod-tenant-7", &t), -1);
  assert_non_null(strstr(why, "NUL"));
  /* docker paths too */
  assert_int_equal(dreq(g, "GET", "/v1.41/containers/..%2Fx/json", "prod-tenant-7"), -1);
  assert_int_equal(dreq(g, "GET", "/v1.41/containers/%2e%2e/json", "prod-tenant-7"), -1);
  assert_int_equal(dreq(g, "GET", "/v1.41/containers//json", "prod-tenant-7"), -1);
  assert_int_equal(dreq(g, "GET", "/v1.41/containers/x/json#y", "prod-tenant-7"), -1);
  assert_int_equal(dreq(g, "GET", "/v1.41/containers/../json", "prod-tenant-7"), -1);
  rbl_gate_free(g);
}

/* ---- Docker ---- */

static void test_docker_resolution(void **st) {
  rbl_gate *g = gate();
  rbl_gate_ticket t;
  /* the resolution read is allowed for a clean reference, its answer decides */
  assert_int_equal(dreq(g, "GET", "/v1.41/containers/web/json", "ta"), 0);
  assert_int_equal(dreq(g, "GET", "/v1.41/containers/web/json?size=1", "ta"), 0);
  assert_int_equal(dreq(g, "GET", "/v1.41/containers/web/json?size=1&size=1", "ta"), -1);
  assert_int_equal(dreq(g, "GET", "/v1.41/containers/web/json?x=1", "ta"), -1);
  assert_int_equal(dreq(g, "GET", "/v1.41/containers/.hidden/json", "ta"), -1);
  assert_int_equal(dreq(g, "GET", "/v1.41/containers/web/json", NULL), -1); /* no tenant */
  /* an answer labelled for another tenant is refused and teaches nothing for ta */
  const char *u = DV "/containers/web/json";
  assert_int_equal(exchange(g, "GET", u, SOCK, "ta", 200, inspect_answer(IDB, "tb")), -1);
  assert_non_null(strstr(why, "belongs to tenant tb, not ta"));
  assert_int_equal(dreq(g, "POST", "/v1.41/containers/" IDB "/exec", "ta"), -1);
  /* unlabelled */
  assert_int_equal(exchange(g, "GET", u, SOCK, "ta", 200, inspect_answer(IDC, NULL)), -1);
  assert_non_null(strstr(why, "belongs to no tenant"));
  assert_int_equal(dreq(g, "POST", "/v1.41/containers/" IDC "/restart", "ta"), -1);
  /* a label that only starts like the tenant */
  assert_int_equal(exchange(g, "GET", u, SOCK, "ta", 200, inspect_answer(IDC, "ta2")), -1);
  /* an answer for id A must not teach id B */
  u = DV "/containers/" IDA "/json";
  assert_int_equal(exchange(g, "GET", u, SOCK, "ta", 200, inspect_answer(IDB, "ta")), -1);
  assert_int_equal(dreq(g, "POST", "/v1.41/containers/" IDB "/exec", "ta"), -1);
  assert_int_equal(dreq(g, "POST", "/v1.41/containers/" IDA "/exec", "ta"), -1);
  /* no valid id in the answer */
  assert_int_equal(exchange(g, "GET", DV "/containers/web/json", SOCK, "ta", 200,
                            "{\"Id\":\"AAAA\",\"Config\":{\"Labels\":{\"rbl.tenant\":\"ta\"}}}"),
                   -1);
  /* the daemon says the prefix is ambiguous */
  assert_int_equal(exchange(g, "GET", DV "/containers/ab/json", SOCK, "ta", 500,
                            "{\"message\":\"Multiple IDs found with provided prefix: ab\"}"),
                   -1);
  assert_non_null(strstr(why, "ambiguous"));
  /* not found: nothing learned, nothing refused (host Lua reports it) */
  assert_int_equal(
      exchange(g, "GET", DV "/containers/nope/json", SOCK, "ta", 404, "{\"message\":\"No such\"}"),
      0);
  /* finally the tenant's own container: learned */
  learn_ctr(g, "web", IDA, "ta");
  assert_int_equal(dreq(g, "POST", "/v1.41/containers/" IDA "/exec", "ta"), 0);
  assert_int_equal(dreq(g, "POST", "/v1.41/containers/" IDA "/restart?t=10", "ta"), 0);
  assert_int_equal(
      dreq(g, "GET", "/v1.41/containers/" IDA "/logs?stdout=1&stderr=1&tail=all", "ta"), 0);
  assert_int_equal(dreq(g, "POST", "/v1.41/containers/" IDA "/kill", "ta"), 0);
  /* ... but not for another tenant, nor by name, prefix, or upper case */
  assert_int_equal(dreq(g, "POST", "/v1.41/containers/" IDA "/exec", "tb"), -1);
  assert_int_equal(dreq(g, "POST", "/v1.41/containers/web/exec", "ta"), -1);
  assert_int_equal(dreq(g, "POST", "/v1.41/containers/aaaaaaaaaaaa/exec", "ta"), -1);
  assert_int_equal(
      dreq(
          g, "POST",
          "/v1.41/containers/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA/exec",
          "ta"),
      -1);
  assert_int_equal(dreq(g, "DELETE", "/v1.41/containers/web", "ta"), -1);
  assert_int_equal(dreq(g, "POST", "/v1.41/containers/create", "ta"), -1);
  /* the answer for a full id ref names that id: allowed and learned */
  u = DV "/containers/" IDC "/json";
  assert_int_equal(exchange(g, "GET", u, SOCK, "tc", 200, inspect_answer(IDC, "tc")), 0);
  assert_int_equal(dreq(g, "POST", "/v1.41/containers/" IDC "/start", "tc"), 0);
  /* anything else the daemon offers */
  assert_int_equal(dreq(g, "POST", "/v1.41/images/create?fromImage=x", "ta"), -1);
  assert_int_equal(dreq(g, "GET", "/v1.41/volumes", "ta"), -1);
  assert_int_equal(dreq(g, "POST", "/v1.41/_ping", NULL), -1);
  (void)t;
  rbl_gate_free(g);
}

static void test_docker_exec_ids(void **st) {
  rbl_gate *g = gate();
  learn_ctr(g, "web", IDA, "ta");
  learn_ctr(g, "b", IDB, "tb");
  /* an exec id never learned */
  assert_int_equal(dreq(g, "POST", "/v1.41/exec/" EXA "/start", "ta"), -1);
  /* a 200 is not the 201 the daemon sends for a created exec */
  const char *ans = "{\"Id\":\"" EXA "\"}";
  assert_int_equal(exchange(g, "POST", DV "/containers/" IDA "/exec", SOCK, "ta", 200, ans), 0);
  assert_int_equal(dreq(g, "POST", "/v1.41/exec/" EXA "/start", "ta"), -1);
  assert_int_equal(exchange(g, "POST", DV "/containers/" IDA "/exec", SOCK, "ta", 201, ans), 0);
  assert_int_equal(dreq(g, "POST", "/v1.41/exec/" EXA "/start", "ta"), 0);
  assert_int_equal(dreq(g, "GET", "/v1.41/exec/" EXA "/json", "ta"), 0);
  assert_int_equal(dreq(g, "POST", "/v1.41/exec/" EXA "/start", "tb"), -1);
  assert_int_equal(dreq(g, "POST", "/v1.41/exec/" EXA "/resize", "ta"), -1);
  assert_int_equal(dreq(g, "GET", "/v1.41/exec/eeeeeeeeeeee/json", "ta"), -1);
  /* tb's exec on tb's container does not open it for ta */
  const char *exb = "{\"Id\":\"dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd\"}";
  assert_int_equal(exchange(g, "POST", DV "/containers/" IDB "/exec", SOCK, "tb", 201, exb), 0);
  assert_int_equal(
      dreq(g, "POST",
           "/v1.41/exec/dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd/start",
           "ta"),
      -1);
  rbl_gate_free(g);
}

static void test_docker_list(void **st) {
  rbl_gate *g = gate();
  /* filters={"label":["rbl.tenant=ta"]} */
  const char *ok = "/v1.41/containers/json?filters=%7B%22label%22%3A%5B%22rbl.tenant%3Dta%22%5D%7D";
  assert_int_equal(dreq(g, "GET", ok, "ta"), 0);
  char u[512];
  snprintf(u, sizeof u, "%s&all=1&limit=5", ok);
  assert_int_equal(dreq(g, "GET", u, "ta"), 0);
  assert_int_equal(dreq(g, "GET", ok, "tb"), -1); /* the filter names another tenant */
  assert_int_equal(dreq(g, "GET", "/v1.41/containers/json", "ta"), -1);
  assert_int_equal(dreq(g, "GET", "/v1.41/containers/json?all=1", "ta"), -1);
  snprintf(u, sizeof u, "%s&filters=%%7B%%7D", ok); /* smuggled second filters */
  assert_int_equal(dreq(g, "GET", u, "ta"), -1);
  snprintf(u, sizeof u, "%s&since=x", ok);
  assert_int_equal(dreq(g, "GET", u, "ta"), -1);
  /* two entries for the label key, an existence-only entry, a prefix of the tenant */
  assert_int_equal(
      dreq(g, "GET",
           "/v1.41/containers/json?filters=%7B%22label%22%3A%5B%22rbl.tenant%3Dta%22%2C%22rbl."
           "tenant%3Dtb%22%5D%7D",
           "ta"),
      -1);
  assert_int_equal(dreq(g, "GET",
                        "/v1.41/containers/json?filters=%7B%22label%22%3A%5B%22rbl.tenant%22%5D%7D",
                        "ta"),
                   -1);
  assert_int_equal(
      dreq(g, "GET",
           "/v1.41/containers/json?filters=%7B%22label%22%3A%5B%22rbl.tenant%3Dt%22%5D%7D", "ta"),
      -1);
  /* another filter key, duplicate JSON keys */
  assert_int_equal(dreq(g, "GET",
                        "/v1.41/containers/json?filters=%7B%22label%22%3A%5B%22rbl.tenant%3Dta%22%"
                        "5D%2C%22name%22%3A%5B%22x%22%5D%7D",
                        "ta"),
                   -1);
  assert_int_equal(dreq(g, "GET",
                        "/v1.41/containers/json?filters=%7B%22label%22%3A%5B%22rbl.tenant%3Dta%22%"
                        "5D%2C%22label%22%3A%5B%5D%7D",
                        "ta"),
                   -1);
  /* learning from the list answer */
  char url[600], ans[600];
  snprintf(url, sizeof url, "http://docker%s", ok);
  snprintf(ans, sizeof ans, "[{\"Id\":\"%s\",\"Labels\":{\"rbl.tenant\":\"ta\"}}]", IDA);
  assert_int_equal(exchange(g, "GET", url, SOCK, "ta", 200, ans), 0);
  assert_int_equal(dreq(g, "POST", "/v1.41/containers/" IDA "/restart", "ta"), 0);
  /* a list answer holding another tenant's container: refused, nothing learned for ta */
  snprintf(ans, sizeof ans,
           "[{\"Id\":\"%s\",\"Labels\":{\"rbl.tenant\":\"ta\"}},{\"Id\":\"%s\",\"Labels\":{\"rbl."
           "tenant\":\"tb\"}}]",
           IDC, IDB);
  assert_int_equal(exchange(g, "GET", url, SOCK, "ta", 200, ans), -1);
  assert_int_equal(dreq(g, "POST", "/v1.41/containers/" IDB "/restart", "ta"), -1);
  rbl_gate_free(g);
}

static void test_docker_labels_config(void **st) {
  rbl_gate *g = gate();
  rbl_gate_set(g, "labels.docker", "corp/owner");
  const char *u = DV "/containers/web/json";
  /* the default key no longer counts */
  assert_int_equal(exchange(g, "GET", u, SOCK, "ta", 200, inspect_answer(IDA, "ta")), -1);
  assert_int_equal(exchange(g, "GET", u, SOCK, "ta", 200,
                            "{\"Id\":\"" IDA "\",\"Config\":{\"Labels\":{\"corp/owner\":\"ta\"}}}"),
                   0);
  assert_int_equal(dreq(g, "POST", "/v1.41/containers/" IDA "/exec", "ta"), 0);
  rbl_gate_free(g);
}

/* ---- Kubernetes ---- */

static void test_kube_discovery_and_tenant_free(void **st) {
  rbl_gate *g = gate();
  assert_int_equal(kreq(g, "GET", "/version", NULL, NULL), 0);
  assert_int_equal(kreq(g, "GET", "/api", NULL, NULL), 0);
  assert_int_equal(kreq(g, "GET", "/apis", NULL, NULL), 0);
  assert_int_equal(kreq(g, "GET", "/api/v1", NULL, NULL), 0);
  assert_int_equal(kreq(g, "GET", "/apis/apps", NULL, NULL), 0);
  assert_int_equal(kreq(g, "GET", "/apis/apps/v1", NULL, NULL), 0);
  assert_int_equal(kreq(g, "GET", "/openapi/v2", NULL, NULL), 0);
  assert_int_equal(kreq(g, "POST", "/api", NULL, NULL), -1);
  /* before discovery nothing is classified */
  assert_int_equal(kreq(g, "GET", "/api/v1/nodes", NULL, "prod-tenant-7"), -1);
  assert_non_null(strstr(why, "cannot classify"));
  /* a legacy APIResourceList teaches its own group only */
  assert_int_equal(
      exchange(g, "GET", KUBE "/apis/apps/v1", NULL, NULL, 200,
               "{\"kind\":\"APIResourceList\",\"groupVersion\":\"batch/v1\",\"resources\":[{"
               "\"name\":\"jobs\",\"namespaced\":true}]}"),
      0);
  assert_int_equal(kreq(g, "GET", "/apis/apps/v1/namespaces/team-b/jobs", NULL, "tb"), -1);
  assert_int_equal(kreq(g, "GET", "/apis/batch/v1/namespaces/team-b/jobs", NULL, "tb"), -1);
  assert_int_equal(
      exchange(g, "GET", KUBE "/apis/batch/v1", NULL, NULL, 200,
               "{\"kind\":\"APIResourceList\",\"groupVersion\":\"batch/v1\",\"resources\":["
               "{\"name\":\"jobs\",\"namespaced\":true},{\"name\":\"jobs/status\",\"namespaced\":"
               "true}]}"),
      0);
  assert_int_equal(kreq(g, "GET", "/apis/batch/v1/namespaces/team-b/jobs", NULL, "tb"), 0);
  assert_int_equal(kreq(g, "GET", "/apis/batch/v1/namespaces/team-b/jobs/j/status", NULL, "tb"), 0);
  assert_int_equal(kreq(g, "GET", "/apis/batch/v1/namespaces/team-b/jobs/j/other", NULL, "tb"), -1);
  /* an unbound call may do the tenant-free reads only */
  assert_int_equal(exchange(g, "GET", KUBE "/api", NULL, NULL, 200, DISCOVERY), 0);
  assert_int_equal(kreq(g, "GET", "/api/v1/nodes", NULL, NULL), -1);
  assert_int_equal(kreq(g, "GET", "/apis/batch/v1/namespaces/team-b/jobs", NULL, NULL), -1);
  rbl_gate_free(g);
}

static void test_kube_namespaces(void **st) {
  rbl_gate *g = kgate();
  assert_int_equal(
      kreq(g, "GET", "/api/v1/namespaces/prod-tenant-7/configmaps/x", NULL, "prod-tenant-7"), 0);
  assert_int_equal(
      kreq(g, "GET", "/api/v1/namespaces/prod-tenant-7-jobs/configmaps", NULL, "prod-tenant-7"), 0);
  /* a prefix is not ownership, either way round */
  assert_int_equal(
      kreq(g, "GET", "/api/v1/namespaces/prod-tenant-77/configmaps/x", NULL, "prod-tenant-7"), -1);
  assert_non_null(strstr(why, "does not belong to tenant prod-tenant-7"));
  assert_int_equal(
      kreq(g, "GET", "/api/v1/namespaces/prod-tenant-7/configmaps/x", NULL, "prod-tenant-77"), -1);
  assert_int_equal(
      kreq(g, "GET", "/api/v1/namespaces/prod-tenant/configmaps/x", NULL, "prod-tenant-7"), -1);
  assert_int_equal(
      kreq(g, "GET", "/api/v1/namespaces/kube-system/configmaps", NULL, "prod-tenant-7"), -1);
  /* an unlabelled namespace in the answer taught nothing */
  assert_int_equal(kreq(g, "GET", "/api/v1/namespaces/stolen/configmaps", NULL, "prod-tenant-7"),
                   -1);
  /* prod-tenant-77's namespace was in prod-tenant-7's answer: it taught nothing for 77 */
  assert_int_equal(
      kreq(g, "GET", "/api/v1/namespaces/prod-tenant-77/configmaps", NULL, "prod-tenant-77"), -1);
  /* the label read for another tenant's selector teaches nothing */
  assert_int_equal(exchange(g, "GET",
                            KUBE "/api/v1/namespaces?labelSelector=rbl.io%2Ftenant%3Dprod-tenant-8",
                            NULL, "prod-tenant-7", 200,
                            "{\"items\":[{\"metadata\":{\"name\":\"prod-tenant-8\",\"labels\":{"
                            "\"rbl.io/tenant\":\"prod-tenant-8\"}}}]}"),
                   0);
  assert_int_equal(
      kreq(g, "GET", "/api/v1/namespaces/prod-tenant-8/configmaps", NULL, "prod-tenant-7"), -1);
  /* a config list is authoritative: the label read adds nothing */
  assert_int_equal(kreq(g, "GET", "/api/v1/namespaces/team-b/configmaps", NULL, "tb"), 0);
  assert_int_equal(exchange(g, "GET", KUBE "/api/v1/namespaces?labelSelector=rbl.io/tenant=tb",
                            NULL, "tb", 200,
                            "{\"items\":[{\"metadata\":{\"name\":\"team-x\",\"labels\":{\"rbl.io/"
                            "tenant\":\"tb\"}}}]}"),
                   0);
  assert_int_equal(kreq(g, "GET", "/api/v1/namespaces/team-x/configmaps", NULL, "tb"), -1);
  /* the Namespace object itself */
  assert_int_equal(kreq(g, "GET", "/api/v1/namespaces/prod-tenant-7", NULL, "prod-tenant-7"), 0);
  assert_int_equal(kreq(g, "GET", "/api/v1/namespaces/prod-tenant-8", NULL, "prod-tenant-7"), -1);
  assert_int_equal(kreq(g, "PATCH", "/api/v1/namespaces/prod-tenant-8",
                        "{\"metadata\":{\"labels\":{\"x\":\"y\"}}}", "prod-tenant-7"),
                   -1);
  assert_int_equal(kreq(g, "PATCH", "/api/v1/namespaces/prod-tenant-7",
                        "{\"metadata\":{\"labels\":{\"x\":\"y\"}}}", "prod-tenant-7"),
                   -1); /* not read, not dry-run first: see test_kube_tenant_label */
  assert_int_equal(kreq(g, "DELETE", "/api/v1/namespaces/prod-tenant-7", NULL, "prod-tenant-7"),
                   -1);
  rbl_gate_free(g);
}

/* A PATCH of the Namespace and its answer (the ticket of the request goes with the answer). */
static int ns_patch(rbl_gate *g, int dry, const char *body, long status, const char *answer) {
  char url[256];
  rbl_gate_ticket t;
  snprintf(url, sizeof url, KUBE "/api/v1/namespaces/prod-tenant-7?fieldManager=rbl%s",
           dry ? "&dryRun=All" : "");
  if (req_t(g, "PATCH", url, strlen(url), NULL, body, "prod-tenant-7", &t) != 0) return -2;
  return rbl_gate_answer(g, &t, status, answer, strlen(answer), why, sizeof why);
}

#define NS7(rv, labels)                                                                            \
  "{\"metadata\":{\"name\":\"prod-tenant-7\",\"resourceVersion\":\"" rv "\",\"labels\":" labels "}}"

/* The tenant label of a Namespace is decided by the patch's effect: a dry run pinned to the
 * version read, its answer compared with the read, then exactly those bytes once. */
static void test_kube_tenant_label(void **st) {
  rbl_gate *g = kgate();
  const char *keep = "{\"metadata\":{\"resourceVersion\":\"5\",\"labels\":{\"team\":\"x\"}}}";
  const char *kept = NS7("5", "{\"rbl.io/tenant\":\"prod-tenant-7\",\"team\":\"x\"}");
  const char *gone = NS7("5", "{\"team\":\"x\"}");
  const char *other = NS7("5", "{\"rbl.io/tenant\":\"prod-tenant-8\"}");
  /* nothing read yet: not even a dry run */
  assert_int_equal(ns_patch(g, 1, keep, 200, kept), -2);
  assert_non_null(strstr(why, "needs the object read first"));
  assert_int_equal(exchange(g, "GET", KUBE "/api/v1/namespaces/prod-tenant-7", NULL,
                            "prod-tenant-7", 200,
                            NS7("5", "{\"rbl.io/tenant\":\"prod-tenant-7\"}")),
                   0);
  /* a real patch that was not dry-run first */
  assert_int_equal(ns_patch(g, 0, keep, 200, kept), -2);
  assert_non_null(strstr(why, "not first sent as a dry run"));
  /* the dry run must pin the version read; no duplicate names; readable */
  static const char *const unpinned[] = {
      "{\"metadata\":{\"labels\":{\"team\":\"x\"}}}",
      "{\"metadata\":{\"resourceVersion\":\"4\",\"labels\":{\"team\":\"x\"}}}",
      "[{\"op\":\"add\",\"path\":\"/metadata/labels/team\",\"value\":\"x\"},"
      "{\"op\":\"test\",\"path\":\"/metadata/resourceVersion\",\"value\":\"5\"}]",
      "not json",
      "\"5\"",
      NULL};
  for (int i = 0; unpinned[i]; i++)
    if (ns_patch(g, 1, unpinned[i], 200, kept) != -2) fail_msg("allowed: %s", unpinned[i]);
  /* duplicate member names: cJSON reads the first, the API server the last */
  assert_int_equal(ns_patch(g, 1,
                            "{\"metadata\":{\"resourceVersion\":\"5\",\"labels\":{\"x\":\"y\"}},"
                            "\"metadata\":{\"labels\":{\"rbl.io/tenant\":null}}}",
                            200, kept),
                   -2);
  assert_non_null(strstr(why, "member name twice"));
  assert_int_equal(ns_patch(g, 1,
                            "{\"metadata\":{\"resourceVersion\":\"5\",\"labels\":{\"rbl.io/"
                            "tenant\":\"a\",\"rbl.io/tenant\":\"prod-tenant-7\"}}}",
                            200, kept),
                   -2);
  /* every strategic-merge directive is judged by the dry run's answer, whatever its syntax */
  static const char *const directives[] = {
      "{\"metadata\":{\"resourceVersion\":\"5\",\"labels\":{\"$patch\":\"replace\"}}}",
      "{\"metadata\":{\"resourceVersion\":\"5\",\"labels\":{\"$patch\":\"delete\"}}}",
      "{\"metadata\":{\"resourceVersion\":\"5\",\"$patch\":\"replace\"}}",
      "{\"$patch\":\"replace\",\"metadata\":{\"resourceVersion\":\"5\"}}",
      "{\"metadata\":{\"resourceVersion\":\"5\",\"$retainKeys\":[\"name\"]}}",
      "{\"metadata\":{\"resourceVersion\":\"5\",\"labels\":{\"$retainKeys\":[\"team\"]}}}",
      "{\"metadata\":{\"resourceVersion\":\"5\",\"$setElementOrder/labels\":[]}}",
      "{\"metadata\":{\"resourceVersion\":\"5\",\"$deleteFromPrimitiveList/labels\":[]}}",
      "[{\"op\":\"test\",\"path\":\"/metadata/resourceVersion\",\"value\":\"5\"},"
      "{\"op\":\"move\",\"from\":\"/metadata/labels\",\"path\":\"/metadata/annotations\"}]",
      NULL};
  for (int i = 0; directives[i]; i++) {
    /* the dry run goes out; its answer shows the label gone or changed: refused */
    if (ns_patch(g, 1, directives[i], 200, gone) != -1)
      fail_msg("answer allowed: %s", directives[i]);
    assert_non_null(strstr(why, "would change the tenant label rbl.io/tenant"));
    if (ns_patch(g, 1, directives[i], 200, other) != -1)
      fail_msg("answer allowed: %s", directives[i]);
    /* and the real patch of those bytes is not approved */
    if (ns_patch(g, 0, directives[i], 200, kept) != -2) fail_msg("real allowed: %s", directives[i]);
    /* the same directive whose dry run keeps the label is fine */
    assert_int_equal(ns_patch(g, 1, directives[i], 200, kept), 0);
    assert_int_equal(ns_patch(g, 0, directives[i], 200, kept), 0);
    /* once: the approval is used up */
    assert_int_equal(ns_patch(g, 0, directives[i], 200, kept), -2);
  }
  /* approved bytes only: another body after the dry run is refused */
  assert_int_equal(ns_patch(g, 1, keep, 200, kept), 0);
  assert_int_equal(ns_patch(g, 0, "{\"metadata\":{\"resourceVersion\":\"5\"}}", 200, kept), -2);
  /* a real answer that shows the label changed anyway (the server read another patch): refused */
  assert_int_equal(ns_patch(g, 1, keep, 200, kept), 0);
  assert_int_equal(ns_patch(g, 0, keep, 200, gone), -1);
  assert_non_null(strstr(why, "changed the tenant label"));
  /* a failed dry run approves nothing */
  assert_int_equal(ns_patch(g, 1, keep, 409, "{}"), 0);
  assert_int_equal(ns_patch(g, 0, keep, 200, kept), -2);
  /* a new read: approvals were for the old version */
  assert_int_equal(ns_patch(g, 1, keep, 200, kept), 0);
  assert_int_equal(exchange(g, "GET", KUBE "/api/v1/namespaces/prod-tenant-7", NULL,
                            "prod-tenant-7", 200,
                            NS7("6", "{\"rbl.io/tenant\":\"prod-tenant-7\"}")),
                   0);
  assert_int_equal(ns_patch(g, 0, keep, 200, kept), -2);
  assert_int_equal(ns_patch(g, 1, keep, 200, kept), -2); /* pins 5, the object is at 6 */
  /* a json patch pinned by a first test op */
  const char *jp = "[{\"op\":\"test\",\"path\":\"/metadata/resourceVersion\",\"value\":\"6\"},"
                   "{\"op\":\"add\",\"path\":\"/metadata/labels/team\",\"value\":\"x\"}]";
  assert_int_equal(ns_patch(g, 1, jp, 200, NS7("6", "{\"rbl.io/tenant\":\"prod-tenant-7\"}")), 0);
  assert_int_equal(ns_patch(g, 0, jp, 200, NS7("7", "{\"rbl.io/tenant\":\"prod-tenant-7\"}")), 0);
  /* the config may allow label changes: then the gate does not look */
  rbl_gate_set(g, "kube.allow_tenant_label_change", "1");
  assert_int_equal(kreq(g, "PATCH", "/api/v1/namespaces/prod-tenant-7",
                        "{\"metadata\":{\"labels\":{\"rbl.io/tenant\":\"prod-tenant-8\"}}}",
                        "prod-tenant-7"),
                   0);
  rbl_gate_free(g);
}

static void test_kube_resources(void **st) {
  rbl_gate *g = kgate();
  const char *t7 = "prod-tenant-7";
  /* namespaced resources across all namespaces */
  assert_int_equal(kreq(g, "GET", "/api/v1/pods", NULL, t7), -1);
  assert_non_null(strstr(why, "namespaced"));
  assert_int_equal(kreq(g, "GET", "/apis/apps/v1/deployments", NULL, t7), -1);
  /* unknown resources, versions, groups */
  assert_int_equal(kreq(g, "GET", "/api/v1/namespaces/prod-tenant-7/secrets", NULL, t7), -1);
  assert_non_null(strstr(why, "cannot classify"));
  assert_int_equal(kreq(g, "GET", "/apis/apps/v2/namespaces/prod-tenant-7/deployments", NULL, t7),
                   -1);
  assert_int_equal(kreq(g, "GET", "/apis/evil/v1/namespaces/prod-tenant-7/deployments", NULL, t7),
                   -1);
  /* a cluster-scoped resource addressed in a namespace */
  assert_int_equal(kreq(g, "GET", "/api/v1/namespaces/prod-tenant-7/nodes", NULL, t7), -1);
  /* too deep */
  assert_int_equal(kreq(g, "GET", "/api/v1/namespaces/prod-tenant-7/pods/p/log/x", NULL, t7), -1);
  /* subresources */
  assert_int_equal(kreq(g, "GET", "/api/v1/namespaces/prod-tenant-7/pods/p/log", NULL, t7), 0);
  /* kube.logs: read only, the tenant's namespace only, its query parameters */
  assert_int_equal(kreq(g, "GET",
                        "/api/v1/namespaces/prod-tenant-7/pods/p/log?container=app&tailLines=10&"
                        "sinceSeconds=60&previous=true&limitBytes=1048576&timestamps=true",
                        NULL, t7),
                   0);
  assert_int_equal(kreq(g, "POST", "/api/v1/namespaces/prod-tenant-7/pods/p/log", "{}", t7), -1);
  assert_non_null(strstr(why, "only read"));
  assert_int_equal(kreq(g, "GET", "/api/v1/namespaces/prod-tenant-8/pods/p/log", NULL, t7), -1);
  assert_int_equal(kreq(g, "GET", "/api/v1/namespaces/prod-tenant-77/pods/p/log", NULL, t7), -1);
  assert_int_equal(kreq(g, "GET", "/api/v1/pods/p/log", NULL, t7), -1);
  assert_int_equal(
      kreq(g, "GET", "/api/v1/namespaces/prod-tenant-7/pods/p/log?follow=true", NULL, t7), -1);
  /* kube.delete of a pod: the tenant's namespace only */
  assert_int_equal(kreq(g, "DELETE", "/api/v1/namespaces/prod-tenant-7/pods/p",
                        "{\"preconditions\":{\"uid\":\"u\"}}", t7),
                   0);
  assert_int_equal(kreq(g, "DELETE", "/api/v1/namespaces/prod-tenant-8/pods/p", NULL, t7), -1);
  assert_int_equal(kreq(g, "DELETE", "/api/v1/pods/p", NULL, t7), -1);
  /* kube.events: a list in the tenant's namespace; a field selector may not point elsewhere */
  assert_int_equal(exchange(g, "GET", KUBE "/api", NULL, NULL, 200,
                            "{\"kind\":\"APIGroupDiscoveryList\",\"items\":[{\"metadata\":{},"
                            "\"versions\":[{\"version\":\"v1\",\"resources\":[{\"resource\":"
                            "\"events\",\"scope\":\"Namespaced\"}]}]}]}"),
                   0);
  const char *ev = "/api/v1/namespaces/prod-tenant-7/events";
  char u[300];
  assert_int_equal(kreq(g, "GET", ev, NULL, t7), 0);
  snprintf(u, sizeof u, "%s?fieldSelector=involvedObject.kind%%3DPod%%2CinvolvedObject.name%%3Dp",
           ev);
  assert_int_equal(kreq(g, "GET", u, NULL, t7), 0);
  snprintf(u, sizeof u, "%s?fieldSelector=involvedObject.namespace%%3Dprod-tenant-7", ev);
  assert_int_equal(kreq(g, "GET", u, NULL, t7), 0);
  snprintf(u, sizeof u, "%s?fieldSelector=involvedObject.namespace%%3D%%3Dprod-tenant-7", ev);
  assert_int_equal(kreq(g, "GET", u, NULL, t7), 0);
  static const char *const other[] = {
      "involvedObject.namespace%3Dprod-tenant-8",
      "involvedObject.name%3Dp%2CinvolvedObject.namespace%3Dprod-tenant-8",
      "involvedObject.namespace!%3Dprod-tenant-7",
      "involvedObject.namespace%3Dprod-tenant-77",
      "involvedObject.namespace%3Dprod-tenant-",
      "involvedObject.namespace",
      "regarding.namespace%3Dkube-system",
      "involvedObject.namespace%3Dprod-tenant-7%2CinvolvedObject.namespace%3Dprod-tenant-8",
      NULL};
  for (int i = 0; other[i]; i++) {
    snprintf(u, sizeof u, "%s?fieldSelector=%s", ev, other[i]);
    assert_int_equal(kreq(g, "GET", u, NULL, t7), -1);
  }
  assert_int_equal(kreq(g, "GET", "/api/v1/events", NULL, t7), -1);
  assert_int_equal(kreq(g, "GET",
                        "/api/v1/events?fieldSelector=involvedObject.namespace%3Dprod-tenant-7",
                        NULL, t7),
                   -1);
  assert_int_equal(kreq(g, "GET", "/api/v1/namespaces/prod-tenant-8/events", NULL, t7), -1);
  assert_int_equal(kreq(g, "POST", "/api/v1/namespaces/prod-tenant-7/pods/p/exec", NULL, t7), -1);
  assert_non_null(strstr(why, "kube.allow_subresources"));
  assert_int_equal(kreq(g, "GET", "/api/v1/namespaces/prod-tenant-7/pods/p/attach", NULL, t7), -1);
  assert_int_equal(
      kreq(g, "POST", "/api/v1/namespaces/prod-tenant-7/serviceaccounts/s/token", NULL, t7), -1);
  assert_int_equal(kreq(g, "GET", "/api/v1/namespaces/prod-tenant-7/configmaps/c/b", NULL, t7), -1);
  assert_int_equal(
      kreq(g, "PATCH", "/apis/apps/v1/namespaces/prod-tenant-7/deployments/api/scale", "{}", t7),
      0);
  rbl_gate_add(g, "kube.allow_subresources", "exec");
  assert_int_equal(kreq(g, "POST", "/api/v1/namespaces/prod-tenant-7/pods/p/exec", NULL, t7), 0);
  assert_int_equal(kreq(g, "POST", "/api/v1/namespaces/prod-tenant-8/pods/p/exec", NULL, t7), -1);
  /* cluster-scoped: reads yes, writes only when the config lists the resource */
  assert_int_equal(kreq(g, "GET", "/api/v1/nodes", NULL, t7), 0);
  assert_int_equal(kreq(g, "GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles/edit", NULL, t7),
                   0);
  assert_int_equal(
      kreq(g, "PATCH", "/apis/rbac.authorization.k8s.io/v1/clusterroles/edit", "{}", t7), -1);
  assert_non_null(strstr(why, "kube.allow_cluster_writes"));
  assert_int_equal(kreq(g, "DELETE", "/api/v1/nodes/n1", NULL, t7), -1);
  assert_int_equal(kreq(g, "POST", "/api/v1/namespaces", "{}", t7), -1);
  rbl_gate_add(g, "kube.allow_cluster_writes", "nodes");
  assert_int_equal(kreq(g, "PATCH", "/api/v1/nodes/n1", "{}", t7), 0);
  assert_int_equal(
      kreq(g, "PATCH", "/apis/rbac.authorization.k8s.io/v1/clusterroles/edit", "{}", t7), -1);
  /* methods */
  assert_int_equal(kreq(g, "TRACE", "/api/v1/nodes", NULL, t7), -1);
  rbl_gate_free(g);
}

/* A PATCH with these header lines and this body, of a ConfigMap in prod-tenant-7 (path: another
 * target under KUBE, or NULL). */
static int hpatch(rbl_gate *g, const char *path, const char *h1, const char *h2, const char *body) {
  const char *h[2] = {h1, h2};
  hdrs = h;
  nhdrs = h2 ? 2 : h1 ? 1 : 0;
  if (!h1) hdrs = h + 1; /* an empty list, not the default */
  int rc = kreq(g, "PATCH", path ? path : "/api/v1/namespaces/prod-tenant-7/configmaps/c", body,
                "prod-tenant-7");
  hdrs = NULL;
  nhdrs = 0;
  return rc;
}

#define CT_JSON  "Content-Type: application/json-patch+json"
#define CT_MERGE "Content-Type: application/merge-patch+json"
#define CT_SMP   "Content-Type: application/strategic-merge-patch+json"

/* Every PATCH is read as the patch type its Content-Type declares (read as the API server reads
 * it), and its body checked by that type: nothing may reach metadata.namespace or the tenant
 * label of an object, whatever the type, the encoding of a pointer or a directive. */
static void test_kube_patch_types(void **st) {
  rbl_gate *g = kgate();
  const char *ok_merge = "{\"data\":{\"x\":\"1\"}}";
  const char *ok_json = "[{\"op\":\"replace\",\"path\":\"/data/x\",\"value\":\"1\"}]";
  assert_int_equal(hpatch(g, NULL, CT_MERGE, NULL, ok_merge), 0);
  assert_int_equal(hpatch(g, NULL, CT_SMP, NULL, ok_merge), 0);
  assert_int_equal(hpatch(g, NULL, CT_JSON, NULL, ok_json), 0);
  assert_int_equal(hpatch(g, NULL, "content-type: application/merge-patch+json", NULL, ok_merge),
                   0);
  assert_int_equal(
      hpatch(g, NULL, "Content-Type:application/merge-patch+json; charset=utf-8", NULL, ok_merge),
      0);
  /* the type: missing, empty, twice, malformed, unknown, or not the server's exact spelling */
  static const char *const bad_types[][2] = {
      {NULL, NULL},
      {"Accept: application/json", NULL},
      {"Content-Type:", NULL},
      {"Content-Type;", NULL},
      {"Content-Type:   ", NULL},
      {CT_MERGE, CT_JSON},
      {CT_MERGE, "content-type: application/merge-patch+json"},
      {"Content-Type : application/merge-patch+json", NULL},
      {" Content-Type: application/merge-patch+json", NULL},
      {"Content-Type: application/apply-patch+yaml", NULL},
      {"Content-Type: application/apply-patch+cbor", NULL},
      {"Content-Type: application/json", NULL},
      {"Content-Type: application/x-www-form-urlencoded", NULL},
      {"Content-Type: Application/Merge-Patch+JSON", NULL},
      {"Content-Type: application/merge-patch+json ;charset=utf-8", NULL},
      {"Content-Type: application/merge-patch+json+json", NULL},
      {"Content-Type: ;application/merge-patch+json", NULL},
  };
  for (size_t i = 0; i < sizeof bad_types / sizeof bad_types[0]; i++)
    if (hpatch(g, NULL, bad_types[i][0], bad_types[i][1], ok_merge) != -1)
      fail_msg("type allowed: %s / %s", bad_types[i][0] ? bad_types[i][0] : "(none)",
               bad_types[i][1] ? bad_types[i][1] : "");
  assert_int_equal(hpatch(g, NULL, NULL, NULL, ok_merge), -1);
  assert_non_null(strstr(why, "without a Content-Type"));
  assert_int_equal(hpatch(g, NULL, "Content-Type: application/apply-patch+yaml", NULL, ok_merge),
                   -1);
  assert_non_null(strstr(why, "apply-patch+yaml"));
  /* the body must have the type's shape and be read as the server reads it */
  assert_int_equal(hpatch(g, NULL, CT_JSON, NULL, ok_merge), -1);
  assert_int_equal(hpatch(g, NULL, CT_MERGE, NULL, ok_json), -1);
  assert_int_equal(hpatch(g, NULL, CT_SMP, NULL, ok_json), -1);
  assert_int_equal(hpatch(g, NULL, CT_MERGE, NULL, "metadata: {namespace: x}"), -1);
  assert_int_equal(hpatch(g, NULL, CT_MERGE, NULL, NULL), -1);
  /* json patch: every path (and a move's from) that reaches metadata.namespace or the label */
  static const char *const bad_json[] = {
      "[{\"op\":\"replace\",\"path\":\"/metadata/namespace\",\"value\":\"prod-tenant-8\"}]",
      "[{\"op\":\"add\",\"path\":\"/metadata/namespace\",\"value\":\"prod-tenant-8\"}]",
      "[{\"op\":\"remove\",\"path\":\"/metadata/namespace\"}]",
      "[{\"op\":\"add\",\"path\":\"/metadata/labels/rbl.io~1tenant\",\"value\":\"prod-tenant-8\"}]",
      "[{\"op\":\"remove\",\"path\":\"/metadata/labels/rbl.io~1tenant\"}]",
      "[{\"op\":\"replace\",\"path\":\"/metadata/labels\",\"value\":{}}]",
      "[{\"op\":\"remove\",\"path\":\"/metadata/labels\"}]",
      "[{\"op\":\"replace\",\"path\":\"/metadata\",\"value\":{\"name\":\"c\"}}]",
      "[{\"op\":\"replace\",\"path\":\"\",\"value\":{}}]",
      "[{\"op\":\"move\",\"from\":\"/metadata/labels/rbl.io~1tenant\",\"path\":\"/data/x\"}]",
      "[{\"op\":\"move\",\"from\":\"/data/x\",\"path\":\"/metadata/labels/rbl.io~1tenant\"}]",
      "[{\"op\":\"copy\",\"from\":\"/data/x\",\"path\":\"/metadata/namespace\"}]",
      "[{\"op\":\"move\",\"from\":\"/metadata\",\"path\":\"/data/m\"}]",
      "[{\"op\":\"add\",\"path\":\"/metadata/labels/rbl.io~1tenant/x\",\"value\":1}]",
      /* a pointer the server reads otherwise than a naive reading */
      "[{\"op\":\"replace\",\"path\":\"/metadata/namespace~2\",\"value\":\"x\"}]",
      "[{\"op\":\"replace\",\"path\":\"metadata/namespace\",\"value\":\"x\"}]",
      /* the gate reads the first member of a name, the server the last */
      "[{\"op\":\"replace\",\"path\":\"/data/x\",\"path\":\"/metadata/"
      "namespace\",\"value\":\"x\"}]",
      "[{\"op\":\"test\",\"op\":\"replace\",\"path\":\"/metadata/namespace\",\"value\":\"x\"}]",
      /* operations it cannot read */
      "[{\"op\":\"Replace\",\"path\":\"/metadata/namespace\",\"value\":\"x\"}]",
      "[{\"path\":\"/metadata/namespace\",\"value\":\"x\"}]",
      "[{\"op\":\"move\",\"path\":\"/data/y\"}]", "[\"replace\"]", NULL};
  for (int i = 0; bad_json[i]; i++)
    if (hpatch(g, NULL, CT_JSON, NULL, bad_json[i]) != -1) fail_msg("allowed: %s", bad_json[i]);
  static const char *const ok_json_ops[] = {
      "[{\"op\":\"add\",\"path\":\"/metadata/labels/team\",\"value\":\"x\"}]",
      "[{\"op\":\"test\",\"path\":\"/metadata/namespace\",\"value\":\"prod-tenant-7\"}]",
      "[{\"op\":\"copy\",\"from\":\"/metadata/labels/rbl.io~1tenant\",\"path\":\"/data/t\"}]",
      "[{\"op\":\"add\",\"path\":\"/metadata/labels/rbl.io~1tenantx\",\"value\":\"x\"}]",
      "[{\"op\":\"add\",\"path\":\"/metadata/annotations/rbl.io~1tenant\",\"value\":\"x\"}]",
      "[{\"op\":\"add\",\"path\":\"/metadata/labels/rbl.io/tenant\",\"value\":\"x\"}]",
      NULL};
  for (int i = 0; ok_json_ops[i]; i++)
    if (hpatch(g, NULL, CT_JSON, NULL, ok_json_ops[i]) != 0)
      fail_msg("refused: %s (%s)", ok_json_ops[i], why);
  /* merge and strategic merge patches */
  static const char *const bad_merge[] = {
      "{\"metadata\":{\"namespace\":\"prod-tenant-8\"}}",
      "{\"metadata\":{\"namespace\":null}}",
      "{\"metadata\":null}",
      "{\"metadata\":\"x\"}",
      "{\"metadata\":{\"labels\":null}}",
      "{\"metadata\":{\"labels\":[]}}",
      "{\"metadata\":{\"labels\":{\"rbl.io/tenant\":\"prod-tenant-8\"}}}",
      "{\"metadata\":{\"labels\":{\"rbl.io/tenant\":null}}}",
      "{\"metadata\":{\"labels\":{\"team\":\"x\"}},\"metadata\":{\"namespace\":\"prod-tenant-8\"}}",
      NULL};
  for (int i = 0; bad_merge[i]; i++) {
    if (hpatch(g, NULL, CT_MERGE, NULL, bad_merge[i]) != -1) fail_msg("merge: %s", bad_merge[i]);
    if (hpatch(g, NULL, CT_SMP, NULL, bad_merge[i]) != -1) fail_msg("strategic: %s", bad_merge[i]);
  }
  /* strategic-merge directives at the top, in metadata or in its labels */
  static const char *const directives[] = {
      "{\"$patch\":\"replace\",\"data\":{\"x\":\"1\"}}",
      "{\"$retainKeys\":[\"data\"],\"data\":{\"x\":\"1\"}}",
      "{\"metadata\":{\"$patch\":\"replace\",\"name\":\"c\"}}",
      "{\"metadata\":{\"$patch\":\"delete\"}}",
      "{\"metadata\":{\"$retainKeys\":[\"name\"]}}",
      "{\"metadata\":{\"$setElementOrder/labels\":[]}}",
      "{\"metadata\":{\"labels\":{\"$patch\":\"replace\",\"team\":\"x\"}}}",
      "{\"metadata\":{\"labels\":{\"$retainKeys\":[\"team\"]}}}",
      NULL};
  for (int i = 0; directives[i]; i++)
    if (hpatch(g, NULL, CT_SMP, NULL, directives[i]) != -1) fail_msg("allowed: %s", directives[i]);
  static const char *const ok_merges[] = {
      "{\"metadata\":{\"namespace\":\"prod-tenant-7\",\"labels\":{\"team\":\"x\"}},\"data\":{}}",
      "{\"metadata\":{\"labels\":{\"team\":null}}}",
      "{\"metadata\":{\"annotations\":{\"rbl.io/tenant\":\"x\"}}}", NULL};
  for (int i = 0; ok_merges[i]; i++)
    if (hpatch(g, NULL, CT_SMP, NULL, ok_merges[i]) != 0) fail_msg("refused: %s", ok_merges[i]);
  /* a directive deeper down (a list element's $patch) stays a strategic merge's own business */
  assert_int_equal(hpatch(g, "/apis/apps/v1/namespaces/prod-tenant-7/deployments/api", CT_SMP, NULL,
                          "{\"spec\":{\"template\":{\"spec\":{\"containers\":[{\"name\":\"a\","
                          "\"$patch\":\"delete\"}]}}}}"),
                   0);
  /* subresources and cluster-scoped writes get the same checks */
  assert_int_equal(hpatch(g, "/apis/apps/v1/namespaces/prod-tenant-7/deployments/api/scale",
                          CT_MERGE, NULL, "{\"spec\":{\"replicas\":2}}"),
                   0);
  assert_int_equal(hpatch(g, "/apis/apps/v1/namespaces/prod-tenant-7/deployments/api/scale", NULL,
                          NULL, "{\"spec\":{\"replicas\":2}}"),
                   -1);
  rbl_gate_add(g, "kube.allow_cluster_writes", "nodes");
  assert_int_equal(hpatch(g, "/api/v1/nodes/n1", CT_MERGE, NULL, "{\"spec\":{}}"), 0);
  assert_int_equal(hpatch(g, "/api/v1/nodes/n1", CT_MERGE, NULL,
                          "{\"metadata\":{\"namespace\":\"prod-tenant-7\"}}"),
                   -1);
  assert_int_equal(hpatch(g, "/api/v1/nodes/n1", "Content-Type: application/apply-patch+yaml", NULL,
                          "{\"spec\":{}}"),
                   -1);
  /* the Namespace object: the type and the shape are checked before its own rules */
  assert_int_equal(hpatch(g, "/api/v1/namespaces/prod-tenant-7", NULL, NULL,
                          "{\"metadata\":{\"labels\":{\"x\":\"y\"}}}"),
                   -1);
  assert_non_null(strstr(why, "without a Content-Type"));
  assert_int_equal(hpatch(g, "/api/v1/namespaces/prod-tenant-7", CT_MERGE, NULL,
                          "[{\"op\":\"test\",\"path\":\"/metadata/resourceVersion\","
                          "\"value\":\"5\"}]"),
                   -1);
  assert_non_null(strstr(why, "not an object"));
  /* kube.allow_tenant_label_change: the label may change; the namespace still may not */
  rbl_gate_set(g, "kube.allow_tenant_label_change", "1");
  assert_int_equal(
      hpatch(g, NULL, CT_MERGE, NULL, "{\"metadata\":{\"labels\":{\"rbl.io/tenant\":\"x\"}}}"), 0);
  assert_int_equal(hpatch(g, NULL, CT_JSON, NULL,
                          "[{\"op\":\"remove\",\"path\":\"/metadata/labels/rbl.io~1tenant\"}]"),
                   0);
  assert_int_equal(hpatch(g, NULL, CT_SMP, NULL,
                          "{\"metadata\":{\"labels\":{\"$patch\":\"replace\",\"team\":\"x\"}}}"),
                   0);
  assert_int_equal(hpatch(g, NULL, CT_JSON, NULL, bad_json[0]), -1);
  assert_int_equal(hpatch(g, NULL, CT_MERGE, NULL, bad_merge[0]), -1);
  assert_int_equal(hpatch(g, NULL, CT_SMP, NULL, directives[2]), -1);
  assert_int_equal(
      hpatch(g, "/api/v1/namespaces/prod-tenant-7", "Content-Type: text/plain", NULL, "{}"), -1);
  rbl_gate_free(g);
}

static void test_kube_query(void **st) {
  rbl_gate *g = kgate();
  const char *t7 = "prod-tenant-7";
  const char *base = "/api/v1/namespaces/prod-tenant-7/configmaps";
  char u[600];
#define Q(q) (snprintf(u, sizeof u, "%s%s", base, q), u)
  assert_int_equal(kreq(g, "GET", Q("?labelSelector=app%3Dx&limit=500&continue=abc"), NULL, t7), 0);
  assert_int_equal(kreq(g, "GET", Q("?watch=true&resourceVersion=1&timeoutSeconds=5"), NULL, t7),
                   0);
  assert_int_equal(kreq(g, "GET", Q("?limit=1&limit=2"), NULL, t7), -1);
  assert_non_null(strstr(why, "repeated"));
  assert_int_equal(kreq(g, "GET", Q("?labelSelector=a&labelSelector=b"), NULL, t7), -1);
  assert_int_equal(kreq(g, "GET", Q("?namespace=prod-tenant-8"), NULL, t7), -1);
  assert_int_equal(kreq(g, "GET", Q("?fieldSelector=metadata.namespace%3Dprod-tenant-8"), NULL, t7),
                   -1);
  assert_int_equal(kreq(g, "GET", Q("?fieldSelector=metadata.name%3Dx"), NULL, t7), 0);
  assert_int_equal(kreq(g, "GET", Q("?limit=1&&x"), NULL, t7), -1);
  assert_int_equal(kreq(g, "GET", Q("?"), NULL, t7), -1);
  assert_int_equal(kreq(g, "GET", Q("?lim%69t=1"), NULL, t7), -1);
  assert_int_equal(kreq(g, "GET", Q("?limit=%zz"), NULL, t7), -1);
  assert_int_equal(kreq(g, "GET", Q("?labelSelector=%00"), NULL, t7), -1);
  assert_int_equal(kreq(g, "GET", Q("?dryRun=All"), NULL, t7), -1); /* a write parameter */
  assert_int_equal(kreq(g, "PATCH",
                        "/api/v1/namespaces/prod-tenant-7/configmaps/c?fieldManager="
                        "rbl&dryRun=All",
                        "{}", t7),
                   0);
  assert_int_equal(
      kreq(g, "PATCH", "/api/v1/namespaces/prod-tenant-7/configmaps/c?watch=true", "{}", t7), -1);
  assert_int_equal(
      kreq(g, "DELETE",
           "/api/v1/namespaces/prod-tenant-7/configmaps/c?propagationPolicy=Foreground", NULL, t7),
      0);
  /* the namespace discovery read learns only with exactly the tenant's selector */
  rbl_gate_free(g);
  g = gate();
  assert_int_equal(exchange(g, "GET", KUBE "/api", NULL, NULL, 200, DISCOVERY), 0);
  assert_int_equal(exchange(g, "GET",
                            KUBE "/api/v1/namespaces?labelSelector=rbl.io%2Ftenant%3Dprod-tenant-7"
                                 "%2Cx%3Dy",
                            NULL, "prod-tenant-7", 200, NAMESPACES),
                   0);
  assert_int_equal(kreq(g, "GET", base, NULL, t7), -1);
  assert_int_equal(exchange(g, "GET", KUBE "/api/v1/namespaces?labelSelector=rbl.io/tenant", NULL,
                            "prod-tenant-7", 200, NAMESPACES),
                   0);
  assert_int_equal(kreq(g, "GET", base, NULL, t7), -1);
  assert_int_equal(exchange(g, "GET",
                            KUBE "/api/v1/namespaces?labelSelector=rbl.io/tenant=prod-tenant-7",
                            NULL, "prod-tenant-7", 200, NAMESPACES),
                   0);
  assert_int_equal(kreq(g, "GET", base, NULL, t7), 0);
  rbl_gate_free(g);
#undef Q
}

static void test_kube_can_i(void **st) {
  rbl_gate *g = kgate();
  const char *p = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", *t7 = "prod-tenant-7";
  assert_int_equal(kreq(g, "POST", p,
                        "{\"spec\":{\"resourceAttributes\":{\"verb\":\"get\",\"resource\":\"pods\","
                        "\"namespace\":\"prod-tenant-7\"}}}",
                        t7),
                   0);
  assert_int_equal(kreq(g, "POST", p,
                        "{\"spec\":{\"resourceAttributes\":{\"verb\":\"get\",\"resource\":\"pods\","
                        "\"namespace\":\"prod-tenant-8\"}}}",
                        t7),
                   -1);
  assert_int_equal(kreq(g, "POST", p,
                        "{\"spec\":{\"resourceAttributes\":{\"verb\":\"create\",\"resource\":"
                        "\"clusterrolebindings\"}}}",
                        t7),
                   0);
  assert_int_equal(kreq(g, "POST", p,
                        "{\"spec\":{\"resourceAttributes\":{\"verb\":\"get\",\"namespace\":7}}}",
                        t7),
                   -1);
  assert_int_equal(kreq(g, "POST", p, "[]", t7), -1);
  assert_int_equal(kreq(g, "POST", p, NULL, t7), -1);
  assert_int_equal(kreq(g, "POST", p, "{\"spec\":{}}", NULL), -1);
  assert_int_equal(
      kreq(g, "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", "{\"spec\":{}}", t7),
      -1);
  rbl_gate_free(g);
}

/* ---- spawning ---- */

static void test_spawn(void **st) {
  char dir[] = "/tmp/rbl-gate-test.XXXXXX";
  assert_non_null(mkdtemp(dir));
  char prog[300], link[300], other[300];
  snprintf(prog, sizeof prog, "%s/tool", dir);
  snprintf(link, sizeof link, "%s/tool-link", dir);
  snprintf(other, sizeof other, "%s/other", dir);
  FILE *f = fopen(prog, "w");
  fputs("#!/bin/sh\n", f);
  fclose(f);
  f = fopen(other, "w");
  fputs("#!/bin/sh\n", f);
  fclose(f);
  assert_int_equal(symlink(prog, link), 0);
  rbl_gate *g = rbl_gate_new();
  rbl_gate_set(g, "path", dir);
  rbl_gate_add(g, "exec.allow", prog);
  assert_int_equal(rbl_gate_spawn(g, RBL_GATE_EXEC, prog, why, sizeof why), 0);
  char dots[400];
  snprintf(dots, sizeof dots, "%s/../%s/tool", dir, strrchr(dir, '/') + 1);
  assert_int_equal(rbl_gate_spawn(g, RBL_GATE_EXEC, dots, why, sizeof why), 0); /* same file */
  assert_int_equal(rbl_gate_spawn(g, RBL_GATE_EXEC, other, why, sizeof why), -1);
  assert_non_null(strstr(why, "not on the exec allow list"));
  /* a symlink under another name is not the allowed program (multi-call binaries) */
  assert_int_equal(rbl_gate_spawn(g, RBL_GATE_EXEC, link, why, sizeof why), -1);
  assert_int_equal(rbl_gate_spawn(g, RBL_GATE_EXEC, "tool", why, sizeof why), -1);
  assert_int_equal(rbl_gate_spawn(g, RBL_GATE_EXEC, "./tool", why, sizeof why), -1);
  assert_int_equal(rbl_gate_spawn(g, RBL_GATE_EXEC, "/bin/../bin/sh", why, sizeof why), -1);
  /* a bare name: resolved through the fixed PATH and the process PATH */
  rbl_gate_add(g, "exec.allow", "other");
  assert_int_equal(rbl_gate_spawn(g, RBL_GATE_EXEC, other, why, sizeof why), 0);
  rbl_gate_add(g, "exec.allow", "sh");
  char sh[PATH_MAX];
  assert_non_null(realpath("/bin/sh", sh));
  assert_int_equal(rbl_gate_spawn(g, RBL_GATE_EXEC, "/bin/sh", why, sizeof why), 0);
  assert_int_equal(rbl_gate_spawn(g, RBL_GATE_EXEC, "/bin/dash-not-there", why, sizeof why), -1);
  /* a relative allow entry never matches */
  rbl_gate_add(g, "exec.allow", "./x/other");
  /* the credential plugin class: only the one bound, exactly */
  assert_int_equal(rbl_gate_spawn(g, RBL_GATE_KUBE_PLUGIN, prog, why, sizeof why), -1);
  assert_int_equal(rbl_gate_bind(g, "kube-plugin", "relative/plugin", why, sizeof why), -1);
  assert_int_equal(rbl_gate_bind(g, "kube-plugin", other, why, sizeof why), 0);
  assert_int_equal(rbl_gate_bind(g, "kube-plugin", other, why, sizeof why), 0);
  assert_int_equal(rbl_gate_bind(g, "kube-plugin", prog, why, sizeof why), -1);
  assert_int_equal(rbl_gate_spawn(g, RBL_GATE_KUBE_PLUGIN, other, why, sizeof why), 0);
  assert_int_equal(rbl_gate_spawn(g, RBL_GATE_KUBE_PLUGIN, prog, why, sizeof why), -1);
  /* the plugin class is not the exec allow list, nor the other way round */
  rbl_gate_free(g);
  g = rbl_gate_new();
  assert_int_equal(rbl_gate_spawn(g, RBL_GATE_EXEC, "/bin/sh", why, sizeof why), -1);
  rbl_gate_free(g);
  unlink(link);
  unlink(prog);
  unlink(other);
  rmdir(dir);
}

/* exec's environment and argv: names from an allow list, argv rules per program */
static void test_spawn_exec(void **st) {
  (void)st;
  rbl_gate *g = rbl_gate_new();
  rbl_gate_add(g, "exec.allow", "/bin/sh");
  rbl_gate_add(g, "exec.allow", "/bin/echo");
  char *argv[] = {"sh", "-c", "true", NULL};
  char *none[] = {NULL};
  assert_int_equal(rbl_gate_spawn_exec(g, "/bin/sh", argv, none, why, sizeof why), 0);
  assert_int_equal(rbl_gate_spawn_exec(g, "/bin/sh", argv, NULL, why, sizeof why), 0);
  char *base[] = {"TZ=UTC", "LANG=C", "LC_ALL=C", "TERM=dumb", NULL};
  assert_int_equal(rbl_gate_spawn_exec(g, "/bin/sh", argv, base, why, sizeof why), 0);
  /* every name that makes an interpreter or shell load code is refused unless allowed */
  const char *bad[] = {"PERL5OPT",
                       "PERL5LIB",
                       "PERLLIB",
                       "PERL5DB",
                       "PYTHONPATH",
                       "PYTHONSTARTUP",
                       "PYTHONINSPECT",
                       "PYTHONHOME",
                       "PYTHONWARNINGS",
                       "BASH_ENV",
                       "ENV",
                       "SHELLOPTS",
                       "BASHOPTS",
                       "PS4",
                       "PROMPT_COMMAND",
                       "LD_PRELOAD",
                       "LD_LIBRARY_PATH",
                       "PATH",
                       "IFS",
                       "NODE_OPTIONS",
                       "RUBYOPT",
                       "GCONV_PATH",
                       "HOME",
                       "TZX",
                       "LANGX",
                       "LC_ALLX"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    char e[64];
    snprintf(e, sizeof e, "%s=x", bad[i]);
    char *env[] = {"TZ=UTC", e, NULL};
    assert_int_equal(rbl_gate_spawn_exec(g, "/bin/sh", argv, env, why, sizeof why), -1);
    assert_non_null(strstr(why, bad[i]));
    assert_non_null(strstr(why, "not on the allow list"));
  }
  /* exec.env allows a name for every program; exec.program.env for one */
  char *py[] = {"PYTHONPATH=/x", NULL};
  rbl_gate_add(g, "exec.program.env", "/bin/echo\nPYTHONPATH");
  assert_int_equal(rbl_gate_spawn_exec(g, "/bin/sh", argv, py, why, sizeof why), -1);
  assert_int_equal(rbl_gate_spawn_exec(g, "/bin/echo", argv, py, why, sizeof why), 0);
  rbl_gate_add(g, "exec.env", "PYTHONPATH");
  assert_int_equal(rbl_gate_spawn_exec(g, "/bin/sh", argv, py, why, sizeof why), 0);
  /* a prefix of an allowed name is not the name */
  char *pre[] = {"PYTHON=1", NULL};
  assert_int_equal(rbl_gate_spawn_exec(g, "/bin/sh", argv, pre, why, sizeof why), -1);
  /* argv rules: one glob per argument, "..." the rest; no rule for a program: any argv */
  rbl_gate_add(g, "exec.program.argv", "/bin/sh\n/usr/local/bin/*.sh");
  rbl_gate_add(g, "exec.program.argv", "/bin/sh\n-e\n...");
  rbl_gate_add(g, "exec.program.argv", "/bin/sh\n");
  assert_int_equal(rbl_gate_spawn_exec(g, "/bin/sh", argv, NULL, why, sizeof why), -1);
  assert_non_null(strstr(why, "match none of the 3 argv rule"));
  char *a1[] = {"sh", "/usr/local/bin/restart.sh", NULL};
  char *a2[] = {"sh", "/usr/local/bin/restart.sh", "extra", NULL};
  char *a3[] = {"sh", "-e", NULL};
  char *a4[] = {"sh", "-e", "x", "y", NULL};
  char *a5[] = {"sh", NULL};
  char *a6[] = {"sh", "-c", "...", NULL};
  assert_int_equal(rbl_gate_spawn_exec(g, "/bin/sh", a1, NULL, why, sizeof why), 0);
  assert_int_equal(rbl_gate_spawn_exec(g, "/bin/sh", a2, NULL, why, sizeof why), -1);
  assert_int_equal(rbl_gate_spawn_exec(g, "/bin/sh", a3, NULL, why, sizeof why), 0);
  assert_int_equal(rbl_gate_spawn_exec(g, "/bin/sh", a4, NULL, why, sizeof why), 0);
  assert_int_equal(rbl_gate_spawn_exec(g, "/bin/sh", a5, NULL, why, sizeof why), 0);
  assert_int_equal(rbl_gate_spawn_exec(g, "/bin/sh", a6, NULL, why, sizeof why), -1);
  assert_int_equal(rbl_gate_spawn_exec(g, "/bin/echo", argv, NULL, why, sizeof why), 0);
  /* the program check still comes first */
  assert_int_equal(rbl_gate_spawn_exec(g, "/bin/cat", a5, NULL, why, sizeof why), -1);
  assert_non_null(strstr(why, "not on the exec allow list"));
  rbl_gate_free(g);
}

/* "kube-lease": serve.ha's Lease requests, bound to (API server, lease namespace) */
#define LEASES KUBE "/apis/coordination.k8s.io/v1/namespaces/rbl-system/leases"
#define LBODY(ns, name)                                                                            \
  "{\"apiVersion\":\"coordination.k8s.io/v1\",\"kind\":\"Lease\",\"metadata\":{\"name\":\"" name   \
  "\",\"namespace\":\"" ns "\"},\"spec\":{\"holderIdentity\":\"a\"}}"

static int lreq(rbl_gate *g, const char *method, const char *url, const char *body) {
  rbl_gate_ticket t;
  return req_t(g, method, url, strlen(url), NULL, body, NULL, &t);
}

static void test_kube_lease(void **st) {
  rbl_gate *g = rbl_gate_new();
  const char *ok = LBODY("rbl-system", "rbl-0123456789abcdef");
  /* nothing bound: nothing leaves */
  assert_int_equal(lreq(g, "GET", LEASES "/rbl-0123456789abcdef", NULL), -1);
  assert_int_equal(rbl_gate_bind(g, "kube-lease", KUBE, why, sizeof why), -1);
  assert_int_equal(rbl_gate_bind(g, "kube-lease", KUBE " Bad_NS", why, sizeof why), -1);
  assert_int_equal(rbl_gate_bind(g, "kube-lease", "https://u@h:1 rbl-system", why, sizeof why), -1);
  assert_int_equal(rbl_gate_bind(g, "kube-lease", KUBE "/ rbl-system", why, sizeof why), 0);
  /* sealed: the same binding again is a no-op, another server or namespace is refused */
  assert_int_equal(rbl_gate_bind(g, "kube-lease", KUBE " rbl-system", why, sizeof why), 0);
  assert_int_equal(rbl_gate_bind(g, "kube-lease", KUBE " other", why, sizeof why), -1);
  assert_int_equal(rbl_gate_bind(g, "kube-lease", "https://evil:1 rbl-system", why, sizeof why),
                   -1);
  /* allowed: GET and PUT of a named Lease, POST of the collection */
  assert_int_equal(lreq(g, "GET", LEASES "/rbl-0123456789abcdef", NULL), 0);
  assert_int_equal(lreq(g, "PUT", LEASES "/rbl-0123456789abcdef", ok), 0);
  assert_int_equal(lreq(g, "POST", LEASES, ok), 0);
  const char *nons = "{\"apiVersion\":\"coordination.k8s.io/v1\",\"kind\":\"Lease\","
                     "\"metadata\":{\"name\":\"x\"}}";
  assert_int_equal(lreq(g, "POST", LEASES, nons), 0);
  /* no DELETE, PATCH, HEAD; no list; no query */
  assert_int_equal(lreq(g, "DELETE", LEASES "/rbl-0123456789abcdef", NULL), -1);
  assert_non_null(strstr(why, "method DELETE"));
  assert_int_equal(lreq(g, "PATCH", LEASES "/rbl-0123456789abcdef", ok), -1);
  assert_int_equal(lreq(g, "HEAD", LEASES "/rbl-0123456789abcdef", NULL), -1);
  assert_int_equal(lreq(g, "GET", LEASES, NULL), -1);
  assert_non_null(strstr(why, "collection"));
  assert_int_equal(lreq(g, "POST", LEASES "/rbl-0123456789abcdef", ok), -1);
  assert_int_equal(lreq(g, "GET", LEASES "/rbl-0123456789abcdef?watch=1", NULL), -1);
  assert_non_null(strstr(why, "query"));
  assert_int_equal(lreq(g, "PUT", LEASES "/rbl-0123456789abcdef?dryRun=All", ok), -1);
  /* another namespace, another resource, another group or version, a subresource, discovery */
  assert_int_equal(
      lreq(g, "GET", KUBE "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/x", NULL),
      -1);
  assert_non_null(strstr(why, "not the lease namespace"));
  assert_int_equal(lreq(g, "GET", KUBE "/api/v1/namespaces/rbl-system/secrets/x", NULL), -1);
  assert_int_equal(lreq(g, "PUT", KUBE "/api/v1/namespaces/rbl-system/configmaps/x", ok), -1);
  assert_int_equal(
      lreq(g, "GET", KUBE "/apis/coordination.k8s.io/v1beta1/namespaces/rbl-system/leases/x", NULL),
      -1);
  assert_int_equal(lreq(g, "GET", KUBE "/apis/coordination.k8s.io/v1/leases", NULL), -1);
  assert_int_equal(lreq(g, "PUT", LEASES "/rbl-0123456789abcdef/status", ok), -1);
  assert_int_equal(lreq(g, "GET", KUBE "/api", NULL), -1);
  assert_int_equal(lreq(g, "GET", KUBE "/version", NULL), -1);
  assert_int_equal(lreq(g, "GET", LEASES "/Bad_Name", NULL), -1);
  assert_int_equal(lreq(g, "GET", LEASES "/..", NULL), -1);
  /* bodies: a Lease in the bound namespace, named by the path */
  assert_int_equal(
      lreq(g, "PUT", LEASES "/rbl-0123456789abcdef", LBODY("kube-system", "rbl-0123456789abcdef")),
      -1);
  assert_non_null(strstr(why, "namespace other than rbl-system"));
  assert_int_equal(lreq(g, "POST", LEASES, LBODY("kube-system", "x")), -1);
  assert_int_equal(lreq(g, "PUT", LEASES "/rbl-0123456789abcdef", LBODY("rbl-system", "other")),
                   -1);
  assert_int_equal(lreq(g, "PUT", LEASES "/rbl-0123456789abcdef", NULL), -1);
  assert_int_equal(lreq(g, "PUT", LEASES "/rbl-0123456789abcdef", "not json"), -1);
  assert_int_equal(lreq(g, "POST", LEASES,
                        "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":"
                        "{\"name\":\"x\",\"namespace\":\"rbl-system\"}}"),
                   -1);
  assert_int_equal(lreq(g, "POST", LEASES,
                        "{\"apiVersion\":\"coordination.k8s.io/v1\",\"kind\":\"Lease\","
                        "\"metadata\":{\"name\":\"x\",\"namespace\":7}}"),
                   -1);
  assert_int_equal(lreq(g, "GET", LEASES "/rbl-0123456789abcdef", ok), -1);
  /* a request bound to a tenant is not a lease request: the kube class (unbound here) */
  rbl_gate_ticket t;
  const char *u = LEASES "/rbl-0123456789abcdef";
  assert_int_equal(req_t(g, "GET", u, strlen(u), NULL, NULL, "prod-tenant-7", &t), -1);
  /* another server */
  assert_int_equal(
      lreq(g, "GET",
           "https://10.0.0.2:6443/apis/coordination.k8s.io/v1/namespaces/rbl-system/leases/x",
           NULL),
      -1);
  rbl_gate_free(g);
  /* next to a bound kube class, the kube rules still apply to tenant calls */
  g = gate();
  assert_int_equal(rbl_gate_bind(g, "kube-lease", KUBE " rbl-system", why, sizeof why), 0);
  assert_int_equal(kreq(g, "GET", "/version", NULL, NULL), -1); /* tenant-free: lease only */
  assert_int_equal(lreq(g, "GET", LEASES "/x", NULL), 0);
  rbl_gate_free(g);
}

/* ---- Prometheus (docs/gate.md, "Prometheus rules") ---- */

#define PROM "https://prom.example:9090"

static int preq(rbl_gate *g, const char *method, const char *path, const char *tenant) {
  char url[2048];
  rbl_gate_ticket t;
  snprintf(url, sizeof url, PROM "%s", path);
  return req_t(g, method, url, strlen(url), NULL, NULL, tenant, &t);
}

static void test_prom(void **st) {
  (void)st;
  rbl_gate *g = gate();
  /* no prom.url: nothing is the prom class */
  assert_int_equal(preq(g, "GET", "/api/v1/query?query=up%7Btenant%3D%22ta%22%7D", "ta"), -1);
  assert_non_null(strstr(why, "cannot classify"));
  rbl_gate_set(g, "prom.url", PROM);
  rbl_gate_add(g, "run.tenants", "ta");
  rbl_gate_add(g, "run.tenants", "tb");
  /* a call bound to ta: every selector carries tenant="ta" (or the one-tenant set) */
  const char *mine = "/api/v1/query?query=up%7Btenant%3D%22ta%22%7D";
  assert_int_equal(preq(g, "GET", mine, "ta"), 0);
  assert_int_equal(preq(g, "HEAD", mine, "ta"), 0);
  assert_int_equal(preq(g, "GET", "/api/v1/query?query=up%7Btenant%3D~%22ta%22%7D", "ta"), 0);
  assert_int_equal(preq(g, "GET",
                        "/api/v1/query_range?query=rate(x%7Btenant%3D%22ta%22%7D%5B5m%5D)&start=1&"
                        "end=2&step=15&timeout=5s",
                        "ta"),
                   0);
  static const char *const unscoped[] = {
      "/api/v1/query?query=up",                                            /* no matcher */
      "/api/v1/query?query=up%7Btenant%3D%22tb%22%7D",                     /* another tenant */
      "/api/v1/query?query=up%7Btenant%3D%22ta%22%7D%20or%20up",           /* a second selector */
      "/api/v1/query?query=up%7Btenant%3D~%22ta%7Ctb%22%7D",               /* a set beyond ta */
      "/api/v1/query?query=up%7Btenant%3D%22ta%22%2Ctenant%3D%22tb%22%7D", /* two matchers */
      "/api/v1/query?query=up%7Btenant!%3D%22tb%22%7D",                    /* a negative matcher */
      "/api/v1/query?query=up%7Btenant%3D%22ta%22%7D%5B5m%5D%20offset%201m%20unless%20up",
      NULL};
  for (int i = 0; unscoped[i]; i++)
    if (preq(g, "GET", unscoped[i], "ta") != -1) fail_msg("allowed for ta: %s", unscoped[i]);
  assert_int_equal(preq(g, "GET", "/api/v1/query?query=up", "ta"), -1);
  assert_non_null(strstr(why, "not scoped to tenant ta"));
  /* only reads, only the query endpoints, only the parameters rbl sends, never repeated */
  assert_int_equal(preq(g, "POST", mine, "ta"), -1);
  assert_non_null(strstr(why, "only reads"));
  assert_int_equal(preq(g, "GET", "/api/v1/series?match%5B%5D=up%7Btenant%3D%22ta%22%7D", "ta"),
                   -1);
  assert_int_equal(preq(g, "GET", "/api/v1/admin/tsdb/snapshot", "ta"), -1);
  assert_int_equal(preq(g, "GET", "/api/v1/label/tenant/values", "ta"), -1);
  assert_int_equal(preq(g, "GET", "/federate?match%5B%5D=up", "ta"), -1);
  char u[300];
  snprintf(u, sizeof u, "%s&dedup=false", mine);
  assert_int_equal(preq(g, "GET", u, "ta"), -1);
  assert_non_null(strstr(why, "dedup"));
  snprintf(u, sizeof u, "%s&query=up", mine);
  assert_int_equal(preq(g, "GET", u, "ta"), -1); /* a smuggled second query */
  assert_int_equal(preq(g, "GET", "/api/v1/query?time=1", "ta"), -1);
  assert_int_equal(preq(g, "GET", "/api/v1/status/buildinfo", NULL), 0);
  assert_int_equal(preq(g, "GET", "/api/v1/status/buildinfo?x=1", NULL), -1);
  assert_int_equal(preq(g, "GET", "/api/v1/status/config", NULL), -1);
  /* a call bound to no tenant: the run's tenants as a set, nothing beyond them */
  assert_int_equal(preq(g, "GET", "/api/v1/query?query=up%7Btenant%3D~%22ta%7Ctb%22%7D", NULL), 0);
  assert_int_equal(preq(g, "GET", "/api/v1/query?query=up%7Btenant%3D~%22ta%7Ctc%22%7D", NULL), -1);
  assert_int_equal(preq(g, "GET", "/api/v1/query?query=up%7Btenant%3D~%22.%2B%22%7D", NULL), -1);
  assert_int_equal(preq(g, "GET", "/api/v1/query?query=up", NULL), -1);
  assert_non_null(strstr(why, "prom.unscoped"));
  /* the metrics' tenant label is the config's */
  rbl_gate_set(g, "prom.tenant_label", "customer");
  assert_int_equal(preq(g, "GET", mine, "ta"), -1);
  assert_int_equal(preq(g, "GET", "/api/v1/query?query=up%7Bcustomer%3D%22ta%22%7D", "ta"), 0);
  /* prom.unscoped = true: a call bound to no tenant may send anything that parses; a bound call
   * is still held to its tenant */
  rbl_gate_set(g, "prom.unscoped", "1");
  assert_int_equal(preq(g, "GET", "/api/v1/query?query=up", NULL), 0);
  assert_int_equal(preq(g, "GET", "/api/v1/query?query=up%7B", NULL), -1);
  assert_int_equal(preq(g, "GET", "/api/v1/query?query=up", "ta"), -1);
  rbl_gate_free(g);
}

/* ---- bounds (docs/gate.md: learned sets hold 16384 entries each; past that nothing is learned
 * and what needs it stays refused) ---- */

static void test_learned_sets_are_bounded(void **st) {
  (void)st;
  rbl_gate *g = gate();
  learn_ctr(g, "web", IDA, "ta");
  char exec_url[300], start[300], ans[100], id[65];
  snprintf(exec_url, sizeof exec_url, DV "/containers/%s/exec", IDA);
  for (int i = 0; i <= 16384; i++) {
    snprintf(id, sizeof id, "%08x%056d", (unsigned)i, 0);
    snprintf(ans, sizeof ans, "{\"Id\":\"%s\"}", id);
    assert_int_equal(exchange(g, "POST", exec_url, SOCK, "ta", 201, ans), 0);
  }
  snprintf(start, sizeof start, "/v1.41/exec/%08x%056d/start", 0u, 0);
  assert_int_equal(dreq(g, "POST", start, "ta"), 0); /* the first is known */
  snprintf(start, sizeof start, "/v1.41/exec/%08x%056d/start", 16383u, 0);
  assert_int_equal(dreq(g, "POST", start, "ta"), 0); /* the 16384th too */
  snprintf(start, sizeof start, "/v1.41/exec/%08x%056d/start", 16384u, 0);
  assert_int_equal(dreq(g, "POST", start, "ta"), -1); /* one past the bound: not learned */
  rbl_gate_free(g);
}

/* ---- small rules ---- */

static void test_docker_small_rules(void **st) {
  (void)st;
  rbl_gate *g = gate();
  /* the tenant-free reads: GET and HEAD, no parameters */
  assert_int_equal(dreq(g, "HEAD", "/_ping", NULL), 0);
  assert_int_equal(dreq(g, "GET", "/_ping?x=1", NULL), -1);
  assert_int_equal(dreq(g, "GET", "/v1.41/info?x=1", NULL), -1);
  /* a clean reference: at most 128 characters, not starting with . or -, no .. */
  char ref[200], path[300];
  memset(ref, 'a', 128);
  ref[128] = 0;
  snprintf(path, sizeof path, "/v1.41/containers/%s/json", ref);
  assert_int_equal(dreq(g, "GET", path, "ta"), 0);
  memset(ref, 'a', 129);
  ref[129] = 0;
  snprintf(path, sizeof path, "/v1.41/containers/%s/json", ref);
  assert_int_equal(dreq(g, "GET", path, "ta"), -1);
  assert_int_equal(dreq(g, "GET", "/v1.41/containers/-web/json", "ta"), -1);
  assert_int_equal(dreq(g, "GET", "/v1.41/containers/a..b/json", "ta"), -1);
  assert_int_equal(dreq(g, "GET", "/v1.41/containers/we%62/json", "ta"), -1);
  assert_int_equal(dreq(g, "GET", "/v1.41/containers/web.1_x-y/json", "ta"), 0);
  /* an unbound call (a multi-tenant run's top level) reaches no container */
  assert_int_equal(dreq(g, "GET",
                        "/v1.41/containers/json?filters=%7B%22label%22%3A%5B%22rbl."
                        "tenant%3Dta%22%5D%7D",
                        NULL),
                   -1);
  rbl_gate_free(g);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_endpoints),
      cmocka_unit_test(test_url_hygiene),
      cmocka_unit_test(test_docker_resolution),
      cmocka_unit_test(test_docker_exec_ids),
      cmocka_unit_test(test_docker_list),
      cmocka_unit_test(test_docker_labels_config),
      cmocka_unit_test(test_kube_discovery_and_tenant_free),
      cmocka_unit_test(test_kube_namespaces),
      cmocka_unit_test(test_kube_tenant_label),
      cmocka_unit_test(test_kube_resources),
      cmocka_unit_test(test_kube_patch_types),
      cmocka_unit_test(test_kube_query),
      cmocka_unit_test(test_kube_can_i),
      cmocka_unit_test(test_spawn),
      cmocka_unit_test(test_spawn_exec),
      cmocka_unit_test(test_kube_lease),
      cmocka_unit_test(test_prom),
      cmocka_unit_test(test_learned_sets_are_bounded),
      cmocka_unit_test(test_docker_small_rules),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
