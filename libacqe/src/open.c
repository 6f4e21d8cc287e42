/* Opening a file: spec section 14 steps 1-20 in their order, then the accessors. */
#include <stdio.h>
#include <stdlib.h>
#include <zlib.h>

#include "internal.h"

static const uint8_t MAGIC[8] = {0x89, 'A', 'C', 'Q', 'E', 0x0D, 0x0A, 0x1A};

void acqe_options_init(acqe_options *opts) {
    opts->max_decoded_bytes = ACQE_DEFAULT_MAX_DECODED_BYTES;
    opts->flags = 0;
}

static const char *describe_foreign(const uint8_t *d, size_t n, char *buf, size_t cap) {
    size_t i, o = 0;
    if (n >= 4 && !memcmp(d, "PK\x03\x04", 4)) return "it looks like a zip archive (a PyTorch .pt/.ckpt?)";
    if (n >= 1 && d[0] == 0x80) return "it looks like a pickle (a legacy PyTorch checkpoint?)";
    if (n >= 4 && !memcmp(d, "GGUF", 4)) return "it looks like a GGUF file";
    if (n >= 4 && !memcmp(d, "\x89PNG", 4)) return "it looks like a PNG image";
    if (n >= 9 && d[8] == '{') return "it looks like a safetensors file";
    if (n >= 5 && d[0] == 0x89 && !memcmp(d + 1, "ACQE", 4)) return "the magic is damaged (text-mode newline conversion?)";
    o += (size_t)snprintf(buf, cap, "it starts with");
    for (i = 0; i < n && i < 8 && o + 4 < cap; i++) o += (size_t)snprintf(buf + o, cap - o, " %02x", d[i]);
    if (n == 0) snprintf(buf + o, cap - o, " nothing");
    return buf;
}

static int all_zero(const uint8_t *p, uint64_t n) {
    uint64_t i;
    for (i = 0; i < n; i++)
        if (p[i]) return 0;
    return 1;
}

static int is_pow2(uint64_t x) { return x && !(x & (x - 1)); }

/* "a + b" for a message, also when it does not fit in 64 bits */
static const char *sum_str(uint64_t a, uint64_t b, char *buf, size_t cap) {
    uint64_t s;
    if (add_ovf(a, b, &s)) snprintf(buf, cap, "%llu + %llu (past 2^64)", (unsigned long long)a, (unsigned long long)b);
    else snprintf(buf, cap, "%llu", (unsigned long long)s);
    return buf;
}

/* spec section 4.1: inflate a compressed section's stream into exactly raw_length bytes */
static acqe_status inflate_section(acqe_file *f, const acqe_section_info *s, const char *what, uint8_t **out,
                                   acqe_error *err) {
    const uint8_t *stream = f->data + s->offset + COMPRESSED_PREFIX;
    uint64_t n = s->length - COMPRESSED_PREFIX, fed = 0, raw_len = s->content_length;
    z_stream zs;
    uint8_t *buf;
    int ret = Z_OK;
    acqe_status st = ACQE_OK;
    if (n >= 2 && (stream[1] & 0x20))
        return acqe__fail(err, ACQE_ERR_LAYOUT, "compressed %s section: the zlib stream asks for a preset dictionary (FDICT)",
                          what);
    buf = (uint8_t *)malloc((size_t)raw_len + 1); /* raw_length <= 16 MiB (step 18) */
    if (!buf) return acqe__fail(err, ACQE_ERR_NOMEM, "out of memory inflating the %s section", what);
    memset(&zs, 0, sizeof zs);
    if (inflateInit(&zs) != Z_OK) {
        free(buf);
        return acqe__fail(err, ACQE_ERR_NOMEM, "zlib could not start inflating the %s section", what);
    }
    zs.next_out = buf;
    zs.avail_out = (uInt)(raw_len + 1); /* at most raw_length + 1 bytes are ever produced */
    for (;;) {
        if (zs.avail_in == 0 && fed < n) {
            uint64_t step = n - fed > (UINT64_C(1) << 20) ? (UINT64_C(1) << 20) : n - fed;
            zs.next_in = (Bytef *)(uintptr_t)(stream + fed);
            zs.avail_in = (uInt)step;
            fed += step;
        }
        ret = inflate(&zs, Z_NO_FLUSH);
        if (zs.total_out > raw_len) {
            st = acqe__fail(err, ACQE_ERR_LAYOUT, "compressed %s section inflates to more than its raw_length %llu", what,
                            (unsigned long long)raw_len);
            break;
        }
        if (ret == Z_STREAM_END) break;
        if (ret == Z_NEED_DICT || ret == Z_DATA_ERROR) {
            st = acqe__fail(err, ACQE_ERR_LAYOUT, "compressed %s section: invalid zlib stream (%s)", what,
                            zs.msg ? zs.msg : "invalid data");
            break;
        }
        if (ret == Z_MEM_ERROR) {
            st = acqe__fail(err, ACQE_ERR_NOMEM, "out of memory inflating the %s section", what);
            break;
        }
        if (zs.avail_in == 0 && fed == n) { /* Z_OK or Z_BUF_ERROR with all input used: the stream goes on */
            st = acqe__fail(err, ACQE_ERR_LAYOUT, "compressed %s section: the zlib stream does not end inside the section",
                            what);
            break;
        }
    }
    if (!st) {
        uint64_t trailing = zs.avail_in + (n - fed);
        if (trailing)
            st = acqe__fail(err, ACQE_ERR_LAYOUT,
                            "compressed %s section: %llu trailing bytes after the end of the zlib stream", what,
                            (unsigned long long)trailing);
        else if (zs.total_out != raw_len)
            st = acqe__fail(err, ACQE_ERR_LAYOUT, "compressed %s section inflates to %llu bytes, its raw_length says %llu",
                            what, (unsigned long long)zs.total_out, (unsigned long long)raw_len);
    }
    inflateEnd(&zs);
    if (st) {
        free(buf);
        return st;
    }
    *out = buf;
    return ACQE_OK;
}

/* the contents of DIRECTORY or METADATA: CRC over the stored bytes, then inflate if compressed */
static acqe_status section_contents(acqe_file *f, const acqe_section_info *s, const char *what, const uint8_t **p,
                                    uint8_t **owned, acqe_error *err) {
    uint32_t got = acqe__crc32(f->data + s->offset, s->length);
    if (got != s->crc32)
        return acqe__fail(err, ACQE_ERR_CHECKSUM_MISMATCH, "%s section CRC-32 is %08x, section table says %08x", what,
                          got, s->crc32);
    if (s->flags & ACQE_SECTION_FLAG_COMPRESSED) {
        acqe_status st = inflate_section(f, s, what, owned, err);
        if (st) return st;
        *p = *owned;
    } else {
        *p = f->data + s->offset;
    }
    return ACQE_OK;
}

static int is_float_dtype(unsigned d) { return d >= ACQE_DTYPE_F32 && d <= ACQE_DTYPE_F64; }

typedef struct name_ref {
    const uint8_t *p;
    size_t n;
    uint32_t index;
} name_ref;

static int name_cmp(const name_ref *a, const name_ref *b) {
    size_t m = a->n < b->n ? a->n : b->n;
    int c = memcmp(a->p, b->p, m);
    if (c) return c;
    if (a->n != b->n) return a->n < b->n ? -1 : 1;
    return a->index < b->index ? -1 : (a->index > b->index ? 1 : 0);
}

static void sort_names(name_ref *a, size_t n, name_ref *tmp) {
    size_t w, i;
    if (n < 2) return;
    if (n <= 16) {
        for (i = 1; i < n; i++) {
            name_ref v = a[i];
            size_t q = i;
            while (q > 0 && name_cmp(&a[q - 1], &v) > 0) {
                a[q] = a[q - 1];
                q--;
            }
            a[q] = v;
        }
        return;
    }
    w = n / 2;
    sort_names(a, w, tmp);
    sort_names(a + w, n - w, tmp);
    {
        size_t x = 0, y = w, o = 0;
        while (x < w && y < n) tmp[o++] = name_cmp(&a[y], &a[x]) < 0 ? a[y++] : a[x++];
        while (x < w) tmp[o++] = a[x++];
        while (y < n) tmp[o++] = a[y++];
        memcpy(a, tmp, n * sizeof *a);
    }
}

/* Step 19 a-c. Pass 1 finds where every readable name is (to know, sorted, which entries repeat an
 * earlier name); pass 2 applies every check to each entry in order. */
static acqe_status parse_directory(acqe_file *f, const uint8_t *b, size_t n, acqe_error *err) {
    uint32_t count, i;
    size_t pos;
    name_ref *refs = NULL, *tmp = NULL;
    uint8_t *dup = NULL;
    uint32_t nrefs = 0;
    uint64_t prev_end = f->data_begin, align = f->header.alignment;
    char q[QUOTE_CAP];
    acqe_status st = ACQE_OK;
    size_t names_at = 0;

    if (n < 4) return acqe__fail(err, ACQE_ERR_LAYOUT, "directory is %zu bytes, too short for its tensor count", n);
    count = ld32(b);
    if (count > MAX_TENSORS)
        return acqe__fail(err, ACQE_ERR_LIMIT_EXCEEDED, "directory declares %u tensors (limit 65536)", count);
    if ((uint64_t)count * MIN_DIR_ENTRY > n - 4)
        return acqe__fail(err, ACQE_ERR_LAYOUT, "directory declares %u tensors but holds only %zu bytes of entries", count,
                          n - 4);
    /* everything below is bounded by the directory's size: count <= (n - 4) / 39 */
    f->tensors = (acqe_tensor_info *)calloc(count ? count : 1, sizeof *f->tensors);
    f->names = (char *)malloc(n + count + 1);
    f->by_name = (uint32_t *)malloc((count ? count : 1) * sizeof *f->by_name);
    refs = (name_ref *)malloc((count ? count : 1) * sizeof *refs);
    tmp = (name_ref *)malloc((count ? count : 1) * sizeof *tmp);
    dup = (uint8_t *)calloc(count ? count : 1, 1);
    if (!f->tensors || !f->names || !f->by_name || !refs || !tmp || !dup) {
        st = acqe__fail(err, ACQE_ERR_NOMEM, "out of memory reading the directory");
        goto out;
    }
    /* pass 1: the names of the entries as far as their structure can be followed */
    for (pos = 4, i = 0; i < count; i++) {
        uint32_t nlen, rank;
        if (n - pos < 2) break;
        nlen = ld16(b + pos);
        if (nlen == 0 || nlen > MAX_NAME_BYTES || n - pos - 2 < (size_t)nlen + 8) break;
        refs[nrefs].p = b + pos + 2;
        refs[nrefs].n = nlen;
        refs[nrefs].index = i;
        nrefs++;
        rank = b[pos + 2 + nlen];
        if (n - pos - 2 - nlen - 8 < (size_t)8 * rank + 28) break;
        pos += 2 + nlen + 8 + (size_t)8 * rank + 28;
    }
    sort_names(refs, nrefs, tmp);
    for (i = 1; i < nrefs; i++)
        if (refs[i].n == refs[i - 1].n && !memcmp(refs[i].p, refs[i - 1].p, refs[i].n)) dup[refs[i].index] = 1;
    /* pass 2 */
    for (pos = 4, i = 0; i < count; i++) {
        acqe_tensor_info *t = &f->tensors[i];
        uint32_t nlen, rank, sd, dd, r8, codec, r16, k;
        const uint8_t *name;
        uint64_t bound = 1, numel = 1, off, length, checked, want;
#define NEED(k_)                                                                                               \
    if (n - pos < (size_t)(k_)) {                                                                              \
        st = acqe__fail(err, ACQE_ERR_LAYOUT, "directory entry %u runs past the end of the directory (%zu bytes)", i, n); \
        goto out;                                                                                              \
    }
        NEED(2);
        nlen = ld16(b + pos);
        if (nlen == 0) {
            st = acqe__fail(err, ACQE_ERR_LAYOUT, "directory entry %u has an empty name", i);
            goto out;
        }
        if (nlen > MAX_NAME_BYTES) {
            st = acqe__fail(err, ACQE_ERR_LIMIT_EXCEEDED, "directory entry %u: name of %u bytes (limit 1024)", i, nlen);
            goto out;
        }
        pos += 2;
        NEED((size_t)nlen + 8);
        name = b + pos;
        if (!acqe__utf8_valid(name, nlen)) {
            st = acqe__fail(err, ACQE_ERR_LAYOUT, "directory entry %u: name is not valid UTF-8", i);
            goto out;
        }
        if (acqe__has_control(name, nlen)) {
            st = acqe__fail(err, ACQE_ERR_LAYOUT, "directory entry %u: name %s contains a control character", i,
                            acqe__quote(name, nlen, q, sizeof q));
            goto out;
        }
        if (dup[i]) {
            st = acqe__fail(err, ACQE_ERR_LAYOUT, "duplicate tensor name %s", acqe__quote(name, nlen, q, sizeof q));
            goto out;
        }
        acqe__quote(name, nlen, q, sizeof q);
        pos += nlen;
        rank = b[pos];
        sd = b[pos + 1];
        dd = b[pos + 2];
        r8 = b[pos + 3];
        codec = ld16(b + pos + 4);
        r16 = ld16(b + pos + 6);
        pos += 8;
        if (r8 || r16) {
            st = acqe__fail(err, ACQE_ERR_LAYOUT, "tensor %s: reserved directory fields are not zero", q);
            goto out;
        }
        if (rank > ACQE_MAX_RANK) {
            st = acqe__fail(err, ACQE_ERR_LIMIT_EXCEEDED, "tensor %s: rank %u (limit 8)", q, rank);
            goto out;
        }
        if (sd < 1 || sd > 13 || dd < 1 || dd > 13) {
            st = acqe__fail(err, ACQE_ERR_UNSUPPORTED_VERSION, "tensor %s: unknown dtype code %u", q,
                            (sd < 1 || sd > 13) ? sd : dd);
            goto out;
        }
        if (codec < 1 || codec > 3) {
            st = acqe__fail(err, ACQE_ERR_UNSUPPORTED_VERSION,
                            "unknown codec id %u (this reader knows 1 RAW, 2 CODEBOOK_RANS, 3 CODEBOOK_PACKED)", codec);
            goto out;
        }
        NEED((size_t)8 * rank + 28);
        for (k = 0; k < rank; k++) {
            uint64_t d = ld64(b + pos + 8 * k);
            t->shape[k] = d;
            if (d > MAX_NUMEL) {
                st = acqe__fail(err, ACQE_ERR_LIMIT_EXCEEDED, "tensor %s: dimension %llu exceeds the limit %llu", q,
                                (unsigned long long)d, (unsigned long long)MAX_NUMEL);
                goto out;
            }
            if (d) {
                if (bound > MAX_NUMEL / d) { /* the product of the non-zero dimensions, never wrapping */
                    st = acqe__fail(err, ACQE_ERR_LIMIT_EXCEEDED, "tensor %s: shape has more than %llu elements", q,
                                    (unsigned long long)MAX_NUMEL);
                    goto out;
                }
                bound *= d;
            }
            numel = d ? numel * d : 0; /* <= bound */
        }
        pos += (size_t)8 * rank;
        off = ld64(b + pos);
        length = ld64(b + pos + 8);
        checked = ld64(b + pos + 16);
        pos += 28;
        if (align_up_ovf(prev_end, align, &want)) want = UINT64_MAX; /* cannot happen: prev_end < 2^64 - 48 */
        if (off != want) {
            st = acqe__fail(err, ACQE_ERR_LAYOUT, "tensor %s: payload at %llu %s (expected %llu)", q,
                            (unsigned long long)off,
                            off < prev_end ? "overlaps the previous payload" : "is not where the layout puts it",
                            (unsigned long long)want);
            goto out;
        }
        if (off > f->data_end || length > f->data_end - off) {
            char s1[64];
            st = acqe__fail(err, ACQE_ERR_LAYOUT, "tensor %s: payload ends at %s, DATA section ends at %llu", q,
                            sum_str(off, length, s1, sizeof s1), (unsigned long long)f->data_end);
            goto out;
        }
        if (checked > length) {
            st = acqe__fail(err, ACQE_ERR_LAYOUT, "tensor %s: checked_length %llu > payload_length %llu", q,
                            (unsigned long long)checked, (unsigned long long)length);
            goto out;
        }
        if (codec == ACQE_CODEC_RAW) {
            uint64_t need = numel * acqe_dtype_size((acqe_dtype)dd); /* <= 2^56 */
            if (sd != dd) {
                st = acqe__fail(err, ACQE_ERR_LAYOUT, "tensor %s: RAW stored dtype %s != decoded dtype %s", q,
                                acqe_dtype_name((acqe_dtype)sd), acqe_dtype_name((acqe_dtype)dd));
                goto out;
            }
            if (length != need) {
                st = acqe__fail(err, ACQE_ERR_LAYOUT, "tensor %s: RAW payload is %llu bytes, its shape of %s needs %llu", q,
                                (unsigned long long)length, acqe_dtype_name((acqe_dtype)dd), (unsigned long long)need);
                goto out;
            }
            if (checked != length) {
                st = acqe__fail(err, ACQE_ERR_LAYOUT, "tensor %s: RAW checked_length %llu != payload_length %llu", q,
                                (unsigned long long)checked, (unsigned long long)length);
                goto out;
            }
        } else {
            const char *cn = codec == ACQE_CODEC_CODEBOOK_RANS ? "CODEBOOK_RANS" : "CODEBOOK_PACKED";
            if (!is_float_dtype(dd)) {
                st = acqe__fail(err, ACQE_ERR_LAYOUT, "tensor %s: %s cannot decode to %s", q, cn,
                                acqe_dtype_name((acqe_dtype)dd));
                goto out;
            }
            if (!is_float_dtype(sd)) {
                st = acqe__fail(err, ACQE_ERR_LAYOUT, "tensor %s: %s source dtype %s is not a float type", q, cn,
                                acqe_dtype_name((acqe_dtype)sd));
                goto out;
            }
            if (codec == ACQE_CODEC_CODEBOOK_PACKED) {
                if (checked != length) {
                    st = acqe__fail(err, ACQE_ERR_LAYOUT, "tensor %s: CODEBOOK_PACKED checked_length %llu != payload_length %llu",
                                    q, (unsigned long long)checked, (unsigned long long)length);
                    goto out;
                }
                if (length < PACKED_HEAD) {
                    st = acqe__fail(err, ACQE_ERR_LAYOUT,
                                    "tensor %s: CODEBOOK_PACKED payload of %llu bytes is shorter than its 8-byte head", q,
                                    (unsigned long long)length);
                    goto out;
                }
            } else if (checked < RANS_HEAD) {
                st = acqe__fail(err, ACQE_ERR_LAYOUT,
                                "tensor %s: CODEBOOK_RANS checked_length %llu outside 16..payload_length %llu", q,
                                (unsigned long long)checked, (unsigned long long)length);
                goto out;
            }
        }
        memcpy(f->names + names_at, name, nlen);
        f->names[names_at + nlen] = 0;
        t->name = f->names + names_at;
        t->name_length = nlen;
        names_at += (size_t)nlen + 1;
        t->rank = rank;
        t->numel = numel;
        t->stored_dtype = (acqe_dtype)sd;
        t->decoded_dtype = (acqe_dtype)dd;
        t->codec = (acqe_codec)codec;
        t->payload_offset = off;
        t->payload_length = length;
        t->checked_length = checked;
        t->payload_crc32 = ld32(b + pos - 4);
        prev_end = off + length;
#undef NEED
    }
    if (pos != n) {
        st = acqe__fail(err, ACQE_ERR_LAYOUT, "%zu trailing bytes after the last directory entry", n - pos);
        goto out;
    }
    if (prev_end != f->data_end) {
        st = acqe__fail(err, ACQE_ERR_LAYOUT, "DATA section ends at %llu, the last payload ends at %llu",
                        (unsigned long long)f->data_end, (unsigned long long)prev_end);
        goto out;
    }
    f->ntensors = count;
    for (i = 0; i < nrefs; i++) f->by_name[i] = refs[i].index; /* all entries, sorted by name */
out:
    free(refs);
    free(tmp);
    free(dup);
    return st;
}

static acqe_status open_file(acqe_file *f, acqe_error *err) {
    const uint8_t *d = f->data;
    size_t size = f->size;
    uint64_t flen, footer_at, table_end, prev_end, required;
    uint32_t nsec, align, i, crc;
    int seen[5] = {0, 0, 0, 0, 0};
    char buf[96];
    const uint8_t *dir;
    acqe_status st;
    acqe_header_info *h = &f->header;

    /* 1. magic */
    if (memcmp(d, MAGIC, size < 8 ? size : 8) != 0 || (size >= 8 && memcmp(d, MAGIC, 8) != 0))
        return acqe__fail(err, ACQE_ERR_NOT_ACQE_FILE, "not an .acqe file: no ACQE magic at the start; %s",
                          describe_foreign(d, size, buf, sizeof buf));
    if (size < 8)
        return acqe__fail(err, ACQE_ERR_TRUNCATED_FILE, "file is %zu bytes, shorter than the 8-byte magic", size);
    /* 2. version */
    if (size < 12)
        return acqe__fail(err, ACQE_ERR_TRUNCATED_FILE, "file is %zu bytes, an .acqe file has at least 112", size);
    h->major = ld16(d + 8);
    h->minor = ld16(d + 10);
    if (h->major != ACQE_FORMAT_MAJOR)
        return acqe__fail(err, ACQE_ERR_UNSUPPORTED_VERSION, "format version %u.%u: this reader reads major version 1",
                          h->major, h->minor);
    /* 3. header */
    if (size < MIN_FILE_SIZE)
        return acqe__fail(err, ACQE_ERR_TRUNCATED_FILE, "file is %zu bytes, an .acqe file has at least 112", size);
    crc = acqe__crc32(d, 60);
    if (crc != ld32(d + 60))
        return acqe__fail(err, ACQE_ERR_CHECKSUM_MISMATCH, "header CRC-32 is %08x, header says %08x", crc, ld32(d + 60));
    if (ld32(d + 12) != HEADER_SIZE)
        return acqe__fail(err, ACQE_ERR_LAYOUT, "header_length is %u, must be 64", ld32(d + 12));
    required = ld64(d + 16);
    h->required_features = required;
    h->optional_features = ld64(d + 24);
    if (required & ~(uint64_t)ACQE_FEATURE_COMPRESSED_SECTIONS)
        return acqe__fail(err, ACQE_ERR_UNSUPPORTED_VERSION, "unknown required feature bits 0x%016llx",
                          (unsigned long long)(required & ~(uint64_t)ACQE_FEATURE_COMPRESSED_SECTIONS));
    flen = ld64(d + 32);
    if (flen > size)
        return acqe__fail(err, ACQE_ERR_TRUNCATED_FILE, "header says the file is %llu bytes, it has %zu",
                          (unsigned long long)flen, size);
    if (flen < size)
        return acqe__fail(err, ACQE_ERR_LAYOUT, "%llu trailing bytes after the declared end at %llu",
                          (unsigned long long)(size - flen), (unsigned long long)flen);
    h->file_length = flen;
    align = ld32(d + 40);
    if (!is_pow2(align) || align < MIN_ALIGNMENT || align > MAX_ALIGNMENT)
        return acqe__fail(err, ACQE_ERR_LAYOUT, "alignment %u is not a power of two in 16..65536", align);
    h->alignment = align;
    if (ld64(d + 48) != HEADER_SIZE)
        return acqe__fail(err, ACQE_ERR_LAYOUT, "section table offset is %llu, must be 64",
                          (unsigned long long)ld64(d + 48));
    nsec = ld32(d + 44);
    if (nsec > MAX_SECTIONS) return acqe__fail(err, ACQE_ERR_LIMIT_EXCEEDED, "%u sections (limit 64)", nsec);
    h->section_count = nsec;
    footer_at = flen - FOOTER_SIZE;
    table_end = HEADER_SIZE + (uint64_t)SECTION_ENTRY_SIZE * nsec;
    if (table_end > footer_at)
        return acqe__fail(err, ACQE_ERR_LAYOUT, "section table ends at %llu, footer starts at %llu",
                          (unsigned long long)table_end, (unsigned long long)footer_at);
    crc = acqe__crc32(d + HEADER_SIZE, table_end - HEADER_SIZE);
    if (crc != ld32(d + 56))
        return acqe__fail(err, ACQE_ERR_CHECKSUM_MISMATCH, "section table CRC-32 is %08x, header says %08x", crc,
                          ld32(d + 56));
    /* 13. footer trailer */
    if (memcmp(d + footer_at + 40, "ACQE_END", 8) != 0)
        return acqe__fail(err, ACQE_ERR_LAYOUT, "footer magic is not ACQE_END");
    if (ld64(d + footer_at + 32) != flen)
        return acqe__fail(err, ACQE_ERR_LAYOUT, "footer says the file is %llu bytes, header says %llu",
                          (unsigned long long)ld64(d + footer_at + 32), (unsigned long long)flen);
    memcpy(h->footer_sha256, d + footer_at, 32);
    /* 14. sections in table order */
    prev_end = table_end;
    f->dir_sec = f->meta_sec = f->assets_sec = f->data_sec = -1;
    for (i = 0; i < nsec; i++) {
        const uint8_t *e = d + HEADER_SIZE + (size_t)SECTION_ENTRY_SIZE * i;
        acqe_section_info *s = &f->sec[i];
        uint32_t known = ACQE_SECTION_FLAG_REQUIRED | ((required & ACQE_FEATURE_COMPRESSED_SECTIONS) ? ACQE_SECTION_FLAG_COMPRESSED : 0);
        uint64_t want;
        const char *kn;
        s->kind = ld32(e);
        s->flags = ld32(e + 4);
        s->offset = ld64(e + 8);
        s->length = ld64(e + 16);
        s->crc32 = ld32(e + 24);
        s->content_length = s->length;
        kn = acqe_section_kind_name(s->kind);
        if (ld32(e + 28))
            return acqe__fail(err, ACQE_ERR_LAYOUT, "section %u: reserved field is %u, must be 0", i, ld32(e + 28));
        if (s->flags & ~known)
            return acqe__fail(err, ACQE_ERR_LAYOUT, "section %u: unknown flag bits 0x%08x%s", i, s->flags & ~known,
                              (s->flags & ~known) == ACQE_SECTION_FLAG_COMPRESSED
                                  ? " (COMPRESSED needs the header's COMPRESSED_SECTIONS feature bit)" : "");
        if ((s->flags & ACQE_SECTION_FLAG_COMPRESSED) && s->kind != ACQE_SECTION_DIRECTORY && s->kind != ACQE_SECTION_METADATA)
            return acqe__fail(err, ACQE_ERR_LAYOUT,
                              "section %u (%s%s): the COMPRESSED flag is allowed only on DIRECTORY and METADATA", i,
                              kn ? kn : "unknown kind", "");
        if (align_up_ovf(prev_end, align, &want)) want = UINT64_MAX; /* cannot happen: prev_end <= footer_at */
        if (s->offset != want)
            return acqe__fail(err, ACQE_ERR_LAYOUT, "section %u starts at %llu, must start at %llu (%s)", i,
                              (unsigned long long)s->offset, (unsigned long long)want,
                              s->offset < prev_end ? "overlaps the previous structure" : "leaves a gap");
        if (s->offset > footer_at || s->length > footer_at - s->offset) /* never offset + length: it may wrap */
            return acqe__fail(err, ACQE_ERR_LAYOUT, "section %u ends at %s, footer starts at %llu", i,
                              sum_str(s->offset, s->length, buf, sizeof buf), (unsigned long long)footer_at);
        if (kn) {
            if ((s->flags & ~ACQE_SECTION_FLAG_COMPRESSED) != ACQE_SECTION_FLAG_REQUIRED)
                return acqe__fail(err, ACQE_ERR_LAYOUT, "section %u (%s) must have flags 1, has %u", i, kn, s->flags);
            if (seen[s->kind]) return acqe__fail(err, ACQE_ERR_LAYOUT, "second %s section (section %u)", kn, i);
            if (s->kind == ACQE_SECTION_DATA && s->crc32 != 0)
                return acqe__fail(err, ACQE_ERR_LAYOUT, "DATA section crc32 field is %08x, must be 0", s->crc32);
            seen[s->kind] = 1;
            switch (s->kind) {
            case ACQE_SECTION_DIRECTORY: f->dir_sec = (int)i; break;
            case ACQE_SECTION_METADATA: f->meta_sec = (int)i; break;
            case ACQE_SECTION_ASSETS: f->assets_sec = (int)i; break;
            default: f->data_sec = (int)i; break;
            }
        } else if (s->flags & ACQE_SECTION_FLAG_REQUIRED) {
            return acqe__fail(err, ACQE_ERR_UNSUPPORTED_VERSION, "section %u has unknown kind %u and is marked required",
                              i, s->kind);
        }
        prev_end = s->offset + s->length;
    }
    f->nsec = nsec;
    /* 15. */
    if (prev_end != footer_at)
        return acqe__fail(err, ACQE_ERR_LAYOUT, "%llu bytes between the last section end %llu and the footer",
                          (unsigned long long)(footer_at - prev_end), (unsigned long long)prev_end);
    /* 16. */
    prev_end = table_end;
    for (i = 0; i < nsec; i++) {
        if (!all_zero(d + prev_end, f->sec[i].offset - prev_end))
            return acqe__fail(err, ACQE_ERR_LAYOUT, "non-zero padding before section %u (bytes %llu..%llu)", i,
                              (unsigned long long)prev_end, (unsigned long long)f->sec[i].offset);
        prev_end = f->sec[i].offset + f->sec[i].length;
    }
    /* 17. */
    if (f->dir_sec < 0) return acqe__fail(err, ACQE_ERR_LAYOUT, "no DIRECTORY section");
    if (f->meta_sec < 0) return acqe__fail(err, ACQE_ERR_LAYOUT, "no METADATA section");
    if (f->data_sec < 0) return acqe__fail(err, ACQE_ERR_LAYOUT, "no DATA section");
    /* 18. the 16 MiB limit, stored lengths, then (raw_length read, before any CRC) the contents */
    {
        acqe_section_info *ds = &f->sec[f->dir_sec], *ms = &f->sec[f->meta_sec];
        uint64_t total;
        int k;
        if (add_ovf(ds->length, ms->length, &total) || total > MAX_DIR_PLUS_META)
            return acqe__fail(err, ACQE_ERR_LIMIT_EXCEEDED, "directory + metadata are %s bytes (limit 16777216)",
                              sum_str(ds->length, ms->length, buf, sizeof buf));
        for (k = 0; k < 2; k++) {
            acqe_section_info *s = k ? ms : ds;
            if (s->flags & ACQE_SECTION_FLAG_COMPRESSED) {
                if (s->length < COMPRESSED_PREFIX)
                    return acqe__fail(err, ACQE_ERR_LAYOUT,
                                      "compressed %s section is %llu bytes, too short for its 8-byte raw_length",
                                      k ? "METADATA" : "DIRECTORY", (unsigned long long)s->length);
                s->content_length = ld64(d + s->offset);
            }
        }
        if (add_ovf(ds->content_length, ms->content_length, &total) || total > MAX_DIR_PLUS_META)
            return acqe__fail(err, ACQE_ERR_LIMIT_EXCEEDED,
                              "directory + metadata are %s bytes after decompression (limit 16777216)",
                              sum_str(ds->content_length, ms->content_length, buf, sizeof buf));
    }
    f->data_begin = f->sec[f->data_sec].offset;
    f->data_end = f->data_begin + f->sec[f->data_sec].length;
    /* 19. */
    if ((st = section_contents(f, &f->sec[f->dir_sec], "DIRECTORY", &dir, &f->dir_inflated, err))) return st;
    if ((st = parse_directory(f, dir, (size_t)f->sec[f->dir_sec].content_length, err))) return st;
    /* 20. */
    if ((st = section_contents(f, &f->sec[f->meta_sec], "METADATA", &f->metadata, &f->meta_inflated, err))) return st;
    f->metadata_len = (size_t)f->sec[f->meta_sec].content_length;
    if ((st = acqe__check_metadata(f->metadata, f->metadata_len, err))) return st;
    return ACQE_OK;
}

static acqe_file *new_file(const acqe_options *opts) {
    acqe_file *f = (acqe_file *)calloc(1, sizeof *f);
    if (!f) return NULL;
    f->max_decoded = opts && opts->max_decoded_bytes ? opts->max_decoded_bytes : ACQE_DEFAULT_MAX_DECODED_BYTES;
    pthread_mutex_init(&f->assets_lock, NULL);
    return f;
}

static acqe_status finish_open(acqe_file *f, acqe_file **out, acqe_error *err) {
    acqe_status st = open_file(f, err);
    if (st) {
        acqe_close(f);
        *out = NULL;
        return st;
    }
    if (err) {
        err->status = ACQE_OK;
        err->message[0] = 0;
    }
    *out = f;
    return ACQE_OK;
}

acqe_status acqe_open_buffer(const void *data, size_t size, const acqe_options *opts, acqe_file **out,
                             acqe_error *err) {
    acqe_file *f;
    static const uint8_t empty[1] = {0};
    if (!out || (!data && size)) return acqe__fail(err, ACQE_ERR_ARGUMENT, "acqe_open_buffer: NULL argument");
    *out = NULL;
    f = new_file(opts);
    if (!f) return acqe__fail(err, ACQE_ERR_NOMEM, "out of memory");
    f->data = size ? (const uint8_t *)data : empty;
    f->size = size;
    return finish_open(f, out, err);
}

/* mmap lives in file.c (platform code) */
acqe_status acqe__map_path(const char *path, const uint8_t **data, size_t *size, void **map, size_t *map_size,
                           acqe_error *err);
void acqe__unmap(void *map, size_t map_size);

acqe_status acqe_open_path(const char *path, const acqe_options *opts, acqe_file **out, acqe_error *err) {
    acqe_file *f;
    acqe_status st;
    static const uint8_t empty[1] = {0};
    if (!out || !path) return acqe__fail(err, ACQE_ERR_ARGUMENT, "acqe_open_path: NULL argument");
    *out = NULL;
    f = new_file(opts);
    if (!f) return acqe__fail(err, ACQE_ERR_NOMEM, "out of memory");
    st = acqe__map_path(path, &f->data, &f->size, &f->map, &f->map_size, err);
    if (st) {
        acqe_close(f);
        return st;
    }
    if (!f->size) f->data = empty;
    return finish_open(f, out, err);
}

void acqe_close(acqe_file *f) {
    if (!f) return;
    if (f->map) acqe__unmap(f->map, f->map_size);
    free(f->dir_inflated);
    free(f->meta_inflated);
    free(f->tensors);
    free(f->names);
    free(f->by_name);
    free(f->assets);
    free(f->asset_names);
    pthread_mutex_destroy(&f->assets_lock);
    free(f);
}

/* --- accessors ------------------------------------------------------------------------------------------------- */
void acqe_set_max_decoded_bytes(acqe_file *f, uint64_t max_bytes) {
    f->max_decoded = max_bytes ? max_bytes : ACQE_DEFAULT_MAX_DECODED_BYTES;
}
uint64_t acqe_get_max_decoded_bytes(const acqe_file *f) { return f->max_decoded; }
void acqe_get_header(const acqe_file *f, acqe_header_info *out) { *out = f->header; }
size_t acqe_section_count(const acqe_file *f) { return f->nsec; }
int acqe_get_section(const acqe_file *f, size_t index, acqe_section_info *out) {
    if (index >= f->nsec) return -1;
    *out = f->sec[index];
    return 0;
}
const uint8_t *acqe_metadata(const acqe_file *f, size_t *length) {
    if (length) *length = f->metadata_len;
    return f->metadata;
}
size_t acqe_tensor_count(const acqe_file *f) { return f->ntensors; }
const acqe_tensor_info *acqe_tensor(const acqe_file *f, size_t index) {
    return index < f->ntensors ? &f->tensors[index] : NULL;
}

int64_t acqe_find_tensor(const acqe_file *f, const char *name, size_t name_length) {
    size_t lo = 0, hi = f->ntensors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const acqe_tensor_info *t = &f->tensors[f->by_name[mid]];
        size_t m = t->name_length < name_length ? t->name_length : name_length;
        int c = memcmp(t->name, name, m);
        if (!c) c = t->name_length < name_length ? -1 : (t->name_length > name_length ? 1 : 0);
        if (!c) return (int64_t)f->by_name[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return -1;
}

/* --- assets (spec section 9), parsed on first use ---------------------------------------------------------------- */
static int ascii_lower(int c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

/* why `name` is not a safe asset path, or NULL (the rule of spec section 9) */
static const char *unsafe_asset_name(const uint8_t *p, size_t n) {
    static const char *const reserved[] = {"con", "prn", "aux", "nul", "conin$", "conout$"};
    size_t i = 0;
    for (i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (c < 0x20 || c > 0x7E) return "only printable ASCII is allowed";
        if (c == '\\' || c == ':' || c == '*' || c == '?' || c == '"' || c == '<' || c == '>' || c == '|')
            return "it holds one of \\ : * ? \" < > |";
    }
    i = 0;
    while (i <= n) { /* each '/'-separated component */
        size_t e = i, stem, k;
        while (e < n && p[e] != '/') e++;
        if (e == i) return "empty path component";
        if ((e - i == 1 && p[i] == '.') || (e - i == 2 && p[i] == '.' && p[i + 1] == '.'))
            return "'.' or '..' component";
        if (p[e - 1] == '.' || p[e - 1] == ' ') return "a component ends with '.' or ' '";
        for (stem = i; stem < e && p[stem] != '.'; stem++) {}
        while (stem > i && p[stem - 1] == ' ') stem--;
        for (k = 0; k < sizeof reserved / sizeof *reserved; k++) {
            size_t rl = strlen(reserved[k]), q;
            if (stem - i != rl) continue;
            for (q = 0; q < rl && ascii_lower(p[i + q]) == reserved[k][q]; q++) {}
            if (q == rl) return "a reserved device name (CON, PRN, AUX, NUL, COM0-9, LPT0-9, CONIN$, CONOUT$)";
        }
        if (stem - i == 4 && (((ascii_lower(p[i]) == 'c' && ascii_lower(p[i + 1]) == 'o' && ascii_lower(p[i + 2]) == 'm') ||
                               (ascii_lower(p[i]) == 'l' && ascii_lower(p[i + 1]) == 'p' && ascii_lower(p[i + 2]) == 't')) &&
                              p[i + 3] >= '0' && p[i + 3] <= '9'))
            return "a reserved device name (CON, PRN, AUX, NUL, COM0-9, LPT0-9, CONIN$, CONOUT$)";
        i = e + 1;
    }
    return NULL;
}

/* folded form for comparisons: ASCII lower case, '/' as 0x01 (below every allowed byte), so that names
 * starting with "x/" sort right after "x" */
static int folded_cmp(const uint8_t *a, size_t na, const uint8_t *b, size_t nb) {
    size_t m = na < nb ? na : nb, i;
    for (i = 0; i < m; i++) {
        int x = a[i] == '/' ? 1 : ascii_lower(a[i]), y = b[i] == '/' ? 1 : ascii_lower(b[i]);
        if (x != y) return x - y;
    }
    return na < nb ? -1 : (na > nb ? 1 : 0);
}

/* 1 if a (folded) is b's parent folder: b starts with a + "/" */
static int folded_parent(const uint8_t *a, size_t na, const uint8_t *b, size_t nb) {
    return nb > na && b[na] == '/' && folded_cmp(a, na, b, na) == 0;
}

static acqe_status parse_assets(acqe_file *f, acqe_error *err) {
    const acqe_section_info *s;
    const uint8_t *b;
    size_t n, pos = 4, names_at = 0;
    uint32_t count, i;
    uint32_t *sorted = NULL; /* asset indexes sorted by folded name: an antichain (no name is a prefix) */
    char q[QUOTE_CAP];
    uint32_t got;
    acqe_status st = ACQE_OK;
    if (f->assets_sec < 0) return ACQE_OK;
    s = &f->sec[f->assets_sec];
    b = f->data + s->offset;
    n = (size_t)s->length;
    got = acqe__crc32(b, n);
    if (got != s->crc32)
        return acqe__fail(err, ACQE_ERR_CHECKSUM_MISMATCH, "ASSETS section CRC-32 is %08x, section table says %08x", got,
                          s->crc32);
    if (n < 4) return acqe__fail(err, ACQE_ERR_LAYOUT, "assets section is %zu bytes, too short for its count", n);
    count = ld32(b);
    if (count > MAX_ASSETS) return acqe__fail(err, ACQE_ERR_LIMIT_EXCEEDED, "%u assets (limit 4096)", count);
    if ((uint64_t)count * MIN_ASSET_ENTRY > n - 4)
        return acqe__fail(err, ACQE_ERR_LAYOUT, "assets section declares %u assets but holds only %zu bytes", count, n - 4);
    f->assets = (acqe_asset *)calloc(count ? count : 1, sizeof *f->assets);
    f->asset_names = (char *)malloc(n + count + 1);
    sorted = (uint32_t *)malloc((count ? count : 1) * sizeof *sorted);
    if (!f->assets || !f->asset_names || !sorted) {
        free(sorted);
        return acqe__fail(err, ACQE_ERR_NOMEM, "out of memory reading the assets");
    }
    for (i = 0; i < count; i++) {
        uint32_t nlen;
        uint64_t dlen;
        const uint8_t *name;
        const char *why;
        size_t lo = 0, hi = i;
        if (n - pos < 2) {
            st = acqe__fail(err, ACQE_ERR_LAYOUT, "asset %u runs past the end of the assets section", i);
            goto out;
        }
        nlen = ld16(b + pos);
        pos += 2;
        if (nlen == 0) {
            st = acqe__fail(err, ACQE_ERR_LAYOUT, "asset %u has an empty name", i);
            goto out;
        }
        if (nlen > MAX_NAME_BYTES) {
            st = acqe__fail(err, ACQE_ERR_LIMIT_EXCEEDED, "asset %u: name of %u bytes (limit 1024)", i, nlen);
            goto out;
        }
        if (n - pos < (size_t)nlen + 8) {
            st = acqe__fail(err, ACQE_ERR_LAYOUT, "asset %u runs past the end of the assets section", i);
            goto out;
        }
        name = b + pos;
        if (!acqe__utf8_valid(name, nlen)) {
            st = acqe__fail(err, ACQE_ERR_LAYOUT, "asset %u: name is not valid UTF-8", i);
            goto out;
        }
        acqe__quote(name, nlen, q, sizeof q);
        if ((why = unsafe_asset_name(name, nlen)) != NULL) {
            st = acqe__fail(err, ACQE_ERR_LAYOUT, "asset name %s is not a safe relative path (%s)", q, why);
            goto out;
        }
        /* the earlier names form an antichain sorted in folded order: a clash is with the neighbours */
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            const acqe_asset *a = &f->assets[sorted[mid]];
            if (folded_cmp((const uint8_t *)a->name, a->name_length, name, nlen) < 0) lo = mid + 1;
            else hi = mid;
        }
        if (lo < i) {
            const acqe_asset *a = &f->assets[sorted[lo]];
            if (folded_cmp((const uint8_t *)a->name, a->name_length, name, nlen) == 0) {
                st = acqe__fail(err, ACQE_ERR_LAYOUT, "duplicate asset name %s (names are compared ignoring ASCII case)", q);
                goto out;
            }
            if (folded_parent(name, nlen, (const uint8_t *)a->name, a->name_length)) {
                st = acqe__fail(err, ACQE_ERR_LAYOUT, "asset name %s is also the folder of another asset", q);
                goto out;
            }
        }
        if (lo > 0) {
            const acqe_asset *a = &f->assets[sorted[lo - 1]];
            if (folded_parent((const uint8_t *)a->name, a->name_length, name, nlen)) {
                st = acqe__fail(err, ACQE_ERR_LAYOUT, "asset name %s lies inside another asset's name used as a folder", q);
                goto out;
            }
        }
        memmove(sorted + lo + 1, sorted + lo, (i - lo) * sizeof *sorted);
        sorted[lo] = i;
        memcpy(f->asset_names + names_at, name, nlen);
        f->asset_names[names_at + nlen] = 0;
        f->assets[i].name = f->asset_names + names_at;
        f->assets[i].name_length = nlen;
        names_at += (size_t)nlen + 1;
        pos += nlen;
        dlen = ld64(b + pos);
        pos += 8;
        if (dlen > n - pos) {
            st = acqe__fail(err, ACQE_ERR_LAYOUT, "asset %s of %llu bytes runs past the end of the assets section", q,
                            (unsigned long long)dlen);
            goto out;
        }
        f->assets[i].data = b + pos;
        f->assets[i].size = dlen;
        pos += (size_t)dlen;
    }
    if (pos != n) {
        st = acqe__fail(err, ACQE_ERR_LAYOUT, "%zu trailing bytes after the last asset", n - pos);
        goto out;
    }
    f->nassets = count;
out:
    free(sorted);
    return st;
}

acqe_status acqe_assets(acqe_file *f, const acqe_asset **assets, size_t *count, acqe_error *err) {
    acqe_status st;
    pthread_mutex_lock(&f->assets_lock);
    if (f->assets_state == 0) {
        acqe_error e;
        st = parse_assets(f, &e);
        if (st) {
            f->assets_state = 2;
            f->assets_err = e;
            f->nassets = 0;
        } else {
            f->assets_state = 1;
        }
    }
    if (f->assets_state == 2) {
        st = f->assets_err.status;
        if (err) *err = f->assets_err;
    } else {
        st = ACQE_OK;
        if (assets) *assets = f->assets;
        if (count) *count = f->nassets;
    }
    pthread_mutex_unlock(&f->assets_lock);
    return st;
}

/* --- decoding and verification --------------------------------------------------------------------------------------- */
acqe_status acqe_output_dtype(const acqe_tensor_info *t, acqe_dtype requested, acqe_dtype *out, acqe_error *err) {
    acqe_dtype dec = t->decoded_dtype;
    if (requested == ACQE_DTYPE_NONE || requested == dec) {
        *out = dec;
        return ACQE_OK;
    }
    if (requested != ACQE_DTYPE_F32 && requested != ACQE_DTYPE_F16 && requested != ACQE_DTYPE_BF16)
        return acqe__fail(err, ACQE_ERR_ARGUMENT, "output dtype %d: only float32, float16 and bfloat16 conversions exist",
                          (int)requested);
    if (!is_float_dtype(dec)) {
        char q[QUOTE_CAP];
        return acqe__fail(err, ACQE_ERR_ARGUMENT, "tensor %s is %s: it cannot be converted to %s",
                          acqe__quote((const uint8_t *)t->name, t->name_length, q, sizeof q), acqe_dtype_name(dec),
                          acqe_dtype_name(requested));
    }
    *out = requested;
    return ACQE_OK;
}

acqe_status acqe_output_size(const acqe_tensor_info *t, acqe_dtype requested, uint64_t *bytes, acqe_error *err) {
    acqe_dtype o;
    acqe_status st = acqe_output_dtype(t, requested, &o, err);
    if (st) return st;
    *bytes = t->numel * acqe_dtype_size(o); /* numel <= 2^53, size <= 8 */
    return ACQE_OK;
}

acqe_status acqe_decode(const acqe_file *f, size_t index, acqe_dtype out_dtype, void *out, size_t out_size,
                        int threads, acqe_error *err) {
    const acqe_tensor_info *t;
    acqe_dtype o;
    acqe_status st;
    uint64_t bytes;
    size_t es;
    char q[QUOTE_CAP];
    if (!f || index >= f->ntensors)
        return acqe__fail(err, ACQE_ERR_ARGUMENT, "tensor index %zu out of range (%zu tensors)", index,
                          f ? f->ntensors : 0);
    t = &f->tensors[index];
    if ((st = acqe_output_dtype(t, out_dtype, &o, err))) return st;
    es = acqe_dtype_size(o);
    bytes = t->numel * es;
    acqe__quote((const uint8_t *)t->name, t->name_length, q, sizeof q);
    if (bytes > f->max_decoded)
        return acqe__fail(err, ACQE_ERR_DECODE_LIMIT, "tensor %s decodes to %llu bytes, above the limit of %llu decoded bytes",
                          q, (unsigned long long)bytes, (unsigned long long)f->max_decoded);
    if ((uint64_t)out_size < bytes || (bytes && !out))
        return acqe__fail(err, ACQE_ERR_ARGUMENT, "tensor %s needs an output buffer of %llu bytes, got %zu", q,
                          (unsigned long long)bytes, out ? out_size : 0);
    if (out && ((uintptr_t)out % es))
        return acqe__fail(err, ACQE_ERR_ARGUMENT, "output buffer for tensor %s is not aligned to %zu bytes", q, es);
    if (threads < 0) return acqe__fail(err, ACQE_ERR_ARGUMENT, "threads must be >= 0, got %d", threads);
    {
        static uint8_t dummy[8];
        st = acqe__decode_tensor(f, index, o, bytes ? out : (void *)dummy, threads, err);
    }
    if (!st && err) {
        err->status = ACQE_OK;
        err->message[0] = 0;
    }
    return st;
}

typedef struct sha_job {
    const uint8_t *p;
    size_t n;
    uint8_t digest[32];
    pthread_mutex_t lock;
    int stop;                /* set when an earlier check failed: the digest is not needed */
} sha_job;

static void *sha_worker(void *arg) {
    sha_job *s = (sha_job *)arg;
    acqe_sha256 ctx;
    size_t at = 0;
    acqe__sha256_init(&ctx);
    while (at < s->n) {
        size_t step = s->n - at < ((size_t)1 << 24) ? s->n - at : ((size_t)1 << 24);
        int stop;
        pthread_mutex_lock(&s->lock);
        stop = s->stop;
        pthread_mutex_unlock(&s->lock);
        if (stop) return NULL;
        acqe__sha256_update(&ctx, s->p + at, step);
        at += step;
    }
    acqe__sha256_final(&ctx, s->digest);
    return NULL;
}

acqe_status acqe_verify(acqe_file *f, int threads, acqe_verify_report *report, acqe_error *err) {
    uint32_t i;
    size_t k;
    acqe_status st = ACQE_OK;
    acqe_verify_report rep;
    sha_job sj;
    pthread_t sha_thread;
    int sha_started = 0;
    uint8_t *digest = sj.digest;
    memset(&rep, 0, sizeof rep);
    rep.max_expansion_tensor = -1;
    if (threads < 0) return acqe__fail(err, ACQE_ERR_ARGUMENT, "threads must be >= 0, got %d", threads);
    sj.p = f->data;
    sj.n = (size_t)(f->header.file_length - FOOTER_SIZE);
    sj.stop = 0;
    pthread_mutex_init(&sj.lock, NULL);
    /* with threads to spare, the footer SHA-256 (checked last) is computed beside the other checks */
    if (threads >= 2 && sj.n >= (1u << 22)) sha_started = pthread_create(&sha_thread, NULL, sha_worker, &sj) == 0;
    /* every non-DATA section's CRC over its stored bytes, in table order */
    for (i = 0; i < f->nsec; i++) {
        const acqe_section_info *s = &f->sec[i];
        uint32_t got;
        const char *kn = acqe_section_kind_name(s->kind);
        char what[48];
        if (s->kind == ACQE_SECTION_DATA) continue;
        got = acqe__crc32(f->data + s->offset, s->length);
        if (kn) snprintf(what, sizeof what, "%s", kn);
        else snprintf(what, sizeof what, "section %u (kind %u)", i, s->kind);
        if (got != s->crc32) {
            st = acqe__fail(err, ACQE_ERR_CHECKSUM_MISMATCH, "%s section CRC-32 is %08x, section table says %08x", what,
                            got, s->crc32);
            goto out;
        }
    }
    if ((st = acqe_assets(f, NULL, NULL, err))) goto out;
    for (k = 0; k < f->ntensors; k++) {
        const acqe_tensor_info *t = &f->tensors[k];
        uint64_t dec = t->numel * acqe_dtype_size(t->decoded_dtype);
        if ((st = acqe__decode_tensor(f, k, t->decoded_dtype, NULL, threads, err))) goto out;
        rep.tensors++;
        if (add_ovf(rep.decoded_bytes, dec, &rep.decoded_bytes)) rep.decoded_bytes = UINT64_MAX; /* saturate */
        rep.payload_bytes += t->payload_length; /* payloads are disjoint parts of the file: no wrap */
        if (t->payload_length && (double)dec / (double)t->payload_length > rep.max_expansion) {
            rep.max_expansion = (double)dec / (double)t->payload_length;
            rep.max_expansion_tensor = (int64_t)k;
        }
    }
    if (sha_started) pthread_join(sha_thread, NULL);
    else sha_worker(&sj);
    pthread_mutex_destroy(&sj.lock);
    if (memcmp(digest, f->header.footer_sha256, 32) != 0)
        return acqe__fail(err, ACQE_ERR_CHECKSUM_MISMATCH,
                          "file SHA-256 is %02x%02x%02x%02x%02x%02x%02x%02x..., footer says %02x%02x%02x%02x%02x%02x%02x%02x...",
                          digest[0], digest[1], digest[2], digest[3], digest[4], digest[5], digest[6], digest[7],
                          f->header.footer_sha256[0], f->header.footer_sha256[1], f->header.footer_sha256[2],
                          f->header.footer_sha256[3], f->header.footer_sha256[4], f->header.footer_sha256[5],
                          f->header.footer_sha256[6], f->header.footer_sha256[7]);
    if (report) *report = rep;
    if (err) {
        err->status = ACQE_OK;
        err->message[0] = 0;
    }
    return ACQE_OK;
out: /* an earlier check failed: it names the error; the SHA-256 is not needed */
    if (sha_started) {
        pthread_mutex_lock(&sj.lock);
        sj.stop = 1;
        pthread_mutex_unlock(&sj.lock);
        pthread_join(sha_thread, NULL);
    }
    pthread_mutex_destroy(&sj.lock);
    return st;
}
