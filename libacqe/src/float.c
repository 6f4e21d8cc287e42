/* Bit-exact float conversions and the binary32 multiply of spec section 10.2, in integer arithmetic.
 *
 * They give IEEE 754 results (round to nearest, ties to even; subnormals kept) whatever the FPU's
 * rounding mode or flush-to-zero/denormals-are-zero settings, which a host process may have changed (a
 * library built with -ffast-math can turn on FTZ/DAZ for the whole process at load time).
 *
 * NaN (only RAW tensors hold NaNs; codebook values are always finite or infinite): the sign is kept;
 * float32 -> float16 keeps the top 10 payload bits and never turns a NaN into an infinity (payload 0
 * becomes 1), without touching the quiet bit, as numpy's float32 -> float16 cast does; float64 -> float32
 * and float32 -> bfloat16 set the quiet bit and keep the top payload bits, as numpy (the hardware) does.
 */
#include "internal.h"

uint16_t acqe__f32_to_f16(uint32_t u) {
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t a = u & 0x7FFFFFFFu;
    if (a >= 0x7F800000u) {
        uint32_t m = (a & 0x7FFFFFu) >> 13;
        if (a == 0x7F800000u) return (uint16_t)(sign | 0x7C00u);
        return (uint16_t)(sign | 0x7C00u | (m ? m : 1u));
    }
    if (a >= 0x477FF000u) return (uint16_t)(sign | 0x7C00u);    /* >= 65520 rounds to infinity */
    if (a >= 0x38800000u) {                                     /* >= 2^-14: a normal half */
        a -= 0x38000000u;                                       /* rebias the exponent: 127 - 15 */
        return (uint16_t)(sign | ((a + 0x0FFFu + ((a >> 13) & 1u)) >> 13));
    }
    if (a < 0x33000000u) return (uint16_t)sign;                 /* <= 2^-25 rounds to zero */
    {
        uint32_t e = a >> 23;                                   /* 102 .. 112: a subnormal half */
        uint32_t m = (a & 0x7FFFFFu) | 0x800000u;
        uint32_t s = 126u - e;                                  /* value / 2^-24 = m >> s */
        uint32_t q = m >> s, rem = m & ((1u << s) - 1u), half = 1u << (s - 1u);
        if (rem > half || (rem == half && (q & 1u))) q++;
        return (uint16_t)(sign | q);
    }
}

uint16_t acqe__f32_to_bf16(uint32_t b) {
    if ((b & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((b >> 16) | 0x40u);
    return (uint16_t)((b + 0x7FFFu + ((b >> 16) & 1u)) >> 16);
}

uint32_t acqe__f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1Fu, m = h & 0x3FFu;
    if (e == 0x1F) return sign | 0x7F800000u | (m << 13);
    if (e == 0) {
        uint32_t sh = 0;
        if (m == 0) return sign;
        while (!(m & 0x400u)) { /* normalise the subnormal */
            m <<= 1;
            sh++;
        }
        return sign | ((113u - sh) << 23) | ((m & 0x3FFu) << 13);
    }
    return sign | ((e + 112u) << 23) | (m << 13);
}

/* round (q >> s) to nearest, ties to even; 0 < s < 64 */
static uint64_t rne_shift(uint64_t q, unsigned s) {
    uint64_t r = q >> s, rem = q & ((UINT64_C(1) << s) - 1), half = UINT64_C(1) << (s - 1);
    if (rem > half || (rem == half && (r & 1))) r++;
    return r;
}

uint32_t acqe__f64_to_f32(uint64_t d) {
    uint32_t sign = (uint32_t)(d >> 32) & 0x80000000u;
    uint64_t a = d & UINT64_C(0x7FFFFFFFFFFFFFFF);
    int e = (int)(a >> 52);
    uint64_t m = a & ((UINT64_C(1) << 52) - 1);
    if (e == 0x7FF) {
        if (m == 0) return sign | 0x7F800000u;
        return sign | 0x7FC00000u | (uint32_t)(m >> 29);
    }
    if (e - 896 >= 255) return sign | 0x7F800000u;             /* too large for binary32 */
    if (e > 896) {                                             /* a normal float (or rounds up to inf) */
        uint64_t q = ((uint64_t)(e - 896) << 52) | m;
        return sign | (uint32_t)rne_shift(q, 29);              /* a carry moves into the exponent */
    }
    {                                                          /* subnormal float or zero */
        uint64_t mm = e ? (m | (UINT64_C(1) << 52)) : m;
        unsigned s = (unsigned)(926 - (e ? e : 1));           /* value / 2^-149 = mm >> s */
        if (s >= 60) return sign;                             /* below 2^-150: rounds to 0 */
        return sign | (uint32_t)rne_shift(mm, s);
    }
}

uint32_t acqe__f32_mul(uint32_t a, uint32_t b) {
    uint32_t sign = (a ^ b) & 0x80000000u;
    int ea = (int)((a >> 23) & 0xFF), eb = (int)((b >> 23) & 0xFF);
    uint64_t ma = a & 0x7FFFFFu, mb = b & 0x7FFFFFu, p, q;
    int len, E;
    if (ea == 0xFF || eb == 0xFF) { /* not reached for codebook values (finite); kept total anyway */
        if ((ea == 0xFF && ma) || (eb == 0xFF && mb)) return 0x7FC00000u;
        if ((ea == 0 && ma == 0) || (eb == 0 && mb == 0)) return 0x7FC00000u;
        return sign | 0x7F800000u;
    }
    if (ea == 0) {
        if (ma == 0) return sign;
        ea = 1;
        while (!(ma & 0x800000u)) {
            ma <<= 1;
            ea--;
        }
    } else {
        ma |= 0x800000u;
    }
    if (eb == 0) {
        if (mb == 0) return sign;
        eb = 1;
        while (!(mb & 0x800000u)) {
            mb <<= 1;
            eb--;
        }
    } else {
        mb |= 0x800000u;
    }
    p = ma * mb;                                  /* value = p * 2^(ea + eb - 300), 2^46 <= p < 2^48 */
    len = (p >> 47) ? 48 : 47;
    E = len - 1 + ea + eb - 173;                  /* biased exponent of the result */
    if (E >= 1) {
        q = rne_shift(p, (unsigned)(len - 24));
        if (q == (UINT64_C(1) << 24)) {
            q >>= 1;
            E++;
        }
        if (E >= 255) return sign | 0x7F800000u;
        return sign | ((uint32_t)E << 23) | ((uint32_t)q & 0x7FFFFFu);
    }
    {
        int s = 151 - ea - eb;                    /* value / 2^-149 = p >> s */
        if (s >= 50) return sign;                 /* p < 2^48 <= half: rounds to 0 */
        return sign | (uint32_t)rne_shift(p, (unsigned)s); /* may round up to the smallest normal */
    }
}

static uint32_t fbits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

int acqe__fpu_exact(void) {
    /* subnormal result (FTZ), subnormal operand (DAZ), and the rounding mode both ways */
    static const uint32_t probes[4][2] = {{0x0DA24260u, 0x2EDBE6FFu},  /* 1e-30 * 1e-10 */
                                          {0x000116C2u, 0x3FC00000u},  /* 1e-40 * 1.5 */
                                          {0x3F800001u, 0x3F800001u},  /* (1 + 2^-23)^2 */
                                          {0xBF800001u, 0x3F800003u}};
    int i;
    for (i = 0; i < 4; i++) {
        volatile float x, y, z;
        uint32_t ux = probes[i][0], uy = probes[i][1];
        float fx, fy;
        memcpy(&fx, &ux, 4);
        memcpy(&fy, &uy, 4);
        x = fx;
        y = fy;
        z = x * y;
        if (fbits(z) != acqe__f32_mul(ux, uy)) return 0;
    }
    return 1;
}
