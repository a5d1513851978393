/* rbl serve's spool: an append-only file of checksummed JSON entries, synced in groups on the
 * thread pool before an accepted alert is answered; read back as hostile input. */
#include "serve.h"
#include "ossl_dl.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SPOOL_MAX (256u << 20)
#define ENTRY_MAX (1u << 20)

static void sha256_hex(const char *data, size_t len, char out[65]) {
  unsigned char md[32];
  unsigned int n = 0;
  EVP_Digest(data, len, md, &n, EVP_sha256(), NULL);
  for (unsigned i = 0; i < 32; i++)
    snprintf(out + 2 * i, 3, "%02x", md[i]);
}

char *rbl_serve_spool_line(const char *json, size_t *len) {
  size_t jl = strlen(json);
  char *line = malloc(jl + 67);
  if (!line) return NULL;
  sha256_hex(json, jl, line);
  line[64] = ' ';
  memcpy(line + 65, json, jl);
  line[65 + jl] = '\n';
  line[66 + jl] = 0;
  *len = jl + 66;
  return line;
}

static int write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static void spool_fail(srv_spool *s, const char *what, int e) {
  if (s->failed) return;
  s->failed = 1;
  snprintf(s->err, sizeof s->err, "spool %s: %s: %s", s->path, what, strerror(e));
}

uint64_t rbl_serve_spool_append(srv_spool *s, cJSON *rec) {
  if (s->failed) {
    cJSON_Delete(rec);
    return 0;
  }
  uint64_t seq = s->seq + 1;
  cJSON_AddNumberToObject(rec, "seq", (double)seq);
  char *json = cJSON_PrintUnformatted(rec);
  cJSON_Delete(rec);
  size_t len = 0;
  char *line = json && strlen(json) < ENTRY_MAX ? rbl_serve_spool_line(json, &len) : NULL;
  cJSON_free(json);
  if (!line) {
    spool_fail(s, "entry", ENOMEM);
    return 0;
  }
  int rc = write_all(s->fd, line, len);
  int e = errno;
  free(line);
  if (rc) {
    spool_fail(s, "write", e);
    return 0;
  }
  s->seq = seq;
  s->bytes += len;
  return seq;
}

static void sync_done(uv_fs_t *req) {
  srv_spool *s = req->data;
  ssize_t r = req->result;
  uint64_t target = s->sync_target;
  uv_fs_req_cleanup(req);
  s->syncing = 0;
  if (r < 0)
    spool_fail(s, "fdatasync", (int)-r);
  else
    s->synced = target;
  if (s->on_synced) s->on_synced(s);
  rbl_serve_spool_kick(s);
}

void rbl_serve_spool_kick(srv_spool *s) {
  if (s->syncing || s->failed || s->synced >= s->seq) return;
  s->syncing = 1;
  s->req.data = s;
  s->sync_target = s->seq;
  if (uv_fs_fdatasync(s->loop, &s->req, s->fd, sync_done) != 0) {
    s->syncing = 0;
    spool_fail(s, "fdatasync", EIO);
    if (s->on_synced) s->on_synced(s);
    return;
  }
}

int rbl_serve_spool_sync_now(srv_spool *s) {
  if (s->failed) return -1;
  if (fdatasync(s->fd) != 0) {
    spool_fail(s, "fdatasync", errno);
    return -1;
  }
  s->synced = s->seq;
  return 0;
}

static int is_hex64(const char *p) {
  for (int i = 0; i < 64; i++)
    if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f'))) return 0;
  return 1;
}

static void head_of(const char *p, size_t n, char out[81]) {
  size_t k = 0;
  for (size_t i = 0; i < n && k < 80; i++)
    out[k++] = (p[i] >= 0x20 && p[i] < 0x7f) ? p[i] : '?';
  out[k] = 0;
}

/* One line (without its newline): verified, parsed, seq increasing. NULL with why set. */
static cJSON *check_line(const char *p, size_t n, uint64_t *last_seq, const char **why) {
  if (n < 67 || p[64] != ' ' || !is_hex64(p)) return *why = "not an entry (no checksum)", NULL;
  if (n > ENTRY_MAX) return *why = "entry longer than 1 MiB", NULL;
  if (memchr(p, 0, n)) return *why = "NUL byte in the entry", NULL;
  char sum[65];
  sha256_hex(p + 65, n - 65, sum);
  if (memcmp(sum, p, 64) != 0) return *why = "checksum mismatch (damaged entry)", NULL;
  cJSON *rec = cJSON_ParseWithLength(p + 65, n - 65);
  if (!rec || !cJSON_IsObject(rec)) {
    cJSON_Delete(rec);
    return *why = "checksum matches but the entry is not a JSON object", NULL;
  }
  cJSON *seq = cJSON_GetObjectItemCaseSensitive(rec, "seq");
  cJSON *k = cJSON_GetObjectItemCaseSensitive(rec, "k");
  double sv = cJSON_IsNumber(seq) ? seq->valuedouble : -1;
  if (!cJSON_IsString(k) || sv < 1 || sv > 9e15 || sv != (double)(uint64_t)sv) {
    cJSON_Delete(rec);
    return *why = "entry without a kind or a valid seq", NULL;
  }
  if ((uint64_t)sv <= *last_seq) {
    cJSON_Delete(rec);
    return *why = "seq not increasing (replayed or reordered entry)", NULL;
  }
  *last_seq = (uint64_t)sv;
  return rec;
}

int rbl_serve_spool_read(const char *path, srv_spool_fn fn, srv_spool_bad_fn bad, void *ud,
                         char *err, size_t errlen) {
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    if (errno == ENOENT) return 0;
    snprintf(err, errlen, "spool %s: %s", path, strerror(errno));
    return -1;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > (off_t)SPOOL_MAX) {
    snprintf(err, errlen,
             "spool %s: not a regular file or larger than 256 MiB (move it aside to start "
             "with an empty spool)",
             path);
    close(fd);
    return -1;
  }
  size_t size = (size_t)st.st_size, got = 0;
  char *buf = malloc(size + 1);
  while (buf && got < size) {
    ssize_t r = read(fd, buf + got, size - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    got += (size_t)r;
  }
  close(fd);
  if (!buf || got != size) {
    free(buf);
    snprintf(err, errlen, "spool %s: read failed", path);
    return -1;
  }
  uint64_t last = 0;
  size_t lineno = 0;
  for (size_t off = 0; off < size;) {
    char *nl = memchr(buf + off, '\n', size - off);
    size_t n = nl ? (size_t)(nl - (buf + off)) : size - off;
    char head[81];
    lineno++;
    head_of(buf + off, n, head);
    if (!nl) {
      bad(ud, lineno, "torn entry at the end (no newline: a write cut short by a crash)", head);
      break;
    }
    const char *why = NULL;
    cJSON *rec = check_line(buf + off, n, &last, &why);
    if (rec) {
      fn(ud, rec);
      cJSON_Delete(rec);
    } else
      bad(ud, lineno, why, head);
    off += n + 1;
  }
  free(buf);
  return 0;
}

static int fsync_dir_of(const char *path) {
  char *copy = strdup(path);
  if (!copy) return -1;
  int dfd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  int rc = dfd >= 0 && fsync(dfd) == 0 ? 0 : -1;
  if (dfd >= 0) close(dfd);
  free(copy);
  return rc;
}

static double seq_of(const cJSON *r) {
  const cJSON *q = cJSON_GetObjectItemCaseSensitive(r, "seq");
  return cJSON_IsNumber(q) ? q->valuedouble : 0;
}

static int by_seq(const void *a, const void *b) {
  double x = seq_of(*(const cJSON *const *)a), y = seq_of(*(const cJSON *const *)b);
  return x < y ? -1 : x > y;
}

int rbl_serve_spool_rewrite(srv_spool *s, const char *path, const cJSON *recs, uint64_t seq) {
  /* Written in seq order (the reader refuses a seq that does not increase). */
  int n = cJSON_GetArraySize(recs), k = 0;
  const cJSON **v = calloc((size_t)n + 1, sizeof *v);
  if (!v) {
    snprintf(s->err, sizeof s->err, "spool %s: out of memory", path);
    return -1;
  }
  const cJSON *it;
  cJSON_ArrayForEach(it, recs) v[k++] = it;
  qsort(v, (size_t)n, sizeof *v, by_seq);
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    snprintf(s->err, sizeof s->err, "spool %s: %s", tmp, strerror(errno));
    free(v);
    return -1;
  }
  int bad = 0;
  for (int i = 0; i < n; i++) {
    const cJSON *r = v[i];
    char *json = cJSON_PrintUnformatted(r);
    size_t len = 0;
    char *line = json ? rbl_serve_spool_line(json, &len) : NULL;
    cJSON_free(json);
    if (!line || write_all(fd, line, len) != 0) bad = 1;
    free(line);
    if (bad) break;
  }
  free(v);
  if (bad || fsync(fd) != 0 || close(fd) != 0) {
    snprintf(s->err, sizeof s->err, "spool %s: write: %s", tmp, strerror(errno));
    if (bad) close(fd);
    return -1;
  }
  if (rename(tmp, path) != 0 || fsync_dir_of(path) != 0) {
    snprintf(s->err, sizeof s->err, "spool %s: rename: %s", path, strerror(errno));
    return -1;
  }
  int fd2 = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
  if (fd2 < 0) {
    snprintf(s->err, sizeof s->err, "spool %s: %s", path, strerror(errno));
    return -1;
  }
  struct stat st;
  s->bytes = fstat(fd2, &st) == 0 ? (size_t)st.st_size : 0;
  if (s->fd >= 0) close(s->fd);
  s->fd = fd2;
  if (!s->path) s->path = strdup(path);
  s->seq = s->synced = seq;
  return 0;
}
