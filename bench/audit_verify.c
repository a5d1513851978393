/* Benchmark: writes N audit records (default 200000), then times `rbl audit verify` on them.
 * Usage: bench_audit_verify [N [HMAC_KEY_FILE]] (with a key, records carry a mac and verify checks
 * it). */
#include <stdio.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "audit.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A record shaped like the engine's: intents and results of a kube_patch, some logs. */
static cJSON *record(int i) {
  char buf[512];
  if (i % 2 == 0)
    snprintf(
        buf, sizeof buf,
        "{\"kind\":\"intent\",\"call\":%d,\"prim\":\"kube_patch\",\"tenant\":\"prod-tenant-7\","
        "\"target\":{\"kind\":\"configmap\",\"name\":\"db-pool-config\",\"namespace\":\"prod-"
        "tenant-7\"},"
        "\"args\":{\"patch\":{\"data\":{\"max_connections\":\"%d\"}},\"type\":\"merge\"}}",
        i, 100 + i % 400);
  else
    snprintf(buf, sizeof buf,
             "{\"kind\":\"result\",\"call\":%d,\"status\":\"ok\",\"duration_ms\":%d,"
             "\"summary\":{\"resourceVersion\":\"%d\"},\"before\":{\"max_connections\":\"100\"}}",
             i - 1, i % 97, i);
  return cJSON_Parse(buf);
}

/* user + system CPU seconds of this process: on a loaded machine, the cost of the work itself */
static double cpu(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
         ru.ru_stime.tv_usec / 1e6;
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 200000;
  char path[] = "/tmp/rbl-bench-audit-XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0) return perror("mkstemp"), 1;
  close(fd);
  unlink(path);
  const char *key = argc > 2 ? argv[2] : NULL;
  rbl_audit_opts o = {
      .path = path, .incident = "INC-BENCH", .run = "bench-run", .hmac_key_file = key};
  rbl_audit *a = NULL;
  char err[512];
  if (rbl_audit_open(&a, &o, err, sizeof err) != 0) return fprintf(stderr, "%s\n", err), 1;
  double t0 = now();
  for (int i = 0; i < n; i++)
    if (rbl_audit_append(a, record(i)) < 0) return fprintf(stderr, "%s\n", rbl_audit_error(a)), 1;
  if (rbl_audit_close(a) != 0) return fprintf(stderr, "close failed\n"), 1;
  double t1 = now();
  printf("write:  %d records in %.3fs = %.0f records/s\n", n, t1 - t0, n / (t1 - t0));
  fflush(stdout);
  char *vargv[] = {"verify", path, "--key", (char *)key, NULL};
  double t2 = now(), c2 = cpu();
  int rc = rbl_audit_main(key ? 4 : 2, vargv);
  double t3 = now(), c3 = cpu();
  printf("verify: %d records in %.3fs = %.0f records/s (exit %d); %.3f s of CPU = %.0f records per "
         "CPU-second (goal >= 200000: %.2fx)\n",
         n, t3 - t2, n / (t3 - t2), rc, c3 - c2, n / (c3 - c2), n / (c3 - c2) / 200000.0);
  unlink(path);
  return rc;
}
