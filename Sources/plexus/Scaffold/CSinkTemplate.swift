/// The files `plexus plugin new --kind connector --lang c NAME` writes: a sink in plain C that shows the one
/// pattern every C subscriber needs — deliver (must not block) → queue → worker thread → ack — and a stop that
/// loses nothing. `@NAME@` is the plugin's name, `@IDENT@` a C identifier made from it, `@LIBRARY@` its
/// library's file name, `@ABI_MINOR@` the ABI minor of the header written beside it.
enum CSinkTemplate {
    static let source = #"""
        /*
         * @NAME@: a sink connector in plain C, scaffolded by `plexus plugin new`.
         *
         * It subscribes to `topic` as consumer group `group` and appends one line per event to the file
         * `path`: "<topic>@<offset> <id> <data>" (data as it came, newlines replaced by spaces). Replace
         * write_event() with what your sink does; keep the rest, which is the pattern every C subscriber needs:
         *
         *   deliver (a kernel thread; must not block) copies what it needs and queues it;
         *   one worker thread takes the queue, does the slow work, then acks (or nacks to have the kernel retry);
         *   stop unsubscribes first (no delivery runs or starts after that returns), lets the worker finish what
         *   is queued within the stop deadline, and nacks what is left, so the kernel redelivers it: an event is
         *   acknowledged only once it is written (and fsynced with fsync: always).
         *
         * Build: make    Run in a throwaway node: make dev    Test: make test
         */
        #define _POSIX_C_SOURCE 200809L /* O_CLOEXEC, fdatasync, clock_gettime under -std=c11 */
        #include <errno.h>
        #include <fcntl.h>
        #include <pthread.h>
        #include <stdbool.h>
        #include <stdint.h>
        #include <stdio.h>
        #include <stdlib.h>
        #include <string.h>
        #include <time.h>
        #include <unistd.h>

        #include "plexus.h"

        #define SINK_NAME "@NAME@"

        /* One queued delivery: what write_event needs, copied out of the borrowed px_delivery. */
        typedef struct item {
            struct item *next;
            uint64_t delivery_id;
            uint64_t offset;
            char *line;
            size_t line_len;
        } item;

        typedef struct sink {
            const px_host_api *api;
            px_host *host;
            char *topic, *group, *path;
            bool fsync_always;
            int fd;
            uint64_t subscription;
            bool subscribed;

            pthread_mutex_t lock;
            pthread_cond_t wake;
            item *head, *tail;
            bool stopping;
            uint64_t deadline_ns; /* while stopping: give up on the queue after this (CLOCK_MONOTONIC) */
            pthread_t worker;
            bool worker_running;
            uint64_t written;
        } sink;

        static uint64_t now_ns(void) {
            struct timespec t;
            clock_gettime(CLOCK_MONOTONIC, &t);
            return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
        }

        static void sink_log(sink *s, int32_t level, const char *text) {
            s->api->log(s->host, level, (px_str){text, strlen(text)});
        }

        static char *copy_text(const char *ptr, size_t len) {
            char *out = malloc(len + 1);
            if (out != NULL) {
                if (len > 0) memcpy(out, ptr, len);
                out[len] = '\0';
            }
            return out;
        }

        /* The text of a top-level config key, or `fallback`; NULL when out of memory. */
        static char *config_text(const px_plugin_config *config, const char *key, const char *fallback) {
            size_t i, key_len = strlen(key);
            for (i = 0; config != NULL && i < config->entry_count; i++) {
                const px_kv *kv = &config->entries[i];
                if (kv->key.len == key_len && memcmp(kv->key.ptr, key, key_len) == 0) {
                    return copy_text(kv->value.ptr, kv->value.len);
                }
            }
            return copy_text(fallback, strlen(fallback));
        }

        /* The slow part: runs on the worker thread, never on a kernel thread. Returns 0 or an errno. */
        static int write_event(sink *s, const item *it) {
            size_t done = 0;
            while (done < it->line_len) {
                ssize_t n = write(s->fd, it->line + done, it->line_len - done);
                if (n < 0) {
                    if (errno == EINTR) continue;
                    return errno;
                }
                done += (size_t)n;
            }
            if (s->fsync_always && fdatasync(s->fd) != 0) return errno;
            return 0;
        }

        static void *worker_main(void *arg) {
            sink *s = arg;
            pthread_mutex_lock(&s->lock);
            for (;;) {
                while (s->head == NULL && !s->stopping) pthread_cond_wait(&s->wake, &s->lock);
                if (s->head == NULL || (s->stopping && now_ns() > s->deadline_ns)) break;
                item *it = s->head;
                s->head = it->next;
                if (s->head == NULL) s->tail = NULL;
                pthread_mutex_unlock(&s->lock);

                int error = write_event(s, it);
                if (error == 0) {
                    s->api->ack(s->host, it->delivery_id);
                } else {
                    const char *reason = strerror(error);
                    s->api->nack(s->host, it->delivery_id, PX_NACK_RETRY, (px_str){reason, strlen(reason)});
                }
                free(it->line);
                free(it);
                pthread_mutex_lock(&s->lock);
                if (error == 0) s->written++;
            }
            pthread_mutex_unlock(&s->lock);
            return NULL;
        }

        /* A kernel thread hands over one event: copy, queue, return. Never blocks on the file. */
        static void on_deliver(void *user, const px_delivery *d) {
            sink *s = user;
            const px_event *e = d->record->event;
            size_t len = d->topic.len + e->id.len + e->data.len + 48;
            item *it = calloc(1, sizeof *it);
            char *line = malloc(len);
            if (it == NULL || line == NULL) {
                free(it);
                free(line);
                s->api->nack(s->host, d->delivery_id, PX_NACK_RETRY, (px_str){"out of memory", 13});
                return;
            }
            int head = snprintf(line, len, "%.*s@%llu %.*s ", (int)d->topic.len, d->topic.ptr,
                                (unsigned long long)d->record->offset, (int)e->id.len, e->id.ptr);
            size_t at = head < 0 ? 0 : (size_t)head;
            for (size_t i = 0; i < e->data.len && at < len - 1; i++) {
                uint8_t c = e->data.ptr[i];
                line[at++] = (char)(c == '\n' || c == '\r' ? ' ' : c);
            }
            line[at++] = '\n';
            it->delivery_id = d->delivery_id;
            it->offset = d->record->offset;
            it->line = line;
            it->line_len = at;
            pthread_mutex_lock(&s->lock);
            if (s->tail != NULL) s->tail->next = it; else s->head = it;
            s->tail = it;
            pthread_cond_signal(&s->wake);
            pthread_mutex_unlock(&s->lock);
        }

        static px_status on_create(const px_host_api *api, px_host *host, const px_plugin_config *config,
                                   void **out_instance, px_error *err) {
            sink *s = calloc(1, sizeof *s);
            char *fsync_mode;
            if (s == NULL) {
                px_error_set(err, SINK_NAME ": out of memory");
                return PX_ERR_RESOURCE_EXHAUSTED;
            }
            s->api = api;
            s->host = host;
            s->fd = -1;
            s->topic = config_text(config, "topic", "events");
            s->group = config_text(config, "group", SINK_NAME);
            s->path = config_text(config, "path", SINK_NAME ".out");
            fsync_mode = config_text(config, "fsync", "always");
            if (s->topic == NULL || s->group == NULL || s->path == NULL || fsync_mode == NULL) {
                free(fsync_mode);
                free(s->topic), free(s->group), free(s->path), free(s);
                px_error_set(err, SINK_NAME ": out of memory");
                return PX_ERR_RESOURCE_EXHAUSTED;
            }
            s->fsync_always = strcmp(fsync_mode, "never") != 0;
            free(fsync_mode);
            pthread_mutex_init(&s->lock, NULL);
            pthread_cond_init(&s->wake, NULL);
            *out_instance = s;
            return PX_OK;
        }

        static px_status on_start(void *instance, px_error *err) {
            sink *s = instance;
            s->fd = open(s->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
            if (s->fd < 0) {
                px_error_set(err, SINK_NAME ": cannot open the output file (config key path)");
                return PX_ERR_IO;
            }
            s->stopping = false;
            if (pthread_create(&s->worker, NULL, worker_main, s) != 0) {
                close(s->fd), s->fd = -1;
                px_error_set(err, SINK_NAME ": cannot start the worker thread");
                return PX_ERR_RESOURCE_EXHAUSTED;
            }
            s->worker_running = true;
            px_subscription_spec spec;
            memset(&spec, 0, sizeof spec);
            spec.struct_size = sizeof spec;
            spec.group_mode = PX_GROUP_CLUSTERING;
            spec.topic = (px_str){s->topic, strlen(s->topic)};
            spec.group = (px_str){s->group, strlen(s->group)};
            spec.start_position = PX_START_EARLIEST;
            spec.max_in_flight = 256; /* bounds the queue: the kernel delivers no more until some are settled */
            spec.deliver = on_deliver;
            spec.user = s;
            px_status status = s->api->subscribe(s->host, &spec, &s->subscription, err);
            if (status != PX_OK) {
                pthread_mutex_lock(&s->lock);
                s->stopping = true;
                pthread_cond_signal(&s->wake);
                pthread_mutex_unlock(&s->lock);
                pthread_join(s->worker, NULL);
                s->worker_running = false;
                close(s->fd), s->fd = -1;
                return status;
            }
            s->subscribed = true;
            sink_log(s, PX_LOG_INFO, SINK_NAME ": subscribed");
            return PX_OK;
        }

        static px_status on_stop(void *instance, uint64_t timeout_ms, px_error *err) {
            sink *s = instance;
            (void)err;
            /* 1. No delivery runs or starts after unsubscribe returns. */
            if (s->subscribed) {
                s->api->unsubscribe(s->host, s->subscription);
                s->subscribed = false;
            }
            /* 2. The worker finishes what is queued, within half the deadline. */
            pthread_mutex_lock(&s->lock);
            s->stopping = true;
            s->deadline_ns = now_ns() + timeout_ms * 500000u;
            pthread_cond_signal(&s->wake);
            pthread_mutex_unlock(&s->lock);
            if (s->worker_running) {
                pthread_join(s->worker, NULL);
                s->worker_running = false;
            }
            /* 3. What it could not finish goes back to the kernel, to be redelivered. */
            while (s->head != NULL) {
                item *it = s->head;
                s->head = it->next;
                s->api->nack(s->host, it->delivery_id, PX_NACK_RETRY, (px_str){"stopping", 8});
                free(it->line);
                free(it);
            }
            s->tail = NULL;
            if (s->fd >= 0) {
                fdatasync(s->fd);
                close(s->fd);
                s->fd = -1;
            }
            return PX_OK;
        }

        static void on_destroy(void *instance) {
            sink *s = instance;
            pthread_mutex_destroy(&s->lock);
            pthread_cond_destroy(&s->wake);
            free(s->topic), free(s->group), free(s->path), free(s);
        }

        static px_status on_health(void *instance, px_error *err) {
            sink *s = instance;
            if (s->fd < 0) {
                px_error_set(err, SINK_NAME ": the output file is not open");
                return PX_ERR_UNAVAILABLE;
            }
            return PX_OK;
        }

        /* A manifest operation: `plexus plugin call @NAME@ written`. */
        PX_EXPORT uint64_t px_op_@IDENT@_written(void *instance);
        PX_EXPORT uint64_t px_op_@IDENT@_written(void *instance) {
            sink *s = instance;
            pthread_mutex_lock(&s->lock);
            uint64_t written = s->written;
            pthread_mutex_unlock(&s->lock);
            return written;
        }

        static const px_plugin_descriptor descriptor = {
            .struct_size = sizeof(px_plugin_descriptor),
            .abi_major = PX_ABI_VERSION_MAJOR,
            .abi_minor = PX_ABI_VERSION_MINOR,
            .name = SINK_NAME,
            .version = "0.1.0",
            .kinds = PX_KIND_CONNECTOR,
            .on_create = on_create,
            .on_start = on_start,
            .on_stop = on_stop,
            .on_destroy = on_destroy,
            .on_health = on_health,
        };

        PX_EXPORT px_status px_plugin_entry_v1(const px_host_api *api, const px_plugin_descriptor **out_descriptor,
                                               px_error *err);
        PX_EXPORT px_status px_plugin_entry_v1(const px_host_api *api, const px_plugin_descriptor **out_descriptor,
                                               px_error *err) {
            px_status status = px_negotiate(api, err);
            if (status != PX_OK) return status;
            *out_descriptor = &descriptor;
            return PX_OK;
        }

        """#

    static let manifest = #"""
        # @NAME@: a sink connector in C (scaffolded by plexus plugin new; see README.md).
        manifest: 1
        name: @NAME@
        version: 0.1.0
        description: Appends every event of a topic to a file, one line each.
        kind: connector
        library: @LIBRARY@
        abi: {major: 1, minor: @ABI_MINOR@}
        requires:
          - {capability: storage, version: ^1.0.0, optional: true}
        config:
          schema:
            topic: {type: string, default: events, description: The topic to consume.}
            group: {type: string, default: @NAME@, description: The consumer group (its offsets survive restarts).}
            path: {type: string, default: @NAME@.out, description: The file every event is appended to.}
            fsync:
              type: string
              enum: [always, never]
              default: always
              description: "always: fdatasync before each acknowledgement; never: leave it to the OS."
          values: {}
        operations:
          - {name: written, symbol: px_op_@IDENT@_written, signature: uint64 (instance)}

        """#

    static let makefile = #"""
        # Builds @LIBRARY@ with the system C compiler: it needs libc and libpthread only.
        # The one command: cc -std=c11 -O2 -fPIC -shared -fvisibility=hidden -I . -Wl,--version-script=plugin.version-script -Wl,-z,defs -o @LIBRARY@ @NAME@.c -lpthread
        CC ?= cc
        CFLAGS ?= -std=c11 -O2 -Wall -Wextra -Werror
        PLEXUS ?= plexus

        @LIBRARY@: @NAME@.c plexus.h plugin.version-script
        	$(CC) $(CFLAGS) -fPIC -shared -fvisibility=hidden -I . \
        	  -Wl,--version-script=plugin.version-script -Wl,-z,defs -o $@ @NAME@.c -lpthread

        # A throwaway node with this plugin loaded; it reloads the plugin when `make` rebuilds it.
        dev: @LIBRARY@
        	$(PLEXUS) dev @NAME@.yaml

        test: @LIBRARY@
        	PLEXUS=$(PLEXUS) sh test.sh

        # The @KIND@ contract, rule by rule, against the built library (docs/conformance.md).
        conformance: @LIBRARY@
        	$(PLEXUS) conformance --kind @KIND@ --manifest @NAME@.yaml @LIBRARY@

        clean:
        	rm -f @LIBRARY@ @NAME@.out test-client

        .PHONY: dev test conformance clean

        """#

    static let versionScript = """
        /* Exports only the entry symbol and the manifest operations. */
        {
          global:
            px_plugin_entry_v1;
            px_op_*;
          local:
            *;
        };

        """

    static let test = #"""
        #!/bin/sh
        # Starts `plexus dev` with this plugin, publishes 100 events over TCP, and checks that all 100 are in the
        # output file, once each, in order.
        set -eu
        cd "$(dirname "$0")"
        PLEXUS=${PLEXUS:-plexus}
        rm -f @NAME@.out dev.out
        "$PLEXUS" dev @NAME@.yaml > dev.out 2> dev.err &
        dev=$!
        trap 'kill -INT $dev 2>/dev/null; wait $dev 2>/dev/null || true' EXIT
        tcp=""
        for _ in $(seq 1 100); do
          tcp=$(sed -n 's/^plexus dev: tcp //p' dev.out)
          [ -n "$tcp" ] && break
          sleep 0.1
        done
        [ -n "$tcp" ] || { echo "test: plexus dev did not start"; cat dev.err; exit 1; }
        seq 1 100 | "$PLEXUS" pub events --server "$tcp" > /dev/null
        for _ in $(seq 1 100); do
          [ "$(wc -l < @NAME@.out 2>/dev/null || echo 0)" -ge 100 ] && break
          sleep 0.1
        done
        lines=$(wc -l < @NAME@.out)
        [ "$lines" -eq 100 ] || { echo "test: $lines lines, expected 100"; exit 1; }
        [ "$(cut -d' ' -f3 @NAME@.out | tr '\n' ' ')" = "$(seq 1 100 | tr '\n' ' ')" ] || {
          echo "test: the lines are not the events 1..100 in order"; exit 1; }
        echo "test: ok (100 events written in order)"

        """#

    static let readme = #"""
        # @NAME@

        A sink connector in plain C, scaffolded by `plexus plugin new --kind connector --lang c @NAME@`. It
        consumes `topic` as consumer group `group` and appends one line per event to `path`:
        `<topic>@<offset> <id> <data>`.

        | key | default | meaning |
        |---|---|---|
        | `topic` | `events` | the topic consumed |
        | `group` | `@NAME@` | the consumer group; its committed offset survives restarts |
        | `path` | `@NAME@.out` | the output file (relative to the node's working directory) |
        | `fsync` | `always` | `always`: `fdatasync` before each acknowledgement; `never`: the OS decides |

        Guarantees: at least once. An event is acknowledged only after its line is written (and synced with
        `fsync: always`); a failed write is nacked, and the kernel retries it with the subscription's backoff.
        On stop, events still queued are finished within half the stop deadline, and the rest are nacked, so
        the kernel redelivers them.

        The pattern to keep when you replace `write_event()`: `on_deliver` runs on a kernel thread and must not
        block, so it copies what it needs into a queue; one worker thread does the slow work and acks or nacks;
        `on_stop` unsubscribes first (after that no delivery runs or starts), then drains or nacks the queue.
        `max_in_flight` bounds the queue.

        - `make` builds `@LIBRARY@` (libc and libpthread only); `plexus.h` beside it is the ABI 1.@ABI_MINOR@
          header the plugin was written against.
        - `make dev` runs it in a throwaway node (`plexus dev`), which reloads it on every rebuild.
        - `make test` runs `test.sh`: 100 events in, 100 lines out, in order.
        - `make conformance` runs `plexus conformance --kind connector` against it.
        - `plexus plugin pack @NAME@.yaml` and `plexus plugin sign` make a signed archive to install.

        """#
}
