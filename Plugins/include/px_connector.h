/* px_connector.h - header-only helpers for connectors written in C (the C counterpart of the Swift SDK's
 * SourceConnector and PositionStore; see docs/connectors.md).
 *
 *   #include "plexus.h"
 *   #include "px_connector.h"
 *
 * - px_conn_position_load / px_conn_position_save: a source position in a file of the instance's data
 *   directory, replaced atomically (temporary file, fsync, rename, fsync of the directory).
 * - px_conn_publish_until_ok: publishes a batch and blocks until the node's completion says PX_OK,
 *   retrying anything else with exponential backoff; never drops the batch. Call it from the connector's
 *   own thread (never a kernel thread: it blocks).
 * - px_conn_backoff_ms: the backoff of the n-th failure.
 *
 * OWNERSHIP: every pointer argument is borrowed for the call.
 * THREADING: each function may be called from any thread; px_conn_publish_until_ok blocks its caller.
 * Needs POSIX (pthread, open/fsync/rename) and C11. */
#ifndef PX_CONNECTOR_H
#define PX_CONNECTOR_H

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "plexus.h"

/* 50 ms doubling per failure, at most max_ms. */
static inline uint64_t px_conn_backoff_ms(unsigned attempt, uint64_t max_ms) {
    uint64_t ms = 50u << (attempt > 16 ? 16 : (attempt == 0 ? 0 : attempt - 1));
    return ms < max_ms ? ms : max_ms;
}

static inline void px_conn_sleep_ms(uint64_t ms) {
    struct timespec t = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&t, &t) != 0 && errno == EINTR) {
    }
}

/* Reads the position saved at <dir>/position into buf (capacity cap). Returns its length, 0 when none was
 * saved, -1 on an error (errno set; ERANGE when it does not fit). */
static inline ssize_t px_conn_position_load(const char *dir, void *buf, size_t cap) {
    char path[4096];
    if (snprintf(path, sizeof path, "%s/position", dir) >= (int)sizeof path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT ? 0 : -1;
    size_t len = 0;
    for (;;) {
        if (len == cap) {
            char extra;
            ssize_t more = read(fd, &extra, 1);
            close(fd);
            if (more == 0) return (ssize_t)len;
            errno = ERANGE;
            return -1;
        }
        ssize_t n = read(fd, (char *)buf + len, cap - len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            int saved = errno;
            close(fd);
            errno = saved;
            return -1;
        }
        if (n == 0) break;
        len += (size_t)n;
    }
    close(fd);
    return (ssize_t)len;
}

/* Saves len bytes as the position at <dir>/position, durably: 0 on success, -1 on an error (errno set; the
 * previous position then stays). */
static inline int px_conn_position_save(const char *dir, const void *data, size_t len) {
    char path[4096], tmp[4100];
    if (snprintf(path, sizeof path, "%s/position", dir) >= (int)sizeof path ||
        snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return -1;
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(fd, (const char *)data + done, len - done);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            int saved = errno;
            close(fd);
            errno = saved;
            return -1;
        }
        done += (size_t)n;
    }
    if (fsync(fd) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    close(fd);
    if (rename(tmp, path) != 0) return -1;
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return -1;
    int rc = fsync(dfd);
    close(dfd);
    return rc;
}

/* One publish's completion, waited for by the publishing thread. */
typedef struct px_conn_wait {
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    int done;
    px_status status;
} px_conn_wait;

static inline void px_conn_wait_done(void *user, px_status status, uint64_t first_offset, px_str error) {
    (void)first_offset;
    (void)error;
    px_conn_wait *w = (px_conn_wait *)user;
    pthread_mutex_lock(&w->mutex);
    w->status = status;
    w->done = 1;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->mutex);
}

/* Publishes `count` events to `topic` until the node acknowledges them (PX_OK), retrying every refusal and
 * failed completion after px_conn_backoff_ms(attempt, max_backoff_ms). Returns PX_OK once acknowledged, or
 * PX_ERR_CANCELLED when *stop became non-zero first (the batch then counts as not published: do not advance
 * the position). The events must stay valid until it returns. */
static inline px_status px_conn_publish_until_ok(const px_host_api *api, px_host *host, px_str topic,
                                                 const px_event *const *events, size_t count,
                                                 uint64_t max_backoff_ms, const atomic_int *stop) {
    for (unsigned attempt = 1; !atomic_load(stop); attempt++) {
        /* Heap-allocated: a completion that arrives after a cancelled wait must still find it. */
        px_conn_wait *w = (px_conn_wait *)calloc(1, sizeof *w);
        if (w == NULL) {
            px_conn_sleep_ms(px_conn_backoff_ms(attempt, max_backoff_ms));
            continue;
        }
        pthread_mutex_init(&w->mutex, NULL);
        pthread_cond_init(&w->cond, NULL);
        char message[PX_ERROR_CAPACITY];
        px_error err = {sizeof(px_error), 0, message, sizeof message};
        px_status status = api->publish(host, topic, events, count, px_conn_wait_done, w, &err);
        if (status == PX_OK) {
            pthread_mutex_lock(&w->mutex);
            while (!w->done) {
                struct timespec until;
                clock_gettime(CLOCK_REALTIME, &until);
                until.tv_nsec += 100000000L;
                if (until.tv_nsec >= 1000000000L) {
                    until.tv_sec += 1;
                    until.tv_nsec -= 1000000000L;
                }
                pthread_cond_timedwait(&w->cond, &w->mutex, &until);
                if (!w->done && atomic_load(stop)) break;
            }
            int finished = w->done;
            status = w->status;
            pthread_mutex_unlock(&w->mutex);
            if (!finished) return PX_ERR_CANCELLED; /* w is left to the completion (a small, bounded leak) */
        }
        pthread_cond_destroy(&w->cond);
        pthread_mutex_destroy(&w->mutex);
        free(w);
        if (status == PX_OK) return PX_OK;
        px_conn_sleep_ms(px_conn_backoff_ms(attempt, max_backoff_ms));
    }
    return PX_ERR_CANCELLED;
}

#endif /* PX_CONNECTOR_H */
