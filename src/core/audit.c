/* The audit chain writer (append, lock, torn-tail recovery, MAC, Ed25519) and `rbl audit`. */
#include "audit.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <libgen.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "ossl_dl.h"
#include "rbl.h"
#include "sha256.h"

/* More unparsable bytes than this at the end: not a torn write. */
#define AUDIT_TORN_MAX   (1u << 20)
#define AUDIT_WINDOW_MAX (64u << 20) /* how far back open looks for the last record */

/* One open chain; owns fd (closing it releases the flock), the key copies and the buffer. */
struct rbl_audit {
  int fd;
  int failed;       /* RBL_E* once a write or sync failed: every later call returns it */
  int dirty;        /* appended since the last sync */
  int appended;     /* this handle wrote at least one record */
  int sealed;       /* rbl_audit_seal signed the head: close does not sign again */
  int need_newline; /* the file ends without '\n': the next write starts with one */
  int torn_pending; /* the next record seals a torn region (torn_bytes, torn_sha) */
  int64_t next_seq;
  size_t torn_bytes;
  char *path, *incident, *run;
  unsigned char *key;
  size_t keylen;
  EVP_PKEY *sign;
  rbl_audit_hasher *hasher;
  rbl_jcs_buf buf;
  char head[RBL_AUDIT_HASH_LEN + 1];
  char torn_sha[RBL_AUDIT_HASH_LEN + 1];
  char err[512];
  /* What this handle knows the file holds: for rbl_audit_changed. */
  dev_t dev;
  ino_t ino;
  off_t expect;             /* bytes: the size at open plus everything this handle wrote */
  rbl_sha256_ctx *contents; /* SHA-256 of those bytes, in order; NULL: not tracked */
  /* A new file's directory entry is made durable by a thread started at open, overlapping
   * the run (a no-op run's all); the first rbl_audit_sync waits for it (dir_sync_wait). */
  pthread_t dir_thread;
  int dir_pending;
  int dir_rc; /* errno of the directory's fsync, once joined */
  int dir_fd; /* the new file's directory, open while its fsync runs */
};

struct rbl_audit_hasher {
  /* the record hash is rbl's own SHA-256 (sha256.c): a chain without a key never initialises
   * OpenSSL; only the HMAC (with --audit-key) and signatures use it */
  EVP_MAC *mac;
  EVP_MAC_CTX *mctx; /* NULL without a key */
  unsigned char *key;
  size_t keylen;
};

/* ---- shared helpers ---- */

void rbl_audit_hex(const unsigned char *p, size_t n, char *out) {
  static const char hex[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = hex[p[i] >> 4];
    out[2 * i + 1] = hex[p[i] & 15];
  }
  out[2 * n] = '\0';
}

static void audit_sha256(const void *p, size_t n, char out[RBL_AUDIT_HASH_LEN + 1]) {
  unsigned char md[32];
  rbl_sha256(p, n, md);
  memcpy(out, "sha256:", 7);
  rbl_audit_hex(md, 32, out + 7);
}

void rbl_audit_genesis(const char *incident, char out[RBL_AUDIT_HASH_LEN + 1]) {
  size_t n = strlen(incident);
  char *m = malloc(n + 14);
  if (!m) abort();
  memcpy(m, "rbl-audit-v1\n", 13);
  memcpy(m + 13, incident, n);
  audit_sha256(m, n + 13, out);
  free(m);
}

char *rbl_audit_sig_message(const char *incident, const char *head, size_t *len) {
  size_t n = strlen("rbl-audit-v1 signature\n") + strlen(incident) + 1 + strlen(head);
  char *m = malloc(n + 1);
  if (m) snprintf(m, n + 1, "rbl-audit-v1 signature\n%s\n%s", incident, head);
  *len = n;
  return m;
}

int rbl_audit_load_key(const char *path, unsigned char **key, size_t *len, char *err,
                       size_t errlen) {
  struct stat st;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    snprintf(err, errlen, "audit key %s: %s", path, strerror(e));
    return rbl_from_errno(e);
  }
  int rc = 0;
  if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
    snprintf(err, errlen, "audit key %s: not a regular file", path);
    rc = RBL_EINVAL;
  } else if (st.st_mode & 077) {
    snprintf(err, errlen,
             "audit key %s is readable by group or others (mode %04o): refusing it; "
             "run: chmod 600 %s",
             path, (unsigned)(st.st_mode & 07777), path);
    rc = RBL_EDENIED;
  } else if (st.st_size == 0 || st.st_size > 65536) {
    snprintf(err, errlen, "audit key %s: %s", path, st.st_size ? "larger than 64 KiB" : "empty");
    rc = RBL_EINVAL;
  }
  unsigned char *k = rc ? NULL : malloc((size_t)st.st_size + 1);
  if (!rc && !k) rc = RBL_ENOMEM;
  ssize_t r = rc ? 0 : read(fd, k, (size_t)st.st_size);
  if (!rc && r != st.st_size) {
    snprintf(err, errlen, "audit key %s: %s", path, r < 0 ? strerror(errno) : "short read");
    rc = RBL_EIO;
  }
  close(fd);
  if (rc) {
    free(k);
    return rc;
  }
  k[r] = '\0';
  *key = k;
  *len = (size_t)r;
  return 0;
}

rbl_audit_hasher *rbl_audit_hasher_new(const unsigned char *key, size_t keylen) {
  rbl_audit_hasher *h = calloc(1, sizeof *h);
  if (!h) return NULL;
  if (key) {
    if (rbl_ossl_load(NULL, 0) != 0) goto fail;
    h->mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    h->mctx = h->mac ? EVP_MAC_CTX_new(h->mac) : NULL;
    h->key = malloc(keylen ? keylen : 1);
    if (!h->mctx || !h->key) goto fail;
    memcpy(h->key, key, keylen);
    h->keylen = keylen;
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
                           OSSL_PARAM_construct_end()};
    if (!EVP_MAC_init(h->mctx, h->key, h->keylen, params)) goto fail;
  }
  return h;
fail:
  rbl_audit_hasher_free(h);
  return NULL;
}

void rbl_audit_hasher_free(rbl_audit_hasher *h) {
  if (!h) return;
  if (h->mctx) EVP_MAC_CTX_free(h->mctx);
  if (h->mac) EVP_MAC_free(h->mac);
  if (h->key) explicit_bzero(h->key, h->keylen);
  free(h->key);
  free(h);
}

static int audit_hmac(rbl_audit_hasher *h, const char *base, const rbl_jcs_piece *p, size_t np,
                      char mac[RBL_AUDIT_MAC_LEN + 1]) {
  unsigned char md[32];
  size_t mdlen = 0;
  if (!EVP_MAC_init(h->mctx, NULL, 0, NULL)) return RBL_EIO; /* reuses the key set up in _new */
  for (size_t i = 0; i < np; i++)
    if (!EVP_MAC_update(h->mctx, (const unsigned char *)base + p[i].off, p[i].len)) return RBL_EIO;
  if (!EVP_MAC_final(h->mctx, md, &mdlen, sizeof md) || mdlen != 32) return RBL_EIO;
  memcpy(mac, "hmac-sha256:", 12);
  rbl_audit_hex(md, 32, mac + 12);
  return 0;
}

int rbl_audit_hasher_run(rbl_audit_hasher *h, const char *base, const rbl_jcs_piece *p, size_t np,
                         char hash[RBL_AUDIT_HASH_LEN + 1], char mac[RBL_AUDIT_MAC_LEN + 1]) {
  unsigned char md[32];
  rbl_sha256_ctx c;
  rbl_sha256_init(&c);
  for (size_t i = 0; i < np; i++)
    rbl_sha256_update(&c, base + p[i].off, p[i].len);
  rbl_sha256_final(&c, md);
  memcpy(hash, "sha256:", 7);
  rbl_audit_hex(md, 32, hash + 7);
  if (mac) mac[0] = '\0';
  return h->mctx && mac ? audit_hmac(h, base, p, np, mac) : 0;
}

/* ---- opening ---- */

static int audit_seterr(rbl_audit *a, int rc, const char *fmt, const char *cause) {
  snprintf(a->err, sizeof a->err, fmt, a->path, cause);
  return rc;
}

static int audit_load_sign_key(rbl_audit *a, const char *path) {
  unsigned char *pem = NULL;
  size_t len = 0;
  int rc = rbl_audit_load_key(path, &pem, &len, a->err, sizeof a->err);
  if (rc < 0) return rc;
  char why[320];
  if (rbl_ossl_load(why, sizeof why) != 0) {
    explicit_bzero(pem, len);
    free(pem);
    snprintf(a->err, sizeof a->err, "audit signing key %s: %s", path, why);
    return RBL_EIO;
  }
  BIO *bio = BIO_new_mem_buf(pem, (int)len);
  a->sign = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
  BIO_free(bio);
  explicit_bzero(pem, len);
  free(pem);
  if (!a->sign || EVP_PKEY_get_id(a->sign) != EVP_PKEY_ED25519) {
    snprintf(a->err, sizeof a->err, "audit signing key %s: not an Ed25519 private key (PEM)", path);
    return RBL_EINVAL;
  }
  return 0;
}

/* The pid holding a flock on fd's file, from /proc/locks; 0 when unknown. */
static long audit_lock_pid(int fd) {
  struct stat st;
  char line[256], type[32];
  long pid = 0, found = 0;
  unsigned maj, min;
  unsigned long ino;
  FILE *f = fstat(fd, &st) == 0 ? fopen("/proc/locks", "re") : NULL;
  while (f && !found && fgets(line, sizeof line, f)) {
    if (sscanf(line, "%*d: %31s %*s %*s %ld %x:%x:%lu", type, &pid, &maj, &min, &ino) == 5 &&
        strcmp(type, "FLOCK") == 0 && maj == major(st.st_dev) && min == minor(st.st_dev) &&
        ino == st.st_ino)
      found = pid;
  }
  if (f) fclose(f);
  return found;
}

static int audit_lock(rbl_audit *a) {
  if (flock(a->fd, LOCK_EX | LOCK_NB) == 0) return 0;
  int e = errno;
  if (e != EWOULDBLOCK)
    return audit_seterr(a, rbl_from_errno(e), "audit: %s: lock: %s", strerror(e));
  long pid = audit_lock_pid(a->fd);
  char who[64] = "";
  if (pid > 0) snprintf(who, sizeof who, " (pid %ld)", pid);
  return audit_seterr(a, RBL_ELOCKED, "audit chain %s is locked by another run%s", who);
}

/* fsync of the directory holding path (levels = 1) or of its parent (levels = 2); 0 or errno. */
/* The directory `levels` up from path, opened to be synced; -1 with errno set on failure. */
static int audit_open_dir(const char *path, int levels) {
  char *copy = strdup(path), *d = copy;
  if (!copy) {
    errno = ENOMEM;
    return -1;
  }
  while (levels-- > 0)
    d = dirname(d);
  int dfd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  int e = errno;
  free(copy);
  errno = e;
  return dfd;
}

static int audit_fsync_dir(const char *path, int levels) {
  int dfd = audit_open_dir(path, levels);
  int rc = dfd >= 0 && fsync(dfd) == 0 ? 0 : errno;
  if (dfd >= 0) close(dfd);
  return rc;
}

/* Only the fsync: the caller opened the directory, so the thread never allocates (a thread's
 * first malloc sets up an arena of its own, which cost more than the sync's set-up). */
static void *dir_sync_thread(void *arg) {
  rbl_audit *a = arg;
  a->dir_rc = fsync(a->dir_fd) == 0 ? 0 : errno;
  return NULL;
}

/* Starts the directory's fsync beside the caller (synchronously when no thread can start). */
static int dir_sync_start(rbl_audit *a) {
  a->dir_fd = audit_open_dir(a->path, 1);
  if (a->dir_fd < 0) {
    int e = errno;
    return audit_seterr(a, rbl_from_errno(e), "audit: %s: sync directory: %s", strerror(e));
  }
  pthread_attr_t at;
  int ok = pthread_attr_init(&at) == 0;
  if (ok) {
    pthread_attr_setstacksize(&at, 64 * 1024); /* an fsync needs little stack */
    ok = pthread_create(&a->dir_thread, &at, dir_sync_thread, a) == 0;
    pthread_attr_destroy(&at);
  }
  if (ok) {
    a->dir_pending = 1;
    return 0;
  }
  int rc = fsync(a->dir_fd) == 0 ? 0 : errno;
  close(a->dir_fd);
  a->dir_fd = -1;
  return rc ? audit_seterr(a, rbl_from_errno(rc), "audit: %s: sync directory: %s", strerror(rc))
            : 0;
}

static int audit_fail(rbl_audit *a, int e, const char *what);

/* Waits for the directory's fsync; 0 or the chain's error (every later call returns it). */
static int dir_sync_wait(rbl_audit *a) {
  if (!a->dir_pending) return 0;
  pthread_join(a->dir_thread, NULL);
  a->dir_pending = 0;
  close(a->dir_fd);
  a->dir_fd = -1;
  return a->dir_rc ? audit_fail(a, a->dir_rc, "sync directory: ") : 0;
}

/* Creates the chain's directory (one level, e.g. ./audit) when it is missing. */
static void audit_mkdir_parent(const char *path) {
  char *copy = strdup(path);
  if (copy && mkdir(dirname(copy), 0750) == 0) audit_fsync_dir(path, 2);
  free(copy);
}

/* A line that holds a whole record (an object with a numeric seq and a string hash), or NULL. */
static cJSON *audit_parse_record(const char *p, size_t n) {
  const char *end = NULL;
  cJSON *j = cJSON_ParseWithLengthOpts(p, n, &end, 0);
  if (j && end == p + n && cJSON_IsObject(j) &&
      cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(j, "seq")) &&
      cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "hash")))
    return j;
  cJSON_Delete(j);
  return NULL;
}

/* Takes seq/prev from the last record; refuses another incident's chain. */
static int audit_continue_from(rbl_audit *a, cJSON *rec) {
  const char *inc = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(rec, "incident"));
  const char *hash = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(rec, "hash"));
  double seq = cJSON_GetObjectItemCaseSensitive(rec, "seq")->valuedouble;
  int rc = 0;
  if (!inc || strcmp(inc, a->incident) != 0) {
    snprintf(a->err, sizeof a->err,
             "audit: %s: the chain belongs to incident %.100s, not %.100s: give --incident %.100s "
             "to continue it, or another --audit path",
             a->path, inc ? inc : "(none)", a->incident, inc ? inc : "(none)");
    rc = RBL_EINVAL;
  } else if (strlen(hash) != RBL_AUDIT_HASH_LEN || strncmp(hash, "sha256:", 7) != 0 || seq < 0) {
    rc = audit_seterr(a, RBL_EINVAL, "audit: %s: %s", "the last record has no valid seq/hash");
  } else {
    a->next_seq = (int64_t)seq + 1;
    memcpy(a->head, hash, RBL_AUDIT_HASH_LEN + 1);
  }
  cJSON_Delete(rec);
  return rc;
}

/* Remembers the torn region w[from, len) so the next record seals it (docs/audit.md). */
static int audit_torn(rbl_audit *a, const char *w, size_t from, size_t len) {
  if (from >= len) return 0;
  size_t n = len - from;
  if (n > AUDIT_TORN_MAX)
    return audit_seterr(a, RBL_EINVAL, "audit: %s: %s",
                        "more than 1 MiB at the end is not audit "
                        "records (not a torn write); refusing to append");
  a->need_newline = w[len - 1] != '\n';
  if (!a->need_newline) n--;
  a->torn_pending = 1;
  a->torn_bytes = n;
  audit_sha256(w + from, n, a->torn_sha);
  return 0;
}

/* Scans the window w (the last len bytes of the file; whole file when at_start) from the
 * end for the last record. Returns 1 when done, 0 when a larger window is needed. */
static int audit_scan_tail(rbl_audit *a, const char *w, size_t len, int at_start, int *rc) {
  const char *nl = memrchr(w, '\n', len);
  const char *seg = nl ? nl + 1 : w;
  size_t torn_from = len;
  if (!nl && !at_start) return 0;
  if (seg < w + len) {
    cJSON *rec = audit_parse_record(seg, (size_t)(w + len - seg));
    if (rec) {
      a->need_newline = 1;
      *rc = audit_continue_from(a, rec);
      return 1;
    }
    torn_from = (size_t)(seg - w);
  }
  while (nl) {
    const char *pnl = nl > w ? memrchr(w, '\n', (size_t)(nl - w)) : NULL;
    if (!pnl && !at_start) return 0;
    const char *ls = pnl ? pnl + 1 : w;
    cJSON *rec = audit_parse_record(ls, (size_t)(nl - ls));
    if (rec) {
      *rc = audit_torn(a, w, torn_from, len);
      if (*rc == 0)
        *rc = audit_continue_from(a, rec);
      else
        cJSON_Delete(rec);
      return 1;
    }
    torn_from = (size_t)(ls - w);
    nl = pnl;
  }
  *rc = audit_torn(a, w, 0, len); /* no record at all: a first write that was torn */
  return 1;
}

static int audit_recover(rbl_audit *a, off_t size) {
  size_t win = 65536;
  for (;;) {
    if (win > AUDIT_WINDOW_MAX)
      return audit_seterr(a, RBL_EINVAL, "audit: %s: %s", "no record in the last 64 MiB");
    size_t n = (off_t)win < size ? win : (size_t)size;
    char *w = malloc(n ? n : 1);
    if (!w) return RBL_ENOMEM;
    ssize_t r = pread(a->fd, w, n, size - (off_t)n);
    if (r != (ssize_t)n) {
      int e = r < 0 ? errno : EIO;
      free(w);
      return audit_seterr(a, rbl_from_errno(e), "audit: %s: read: %s", strerror(e));
    }
    int rc = 0, done = audit_scan_tail(a, w, n, (off_t)n == size, &rc);
    free(w);
    if (done) return rc;
    win *= 4;
  }
}

/* Hashes bytes [0, size) of fd into c (a fresh SHA-256 context). Returns 0 or -1. */
static int audit_hash_file(int fd, off_t size, rbl_sha256_ctx *c) {
  size_t cap = 1u << 20;
  char *b = malloc(cap);
  if (!b) return -1;
  rbl_sha256_init(c);
  for (off_t off = 0; off < size;) {
    size_t want = size - off < (off_t)cap ? (size_t)(size - off) : cap;
    ssize_t r = pread(fd, b, want, off);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      free(b);
      return -1;
    }
    rbl_sha256_update(c, b, (size_t)r);
    off += r;
  }
  free(b);
  return 0;
}

/* Remembers the file's identity and a hash of its content at open; every write extends both. A
 * failure here only turns the check off (rbl_audit_changed then says it could not check). */
static void audit_track_open(rbl_audit *a, const struct stat *st) {
  a->dev = st->st_dev;
  a->ino = st->st_ino;
  a->expect = st->st_size;
  a->contents = malloc(sizeof *a->contents);
  if (a->contents && audit_hash_file(a->fd, st->st_size, a->contents) < 0) {
    free(a->contents);
    a->contents = NULL;
  }
}

static int audit_open_file(rbl_audit *a) {
  int created = 0;
  a->fd = open(a->path, O_RDWR | O_APPEND | O_CLOEXEC);
  if (a->fd < 0 && errno == ENOENT) {
    a->fd = open(a->path, O_RDWR | O_APPEND | O_CLOEXEC | O_CREAT | O_EXCL, 0600);
    if (a->fd < 0 && errno == ENOENT) {
      audit_mkdir_parent(a->path);
      a->fd = open(a->path, O_RDWR | O_APPEND | O_CLOEXEC | O_CREAT | O_EXCL, 0600);
    }
    created = a->fd >= 0;
    if (a->fd < 0 && errno == EEXIST) a->fd = open(a->path, O_RDWR | O_APPEND | O_CLOEXEC);
  }
  if (a->fd < 0) {
    int e = errno;
    return audit_seterr(a, rbl_from_errno(e), "audit: %s: %s", strerror(e));
  }
  int rc = audit_lock(a);
  if (rc == 0 && created) rc = dir_sync_start(a);
  struct stat st;
  if (rc == 0 && fstat(a->fd, &st) < 0)
    rc = audit_seterr(a, RBL_EIO, "audit: %s: %s", strerror(errno));
  if (rc == 0 && st.st_size > 0) rc = audit_recover(a, st.st_size);
  if (rc == 0) audit_track_open(a, &st);
  return rc;
}

static void audit_free(rbl_audit *a) {
  if (a->dir_pending) pthread_join(a->dir_thread, NULL);
  if (a->dir_fd >= 0) close(a->dir_fd);
  if (a->fd >= 0) close(a->fd);
  free(a->contents);
  if (a->key) explicit_bzero(a->key, a->keylen);
  free(a->key);
  if (a->sign) EVP_PKEY_free(a->sign);
  rbl_audit_hasher_free(a->hasher);
  rbl_jcs_buf_free(&a->buf);
  free(a->path);
  free(a->incident);
  free(a->run);
  free(a);
}

int rbl_audit_open(rbl_audit **out, const rbl_audit_opts *o, char *err, size_t errlen) {
  *out = NULL;
  if (!o || !o->path || !*o->path || !o->incident || !*o->incident || !o->run || !*o->run) {
    snprintf(err, errlen, "audit: path, incident and run are required");
    return RBL_EINVAL;
  }
  rbl_audit *a = calloc(1, sizeof *a);
  if (!a) return RBL_ENOMEM;
  a->fd = -1;
  a->dir_fd = -1;
  a->path = strdup(o->path);
  a->incident = strdup(o->incident);
  a->run = strdup(o->run);
  int rc = a->path && a->incident && a->run ? 0 : RBL_ENOMEM;
  rbl_audit_genesis(o->incident, a->head);
  if (rc == 0 && o->hmac_key_file)
    rc = rbl_audit_load_key(o->hmac_key_file, &a->key, &a->keylen, a->err, sizeof a->err);
  if (rc == 0 && o->sign_key_file) rc = audit_load_sign_key(a, o->sign_key_file);
  if (rc == 0 && a->key && rbl_ossl_load(a->err, sizeof a->err) != 0) rc = RBL_EIO;
  if (rc == 0 && !(a->hasher = rbl_audit_hasher_new(a->key, a->keylen))) rc = RBL_ENOMEM;
  if (rc == 0) rc = audit_open_file(a);
  if (rc < 0) {
    snprintf(err, errlen, "%s", a->err[0] ? a->err : rbl_strerror(rc));
    audit_free(a);
    return rc;
  }
  *out = a;
  return 0;
}

/* ---- appending ---- */

static int audit_fail(rbl_audit *a, int e, const char *what) {
  a->failed = rbl_from_errno(e);
  if (a->failed == 0 || a->failed == RBL_EINVAL || a->failed == RBL_ENOTFOUND) a->failed = RBL_EIO;
  snprintf(a->err, sizeof a->err, "audit: %s: %s%s", a->path, what, strerror(e));
  return a->failed;
}

static int audit_write_all(rbl_audit *a, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(a->fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return audit_fail(a, errno, "");
    if (w == 0) return audit_fail(a, EIO, "");
    if (a->contents) rbl_sha256_update(a->contents, p, (size_t)w);
    a->expect += w;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static void audit_now(char out[32]) {
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(out + n, 32 - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

/* Sets the writer's fields on rec, replacing any the caller put there. */
static int audit_stamp(rbl_audit *a, cJSON *rec) {
  static const char *const reserved[] = {"seq",  "ts",   "incident", "run",
                                         "prev", "hash", "mac",      "torn"};
  char ts[32];
  for (size_t i = 0; i < sizeof reserved / sizeof *reserved; i++)
    cJSON_DeleteItemFromObjectCaseSensitive(rec, reserved[i]);
  audit_now(ts);
  int ok = cJSON_AddNumberToObject(rec, "seq", (double)a->next_seq) &&
           cJSON_AddStringToObject(rec, "ts", ts) &&
           cJSON_AddStringToObject(rec, "incident", a->incident) &&
           cJSON_AddStringToObject(rec, "run", a->run) &&
           cJSON_AddStringToObject(rec, "prev", a->head);
  if (ok && a->torn_pending) {
    cJSON *t = cJSON_AddObjectToObject(rec, "torn");
    ok = t && cJSON_AddNumberToObject(t, "bytes", (double)a->torn_bytes) &&
         cJSON_AddStringToObject(t, "sha256", a->torn_sha);
  }
  return ok ? 0 : RBL_ENOMEM;
}

/* Builds the line (canonical record with hash and mac, '\n') into a->buf; hash into out. */
static int audit_build(rbl_audit *a, cJSON *rec, char hash[RBL_AUDIT_HASH_LEN + 1]) {
  char mac[RBL_AUDIT_MAC_LEN + 1];
  if (!cJSON_IsObject(rec) || !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(rec, "kind")))
    return RBL_EINVAL;
  int rc = audit_stamp(a, rec);
  a->buf.len = 0;
  if (rc == 0 && a->need_newline) rc = rbl_jcs_buf_put(&a->buf, "\n", 1);
  size_t base = a->buf.len;
  if (rc == 0) rc = rbl_jcs_append(&a->buf, rec);
  if (rc < 0) return rc;
  rbl_jcs_piece all = {base, a->buf.len - base};
  if ((rc = rbl_audit_hasher_run(a->hasher, a->buf.data, &all, 1, hash, mac)) < 0) return rc;
  if (!cJSON_AddStringToObject(rec, "hash", hash) ||
      (mac[0] && !cJSON_AddStringToObject(rec, "mac", mac)))
    return RBL_ENOMEM;
  a->buf.len = base;
  if ((rc = rbl_jcs_append(&a->buf, rec)) < 0) return rc;
  return rbl_jcs_buf_put(&a->buf, "\n", 1);
}

int64_t rbl_audit_append(rbl_audit *a, cJSON *rec) {
  char hash[RBL_AUDIT_HASH_LEN + 1];
  if (!a || a->failed) {
    cJSON_Delete(rec);
    return a ? a->failed : RBL_EINVAL;
  }
  int rc = audit_build(a, rec, hash);
  cJSON_Delete(rec);
  if (rc < 0) {
    snprintf(a->err, sizeof a->err, "audit: %s: record not written: %s", a->path,
             rc == RBL_EINVAL ? "not an object with a string \"kind\", or not canonicalizable "
                                "(non-finite number, invalid UTF-8, duplicate key)"
                              : rbl_strerror(rc));
    return rc;
  }
  if ((rc = audit_write_all(a, a->buf.data, a->buf.len)) < 0) return rc;
  memcpy(a->head, hash, sizeof a->head);
  a->need_newline = a->torn_pending = 0;
  a->dirty = a->appended = 1;
  return a->next_seq++;
}

static int audit_sync(rbl_audit *a, int dir) {
  if (!a) return RBL_EINVAL;
  if (a->failed) return a->failed;
  if (!a->dirty) return dir ? dir_sync_wait(a) : 0;
  while (fdatasync(a->fd) < 0) {
    if (errno != EINTR) return audit_fail(a, errno, "sync: ");
  }
  a->dirty = 0;
  return dir ? dir_sync_wait(a) : 0;
}

int rbl_audit_sync(rbl_audit *a) { return audit_sync(a, 1); }

int rbl_audit_sync_written(rbl_audit *a) { return audit_sync(a, 0); }

const char *rbl_audit_head(const rbl_audit *a) { return a ? a->head : ""; }

int rbl_audit_changed(rbl_audit *a, char *msg, size_t n) {
  struct stat st, now;
  if (!a || a->fd < 0 || a->failed) return 0;
  if (fstat(a->fd, &st) < 0) return 0;
  if (stat(a->path, &now) < 0) {
    snprintf(msg, n, "%s was removed or renamed (%s)", a->path, strerror(errno));
    return 1;
  }
  if (now.st_dev != a->dev || now.st_ino != a->ino) {
    snprintf(msg, n, "%s was replaced by another file", a->path);
    return 1;
  }
  if (st.st_size != a->expect) {
    snprintf(msg, n,
             "%s is %jd bytes, but this run found %jd and wrote the rest itself: someone else "
             "%s it",
             a->path, (intmax_t)st.st_size, (intmax_t)a->expect,
             st.st_size > a->expect ? "appended to" : "truncated");
    return 1;
  }
  if (!a->contents) {
    snprintf(msg, n, "%s: its content could not be tracked (read failed at open)", a->path);
    return 1;
  }
  unsigned char want[32], got[32];
  rbl_sha256_ctx copy = *a->contents, re;
  rbl_sha256_final(&copy, want);
  int ok = audit_hash_file(a->fd, a->expect, &re) == 0;
  if (ok) rbl_sha256_final(&re, got);
  if (!ok) {
    snprintf(msg, n, "%s could not be read back to check it", a->path);
    return 1;
  }
  if (memcmp(want, got, 32) != 0) {
    snprintf(msg, n,
             "%s holds other bytes than this run read and wrote (same size): someone else "
             "rewrote part of it",
             a->path);
    return 1;
  }
  return 0;
}

const char *rbl_audit_error(const rbl_audit *a) { return a ? a->err : "audit: no chain"; }

/* Appends the signature record over the current head (docs/audit.md, "Signatures"). */
static int audit_sign(rbl_audit *a) {
  unsigned char sig[64], raw[32];
  size_t siglen = sizeof sig, rawlen = sizeof raw, mlen = 0;
  char b64[96], fpr[RBL_AUDIT_HASH_LEN + 1];
  char *msg = rbl_audit_sig_message(a->incident, a->head, &mlen);
  EVP_MD_CTX *c = EVP_MD_CTX_new();
  int ok = msg && c && EVP_DigestSignInit(c, NULL, NULL, NULL, a->sign) == 1 &&
           EVP_DigestSign(c, sig, &siglen, (const unsigned char *)msg, mlen) == 1 &&
           EVP_PKEY_get_raw_public_key(a->sign, raw, &rawlen) == 1;
  EVP_MD_CTX_free(c);
  free(msg);
  if (!ok) {
    snprintf(a->err, sizeof a->err, "audit: %s: Ed25519 signing failed", a->path);
    return RBL_EIO;
  }
  EVP_EncodeBlock((unsigned char *)b64, sig, (int)siglen);
  audit_sha256(raw, rawlen, fpr);
  cJSON *rec = cJSON_CreateObject();
  cJSON_AddStringToObject(rec, "kind", "signature");
  cJSON_AddStringToObject(rec, "alg", "ed25519");
  cJSON_AddStringToObject(rec, "head", a->head);
  cJSON_AddStringToObject(rec, "sig", b64);
  cJSON_AddStringToObject(rec, "pubkey_sha256", fpr);
  int64_t r = rbl_audit_append(a, rec);
  return r < 0 ? (int)r : 0;
}

int rbl_audit_seal(rbl_audit *a) {
  if (!a) return 0;
  int rc = a->failed;
  if (rc == 0 && a->sign && a->appended && !a->sealed) rc = audit_sign(a);
  if (rc == 0) a->sealed = 1;
  if (rc == 0) rc = rbl_audit_sync(a);
  return rc;
}

int rbl_audit_close(rbl_audit *a) {
  if (!a) return 0;
  int rc = a->failed;
  if (rc == 0 && a->sign && a->appended && !a->sealed) rc = audit_sign(a);
  if (rc == 0) rc = rbl_audit_sync(a);
  audit_free(a);
  return rc;
}

/* ---- rbl audit ---- */

static const char audit_usage[] =
    "usage: rbl audit verify PATH [--key FILE] [--pubkey FILE] [--head sha256:HEX] [--json]\n"
    "       rbl audit show PATH [--run ID] [--tenant T] [--since TIME] [--until TIME] [--json]\n"
    "\n"
    "  verify  proves the chain untouched: exit 0 intact, 1 broken, 2 unreadable or bad usage\n"
    "  show    prints each run as a postmortem timeline, one line per record: exit 0 shown,\n"
    "          2 unreadable, bad usage, a --run that names no run or several, a bad TIME\n"
    "\n"
    "See docs/audit.md for the record format and every message.\n";

int rbl_audit_main(int argc, char **argv) {
  if (argc >= 1 && strcmp(argv[0], "verify") == 0) return rbl_audit_verify_main(argc, argv);
  if (argc >= 1 && strcmp(argv[0], "show") == 0) return rbl_audit_show_main(argc, argv);
  if (argc >= 1 && (strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0 ||
                    strcmp(argv[0], "help") == 0)) {
    fputs(audit_usage, stdout);
    return 0;
  }
  if (argc >= 1) fprintf(stderr, "rbl audit: unknown subcommand '%s'\n", argv[0]);
  fputs(audit_usage, stderr);
  return 2;
}
