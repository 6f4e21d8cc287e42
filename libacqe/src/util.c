/* Errors, names, CRC-32 (zlib's), SHA-256 (FIPS 180-4), UTF-8 validation. */
#include <stdio.h>
#include <zlib.h>

#include "internal.h"

acqe_status acqe__fail(acqe_error *err, acqe_status s, const char *fmt, ...) {
    if (err) {
        va_list ap;
        char *m;
        err->status = s;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
        for (m = err->message; *m; m++) /* one line, always */
            if (*m == '\n' || *m == '\r') *m = ' ';
    }
    return s;
}

const char *acqe__quote(const uint8_t *name, size_t n, char *buf, size_t cap) {
    static const char hex[] = "0123456789abcdef";
    size_t o = 0, i;
    const size_t room = cap - 6; /* closing quote, "...", NUL */
    buf[o++] = '\'';
    for (i = 0; i < n; i++) {
        uint8_t c = name[i];
        if (o + 4 >= room) {
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        if (c < 0x20 || c == 0x7F) {
            buf[o++] = '\\';
            buf[o++] = 'x';
            buf[o++] = hex[c >> 4];
            buf[o++] = hex[c & 15];
        } else if (c == '\'' || c == '\\') {
            buf[o++] = '\\';
            buf[o++] = (char)c;
        } else {
            buf[o++] = (char)c; /* UTF-8 bytes pass through */
        }
    }
    buf[o++] = '\'';
    buf[o] = 0;
    return buf;
}

/* --- CRC-32/ISO-HDLC: zlib's implementation (fast, and the definition of the check) --------------------- */
uint32_t acqe__crc32_update(uint32_t crc, const uint8_t *p, uint64_t n) {
    uLong c = crc;
    while (n > 0) {
        uInt step = n > (UINT64_C(1) << 30) ? (uInt)(1u << 30) : (uInt)n;
        c = crc32(c, p, step);
        p += step;
        n -= step;
    }
    return (uint32_t)c;
}

uint32_t acqe__crc32(const uint8_t *p, uint64_t n) { return acqe__crc32_update(0, p, n); }

/* --- SHA-256 ---------------------------------------------------------------------------------------------- */
static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(uint32_t h[8], const uint8_t *p) {
    uint32_t w[64], a, b, c, d, e, f, g, k, t1, t2;
    int i;
    for (i = 0; i < 16; i++)
        w[i] = ((uint32_t)p[4 * i] << 24) | ((uint32_t)p[4 * i + 1] << 16) | ((uint32_t)p[4 * i + 2] << 8) |
               p[4 * i + 3];
    for (i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    a = h[0]; b = h[1]; c = h[2]; d = h[3]; e = h[4]; f = h[5]; g = h[6]; k = h[7];
    for (i = 0; i < 64; i++) {
        t1 = k + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K256[i] + w[i];
        t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        k = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += k;
}

void acqe__sha256_init(acqe_sha256 *s) {
    static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, iv, sizeof iv);
    s->len = 0;
    s->fill = 0;
}

void acqe__sha256_update(acqe_sha256 *s, const uint8_t *p, size_t n) {
    s->len += n;
    if (s->fill) {
        size_t take = 64 - s->fill < n ? 64 - s->fill : n;
        memcpy(s->buf + s->fill, p, take);
        s->fill += take;
        p += take;
        n -= take;
        if (s->fill < 64) return;
        sha256_block(s->h, s->buf);
        s->fill = 0;
    }
    while (n >= 64) {
        sha256_block(s->h, p);
        p += 64;
        n -= 64;
    }
    if (n) {
        memcpy(s->buf, p, n);
        s->fill = n;
    }
}

void acqe__sha256_final(acqe_sha256 *s, uint8_t out[32]) {
    uint64_t bits = s->len * 8;
    int i;
    s->buf[s->fill++] = 0x80;
    if (s->fill > 56) {
        memset(s->buf + s->fill, 0, 64 - s->fill);
        sha256_block(s->h, s->buf);
        s->fill = 0;
    }
    memset(s->buf + s->fill, 0, 56 - s->fill);
    for (i = 0; i < 8; i++) s->buf[56 + i] = (uint8_t)(bits >> (56 - 8 * i));
    sha256_block(s->h, s->buf);
    for (i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(s->h[i] >> 24);
        out[4 * i + 1] = (uint8_t)(s->h[i] >> 16);
        out[4 * i + 2] = (uint8_t)(s->h[i] >> 8);
        out[4 * i + 3] = (uint8_t)s->h[i];
    }
}

/* --- UTF-8 (Unicode's definition: no overlongs, no surrogates, nothing above U+10FFFF) ------------------------ */
int acqe__utf8_valid(const uint8_t *p, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = p[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) {
            if (i + 1 >= n || (p[i + 1] & 0xC0) != 0x80) return 0;
            i += 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            uint8_t lo = 0x80, hi = 0xBF;
            if (c == 0xE0) lo = 0xA0;      /* no overlong */
            if (c == 0xED) hi = 0x9F;      /* no surrogates */
            if (i + 2 >= n || p[i + 1] < lo || p[i + 1] > hi || (p[i + 2] & 0xC0) != 0x80) return 0;
            i += 3;
        } else if (c >= 0xF0 && c <= 0xF4) {
            uint8_t lo = 0x80, hi = 0xBF;
            if (c == 0xF0) lo = 0x90;      /* no overlong */
            if (c == 0xF4) hi = 0x8F;      /* nothing above U+10FFFF */
            if (i + 3 >= n || p[i + 1] < lo || p[i + 1] > hi || (p[i + 2] & 0xC0) != 0x80 ||
                (p[i + 3] & 0xC0) != 0x80)
                return 0;
            i += 4;
        } else {
            return 0;
        }
    }
    return 1;
}

int acqe__has_control(const uint8_t *p, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) {
        if (p[i] < 0x20 || p[i] == 0x7F) return 1;                          /* C0, DEL */
        if (p[i] == 0xC2 && i + 1 < n && p[i + 1] >= 0x80 && p[i + 1] <= 0x9F) return 1; /* C1: U+0080..U+009F */
    }
    return 0;
}

/* --- names ------------------------------------------------------------------------------------------------ */
const char *acqe_status_name(acqe_status s) {
    switch (s) {
    case ACQE_OK: return "OK";
    case ACQE_ERR_NOT_ACQE_FILE: return "NotAcqeFileError";
    case ACQE_ERR_UNSUPPORTED_VERSION: return "UnsupportedVersionError";
    case ACQE_ERR_TRUNCATED_FILE: return "TruncatedFileError";
    case ACQE_ERR_CHECKSUM_MISMATCH: return "ChecksumMismatchError";
    case ACQE_ERR_LIMIT_EXCEEDED: return "LimitExceededError";
    case ACQE_ERR_LAYOUT: return "LayoutError";
    case ACQE_ERR_CODEC: return "CodecError";
    case ACQE_ERR_METADATA: return "MetadataError";
    case ACQE_ERR_IO: return "IOError";
    case ACQE_ERR_NOMEM: return "OutOfMemory";
    case ACQE_ERR_ARGUMENT: return "ArgumentError";
    case ACQE_ERR_DECODE_LIMIT: return "DecodeLimitError";
    }
    return "UnknownError";
}

int acqe_status_is_file_error(acqe_status s) { return s >= ACQE_ERR_NOT_ACQE_FILE && s <= ACQE_ERR_METADATA; }

static const struct {
    const char *name;
    size_t size;
} DTYPES[14] = {{NULL, 0},       {"float32", 4}, {"float16", 2}, {"bfloat16", 2}, {"float64", 8},
                {"int8", 1},     {"uint8", 1},   {"int16", 2},   {"int32", 4},    {"int64", 8},
                {"bool", 1},     {"uint16", 2},  {"uint32", 4},  {"uint64", 8}};

const char *acqe_dtype_name(acqe_dtype d) { return (unsigned)d < 14 ? DTYPES[d].name : NULL; }
size_t acqe_dtype_size(acqe_dtype d) { return (unsigned)d < 14 ? DTYPES[d].size : 0; }

const char *acqe_codec_name(acqe_codec c) {
    switch (c) {
    case ACQE_CODEC_RAW: return "RAW";
    case ACQE_CODEC_CODEBOOK_RANS: return "CODEBOOK_RANS";
    case ACQE_CODEC_CODEBOOK_PACKED: return "CODEBOOK_PACKED";
    }
    return NULL;
}

const char *acqe_section_kind_name(uint32_t kind) {
    switch (kind) {
    case ACQE_SECTION_DIRECTORY: return "DIRECTORY";
    case ACQE_SECTION_METADATA: return "METADATA";
    case ACQE_SECTION_ASSETS: return "ASSETS";
    case ACQE_SECTION_DATA: return "DATA";
    }
    return NULL;
}

const char *acqe_lib_version(void) { return ACQE_LIB_VERSION; }
