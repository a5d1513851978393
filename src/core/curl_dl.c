/* libcurl on first use (curl_dl.h): one dlopen of Debian's libcurl.so.4, one table. */
#define RBL_CURL_DL_IMPL 1
#include "curl_dl.h"
#include "rbl.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define RBL_CURL_SONAME "libcurl.so.4"

rbl_curl_api rbl_curl;

static pthread_once_t once = PTHREAD_ONCE_INIT;
static int load_rc;
static char load_err[256];

/* Which table slot each symbol fills, in rbl_curl_api's order. */
static const char *const syms[] = {"curl_global_init",      "curl_easy_init",
                                   "curl_easy_cleanup",     "curl_easy_reset",
                                   "curl_easy_setopt",      "curl_easy_getinfo",
                                   "curl_easy_strerror",    "curl_free",
                                   "curl_getdate",          "curl_multi_init",
                                   "curl_multi_cleanup",    "curl_multi_setopt",
                                   "curl_multi_add_handle", "curl_multi_remove_handle",
                                   "curl_multi_assign",     "curl_multi_socket_action",
                                   "curl_multi_info_read",  "curl_slist_append",
                                   "curl_slist_free_all",   "curl_url",
                                   "curl_url_cleanup",      "curl_url_set",
                                   "curl_url_get"};

_Static_assert(sizeof syms / sizeof *syms * sizeof(void (*)(void)) == sizeof(rbl_curl_api),
               "one symbol name per slot of rbl_curl_api");

static void load(void) {
  void *lib = dlopen(RBL_CURL_SONAME, RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    snprintf(load_err, sizeof load_err, "cannot load %s (%s): install Debian's libcurl4 package",
             RBL_CURL_SONAME, dlerror());
    load_rc = RBL_EIO;
    return;
  }
  void (**slot)(void) = (void (**)(void)) & rbl_curl;
  for (size_t i = 0; i < sizeof syms / sizeof *syms; i++) {
    void *f = dlsym(lib, syms[i]);
    if (!f) {
      snprintf(load_err, sizeof load_err, "%s has no %s: libcurl 7.80 or newer is needed",
               RBL_CURL_SONAME, syms[i]);
      memset(&rbl_curl, 0, sizeof rbl_curl);
      load_rc = RBL_EIO;
      return; /* the library stays loaded: dlclose is not worth a half-unloaded libcurl */
    }
    memcpy(&slot[i], &f, sizeof f);
  }
  if (rbl_curl.global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    snprintf(load_err, sizeof load_err, "curl_global_init failed");
    load_rc = RBL_EIO;
  }
}

int rbl_curl_load(char *err, size_t errlen) {
  pthread_once(&once, load);
  if (load_rc && err && errlen) snprintf(err, errlen, "%s", load_err);
  return load_rc;
}
