/* The audit hash chain: an append-only JSON Lines file, one record per primitive event. */
#ifndef RBL_AUDIT_H
#define RBL_AUDIT_H

#include <stdint.h>
#include <cjson/cJSON.h>

typedef struct rbl_audit rbl_audit;

typedef struct rbl_audit_opts {
  const char *path;          /* the chain file; created (and its directory synced) if missing */
  const char *incident;      /* bound into every record */
  const char *run;           /* this run's id, bound into every record */
  const char *hmac_key_file; /* optional: HMAC-SHA256 "mac" on every record; refused if group/world
                                readable */
  const char
      *sign_key_file; /* optional: Ed25519 private key (PEM); the run's final head is signed */
} rbl_audit_opts;

/* Opens (or creates) the chain, takes an exclusive lock for the life of the handle, reads
 * the existing tail to continue seq/prev. On failure returns RBL_E* and writes a message
 * naming the file and the cause into err. */
int rbl_audit_open(rbl_audit **out, const rbl_audit_opts *o, char *err, size_t errlen);

/* Appends one record. rec is a cJSON object holding "kind" and the record's own fields;
 * ownership passes to the writer, which adds seq, ts, incident, run, prev, hash (and mac).
 * The line is written with one write(2) but not synced. Returns the record's seq (>= 0)
 * or RBL_E* (the handle is then failed: every later call fails too). */
int64_t rbl_audit_append(rbl_audit *a, cJSON *rec);

/* Makes every record appended so far durable (fdatasync); a no-op when nothing is new. A new
 * file's directory sync (started at open, beside the caller) is waited for here too.
 * Returns 0 or RBL_E*. */
int rbl_audit_sync(rbl_audit *a);
/* The same without waiting for a new file's directory sync, which goes on beside the caller
 * until the next rbl_audit_sync or the close (before any intent counts as durable): what open
 * wrote is durable and the handle still good. Returns 0 or RBL_E*. */
int rbl_audit_sync_written(rbl_audit *a);

/* "sha256:<64 hex>" of the last record in the file (this run's or an earlier one's). */
const char *rbl_audit_head(const rbl_audit *a);

/* Was the file changed by anyone but this handle since it was opened? Compares the file at path
 * (same inode), its size and the SHA-256 of its content with what the handle read at open and
 * wrote since. Returns 0 (unchanged, or the handle failed) or 1 with msg saying what changed. */
int rbl_audit_changed(rbl_audit *a, char *msg, size_t n);

/* The message of the last failure: names the file and the cause. */
const char *rbl_audit_error(const rbl_audit *a);

/* Writes the signature record if a signing key was given, syncs, unlocks, frees.
 * Returns 0 or RBL_E*. a may be NULL. */
int rbl_audit_close(rbl_audit *a);
/* Signs the head now (with a signing key, once) and syncs: rbl_audit_head is then the chain's
 * final head, the one a report quotes. Nothing may be appended after it. */
int rbl_audit_seal(rbl_audit *a);

/* A chain verified as `rbl audit verify PATH [--key K] [--pubkey P]` verifies it. */
typedef struct rbl_audit_verified {
  cJSON *records;    /* every record, in file order (torn lines left out); the caller frees */
  cJSON *notes;      /* verify's notes (strings); the caller frees */
  size_t macs, sigs; /* records carrying a mac / signature records */
  int keyed;         /* the macs were checked (a key was given) */
  int pubkeyed;      /* signatures were checked and every run is signed (a pubkey was given) */
  char head[72];     /* the last record's hash, or "" */
} rbl_audit_verified;

/* Verifies the chain at path exactly as `rbl audit verify` does, from one read of the file, and
 * hands back the records it verified: whoever acts on a chain acts on these, never on a second
 * read. key_file/pub_file may be NULL. Returns 0 intact (out filled), 1 broken (msg: verify's
 * "PATH: BROKEN at line L, seq S: reason" line), 2 unreadable file or bad key (msg says why). */
int rbl_audit_verify_file(const char *path, const char *key_file, const char *pub_file,
                          rbl_audit_verified *out, char *msg, size_t n);

/* `rbl audit verify|show ...`: argv[0] is "verify" or "show". Returns the exit status. */
int rbl_audit_main(int argc, char **argv);

/* Helpers shared by the writer, `rbl audit verify` and `rbl audit show` (src/audit*.c). */
#include <stddef.h>
#include "jcs.h"

#define RBL_AUDIT_HASH_LEN 71 /* "sha256:" + 64 hex */
#define RBL_AUDIT_MAC_LEN  76 /* "hmac-sha256:" + 64 hex */

/* Lower-case hex of n bytes into out (2n + 1 bytes). */
void rbl_audit_hex(const unsigned char *p, size_t n, char *out);

/* The prev of a chain's first record: "sha256:" + hex SHA-256("rbl-audit-v1\n" + incident). */
void rbl_audit_genesis(const char *incident, char out[RBL_AUDIT_HASH_LEN + 1]);

/* Reads a secret key file; refuses one accessible by group or others. *key is malloc'd. */
int rbl_audit_load_key(const char *path, unsigned char **key, size_t *len, char *err,
                       size_t errlen);

/* Record hashing: SHA-256 (and HMAC-SHA256 when a key is given) of pieces of base. */
typedef struct rbl_audit_hasher rbl_audit_hasher;
rbl_audit_hasher *rbl_audit_hasher_new(const unsigned char *key, size_t keylen);
void rbl_audit_hasher_free(rbl_audit_hasher *h);
int rbl_audit_hasher_run(rbl_audit_hasher *h, const char *base, const rbl_jcs_piece *p, size_t np,
                         char hash[RBL_AUDIT_HASH_LEN + 1], char mac[RBL_AUDIT_MAC_LEN + 1]);

/* The message an Ed25519 signature record signs (see docs/audit.md); malloc'd. */
char *rbl_audit_sig_message(const char *incident, const char *head, size_t *len);

/* The subcommands behind rbl_audit_main (argv[0] is the subcommand name). */
int rbl_audit_verify_main(int argc, char **argv);
int rbl_audit_show_main(int argc, char **argv);

#endif
