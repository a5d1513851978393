/* rbl audit verify / show (src/core/audit_verify.c, audit_show.c) on any chain file, with and
 * without --json and an HMAC key: they read hostile input, so they never crash and verify's exit
 * is 0, 1 or 2. */
#include "fuzz.h"
#include "audit.h"

#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char path[64], key[64];

static void setup(void) {
  snprintf(path, sizeof path, "/tmp/rbl-fuzz-audit-%d.jsonl", (int)getpid());
  snprintf(key, sizeof key, "/tmp/rbl-fuzz-audit-%d.key", (int)getpid());
  int fd = open(key, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0 || write(fd, "0123456789abcdef0123456789abcdef", 32) != 32) abort();
  close(fd);
  if (!freopen("/dev/null", "w", stdout)) abort(); /* the reports; libFuzzer writes to stderr */
}

int LLVMFuzzerTestOneInput(const unsigned char *d, size_t n) {
  if (!path[0]) setup();
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0 || (n && write(fd, d, n) != (ssize_t)n)) abort();
  close(fd);
  char *v1[] = {"verify", path, NULL};
  char *v2[] = {"verify", path, "--json", "--key", key, NULL};
  char *s1[] = {"show", path, NULL};
  char *s2[] = {"show", path, "--json", NULL};
  int rc = rbl_audit_verify_main(2, v1);
  FUZZ_CHECK(rc >= 0 && rc <= 2, "verify exit %d", rc);
  rc = rbl_audit_verify_main(5, v2);
  FUZZ_CHECK(rc >= 0 && rc <= 2, "verify --key exit %d", rc);
  rbl_audit_show_main(2, s1);
  rbl_audit_show_main(3, s2);
  fflush(stdout);
  return 0;
}
