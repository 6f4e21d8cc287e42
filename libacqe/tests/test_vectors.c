#define _POSIX_C_SOURCE 200809L
/* Runs every conformance vector of spec/vectors through libacqe:
 *   valid/NNN-name.acqe: opens (from the path and from a buffer), verifies, and decodes every tensor to the
 *     SHA-256 its .json records (the little-endian element bytes, BF16 as its bit patterns), on 1 and 3
 *     threads; every asset to its SHA-256; the file to file_sha256; also every float tensor converted to
 *     float32/float16/bfloat16 (the same bytes whatever the thread count);
 *   invalid/: each file fails open or verify with exactly the category MANIFEST.json names (and, reported
 *     but not required, a message containing the manifest's fragment of the reference reader's message).
 *
 *   test_vectors SPEC_VECTORS_DIR                   exit 0 when everything passes */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../acqe.h"
#include "../src/internal.h"
#include "minijson.h"

static int failures = 0;

#define FAIL(...)                                                                                                    \
    do {                                                                                                             \
        fprintf(stderr, "FAIL: " __VA_ARGS__);                                                                       \
        fputc('\n', stderr);                                                                                         \
        failures++;                                                                                                  \
    } while (0)

static char *read_file(const char *path, size_t *n) {
    FILE *fp = fopen(path, "rb");
    char *b;
    long sz;
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    sz = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    b = (char *)malloc((size_t)sz + 1);
    if (sz && fread(b, 1, (size_t)sz, fp) != (size_t)sz) {
        fclose(fp);
        free(b);
        return NULL;
    }
    fclose(fp);
    b[sz] = 0;
    *n = (size_t)sz;
    return b;
}

static void hex_sha(const void *p, size_t n, char out[65]) {
    acqe_sha256 s;
    uint8_t d[32];
    int i;
    acqe__sha256_init(&s);
    acqe__sha256_update(&s, (const uint8_t *)p, n);
    acqe__sha256_final(&s, d);
    for (i = 0; i < 32; i++) sprintf(out + 2 * i, "%02x", d[i]);
}

static int is_le(void) {
    uint16_t x = 1;
    return *(uint8_t *)&x == 1;
}

/* the element bytes as little-endian (the .json's convention) */
static void to_le(void *buf, uint64_t n, size_t es) {
    uint64_t i;
    size_t k;
    if (is_le() || es == 1) return;
    for (i = 0; i < n; i++) {
        uint8_t *e = (uint8_t *)buf + i * es;
        for (k = 0; k < es / 2; k++) {
            uint8_t t = e[k];
            e[k] = e[es - 1 - k];
            e[es - 1 - k] = t;
        }
    }
}

static void check_valid(const char *dir, const char *stem) {
    char path[1024], jpath[1024], hex[65];
    size_t jn, fn, i, k;
    char *jtext, *fbytes;
    mj *doc;
    mj *tens;
    acqe_file *f = NULL, *fb = NULL;
    acqe_error err;
    acqe_verify_report rep;
    const acqe_asset *assets;
    size_t nassets;
    snprintf(path, sizeof path, "%s/valid/%s.acqe", dir, stem);
    snprintf(jpath, sizeof jpath, "%s/valid/%s.json", dir, stem);
    jtext = read_file(jpath, &jn);
    fbytes = read_file(path, &fn);
    if (!jtext || !fbytes) {
        FAIL("%s: cannot read the vector", stem);
        return;
    }
    mj_parse(jtext, &doc);
    hex_sha(fbytes, fn, hex);
    if (strcmp(hex, mj_get(doc, "file_sha256")->str)) FAIL("%s: file SHA-256 differs", stem);
    if (acqe_open_path(path, NULL, &f, &err)) {
        FAIL("%s: open: %s: %s", stem, acqe_status_name(err.status), err.message);
        goto out;
    }
    if (acqe_open_buffer(fbytes, fn, NULL, &fb, &err)) {
        FAIL("%s: open_buffer: %s", stem, err.message);
        goto out;
    }
    if (acqe_verify(f, 2, &rep, &err)) FAIL("%s: verify: %s: %s", stem, acqe_status_name(err.status), err.message);
    {
        acqe_header_info h;
        mj *ver = mj_get(doc, "version");
        acqe_get_header(f, &h);
        if (h.major != atoi(ver->items[0]->str) || h.minor != atoi(ver->items[1]->str)) FAIL("%s: version", stem);
    }
    tens = mj_get(doc, "tensors");
    if (tens->n != acqe_tensor_count(f)) FAIL("%s: %zu tensors, json has %zu", stem, acqe_tensor_count(f), tens->n);
    for (i = 0; i < tens->n && i < acqe_tensor_count(f); i++) {
        mj *tj = tens->items[i];
        const acqe_tensor_info *t = acqe_tensor(f, i);
        mj *shape = mj_get(tj, "shape");
        uint64_t bytes;
        void *buf, *buf2;
        int threads;
        if (strcmp(t->name, mj_get(tj, "name")->str)) FAIL("%s: tensor %zu name %s", stem, i, t->name);
        if (acqe_find_tensor(f, t->name, t->name_length) != (int64_t)i) FAIL("%s: find_tensor %s", stem, t->name);
        if (shape->n != t->rank) FAIL("%s: %s rank", stem, t->name);
        for (k = 0; k < shape->n && k < t->rank; k++)
            if (strtoull(shape->items[k]->str, NULL, 10) != t->shape[k]) FAIL("%s: %s shape", stem, t->name);
        if (strcmp(acqe_codec_name(t->codec), mj_get(tj, "codec")->str) ||
            strcmp(acqe_dtype_name(t->decoded_dtype), mj_get(tj, "decoded_dtype")->str) ||
            strcmp(acqe_dtype_name(t->stored_dtype), mj_get(tj, "stored_dtype")->str))
            FAIL("%s: %s codec/dtypes", stem, t->name);
        acqe_output_size(t, ACQE_DTYPE_NONE, &bytes, NULL);
        buf = malloc(bytes + 8);
        buf2 = malloc(bytes + 8);
        for (threads = 1; threads <= 3; threads += 2) {
            acqe_file *src = threads == 1 ? f : fb;
            if (acqe_decode(src, i, ACQE_DTYPE_NONE, buf, (size_t)bytes, threads, &err)) {
                FAIL("%s: decode %s: %s", stem, t->name, err.message);
                continue;
            }
            to_le(buf, t->numel, acqe_dtype_size(t->decoded_dtype));
            hex_sha(buf, (size_t)bytes, hex);
            if (strcmp(hex, mj_get(tj, "sha256")->str)) FAIL("%s: %s decodes to other bytes (threads %d)", stem, t->name, threads);
        }
        if (t->decoded_dtype >= ACQE_DTYPE_F32 && t->decoded_dtype <= ACQE_DTYPE_F64) {
            static const acqe_dtype outs[3] = {ACQE_DTYPE_F32, ACQE_DTYPE_F16, ACQE_DTYPE_BF16};
            int o;
            for (o = 0; o < 3; o++) {
                uint64_t ob;
                void *c1, *c2;
                acqe_output_size(t, outs[o], &ob, NULL);
                c1 = malloc(ob + 8);
                c2 = malloc(ob + 8);
                if (acqe_decode(f, i, outs[o], c1, (size_t)ob, 1, &err) || acqe_decode(fb, i, outs[o], c2, (size_t)ob, 4, &err))
                    FAIL("%s: decode %s to %s: %s", stem, t->name, acqe_dtype_name(outs[o]), err.message);
                else if (memcmp(c1, c2, (size_t)ob))
                    FAIL("%s: %s to %s differs with threads", stem, t->name, acqe_dtype_name(outs[o]));
                free(c1);
                free(c2);
            }
        } else {
            uint64_t ob;
            if (acqe_output_size(t, ACQE_DTYPE_F16, &ob, NULL) != ACQE_ERR_ARGUMENT)
                FAIL("%s: %s: a float16 conversion of %s must be refused", stem, t->name, acqe_dtype_name(t->decoded_dtype));
        }
        free(buf);
        free(buf2);
    }
    if (acqe_assets(f, &assets, &nassets, &err)) {
        FAIL("%s: assets: %s", stem, err.message);
    } else {
        mj *aj = mj_get(doc, "assets");
        if (aj->n != nassets) FAIL("%s: %zu assets, json has %zu", stem, nassets, aj->n);
        for (k = 0; k < nassets; k++) {
            mj *want = mj_get(aj, assets[k].name);
            hex_sha(assets[k].data, (size_t)assets[k].size, hex);
            if (!want || strcmp(want->str, hex)) FAIL("%s: asset %s", stem, assets[k].name);
        }
    }
    {
        size_t mlen;
        const uint8_t *m = acqe_metadata(f, &mlen);
        if (acqe__check_metadata(m, mlen, &err)) FAIL("%s: metadata: %s", stem, err.message);
    }
out:
    acqe_close(f);
    acqe_close(fb);
    mj_free(doc);
    free(jtext);
    free(fbytes);
}

static int invalid_total = 0, fragments_matched = 0;

static void check_invalid(const char *dir, mj *c) {
    char path[1024];
    const char *file = mj_get(c, "file")->str, *want = mj_get(c, "error")->str, *frag = mj_get(c, "message")->str;
    acqe_file *f = NULL;
    acqe_error err;
    acqe_status st;
    size_t n = 0;
    char *bytes = NULL;
    int pass;
    snprintf(path, sizeof path, "%s/invalid/%s", dir, file);
    invalid_total++;
    for (pass = 0; pass < 2; pass++) { /* from the path, then from a buffer: the same error */
        if (pass == 0) {
            st = acqe_open_path(path, NULL, &f, &err);
        } else {
            bytes = read_file(path, &n);
            st = acqe_open_buffer(bytes, n, NULL, &f, &err);
        }
        if (!st) {
            /* decoding each tensor (into a buffer, in every output dtype) meets the same fault as verify,
             * when a tensor holds it */
            size_t k;
            static const acqe_dtype outs[4] = {ACQE_DTYPE_NONE, ACQE_DTYPE_F32, ACQE_DTYPE_F16, ACQE_DTYPE_BF16};
            for (k = 0; k < acqe_tensor_count(f); k++) {
                int o;
                for (o = 0; o < 4; o++) {
                    uint64_t ob;
                    void *buf;
                    acqe_error de;
                    acqe_status ds;
                    if (acqe_output_size(acqe_tensor(f, k), outs[o], &ob, NULL) || ob > (UINT64_C(1) << 26)) continue;
                    buf = malloc(ob + 8);
                    ds = acqe_decode(f, k, outs[o], buf, (size_t)ob, 1 + 2 * pass, &de);
                    free(buf);
                    if (ds && strcmp(acqe_status_name(ds), want))
                        FAIL("%s: decoding tensor %zu: %s (%s), expected %s", file, k, acqe_status_name(ds), de.message, want);
                }
            }
            st = acqe_verify(f, 1 + pass, NULL, &err);
            acqe_close(f);
            f = NULL;
        }
        if (pass == 1) free(bytes);
        if (st == ACQE_OK) {
            FAIL("%s: accepted, expected %s", file, want);
            return;
        }
        if (strcmp(acqe_status_name(st), want)) {
            FAIL("%s: %s (%s), expected %s", file, acqe_status_name(st), err.message, want);
            return;
        }
        if (strchr(err.message, '\n')) FAIL("%s: message has a newline", file);
    }
    if (strstr(err.message, frag)) fragments_matched++;
    else printf("  note: %s: message \"%s\" lacks the reference fragment \"%s\"\n", file, err.message, frag);
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "../spec/vectors";
    char path[1024];
    DIR *dp;
    struct dirent *de;
    char *stems[512];
    int nstems = 0, i;
    size_t mn;
    char *mtext;
    mj *man;
    snprintf(path, sizeof path, "%s/valid", dir);
    dp = opendir(path);
    if (!dp) {
        fprintf(stderr, "cannot open %s\n", path);
        return 2;
    }
    while ((de = readdir(dp)) != NULL && nstems < 512) {
        size_t l = strlen(de->d_name);
        if (l > 5 && !strcmp(de->d_name + l - 5, ".acqe")) {
            stems[nstems] = (char *)malloc(l - 4);
            memcpy(stems[nstems], de->d_name, l - 5);
            stems[nstems][l - 5] = 0;
            nstems++;
        }
    }
    closedir(dp);
    for (i = 0; i < nstems; i++) {
        check_valid(dir, stems[i]);
        free(stems[i]);
    }
    snprintf(path, sizeof path, "%s/invalid/MANIFEST.json", dir);
    mtext = read_file(path, &mn);
    if (!mtext) {
        fprintf(stderr, "cannot read %s\n", path);
        return 2;
    }
    mj_parse(mtext, &man);
    {
        mj *files = mj_get(man, "files");
        size_t k;
        for (k = 0; k < files->n; k++) check_invalid(dir, files->items[k]);
    }
    mj_free(man);
    free(mtext);
    printf("test_vectors: %d valid, %d invalid vectors; %d of %d messages contain the reference fragment; %d failures\n",
           nstems, invalid_total, fragments_matched, invalid_total, failures);
    return failures ? 1 : 0;
}
