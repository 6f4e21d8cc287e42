/* libFuzzer harness (also driven by replay_main.c): open a buffer, list everything, read the assets,
 * decode every tensor in every output dtype on 1 and 2 threads, then verify.
 *
 * Input: the file's bytes followed by one control byte. If bit 0 of the control byte is set, the harness
 * first "seals" a copy of the file: it sets both file_length fields to the real size and recomputes every
 * checksum it can find (chunk CRCs, payload CRCs of an uncompressed directory, section CRCs, the section
 * table and header CRCs, the footer SHA-256), so that mutations get past the checksums to the parsers
 * behind them; with bit 0 clear the bytes are used as they are (so the checksum paths are fuzzed too).
 *
 * Aborts on: a status outside the known set, an error without a one-line message, a decode whose status,
 * message or bytes differ between 1 and 2 threads, a tensor above the decode limit that acqe_decode does
 * not refuse, a tensor that acqe_find_tensor does not find. The sanitizers catch everything else.
 *
 *   make fuzz    (clang -fsanitize=fuzzer,address,undefined) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../acqe.h"
#include "../src/internal.h"

#define OUT_LIMIT (UINT64_C(1) << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_status(acqe_status st, const acqe_error *e) {
    if (st == ACQE_OK) return;
    if (!acqe_status_is_file_error(st) && st != ACQE_ERR_DECODE_LIMIT && st != ACQE_ERR_ARGUMENT) abort();
    if (e->status != st || !e->message[0] || strlen(e->message) >= ACQE_MESSAGE_SIZE || strchr(e->message, '\n'))
        abort();
}

static void st32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}
static void st64(uint8_t *p, uint64_t v) {
    st32(p, (uint32_t)v);
    st32(p + 4, (uint32_t)(v >> 32));
}

/* [off, off + len) inside [0, n) */
static int inside(uint64_t off, uint64_t len, uint64_t n) { return off <= n && len <= n - off; }

/* chunk CRCs of a codec-2 payload, where its head can be followed */
static void seal_rans(uint8_t *p, uint64_t plen, uint64_t checked, uint64_t numel, uint64_t rows) {
    uint64_t K, T, C, N, pos, c, w;
    if (plen < 16 || checked > plen) return;
    K = ld32(p);
    T = ld32(p + 8);
    C = ld32(p + 12);
    if (K == 0 || K > 65536 || T == 0 || T > 65536 || C == 0) return;
    N = numel / C + (numel % C != 0);
    if (rows > plen || N > plen / 8) return;
    pos = 16 + 4 * K + (p[5] == 1 ? 4 * rows : 0) + (p[6] == 1 ? 2 * rows : 0);
    pos = (pos + 3) & ~(uint64_t)3;
    pos += 4 * T * K;
    if (!inside(pos, 8 * N, plen)) return;
    w = checked;
    for (c = 0; c < N; c++) {
        uint64_t wc = ld32(p + pos + 8 * c);
        if (!inside(w, 4 * wc, plen)) return;
        st32(p + pos + 8 * c + 4, acqe__crc32(p + w, 4 * wc));
        w += 4 * wc;
    }
}

/* payload CRCs (and chunk CRCs) through an uncompressed directory */
static void seal_directory(uint8_t *f, uint64_t n, uint8_t *d, uint64_t dlen) {
    uint64_t pos = 4, i, count;
    if (dlen < 4) return;
    count = ld32(d);
    for (i = 0; i < count && i < 65536; i++) {
        uint64_t nlen, rank, k, numel = 1, off, len, checked, rows;
        unsigned codec;
        if (!inside(pos, 2, dlen)) return;
        nlen = ld16(d + pos);
        pos += 2 + nlen;
        if (!inside(pos, 8, dlen)) return;
        rank = d[pos];
        codec = ld16(d + pos + 4);
        pos += 8;
        if (rank > 8 || !inside(pos, 8 * rank + 28, dlen)) return;
        rows = rank ? ld64(d + pos) : 1;
        for (k = 0; k < rank; k++) {
            uint64_t dim = ld64(d + pos + 8 * k);
            if (dim && numel > (UINT64_C(1) << 53) / dim) numel = UINT64_C(1) << 60;
            else numel *= dim;
        }
        pos += 8 * rank;
        off = ld64(d + pos);
        len = ld64(d + pos + 8);
        checked = ld64(d + pos + 16);
        if (inside(off, len, n) && checked <= len) {
            if (codec == 2 && numel <= (UINT64_C(1) << 53)) seal_rans(f + off, len, checked, numel, rows);
            st32(d + pos + 24, acqe__crc32(f + off, checked));
        }
        pos += 28;
    }
}

static void seal(uint8_t *f, size_t n) {
    uint64_t nsec, i, table_end, foot = n - FOOTER_SIZE;
    acqe_sha256 sha;
    if (n < MIN_FILE_SIZE) return;
    st64(f + 32, n);
    st64(f + n - 16, n);
    nsec = ld32(f + 44);
    table_end = 64 + 32 * nsec;
    if (nsec <= MAX_SECTIONS && table_end <= foot) {
        for (i = 0; i < nsec; i++) { /* payloads first: their CRCs live in the directory */
            uint8_t *e = f + 64 + 32 * i;
            uint64_t off = ld64(e + 8), len = ld64(e + 16);
            if (ld32(e) == ACQE_SECTION_DIRECTORY && !(ld32(e + 4) & 2) && inside(off, len, foot))
                seal_directory(f, foot, f + off, len);
        }
        for (i = 0; i < nsec; i++) {
            uint8_t *e = f + 64 + 32 * i;
            uint64_t off = ld64(e + 8), len = ld64(e + 16);
            if (ld32(e) != ACQE_SECTION_DATA && inside(off, len, foot)) st32(e + 24, acqe__crc32(f + off, len));
        }
        st32(f + 56, acqe__crc32(f + 64, 32 * nsec));
    }
    st32(f + 60, acqe__crc32(f, 60));
    acqe__sha256_init(&sha);
    acqe__sha256_update(&sha, f, (size_t)foot);
    acqe__sha256_final(&sha, f + foot);
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
    uint8_t *buf;
    if (size == 0) return 0;
    size--; /* the control byte */
    buf = (uint8_t *)malloc(size ? size : 1);
    if (size) memcpy(buf, data, size);
    if (data[size] & 1) seal(buf, size);
    acqe_options_init(&opts);
    opts.max_decoded_bytes = OUT_LIMIT;
    st = acqe_open_buffer(buf, size, &opts, &f, &e);
    check_status(st, &e);
    if (st) {
        free(buf);
        return 0;
    }
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
    free(buf);
    return 0;
}
