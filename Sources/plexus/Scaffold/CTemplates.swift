/// The files `plexus plugin new --kind registry --lang c NAME` writes besides the ones every C scaffold shares
/// (Makefile, version script, plexus.h; see `CSinkTemplate`): an in-memory registry with TTLs and watches, whose
/// test is the registry conformance suite. Placeholders as in `CSinkTemplate`.
enum CRegistryTemplate {
    static let source = #"""
        /*
         * @NAME@: a service registry in plain C, scaffolded by `plexus plugin new`.
         *
         * Instances live in memory (a node restart forgets them); an instance registered with ttl_ms disappears
         * after it (a host timer sweeps every `sweep_ms`), reported to watches as PX_WATCH_DELETE. Replace the list
         * with your backend (a file, a database, a remote registry); keep the rules the kernel relies on:
         *
         *   every hook that returns PX_OK calls its completion exactly once (here: inline, after the lock is released);
         *   a hook that returns an error never calls it;
         *   a new watch sees a PUT for every live instance first, then every change in the order it happened, and its
         *   callbacks never run concurrently: here every change and its callbacks happen under one lock (recursive,
         *   so a callback may call back into the registry), which also makes unwatch wait for a running callback;
         *   stop cancels the sweep timer; after it returns no callback runs.
         *
         * Build: make    Test: make test    Conformance: make conformance
         */
        #define _POSIX_C_SOURCE 200809L
        #define _XOPEN_SOURCE 700 /* PTHREAD_MUTEX_RECURSIVE */
        #include <pthread.h>
        #include <stdbool.h>
        #include <stddef.h>
        #include <stdint.h>
        #include <stdlib.h>
        #include <string.h>
        #include <time.h>

        #include "plexus.h"

        #define REGISTRY_NAME "@NAME@"

        /* One registered instance: owned copies of every string, and the px_service_instance pointing at them. */
        typedef struct entry {
            struct entry *next;
            px_service_instance view;
            px_kv *metadata;
            char *strings; /* one allocation holding every string the view points to */
            uint64_t expires_ns; /* CLOCK_MONOTONIC; 0: never */
        } entry;

        typedef struct watch {
            struct watch *next;
            uint64_t id;
            char *service;
            size_t service_len;
            px_watch_fn fn;
            void *user;
        } watch;

        typedef struct registry {
            const px_host_api *api;
            px_host *host;
            pthread_mutex_t lock; /* recursive: a watch or lookup callback may call back into the registry */
            entry *entries;
            watch *watches;
            uint64_t next_watch_id;
            uint64_t sweep_ms;
            uint64_t timer;
            bool timer_running;
            uint64_t registered; /* how many registrations were accepted: the `registered` operation */
        } registry;

        static uint64_t now_ns(void) {
            struct timespec t;
            clock_gettime(CLOCK_MONOTONIC, &t);
            return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
        }

        static bool same(px_str a, px_str b) { return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0); }

        /* Copies a borrowed instance: one block for the strings, one array for the metadata. NULL when out of memory. */
        static entry *entry_copy(const px_service_instance *si) {
            size_t i, total = si->service.len + si->instance_id.len + si->address.len;
            for (i = 0; i < si->metadata_count; i++) total += si->metadata[i].key.len + si->metadata[i].value.len;
            entry *e = calloc(1, sizeof *e);
            char *strings = malloc(total + 1);
            px_kv *metadata = si->metadata_count > 0 ? calloc(si->metadata_count, sizeof *metadata) : NULL;
            if (e == NULL || strings == NULL || (si->metadata_count > 0 && metadata == NULL)) {
                free(e), free(strings), free(metadata);
                return NULL;
            }
            char *at = strings;
        #define COPY(dst, src)                                     \
            do {                                                   \
                if ((src).len > 0) memcpy(at, (src).ptr, (src).len); \
                (dst) = (px_str){at, (src).len};                   \
                at += (src).len;                                   \
            } while (0)
            e->view.struct_size = sizeof e->view;
            COPY(e->view.service, si->service);
            COPY(e->view.instance_id, si->instance_id);
            COPY(e->view.address, si->address);
            for (i = 0; i < si->metadata_count; i++) {
                COPY(metadata[i].key, si->metadata[i].key);
                COPY(metadata[i].value, si->metadata[i].value);
            }
        #undef COPY
            e->view.metadata = metadata;
            e->view.metadata_count = si->metadata_count;
            e->view.ttl_ms = si->ttl_ms;
            e->metadata = metadata;
            e->strings = strings;
            e->expires_ns = si->ttl_ms == 0 ? 0 : now_ns() + si->ttl_ms * 1000000u;
            return e;
        }

        static void entry_free(entry *e) {
            free(e->metadata), free(e->strings), free(e);
        }

        /* Tells every watch of the entry's service. Call under the lock, in the order of the changes. */
        static void notify(registry *r, uint32_t kind, const entry *e) {
            for (watch *w = r->watches; w != NULL; w = w->next) {
                if (same((px_str){w->service, w->service_len}, e->view.service)) w->fn(w->user, kind, &e->view);
            }
        }

        /* Removes the instances whose TTL passed. Call under the lock. */
        static void expire(registry *r, uint64_t now) {
            entry **link = &r->entries;
            while (*link != NULL) {
                entry *e = *link;
                if (e->expires_ns != 0 && e->expires_ns <= now) {
                    *link = e->next;
                    notify(r, PX_WATCH_DELETE, e);
                    entry_free(e);
                } else {
                    link = &e->next;
                }
            }
        }

        static void on_sweep(void *user, uint64_t timer_id) {
            registry *r = user;
            (void)timer_id;
            pthread_mutex_lock(&r->lock);
            expire(r, now_ns());
            pthread_mutex_unlock(&r->lock);
        }

        static px_status reg_register(void *instance, const px_service_instance *si, px_done_fn done, void *user,
                                      px_error *err) {
            registry *r = instance;
            if (si == NULL || done == NULL || si->struct_size < offsetof(px_service_instance, ttl_ms) + sizeof(uint64_t) ||
                si->service.len == 0 || si->instance_id.len == 0 || (si->metadata_count > 0 && si->metadata == NULL)) {
                px_error_set(err, REGISTRY_NAME ": an instance needs a service, an instance id and its metadata");
                return PX_ERR_INVALID_ARGUMENT;
            }
            entry *e = entry_copy(si);
            if (e == NULL) {
                px_error_set(err, REGISTRY_NAME ": out of memory");
                return PX_ERR_RESOURCE_EXHAUSTED;
            }
            pthread_mutex_lock(&r->lock);
            entry **link = &r->entries;
            while (*link != NULL && !(same((*link)->view.service, si->service) && same((*link)->view.instance_id, si->instance_id))) {
                link = &(*link)->next;
            }
            entry *replaced = *link;
            e->next = replaced != NULL ? replaced->next : NULL;
            *link = e;
            r->registered++;
            notify(r, PX_WATCH_PUT, e);
            pthread_mutex_unlock(&r->lock);
            if (replaced != NULL) entry_free(replaced);
            done(user, PX_OK, (px_str){"", 0});
            return PX_OK;
        }

        static px_status reg_deregister(void *instance, px_str service, px_str instance_id, px_done_fn done, void *user,
                                        px_error *err) {
            registry *r = instance;
            if (done == NULL || service.len == 0 || instance_id.len == 0) {
                px_error_set(err, REGISTRY_NAME ": deregister needs a service and an instance id");
                return PX_ERR_INVALID_ARGUMENT;
            }
            pthread_mutex_lock(&r->lock);
            expire(r, now_ns());
            entry **link = &r->entries;
            while (*link != NULL && !(same((*link)->view.service, service) && same((*link)->view.instance_id, instance_id))) {
                link = &(*link)->next;
            }
            entry *removed = *link;
            if (removed != NULL) {
                *link = removed->next;
                notify(r, PX_WATCH_DELETE, removed);
            }
            pthread_mutex_unlock(&r->lock);
            if (removed == NULL) {
                px_error_set(err, REGISTRY_NAME ": no such instance");
                return PX_ERR_NOT_FOUND;
            }
            entry_free(removed);
            done(user, PX_OK, (px_str){"", 0});
            return PX_OK;
        }

        static px_status reg_lookup(void *instance, px_str service, px_lookup_done_fn done, void *user, px_error *err) {
            registry *r = instance;
            if (done == NULL || service.len == 0) {
                px_error_set(err, REGISTRY_NAME ": lookup needs a service");
                return PX_ERR_INVALID_ARGUMENT;
            }
            pthread_mutex_lock(&r->lock);
            expire(r, now_ns());
            size_t count = 0;
            for (entry *e = r->entries; e != NULL; e = e->next) count += same(e->view.service, service);
            const px_service_instance **found = calloc(count + 1, sizeof *found);
            if (found == NULL) {
                pthread_mutex_unlock(&r->lock);
                px_error_set(err, REGISTRY_NAME ": out of memory");
                return PX_ERR_RESOURCE_EXHAUSTED;
            }
            count = 0;
            for (entry *e = r->entries; e != NULL; e = e->next) {
                if (same(e->view.service, service)) found[count++] = &e->view;
            }
            /* The instances are borrowed for the callback: it runs before the lock lets a change free them. */
            done(user, PX_OK, found, count, (px_str){"", 0});
            pthread_mutex_unlock(&r->lock);
            free(found);
            return PX_OK;
        }

        static px_status reg_watch(void *instance, px_str service, px_watch_fn fn, void *user, uint64_t *out_watch_id,
                                   px_error *err) {
            registry *r = instance;
            if (fn == NULL || out_watch_id == NULL || service.len == 0) {
                px_error_set(err, REGISTRY_NAME ": watch needs a service, a function and somewhere to put its id");
                return PX_ERR_INVALID_ARGUMENT;
            }
            watch *w = calloc(1, sizeof *w);
            char *name = malloc(service.len + 1);
            if (w == NULL || name == NULL) {
                free(w), free(name);
                px_error_set(err, REGISTRY_NAME ": out of memory");
                return PX_ERR_RESOURCE_EXHAUSTED;
            }
            memcpy(name, service.ptr, service.len);
            name[service.len] = '\0';
            w->service = name;
            w->service_len = service.len;
            w->fn = fn;
            w->user = user;
            pthread_mutex_lock(&r->lock);
            expire(r, now_ns());
            w->id = ++r->next_watch_id;
            *out_watch_id = w->id;
            /* Every live instance first, under the same lock as the changes: nothing slips in between. */
            for (entry *e = r->entries; e != NULL; e = e->next) {
                if (same(e->view.service, service)) fn(user, PX_WATCH_PUT, &e->view);
            }
            w->next = r->watches;
            r->watches = w;
            pthread_mutex_unlock(&r->lock);
            return PX_OK;
        }

        static px_status reg_unwatch(void *instance, uint64_t watch_id) {
            registry *r = instance;
            pthread_mutex_lock(&r->lock); /* waits for a callback running on another thread */
            watch **link = &r->watches;
            while (*link != NULL && (*link)->id != watch_id) link = &(*link)->next;
            watch *w = *link;
            if (w != NULL) *link = w->next;
            pthread_mutex_unlock(&r->lock);
            if (w == NULL) return PX_ERR_NOT_FOUND;
            free(w->service), free(w);
            return PX_OK;
        }

        static const px_registry_vtable vtable = {
            .struct_size = sizeof(px_registry_vtable),
            .on_register = reg_register,
            .on_deregister = reg_deregister,
            .on_lookup = reg_lookup,
            .on_watch = reg_watch,
            .on_unwatch = reg_unwatch,
        };

        static px_status on_create(const px_host_api *api, px_host *host, const px_plugin_config *config,
                                   void **out_instance, px_error *err) {
            registry *r = calloc(1, sizeof *r);
            pthread_mutexattr_t attr;
            if (r == NULL) {
                px_error_set(err, REGISTRY_NAME ": out of memory");
                return PX_ERR_RESOURCE_EXHAUSTED;
            }
            r->api = api;
            r->host = host;
            r->sweep_ms = 100;
            for (size_t i = 0; config != NULL && i < config->entry_count; i++) {
                const px_kv *kv = &config->entries[i];
                if (kv->key.len == 8 && memcmp(kv->key.ptr, "sweep_ms", 8) == 0) {
                    char digits[24] = {0};
                    memcpy(digits, kv->value.ptr, kv->value.len < 23 ? kv->value.len : 23);
                    r->sweep_ms = strtoull(digits, NULL, 10);
                }
            }
            if (r->sweep_ms == 0) {
                free(r);
                px_error_set(err, REGISTRY_NAME ": sweep_ms must be a positive number of milliseconds");
                return PX_ERR_INVALID_ARGUMENT;
            }
            pthread_mutexattr_init(&attr);
            pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
            pthread_mutex_init(&r->lock, &attr);
            pthread_mutexattr_destroy(&attr);
            *out_instance = r;
            return PX_OK;
        }

        static px_status on_start(void *instance, px_error *err) {
            registry *r = instance;
            uint64_t interval = r->sweep_ms * 1000000u;
            px_status status = r->api->timer_start(r->host, interval, interval, on_sweep, r, &r->timer, err);
            if (status != PX_OK) return status;
            r->timer_running = true;
            return PX_OK;
        }

        static px_status on_stop(void *instance, uint64_t timeout_ms, px_error *err) {
            registry *r = instance;
            (void)timeout_ms, (void)err;
            if (r->timer_running) {
                r->api->timer_cancel(r->host, r->timer); /* after it returns, on_sweep is not running */
                r->timer_running = false;
            }
            return PX_OK;
        }

        static void on_destroy(void *instance) {
            registry *r = instance;
            while (r->entries != NULL) {
                entry *e = r->entries;
                r->entries = e->next;
                entry_free(e);
            }
            while (r->watches != NULL) {
                watch *w = r->watches;
                r->watches = w->next;
                free(w->service), free(w);
            }
            pthread_mutex_destroy(&r->lock);
            free(r);
        }

        /* A manifest operation: `plexus plugin call @NAME@ registered`. */
        PX_EXPORT uint64_t px_op_@IDENT@_registered(void *instance);
        PX_EXPORT uint64_t px_op_@IDENT@_registered(void *instance) {
            registry *r = instance;
            pthread_mutex_lock(&r->lock);
            uint64_t registered = r->registered;
            pthread_mutex_unlock(&r->lock);
            return registered;
        }

        static const px_plugin_descriptor descriptor = {
            .struct_size = sizeof(px_plugin_descriptor),
            .abi_major = PX_ABI_VERSION_MAJOR,
            .abi_minor = PX_ABI_VERSION_MINOR,
            .name = REGISTRY_NAME,
            .version = "0.1.0",
            .kinds = PX_KIND_REGISTRY,
            .on_create = on_create,
            .on_start = on_start,
            .on_stop = on_stop,
            .on_destroy = on_destroy,
            .registry = &vtable,
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
        # @NAME@: a service registry in C (scaffolded by plexus plugin new; see README.md).
        manifest: 1
        name: @NAME@
        version: 0.1.0
        description: Keeps service instances in memory, expires them by TTL, and reports changes to watches.
        kind: registry
        library: @LIBRARY@
        abi: {major: 1, minor: @ABI_MINOR@}
        provides:
          - {capability: registry, version: 1.0.0}
        config:
          schema:
            sweep_ms: {type: integer, default: 100, minimum: 1, description: How often expired instances are removed.}
          values: {}
        operations:
          - {name: registered, symbol: px_op_@IDENT@_registered, signature: uint64 (instance)}

        """#

    static let test = #"""
        #!/bin/sh
        # Runs the registry conformance suite (register, lookup, replace, deregister, watches in order and serialized,
        # unwatch, TTL expiry, invalid arguments, completions exactly once) against the built library.
        set -eu
        cd "$(dirname "$0")"
        PLEXUS=${PLEXUS:-plexus}
        "$PLEXUS" conformance --kind registry --manifest @NAME@.yaml @LIBRARY@
        echo "test: ok (registry conformance passed)"

        """#

    static let readme = #"""
        # @NAME@

        A service registry in plain C, scaffolded by `plexus plugin new --kind registry --lang c @NAME@`. Instances
        are kept in memory (a restart forgets them); an instance registered with `ttl_ms` disappears after it and
        watches see a `PX_WATCH_DELETE`.

        | key | default | meaning |
        |---|---|---|
        | `sweep_ms` | `100` | how often a host timer removes expired instances |

        The rules to keep when you put your backend behind it (they are what `plexus conformance --kind registry`
        checks): every hook that returns `PX_OK` calls its completion exactly once, and one that returns an error
        never does; a new watch sees a PUT for every live instance first, then every change in order, never two
        callbacks at once; after `on_unwatch` returns its callback never runs. Here every change and its watch
        callbacks happen under one recursive lock, which gives all three; a backend with slow I/O queues callbacks
        per watch instead (see the Swift `standalone-registry` plugin).

        - `make` builds `@LIBRARY@` (libc and libpthread only); `plexus.h` beside it is the ABI 1.@ABI_MINOR@ header.
        - `make test` (test.sh) and `make conformance` run `plexus conformance --kind registry` against it.
        - `make dev` loads it in a throwaway node (`plexus dev`).
        - `plexus plugin pack @NAME@.yaml` and `plexus plugin sign` make a signed archive to install.

        """#
}

/// The files `plexus plugin new --kind protocol --lang c NAME` writes besides the shared ones: a line protocol
/// over TCP on a socket from the host, publishing each line and answering with its offset, with a test client.
enum CProtocolTemplate {
    static let source = #"""
        /*
         * @NAME@: a protocol plugin in plain C, scaffolded by `plexus plugin new`.
         *
         * A line protocol over TCP: a client connects to `host`:`port` and sends lines; each line is published to
         * `topic` as one event (its data the line, without the newline), and once the storage reports it durable the
         * plugin answers "ok <offset>\n" (or "error <text>\n"). Replace the framing with your protocol's; keep the
         * rules the kernel relies on:
         *
         *   the listening socket comes from the host (api->listen), so a replacing instance takes over the same
         *   port without refusing a connection; never shutdown() it, only close your descriptor;
         *   publish is asynchronous: its completion runs exactly once, on any thread; a connection here waits for it
         *   before answering, so a client's acknowledged lines are durable;
         *   stop wakes the acceptor (a pipe) and every connection (shutdown of the connection's socket), joins their
         *   threads, and closes the descriptors: after it returns nothing of this instance runs.
         *
         * Build: make    Test: make test    Conformance: make conformance
         */
        #define _POSIX_C_SOURCE 200809L
        #include <errno.h>
        #include <fcntl.h>
        #include <netinet/in.h>
        #include <poll.h>
        #include <pthread.h>
        #include <stdbool.h>
        #include <stdint.h>
        #include <stdio.h>
        #include <stdlib.h>
        #include <string.h>
        #include <sys/socket.h>
        #include <unistd.h>

        #include "plexus.h"

        #define PROTOCOL_NAME "@NAME@"
        #define MAX_LINE 65536
        #define MAX_CONNECTIONS 64

        typedef struct server server;

        /* One client connection and its thread. */
        typedef struct connection {
            struct connection *next;
            server *srv;
            int fd;
            pthread_t thread;
            bool finished; /* its thread has returned: the acceptor may join and free it */
        } connection;

        /* A publish's completion, waited for by the connection that published. */
        typedef struct waiter {
            pthread_mutex_t lock;
            pthread_cond_t done;
            bool completed;
            px_status status;
            uint64_t offset;
            char error[256];
        } waiter;

        struct server {
            const px_host_api *api;
            px_host *host;
            char *bind_host, *topic, *source;
            int32_t port;

            int listen_fd;
            int wake[2]; /* a byte written to wake[1] stops the acceptor */
            pthread_t acceptor;
            bool acceptor_running;

            pthread_mutex_t lock;
            bool stopping;
            connection *connections;
            size_t connection_count;
            uint64_t published;
            uint64_t next_id;
        };

        static char *config_text(const px_plugin_config *config, const char *key, const char *fallback) {
            size_t key_len = strlen(key);
            const char *value = fallback;
            size_t len = strlen(fallback);
            for (size_t i = 0; config != NULL && i < config->entry_count; i++) {
                const px_kv *kv = &config->entries[i];
                if (kv->key.len == key_len && memcmp(kv->key.ptr, key, key_len) == 0) {
                    value = kv->value.ptr;
                    len = kv->value.len;
                }
            }
            char *out = malloc(len + 1);
            if (out != NULL) {
                if (len > 0) memcpy(out, value, len);
                out[len] = '\0';
            }
            return out;
        }

        static void log_text(server *s, int32_t level, const char *text) {
            s->api->log(s->host, level, (px_str){text, strlen(text)});
        }

        static void on_published(void *user, px_status status, uint64_t first_offset, px_str error) {
            waiter *w = user;
            pthread_mutex_lock(&w->lock);
            w->status = status;
            w->offset = first_offset;
            snprintf(w->error, sizeof w->error, "%.*s", (int)error.len, error.ptr != NULL ? error.ptr : "");
            w->completed = true;
            pthread_cond_signal(&w->done);
            pthread_mutex_unlock(&w->lock);
        }

        static bool send_all(int fd, const char *text, size_t len) {
            while (len > 0) {
                ssize_t n = send(fd, text, len, MSG_NOSIGNAL);
                if (n < 0 && errno == EINTR) continue;
                if (n <= 0) return false;
                text += n, len -= (size_t)n;
            }
            return true;
        }

        /* Publishes one line and waits for its completion; false when the connection should close. */
        static bool publish_line(server *s, int fd, const char *line, size_t len) {
            char id[48];
            pthread_mutex_lock(&s->lock);
            snprintf(id, sizeof id, "%s-%llu", PROTOCOL_NAME, (unsigned long long)++s->next_id);
            pthread_mutex_unlock(&s->lock);
            px_event event;
            memset(&event, 0, sizeof event);
            event.struct_size = sizeof event;
            event.id = (px_str){id, strlen(id)};
            event.source = (px_str){s->source, strlen(s->source)};
            event.specversion = (px_str){"1.0", 3};
            event.type = (px_str){PROTOCOL_NAME ".line", strlen(PROTOCOL_NAME ".line")};
            event.datacontenttype = (px_str){"text/plain", 10};
            event.data = (px_bytes){(const uint8_t *)line, len};
            const px_event *events[1] = {&event};

            waiter w;
            memset(&w, 0, sizeof w);
            pthread_mutex_init(&w.lock, NULL);
            pthread_cond_init(&w.done, NULL);
            char text[256] = "";
            px_error err = {.struct_size = sizeof err, .message = text, .capacity = sizeof text};
            px_status status = s->api->publish(s->host, (px_str){s->topic, strlen(s->topic)}, events, 1, on_published, &w, &err);
            char reply[320];
            if (status == PX_OK) {
                pthread_mutex_lock(&w.lock);
                while (!w.completed) pthread_cond_wait(&w.done, &w.lock); /* done is called exactly once */
                pthread_mutex_unlock(&w.lock);
                status = w.status;
                if (status == PX_OK) {
                    snprintf(reply, sizeof reply, "ok %llu\n", (unsigned long long)w.offset);
                    pthread_mutex_lock(&s->lock);
                    s->published++;
                    pthread_mutex_unlock(&s->lock);
                } else {
                    snprintf(reply, sizeof reply, "error %s\n", w.error);
                }
            } else {
                snprintf(reply, sizeof reply, "error %s\n", text);
            }
            pthread_cond_destroy(&w.done);
            pthread_mutex_destroy(&w.lock);
            return send_all(fd, reply, strlen(reply));
        }

        static void *connection_main(void *arg) {
            connection *c = arg;
            server *s = c->srv;
            char *buffer = malloc(MAX_LINE);
            size_t used = 0;
            while (buffer != NULL) {
                ssize_t n = recv(c->fd, buffer + used, MAX_LINE - used, 0);
                if (n < 0 && errno == EINTR) continue;
                if (n <= 0) break; /* closed by the client, or shut down by stop */
                used += (size_t)n;
                size_t start = 0;
                bool open = true;
                for (size_t i = 0; i < used && open; i++) {
                    if (buffer[i] != '\n') continue;
                    size_t len = i - start;
                    if (len > 0 && buffer[start + len - 1] == '\r') len--;
                    open = publish_line(s, c->fd, buffer + start, len);
                    start = i + 1;
                }
                if (!open) break;
                memmove(buffer, buffer + start, used - start);
                used -= start;
                if (used == MAX_LINE) {
                    send_all(c->fd, "error line too long\n", 20);
                    break;
                }
            }
            free(buffer);
            pthread_mutex_lock(&s->lock);
            c->finished = true;
            pthread_mutex_unlock(&s->lock);
            return NULL;
        }

        /* Joins and frees the connections whose threads returned. Call without the lock. */
        static void reap(server *s, bool all) {
            for (;;) {
                connection *done = NULL;
                pthread_mutex_lock(&s->lock);
                for (connection **link = &s->connections; *link != NULL; link = &(*link)->next) {
                    if (all || (*link)->finished) {
                        done = *link;
                        *link = done->next;
                        s->connection_count--;
                        break;
                    }
                }
                pthread_mutex_unlock(&s->lock);
                if (done == NULL) return;
                pthread_join(done->thread, NULL);
                close(done->fd);
                free(done);
            }
        }

        static void *acceptor_main(void *arg) {
            server *s = arg;
            struct pollfd fds[2] = {{.fd = s->listen_fd, .events = POLLIN}, {.fd = s->wake[0], .events = POLLIN}};
            for (;;) {
                if (poll(fds, 2, 1000) < 0 && errno != EINTR) break;
                if (fds[1].revents != 0) break;
                reap(s, false);
                if ((fds[0].revents & POLLIN) == 0) continue;
                int fd = accept(s->listen_fd, NULL, NULL);
                if (fd < 0) continue; /* another instance took it, or a transient error */
                connection *c = calloc(1, sizeof *c);
                pthread_mutex_lock(&s->lock);
                bool room = c != NULL && !s->stopping && s->connection_count < MAX_CONNECTIONS;
                if (room) {
                    c->srv = s;
                    c->fd = fd;
                    room = pthread_create(&c->thread, NULL, connection_main, c) == 0;
                }
                if (room) {
                    c->next = s->connections;
                    s->connections = c;
                    s->connection_count++;
                }
                pthread_mutex_unlock(&s->lock);
                if (!room) {
                    send_all(fd, "error busy\n", 11);
                    close(fd);
                    free(c);
                }
            }
            return NULL;
        }

        static px_status on_create(const px_host_api *api, px_host *host, const px_plugin_config *config,
                                   void **out_instance, px_error *err) {
            server *s = calloc(1, sizeof *s);
            char *port = NULL;
            if (s == NULL) goto oom;
            s->api = api;
            s->host = host;
            s->listen_fd = s->wake[0] = s->wake[1] = -1;
            s->bind_host = config_text(config, "host", "127.0.0.1");
            s->topic = config_text(config, "topic", "events");
            s->source = config_text(config, "source", "/" PROTOCOL_NAME);
            port = config_text(config, "port", "0");
            if (s->bind_host == NULL || s->topic == NULL || s->source == NULL || port == NULL) goto oom;
            char *end = NULL;
            long value = strtol(port, &end, 10);
            bool valid = end != NULL && end != port && *end == '\0' && value >= 0 && value <= 65535;
            free(port); /* `end` points into it */
            if (!valid || s->topic[0] == '\0') {
                free(s->bind_host), free(s->topic), free(s->source), free(s);
                px_error_set(err, PROTOCOL_NAME ": port is 0 to 65535 and topic must not be empty");
                return PX_ERR_INVALID_ARGUMENT;
            }
            s->port = (int32_t)value;
            pthread_mutex_init(&s->lock, NULL);
            *out_instance = s;
            return PX_OK;
        oom:
            if (s != NULL) free(s->bind_host), free(s->topic), free(s->source), free(s);
            free(port);
            px_error_set(err, PROTOCOL_NAME ": out of memory");
            return PX_ERR_RESOURCE_EXHAUSTED;
        }

        static px_status on_start(void *instance, px_error *err) {
            server *s = instance;
            px_status status = s->api->listen(s->host, (px_str){s->bind_host, strlen(s->bind_host)}, s->port, 128,
                                              &s->listen_fd, err);
            if (status != PX_OK) return status;
            if (pipe(s->wake) != 0) {
                close(s->listen_fd), s->listen_fd = -1;
                px_error_set(err, PROTOCOL_NAME ": cannot make a pipe");
                return PX_ERR_RESOURCE_EXHAUSTED;
            }
            fcntl(s->listen_fd, F_SETFL, fcntl(s->listen_fd, F_GETFL) | O_NONBLOCK);
            s->stopping = false;
            if (pthread_create(&s->acceptor, NULL, acceptor_main, s) != 0) {
                close(s->listen_fd), close(s->wake[0]), close(s->wake[1]);
                s->listen_fd = s->wake[0] = s->wake[1] = -1;
                px_error_set(err, PROTOCOL_NAME ": cannot start the acceptor thread");
                return PX_ERR_RESOURCE_EXHAUSTED;
            }
            s->acceptor_running = true;
            struct sockaddr_in address;
            socklen_t size = sizeof address;
            char line[96];
            if (getsockname(s->listen_fd, (struct sockaddr *)&address, &size) == 0) {
                snprintf(line, sizeof line, PROTOCOL_NAME ": listening on %s:%u", s->bind_host, ntohs(address.sin_port));
                log_text(s, PX_LOG_NOTICE, line);
            }
            return PX_OK;
        }

        static px_status on_stop(void *instance, uint64_t timeout_ms, px_error *err) {
            server *s = instance;
            (void)timeout_ms, (void)err;
            if (s->acceptor_running) {
                char byte = 1;
                ssize_t ignored = write(s->wake[1], &byte, 1);
                (void)ignored;
                pthread_join(s->acceptor, NULL); /* no connection is added after this */
                s->acceptor_running = false;
            }
            pthread_mutex_lock(&s->lock);
            s->stopping = true;
            for (connection *c = s->connections; c != NULL; c = c->next) shutdown(c->fd, SHUT_RDWR); /* wakes its recv */
            pthread_mutex_unlock(&s->lock);
            reap(s, true);
            if (s->listen_fd >= 0) close(s->listen_fd); /* our dup: the kernel's socket stays open */
            if (s->wake[0] >= 0) close(s->wake[0]), close(s->wake[1]);
            s->listen_fd = s->wake[0] = s->wake[1] = -1;
            return PX_OK;
        }

        static void on_destroy(void *instance) {
            server *s = instance;
            pthread_mutex_destroy(&s->lock);
            free(s->bind_host), free(s->topic), free(s->source), free(s);
        }

        /* A manifest operation: `plexus plugin call @NAME@ published`. */
        PX_EXPORT uint64_t px_op_@IDENT@_published(void *instance);
        PX_EXPORT uint64_t px_op_@IDENT@_published(void *instance) {
            server *s = instance;
            pthread_mutex_lock(&s->lock);
            uint64_t published = s->published;
            pthread_mutex_unlock(&s->lock);
            return published;
        }

        static const px_plugin_descriptor descriptor = {
            .struct_size = sizeof(px_plugin_descriptor),
            .abi_major = PX_ABI_VERSION_MAJOR,
            .abi_minor = PX_ABI_VERSION_MINOR,
            .name = PROTOCOL_NAME,
            .version = "0.1.0",
            .kinds = PX_KIND_PROTOCOL,
            .on_create = on_create,
            .on_start = on_start,
            .on_stop = on_stop,
            .on_destroy = on_destroy,
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
        # @NAME@: a protocol plugin in C (scaffolded by plexus plugin new; see README.md).
        manifest: 1
        name: @NAME@
        version: 0.1.0
        description: Publishes every line a TCP client sends as one event and answers with its offset.
        kind: protocol
        library: @LIBRARY@
        abi: {major: 1, minor: @ABI_MINOR@}
        requires:
          - {capability: storage, version: ^1.0.0, optional: true}
        config:
          schema:
            host: {type: string, default: 127.0.0.1, description: The address to listen on.}
            port: {type: integer, default: 0, minimum: 0, maximum: 65535, description: "The TCP port (0: a free port, logged)."}
            topic: {type: string, default: events, description: The topic every line is published to.}
            source: {type: string, default: /@NAME@, description: The CloudEvents source of the events.}
          values: {}
        operations:
          - {name: published, symbol: px_op_@IDENT@_published, signature: uint64 (instance)}

        """#

    static let test = #"""
        #!/bin/sh
        # Starts `plexus dev` with this plugin, sends 20 lines through test-client.c (each must be answered "ok
        # <offset>"), then reads the 20 events back from the topic over the dev node's TCP protocol.
        set -eu
        cd "$(dirname "$0")"
        PLEXUS=${PLEXUS:-plexus}
        ${CC:-cc} -std=c11 -O2 -Wall -Werror -o test-client test-client.c
        "$PLEXUS" dev @NAME@.yaml > dev.out 2> dev.err &
        dev=$!
        trap 'kill -INT $dev 2>/dev/null; wait $dev 2>/dev/null || true' EXIT
        port=""
        tcp=""
        for _ in $(seq 1 100); do
          port=$(sed -n 's/.*@NAME@: listening on [^:]*:\([0-9]*\).*/\1/p' dev.err | tail -n 1)
          tcp=$(sed -n 's/^plexus dev: tcp //p' dev.out)
          [ -n "$port" ] && [ -n "$tcp" ] && break
          sleep 0.1
        done
        [ -n "$port" ] || { echo "test: the plugin did not log its port"; cat dev.err; exit 1; }
        ./test-client 127.0.0.1 "$port" 20
        received=$("$PLEXUS" sub events --server "$tcp" --from earliest --count 20 --timeout 10s | wc -l)
        [ "$received" -ge 20 ] || { echo "test: $received events read back, expected 20"; exit 1; }
        echo "test: ok (20 lines published and read back)"

        """#

    static let client = #"""
        /* test-client HOST PORT N: sends N lines ("line 1".."line N") and expects N answers "ok <offset>". */
        #define _POSIX_C_SOURCE 200809L
        #include <arpa/inet.h>
        #include <netinet/in.h>
        #include <stdio.h>
        #include <stdlib.h>
        #include <string.h>
        #include <sys/socket.h>
        #include <unistd.h>

        int main(int argc, char **argv) {
            if (argc != 4) {
                fprintf(stderr, "usage: test-client HOST PORT N\n");
                return 2;
            }
            struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
            int n = atoi(argv[3]);
            int fd = socket(AF_INET, SOCK_STREAM, 0);
            if (fd < 0 || inet_pton(AF_INET, argv[1], &address.sin_addr) != 1 ||
                connect(fd, (struct sockaddr *)&address, sizeof address) != 0) {
                perror("test-client: connect");
                return 1;
            }
            FILE *in = fdopen(fd, "r");
            char line[512];
            for (int i = 1; i <= n; i++) {
                int len = snprintf(line, sizeof line, "line %d\n", i);
                if (write(fd, line, (size_t)len) != len || fgets(line, sizeof line, in) == NULL) {
                    fprintf(stderr, "test-client: connection lost at line %d\n", i);
                    return 1;
                }
                if (strncmp(line, "ok ", 3) != 0) {
                    fprintf(stderr, "test-client: line %d answered %s", i, line);
                    return 1;
                }
            }
            printf("test-client: %d lines acknowledged\n", n);
            return 0;
        }

        """#

    static let readme = #"""
        # @NAME@

        A protocol plugin in plain C, scaffolded by `plexus plugin new --kind protocol --lang c @NAME@`: a line
        protocol over TCP. Every line a client sends is published to `topic` as one event (`type` `@NAME@.line`, the
        line as `text/plain` data); once the storage reports it durable the client gets `ok <offset>` (or
        `error <text>`). Try it: `make dev`, then `nc 127.0.0.1 PORT` with the port the plugin logs.

        | key | default | meaning |
        |---|---|---|
        | `host` | `127.0.0.1` | the address to listen on |
        | `port` | `0` | the TCP port; 0 takes a free one, logged at start |
        | `topic` | `events` | the topic lines are published to |
        | `source` | `/@NAME@` | the events' CloudEvents `source` |

        The rules to keep when you put your own framing in: take the listening socket from the host (`api->listen`),
        so a replacing instance keeps the port without refusing a connection, and never `shutdown()` it; answer a
        client only from the publish completion (called exactly once, on any thread); and in `on_stop` wake the
        acceptor and every connection and join their threads, so nothing of the instance runs after it returns.

        - `make` builds `@LIBRARY@` (libc and libpthread only); `plexus.h` beside it is the ABI 1.@ABI_MINOR@ header.
        - `make test` (test.sh): 20 lines in through `test-client.c` against a `plexus dev` node, 20 events read back.
        - `make conformance` runs `plexus conformance --kind protocol` against it.
        - `plexus plugin pack @NAME@.yaml` and `plexus plugin sign` make a signed archive to install.

        """#
}

/// The files `plexus plugin new --kind storage --lang c NAME` writes besides the shared ones: streams in memory,
/// each event copied once into one block, whose test is the storage conformance suite.
enum CStorageTemplate {
    static let source = #"""
        /*
         * @NAME@: a storage plugin in plain C, scaffolded by `plexus plugin new`.
         *
         * Streams kept in memory (durability none: a restart forgets them): every appended event is copied once, into
         * one allocation holding its px_record, its px_event and every byte they point to; reads hand the kernel
         * pointers to those records, borrowed for the callback. Consumer offsets are kept per stream. Replace the
         * arrays with your engine (files, a database) and raise `durability` to what your completions promise; keep
         * the rules the kernel relies on (docs/abi.md, "Storage plugins"), which `make conformance` checks:
         *
         *   offsets are dense and increasing, batches ordered as the calls took the stream's lock;
         *   a hook that returns PX_OK calls its completion exactly once (here: inline); one that fails never does;
         *   reading at the end returns nothing, past it or before the first retained offset PX_ERR_OUT_OF_RANGE;
         *   a stream and its offsets outlive the handle: opening the name again finds them.
         *
         * Build: make    Test: make test    Conformance: make conformance
         */
        #define _POSIX_C_SOURCE 200809L
        #include <pthread.h>
        #include <stdbool.h>
        #include <stdint.h>
        #include <stdlib.h>
        #include <string.h>

        #include "plexus.h"

        #define STORAGE_NAME "@NAME@"

        typedef struct group_offset {
            struct group_offset *next;
            char *group;
            size_t group_len;
            uint64_t offset;
        } group_offset;

        /* One stream: its records (records[0] has offset first_offset) and its groups' offsets. */
        typedef struct stream {
            struct stream *next;
            char *name;
            size_t name_len;
            pthread_mutex_t lock;
            px_record **records;
            size_t count, capacity;
            uint64_t first_offset;
            uint64_t size_bytes;
            group_offset *groups;
        } stream;

        /* The handle the kernel holds: a stream outlives its handles. */
        typedef struct handle {
            stream *s;
        } handle;

        typedef struct storage {
            pthread_mutex_t lock; /* guards the list of streams */
            stream *streams;
            uint64_t appended; /* the `appended` operation */
        } storage;

        static const px_str no_error = {"", 0};

        static bool same(const char *a, size_t a_len, px_str b) {
            return a_len == b.len && (a_len == 0 || memcmp(a, b.ptr, a_len) == 0);
        }

        /* Copies a borrowed event: one block holding the record, the event, the extensions and every byte. */
        static px_record *record_copy(const px_event *e, uint64_t offset, size_t *out_size) {
            const px_str *texts[] = {&e->id, &e->source, &e->specversion, &e->type,
                                     &e->datacontenttype, &e->dataschema, &e->subject, &e->time};
            size_t i, total = sizeof(px_record) + sizeof(px_event) + e->extension_count * sizeof(px_kv) + e->data.len;
            for (i = 0; i < 8; i++) total += texts[i]->len;
            for (i = 0; i < e->extension_count; i++) total += e->extensions[i].key.len + e->extensions[i].value.len;
            char *block = calloc(1, total);
            if (block == NULL) return NULL;
            px_record *r = (px_record *)block;
            px_event *copy = (px_event *)(block + sizeof(px_record));
            px_kv *extensions = (px_kv *)(block + sizeof(px_record) + sizeof(px_event));
            char *at = (char *)(extensions + e->extension_count);
        #define COPY(dst, src)                                                \
            do {                                                              \
                if ((src).ptr == NULL) {                                      \
                    (dst).ptr = NULL, (dst).len = 0; /* absent stays absent */ \
                } else {                                                      \
                    if ((src).len > 0) memcpy(at, (src).ptr, (src).len);      \
                    (dst).ptr = at, (dst).len = (src).len;                    \
                    at += (src).len;                                          \
                }                                                             \
            } while (0)
            copy->struct_size = sizeof *copy;
            COPY(copy->id, e->id);
            COPY(copy->source, e->source);
            COPY(copy->specversion, e->specversion);
            COPY(copy->type, e->type);
            COPY(copy->datacontenttype, e->datacontenttype);
            COPY(copy->dataschema, e->dataschema);
            COPY(copy->subject, e->subject);
            COPY(copy->time, e->time);
            for (i = 0; i < e->extension_count; i++) {
                COPY(extensions[i].key, e->extensions[i].key);
                COPY(extensions[i].value, e->extensions[i].value);
            }
            copy->extensions = e->extension_count > 0 ? extensions : NULL;
            copy->extension_count = e->extension_count;
            if (e->data.len > 0) memcpy(at, e->data.ptr, e->data.len);
            copy->data = (px_bytes){e->data.len > 0 ? (const uint8_t *)at : NULL, e->data.len};
        #undef COPY
            r->struct_size = sizeof *r;
            r->offset = offset;
            r->event = copy;
            *out_size = total;
            return r;
        }

        /* The checks every hook on a stream makes first. */
        #define NEED(cond, text)                                 \
            do {                                                 \
                if (!(cond)) {                                   \
                    px_error_set(err, STORAGE_NAME ": " text);  \
                    return PX_ERR_INVALID_ARGUMENT;              \
                }                                                \
            } while (0)

        static px_status on_open_stream(void *instance, px_str name, const px_stream_options *options,
                                        px_stream **out_stream, px_error *err) {
            storage *st = instance;
            (void)options; /* retention: not implemented by this scaffold; trim is */
            NEED(name.len > 0 && name.ptr != NULL && out_stream != NULL, "a stream needs a name");
            handle *h = calloc(1, sizeof *h);
            if (h == NULL) {
                px_error_set(err, STORAGE_NAME ": out of memory");
                return PX_ERR_RESOURCE_EXHAUSTED;
            }
            pthread_mutex_lock(&st->lock);
            stream *s = st->streams;
            while (s != NULL && !same(s->name, s->name_len, name)) s = s->next;
            if (s == NULL && (s = calloc(1, sizeof *s)) != NULL && (s->name = malloc(name.len)) != NULL) {
                memcpy(s->name, name.ptr, name.len);
                s->name_len = name.len;
                pthread_mutex_init(&s->lock, NULL);
                s->next = st->streams;
                st->streams = s;
            } else if (s != NULL && s->name == NULL) {
                free(s), s = NULL;
            }
            pthread_mutex_unlock(&st->lock);
            if (s == NULL) {
                free(h);
                px_error_set(err, STORAGE_NAME ": out of memory");
                return PX_ERR_RESOURCE_EXHAUSTED;
            }
            h->s = s;
            *out_stream = (px_stream *)h;
            return PX_OK;
        }

        static void on_close_stream(void *instance, px_stream *stream_handle) {
            (void)instance;
            free(stream_handle); /* the stream itself stays, for the next open */
        }

        static px_status on_append(void *instance, px_stream *stream_handle, const px_event *const *events, size_t count,
                                   px_append_done_fn done, void *user, px_error *err) {
            storage *st = instance;
            NEED(stream_handle != NULL && done != NULL && (events != NULL || count == 0), "append needs a stream and events");
            for (size_t i = 0; i < count; i++) NEED(events[i] != NULL, "an event of the batch is NULL");
            stream *s = ((handle *)stream_handle)->s;
            /* Copy before taking the lock: appenders to one stream wait only for each other's bookkeeping. */
            px_record **copies = count > 0 ? calloc(count, sizeof *copies) : NULL;
            size_t *sizes = count > 0 ? calloc(count, sizeof *sizes) : NULL; /* each copy's allocation */
            bool ok = count == 0 || (copies != NULL && sizes != NULL);
            for (size_t i = 0; ok && i < count; i++) ok = (copies[i] = record_copy(events[i], 0, &sizes[i])) != NULL;
            pthread_mutex_lock(&s->lock);
            if (ok && s->count + count > s->capacity) {
                size_t capacity = s->capacity * 2 > s->count + count ? s->capacity * 2 : s->count + count + 64;
                px_record **grown = realloc(s->records, capacity * sizeof *grown);
                if (grown != NULL) s->records = grown, s->capacity = capacity;
                ok = grown != NULL;
            }
            uint64_t first = s->first_offset + s->count;
            for (size_t i = 0; ok && i < count; i++) {
                copies[i]->offset = first + i;
                s->records[s->count++] = copies[i];
                s->size_bytes += copies[i]->event->id.len + copies[i]->event->source.len + copies[i]->event->type.len +
                                 copies[i]->event->data.len;
            }
            pthread_mutex_unlock(&s->lock);
            if (!ok) {
                for (size_t i = 0; copies != NULL && i < count; i++) free(copies[i]);
                free(copies), free(sizes);
                px_error_set(err, STORAGE_NAME ": out of memory");
                return PX_ERR_RESOURCE_EXHAUSTED;
            }
            free(copies), free(sizes);
            pthread_mutex_lock(&st->lock);
            st->appended += count;
            pthread_mutex_unlock(&st->lock);
            done(user, PX_OK, first, no_error); /* durability none: in memory is all it promises */
            return PX_OK;
        }

        static px_status on_read(void *instance, px_stream *stream_handle, uint64_t from_offset, size_t max_records,
                                 size_t max_bytes, px_read_done_fn done, void *user, px_error *err) {
            (void)instance;
            NEED(stream_handle != NULL && done != NULL && max_records > 0, "read needs a stream and max_records >= 1");
            stream *s = ((handle *)stream_handle)->s;
            pthread_mutex_lock(&s->lock);
            uint64_t next = s->first_offset + s->count;
            if (from_offset < s->first_offset || from_offset > next) {
                pthread_mutex_unlock(&s->lock);
                px_error_set(err, STORAGE_NAME ": the offset is outside the stream's retained records");
                return PX_ERR_OUT_OF_RANGE;
            }
            size_t start = (size_t)(from_offset - s->first_offset), n = 0, bytes = 0;
            while (start + n < s->count && n < max_records) {
                const px_event *e = s->records[start + n]->event;
                size_t size = e->data.len + e->id.len + e->source.len + e->type.len;
                if (n > 0 && max_bytes > 0 && bytes + size > max_bytes) break; /* at least one record */
                bytes += size;
                n++;
            }
            /* Borrowed for the callback, which runs under the lock: nothing frees them meanwhile. */
            done(user, PX_OK, (const px_record *const *)(s->records + start), n, from_offset + n, no_error);
            pthread_mutex_unlock(&s->lock);
            return PX_OK;
        }

        static px_status on_commit_offset(void *instance, px_stream *stream_handle, px_str group, uint64_t offset,
                                          px_done_fn done, void *user, px_error *err) {
            (void)instance;
            NEED(stream_handle != NULL && done != NULL && offset != PX_OFFSET_NONE, "commit needs a stream and an offset");
            stream *s = ((handle *)stream_handle)->s;
            pthread_mutex_lock(&s->lock);
            group_offset *g = s->groups;
            while (g != NULL && !same(g->group, g->group_len, group)) g = g->next;
            if (g == NULL && (g = calloc(1, sizeof *g)) != NULL) {
                g->group = malloc(group.len + 1);
                if (g->group == NULL) {
                    free(g), g = NULL;
                } else {
                    if (group.len > 0) memcpy(g->group, group.ptr, group.len);
                    g->group_len = group.len;
                    g->next = s->groups;
                    s->groups = g;
                }
            }
            if (g != NULL) g->offset = offset;
            pthread_mutex_unlock(&s->lock);
            if (g == NULL) {
                px_error_set(err, STORAGE_NAME ": out of memory");
                return PX_ERR_RESOURCE_EXHAUSTED;
            }
            done(user, PX_OK, no_error);
            return PX_OK;
        }

        static px_status on_fetch_offset(void *instance, px_stream *stream_handle, px_str group, px_offset_done_fn done,
                                         void *user, px_error *err) {
            (void)instance;
            NEED(stream_handle != NULL && done != NULL, "fetch needs a stream");
            stream *s = ((handle *)stream_handle)->s;
            pthread_mutex_lock(&s->lock);
            group_offset *g = s->groups;
            while (g != NULL && !same(g->group, g->group_len, group)) g = g->next;
            uint64_t offset = g != NULL ? g->offset : PX_OFFSET_NONE;
            pthread_mutex_unlock(&s->lock);
            done(user, PX_OK, offset, no_error);
            return PX_OK;
        }

        static px_status on_trim(void *instance, px_stream *stream_handle, uint64_t before_offset, px_done_fn done,
                                 void *user, px_error *err) {
            (void)instance;
            NEED(stream_handle != NULL && done != NULL, "trim needs a stream");
            stream *s = ((handle *)stream_handle)->s;
            pthread_mutex_lock(&s->lock);
            size_t drop = 0;
            while (drop < s->count && s->first_offset + drop < before_offset) drop++;
            for (size_t i = 0; i < drop; i++) free(s->records[i]); /* one block per record */
            /* size_bytes counts what append copied; a trimmed stream recounts it from what is left. */
            memmove(s->records, s->records + drop, (s->count - drop) * sizeof *s->records);
            s->count -= drop;
            s->first_offset += drop; /* offsets never move */
            s->size_bytes = 0;
            for (size_t i = 0; i < s->count; i++) {
                const px_event *e = s->records[i]->event;
                s->size_bytes += e->id.len + e->source.len + e->type.len + e->data.len;
            }
            pthread_mutex_unlock(&s->lock);
            done(user, PX_OK, no_error);
            return PX_OK;
        }

        static px_status on_stream_info(void *instance, px_stream *stream_handle, px_stream_info *out, px_error *err) {
            (void)instance;
            NEED(stream_handle != NULL && out != NULL, "stream_info needs a stream");
            stream *s = ((handle *)stream_handle)->s;
            pthread_mutex_lock(&s->lock);
            out->first_offset = s->first_offset;
            out->next_offset = s->first_offset + s->count;
            out->size_bytes = s->size_bytes;
            pthread_mutex_unlock(&s->lock);
            return PX_OK;
        }

        static const px_storage_vtable vtable = {
            .struct_size = sizeof(px_storage_vtable),
            .durability = PX_DURABILITY_NONE,
            .on_open_stream = on_open_stream,
            .on_close_stream = on_close_stream,
            .on_append = on_append,
            .on_read = on_read,
            .on_commit_offset = on_commit_offset,
            .on_fetch_offset = on_fetch_offset,
            .on_trim = on_trim,
            .on_stream_info = on_stream_info,
            /* The 1.1 and 1.3 hooks (async open, lent reads, listing and deleting) are optional: NULL here. */
        };

        static px_status on_create(const px_host_api *api, px_host *host, const px_plugin_config *config,
                                   void **out_instance, px_error *err) {
            (void)api, (void)host, (void)config;
            storage *st = calloc(1, sizeof *st);
            if (st == NULL) {
                px_error_set(err, STORAGE_NAME ": out of memory");
                return PX_ERR_RESOURCE_EXHAUSTED;
            }
            pthread_mutex_init(&st->lock, NULL);
            *out_instance = st;
            return PX_OK;
        }

        static px_status on_start(void *instance, px_error *err) {
            (void)instance, (void)err;
            return PX_OK;
        }

        static px_status on_stop(void *instance, uint64_t timeout_ms, px_error *err) {
            (void)instance, (void)timeout_ms, (void)err; /* every completion was called before its hook returned */
            return PX_OK;
        }

        static void on_destroy(void *instance) {
            storage *st = instance;
            while (st->streams != NULL) {
                stream *s = st->streams;
                st->streams = s->next;
                for (size_t i = 0; i < s->count; i++) free(s->records[i]);
                while (s->groups != NULL) {
                    group_offset *g = s->groups;
                    s->groups = g->next;
                    free(g->group), free(g);
                }
                pthread_mutex_destroy(&s->lock);
                free(s->records), free(s->name), free(s);
            }
            pthread_mutex_destroy(&st->lock);
            free(st);
        }

        /* A manifest operation: `plexus plugin call @NAME@ appended`. */
        PX_EXPORT uint64_t px_op_@IDENT@_appended(void *instance);
        PX_EXPORT uint64_t px_op_@IDENT@_appended(void *instance) {
            storage *st = instance;
            pthread_mutex_lock(&st->lock);
            uint64_t appended = st->appended;
            pthread_mutex_unlock(&st->lock);
            return appended;
        }

        static const px_plugin_descriptor descriptor = {
            .struct_size = sizeof(px_plugin_descriptor),
            .abi_major = PX_ABI_VERSION_MAJOR,
            .abi_minor = PX_ABI_VERSION_MINOR,
            .name = STORAGE_NAME,
            .version = "0.1.0",
            .kinds = PX_KIND_STORAGE,
            .on_create = on_create,
            .on_start = on_start,
            .on_stop = on_stop,
            .on_destroy = on_destroy,
            .storage = &vtable,
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
        # @NAME@: a storage plugin in C (scaffolded by plexus plugin new; see README.md).
        manifest: 1
        name: @NAME@
        version: 0.1.0
        description: Keeps streams of events in memory (durability none); lost when the process ends.
        kind: storage
        library: @LIBRARY@
        abi: {major: 1, minor: @ABI_MINOR@}
        provides:
          - {capability: storage, version: 1.0.0}
        config:
          schema: {}
          values: {}
        operations:
          - {name: appended, symbol: px_op_@IDENT@_appended, signature: uint64 (instance)}

        """#

    static let test = #"""
        #!/bin/sh
        # Runs the storage conformance suite (dense offsets, ordering, concurrent appenders, reads at and past the end,
        # max_records and max_bytes, round trips, committed offsets, reopening, trimming, stream info, invalid
        # arguments, completions exactly once) against the built library.
        set -eu
        cd "$(dirname "$0")"
        PLEXUS=${PLEXUS:-plexus}
        "$PLEXUS" conformance --kind storage --manifest @NAME@.yaml @LIBRARY@
        echo "test: ok (storage conformance passed)"

        """#

    static let readme = #"""
        # @NAME@

        A storage plugin in plain C, scaffolded by `plexus plugin new --kind storage --lang c @NAME@`: named streams
        of events with dense offsets and consumer offsets per group, kept in memory (durability none: a restart
        forgets them). Each appended event is copied once, into one allocation holding its `px_record`, its `px_event`
        and every byte they point to; reads hand the kernel pointers to those records for the callback.

        The rules to keep when you put your engine behind it (docs/abi.md, "Storage plugins"; `make conformance`
        checks them): offsets are dense and increasing, batches ordered as the calls were made; a hook that returns
        `PX_OK` calls its completion exactly once, and one that fails never does; reading at the end returns nothing,
        past it or before the first retained offset `PX_ERR_OUT_OF_RANGE`; a stream and its committed offsets outlive
        the handle. Raise `durability` in the vtable to what your completions promise (`PX_DURABILITY_LOCAL`: on disk
        per your fsync policy). Retention (`px_stream_options`) and the optional 1.1 and 1.3 hooks (asynchronous open,
        lent reads, listing and deleting streams and offsets) are left `NULL`; the kernel then does without them.

        - `make` builds `@LIBRARY@` (libc and libpthread only); `plexus.h` beside it is the ABI 1.@ABI_MINOR@ header.
        - `make test` (test.sh) and `make conformance` run `plexus conformance --kind storage` against it.
        - `make dev` loads it in a throwaway node; bind a topic to it (`topics.bindings` in a node file) to use it.
        - `plexus plugin pack @NAME@.yaml` and `plexus plugin sign` make a signed archive to install.

        """#
}
