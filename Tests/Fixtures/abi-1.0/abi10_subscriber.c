/*
 * abi10_subscriber.c - fixture: a connector that subscribes and acknowledges,
 * built against the published ABI 1.0 header, loaded into a newer (1.1+)
 * kernel.
 *
 * Proves: a subscriber built against an older minor keeps working. It
 * subscribes through host->subscribe with a px_subscription_spec of the 1.0
 * size (144 bytes), receives 1.0-shaped px_delivery/px_record/px_event, and
 * acknowledges every delivery through host->ack; the kernel must deliver
 * every event with its attributes, extensions and data intact, settle every
 * ack (commit the group's offset), and redeliver nothing.
 *
 * It also shows how to acknowledge without blocking `deliver`: deliver only
 * copies what it keeps out of the borrowed delivery, appends it to a queue
 * under a mutex that is never held across anything slow, signals, and
 * returns. A worker thread of the plugin's own takes items off the queue,
 * records them and calls host->ack (which may be called from any thread).
 *
 * Name "abi10-subscriber", version "1.0.0", kind connector. Config keys:
 *   topic  (default "abi10")             what to consume, from the earliest offset
 *   group  (default "abi10-subscriber")  as which consumer group
 *
 * Operations (manifest `operations`):
 *   px_op_abi10_sub_received      uint64 (instance)  deliveries received
 *   px_op_abi10_sub_acked         uint64 (instance)  acks the kernel answered PX_OK
 *   px_op_abi10_sub_ack_failures  uint64 (instance)  acks it refused
 *   px_op_abi10_sub_redelivered   uint64 (instance)  deliveries with attempt > 1 or an offset seen before
 *   px_op_abi10_sub_log           text   (instance)  one line per delivery, in the order acknowledged:
 *       offset=<o>\tattempt=<a>\tid=...\tsource=...\tspecversion=...\ttype=...
 *       \tsubject=...\tdatacontenttype=...\tdataschema=...\ttime=...
 *       \text.<key>=<value> (each extension, in order)\tdata=<hex>
 *     an absent attribute prints as "-"; bytes below 0x20, 0x7f and '\'
 *     in text print as \xNN.
 *
 * Built at test time against the 1.0 header, C99 and libc only:
 *   cc -std=c99 -shared -fPIC -I abi/published/1.0 abi10_subscriber.c -o libabi10_subscriber.so
 */
#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plexus.h"

#define SUB_NAME "abi10-subscriber"

/* One delivery, copied out of the borrowed px_delivery. */
typedef struct sub_item {
    struct sub_item *next;
    uint64_t delivery_id;
    uint64_t offset;
    uint32_t attempt;
    char *line; /* the log line, formatted in deliver */
} sub_item;

/* A growable text buffer. */
typedef struct sub_text {
    char *ptr;
    size_t len;
    size_t cap;
    int failed;
} sub_text;

typedef struct sub_instance {
    const px_host_api *api;
    px_host *host;
    char topic[128];
    char group[128];
    uint64_t subscription_id;
    int subscribed; /* lifecycle thread only */

    pthread_mutex_t queue_lock; /* the queue and `stopping`; held only to link or unlink */
    pthread_cond_t queue_ready;
    sub_item *head, *tail;
    int stopping;
    pthread_t worker;
    int worker_running; /* lifecycle thread only */

    pthread_mutex_t state_lock; /* everything below */
    uint64_t received;
    uint64_t acked;
    uint64_t ack_failures;
    uint64_t redelivered;
    uint64_t *seen; /* offsets seen, unsorted */
    size_t seen_count, seen_cap;
    sub_text log;
} sub_instance;

/* ------------------------------------------------------------------------ */
/* Text                                                                     */
/* ------------------------------------------------------------------------ */

static void sub_put(sub_text *t, const char *bytes, size_t len) {
    if (t->failed) {
        return;
    }
    if (t->len + len + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 256;
        char *grown;
        while (cap < t->len + len + 1) {
            cap *= 2;
        }
        grown = realloc(t->ptr, cap);
        if (grown == NULL) {
            t->failed = 1;
            return;
        }
        t->ptr = grown;
        t->cap = cap;
    }
    memcpy(t->ptr + t->len, bytes, len);
    t->len += len;
    t->ptr[t->len] = '\0';
}

static void sub_puts(sub_text *t, const char *s) { sub_put(t, s, strlen(s)); }

/* Text, escaped; "-" when absent. */
static void sub_put_str(sub_text *t, px_str s) {
    size_t i;
    if (s.ptr == NULL) {
        sub_puts(t, "-");
        return;
    }
    for (i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        if (c < 0x20 || c == 0x7f || c == '\\') {
            char escaped[8];
            snprintf(escaped, sizeof escaped, "\\x%02x", c);
            sub_puts(t, escaped);
        } else {
            sub_put(t, (const char *)&s.ptr[i], 1);
        }
    }
}

static void sub_field(sub_text *t, const char *name, px_str value) {
    sub_puts(t, "\t");
    sub_puts(t, name);
    sub_puts(t, "=");
    sub_put_str(t, value);
}

/* The log line of a delivery; NULL when out of memory. */
static char *sub_format(const px_delivery *d) {
    static const char hex[] = "0123456789abcdef";
    const px_event *e = d->record->event;
    sub_text t = {NULL, 0, 0, 0};
    char head[64];
    size_t i;
    snprintf(head, sizeof head, "offset=%" PRIu64 "\tattempt=%" PRIu32, d->record->offset, d->attempt);
    sub_puts(&t, head);
    sub_field(&t, "id", e->id);
    sub_field(&t, "source", e->source);
    sub_field(&t, "specversion", e->specversion);
    sub_field(&t, "type", e->type);
    sub_field(&t, "subject", e->subject);
    sub_field(&t, "datacontenttype", e->datacontenttype);
    sub_field(&t, "dataschema", e->dataschema);
    sub_field(&t, "time", e->time);
    for (i = 0; e->extensions != NULL && i < e->extension_count; i++) {
        sub_puts(&t, "\text.");
        sub_put_str(&t, e->extensions[i].key);
        sub_puts(&t, "=");
        sub_put_str(&t, e->extensions[i].value);
    }
    sub_puts(&t, "\tdata=");
    for (i = 0; e->data.ptr != NULL && i < e->data.len; i++) {
        char pair[2];
        pair[0] = hex[e->data.ptr[i] >> 4];
        pair[1] = hex[e->data.ptr[i] & 0xf];
        sub_put(&t, pair, 2);
    }
    if (t.failed) {
        free(t.ptr);
        return NULL;
    }
    return t.ptr;
}

/* ------------------------------------------------------------------------ */
/* Deliver (kernel thread) and the worker that acknowledges                 */
/* ------------------------------------------------------------------------ */

/* THREADING: a kernel thread, possibly concurrently for different partition
 * keys; must not block. Copies, enqueues, signals, returns. */
static void sub_deliver(void *user, const px_delivery *delivery) {
    sub_instance *sub = user;
    sub_item *item = calloc(1, sizeof *item);
    pthread_mutex_lock(&sub->state_lock);
    sub->received++;
    pthread_mutex_unlock(&sub->state_lock);
    if (item == NULL || delivery->record == NULL || delivery->record->event == NULL ||
        (item->line = sub_format(delivery)) == NULL) {
        free(item);
        /* Out of memory: leave it unacknowledged; the kernel redelivers after the timeout. */
        return;
    }
    item->delivery_id = delivery->delivery_id;
    item->offset = delivery->record->offset;
    item->attempt = delivery->attempt;
    pthread_mutex_lock(&sub->queue_lock);
    if (sub->tail != NULL) {
        sub->tail->next = item;
    } else {
        sub->head = item;
    }
    sub->tail = item;
    pthread_cond_signal(&sub->queue_ready);
    pthread_mutex_unlock(&sub->queue_lock);
}

/* Records one delivery, then acknowledges it. Worker thread; no lock held
 * across the host call. */
static void sub_handle(sub_instance *sub, sub_item *item) {
    px_status status;
    size_t i;
    int again = item->attempt > 1;
    pthread_mutex_lock(&sub->state_lock);
    for (i = 0; i < sub->seen_count && !again; i++) {
        again = sub->seen[i] == item->offset;
    }
    if (again) {
        sub->redelivered++;
    }
    if (sub->seen_count == sub->seen_cap) {
        size_t cap = sub->seen_cap ? sub->seen_cap * 2 : 64;
        uint64_t *grown = realloc(sub->seen, cap * sizeof *grown);
        if (grown != NULL) {
            sub->seen = grown;
            sub->seen_cap = cap;
        }
    }
    if (sub->seen_count < sub->seen_cap) {
        sub->seen[sub->seen_count++] = item->offset;
    }
    if (sub->log.len > 0) {
        sub_puts(&sub->log, "\n");
    }
    sub_puts(&sub->log, item->line);
    pthread_mutex_unlock(&sub->state_lock);

    status = sub->api->ack(sub->host, item->delivery_id);

    pthread_mutex_lock(&sub->state_lock);
    if (status == PX_OK) {
        sub->acked++;
    } else {
        sub->ack_failures++;
    }
    pthread_mutex_unlock(&sub->state_lock);
    free(item->line);
    free(item);
}

/* The worker: acknowledges what deliver queued, until stopped and drained. */
static void *sub_work(void *arg) {
    sub_instance *sub = arg;
    for (;;) {
        sub_item *item;
        pthread_mutex_lock(&sub->queue_lock);
        while (sub->head == NULL && !sub->stopping) {
            pthread_cond_wait(&sub->queue_ready, &sub->queue_lock);
        }
        item = sub->head;
        if (item != NULL) {
            sub->head = item->next;
            if (sub->head == NULL) {
                sub->tail = NULL;
            }
        }
        pthread_mutex_unlock(&sub->queue_lock);
        if (item == NULL) {
            return NULL; /* stopping, and the queue is empty */
        }
        sub_handle(sub, item);
    }
}

static void sub_stop_worker(sub_instance *sub) {
    if (!sub->worker_running) {
        return;
    }
    pthread_mutex_lock(&sub->queue_lock);
    sub->stopping = 1;
    pthread_cond_signal(&sub->queue_ready);
    pthread_mutex_unlock(&sub->queue_lock);
    pthread_join(sub->worker, NULL);
    sub->worker_running = 0;
}

/* ------------------------------------------------------------------------ */
/* Lifecycle                                                                */
/* ------------------------------------------------------------------------ */

static int sub_config_text(const px_plugin_config *config, const char *key, const char *fallback, char *out,
                           size_t cap) {
    size_t i, len = strlen(key);
    for (i = 0; config != NULL && config->entries != NULL && i < config->entry_count; i++) {
        const px_kv *kv = &config->entries[i];
        if (kv->key.len == len && memcmp(kv->key.ptr, key, len) == 0) {
            if (kv->value.len == 0 || kv->value.len >= cap) {
                return -1;
            }
            memcpy(out, kv->value.ptr, kv->value.len);
            out[kv->value.len] = '\0';
            return 0;
        }
    }
    strcpy(out, fallback);
    return 0;
}

static px_status sub_on_create(const px_host_api *api, px_host *host, const px_plugin_config *config,
                               void **out_instance, px_error *err) {
    sub_instance *sub;
    /* A 1.0 plugin checks the host's table by its size (PX_HAS_FIELD came with 1.1). */
    if (api == NULL || api->struct_size < offsetof(px_host_api, nack) + sizeof(api->nack) || api->subscribe == NULL ||
        api->unsubscribe == NULL || api->ack == NULL) {
        px_error_set(err, SUB_NAME ": the host lacks subscribe, unsubscribe or ack");
        return PX_ERR_UNSUPPORTED;
    }
    sub = calloc(1, sizeof *sub);
    if (sub == NULL) {
        px_error_set(err, SUB_NAME ": out of memory");
        return PX_ERR_RESOURCE_EXHAUSTED;
    }
    if (sub_config_text(config, "topic", "abi10", sub->topic, sizeof sub->topic) != 0 ||
        sub_config_text(config, "group", SUB_NAME, sub->group, sizeof sub->group) != 0) {
        free(sub);
        px_error_set(err, SUB_NAME ": config keys 'topic' and 'group' must have 1 to 127 bytes");
        return PX_ERR_INVALID_ARGUMENT;
    }
    if (pthread_mutex_init(&sub->queue_lock, NULL) != 0 || pthread_mutex_init(&sub->state_lock, NULL) != 0 ||
        pthread_cond_init(&sub->queue_ready, NULL) != 0) {
        free(sub);
        px_error_set(err, SUB_NAME ": cannot make a mutex");
        return PX_ERR_RESOURCE_EXHAUSTED;
    }
    sub->api = api;
    sub->host = host;
    *out_instance = sub;
    return PX_OK;
}

static px_status sub_on_start(void *instance, px_error *err) {
    sub_instance *sub = instance;
    px_subscription_spec spec;
    px_status status;
    if (pthread_create(&sub->worker, NULL, sub_work, sub) != 0) {
        px_error_set(err, SUB_NAME ": cannot start the worker thread");
        return PX_ERR_RESOURCE_EXHAUSTED;
    }
    sub->worker_running = 1;

    memset(&spec, 0, sizeof spec);
    spec.struct_size = sizeof(px_subscription_spec); /* 1.0's size: 144 */
    spec.group_mode = PX_GROUP_CLUSTERING;
    spec.topic = (px_str){sub->topic, strlen(sub->topic)};
    spec.group = (px_str){sub->group, strlen(sub->group)};
    spec.start_position = PX_START_EARLIEST;
    spec.deliver = sub_deliver;
    spec.user = sub; /* valid until unsubscribe returns: freed in on_destroy */
    status = sub->api->subscribe(sub->host, &spec, &sub->subscription_id, err);
    if (status != PX_OK) {
        sub_stop_worker(sub); /* clean up what started: the kernel calls no on_stop */
        return status;
    }
    sub->subscribed = 1;
    return PX_OK;
}

static px_status sub_on_stop(void *instance, uint64_t timeout_ms, px_error *err) {
    sub_instance *sub = instance;
    (void)timeout_ms;
    (void)err;
    if (sub->subscribed) {
        sub->api->unsubscribe(sub->host, sub->subscription_id); /* no deliver starts after it returns */
        sub->subscribed = 0;
    }
    sub_stop_worker(sub); /* drains the queue first */
    return PX_OK;
}

static void sub_on_destroy(void *instance) {
    sub_instance *sub = instance;
    sub_item *item = sub->head;
    sub_stop_worker(sub); /* when on_start failed after creating it, it is already stopped */
    while (item != NULL) {
        sub_item *next = item->next;
        free(item->line);
        free(item);
        item = next;
    }
    free(sub->seen);
    free(sub->log.ptr);
    pthread_cond_destroy(&sub->queue_ready);
    pthread_mutex_destroy(&sub->state_lock);
    pthread_mutex_destroy(&sub->queue_lock);
    free(sub);
}

/* ------------------------------------------------------------------------ */
/* Operations                                                               */
/* ------------------------------------------------------------------------ */

static uint64_t sub_read(void *instance, const uint64_t *field) {
    sub_instance *sub = instance;
    uint64_t value;
    pthread_mutex_lock(&sub->state_lock);
    value = *field;
    pthread_mutex_unlock(&sub->state_lock);
    return value;
}

/* manifest: received: uint64 (instance) */
PX_EXPORT uint64_t px_op_abi10_sub_received(void *instance);
PX_EXPORT uint64_t px_op_abi10_sub_received(void *instance) {
    return sub_read(instance, &((sub_instance *)instance)->received);
}

/* manifest: acked: uint64 (instance) */
PX_EXPORT uint64_t px_op_abi10_sub_acked(void *instance);
PX_EXPORT uint64_t px_op_abi10_sub_acked(void *instance) {
    return sub_read(instance, &((sub_instance *)instance)->acked);
}

/* manifest: ack-failures: uint64 (instance) */
PX_EXPORT uint64_t px_op_abi10_sub_ack_failures(void *instance);
PX_EXPORT uint64_t px_op_abi10_sub_ack_failures(void *instance) {
    return sub_read(instance, &((sub_instance *)instance)->ack_failures);
}

/* manifest: redelivered: uint64 (instance) */
PX_EXPORT uint64_t px_op_abi10_sub_redelivered(void *instance);
PX_EXPORT uint64_t px_op_abi10_sub_redelivered(void *instance) {
    return sub_read(instance, &((sub_instance *)instance)->redelivered);
}

/* manifest: log: text (instance). The kernel frees the text. */
PX_EXPORT char *px_op_abi10_sub_log(void *instance);
PX_EXPORT char *px_op_abi10_sub_log(void *instance) {
    sub_instance *sub = instance;
    char *copy;
    pthread_mutex_lock(&sub->state_lock);
    copy = malloc(sub->log.len + 1);
    if (copy != NULL) {
        if (sub->log.len > 0) {
            memcpy(copy, sub->log.ptr, sub->log.len);
        }
        copy[sub->log.len] = '\0';
    }
    pthread_mutex_unlock(&sub->state_lock);
    return copy;
}

/* ------------------------------------------------------------------------ */
/* Descriptor and entry                                                     */
/* ------------------------------------------------------------------------ */

static const px_plugin_descriptor sub_descriptor = {
    sizeof(px_plugin_descriptor), /* struct_size: 96 in 1.0 */
    PX_ABI_VERSION_MAJOR,         /* abi_major: 1 */
    PX_ABI_VERSION_MINOR,         /* abi_minor: 0, from the 1.0 header */
    SUB_NAME,                     /* name */
    "1.0.0",                      /* version */
    PX_KIND_CONNECTOR,            /* kinds */
    0,                            /* reserved */
    NULL,                         /* toolchain: NULL for C */
    sub_on_create,
    sub_on_start,
    sub_on_stop,
    sub_on_destroy,
    NULL, /* on_health: always healthy */
    NULL, /* storage */
    NULL  /* registry */
};

PX_EXPORT px_status px_plugin_entry_v1(const px_host_api *api, const px_plugin_descriptor **out_descriptor,
                                       px_error *err);
PX_EXPORT px_status px_plugin_entry_v1(const px_host_api *api, const px_plugin_descriptor **out_descriptor,
                                       px_error *err) {
    px_status status = px_negotiate(api, err);
    if (status != PX_OK) {
        return status;
    }
    *out_descriptor = &sub_descriptor;
    return PX_OK;
}
