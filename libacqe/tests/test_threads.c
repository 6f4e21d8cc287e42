/* Several threads decode (and verify, and read the assets of) the same handle at once; every result
 * equals the single-threaded one. Run it under ThreadSanitizer too:
 *   clang -std=c99 -g -O1 -fsanitize=thread tests/test_threads.c src/(*.c) -lz -pthread && ./a.out FILE...
 *
 *   test_threads FILE...        exit 0 when every file gives the same bytes from every thread */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../acqe.h"

#define NT 4

typedef struct {
    acqe_file *f;
    int seed;
    void **want;
    int bad;
} arg_t;

static void *worker(void *p) {
    arg_t *a = (arg_t *)p;
    size_t n = acqe_tensor_count(a->f), k;
    int rep;
    for (rep = 0; rep < 3; rep++) {
        for (k = 0; k < n; k++) {
            size_t i = (k + (size_t)a->seed * 7) % n; /* each thread in its own order */
            uint64_t bytes;
            void *out;
            acqe_error e;
            acqe_output_size(acqe_tensor(a->f, i), ACQE_DTYPE_NONE, &bytes, NULL);
            out = malloc(bytes ? (size_t)bytes : 1);
            if (acqe_decode(a->f, i, ACQE_DTYPE_NONE, out, (size_t)bytes, 1 + (a->seed & 1), &e) ||
                memcmp(out, a->want[i], (size_t)bytes))
                a->bad = 1;
            free(out);
        }
        if (a->seed == 0 && acqe_verify(a->f, 2, NULL, NULL)) a->bad = 1;
        if (acqe_assets(a->f, NULL, NULL, NULL)) a->bad = 1;
    }
    return NULL;
}

int main(int argc, char **argv) {
    int i, fails = 0;
    for (i = 1; i < argc; i++) {
        acqe_file *f;
        acqe_error e;
        size_t n, k;
        void **want;
        pthread_t tid[NT];
        arg_t args[NT];
        int t;
        if (acqe_open_path(argv[i], NULL, &f, &e)) {
            fprintf(stderr, "%s: %s\n", argv[i], e.message);
            return 2;
        }
        n = acqe_tensor_count(f);
        want = (void **)calloc(n ? n : 1, sizeof *want);
        for (k = 0; k < n; k++) {
            uint64_t bytes;
            acqe_output_size(acqe_tensor(f, k), ACQE_DTYPE_NONE, &bytes, NULL);
            want[k] = malloc(bytes ? (size_t)bytes : 1);
            if (acqe_decode(f, k, ACQE_DTYPE_NONE, want[k], (size_t)bytes, 1, &e)) {
                fprintf(stderr, "%s: %s\n", argv[i], e.message);
                return 2;
            }
        }
        for (t = 0; t < NT; t++) {
            args[t].f = f;
            args[t].seed = t;
            args[t].want = want;
            args[t].bad = 0;
            pthread_create(&tid[t], NULL, worker, &args[t]);
        }
        for (t = 0; t < NT; t++) {
            pthread_join(tid[t], NULL);
            if (args[t].bad) {
                fprintf(stderr, "FAIL: %s: thread %d decoded other bytes\n", argv[i], t);
                fails++;
            }
        }
        for (k = 0; k < n; k++) free(want[k]);
        free(want);
        acqe_close(f);
    }
    printf("test_threads: %d files, %d failures\n", argc - 1, fails);
    return fails ? 1 : 0;
}
