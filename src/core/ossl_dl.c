/* OpenSSL on first use (ossl_dl.h): one dlopen of Debian's libssl.so.3 (which brings its
 * libcrypto.so.3), one table. */
#define RBL_OSSL_DL_IMPL 1
#include "ossl_dl.h"
#include "rbl.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RBL_CRYPTO_SONAME "libcrypto.so.3"
#define RBL_SSL_SONAME    "libssl.so.3"

static rbl_ossl_api api;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static int load_rc;
static int loaded; /* set once, inside load */
static char load_err[320];

#define NAME(f) #f,
static const char *const crypto_syms[] = {RBL_OSSL_CRYPTO(NAME)};
static const char *const ssl_syms[] = {RBL_OSSL_SSL(NAME)};
#undef NAME
_Static_assert((sizeof crypto_syms / sizeof *crypto_syms + sizeof ssl_syms / sizeof *ssl_syms) *
                       sizeof(void (*)(void)) ==
                   sizeof(rbl_ossl_api),
               "one symbol name per slot of rbl_ossl_api");

static int fill(void *lib, const char *soname, const char *const *syms, size_t n,
                void (**slot)(void)) {
  for (size_t i = 0; i < n; i++) {
    void *f = dlsym(lib, syms[i]);
    if (!f) {
      snprintf(load_err, sizeof load_err, "%s has no %s: OpenSSL 3.0 or newer is needed", soname,
               syms[i]);
      return RBL_EIO;
    }
    memcpy(&slot[i], &f, sizeof f);
  }
  return 0;
}

static void load(void) {
  /* libssl first: it needs libcrypto, so the loader maps the one libcrypto both use. */
  void *ssl = dlopen(RBL_SSL_SONAME, RTLD_NOW | RTLD_LOCAL);
  void *crypto = ssl ? dlopen(RBL_CRYPTO_SONAME, RTLD_NOW | RTLD_LOCAL) : NULL;
  if (!ssl || !crypto) {
    snprintf(load_err, sizeof load_err, "cannot load %s (%s): install Debian's libssl3 package",
             ssl ? RBL_CRYPTO_SONAME : RBL_SSL_SONAME, dlerror());
    load_rc = RBL_EIO;
    return;
  }
  size_t nc = sizeof crypto_syms / sizeof *crypto_syms;
  void (**slot)(void) = (void (**)(void)) & api;
  load_rc = fill(crypto, RBL_CRYPTO_SONAME, crypto_syms, nc, slot);
  if (!load_rc)
    load_rc = fill(ssl, RBL_SSL_SONAME, ssl_syms, sizeof ssl_syms / sizeof *ssl_syms, slot + nc);
  if (load_rc)
    memset(&api, 0, sizeof api); /* the libraries stay loaded: a half table is never used */
  else
    __atomic_store_n(&loaded, 1, __ATOMIC_RELEASE);
}

int rbl_ossl_load(char *err, size_t errlen) {
  pthread_once(&once, load);
  if (load_rc && err && errlen) snprintf(err, errlen, "%s", load_err);
  return load_rc;
}

const rbl_ossl_api *rbl_ossl(void) {
  if (rbl_ossl_load(NULL, 0) != 0) {
    fprintf(stderr, "rbl: %s\n", load_err);
    abort();
  }
  return &api;
}

int rbl_ossl_loaded(void) { return __atomic_load_n(&loaded, __ATOMIC_ACQUIRE); }
