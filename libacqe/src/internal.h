/* libacqe internals: shared by the source files, not installed. */
#ifndef ACQE_INTERNAL_H
#define ACQE_INTERNAL_H

#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../acqe.h"

#if defined(__FAST_MATH__)
#error "libacqe must not be built with -ffast-math: decoding must be bit-exact (spec section 10.2)"
#endif

/* --- format constants (spec/ACQE.md) ------------------------------------------------------------ */
#define HEADER_SIZE 64u
#define SECTION_ENTRY_SIZE 32u
#define FOOTER_SIZE 48u
#define MIN_FILE_SIZE (HEADER_SIZE + FOOTER_SIZE)
#define MAX_SECTIONS 64u
#define MIN_ALIGNMENT 16u
#define MAX_ALIGNMENT 65536u
#define MAX_DIR_PLUS_META (UINT64_C(16) << 20)
#define COMPRESSED_PREFIX 8u
#define MAX_TENSORS 65536u
#define MAX_NAME_BYTES 1024u
#define MAX_NUMEL (UINT64_C(1) << 53)
#define MAX_ASSETS 4096u
#define MAX_JSON_DEPTH 64
#define MAX_K 65536u
#define MAX_CHUNK_SYMBOLS (UINT64_C(1) << 20)
#define MAX_TABLES 65536u
#define MAX_PRECISION 24u
#define MAX_TABLE_SLOTS (UINT64_C(1) << 24)
#define MIN_DIR_ENTRY 39u   /* 2 + 1 + 8 + 28 */
#define MIN_ASSET_ENTRY 11u /* 2 + 1 + 8 */
#define RANS_HEAD 16u
#define PACKED_HEAD 8u

/* --- the handle ------------------------------------------------------------------------------------ */
struct acqe_file {
    const uint8_t *data;     /* the whole file */
    size_t size;
    void *map;               /* mmap()ed region, or NULL for a caller's buffer */
    size_t map_size;
    uint64_t max_decoded;
    acqe_header_info header;
    uint32_t nsec;
    acqe_section_info sec[MAX_SECTIONS];
    int dir_sec, meta_sec, assets_sec, data_sec; /* indexes into sec[], -1 if absent */
    uint64_t data_begin, data_end;
    uint8_t *dir_inflated, *meta_inflated;        /* owned inflated contents, or NULL */
    const uint8_t *metadata;
    size_t metadata_len;
    size_t ntensors;
    acqe_tensor_info *tensors;
    char *names;             /* all tensor names, NUL-terminated, back to back */
    uint32_t *by_name;       /* tensor indexes sorted by name bytes */
    /* assets: parsed on first use */
    pthread_mutex_t assets_lock;
    int assets_state;        /* 0: not parsed, 1: ok, 2: invalid (assets_err) */
    acqe_asset *assets;
    size_t nassets;
    char *asset_names;
    acqe_error assets_err;
};

/* --- little-endian loads (any alignment, any host byte order) ---------------------------------------- */
static inline uint16_t ld16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t ld32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline uint64_t ld64(const uint8_t *p) { return (uint64_t)ld32(p) | ((uint64_t)ld32(p + 4) << 32); }
static inline float ldf32(const uint8_t *p) {
    uint32_t u = ld32(p);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* --- checked arithmetic ------------------------------------------------------------------------------ */
static inline int add_ovf(uint64_t a, uint64_t b, uint64_t *r) { *r = a + b; return *r < a; }
static inline int mul_ovf(uint64_t a, uint64_t b, uint64_t *r) {
    if (a != 0 && b > UINT64_MAX / a) return 1;
    *r = a * b;
    return 0;
}
/* align_up(x, a) for a power of two a; 1 on overflow */
static inline int align_up_ovf(uint64_t x, uint64_t a, uint64_t *r) {
    uint64_t t;
    if (add_ovf(x, a - 1, &t)) return 1;
    *r = t & ~(a - 1);
    return 0;
}

/* --- errors and messages ------------------------------------------------------------------------------ */
acqe_status acqe__fail(acqe_error *err, acqe_status s, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* `name` (n bytes) as a quoted, escaped, possibly shortened string for messages: 'abc\x0a...' */
const char *acqe__quote(const uint8_t *name, size_t n, char *buf, size_t cap);
#define QUOTE_CAP 200

/* --- checksums --------------------------------------------------------------------------------------- */
uint32_t acqe__crc32(const uint8_t *p, uint64_t n);
uint32_t acqe__crc32_update(uint32_t crc, const uint8_t *p, uint64_t n);
typedef struct acqe_sha256 {
    uint32_t h[8];
    uint64_t len;
    uint8_t buf[64];
    size_t fill;
} acqe_sha256;
void acqe__sha256_init(acqe_sha256 *s);
void acqe__sha256_update(acqe_sha256 *s, const uint8_t *p, size_t n);
void acqe__sha256_final(acqe_sha256 *s, uint8_t out[32]);

/* --- UTF-8 and names ----------------------------------------------------------------------------------- */
int acqe__utf8_valid(const uint8_t *p, size_t n);          /* 1 if well-formed UTF-8 */
int acqe__has_control(const uint8_t *p, size_t n);         /* 1 if it holds a C0/C1 control or DEL (valid UTF-8 in) */

/* --- metadata ------------------------------------------------------------------------------------------ */
acqe_status acqe__check_metadata(const uint8_t *p, size_t n, acqe_error *err);

/* --- floats (float.c): bit-exact conversions, no dependence on the FPU's modes --------------------------- */
uint16_t acqe__f32_to_f16(uint32_t f);     /* RNE; NaN: sign, top payload bits kept, never becomes inf */
uint16_t acqe__f32_to_bf16(uint32_t f);    /* RNE; NaN: quiet bit set */
uint32_t acqe__f16_to_f32(uint16_t h);     /* exact */
uint32_t acqe__f64_to_f32(uint64_t d);     /* RNE; overflow to inf; NaN: quieted, payload truncated */
uint32_t acqe__f32_mul(uint32_t a, uint32_t b); /* IEEE binary32 multiply, RNE, for finite operands */
int acqe__fpu_exact(void);                 /* 1 if the hardware f32 multiply gives IEEE results here */

/* --- decoding (decode.c) --------------------------------------------------------------------------------- */
/* Decode (out != NULL) or only validate (out == NULL) tensor `index`; out_dtype already resolved. */
acqe_status acqe__decode_tensor(const acqe_file *f, size_t index, acqe_dtype out_dtype, void *out, int threads,
                                acqe_error *err);

#endif
