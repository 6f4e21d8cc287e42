/* Decoding one tensor (spec sections 10, 13 and 14 "Decoding a tensor"): RAW, CODEBOOK_PACKED and
 * CODEBOOK_RANS, into the caller's buffer or (out == NULL) only validated, on one or more threads.
 *
 * The rANS loop writes the output values straight from a value table (the K possible outputs of the
 * current row, computed with the exact formula of section 10.2): no index array, no second pass. Four
 * chunks are decoded in lockstep per thread so the CPU overlaps their dependency chains. */
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

/* --- a small parallel-for over tasks, the calling thread working too ----------------------------------- */
typedef void (*task_fn)(void *ctx, uint64_t task, int worker);

typedef struct pool_job {
    pthread_mutex_t lock;
    uint64_t next, ntasks;
    task_fn fn;
    void *ctx;
} pool_job;

typedef struct pool_arg {
    pool_job *job;
    int worker;
} pool_arg;

static void *pool_worker(void *p) {
    pool_arg *a = (pool_arg *)p;
    pool_job *j = a->job;
    for (;;) {
        uint64_t t;
        pthread_mutex_lock(&j->lock);
        t = j->next++;
        pthread_mutex_unlock(&j->lock);
        if (t >= j->ntasks) break;
        j->fn(j->ctx, t, a->worker);
    }
    return NULL;
}

/* Runs fn(ctx, t, worker) for t in [0, ntasks) on up to `threads` threads (worker < threads). */
static void parallel_for(int threads, uint64_t ntasks, task_fn fn, void *ctx) {
    pool_job job;
    pthread_t tid[64];
    pool_arg args[64];
    int started = 0, i;
    if (threads > 64) threads = 64;
    if ((uint64_t)threads > ntasks) threads = (int)ntasks;
    if (threads <= 1) {
        uint64_t t;
        for (t = 0; t < ntasks; t++) fn(ctx, t, 0);
        return;
    }
    job.next = 0;
    job.ntasks = ntasks;
    job.fn = fn;
    job.ctx = ctx;
    pthread_mutex_init(&job.lock, NULL);
    for (i = 1; i < threads; i++) {
        args[i].job = &job;
        args[i].worker = i;
        if (pthread_create(&tid[i], NULL, pool_worker, &args[i]) != 0) break; /* fewer threads: still correct */
        started++;
    }
    args[0].job = &job;
    args[0].worker = 0;
    pool_worker(&args[0]);
    for (i = 1; i <= started; i++) pthread_join(tid[i], NULL);
    pthread_mutex_destroy(&job.lock);
}

/* --- values: the reconstruction formula and the conversions ---------------------------------------------- */
/* v32 (binary32 bits) -> decoded dtype -> out dtype (via binary32 when they differ), as bits */
static uint64_t convert_v32(uint32_t v, acqe_dtype decoded, acqe_dtype out) {
    uint32_t x;
    if (decoded == out) {
        switch (out) {
        case ACQE_DTYPE_F16: return acqe__f32_to_f16(v);
        case ACQE_DTYPE_BF16: return acqe__f32_to_bf16(v);
        case ACQE_DTYPE_F64: {
            double d;
            float f;
            uint64_t u;
            memcpy(&f, &v, 4);
            d = (double)f; /* exact */
            memcpy(&u, &d, 8);
            return u;
        }
        default: return v;
        }
    }
    switch (decoded) {
    case ACQE_DTYPE_F16: x = acqe__f16_to_f32(acqe__f32_to_f16(v)); break;
    case ACQE_DTYPE_BF16: x = (uint32_t)acqe__f32_to_bf16(v) << 16; break;
    default: x = v; break; /* F32, and F64 (the exact value of v, rounded back to v) */
    }
    switch (out) {
    case ACQE_DTYPE_F16: return acqe__f32_to_f16(x);
    case ACQE_DTYPE_BF16: return acqe__f32_to_bf16(x);
    default: return x;
    }
}

/* a RAW element (bits of `decoded`) -> out dtype, as numpy's casts do it (float64 via float32) */
static uint64_t convert_raw(uint64_t bits, acqe_dtype decoded, acqe_dtype out) {
    uint32_t x;
    switch (decoded) {
    case ACQE_DTYPE_F16: x = acqe__f16_to_f32((uint16_t)bits); break;
    case ACQE_DTYPE_BF16: x = (uint32_t)bits << 16; break;
    case ACQE_DTYPE_F64: x = acqe__f64_to_f32(bits); break;
    default: x = (uint32_t)bits; break;
    }
    switch (out) {
    case ACQE_DTYPE_F16: return acqe__f32_to_f16(x);
    case ACQE_DTYPE_BF16: return acqe__f32_to_bf16(x);
    default: return x;
    }
}

static uint32_t hw_mul(uint32_t a, uint32_t b) {
    float fa, fb, fc;
    uint32_t u;
    memcpy(&fa, &a, 4);
    memcpy(&fb, &b, 4);
    fc = fa * fb;
    memcpy(&u, &fc, 4);
    return u;
}

/* --- the decode job ------------------------------------------------------------------------------------------ */
enum { ST_OK = 0, ST_LEADING_ZERO, ST_NONCANONICAL, ST_WORDS_LEFT, ST_FINAL_STATE };

#define NSTREAMS 4
#define NO_FAIL UINT64_MAX

typedef struct job {
    const acqe_file *f;
    const acqe_tensor_info *t;
    const uint8_t *p;        /* payload */
    acqe_dtype out_dtype;    /* resolved */
    void *out;               /* NULL: validate only */
    size_t esize;            /* bytes per output element */
    /* codebook parts */
    uint32_t K;
    const uint8_t *codebook, *scales, *contexts;
    uint64_t rows, row_length, numel;
    int row_tables;          /* scales present: one value table per row */
    void *vt;                /* value table of the tensor (no scales) */
    void *vt_work;           /* per worker: NSTREAMS row tables */
    size_t vt_stride;        /* bytes of one row table */
    int threads;
    /* rANS */
    unsigned P;
    uint32_t T;
    uint64_t C, N;
    const uint8_t *freqs, *chunk_table, *words;
    uint64_t *word_start;    /* N + 1 */
    uint64_t *lut;           /* T << P entries: (f - 1) | bias << 24 | symbol << 48, or NULL */
    uint32_t *cum;           /* T x (K + 1) cumulative frequencies (no slot table) */
    void *symtab;            /* P <= 16: T << P slot -> symbol, u8 (K <= 256) or u16 */
    int sym16;
    uint64_t *info;          /* with symtab: T x K entries (f - 1) | cum << 16 | output bits << 32 */
    uint64_t group;          /* chunks per task */
    /* packed */
    unsigned bits;
    const uint8_t *packed;
    /* results (under lock) */
    pthread_mutex_t lock;
    uint64_t crc_fail, dec_fail;      /* lowest failing chunk / element, NO_FAIL if none */
    uint32_t crc_got;
    int dec_code;
    uint64_t dec_info;
    int nomem;
} job;

static void note_crc_fail(job *j, uint64_t c, uint32_t got) {
    pthread_mutex_lock(&j->lock);
    if (c < j->crc_fail) {
        j->crc_fail = c;
        j->crc_got = got;
    }
    pthread_mutex_unlock(&j->lock);
}

static void note_dec_fail(job *j, uint64_t c, int code, uint64_t info) {
    pthread_mutex_lock(&j->lock);
    if (c < j->dec_fail) {
        j->dec_fail = c;
        j->dec_code = code;
        j->dec_info = info;
    }
    pthread_mutex_unlock(&j->lock);
}

/* fills a value table: entry s = the output of codebook[s] (x row_scale[r] if scale != NULL) */
static void fill_vt(const job *j, void *vt, const uint8_t *scale) {
    uint32_t s, K = j->K;
    acqe_dtype dec = j->t->decoded_dtype, out = j->out_dtype;
    uint32_t sc = scale ? ld32(scale) : 0;
    for (s = 0; s < K; s++) {
        uint32_t v = ld32(j->codebook + 4 * (size_t)s);
        uint64_t o;
        if (scale) v = acqe__f32_mul(v, sc);
        o = convert_v32(v, dec, out);
        switch (j->esize) {
        case 2: ((uint16_t *)vt)[s] = (uint16_t)o; break;
        case 4: ((uint32_t *)vt)[s] = (uint32_t)o; break;
        default: ((uint64_t *)vt)[s] = o; break;
        }
    }
}

static void generic_kernel(job *j, uint64_t c0, uint64_t c1, int worker);

/* --- rANS kernels --------------------------------------------------------------------------------------------- */
typedef struct stream {
    uint64_t x, pos, end, i, seg_end, cend;
    const uint64_t *lut, *info;
    const void *sym;
    const void *vt;
    int bad, zero;
} stream;

static void stream_init(const job *j, stream *s, uint64_t c) {
    uint64_t b = j->word_start[c], e = j->word_start[c + 1];
    s->pos = b;
    s->end = e;
    s->x = 0;
    s->zero = 0;
    s->bad = 0;
    if (b < e) {
        uint32_t w0 = ld32(j->words + 4 * b);
        s->zero = w0 == 0;
        s->x = w0;
        s->pos = b + 1;
        if (b + 1 < e) {
            s->x = (s->x << 32) | ld32(j->words + 4 * (b + 1));
            s->pos = b + 2;
        }
    }
    s->i = c * j->C;
    s->cend = s->i + j->C < j->numel ? s->i + j->C : j->numel;
}

/* the segment of stream s starting at s->i: symbols up to the end of the row (or chunk) with one table */
static void stream_segment(const job *j, stream *s, void *rowvt) {
    uint64_t r = 0;
    int per_row = j->contexts || (j->row_tables && j->out);
    if (per_row) {
        r = s->i / j->row_length;
        s->seg_end = (r + 1) * j->row_length;
        if (s->seg_end > s->cend) s->seg_end = s->cend;
    } else {
        s->seg_end = s->cend;
    }
    if (j->symtab) {
        uint32_t t = j->contexts ? ld16(j->contexts + 2 * r) : 0;
        s->sym = (const uint8_t *)j->symtab + (((uint64_t)t << j->P) << j->sym16);
        s->info = j->info + (size_t)t * j->K;
        if (j->row_tables && j->out) { /* this row's values beside the table's frequencies */
            uint64_t *ri = (uint64_t *)rowvt;
            uint32_t k, sc = ld32(j->scales + 4 * r);
            for (k = 0; k < j->K; k++) {
                uint32_t v = acqe__f32_mul(ld32(j->codebook + 4 * (size_t)k), sc);
                uint64_t o = convert_v32(v, j->t->decoded_dtype, j->out_dtype);
                ri[k] = j->esize == 4 ? (s->info[k] & 0xFFFFFFFFu) | (o << 32)
                                      : (s->info[k] & UINT64_C(0xFFFFFFFFFFFF)) | (o << 48);
            }
            s->info = ri;
        }
        return;
    }
    if (j->lut) s->lut = j->lut + ((uint64_t)(j->contexts ? ld16(j->contexts + 2 * r) : 0) << j->P);
    if (j->out) {
        if (j->row_tables) {
            fill_vt(j, rowvt, j->scales + 4 * r);
            s->vt = rowvt;
        } else {
            s->vt = j->vt;
        }
    }
}

static int stream_status(const stream *s, uint64_t *info) {
    if (s->zero) return ST_LEADING_ZERO;
    if (s->bad) return ST_NONCANONICAL;
    if (s->pos != s->end) {
        *info = s->end - s->pos;
        return ST_WORDS_LEFT;
    }
    if (s->x != 0) {
        *info = s->x;
        return ST_FINAL_STATE;
    }
    return ST_OK;
}

/* The fast loops below do not test check 3 of spec section 13.6 (a word read from a state below
 * f * 2^(32-P)): the new state is below f * 2^(32-P) exactly when the state before the step was below 2^32,
 * which, with words left to read, only happens after a chunk's first word was 0 (check 2, tested in
 * stream_init). So a chunk that passes check 2 never fails check 3; generic_kernel still tests it literally.
 *
 * One step of a stream held in local variables (so that they live in registers), with slot table
 * entries; `k` is the symbol's position in its chunk. The word at END is readable (it is inside the file: a
 * payload ends before the 48-byte footer), so the refill is branchless. */
#define STEP(X, POS, END, LUT, VT, OUT, STORE)                                                         \
    do {                                                                                                    \
        uint64_t e_ = (LUT)[(X) & mask];                                                                    \
        uint64_t t_, y_;                                                                                    \
        STORE(OUT, VT, (e_ >> 48));                                                                         \
        (X) = ((X) >> P) * ((e_ & 0xFFFFFFu) + 1) + ((e_ >> 24) & 0xFFFFFFu);                               \
        t_ = (uint64_t)((X) < (UINT64_C(1) << 32)) & (uint64_t)((POS) < (END));                             \
        y_ = ((X) << 32) | ld32(words + 4 * (POS));                                                         \
        (X) ^= ((X) ^ y_) & (0 - t_);                                                                       \
        (POS) += t_;                                                                                        \
    } while (0)

#define STORE_NONE(OUT, VT, SYM) ((void)0)
#define STORE_VT(OUT, VT, SYM) ((OUT)[k] = (VT)[(SYM)])

/* decodes chunks [c0, c1) with the slot tables; records statuses */
#define DEFINE_LUT_KERNEL(NAME, OUT_T, STORE)                                                                \
    static void NAME(job *j, uint64_t c0, uint64_t c1, int worker) {                                        \
        const uint64_t mask = (UINT64_C(1) << j->P) - 1;                                                    \
        const unsigned P = j->P;                                                                            \
        const uint8_t *words = j->words;                                                                    \
        OUT_T *out = (OUT_T *)j->out;                                                                       \
        char *wvt = j->vt_work ? (char *)j->vt_work + (size_t)worker * NSTREAMS * j->vt_stride : NULL;      \
        uint64_t c = c0, n_full = j->numel / j->C, C = j->C;                                               \
        while (c + 4 <= c1 && c + 4 <= n_full) {                                                            \
            stream s[4];                                                                                    \
            int q;                                                                                          \
            for (q = 0; q < 4; q++) {                                                                       \
                stream_init(j, &s[q], c + (uint64_t)q);                                                     \
                stream_segment(j, &s[q], wvt ? wvt + (size_t)q * j->vt_stride : NULL);                      \
            }                                                                                               \
            {                                                                                               \
                uint64_t x0 = s[0].x, x1 = s[1].x, x2 = s[2].x, x3 = s[3].x;                                \
                uint64_t p0 = s[0].pos, p1 = s[1].pos, p2 = s[2].pos, p3 = s[3].pos;                        \
                const uint64_t e0 = s[0].end, e1 = s[1].end, e2 = s[2].end, e3 = s[3].end;                  \
                const uint64_t *l0 = s[0].lut, *l1 = s[1].lut, *l2 = s[2].lut, *l3 = s[3].lut;              \
                const OUT_T *v0 = (const OUT_T *)s[0].vt, *v1 = (const OUT_T *)s[1].vt;                     \
                const OUT_T *v2 = (const OUT_T *)s[2].vt, *v3 = (const OUT_T *)s[3].vt;                     \
                const uint64_t a0 = s[0].i, a1 = s[1].i, a2 = s[2].i, a3 = s[3].i;                          \
                OUT_T *o0 = out ? out + a0 : NULL, *o1 = out ? out + a1 : NULL;                             \
                OUT_T *o2 = out ? out + a2 : NULL, *o3 = out ? out + a3 : NULL;                             \
                uint64_t g0 = s[0].seg_end - a0, g1 = s[1].seg_end - a1;                                    \
                uint64_t g2 = s[2].seg_end - a2, g3 = s[3].seg_end - a3;                                    \
                uint64_t k = 0;                                                                             \
                (void)v0; (void)v1; (void)v2; (void)v3; (void)o0; (void)o1; (void)o2; (void)o3;             \
                while (k < C) {                                                                             \
                    uint64_t m = g0 < g1 ? g0 : g1, m2 = g2 < g3 ? g2 : g3;                                 \
                    if (m2 < m) m = m2;                                                                     \
                    for (; k < m; k++) {                                                                    \
                        STEP(x0, p0, e0, l0, v0, o0, STORE);                                            \
                        STEP(x1, p1, e1, l1, v1, o1, STORE);                                            \
                        STEP(x2, p2, e2, l2, v2, o2, STORE);                                            \
                        STEP(x3, p3, e3, l3, v3, o3, STORE);                                            \
                    }                                                                                       \
                    if (k >= C) break;                                                                      \
                    if (g0 == k) {                                                                          \
                        s[0].i = a0 + k;                                                                    \
                        stream_segment(j, &s[0], wvt);                                                      \
                        l0 = s[0].lut; v0 = (const OUT_T *)s[0].vt; g0 = s[0].seg_end - a0;                \
                    }                                                                                       \
                    if (g1 == k) {                                                                          \
                        s[1].i = a1 + k;                                                                    \
                        stream_segment(j, &s[1], wvt ? wvt + j->vt_stride : NULL);                          \
                        l1 = s[1].lut; v1 = (const OUT_T *)s[1].vt; g1 = s[1].seg_end - a1;                \
                    }                                                                                       \
                    if (g2 == k) {                                                                          \
                        s[2].i = a2 + k;                                                                    \
                        stream_segment(j, &s[2], wvt ? wvt + 2 * j->vt_stride : NULL);                      \
                        l2 = s[2].lut; v2 = (const OUT_T *)s[2].vt; g2 = s[2].seg_end - a2;                \
                    }                                                                                       \
                    if (g3 == k) {                                                                          \
                        s[3].i = a3 + k;                                                                    \
                        stream_segment(j, &s[3], wvt ? wvt + 3 * j->vt_stride : NULL);                      \
                        l3 = s[3].lut; v3 = (const OUT_T *)s[3].vt; g3 = s[3].seg_end - a3;                \
                    }                                                                                       \
                }                                                                                           \
                s[0].x = x0; s[1].x = x1; s[2].x = x2; s[3].x = x3;                                         \
                s[0].pos = p0; s[1].pos = p1; s[2].pos = p2; s[3].pos = p3;                                 \
            }                                                                                               \
            for (q = 0; q < 4; q++) {                                                                       \
                uint64_t info = 0;                                                                          \
                int st = stream_status(&s[q], &info);                                                       \
                if (st) note_dec_fail(j, c + (uint64_t)q, st, info);                                        \
            }                                                                                               \
            c += 4;                                                                                         \
        }                                                                                                   \
        for (; c < c1; c++) {                                                                               \
            stream s0;                                                                                      \
            uint64_t info = 0, x, p, e, a, k = 0;                                                           \
            int st;                                                                                         \
            stream_init(j, &s0, c);                                                                         \
            x = s0.x;                                                                                       \
            p = s0.pos;                                                                                     \
            e = s0.end;                                                                                     \
            a = s0.i;                                                                                       \
            while (a + k < s0.cend) {                                                                       \
                const uint64_t *l;                                                                          \
                const OUT_T *v;                                                                             \
                OUT_T *o = out ? out + a : NULL;                                                            \
                uint64_t g;                                                                                 \
                s0.i = a + k;                                                                               \
                stream_segment(j, &s0, wvt);                                                                \
                l = s0.lut;                                                                                 \
                v = (const OUT_T *)s0.vt;                                                                   \
                g = s0.seg_end - a;                                                                         \
                (void)v; (void)o;                                                                           \
                for (; k < g; k++) STEP(x, p, e, l, v, o, STORE);                                        \
            }                                                                                               \
            s0.x = x;                                                                                       \
            s0.pos = p;                                                                                     \
            st = stream_status(&s0, &info);                                                                 \
            if (st) note_dec_fail(j, c, st, info);                                                          \
        }                                                                                                   \
    }

/* P <= 16: slot -> symbol from a byte (or u16) table that stays in L1, then the symbol's entry
 * (f - 1) | cum << 16 | output << 32: one more L1 load, instead of an 8-byte entry per slot in L2 */
#define SSTEP(X, POS, END, SYMT, INFO, OUT, STORE)                                                           \
    do {                                                                                                    \
        uint64_t z_ = (X) & mask;                                                                           \
        uint64_t e_ = (INFO)[(SYMT)[z_]];                                                                   \
        uint64_t t_, y_;                                                                                    \
        STORE(OUT, VAL_OF(e_));                                                                             \
        (X) = ((X) >> P) * F_OF(e_) + z_ - CUM_OF(e_);                                                      \
        t_ = (uint64_t)((X) < (UINT64_C(1) << 32)) & (uint64_t)((POS) < (END));                             \
        y_ = ((X) << 32) | ld32(words + 4 * (POS));                                                         \
        (X) ^= ((X) ^ y_) & (0 - t_);  /* branchless: refills are too irregular to predict */             \
        (POS) += t_;                                                                                        \
    } while (0)

/* the symbol entries: 16-bit outputs (and none) as f | cum << 32 | value << 48 (f in the low 32 bits,
 * so extracting it is free); 32-bit outputs as (f - 1) | cum << 16 | value << 32 */
#define F16_OF(e) ((uint64_t)(uint32_t)(e))
#define CUM16_OF(e) (((e) >> 32) & 0xFFFFu)
#define VAL16_OF(e) ((e) >> 48)
#define F32_OF(e) (((e) & 0xFFFFu) + 1)
#define CUM32_OF(e) (((e) >> 16) & 0xFFFFu)
#define VAL32_OF(e) ((e) >> 32)

#define SSTORE_NONE(OUT, V) ((void)0)
#define SSTORE(OUT, V) ((OUT)[k] = (V))

#define DEFINE_SYM_KERNEL(NAME, SYM_T, OUT_T, STORE)                                                         \
    static void NAME(job *j, uint64_t c0, uint64_t c1, int worker) {                                        \
        const uint64_t mask = (UINT64_C(1) << j->P) - 1;                                                    \
        const unsigned P = j->P;                                                                            \
        const uint8_t *words = j->words;                                                                    \
        OUT_T *out = (OUT_T *)j->out;                                                                       \
        char *wvt = j->vt_work ? (char *)j->vt_work + (size_t)worker * NSTREAMS * j->vt_stride : NULL;      \
        uint64_t c = c0, n_full = j->numel / j->C, C = j->C;                                               \
        while (c + 4 <= c1 && c + 4 <= n_full) {                                                            \
            stream s[4];                                                                                    \
            int q;                                                                                          \
            for (q = 0; q < 4; q++) {                                                                       \
                stream_init(j, &s[q], c + (uint64_t)q);                                                     \
                stream_segment(j, &s[q], wvt ? wvt + (size_t)q * j->vt_stride : NULL);                      \
            }                                                                                               \
            {                                                                                               \
                uint64_t x0 = s[0].x, x1 = s[1].x, x2 = s[2].x, x3 = s[3].x;                                \
                uint64_t p0 = s[0].pos, p1 = s[1].pos, p2 = s[2].pos, p3 = s[3].pos;                        \
                const uint64_t e0 = s[0].end, e1 = s[1].end, e2 = s[2].end, e3 = s[3].end;                  \
                const SYM_T *y0 = (const SYM_T *)s[0].sym, *y1 = (const SYM_T *)s[1].sym;                   \
                const SYM_T *y2 = (const SYM_T *)s[2].sym, *y3 = (const SYM_T *)s[3].sym;                   \
                const uint64_t *n0 = s[0].info, *n1 = s[1].info, *n2 = s[2].info, *n3 = s[3].info;          \
                const uint64_t a0 = s[0].i;                                                                 \
                OUT_T *o0 = out ? out + a0 : NULL, *o1 = out ? out + a0 + C : NULL;                         \
                OUT_T *o2 = out ? out + a0 + 2 * C : NULL, *o3 = out ? out + a0 + 3 * C : NULL;             \
                uint64_t g0 = s[0].seg_end - a0, g1 = s[1].seg_end - a0 - C;                                \
                uint64_t g2 = s[2].seg_end - a0 - 2 * C, g3 = s[3].seg_end - a0 - 3 * C;                    \
                uint64_t k = 0;                                                                             \
                (void)o0; (void)o1; (void)o2; (void)o3;                                                     \
                while (k < C) {                                                                             \
                    uint64_t m = g0 < g1 ? g0 : g1, m2 = g2 < g3 ? g2 : g3;                                 \
                    if (m2 < m) m = m2;                                                                     \
                    for (; k < m; k++) {                                                                    \
                        SSTEP(x0, p0, e0, y0, n0, o0, STORE);                                               \
                        SSTEP(x1, p1, e1, y1, n1, o1, STORE);                                               \
                        SSTEP(x2, p2, e2, y2, n2, o2, STORE);                                               \
                        SSTEP(x3, p3, e3, y3, n3, o3, STORE);                                               \
                    }                                                                                       \
                    if (k >= C) break;                                                                      \
                    if (g0 == k) {                                                                          \
                        s[0].i = a0 + k;                                                                    \
                        stream_segment(j, &s[0], wvt);                                                      \
                        y0 = (const SYM_T *)s[0].sym; n0 = s[0].info; g0 = s[0].seg_end - a0;              \
                    }                                                                                       \
                    if (g1 == k) {                                                                          \
                        s[1].i = a0 + C + k;                                                                \
                        stream_segment(j, &s[1], wvt ? wvt + j->vt_stride : NULL);                          \
                        y1 = (const SYM_T *)s[1].sym; n1 = s[1].info; g1 = s[1].seg_end - a0 - C;          \
                    }                                                                                       \
                    if (g2 == k) {                                                                          \
                        s[2].i = a0 + 2 * C + k;                                                            \
                        stream_segment(j, &s[2], wvt ? wvt + 2 * j->vt_stride : NULL);                      \
                        y2 = (const SYM_T *)s[2].sym; n2 = s[2].info; g2 = s[2].seg_end - a0 - 2 * C;      \
                    }                                                                                       \
                    if (g3 == k) {                                                                          \
                        s[3].i = a0 + 3 * C + k;                                                            \
                        stream_segment(j, &s[3], wvt ? wvt + 3 * j->vt_stride : NULL);                      \
                        y3 = (const SYM_T *)s[3].sym; n3 = s[3].info; g3 = s[3].seg_end - a0 - 3 * C;      \
                    }                                                                                       \
                }                                                                                           \
                s[0].x = x0; s[1].x = x1; s[2].x = x2; s[3].x = x3;                                         \
                s[0].pos = p0; s[1].pos = p1; s[2].pos = p2; s[3].pos = p3;                                 \
            }                                                                                               \
            for (q = 0; q < 4; q++) {                                                                       \
                uint64_t info = 0;                                                                          \
                int st = stream_status(&s[q], &info);                                                       \
                if (st) note_dec_fail(j, c + (uint64_t)q, st, info);                                        \
            }                                                                                               \
            c += 4;                                                                                         \
        }                                                                                                   \
        for (; c < c1; c++) {                                                                               \
            stream s0;                                                                                      \
            uint64_t info = 0, x, p, e, a, k = 0;                                                           \
            int st;                                                                                         \
            stream_init(j, &s0, c);                                                                         \
            x = s0.x;                                                                                       \
            p = s0.pos;                                                                                     \
            e = s0.end;                                                                                     \
            a = s0.i;                                                                                       \
            while (a + k < s0.cend) {                                                                       \
                const SYM_T *y;                                                                             \
                const uint64_t *nf;                                                                         \
                OUT_T *o = out ? out + a : NULL;                                                            \
                uint64_t g;                                                                                 \
                s0.i = a + k;                                                                               \
                stream_segment(j, &s0, wvt);                                                                \
                y = (const SYM_T *)s0.sym;                                                                  \
                nf = s0.info;                                                                               \
                g = s0.seg_end - a;                                                                         \
                (void)o;                                                                                    \
                for (; k < g; k++) SSTEP(x, p, e, y, nf, o, STORE);                                         \
            }                                                                                               \
            s0.x = x;                                                                                       \
            s0.pos = p;                                                                                     \
            st = stream_status(&s0, &info);                                                                 \
            if (st) note_dec_fail(j, c, st, info);                                                          \
        }                                                                                                   \
    }

DEFINE_LUT_KERNEL(lut_kernel_none, uint8_t, STORE_NONE)
DEFINE_LUT_KERNEL(lut_kernel_16, uint16_t, STORE_VT)
DEFINE_LUT_KERNEL(lut_kernel_32, uint32_t, STORE_VT)
DEFINE_LUT_KERNEL(lut_kernel_64, uint64_t, STORE_VT)
#define F_OF F16_OF
#define CUM_OF CUM16_OF
#define VAL_OF VAL16_OF
DEFINE_SYM_KERNEL(sym8_kernel_none, uint8_t, uint8_t, SSTORE_NONE)
DEFINE_SYM_KERNEL(sym8_kernel_16, uint8_t, uint16_t, SSTORE)
DEFINE_SYM_KERNEL(sym16_kernel_none, uint16_t, uint8_t, SSTORE_NONE)
DEFINE_SYM_KERNEL(sym16_kernel_16, uint16_t, uint16_t, SSTORE)
#undef F_OF
#undef CUM_OF
#undef VAL_OF
#define F_OF F32_OF
#define CUM_OF CUM32_OF
#define VAL_OF VAL32_OF
DEFINE_SYM_KERNEL(sym8_kernel_32, uint8_t, uint32_t, SSTORE)
DEFINE_SYM_KERNEL(sym16_kernel_32, uint16_t, uint32_t, SSTORE)
#undef F_OF
#undef CUM_OF
#undef VAL_OF

static void store_value(job *j, uint64_t e, uint32_t sym, uint64_t r, const void *vt, int exact_fpu) {
    uint64_t o;
    if (vt) {
        switch (j->esize) {
        case 2: ((uint16_t *)j->out)[e] = ((const uint16_t *)vt)[sym]; return;
        case 4: ((uint32_t *)j->out)[e] = ((const uint32_t *)vt)[sym]; return;
        default: ((uint64_t *)j->out)[e] = ((const uint64_t *)vt)[sym]; return;
        }
    }
    {
        uint32_t cb = ld32(j->codebook + 4 * (size_t)sym), sc = ld32(j->scales + 4 * r);
        uint32_t v = exact_fpu ? hw_mul(cb, sc) : acqe__f32_mul(cb, sc);
        o = convert_v32(v, j->t->decoded_dtype, j->out_dtype);
    }
    switch (j->esize) {
    case 2: ((uint16_t *)j->out)[e] = (uint16_t)o; break;
    case 4: ((uint32_t *)j->out)[e] = (uint32_t)o; break;
    default: ((uint64_t *)j->out)[e] = o; break;
    }
}

/* Any parameters: slot table or binary search in the cumulative table; values from the tensor's table
 * or computed per element (row scales with rows shorter than the codebook). One chunk at a time. */
static void generic_kernel(job *j, uint64_t c0, uint64_t c1, int worker) {
    const uint64_t mask = (UINT64_C(1) << j->P) - 1;
    const unsigned P = j->P, csh = 32 - j->P;
    int exact = acqe__fpu_exact();
    uint64_t c;
    (void)worker;
    for (c = c0; c < c1; c++) {
        stream s;
        uint64_t info = 0;
        int st;
        stream_init(j, &s, c);
        while (s.i < s.cend) {
            uint64_t r = j->contexts || j->scales ? s.i / j->row_length : 0;
            uint64_t seg_end = j->contexts || j->scales ? (r + 1) * j->row_length : s.cend;
            uint32_t t = j->contexts ? ld16(j->contexts + 2 * r) : 0;
            const void *vt = j->row_tables ? NULL : j->vt;
            if (seg_end > s.cend) seg_end = s.cend;
            for (; s.i < seg_end; s.i++) {
                uint64_t z = s.x & mask, f, bias;
                uint32_t sym;
                if (j->lut) {
                    uint64_t e = j->lut[((uint64_t)t << P) | z];
                    f = (e & 0xFFFFFFu) + 1;
                    bias = (e >> 24) & 0xFFFFFFu;
                    sym = (uint32_t)(e >> 48);
                } else {
                    const uint32_t *cum = j->cum + (size_t)t * (j->K + 1);
                    uint32_t lo = 0, hi = j->K; /* the last symbol with cum <= z (it has f > 0) */
                    while (hi - lo > 1) {
                        uint32_t mid = (lo + hi) >> 1;
                        if (cum[mid] <= z) lo = mid;
                        else hi = mid;
                    }
                    sym = lo;
                    f = (uint64_t)cum[lo + 1] - cum[lo];
                    bias = z - cum[lo];
                }
                if (j->out) store_value(j, s.i, sym, r, vt, exact);
                s.x = (s.x >> P) * f + bias;
                if (s.x < (UINT64_C(1) << 32) && s.pos < s.end) {
                    if (s.x < (f << csh)) s.bad = 1;
                    s.x = (s.x << 32) | ld32(j->words + 4 * s.pos);
                    s.pos++;
                }
            }
        }
        st = stream_status(&s, &info);
        if (st) note_dec_fail(j, c, st, info);
    }
}

/* task = a group of chunks: CRC every chunk of the group, then decode those whose CRC passed, unless an
 * earlier failure already decides the result (the lowest CRC failure wins over any decode failure, the
 * lowest decode failure over higher ones) */
static void rans_task(void *ctx, uint64_t task, int worker) {
    job *j = (job *)ctx;
    uint64_t c0 = task * j->group, c1 = c0 + j->group, c;
    int decode = 1;
    if (c1 > j->N) c1 = j->N;
    for (c = c0; c < c1; c++) {
        uint64_t b = j->word_start[c], e = j->word_start[c + 1];
        uint32_t got = acqe__crc32(j->words + 4 * b, 4 * (e - b));
        if (got != ld32(j->chunk_table + 8 * c + 4)) {
            note_crc_fail(j, c, got);
            decode = 0;
        }
    }
    pthread_mutex_lock(&j->lock);
    if (j->crc_fail != NO_FAIL || j->dec_fail < c0) decode = 0;
    pthread_mutex_unlock(&j->lock);
    if (!decode) return;
    if (j->symtab && !(j->scales && j->out && !j->row_tables)) {
        switch ((j->out ? j->esize : 0) + 8 * j->sym16) {
        case 0: sym8_kernel_none(j, c0, c1, worker); break;
        case 2: sym8_kernel_16(j, c0, c1, worker); break;
        case 4: sym8_kernel_32(j, c0, c1, worker); break;
        case 8: sym16_kernel_none(j, c0, c1, worker); break;
        case 10: sym16_kernel_16(j, c0, c1, worker); break;
        default: sym16_kernel_32(j, c0, c1, worker); break;
        }
    } else if (j->lut && !(j->scales && j->out && !j->row_tables)) {
        switch (j->out ? j->esize : 0) {
        case 0: lut_kernel_none(j, c0, c1, worker); break;
        case 2: lut_kernel_16(j, c0, c1, worker); break;
        case 4: lut_kernel_32(j, c0, c1, worker); break;
        default: lut_kernel_64(j, c0, c1, worker); break;
        }
    } else {
        generic_kernel(j, c0, c1, worker);
    }
}

/* --- packed indices --------------------------------------------------------------------------------------------- */
#define PACKED_BLOCK (UINT64_C(1) << 18)

static void packed_task(void *ctx, uint64_t task, int worker) {
    job *j = (job *)ctx;
    uint64_t e0 = task * PACKED_BLOCK, e1 = e0 + PACKED_BLOCK, e;
    const uint32_t mask = (1u << j->bits) - 1, K = j->K;
    int exact = acqe__fpu_exact();
    char *rowvt = j->vt_work ? (char *)j->vt_work + (size_t)worker * NSTREAMS * j->vt_stride : NULL;
    uint64_t r = UINT64_MAX;
    const void *vt = j->row_tables ? NULL : j->vt;
    if (e1 > j->numel) e1 = j->numel;
    for (e = e0; e < e1; e++) {
        uint64_t bit = e * j->bits;
        const uint8_t *q = j->packed + (bit >> 3);
        uint32_t v = ((uint32_t)q[0] | ((uint32_t)q[1] << 8) | ((uint32_t)q[2] << 16)) >> (bit & 7);
        uint32_t idx = v & mask;
        /* q[1], q[2] may lie past the payload: still inside the file (the footer follows DATA) */
        if (idx >= K) {
            note_dec_fail(j, e, 0, idx);
            return;
        }
        if (j->out) {
            if (j->row_tables) {
                uint64_t rr = e / j->row_length;
                if (rr != r) {
                    r = rr;
                    fill_vt(j, rowvt, j->scales + 4 * r);
                    vt = rowvt;
                }
            } else if (j->scales) {
                r = e / j->row_length;
            }
            store_value(j, e, idx, r, vt, exact);
        }
    }
}

/* --- RAW ------------------------------------------------------------------------------------------------------------ */
static void raw_task(void *ctx, uint64_t task, int worker) {
    job *j = (job *)ctx;
    acqe_dtype dec = j->t->decoded_dtype, out = j->out_dtype;
    size_t in_size = acqe_dtype_size(dec);
    uint64_t e0 = task * PACKED_BLOCK, e1 = e0 + PACKED_BLOCK, e;
    (void)worker;
    if (e1 > j->numel) e1 = j->numel;
    if (dec == ACQE_DTYPE_BOOL) {
        for (e = e0; e < e1; e++)
            if (j->p[e] > 1) {
                note_dec_fail(j, e, 0, j->p[e]);
                return;
            }
    }
    if (!j->out) return;
    if (out == dec) {
        const uint8_t *src = j->p + e0 * in_size;
        uint8_t *dst = (uint8_t *)j->out + e0 * in_size;
        uint64_t n = e1 - e0;
        switch (in_size) {
        case 1: memcpy(dst, src, (size_t)n); break;
        case 2: for (e = 0; e < n; e++) ((uint16_t *)dst)[e] = ld16(src + 2 * e); break;
        case 4: for (e = 0; e < n; e++) ((uint32_t *)dst)[e] = ld32(src + 4 * e); break;
        default: for (e = 0; e < n; e++) ((uint64_t *)dst)[e] = ld64(src + 8 * e); break;
        }
        return;
    }
    for (e = e0; e < e1; e++) {
        uint64_t bits;
        switch (in_size) {
        case 2: bits = ld16(j->p + 2 * e); break;
        case 4: bits = ld32(j->p + 4 * e); break;
        default: bits = ld64(j->p + 8 * e); break;
        }
        bits = convert_raw(bits, dec, out);
        if (j->esize == 2) ((uint16_t *)j->out)[e] = (uint16_t)bits;
        else ((uint32_t *)j->out)[e] = (uint32_t)bits;
    }
}

/* --- the steps of "Decoding a tensor" -------------------------------------------------------------------------------- */
#define TNAME(j, q) acqe__quote((const uint8_t *)(j)->t->name, (j)->t->name_length, (q), sizeof(q))

static acqe_status check_finite(job *j, const uint8_t *a, uint64_t n, const char *what, acqe_error *err) {
    uint64_t i;
    for (i = 0; i < n; i++) {
        if ((ld32(a + 4 * i) & 0x7F800000u) == 0x7F800000u) {
            char q[QUOTE_CAP];
            return acqe__fail(err, ACQE_ERR_CODEC, "tensor %s: %s has a non-finite entry (%llu)", TNAME(j, q), what,
                              (unsigned long long)i);
        }
    }
    return ACQE_OK;
}

static acqe_status head_start(job *j, uint32_t reserved, acqe_error *err) {
    char q[QUOTE_CAP];
    if (reserved)
        return acqe__fail(err, ACQE_ERR_LAYOUT, "tensor %s: reserved head field is %u, must be 0", TNAME(j, q),
                          reserved);
    if (j->K < 1 || j->K > MAX_K)
        return acqe__fail(err, ACQE_ERR_LIMIT_EXCEEDED, "tensor %s: codebook size K=%u outside 1..65536",
                          TNAME(j, q), j->K);
    return ACQE_OK;
}

static acqe_status prepare_packed(job *j, acqe_error *err) {
    const uint8_t *p = j->p;
    const acqe_tensor_info *t = j->t;
    char q[QUOTE_CAP];
    unsigned smode = p[5];
    uint64_t want, nbits;
    acqe_status st;
    j->K = ld32(p);
    j->bits = p[4];
    if ((st = head_start(j, ld16(p + 6), err))) return st;
    if (j->bits < 1 || j->bits > 16)
        return acqe__fail(err, ACQE_ERR_CODEC, "tensor %s: index width %u bits outside 1..16", TNAME(j, q), j->bits);
    if ((uint64_t)j->K > (UINT64_C(1) << j->bits))
        return acqe__fail(err, ACQE_ERR_CODEC, "tensor %s: K=%u does not fit in %u-bit indices", TNAME(j, q), j->K,
                          j->bits);
    if (smode > 1) return acqe__fail(err, ACQE_ERR_CODEC, "tensor %s: unknown scale mode %u", TNAME(j, q), smode);
    nbits = t->numel * j->bits; /* numel <= 2^53, bits <= 16: fits */
    want = PACKED_HEAD + 4 * (uint64_t)j->K + (smode ? 4 * j->rows : 0) + (nbits + 7) / 8;
    if (want != t->payload_length)
        return acqe__fail(err, ACQE_ERR_LAYOUT, "tensor %s: CODEBOOK_PACKED payload is %llu bytes, its head implies %llu",
                          TNAME(j, q), (unsigned long long)t->payload_length, (unsigned long long)want);
    j->codebook = p + PACKED_HEAD;
    if ((st = check_finite(j, j->codebook, j->K, "codebook", err))) return st;
    j->scales = NULL;
    if (smode) {
        j->scales = j->codebook + 4 * (size_t)j->K;
        if ((st = check_finite(j, j->scales, j->rows, "row scales", err))) return st;
    }
    j->packed = j->codebook + 4 * (size_t)j->K + (smode ? 4 * j->rows : 0);
    if (nbits % 8 && (p[t->payload_length - 1] >> (nbits % 8)))
        return acqe__fail(err, ACQE_ERR_CODEC, "tensor %s: unused bits of the last index byte are not zero",
                          TNAME(j, q));
    return ACQE_OK;
}

static acqe_status prepare_rans(job *j, acqe_error *err) {
    const uint8_t *p = j->p;
    const acqe_tensor_info *t = j->t;
    char q[QUOTE_CAP];
    unsigned smode = p[5], cmode = p[6];
    uint64_t pos, head_len, words_total = 0, k;
    acqe_status st;
    uint32_t tt;
    j->K = ld32(p);
    j->P = p[4];
    j->T = ld32(p + 8);
    j->C = ld32(p + 12);
    if ((st = head_start(j, p[7], err))) return st;
    if (j->P < 1 || j->P > MAX_PRECISION)
        return acqe__fail(err, ACQE_ERR_CODEC, "tensor %s: precision %u outside 1..24", TNAME(j, q), j->P);
    if (smode > 1) return acqe__fail(err, ACQE_ERR_CODEC, "tensor %s: unknown scale mode %u", TNAME(j, q), smode);
    if (cmode > 1) return acqe__fail(err, ACQE_ERR_CODEC, "tensor %s: unknown context mode %u", TNAME(j, q), cmode);
    if (cmode == 0 && j->T != 1)
        return acqe__fail(err, ACQE_ERR_CODEC, "tensor %s: %u frequency tables without row contexts (must be 1)",
                          TNAME(j, q), j->T);
    if (j->T < 1 || j->T > MAX_TABLES)
        return acqe__fail(err, ACQE_ERR_LIMIT_EXCEEDED, "tensor %s: %u frequency tables (limit 65536)", TNAME(j, q), j->T);
    if (((uint64_t)j->T << j->P) > MAX_TABLE_SLOTS) /* 64-bit: T << P needs up to 40 bits */
        return acqe__fail(err, ACQE_ERR_LIMIT_EXCEEDED, "tensor %s: %u tables x 2^%u slots exceed 16777216",
                          TNAME(j, q), j->T, j->P);
    if (j->C < 1 || j->C > MAX_CHUNK_SYMBOLS)
        return acqe__fail(err, ACQE_ERR_LIMIT_EXCEEDED, "tensor %s: chunk size %llu outside 1..1048576", TNAME(j, q),
                          (unsigned long long)j->C);
    j->N = t->numel / j->C + (t->numel % j->C != 0);
    /* all terms are bounded (rows, N <= 2^53; T, K <= 2^16): no overflow below 2^58 */
    pos = RANS_HEAD + 4 * (uint64_t)j->K + (smode ? 4 * j->rows : 0) + (cmode ? 2 * j->rows : 0);
    head_len = ((pos + 3) & ~UINT64_C(3)) + 4 * (uint64_t)j->T * j->K + 8 * j->N;
    if (head_len != t->checked_length)
        return acqe__fail(err, ACQE_ERR_LAYOUT, "tensor %s: CODEBOOK_RANS head is %llu bytes, checked_length says %llu",
                          TNAME(j, q), (unsigned long long)head_len, (unsigned long long)t->checked_length);
    j->codebook = p + RANS_HEAD;
    if ((st = check_finite(j, j->codebook, j->K, "codebook", err))) return st;
    pos = RANS_HEAD + 4 * (uint64_t)j->K;
    j->scales = j->contexts = NULL;
    if (smode) {
        j->scales = p + pos;
        if ((st = check_finite(j, j->scales, j->rows, "row scales", err))) return st;
        pos += 4 * j->rows;
    }
    if (cmode) {
        uint32_t mx = 0;
        j->contexts = p + pos;
        for (k = 0; k < j->rows; k++)
            if (ld16(j->contexts + 2 * k) > mx) mx = ld16(j->contexts + 2 * k);
        if (j->rows && mx >= j->T)
            return acqe__fail(err, ACQE_ERR_CODEC, "tensor %s: row context %u >= %u tables", TNAME(j, q), mx, j->T);
        pos += 2 * j->rows;
    }
    for (; pos & 3; pos++)
        if (p[pos]) return acqe__fail(err, ACQE_ERR_LAYOUT, "tensor %s: non-zero padding after the row contexts", TNAME(j, q));
    j->freqs = p + pos;
    for (tt = 0; tt < j->T; tt++) {
        uint64_t sum = 0;
        const uint8_t *fr = j->freqs + 4 * (size_t)tt * j->K;
        for (k = 0; k < j->K; k++) sum += ld32(fr + 4 * k); /* 64-bit: K <= 2^16 u32 values cannot wrap */
        if (sum != (UINT64_C(1) << j->P))
            return acqe__fail(err, ACQE_ERR_CODEC, "tensor %s: frequency table %u sums to %llu, not 2^%u", TNAME(j, q),
                              tt, (unsigned long long)sum, j->P);
    }
    j->chunk_table = j->freqs + 4 * (size_t)j->T * j->K;
    {
        /* N can reach 2^61 in a (forged) file of 2^64 bytes, so even the 64-bit sum of the u32 counts may
         * wrap: add with a check */
        int wrapped = 0;
        uint64_t bytes, total;
        for (k = 0; k < j->N && !wrapped; k++) wrapped = add_ovf(words_total, ld32(j->chunk_table + 8 * k), &words_total);
        if (wrapped || mul_ovf(words_total, 4, &bytes) || add_ovf(t->checked_length, bytes, &total) ||
            total != t->payload_length) {
            char a[40];
            if (wrapped) snprintf(a, sizeof a, "more than 2^64");
            else if (mul_ovf(words_total, 4, &bytes)) snprintf(a, sizeof a, "4 x %llu", (unsigned long long)words_total);
            else snprintf(a, sizeof a, "%llu", (unsigned long long)bytes);
            return acqe__fail(err, ACQE_ERR_LAYOUT, "tensor %s: chunks hold %s bytes, payload has %llu after the head",
                              TNAME(j, q), a, (unsigned long long)(t->payload_length - t->checked_length));
        }
    }
    j->words = p + t->checked_length;
    return ACQE_OK;
}

/* the checks before any payload byte beyond the head is used: padding, CRC, codec head */
static acqe_status prepare(job *j, acqe_error *err) {
    const acqe_file *f = j->f;
    const acqe_tensor_info *t = j->t;
    char q[QUOTE_CAP];
    size_t idx = (size_t)(t - f->tensors);
    uint64_t end = t->payload_offset + t->payload_length; /* checked at open: inside DATA */
    uint64_t next = idx + 1 < f->ntensors ? f->tensors[idx + 1].payload_offset : f->data_end, k;
    uint32_t got;
    for (k = end; k < next; k++)
        if (f->data[k])
            return acqe__fail(err, ACQE_ERR_LAYOUT, "tensor %s: non-zero padding after its payload (bytes %llu..%llu)",
                              TNAME(j, q), (unsigned long long)end, (unsigned long long)next);
    j->p = f->data + t->payload_offset;
    got = acqe__crc32(j->p, t->checked_length);
    if (got != t->payload_crc32)
        return acqe__fail(err, ACQE_ERR_CHECKSUM_MISMATCH, "tensor %s: payload CRC-32 is %08x, directory says %08x",
                          TNAME(j, q), got, t->payload_crc32);
    j->numel = t->numel;
    j->rows = t->rank ? t->shape[0] : 1;
    j->row_length = t->numel ? t->numel / j->rows : 0;
    if (t->codec == ACQE_CODEC_CODEBOOK_PACKED) return prepare_packed(j, err);
    if (t->codec == ACQE_CODEC_CODEBOOK_RANS) return prepare_rans(j, err);
    return ACQE_OK;
}

static acqe_status nomem(acqe_error *err) { return acqe__fail(err, ACQE_ERR_NOMEM, "out of memory decoding a tensor"); }

/* value tables: the tensor's (no row scales) or per worker and stream (row scales on long rows) */
static acqe_status setup_values(job *j, int workers, acqe_error *err) {
    j->esize = acqe_dtype_size(j->out_dtype);
    j->vt_stride = (size_t)j->K * 8;
    j->row_tables = 0;
    if (!j->out || j->numel == 0) return ACQE_OK;
    if (j->scales) {
        if (j->row_length >= 2 * (uint64_t)j->K) j->row_tables = 1;
    } else {
        j->vt = malloc((size_t)j->K * 8);
        if (!j->vt) return nomem(err);
        fill_vt(j, j->vt, NULL);
    }
    j->vt_work = malloc((size_t)workers * NSTREAMS * j->vt_stride);
    if (!j->vt_work) return nomem(err);
    return ACQE_OK;
}

static acqe_status finish(job *j, acqe_error *err) {
    char q[QUOTE_CAP];
    const char *what = "";
    if (j->nomem) return nomem(err);
    if (j->crc_fail != NO_FAIL) {
        uint64_t c = j->crc_fail;
        return acqe__fail(err, ACQE_ERR_CHECKSUM_MISMATCH, "tensor %s: chunk %llu CRC-32 is %08x, chunk table says %08x",
                          TNAME(j, q), (unsigned long long)c, j->crc_got, ld32(j->chunk_table + 8 * c + 4));
    }
    if (j->dec_fail == NO_FAIL) return ACQE_OK;
    if (j->t->codec == ACQE_CODEC_RAW)
        return acqe__fail(err, ACQE_ERR_CODEC, "tensor %s: bool element %llu is %llu, must be 0 or 1", TNAME(j, q),
                          (unsigned long long)j->dec_fail, (unsigned long long)j->dec_info);
    if (j->t->codec == ACQE_CODEC_CODEBOOK_PACKED)
        return acqe__fail(err, ACQE_ERR_CODEC, "tensor %s: index %llu at element %llu is outside the codebook (K=%u)",
                          TNAME(j, q), (unsigned long long)j->dec_info, (unsigned long long)j->dec_fail, j->K);
    switch (j->dec_code) {
    case ST_LEADING_ZERO: what = "first word is 0 (a valid stream never starts with a zero word)"; break;
    case ST_NONCANONICAL: what = "a word is read from a state below f * 2**(32-P) (not a canonical stream)"; break;
    case ST_WORDS_LEFT: what = "words left unread after its last symbol"; break;
    default: what = "final state is not the initial state 0"; break;
    }
    if (j->dec_code == ST_WORDS_LEFT)
        return acqe__fail(err, ACQE_ERR_CODEC, "tensor %s: rANS chunk %llu of %llu: %llu %s", TNAME(j, q),
                          (unsigned long long)j->dec_fail, (unsigned long long)j->N, (unsigned long long)j->dec_info, what);
    if (j->dec_code == ST_FINAL_STATE)
        return acqe__fail(err, ACQE_ERR_CODEC, "tensor %s: rANS chunk %llu of %llu: final state 0x%llx is not the initial state 0",
                          TNAME(j, q), (unsigned long long)j->dec_fail, (unsigned long long)j->N,
                          (unsigned long long)j->dec_info);
    return acqe__fail(err, ACQE_ERR_CODEC, "tensor %s: rANS chunk %llu of %llu: %s", TNAME(j, q),
                      (unsigned long long)j->dec_fail, (unsigned long long)j->N, what);
}

/* the slot tables (or cumulative tables) of all T frequency tables */
static acqe_status setup_rans(job *j, acqe_error *err) {
    uint64_t slots = (uint64_t)j->T << j->P, k;
    uint64_t budget = 4 * j->t->payload_length;
    uint32_t tt, s;
    if (budget < (UINT64_C(1) << 18)) budget = UINT64_C(1) << 18;
    j->word_start = (uint64_t *)malloc((size_t)(j->N + 1) * sizeof(uint64_t)); /* N <= payload / 8 */
    if (!j->word_start) return nomem(err);
    j->word_start[0] = 0;
    for (k = 0; k < j->N; k++) j->word_start[k + 1] = j->word_start[k] + ld32(j->chunk_table + 8 * k);
    /* the fast kernels need no per-element values (row scales on rows shorter than 2K go elsewhere) */
    int fast = !(j->scales && j->out && !j->row_tables);
    if (fast && j->P <= 16 && (!j->out || j->esize == 2 || j->esize == 4) && (slots << (j->K > 256)) <= budget) {
        j->sym16 = j->K > 256;
        j->symtab = malloc((size_t)slots << j->sym16);
        j->info = (uint64_t *)malloc((size_t)j->T * j->K * sizeof(uint64_t)); /* 2x the file's tables */
        if (!j->symtab || !j->info) return nomem(err);
        for (tt = 0; tt < j->T; tt++) {
            uint8_t *y8 = (uint8_t *)j->symtab + ((uint64_t)tt << j->P);
            uint16_t *y16 = (uint16_t *)j->symtab + ((uint64_t)tt << j->P);
            const uint8_t *fr = j->freqs + 4 * (size_t)tt * j->K;
            uint64_t *nf = j->info + (size_t)tt * j->K;
            uint64_t c = 0;
            for (s = 0; s < j->K; s++) {
                uint64_t f = ld32(fr + 4 * (size_t)s), z, v = 0;
                if (j->out && j->vt) v = j->esize == 2 ? ((const uint16_t *)j->vt)[s] : ((const uint32_t *)j->vt)[s];
                /* (a symbol with f = 0 may have c = 2^16; its entry is never read: no slot maps to it) */
                if (j->out && j->esize == 4) nf[s] = (f ? f - 1 : 0) | ((c & 0xFFFFu) << 16) | (v << 32);
                else nf[s] = f | ((c & 0xFFFFu) << 32) | (v << 48);
                if (j->sym16) for (z = 0; z < f; z++) y16[c + z] = (uint16_t)s;
                else for (z = 0; z < f; z++) y8[c + z] = (uint8_t)s;
                c += f;
            }
        }
    } else if (slots <= budget) {
        j->lut = (uint64_t *)malloc((size_t)slots * sizeof(uint64_t));
        if (!j->lut) return nomem(err);
        for (tt = 0; tt < j->T; tt++) {
            uint64_t *l = j->lut + ((uint64_t)tt << j->P);
            const uint8_t *fr = j->freqs + 4 * (size_t)tt * j->K;
            uint64_t c = 0;
            for (s = 0; s < j->K; s++) {
                uint64_t f = ld32(fr + 4 * (size_t)s), z;
                for (z = 0; z < f; z++) l[c + z] = (f - 1) | (z << 24) | ((uint64_t)s << 48);
                c += f;
            }
        }
    } else {
        j->cum = (uint32_t *)malloc((size_t)j->T * (j->K + 1) * sizeof(uint32_t)); /* = the file's tables + T */
        if (!j->cum) return nomem(err);
        for (tt = 0; tt < j->T; tt++) {
            uint32_t *cu = j->cum + (size_t)tt * (j->K + 1);
            const uint8_t *fr = j->freqs + 4 * (size_t)tt * j->K;
            cu[0] = 0;
            for (s = 0; s < j->K; s++) cu[s + 1] = cu[s] + ld32(fr + 4 * (size_t)s); /* sums to 2^P: no wrap */
        }
    }
    return ACQE_OK;
}

acqe_status acqe__decode_tensor(const acqe_file *f, size_t index, acqe_dtype out_dtype, void *out, int threads,
                                acqe_error *err) {
    job j;
    acqe_status st;
    uint64_t ntasks = 0;
    task_fn fn = NULL;
    memset(&j, 0, sizeof j);
    j.f = f;
    j.t = &f->tensors[index];
    j.out_dtype = out_dtype;
    j.out = out;
    j.crc_fail = j.dec_fail = NO_FAIL;
    j.threads = threads < 1 ? 1 : (threads > 64 ? 64 : threads);
    if ((st = prepare(&j, err))) return st;
    if (out == NULL && f->max_decoded != UINT64_MAX) {
        /* verify: the file's faults first (above), then the limit on the work */
        uint64_t bytes = j.numel * acqe_dtype_size(j.t->decoded_dtype);
        if (bytes > f->max_decoded) {
            char q[QUOTE_CAP];
            return acqe__fail(err, ACQE_ERR_DECODE_LIMIT,
                              "tensor %s decodes to %llu bytes, above the limit of %llu decoded bytes", TNAME(&j, q),
                              (unsigned long long)bytes, (unsigned long long)f->max_decoded);
        }
    }
    pthread_mutex_init(&j.lock, NULL);
    if (j.t->codec == ACQE_CODEC_RAW) {
        j.esize = acqe_dtype_size(out_dtype);
        ntasks = (j.numel + PACKED_BLOCK - 1) / PACKED_BLOCK;
        fn = raw_task;
    } else {
        if ((st = setup_values(&j, j.threads, err))) goto done;
        if (j.t->codec == ACQE_CODEC_CODEBOOK_PACKED) {
            ntasks = (j.numel + PACKED_BLOCK - 1) / PACKED_BLOCK;
            fn = packed_task;
        } else {
            uint64_t per;
            if ((st = setup_rans(&j, err))) goto done;
            if (j.numel < (UINT64_C(1) << 16)) j.threads = 1;
            /* tasks of whole groups of NSTREAMS chunks, about 16 per thread */
            per = (j.N + 16 * (uint64_t)j.threads - 1) / (16 * (uint64_t)j.threads);
            j.group = NSTREAMS * ((per + NSTREAMS - 1) / NSTREAMS);
            if (j.group == 0) j.group = NSTREAMS;
            ntasks = (j.N + j.group - 1) / j.group;
            fn = rans_task;
        }
    }
    if (j.numel < (UINT64_C(1) << 16) && fn != rans_task) j.threads = 1;
    parallel_for(j.threads, ntasks, fn, &j);
    st = finish(&j, err);
done:
    pthread_mutex_destroy(&j.lock);
    free(j.vt);
    free(j.vt_work);
    free(j.word_start);
    free(j.lut);
    free(j.cum);
    free(j.symtab);
    free(j.info);
    return st;
}
