/* Debian's libcurl (libcurl4-openssl-dev), found through pkg-config. curl_easy_setopt and curl_easy_getinfo
 * are variadic, which Swift cannot call: these typed wrappers call them. */
#include <curl/curl.h>

static inline CURLcode px_curl_set_string(CURL *curl, CURLoption option, const char *value) {
    return curl_easy_setopt(curl, option, value);
}

static inline CURLcode px_curl_set_long(CURL *curl, CURLoption option, long value) {
    return curl_easy_setopt(curl, option, value);
}

static inline CURLcode px_curl_set_size(CURL *curl, CURLoption option, curl_off_t value) {
    return curl_easy_setopt(curl, option, value);
}

static inline CURLcode px_curl_set_pointer(CURL *curl, CURLoption option, void *value) {
    return curl_easy_setopt(curl, option, value);
}

static inline CURLcode px_curl_set_headers(CURL *curl, struct curl_slist *headers) {
    return curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
}

typedef size_t (*px_curl_write_fn)(char *data, size_t size, size_t count, void *user);

static inline CURLcode px_curl_set_writer(CURL *curl, px_curl_write_fn writer, void *user) {
    CURLcode status = curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, writer);
    return status != CURLE_OK ? status : curl_easy_setopt(curl, CURLOPT_WRITEDATA, user);
}

static inline long px_curl_response_code(CURL *curl) {
    long code = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &code);
    return code;
}

static inline CURLcode px_curl_global_init(void) { return curl_global_init(CURL_GLOBAL_DEFAULT); }
