/* acqe-dump: print an .acqe file's header, sections, metadata and tensor table (like gguf-dump).
 *
 *   acqe-dump [--verify] [--json] [--threads N] [--max-decoded BYTES] [--full-metadata] FILE
 *
 * Exit status: 0 ok; 3 the file is invalid (one of the spec's error categories); 1 any other error (cannot
 * open, out of memory, a tensor above --max-decoded, bad usage). Errors are one line on stderr. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../acqe.h"

static void usage(void) {
    fprintf(stderr, "usage: acqe-dump [--verify] [--json] [--threads N] [--max-decoded BYTES] [--full-metadata] FILE\n");
}

static int fail(const acqe_error *e) {
    fprintf(stderr, "acqe-dump: %s: %s\n", acqe_status_name(e->status), e->message);
    return acqe_status_is_file_error(e->status) ? 3 : 1;
}

/* a JSON string literal of n bytes of UTF-8 */
static void json_str(const char *s, size_t n) {
    size_t i;
    putchar('"');
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20 || c == 0x7F) printf("\\u%04x", c);
        else putchar(c);
    }
    putchar('"');
}

/* a name for a terminal: control characters escaped (valid names have none; this is belt and braces) */
static void text_str(const char *s, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7F) printf("\\x%02x", c);
        else putchar(c);
    }
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void shape_str(const acqe_tensor_info *t, char *buf, size_t cap) {
    size_t o = 0;
    uint32_t k;
    o += (size_t)snprintf(buf + o, cap - o, "[");
    for (k = 0; k < t->rank && o < cap; k++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%llu", k ? ", " : "", (unsigned long long)t->shape[k]);
    if (o < cap) snprintf(buf + o, cap - o, "]");
}

int main(int argc, char **argv) {
    int verify = 0, json = 0, threads = 2, full_meta = 0, i;
    const char *path = NULL;
    acqe_options opts;
    acqe_file *f;
    acqe_error err;
    acqe_header_info h;
    acqe_verify_report rep;
    const acqe_asset *assets = NULL;
    size_t nassets = 0, k, mlen;
    const uint8_t *meta;
    uint64_t params = 0, payload = 0;
    double t0 = 0, dt = 0;
    int vstatus = 0;
    acqe_error verr;

    acqe_options_init(&opts);
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--verify")) verify = 1;
        else if (!strcmp(argv[i], "--json")) json = 1;
        else if (!strcmp(argv[i], "--full-metadata")) full_meta = 1;
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--max-decoded") && i + 1 < argc) opts.max_decoded_bytes = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage();
            return 0;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            usage();
            return 1;
        } else if (!path) path = argv[i];
        else {
            usage();
            return 1;
        }
    }
    if (!path) {
        usage();
        return 1;
    }
    if (acqe_open_path(path, &opts, &f, &err)) return fail(&err);
    if (acqe_assets(f, &assets, &nassets, &err)) {
        int rc = fail(&err);
        acqe_close(f);
        return rc;
    }
    if (verify) {
        t0 = now();
        vstatus = acqe_verify(f, threads, &rep, &verr);
        dt = now() - t0;
        if (vstatus && !json) {
            int rc = fail(&verr);
            acqe_close(f);
            return rc;
        }
    }
    acqe_get_header(f, &h);
    meta = acqe_metadata(f, &mlen);
    for (k = 0; k < acqe_tensor_count(f); k++) {
        params += acqe_tensor(f, k)->numel;
        payload += acqe_tensor(f, k)->payload_length;
    }
    if (json) {
        printf("{\"file\":");
        json_str(path, strlen(path));
        printf(",\"version\":[%u,%u],\"file_length\":%llu,\"alignment\":%u,\"required_features\":%llu,"
               "\"optional_features\":%llu,\"sections\":[",
               h.major, h.minor, (unsigned long long)h.file_length, h.alignment,
               (unsigned long long)h.required_features, (unsigned long long)h.optional_features);
        for (k = 0; k < acqe_section_count(f); k++) {
            acqe_section_info s;
            const char *kn;
            acqe_get_section(f, k, &s);
            kn = acqe_section_kind_name(s.kind);
            printf("%s{\"kind\":%u,\"name\":", k ? "," : "", s.kind);
            if (kn) json_str(kn, strlen(kn));
            else printf("null");
            printf(",\"flags\":%u,\"offset\":%llu,\"length\":%llu,\"content_length\":%llu,\"crc32\":%u}", s.flags,
                   (unsigned long long)s.offset, (unsigned long long)s.length, (unsigned long long)s.content_length,
                   s.crc32);
        }
        printf("],\"metadata\":");
        fwrite(meta, 1, mlen, stdout); /* validated strict JSON */
        printf(",\"assets\":[");
        for (k = 0; k < nassets; k++) {
            printf("%s{\"name\":", k ? "," : "");
            json_str(assets[k].name, assets[k].name_length);
            printf(",\"size\":%llu}", (unsigned long long)assets[k].size);
        }
        printf("],\"tensors\":[");
        for (k = 0; k < acqe_tensor_count(f); k++) {
            const acqe_tensor_info *t = acqe_tensor(f, k);
            uint32_t d;
            printf("%s{\"name\":", k ? "," : "");
            json_str(t->name, t->name_length);
            printf(",\"shape\":[");
            for (d = 0; d < t->rank; d++) printf("%s%llu", d ? "," : "", (unsigned long long)t->shape[d]);
            printf("],\"stored_dtype\":\"%s\",\"decoded_dtype\":\"%s\",\"codec\":\"%s\",\"numel\":%llu,"
                   "\"payload_offset\":%llu,\"payload_length\":%llu,\"checked_length\":%llu,\"payload_crc32\":%u}",
                   acqe_dtype_name(t->stored_dtype), acqe_dtype_name(t->decoded_dtype), acqe_codec_name(t->codec),
                   (unsigned long long)t->numel, (unsigned long long)t->payload_offset,
                   (unsigned long long)t->payload_length, (unsigned long long)t->checked_length, t->payload_crc32);
        }
        printf("],\"parameters\":%llu,\"payload_bytes\":%llu", (unsigned long long)params, (unsigned long long)payload);
        if (verify) {
            printf(",\"verify\":{\"ok\":%s", vstatus ? "false" : "true");
            if (vstatus) {
                printf(",\"error\":\"%s\",\"message\":", acqe_status_name(verr.status));
                json_str(verr.message, strlen(verr.message));
            } else {
                printf(",\"seconds\":%.3f,\"decoded_bytes\":%llu,\"max_expansion\":%.1f,\"max_expansion_tensor\":", dt,
                       (unsigned long long)rep.decoded_bytes, rep.max_expansion);
                if (rep.max_expansion_tensor >= 0) {
                    const acqe_tensor_info *t = acqe_tensor(f, (size_t)rep.max_expansion_tensor);
                    json_str(t->name, t->name_length);
                } else {
                    printf("null");
                }
            }
            printf("}");
        }
        printf("}\n");
        acqe_close(f);
        if (vstatus) {
            fail(&verr);
            return acqe_status_is_file_error(verr.status) ? 3 : 1;
        }
        return 0;
    }
    printf("%s: ACQE %u.%u, %llu bytes, alignment %u, required features 0x%llx, optional features 0x%llx\n", path,
           h.major, h.minor, (unsigned long long)h.file_length, h.alignment, (unsigned long long)h.required_features,
           (unsigned long long)h.optional_features);
    printf("\n* %zu sections\n", acqe_section_count(f));
    printf("  %3s %-10s %5s %14s %14s %14s %8s\n", "#", "kind", "flags", "offset", "length", "content", "crc32");
    for (k = 0; k < acqe_section_count(f); k++) {
        acqe_section_info s;
        const char *kn;
        char kb[16];
        acqe_get_section(f, k, &s);
        kn = acqe_section_kind_name(s.kind);
        if (!kn) {
            snprintf(kb, sizeof kb, "kind %u", s.kind);
            kn = kb;
        }
        printf("  %3zu %-10s %5u %14llu %14llu %14llu %08x\n", k, kn, s.flags, (unsigned long long)s.offset,
               (unsigned long long)s.length, (unsigned long long)s.content_length, s.crc32);
    }
    printf("\n* metadata (%zu bytes)\n  ", mlen);
    if (full_meta || mlen <= 2000) fwrite(meta, 1, mlen, stdout);
    else {
        fwrite(meta, 1, 2000, stdout);
        printf(" ... (%zu more bytes; --full-metadata)", mlen - 2000);
    }
    printf("\n\n* %zu assets\n", nassets);
    for (k = 0; k < nassets; k++) {
        printf("  %12llu  ", (unsigned long long)assets[k].size);
        text_str(assets[k].name, assets[k].name_length);
        putchar('\n');
    }
    printf("\n* %zu tensors\n", acqe_tensor_count(f));
    printf("  %5s %-16s %-8s %-8s %-15s %12s %12s %6s  %s\n", "#", "codec", "stored", "decoded", "shape", "numel",
           "bytes", "bits", "name");
    for (k = 0; k < acqe_tensor_count(f); k++) {
        const acqe_tensor_info *t = acqe_tensor(f, k);
        char sh[160];
        shape_str(t, sh, sizeof sh);
        printf("  %5zu %-16s %-8s %-8s %-15s %12llu %12llu %6.2f  ", k, acqe_codec_name(t->codec),
               acqe_dtype_name(t->stored_dtype), acqe_dtype_name(t->decoded_dtype), sh, (unsigned long long)t->numel,
               (unsigned long long)t->payload_length, t->numel ? 8.0 * (double)t->payload_length / (double)t->numel : 0.0);
        text_str(t->name, t->name_length);
        putchar('\n');
    }
    printf("\ntotal: %zu tensors, %llu parameters, %llu file bytes (%llu payload) -> %.4f bits/param\n",
           acqe_tensor_count(f), (unsigned long long)params, (unsigned long long)h.file_length,
           (unsigned long long)payload, params ? 8.0 * (double)h.file_length / (double)params : 0.0);
    if (verify) {
        printf("verify: OK: every checksum and every decode verified in %.2f s (%llu decoded bytes); largest expansion"
               " %.1fx",
               dt, (unsigned long long)rep.decoded_bytes, rep.max_expansion);
        if (rep.max_expansion_tensor >= 0) {
            const acqe_tensor_info *t = acqe_tensor(f, (size_t)rep.max_expansion_tensor);
            printf(" (");
            text_str(t->name, t->name_length);
            printf(")");
        }
        printf("\n");
    }
    acqe_close(f);
    return 0;
}
