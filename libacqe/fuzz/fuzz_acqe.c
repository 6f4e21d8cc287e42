/* libFuzzer / AFL++ harness: open a buffer, list everything, read the assets, decode every tensor in every
 * output dtype on 1 and 2 threads (bounded: a tensor above 2^22 output bytes is skipped, with the decode
 * limit set so that acqe_decode must refuse it), then verify. Any crash, sanitizer report or inconsistency
 * (a status outside the known set, a decode that differs between thread counts) aborts.
 *
 *   clang -fsanitize=fuzzer,address,undefined fuzz/fuzz_acqe.c src/(*.c) -lz -pthread   (make fuzz) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../acqe.h"

#define OUT_LIMIT (UINT64_C(1) << 22)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_status(acqe_status st, const acqe_error *e) {
    if (st == ACQE_OK) return;
    if (!acqe_status_is_file_error(st) && st != ACQE_ERR_DECODE_LIMIT && st != ACQE_ERR_ARGUMENT) abort();
    if (e->status != st || strlen(e->message) >= ACQE_MESSAGE_SIZE || strchr(e->message, '\n')) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const acqe_dtype outs[4] = {ACQE_DTYPE_NONE, ACQE_DTYPE_F32, ACQE_DTYPE_F16, ACQE_DTYPE_BF16};
    acqe_options opts;
    acqe_file *f;
    acqe_error e;
    acqe_status st;
    size_t i, n, mlen, na;
    const acqe_asset *assets;
    acqe_verify_report rep;
    acqe_options_init(&opts);
    opts.max_decoded_bytes = OUT_LIMIT;
    st = acqe_open_buffer(data, size, &opts, &f, &e);
    check_status(st, &e);
    if (st) return 0;
    (void)acqe_metadata(f, &mlen);
    check_status(acqe_assets(f, &assets, &na, &e), &e);
    n = acqe_tensor_count(f);
    for (i = 0; i < n; i++) {
        const acqe_tensor_info *t = acqe_tensor(f, i);
        int o;
        if (acqe_find_tensor(f, t->name, t->name_length) != (int64_t)i) abort();
        for (o = 0; o < 4; o++) {
            uint64_t bytes;
            void *a, *b;
            acqe_status s1, s2;
            acqe_error e2;
            st = acqe_output_size(t, outs[o], &bytes, &e);
            if (st) {
                check_status(st, &e);
                continue;
            }
            if (bytes > OUT_LIMIT) {
                st = acqe_decode(f, i, outs[o], NULL, 0, 1, &e);
                if (st != ACQE_ERR_DECODE_LIMIT) abort();
                continue;
            }
            a = malloc(bytes ? (size_t)bytes : 1);
            b = malloc(bytes ? (size_t)bytes : 1);
            s1 = acqe_decode(f, i, outs[o], a, (size_t)bytes, 1, &e);
            s2 = acqe_decode(f, i, outs[o], b, (size_t)bytes, 2, &e2);
            check_status(s1, &e);
            check_status(s2, &e2);
            if (s1 != s2 || (s1 && strcmp(e.message, e2.message))) abort();
            if (!s1 && memcmp(a, b, (size_t)bytes)) abort();
            free(a);
            free(b);
        }
    }
    st = acqe_verify(f, 2, &rep, &e);
    check_status(st, &e);
    acqe_close(f);
    return 0;
}
