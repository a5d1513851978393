/* OpenSSL, loaded on first use: rbl links no libcrypto or libssl (statically linked, their
 * relocations, page faults and constructors were a fifth of a no-op run's CPU), and dlopen()s
 * Debian's libcrypto.so.3 and libssl.so.3 the first time something needs them: an audit key
 * (HMAC) or signing key, `rbl audit verify` with a key, notify's webhook signatures, kube's
 * base64, rbl serve. The chain's SHA-256 is rbl's own (sha256.h), so a run without a key never
 * loads OpenSSL; libcurl loads the same libraries for TLS when a run makes a request.
 *
 * A file that calls OpenSSL includes this header instead of <openssl/...>; the names listed in
 * RBL_OSSL_CRYPTO / RBL_OSSL_SSL then go through one table of function pointers. Code that can
 * report an error calls rbl_ossl_load first and reports its message; a call through the table
 * without it loads the libraries then, and stops rbl with that message if they are missing.
 * Calling a function not in the lists fails at link time: add its name to a list and a
 * #define below. */
#ifndef RBL_OSSL_DL_H
#define RBL_OSSL_DL_H

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <stddef.h>

/* X(name) for every function rbl calls, by library. */
#define RBL_OSSL_CRYPTO(X)                                                                         \
  X(BIO_ctrl_pending)                                                                              \
  X(BIO_free)                                                                                      \
  X(BIO_new)                                                                                       \
  X(BIO_new_mem_buf)                                                                               \
  X(BIO_read)                                                                                      \
  X(BIO_s_mem)                                                                                     \
  X(BIO_write)                                                                                     \
  X(CRYPTO_memcmp)                                                                                 \
  X(ERR_clear_error)                                                                               \
  X(ERR_error_string_n)                                                                            \
  X(ERR_get_error)                                                                                 \
  X(EVP_DecodeBlock)                                                                               \
  X(EVP_Digest)                                                                                    \
  X(EVP_DigestFinal_ex)                                                                            \
  X(EVP_DigestInit_ex)                                                                             \
  X(EVP_DigestSign)                                                                                \
  X(EVP_DigestSignInit)                                                                            \
  X(EVP_DigestUpdate)                                                                              \
  X(EVP_DigestVerify)                                                                              \
  X(EVP_DigestVerifyInit)                                                                          \
  X(EVP_EncodeBlock)                                                                               \
  X(EVP_MAC_CTX_free)                                                                              \
  X(EVP_MAC_CTX_new)                                                                               \
  X(EVP_MAC_fetch)                                                                                 \
  X(EVP_MAC_final)                                                                                 \
  X(EVP_MAC_free)                                                                                  \
  X(EVP_MAC_init)                                                                                  \
  X(EVP_MAC_update)                                                                                \
  X(EVP_MD_CTX_free)                                                                               \
  X(EVP_MD_CTX_new)                                                                                \
  X(EVP_PKEY_free)                                                                                 \
  X(EVP_PKEY_get_id)                                                                               \
  X(EVP_PKEY_get_raw_public_key)                                                                   \
  X(EVP_sha256)                                                                                    \
  X(HMAC)                                                                                          \
  X(OPENSSL_cleanse)                                                                               \
  X(OSSL_PARAM_construct_end)                                                                      \
  X(OSSL_PARAM_construct_utf8_string)                                                              \
  X(PEM_read_PUBKEY)                                                                               \
  X(PEM_read_bio_PrivateKey)                                                                       \
  X(RAND_bytes)
#define RBL_OSSL_SSL(X)                                                                            \
  X(SSL_CTX_check_private_key)                                                                     \
  X(SSL_CTX_ctrl)                                                                                  \
  X(SSL_CTX_free)                                                                                  \
  X(SSL_CTX_new)                                                                                   \
  X(SSL_CTX_use_PrivateKey_file)                                                                   \
  X(SSL_CTX_use_certificate_chain_file)                                                            \
  X(SSL_do_handshake)                                                                              \
  X(SSL_free)                                                                                      \
  X(SSL_get_error)                                                                                 \
  X(SSL_get_rbio)                                                                                  \
  X(SSL_get_wbio)                                                                                  \
  X(SSL_is_init_finished)                                                                          \
  X(SSL_new)                                                                                       \
  X(SSL_read)                                                                                      \
  X(SSL_set_accept_state)                                                                          \
  X(SSL_set_bio)                                                                                   \
  X(SSL_write)                                                                                     \
  X(TLS_server_method)

/* One slot per function, typed from OpenSSL's own declaration. */
#define RBL_OSSL_SLOT(f) __typeof__(&f) f;
typedef struct rbl_ossl_api {
  RBL_OSSL_CRYPTO(RBL_OSSL_SLOT)
  RBL_OSSL_SSL(RBL_OSSL_SLOT)
} rbl_ossl_api;
#undef RBL_OSSL_SLOT

/* Loads libcrypto.so.3 and libssl.so.3 once per process (thread-safe). Returns 0, or RBL_EIO
 * with the cause (naming the library and the Debian package) in err. Safe to call again. */
int rbl_ossl_load(char *err, size_t errlen);
/* The table, loading it first; if the libraries cannot be loaded, prints why and aborts. */
const rbl_ossl_api *rbl_ossl(void);
/* Whether the libraries are loaded (tests: a no-op run must not load them). */
int rbl_ossl_loaded(void);

#ifndef RBL_OSSL_DL_IMPL
#define BIO_ctrl_pending                   (*rbl_ossl()->BIO_ctrl_pending)
#define BIO_free                           (*rbl_ossl()->BIO_free)
#define BIO_new                            (*rbl_ossl()->BIO_new)
#define BIO_new_mem_buf                    (*rbl_ossl()->BIO_new_mem_buf)
#define BIO_read                           (*rbl_ossl()->BIO_read)
#define BIO_s_mem                          (*rbl_ossl()->BIO_s_mem)
#define BIO_write                          (*rbl_ossl()->BIO_write)
#define CRYPTO_memcmp                      (*rbl_ossl()->CRYPTO_memcmp)
#define ERR_clear_error                    (*rbl_ossl()->ERR_clear_error)
#define ERR_error_string_n                 (*rbl_ossl()->ERR_error_string_n)
#define ERR_get_error                      (*rbl_ossl()->ERR_get_error)
#define EVP_DecodeBlock                    (*rbl_ossl()->EVP_DecodeBlock)
#define EVP_Digest                         (*rbl_ossl()->EVP_Digest)
#define EVP_DigestFinal_ex                 (*rbl_ossl()->EVP_DigestFinal_ex)
#define EVP_DigestInit_ex                  (*rbl_ossl()->EVP_DigestInit_ex)
#define EVP_DigestSign                     (*rbl_ossl()->EVP_DigestSign)
#define EVP_DigestSignInit                 (*rbl_ossl()->EVP_DigestSignInit)
#define EVP_DigestUpdate                   (*rbl_ossl()->EVP_DigestUpdate)
#define EVP_DigestVerify                   (*rbl_ossl()->EVP_DigestVerify)
#define EVP_DigestVerifyInit               (*rbl_ossl()->EVP_DigestVerifyInit)
#define EVP_EncodeBlock                    (*rbl_ossl()->EVP_EncodeBlock)
#define EVP_MAC_CTX_free                   (*rbl_ossl()->EVP_MAC_CTX_free)
#define EVP_MAC_CTX_new                    (*rbl_ossl()->EVP_MAC_CTX_new)
#define EVP_MAC_fetch                      (*rbl_ossl()->EVP_MAC_fetch)
#define EVP_MAC_final                      (*rbl_ossl()->EVP_MAC_final)
#define EVP_MAC_free                       (*rbl_ossl()->EVP_MAC_free)
#define EVP_MAC_init                       (*rbl_ossl()->EVP_MAC_init)
#define EVP_MAC_update                     (*rbl_ossl()->EVP_MAC_update)
#define EVP_MD_CTX_free                    (*rbl_ossl()->EVP_MD_CTX_free)
#define EVP_MD_CTX_new                     (*rbl_ossl()->EVP_MD_CTX_new)
#define EVP_PKEY_free                      (*rbl_ossl()->EVP_PKEY_free)
#define EVP_PKEY_get_id                    (*rbl_ossl()->EVP_PKEY_get_id)
#define EVP_PKEY_get_raw_public_key        (*rbl_ossl()->EVP_PKEY_get_raw_public_key)
#define EVP_sha256                         (*rbl_ossl()->EVP_sha256)
#define HMAC                               (*rbl_ossl()->HMAC)
#define OPENSSL_cleanse                    (*rbl_ossl()->OPENSSL_cleanse)
#define OSSL_PARAM_construct_end           (*rbl_ossl()->OSSL_PARAM_construct_end)
#define OSSL_PARAM_construct_utf8_string   (*rbl_ossl()->OSSL_PARAM_construct_utf8_string)
#define PEM_read_PUBKEY                    (*rbl_ossl()->PEM_read_PUBKEY)
#define PEM_read_bio_PrivateKey            (*rbl_ossl()->PEM_read_bio_PrivateKey)
#define RAND_bytes                         (*rbl_ossl()->RAND_bytes)
#define SSL_CTX_check_private_key          (*rbl_ossl()->SSL_CTX_check_private_key)
#define SSL_CTX_ctrl                       (*rbl_ossl()->SSL_CTX_ctrl)
#define SSL_CTX_free                       (*rbl_ossl()->SSL_CTX_free)
#define SSL_CTX_new                        (*rbl_ossl()->SSL_CTX_new)
#define SSL_CTX_use_PrivateKey_file        (*rbl_ossl()->SSL_CTX_use_PrivateKey_file)
#define SSL_CTX_use_certificate_chain_file (*rbl_ossl()->SSL_CTX_use_certificate_chain_file)
#define SSL_do_handshake                   (*rbl_ossl()->SSL_do_handshake)
#define SSL_free                           (*rbl_ossl()->SSL_free)
#define SSL_get_error                      (*rbl_ossl()->SSL_get_error)
#define SSL_get_rbio                       (*rbl_ossl()->SSL_get_rbio)
#define SSL_get_wbio                       (*rbl_ossl()->SSL_get_wbio)
#define SSL_is_init_finished               (*rbl_ossl()->SSL_is_init_finished)
#define SSL_new                            (*rbl_ossl()->SSL_new)
#define SSL_read                           (*rbl_ossl()->SSL_read)
#define SSL_set_accept_state               (*rbl_ossl()->SSL_set_accept_state)
#define SSL_set_bio                        (*rbl_ossl()->SSL_set_bio)
#define SSL_write                          (*rbl_ossl()->SSL_write)
#define TLS_server_method                  (*rbl_ossl()->TLS_server_method)
#endif

#endif
