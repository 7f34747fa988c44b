/*
 * heartbeat.c - the heartbeat-source connector: publishes a CloudEvent to a
 * topic at a fixed interval, through the host's timer and publish services.
 *
 * Plain C11 against plexus.h (ABI 1.0); it needs only libc and pthreads.
 * See ../README.md for its configuration keys and guarantees.
 *
 * Threading: lifecycle hooks run on a kernel lifecycle thread; the tick
 * (hb_tick) on a kernel timer thread; publish completions (hb_published) on
 * any thread; operations (px_op_*) on whichever thread the kernel calls them
 * from. State shared between them is either immutable after on_create
 * (config strings, api, host), atomic (counters, interval), or guarded:
 *   timer_lock  - the timer's id and whether it runs (start/stop/set_interval);
 *                 never taken by the tick, so cancelling under it cannot
 *                 deadlock with a running tick.
 *   flight_lock - publishes in flight and whether on_destroy has happened;
 *                 completions that arrive after on_destroy free the
 *                 instance, and never touch the host.
 */
#define _GNU_SOURCE /* getrandom */

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "plexus.h"

#define HB_NAME "heartbeat-source"
#define HB_VERSION "1.0.0"
#define HB_DEFAULT_TOPIC "heartbeat"
#define HB_DEFAULT_SOURCE "/plexus/heartbeat"
#define HB_DEFAULT_INTERVAL_MS 1000u
#define HB_EVENT_TYPE "io.plexus.heartbeat"
/* The largest interval whose nanoseconds fit in a uint64_t (about 584 years). */
#define HB_MAX_INTERVAL_MS (UINT64_MAX / 1000000u)

/* Text this plugin owns: NUL-terminated, with its length. */
typedef struct hb_text {
    char *ptr;
    size_t len;
} hb_text;

typedef struct hb_instance {
    const px_host_api *api;
    px_host *host;
    hb_text topic;
    hb_text source;
    hb_text node_id;
    hb_text node_json; /* node_id as the inside of a JSON string */
    char run[17];      /* this instance's run token: 16 hex digits, fresh at every on_create */

    _Atomic uint64_t interval_ms;
    atomic_uint_fast64_t seq;       /* last sequence number used */
    atomic_uint_fast64_t published; /* acknowledged publishes */
    atomic_uint_fast64_t failed;    /* refused or failed publishes */

    pthread_mutex_t timer_lock;
    bool running;
    uint64_t timer_id;

    pthread_mutex_t flight_lock;
    pthread_cond_t drained;
    uint64_t in_flight;
    bool detached; /* on_destroy ran; the last completion frees */
} hb_instance;

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */
/* ------------------------------------------------------------------------ */

static px_str hb_str(const hb_text *t) { return (px_str){t->ptr, t->len}; }

static px_str hb_cstr(const char *s) { return (px_str){s, strlen(s)}; }

static bool hb_text_set(hb_text *t, const char *ptr, size_t len) {
    char *copy = malloc(len + 1);
    if (copy == NULL) {
        return false;
    }
    if (len > 0) {
        memcpy(copy, ptr, len);
    }
    copy[len] = '\0';
    t->ptr = copy;
    t->len = len;
    return true;
}

static void hb_text_free(hb_text *t) {
    free(t->ptr);
    t->ptr = NULL;
    t->len = 0;
}

#if defined(__GNUC__) || defined(__clang__)
#define HB_PRINTF(fmt_index, first_arg) __attribute__((format(printf, fmt_index, first_arg)))
#else
#define HB_PRINTF(fmt_index, first_arg)
#endif

/* Writes a formatted reason into err. */
static void hb_error(px_error *err, const char *fmt, ...) HB_PRINTF(2, 3);
static void hb_error(px_error *err, const char *fmt, ...) {
    char buf[PX_ERROR_CAPACITY];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    px_error_set(err, buf);
}

/* Logs a formatted line through the host. Only while the host is valid. */
static void hb_log(const hb_instance *hb, int32_t level, const char *fmt, ...) HB_PRINTF(3, 4);
static void hb_log(const hb_instance *hb, int32_t level, const char *fmt, ...) {
    char buf[PX_ERROR_CAPACITY];
    int n;
    va_list ap;
    va_start(ap, fmt);
    n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0) {
        return;
    }
    if ((size_t)n >= sizeof buf) {
        n = (int)sizeof buf - 1;
    }
    hb->api->log(hb->host, level, (px_str){buf, (size_t)n});
}

/* The value of a top-level config key, or NULL when absent. */
static const px_str *hb_config_value(const px_plugin_config *config, const char *key) {
    size_t key_len = strlen(key);
    size_t i;
    if (config == NULL || config->entries == NULL) {
        return NULL;
    }
    for (i = 0; i < config->entry_count; i++) {
        const px_kv *kv = &config->entries[i];
        if (kv->key.len == key_len && kv->key.ptr != NULL && memcmp(kv->key.ptr, key, key_len) == 0) {
            return &kv->value;
        }
    }
    return NULL;
}

/* Copies a text key (or its default) into *out; an empty value is refused. */
static px_status hb_config_text(const px_plugin_config *config, const char *key, const char *fallback, hb_text *out,
                                px_error *err) {
    const px_str *value = hb_config_value(config, key);
    if (value == NULL) {
        if (!hb_text_set(out, fallback, strlen(fallback))) {
            hb_error(err, HB_NAME ": out of memory copying config key '%s'", key);
            return PX_ERR_RESOURCE_EXHAUSTED;
        }
        return PX_OK;
    }
    if (value->ptr == NULL || value->len == 0) {
        hb_error(err, HB_NAME ": config key '%s' must not be empty", key);
        return PX_ERR_INVALID_ARGUMENT;
    }
    if (!hb_text_set(out, value->ptr, value->len)) {
        hb_error(err, HB_NAME ": out of memory copying config key '%s'", key);
        return PX_ERR_RESOURCE_EXHAUSTED;
    }
    return PX_OK;
}

static bool hb_interval_valid(uint64_t interval_ms) {
    return interval_ms >= 1 && interval_ms <= HB_MAX_INTERVAL_MS;
}

/* Parses `interval_ms`: decimal digits only, from 1 to HB_MAX_INTERVAL_MS. */
static px_status hb_config_interval(const px_plugin_config *config, uint64_t *out, px_error *err) {
    const px_str *value = hb_config_value(config, "interval_ms");
    uint64_t n = 0;
    size_t i;
    bool ok;
    if (value == NULL) {
        *out = HB_DEFAULT_INTERVAL_MS;
        return PX_OK;
    }
    ok = value->ptr != NULL && value->len > 0;
    for (i = 0; ok && i < value->len; i++) {
        char c = value->ptr[i];
        if (c < '0' || c > '9' || n > (UINT64_MAX - (uint64_t)(c - '0')) / 10) {
            ok = false;
        } else {
            n = n * 10 + (uint64_t)(c - '0');
        }
    }
    if (!ok || !hb_interval_valid(n)) {
        int shown = value->ptr != NULL && value->len < 64 ? (int)value->len : 0;
        hb_error(err, HB_NAME ": config key 'interval_ms' must be an integer from 1 to %" PRIu64 ", got '%.*s%s'",
                 (uint64_t)HB_MAX_INTERVAL_MS, shown, value->ptr != NULL ? value->ptr : "",
                 value->ptr != NULL && value->len >= 64 ? "..." : "");
        return PX_ERR_INVALID_ARGUMENT;
    }
    *out = n;
    return PX_OK;
}

/* The inside of a JSON string holding `t` (quotes, backslashes and control
 * characters escaped). */
static bool hb_json_escape(const hb_text *t, hb_text *out) {
    static const char hex[] = "0123456789abcdef";
    char *buf = malloc(t->len * 6 + 1);
    size_t i, n = 0;
    if (buf == NULL) {
        return false;
    }
    for (i = 0; i < t->len; i++) {
        unsigned char c = (unsigned char)t->ptr[i];
        if (c == '"' || c == '\\') {
            buf[n++] = '\\';
            buf[n++] = (char)c;
        } else if (c < 0x20) {
            buf[n++] = '\\';
            buf[n++] = 'u';
            buf[n++] = '0';
            buf[n++] = '0';
            buf[n++] = hex[c >> 4];
            buf[n++] = hex[c & 0xf];
        } else {
            buf[n++] = (char)c;
        }
    }
    buf[n] = '\0';
    out->ptr = buf;
    out->len = n;
    return true;
}

static void hb_free(hb_instance *hb) {
    hb_text_free(&hb->topic);
    hb_text_free(&hb->source);
    hb_text_free(&hb->node_id);
    hb_text_free(&hb->node_json);
    pthread_cond_destroy(&hb->drained);
    pthread_mutex_destroy(&hb->flight_lock);
    pthread_mutex_destroy(&hb->timer_lock);
    free(hb);
}

static uint64_t hb_ms_to_ns(uint64_t ms) { return ms * 1000000u; }

/* ------------------------------------------------------------------------ */
/* Publishing                                                               */
/* ------------------------------------------------------------------------ */

/* Completion of one publish.
 * THREADING: any thread, possibly inside api->publish, possibly after
 *            on_destroy (then it only frees). */
static void hb_published(void *user, px_status status, uint64_t first_offset, px_str error) {
    hb_instance *hb = user;
    bool last;
    if (status == PX_OK) {
        atomic_fetch_add(&hb->published, 1);
    } else {
        atomic_fetch_add(&hb->failed, 1);
    }
    pthread_mutex_lock(&hb->flight_lock);
    if (!hb->detached) {
        /* The host is valid: on_destroy waits for this lock. */
        if (status == PX_OK) {
            hb->api->counter_add(hb->host, hb_cstr("heartbeats_published"), 1);
            (void)first_offset;
        } else {
            hb_log(hb, PX_LOG_WARNING, "heartbeat to topic '%s' failed: status %d: %.*s", hb->topic.ptr, (int)status,
                   (int)(error.len < 512 ? error.len : 512), error.ptr != NULL ? error.ptr : "");
        }
    }
    hb->in_flight--;
    last = hb->detached && hb->in_flight == 0;
    pthread_cond_broadcast(&hb->drained);
    pthread_mutex_unlock(&hb->flight_lock);
    if (last) {
        hb_free(hb);
    }
}

/* Formats the current time as RFC 3339 in UTC, with milliseconds. */
static size_t hb_now_rfc3339(char *buf, size_t cap) {
    struct timespec ts;
    struct tm tm;
    size_t n;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0 || gmtime_r(&ts.tv_sec, &tm) == NULL) {
        return 0;
    }
    n = strftime(buf, cap, "%Y-%m-%dT%H:%M:%S", &tm);
    if (n == 0) {
        return 0;
    }
    n += (size_t)snprintf(buf + n, cap - n, ".%03ldZ", ts.tv_nsec / 1000000L);
    return n < cap ? n : 0;
}

/* Writes a fresh run token (16 hex digits and a NUL) into out: 64 bits from
 * the kernel's random source, or, should that fail, the wall clock's
 * nanoseconds mixed with the process id. Event ids carry it, so that ids stay
 * unique across restarts of the node and of the plugin while seq restarts
 * from 1 (consumers de-duplicate on source + id). */
static void hb_new_run(char out[17]) {
    uint64_t bits = 0;
    if (getrandom(&bits, sizeof bits, GRND_NONBLOCK) != (ssize_t)sizeof bits) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        bits = ((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec) ^ ((uint64_t)getpid() << 48);
        bits ^= bits >> 33;
        bits *= 0xff51afd7ed558ccdu;
        bits ^= bits >> 33;
    }
    snprintf(out, 17, "%016" PRIx64, bits);
}

/* One timer tick: publishes one heartbeat.
 * THREADING: a kernel timer thread; never concurrently for one timer, but
 *            two timers may overlap briefly while set_interval swaps them. */
static void hb_tick(void *user, uint64_t timer_id) {
    hb_instance *hb = user;
    uint64_t seq = (uint64_t)atomic_fetch_add(&hb->seq, 1) + 1;
    size_t id_cap = hb->node_id.len + sizeof hb->run + 32;
    size_t data_cap = hb->node_json.len + sizeof hb->run + 80;
    char *id = malloc(id_cap);
    char *data = malloc(data_cap);
    char time_buf[48];
    char message[PX_ERROR_CAPACITY];
    px_error err = {sizeof(px_error), 0, message, sizeof message};
    px_event event;
    const px_event *events[1];
    int id_len, data_len;
    size_t time_len;
    px_status status;
    (void)timer_id;

    message[0] = '\0';
    if (id == NULL || data == NULL) {
        free(id);
        free(data);
        atomic_fetch_add(&hb->failed, 1);
        hb_log(hb, PX_LOG_ERROR, "heartbeat %" PRIu64 " skipped: out of memory", seq);
        return;
    }
    id_len = snprintf(id, id_cap, "%s-%s-%" PRIu64, hb->node_id.ptr, hb->run, seq);
    data_len = snprintf(data, data_cap, "{\"seq\":%" PRIu64 ",\"node\":\"%s\",\"run\":\"%s\"}", seq,
                        hb->node_json.ptr, hb->run);
    time_len = hb_now_rfc3339(time_buf, sizeof time_buf);

    memset(&event, 0, sizeof event);
    event.struct_size = sizeof(px_event);
    event.id = (px_str){id, (size_t)id_len};
    event.source = hb_str(&hb->source);
    event.specversion = hb_cstr("1.0");
    event.type = hb_cstr(HB_EVENT_TYPE);
    event.datacontenttype = hb_cstr("application/json");
    event.time = time_len > 0 ? (px_str){time_buf, time_len} : (px_str){NULL, 0};
    event.data = (px_bytes){(const uint8_t *)data, (size_t)data_len};
    events[0] = &event;

    /* Counted before the call: the completion may run inside it. */
    pthread_mutex_lock(&hb->flight_lock);
    hb->in_flight++;
    pthread_mutex_unlock(&hb->flight_lock);

    status = hb->api->publish(hb->host, hb_str(&hb->topic), events, 1, hb_published, hb, &err);
    if (status != PX_OK) {
        /* No completion will come: undo the count here. */
        atomic_fetch_add(&hb->failed, 1);
        hb_log(hb, PX_LOG_WARNING, "heartbeat %" PRIu64 " to topic '%s' refused: status %d: %s", seq, hb->topic.ptr,
               (int)status, message);
        pthread_mutex_lock(&hb->flight_lock);
        hb->in_flight--;
        pthread_cond_broadcast(&hb->drained);
        pthread_mutex_unlock(&hb->flight_lock);
    }
    /* The kernel copied the event during the call. */
    free(id);
    free(data);
}

/* ------------------------------------------------------------------------ */
/* Lifecycle hooks                                                          */
/* ------------------------------------------------------------------------ */

static px_status hb_on_create(const px_host_api *api, px_host *host, const px_plugin_config *config,
                              void **out_instance, px_error *err) {
    hb_instance *hb;
    uint64_t interval_ms;
    px_status status;
    pthread_condattr_t cond_attr;

    if (api == NULL || out_instance == NULL || config == NULL) {
        px_error_set(err, HB_NAME ": on_create needs api, config and out_instance");
        return PX_ERR_INVALID_ARGUMENT;
    }
    if (api->struct_size < offsetof(px_host_api, timer_cancel) + sizeof(api->timer_cancel) || api->log == NULL ||
        api->counter_add == NULL || api->publish == NULL || api->timer_start == NULL || api->timer_cancel == NULL) {
        px_error_set(err, HB_NAME ": the host lacks log, counter_add, publish or timers");
        return PX_ERR_UNSUPPORTED;
    }
    status = hb_config_interval(config, &interval_ms, err);
    if (status != PX_OK) {
        return status;
    }

    hb = calloc(1, sizeof *hb);
    if (hb == NULL) {
        px_error_set(err, HB_NAME ": out of memory");
        return PX_ERR_RESOURCE_EXHAUSTED;
    }
    hb->api = api;
    hb->host = host;
    atomic_init(&hb->interval_ms, interval_ms);
    atomic_init(&hb->seq, 0);
    hb_new_run(hb->run);
    atomic_init(&hb->published, 0);
    atomic_init(&hb->failed, 0);
    pthread_mutex_init(&hb->timer_lock, NULL);
    pthread_mutex_init(&hb->flight_lock, NULL);
    pthread_condattr_init(&cond_attr);
    pthread_condattr_setclock(&cond_attr, CLOCK_MONOTONIC);
    pthread_cond_init(&hb->drained, &cond_attr);
    pthread_condattr_destroy(&cond_attr);

    status = hb_config_text(config, "topic", HB_DEFAULT_TOPIC, &hb->topic, err);
    if (status == PX_OK) {
        status = hb_config_text(config, "source", HB_DEFAULT_SOURCE, &hb->source, err);
    }
    if (status == PX_OK) {
        const px_str node = config->node_id;
        bool ok = node.ptr != NULL && node.len > 0 ? hb_text_set(&hb->node_id, node.ptr, node.len)
                                                   : hb_text_set(&hb->node_id, "node", 4);
        if (!ok || !hb_json_escape(&hb->node_id, &hb->node_json)) {
            px_error_set(err, HB_NAME ": out of memory");
            status = PX_ERR_RESOURCE_EXHAUSTED;
        }
    }
    if (status != PX_OK) {
        hb_free(hb);
        return status;
    }
    *out_instance = hb;
    return PX_OK;
}

static px_status hb_on_start(void *instance, px_error *err) {
    hb_instance *hb = instance;
    uint64_t interval_ns;
    px_status status;

    pthread_mutex_lock(&hb->timer_lock);
    if (hb->running) {
        pthread_mutex_unlock(&hb->timer_lock);
        px_error_set(err, HB_NAME ": already started");
        return PX_ERR_FAILED_PRECONDITION;
    }
    interval_ns = hb_ms_to_ns(atomic_load(&hb->interval_ms));
    status = hb->api->timer_start(hb->host, interval_ns, interval_ns, hb_tick, hb, &hb->timer_id, NULL);
    if (status == PX_OK) {
        hb->running = true;
    }
    pthread_mutex_unlock(&hb->timer_lock);
    if (status != PX_OK) {
        hb_error(err, HB_NAME ": the host refused to start the heartbeat timer (status %d)", (int)status);
        return status;
    }
    hb_log(hb, PX_LOG_INFO, "publishing heartbeats to topic '%s' every %" PRIu64 " ms", hb->topic.ptr,
           (uint64_t)atomic_load(&hb->interval_ms));
    return PX_OK;
}

/* Cancels the timer if it runs. Safe to call twice. */
static void hb_stop_timer(hb_instance *hb) {
    pthread_mutex_lock(&hb->timer_lock);
    if (hb->running) {
        hb->api->timer_cancel(hb->host, hb->timer_id);
        hb->running = false;
    }
    pthread_mutex_unlock(&hb->timer_lock);
}

static px_status hb_on_stop(void *instance, uint64_t timeout_ms, px_error *err) {
    hb_instance *hb = instance;
    struct timespec deadline;
    uint64_t wait_ms = timeout_ms / 2; /* leave the kernel's deadline some room */
    uint64_t left;
    (void)err;

    hb_stop_timer(hb); /* after this no tick runs or will run */

    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += (time_t)(wait_ms / 1000);
    deadline.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec += 1;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&hb->flight_lock);
    while (hb->in_flight > 0 && wait_ms > 0) {
        if (pthread_cond_timedwait(&hb->drained, &hb->flight_lock, &deadline) == ETIMEDOUT) {
            break;
        }
    }
    left = hb->in_flight;
    pthread_mutex_unlock(&hb->flight_lock);
    if (left > 0) {
        /* Not an error: on_destroy leaves the instance to the last completion. */
        hb_log(hb, PX_LOG_WARNING, "stopped with %" PRIu64 " heartbeat(s) still unacknowledged", left);
    }
    hb_log(hb, PX_LOG_INFO, "stopped after %" PRIu64 " acknowledged and %" PRIu64 " failed heartbeat(s)",
           (uint64_t)atomic_load(&hb->published), (uint64_t)atomic_load(&hb->failed));
    return PX_OK;
}

static void hb_on_destroy(void *instance) {
    hb_instance *hb = instance;
    bool free_now;
    if (hb == NULL) {
        return;
    }
    hb_stop_timer(hb); /* in case on_stop was never called */
    pthread_mutex_lock(&hb->flight_lock);
    free_now = hb->in_flight == 0;
    hb->detached = true;
    pthread_mutex_unlock(&hb->flight_lock);
    if (free_now) {
        hb_free(hb);
    }
}

static px_status hb_on_health(void *instance, px_error *err) {
    (void)instance;
    (void)err;
    return PX_OK;
}

/* ------------------------------------------------------------------------ */
/* Operations (declared in the manifest, called through libffi)             */
/* ------------------------------------------------------------------------ */

PX_EXPORT int32_t px_op_heartbeat_set_interval(void *instance, uint64_t interval_ms);
PX_EXPORT uint64_t px_op_heartbeat_published(void *instance);

/* Changes the interval; restarts the timer when it runs. Manifest signature:
 * status (instance, uint64), an int32_t read as a px_status. Returns a px_status: PX_ERR_INVALID_ARGUMENT
 * unless 1 <= interval_ms <= HB_MAX_INTERVAL_MS; on a host timer error the
 * old timer and interval stay in effect. */
PX_EXPORT int32_t px_op_heartbeat_set_interval(void *instance, uint64_t interval_ms) {
    hb_instance *hb = instance;
    px_status status = PX_OK;
    if (hb == NULL || !hb_interval_valid(interval_ms)) {
        return PX_ERR_INVALID_ARGUMENT;
    }
    pthread_mutex_lock(&hb->timer_lock);
    if (hb->running) {
        uint64_t interval_ns = hb_ms_to_ns(interval_ms);
        uint64_t new_id = 0;
        /* Start the new timer first, so a refusal leaves the old one running. */
        status = hb->api->timer_start(hb->host, interval_ns, interval_ns, hb_tick, hb, &new_id, NULL);
        if (status == PX_OK) {
            hb->api->timer_cancel(hb->host, hb->timer_id);
            hb->timer_id = new_id;
        }
    }
    if (status == PX_OK) {
        atomic_store(&hb->interval_ms, interval_ms);
    }
    pthread_mutex_unlock(&hb->timer_lock);
    if (status != PX_OK) {
        hb_log(hb, PX_LOG_WARNING, "interval not changed: the host refused a new timer (status %d)", (int)status);
    } else {
        hb_log(hb, PX_LOG_INFO, "heartbeat interval set to %" PRIu64 " ms", interval_ms);
    }
    return status;
}

/* The number of heartbeats the host acknowledged as published. Manifest
 * signature: uint64 (instance). */
PX_EXPORT uint64_t px_op_heartbeat_published(void *instance) {
    const hb_instance *hb = instance;
    return hb == NULL ? 0 : (uint64_t)atomic_load(&hb->published);
}

/* ------------------------------------------------------------------------ */
/* Entry                                                                    */
/* ------------------------------------------------------------------------ */

static const px_plugin_descriptor hb_descriptor = {
    .struct_size = sizeof(px_plugin_descriptor),
    .abi_major = PX_ABI_VERSION_MAJOR,
    .abi_minor = PX_ABI_VERSION_MINOR,
    .name = HB_NAME,
    .version = HB_VERSION,
    .kinds = PX_KIND_CONNECTOR,
    .toolchain = NULL,
    .on_create = hb_on_create,
    .on_start = hb_on_start,
    .on_stop = hb_on_stop,
    .on_destroy = hb_on_destroy,
    .on_health = hb_on_health,
    .storage = NULL,
    .registry = NULL,
};

PX_EXPORT px_status px_plugin_entry_v1(const px_host_api *api, const px_plugin_descriptor **out_descriptor,
                                       px_error *err);

PX_EXPORT px_status px_plugin_entry_v1(const px_host_api *api, const px_plugin_descriptor **out_descriptor,
                                       px_error *err) {
    px_status status = px_negotiate(api, err);
    if (status != PX_OK) {
        return status;
    }
    if (out_descriptor == NULL) {
        px_error_set(err, HB_NAME ": out_descriptor is NULL");
        return PX_ERR_INVALID_ARGUMENT;
    }
    *out_descriptor = &hb_descriptor;
    return PX_OK;
}
