/*
 * libacqe: a reader of the .acqe file format (spec/ACQE.md), in portable C99.
 *
 * Depends on libc, pthreads and zlib. Every validation of spec section 14 runs in its order; every
 * error is one of the spec's categories (or, for problems that are not the file's fault, one of the
 * ACQE_ERR_IO .. ACQE_ERR_DECODE_LIMIT codes) plus a one-line message.
 *
 * Thread safety: an acqe_file is immutable after acqe_open_*(), except for the lazily parsed asset
 * table, which is guarded by a mutex. Any number of threads may call acqe_decode(), acqe_verify(),
 * acqe_assets() and the accessors on the same handle at once. acqe_set_max_decoded_bytes() and
 * acqe_close() must not run concurrently with anything else on that handle. There is no global state.
 *
 * Memory: acqe_open_*() allocates only what the file's size bounds (a copy of the directory entries and
 * names, the inflated DIRECTORY/METADATA sections, which are also capped at 16 MiB by the format); a
 * decode allocates at most a slot table of max(2 MiB, 32 x payload bytes) and a few KiB per thread, and
 * writes the tensor into the caller's buffer. A decode whose output would exceed the handle's limit on
 * decoded bytes (default 16 GiB) is refused with ACQE_ERR_DECODE_LIMIT before anything is allocated.
 */
#ifndef ACQE_H
#define ACQE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32) && defined(ACQE_BUILD_SHARED)
#define ACQE_API __declspec(dllexport)
#elif defined(__GNUC__)
#define ACQE_API __attribute__((visibility("default")))
#else
#define ACQE_API
#endif

/* Library version (not the file format version). */
#define ACQE_LIB_VERSION "0.1.0"
/* The newest file format this library reads: 1.1 (a 1.x reader reads every 1.y whose features it knows). */
#define ACQE_FORMAT_MAJOR 1
#define ACQE_FORMAT_MINOR 1

/* Status codes. 1..8 are the spec's error categories (section 14): the file is invalid. 16.. are not the
 * file's fault. acqe_status_name() gives the name used by spec/vectors/invalid/MANIFEST.json. */
typedef enum acqe_status {
    ACQE_OK = 0,
    ACQE_ERR_NOT_ACQE_FILE = 1,      /* NotAcqeFileError */
    ACQE_ERR_UNSUPPORTED_VERSION = 2, /* UnsupportedVersionError */
    ACQE_ERR_TRUNCATED_FILE = 3,     /* TruncatedFileError */
    ACQE_ERR_CHECKSUM_MISMATCH = 4,  /* ChecksumMismatchError */
    ACQE_ERR_LIMIT_EXCEEDED = 5,     /* LimitExceededError */
    ACQE_ERR_LAYOUT = 6,             /* LayoutError */
    ACQE_ERR_CODEC = 7,              /* CodecError */
    ACQE_ERR_METADATA = 8,           /* MetadataError */
    ACQE_ERR_IO = 16,                /* the file could not be opened, sized or mapped */
    ACQE_ERR_NOMEM = 17,             /* an allocation failed */
    ACQE_ERR_ARGUMENT = 18,          /* bad argument: index, buffer size or alignment, dtype, threads */
    ACQE_ERR_DECODE_LIMIT = 19       /* valid tensor, but it decodes to more bytes than the set limit */
} acqe_status;

/* dtype codes of spec section 7 (ACQE_DTYPE_NONE: "the tensor's decoded dtype" where an output dtype is
 * asked for). BF16 is handled as its 16-bit pattern (uint16_t). */
typedef enum acqe_dtype {
    ACQE_DTYPE_NONE = 0,
    ACQE_DTYPE_F32 = 1, ACQE_DTYPE_F16 = 2, ACQE_DTYPE_BF16 = 3, ACQE_DTYPE_F64 = 4,
    ACQE_DTYPE_I8 = 5, ACQE_DTYPE_U8 = 6, ACQE_DTYPE_I16 = 7, ACQE_DTYPE_I32 = 8, ACQE_DTYPE_I64 = 9,
    ACQE_DTYPE_BOOL = 10, ACQE_DTYPE_U16 = 11, ACQE_DTYPE_U32 = 12, ACQE_DTYPE_U64 = 13
} acqe_dtype;

typedef enum acqe_codec {
    ACQE_CODEC_RAW = 1, ACQE_CODEC_CODEBOOK_RANS = 2, ACQE_CODEC_CODEBOOK_PACKED = 3
} acqe_codec;

typedef enum acqe_section_kind {
    ACQE_SECTION_DIRECTORY = 1, ACQE_SECTION_METADATA = 2, ACQE_SECTION_ASSETS = 3, ACQE_SECTION_DATA = 4
} acqe_section_kind;

#define ACQE_FEATURE_COMPRESSED_SECTIONS 1u
#define ACQE_SECTION_FLAG_REQUIRED 1u
#define ACQE_SECTION_FLAG_COMPRESSED 2u
#define ACQE_MAX_RANK 8
#define ACQE_MESSAGE_SIZE 512
#define ACQE_DEFAULT_MAX_DECODED_BYTES (UINT64_C(16) << 30)   /* 16 GiB */

/* Error report: the status and a one-line, NUL-terminated message (names from the file are escaped). */
typedef struct acqe_error {
    acqe_status status;
    char message[ACQE_MESSAGE_SIZE];
} acqe_error;

typedef struct acqe_options {
    uint64_t max_decoded_bytes; /* 0: ACQE_DEFAULT_MAX_DECODED_BYTES; UINT64_MAX: no limit */
    uint32_t flags;             /* reserved: 0 */
} acqe_options;

typedef struct acqe_file acqe_file;

typedef struct acqe_header_info {
    uint16_t major, minor;
    uint32_t alignment;
    uint64_t required_features, optional_features;
    uint64_t file_length;
    uint32_t section_count;
    uint8_t footer_sha256[32];
} acqe_header_info;

typedef struct acqe_section_info {
    uint32_t kind, flags;
    uint64_t offset, length;   /* stored bytes */
    uint64_t content_length;   /* raw_length of a compressed section, else length */
    uint32_t crc32;
} acqe_section_info;

typedef struct acqe_tensor_info {
    const char *name;          /* UTF-8, NUL-terminated (names never contain NUL: spec section 6) */
    size_t name_length;        /* bytes, without the terminating NUL */
    uint32_t rank;
    uint64_t shape[ACQE_MAX_RANK];
    uint64_t numel;            /* product of shape (1 for rank 0) */
    acqe_dtype stored_dtype, decoded_dtype;
    acqe_codec codec;
    uint64_t payload_offset, payload_length, checked_length;
    uint32_t payload_crc32;
} acqe_tensor_info;

typedef struct acqe_asset {
    const char *name;          /* UTF-8 (ASCII under format 1.1's rules), NUL-terminated */
    size_t name_length;
    const uint8_t *data;       /* points into the file */
    uint64_t size;
} acqe_asset;

typedef struct acqe_verify_report {
    uint64_t tensors;          /* tensors decoded */
    uint64_t decoded_bytes;    /* sum of numel x bytes(decoded dtype) */
    uint64_t payload_bytes;    /* sum of payload_length */
    double max_expansion;      /* largest decoded bytes / payload bytes of one tensor (0 if none) */
    int64_t max_expansion_tensor; /* its index, or -1 */
} acqe_verify_report;

/* --- opening ------------------------------------------------------------------------------------- */
ACQE_API void acqe_options_init(acqe_options *opts);
/* Memory-maps `path` read-only and validates it (spec section 14, "Opening a file"). */
ACQE_API acqe_status acqe_open_path(const char *path, const acqe_options *opts, acqe_file **out,
                                    acqe_error *err);
/* Validates `size` bytes at `data` without copying them: the caller keeps them alive and unchanged until
 * acqe_close(). */
ACQE_API acqe_status acqe_open_buffer(const void *data, size_t size, const acqe_options *opts,
                                      acqe_file **out, acqe_error *err);
ACQE_API void acqe_close(acqe_file *f);

ACQE_API void acqe_set_max_decoded_bytes(acqe_file *f, uint64_t max_bytes); /* 0: default */
ACQE_API uint64_t acqe_get_max_decoded_bytes(const acqe_file *f);

/* --- listing --------------------------------------------------------------------------------------- */
ACQE_API void acqe_get_header(const acqe_file *f, acqe_header_info *out);
ACQE_API size_t acqe_section_count(const acqe_file *f);
ACQE_API int acqe_get_section(const acqe_file *f, size_t index, acqe_section_info *out); /* 0 ok, -1 bad index */
/* The validated METADATA JSON text (inflated if compressed). Not NUL-terminated; valid until close. */
ACQE_API const uint8_t *acqe_metadata(const acqe_file *f, size_t *length);
ACQE_API size_t acqe_tensor_count(const acqe_file *f);
ACQE_API const acqe_tensor_info *acqe_tensor(const acqe_file *f, size_t index); /* NULL if out of range */
ACQE_API int64_t acqe_find_tensor(const acqe_file *f, const char *name, size_t name_length); /* -1: none */
/* The assets (spec section 9), parsed and CRC-checked on first use; valid until close. */
ACQE_API acqe_status acqe_assets(acqe_file *f, const acqe_asset **assets, size_t *count, acqe_error *err);

/* --- decoding -------------------------------------------------------------------------------------- */
/* The dtype acqe_decode() writes for `requested`: ACQE_DTYPE_NONE or the decoded dtype itself give the
 * decoded dtype; F32, F16 and BF16 are conversions allowed for floating tensors only. */
ACQE_API acqe_status acqe_output_dtype(const acqe_tensor_info *t, acqe_dtype requested, acqe_dtype *out,
                                       acqe_error *err);
/* Bytes acqe_decode() writes (numel x element size); fails (overflow) only for an unsupported request. */
ACQE_API acqe_status acqe_output_size(const acqe_tensor_info *t, acqe_dtype requested, uint64_t *bytes,
                                      acqe_error *err);
/* Decodes tensor `index` into `out` (at least acqe_output_size() bytes, aligned to the element size),
 * native byte order, row-major. `out_dtype`: ACQE_DTYPE_NONE for the decoded dtype, or F32/F16/BF16 to
 * convert a floating tensor with round to nearest, ties to even (float64 is rounded to float32 first; a
 * codebook tensor is reconstructed in float32, converted to its decoded dtype, then to `out_dtype`,
 * exactly as decoding and then converting would). `threads` >= 1 splits the work of one tensor over that
 * many threads (0: 1). Checks padding, payload CRC, chunk CRCs and every codec rule. On error the
 * contents of `out` are unspecified. */
ACQE_API acqe_status acqe_decode(const acqe_file *f, size_t index, acqe_dtype out_dtype, void *out,
                                 size_t out_size, int threads, acqe_error *err);
/* Everything spec section 14 "Verify" lists: section CRCs, assets, every tensor (padding, CRCs, full
 * decode, without an output buffer), then the footer SHA-256. `report` may be NULL. Honors the decoded
 * bytes limit per tensor (ACQE_ERR_DECODE_LIMIT: not a file error). */
ACQE_API acqe_status acqe_verify(acqe_file *f, int threads, acqe_verify_report *report, acqe_error *err);

/* --- names ------------------------------------------------------------------------------------------ */
ACQE_API const char *acqe_status_name(acqe_status s);   /* "LayoutError", ..., "OK", "IOError", ... */
ACQE_API int acqe_status_is_file_error(acqe_status s);  /* 1 for the categories 1..8 */
ACQE_API const char *acqe_dtype_name(acqe_dtype d);     /* "float32", ...; NULL if unknown */
ACQE_API size_t acqe_dtype_size(acqe_dtype d);          /* bytes per element; 0 if unknown */
ACQE_API const char *acqe_codec_name(acqe_codec c);     /* "RAW", "CODEBOOK_RANS", "CODEBOOK_PACKED" */
ACQE_API const char *acqe_section_kind_name(uint32_t kind); /* NULL for an unknown kind */
ACQE_API const char *acqe_lib_version(void);

#ifdef __cplusplus
}
#endif
#endif /* ACQE_H */
