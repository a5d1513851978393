/* libcurl, loaded on first use: rbl links no libcurl (its dependency tree is most of a
 * process's start-up), and dlopen()s Debian's libcurl.so.4 the first time a request starts.
 * A file that calls curl includes this header instead of <curl/curl.h>; the curl_* names
 * below then go through one table of function pointers filled by rbl_curl_load. */
#ifndef RBL_CURL_DL_H
#define RBL_CURL_DL_H

#define CURL_DISABLE_TYPECHECK 1 /* the typecheck macros would hide our function table */
#include <curl/curl.h>
#include <stddef.h>
#include <time.h>

typedef struct rbl_curl_api {
  CURLcode (*global_init)(long flags);
  CURL *(*easy_init)(void);
  void (*easy_cleanup)(CURL *e);
  void (*easy_reset)(CURL *e);
  CURLcode (*easy_setopt)(CURL *e, CURLoption opt, ...);
  CURLcode (*easy_getinfo)(CURL *e, CURLINFO info, ...);
  const char *(*easy_strerror)(CURLcode rc);
  void (*free)(void *p);
  time_t (*getdate)(const char *s, const time_t *unused);
  CURLM *(*multi_init)(void);
  CURLMcode (*multi_cleanup)(CURLM *m);
  CURLMcode (*multi_setopt)(CURLM *m, CURLMoption opt, ...);
  CURLMcode (*multi_add_handle)(CURLM *m, CURL *e);
  CURLMcode (*multi_remove_handle)(CURLM *m, CURL *e);
  CURLMcode (*multi_assign)(CURLM *m, curl_socket_t s, void *p);
  CURLMcode (*multi_socket_action)(CURLM *m, curl_socket_t s, int ev, int *running);
  CURLMsg *(*multi_info_read)(CURLM *m, int *left);
  struct curl_slist *(*slist_append)(struct curl_slist *l, const char *s);
  void (*slist_free_all)(struct curl_slist *l);
  CURLU *(*url)(void);
  void (*url_cleanup)(CURLU *u);
  CURLUcode (*url_set)(CURLU *u, CURLUPart what, const char *part, unsigned int flags);
  CURLUcode (*url_get)(const CURLU *u, CURLUPart what, char **part, unsigned int flags);
} rbl_curl_api;

extern rbl_curl_api rbl_curl;

/* Loads libcurl and runs curl_global_init once per process. Returns 0, or RBL_EIO with the
 * cause (naming the library and the Debian package) in err. Safe to call again. */
int rbl_curl_load(char *err, size_t errlen);

#ifndef RBL_CURL_DL_IMPL
#undef curl_easy_setopt
#undef curl_easy_getinfo
#undef curl_multi_setopt
#define curl_global_init         (*rbl_curl.global_init)
#define curl_easy_init           (*rbl_curl.easy_init)
#define curl_easy_cleanup        (*rbl_curl.easy_cleanup)
#define curl_easy_reset          (*rbl_curl.easy_reset)
#define curl_easy_setopt         (*rbl_curl.easy_setopt)
#define curl_easy_getinfo        (*rbl_curl.easy_getinfo)
#define curl_easy_strerror       (*rbl_curl.easy_strerror)
#define curl_free                (*rbl_curl.free)
#define curl_getdate             (*rbl_curl.getdate)
#define curl_multi_init          (*rbl_curl.multi_init)
#define curl_multi_cleanup       (*rbl_curl.multi_cleanup)
#define curl_multi_setopt        (*rbl_curl.multi_setopt)
#define curl_multi_add_handle    (*rbl_curl.multi_add_handle)
#define curl_multi_remove_handle (*rbl_curl.multi_remove_handle)
#define curl_multi_assign        (*rbl_curl.multi_assign)
#define curl_multi_socket_action (*rbl_curl.multi_socket_action)
#define curl_multi_info_read     (*rbl_curl.multi_info_read)
#define curl_slist_append        (*rbl_curl.slist_append)
#define curl_slist_free_all      (*rbl_curl.slist_free_all)
#define curl_url                 (*rbl_curl.url)
#define curl_url_cleanup         (*rbl_curl.url_cleanup)
#define curl_url_set             (*rbl_curl.url_set)
#define curl_url_get             (*rbl_curl.url_get)
#endif

#endif
