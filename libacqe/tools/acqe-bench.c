/* acqe-bench: time opening a file and decoding every tensor, as a loader would.
 *
 *   acqe-bench FILE [--dtype none|f32|f16|bf16] [--threads N] [--repeat R] [--fresh]
 *   acqe-bench FILE --one NAME [--dtype ...]     random access: open, decode one tensor, count the pages
 *                                                 of the file that were touched (page faults of the map)
 *
 * Large tensors (>= 2^20 elements) are decoded one at a time with N threads each (their rANS chunks are
 * split); the small ones are decoded N at a time, one per thread. The output goes into one reused buffer
 * per thread, or (--fresh) into a newly malloc'ed buffer per tensor (page faults included, as a loader that
 * allocates its tensors pays them). Prints the best of R runs. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../acqe.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct ctx {
    acqe_file *f;
    acqe_dtype dtype;
    int fresh;
    size_t *small;
    size_t nsmall;
    size_t next;
    pthread_mutex_t lock;
    int failed;
    uint64_t bytes;
} ctx;

typedef struct worker {
    ctx *c;
    void *buf;
    size_t cap;
} worker;

static int decode_one(ctx *c, size_t i, int threads, void **buf, size_t *cap) {
    uint64_t n;
    acqe_error err;
    void *out;
    if (acqe_output_size(acqe_tensor(c->f, i), c->dtype, &n, &err) == ACQE_ERR_ARGUMENT)
        acqe_output_size(acqe_tensor(c->f, i), ACQE_DTYPE_NONE, &n, &err); /* integer tensors stay as they are */
    if (c->fresh) {
        out = malloc(n ? (size_t)n : 1);
    } else {
        if (n > *cap) {
            free(*buf);
            *buf = malloc((size_t)n);
            *cap = (size_t)n;
        }
        out = *buf;
    }
    {
        const acqe_tensor_info *t = acqe_tensor(c->f, i);
        acqe_dtype d = c->dtype;
        if (acqe_output_dtype(t, d, &d, NULL)) d = ACQE_DTYPE_NONE;
        if (acqe_decode(c->f, i, d, out, (size_t)n, threads, &err)) {
            fprintf(stderr, "acqe-bench: %s: %s\n", acqe_status_name(err.status), err.message);
            c->failed = 1;
        }
    }
    if (c->fresh) free(out);
    pthread_mutex_lock(&c->lock);
    c->bytes += n;
    pthread_mutex_unlock(&c->lock);
    return 0;
}

static void *small_worker(void *p) {
    worker *w = (worker *)p;
    ctx *c = w->c;
    for (;;) {
        size_t k;
        pthread_mutex_lock(&c->lock);
        k = c->next++;
        pthread_mutex_unlock(&c->lock);
        if (k >= c->nsmall) break;
        decode_one(c, c->small[k], 1, &w->buf, &w->cap);
    }
    return NULL;
}

static long faults(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_minflt + ru.ru_majflt;
}

/* open + decode one tensor; the page faults of the mapped file show which of its bytes were read */
static int one(const char *path, const char *name, acqe_dtype dtype) {
    acqe_file *f;
    acqe_error err;
    int64_t i;
    uint64_t n;
    void *out;
    long f0, f1, f2;
    double t0, t1, t2;
    const acqe_tensor_info *t;
    acqe_header_info h;
    t0 = now();
    f0 = faults();
    if (acqe_open_path(path, NULL, &f, &err)) {
        fprintf(stderr, "acqe-bench: %s: %s\n", acqe_status_name(err.status), err.message);
        return 3;
    }
    f1 = faults();
    t1 = now();
    i = acqe_find_tensor(f, name, strlen(name));
    if (i < 0) {
        fprintf(stderr, "acqe-bench: no tensor named %s\n", name);
        return 1;
    }
    t = acqe_tensor(f, (size_t)i);
    if (acqe_output_dtype(t, dtype, &dtype, NULL)) dtype = ACQE_DTYPE_NONE;
    acqe_output_size(t, dtype, &n, NULL);
    out = malloc(n ? (size_t)n : 1);
    memset(out, 0x55, n ? (size_t)n : 1); /* touch its pages now: they are not the file's */
    f2 = faults();
    t2 = now();
    if (acqe_decode(f, (size_t)i, dtype, out, (size_t)n, 1, &err)) {
        fprintf(stderr, "acqe-bench: %s: %s\n", acqe_status_name(err.status), err.message);
        return 3;
    }
    acqe_get_header(f, &h);
    printf("%s: open %.2f ms, %ld pages of the file touched; decode %s (%llu payload bytes) %.2f ms, %ld pages "
           "touched; the file has %llu pages\n",
           path, (t1 - t0) * 1e3, f1 - f0, name, (unsigned long long)t->payload_length, (now() - t2) * 1e3,
           faults() - f2, (unsigned long long)(h.file_length + 4095) / 4096);
    free(out);
    acqe_close(f);
    return 0;
}

int main(int argc, char **argv) {
    const char *path = NULL, *one_name = NULL;
    acqe_dtype dtype = ACQE_DTYPE_F16;
    int threads = 2, repeat = 3, fresh = 0, i, r;
    double best = 1e30, best_open = 1e30;
    uint64_t numel = 0, bytes = 0;
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--dtype") && i + 1 < argc) {
            const char *d = argv[++i];
            dtype = !strcmp(d, "f32") ? ACQE_DTYPE_F32 : !strcmp(d, "bf16") ? ACQE_DTYPE_BF16
                  : !strcmp(d, "none") ? ACQE_DTYPE_NONE : ACQE_DTYPE_F16;
        } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--repeat") && i + 1 < argc) repeat = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--fresh")) fresh = 1;
        else if (!strcmp(argv[i], "--one") && i + 1 < argc) one_name = argv[++i];
        else path = argv[i];
    }
    if (!path) {
        fprintf(stderr, "usage: acqe-bench FILE [--dtype none|f32|f16|bf16] [--threads N] [--repeat R] [--fresh]\n");
        return 1;
    }
    if (one_name) return one(path, one_name, dtype);
    for (r = 0; r < repeat; r++) {
        ctx c;
        acqe_error err;
        double t0 = now(), t1, t;
        size_t k, n;
        void *buf = NULL;
        size_t cap = 0;
        pthread_t tid[64];
        worker w[64];
        memset(&c, 0, sizeof c);
        c.dtype = dtype;
        c.fresh = fresh;
        pthread_mutex_init(&c.lock, NULL);
        if (acqe_open_path(path, NULL, &c.f, &err)) {
            fprintf(stderr, "acqe-bench: %s: %s\n", acqe_status_name(err.status), err.message);
            return acqe_status_is_file_error(err.status) ? 3 : 1;
        }
        t1 = now();
        n = acqe_tensor_count(c.f);
        c.small = (size_t *)malloc((n ? n : 1) * sizeof *c.small);
        numel = 0;
        for (k = 0; k < n; k++) {
            const acqe_tensor_info *ti = acqe_tensor(c.f, k);
            numel += ti->numel;
            if (ti->numel < (UINT64_C(1) << 20)) c.small[c.nsmall++] = k;
        }
        for (k = 0; k < n; k++) /* the large ones, each with all threads */
            if (acqe_tensor(c.f, k)->numel >= (UINT64_C(1) << 20)) decode_one(&c, k, threads, &buf, &cap);
        for (i = 0; i < threads && i < 64; i++) {
            w[i].c = &c;
            w[i].buf = NULL;
            w[i].cap = 0;
            if (i) pthread_create(&tid[i], NULL, small_worker, &w[i]);
        }
        small_worker(&w[0]);
        for (i = 1; i < threads && i < 64; i++) pthread_join(tid[i], NULL);
        for (i = 0; i < threads && i < 64; i++) free(w[i].buf);
        free(buf);
        t = now() - t0;
        if (t < best) best = t;
        if (t1 - t0 < best_open) best_open = t1 - t0;
        bytes = c.bytes;
        free(c.small);
        acqe_close(c.f);
        pthread_mutex_destroy(&c.lock);
        if (c.failed) return 3;
    }
    printf("%s: %llu values -> %llu bytes of %s in %.3f s (best of %d; open %.3f s), %.0f M values/s, %d threads%s\n",
           path, (unsigned long long)numel, (unsigned long long)bytes,
           dtype == ACQE_DTYPE_NONE ? "decoded dtypes" : acqe_dtype_name(dtype), best, repeat, best_open,
           (double)numel / best / 1e6, threads, fresh ? ", fresh buffers" : ", reused buffers");
    return 0;
}
