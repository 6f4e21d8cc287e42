/* Unit tests of the pieces: CRC-32 and SHA-256 check values, the float conversions and the binary32
 * multiply against the hardware (when the FPU is in its IEEE default mode), the strict JSON rules. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../acqe.h"
#include "../src/internal.h"

static int failures = 0;
#define CHECK(c, ...)                                                                                                \
    do {                                                                                                             \
        if (!(c)) {                                                                                                  \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                                     \
            fprintf(stderr, __VA_ARGS__);                                                                            \
            fputc('\n', stderr);                                                                                     \
            failures++;                                                                                              \
        }                                                                                                            \
    } while (0)

static uint64_t rng = 0x9E3779B97F4A7C15u;
static uint64_t next(void) { /* splitmix64 */
    uint64_t z = (rng += 0x9E3779B97F4A7C15u);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    return z ^ (z >> 31);
}

static uint32_t fb(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static float bf(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void test_checksums(void) {
    static const char abc[] = "abc";
    static const uint8_t want[32] = {0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40,
                                     0xde, 0x5d, 0xae, 0x22, 0x23, 0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17,
                                     0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad};
    static const uint8_t want_long[32] = {0x24, 0x8d, 0x6a, 0x61, 0xd2, 0x06, 0x38, 0xb8, 0xe5, 0xc0, 0x26,
                                          0x93, 0x0c, 0x3e, 0x60, 0x39, 0xa3, 0x3c, 0xe4, 0x59, 0x64, 0xff,
                                          0x21, 0x67, 0xf6, 0xec, 0xed, 0xd4, 0x19, 0xdb, 0x06, 0xc1};
    const char *msg = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    acqe_sha256 s;
    uint8_t d[32];
    size_t i;
    CHECK(acqe__crc32((const uint8_t *)"123456789", 9) == 0xCBF43926u, "crc32 check value");
    CHECK(acqe__crc32(NULL, 0) == 0, "crc32 of nothing");
    acqe__sha256_init(&s);
    acqe__sha256_update(&s, (const uint8_t *)abc, 3);
    acqe__sha256_final(&s, d);
    CHECK(!memcmp(d, want, 32), "sha256(abc)");
    acqe__sha256_init(&s); /* byte by byte: the buffering */
    for (i = 0; i < strlen(msg); i++) acqe__sha256_update(&s, (const uint8_t *)msg + i, 1);
    acqe__sha256_final(&s, d);
    CHECK(!memcmp(d, want_long, 32), "sha256 of the 448-bit message");
}

static void test_floats(void) {
    int exact = acqe__fpu_exact();
    uint64_t i;
    CHECK(exact, "the FPU is not in IEEE mode in a plain test process");
    /* multiply: random finite operands, and operands near the subnormal and overflow edges */
    for (i = 0; i < 2000000 && exact; i++) {
        uint32_t a = (uint32_t)next(), b = (uint32_t)next();
        if (i % 4 == 1) b = (b & 0x807FFFFFu) | ((uint32_t)(127 - (int)((a >> 23) & 0xFF) + 127 - 20 + (int)(next() % 40)) & 0xFF) << 23;
        if ((a & 0x7F800000u) == 0x7F800000u || (b & 0x7F800000u) == 0x7F800000u) continue;
        {
            uint32_t hw = fb(bf(a) * bf(b)), sw = acqe__f32_mul(a, b);
            CHECK(hw == sw, "mul %08x * %08x: hw %08x soft %08x", a, b, hw, sw);
            if (hw != sw) break;
        }
    }
    /* float64 -> float32 against the hardware cast (non-NaN) */
    for (i = 0; i < 2000000 && exact; i++) {
        uint64_t u = next();
        double d;
        if (i % 2) u = (u & 0x800FFFFFFFFFFFFFull) | ((uint64_t)(1023 - 160 + next() % 320) << 52);
        memcpy(&d, &u, 8);
        if (isnan(d)) continue;
        {
            uint32_t hw = fb((float)d), sw = acqe__f64_to_f32(u);
            CHECK(hw == sw, "f64 %016llx -> f32: hw %08x soft %08x", (unsigned long long)u, hw, sw);
            if (hw != sw) break;
        }
    }
    /* float32 -> float16: every binary32 value against the compiler's _Float16 conversion where it exists */
#if defined(__FLT16_MAX__) && !defined(__clang__)
    __extension__ typedef _Float16 half_t;
    {
        uint64_t bad = 0;
        uint64_t step = getenv("ACQE_EXHAUSTIVE") ? 1 : 211; /* every pattern: ACQE_EXHAUSTIVE=1 (minutes) */
        for (i = 0; i <= 0xFFFFFFFFu; i += step) {
            uint32_t u = (uint32_t)i;
            if ((u & 0x7FFFFFFFu) > 0x7F800000u) continue;
            {
                half_t h = (half_t)bf(u);
                uint16_t hb;
                memcpy(&hb, &h, 2);
                if (hb != acqe__f32_to_f16(u) && bad++ < 5) CHECK(0, "f32 %08x -> f16: %04x vs %04x", u, hb, acqe__f32_to_f16(u));
            }
        }
    }
#endif
    /* float16 -> float32 is exact: round trip of every half */
    for (i = 0; i < 65536; i++) {
        uint16_t h = (uint16_t)i;
        uint32_t f = acqe__f16_to_f32(h);
        CHECK(acqe__f32_to_f16(f) == h, "f16 %04x round trip", h);
    }
    CHECK(acqe__f32_to_f16(0x477FF000u) == 0x7C00u, "65520 -> inf");
    CHECK(acqe__f32_to_f16(0x477FEFFFu) == 0x7BFFu, "below 65520 -> max");
    CHECK(acqe__f32_to_f16(0x33000000u) == 0x0000u, "2^-25 -> 0");
    CHECK(acqe__f32_to_f16(0x33000001u) == 0x0001u, "above 2^-25 -> 2^-24");
    CHECK(acqe__f32_to_f16(0x7F800001u) == 0x7C01u, "sNaN keeps being a NaN");
    CHECK(acqe__f32_to_bf16(0x7F800001u) == 0x7FC0u, "bf16 NaN quieted");
    CHECK(acqe__f32_to_bf16(0x3F808000u) == 0x3F80u, "bf16 tie to even (down)");
    CHECK(acqe__f32_to_bf16(0x3F818000u) == 0x3F82u, "bf16 tie to even (up)");
    CHECK(acqe__f32_to_bf16(0x7F7FFFFFu) == 0x7F80u, "bf16 max float rounds to inf");
    CHECK(acqe__f64_to_f32(0x7FF0000000000001ull) == 0x7FC00000u, "f64 sNaN quieted");
}

static void test_json(void) {
    static const struct {
        const char *text;
        int ok;
    } cases[] = {
        {"{}", 1}, {" {} ", 1}, {"{\"a\":1}", 1}, {"[]", 0}, {"1", 0}, {"", 0}, {"{} {}", 0}, {"{\"a\":1,}", 0},
        {"{\"a\":1,\"a\":2}", 0}, {"{\"a\":1,\"\\u0061\":2}", 0}, {"{\"a\":{\"b\":1},\"b\":{\"b\":2}}", 1},
        {"{\"x\":[{\"a\":1},{\"a\":1}]}", 1}, {"{\"a\":NaN}", 0}, {"{\"a\":Infinity}", 0}, {"{\"a\":-Infinity}", 0},
        {"{\"a\":1e999}", 0}, {"{\"a\":-1e999}", 0}, {"{\"a\":1e-999}", 1}, {"{\"a\":1.7976931348623157e308}", 1},
        {"{\"a\":1.7976931348623158e308}", 1}, {"{\"a\":1.7976931348623159e308}", 0},
        {"{\"a\":179769313486231580793728971405303415079934132710037826936173778980444968292764750946649017977587207096330286416692887910946555547851940402630657488671505820681908902000708383676273854845817711531764475730270069855571366959622842914819860834936475292719074168444365510704342711559699508093042880177904174497791.0}", 1},
        {"{\"a\":179769313486231580793728971405303415079934132710037826936173778980444968292764750946649017977587207096330286416692887910946555547851940402630657488671505820681908902000708383676273854845817711531764475730270069855571366959622842914819860834936475292719074168444365510704342711559699508093042880177904174497792.0}", 0},
        {"{\"a\":0.000000000000000000000000000001e330}", 1}, {"{\"a\":0.000000000000000000000000000001e340}", 0}, {"{\"a\":0.0000001e316}", 0},
        {"{\"a\":18446744073709551615}", 1}, {"{\"a\":18446744073709551616}", 0}, {"{\"a\":-9223372036854775808}", 1},
        {"{\"a\":-9223372036854775809}", 0}, {"{\"a\":-0}", 1}, {"{\"a\":01}", 0}, {"{\"a\":1.}", 0}, {"{\"a\":.5}", 0},
        {"{\"a\":-}", 0}, {"{\"a\":1e}", 0}, {"{\"a\":1E+2}", 1}, {"{\"a\":\"\\ud800\"}", 0},
        {"{\"a\":\"\\udc00\"}", 0}, {"{\"a\":\"\\ud800\\udc00\"}", 1}, {"{\"a\":\"\\ud800\\u0041\"}", 0},
        {"{\"\\ud800\":1}", 0}, {"{\"a\":\"\t\"}", 0}, {"{\"a\":\"\\x\"}", 0}, {"{\"a\":\"\\u00e9\",\"\xc3\xa9\":1}", 1},
        {"{\"\\u00e9\":0,\"\xc3\xa9\":1}", 0}, {"\xef\xbb\xbf{}", 0}, {"{\"a\":\"\xff\"}", 0},
        {"{\"a\":\"\xed\xa0\x80\"}", 0}, {"{\"a\":\"\xc0\xaf\"}", 0}, {"{\"a\":true,\"b\":false,\"c\":null}", 1},
        {"{\"a\":tru}", 0}, {"{\"a\" 1}", 0}, {"{\"a\":1\n}", 1}, {"{\"a\":\"\x7f\"}", 1},
    };
    size_t i;
    char deep[300];
    for (i = 0; i < sizeof cases / sizeof *cases; i++) {
        const char *t = cases[i].text;
        size_t n = strlen(t);
        acqe_error e;
        acqe_status st = acqe__check_metadata((const uint8_t *)t, n, &e);
        CHECK((st == ACQE_OK) == cases[i].ok, "json case %zu %s: %s", i, t, st ? e.message : "accepted");
        if (st) CHECK(st == ACQE_ERR_METADATA, "json case %zu category", i);
    }
    {
        acqe_error e;
        CHECK(acqe__check_metadata((const uint8_t *)"{}\0", 3, &e) == ACQE_ERR_METADATA, "NUL after the object");
    }
    /* depth: the top-level object counts; 64 open at once is fine, 65 is not */
    {
        int d;
        for (d = 63; d <= 64; d++) {
            size_t o = 0;
            int k;
            acqe_error e;
            o += (size_t)sprintf(deep, "{\"a\":");
            for (k = 0; k < d; k++) deep[o++] = '[';
            for (k = 0; k < d; k++) deep[o++] = ']';
            deep[o++] = '}';
            deep[o] = 0;
            CHECK((acqe__check_metadata((const uint8_t *)deep, o, &e) == ACQE_OK) == (d == 63), "depth %d", d + 1);
        }
    }
}

static void test_names(void) {
    CHECK(acqe__has_control((const uint8_t *)"a\tb", 3), "TAB");
    CHECK(acqe__has_control((const uint8_t *)"a\x7f", 2), "DEL");
    CHECK(acqe__has_control((const uint8_t *)"a\xc2\x85", 3), "C1 NEL");
    CHECK(!acqe__has_control((const uint8_t *)"a\xc2\xa0", 3), "NBSP is not a control");
    CHECK(!acqe__has_control((const uint8_t *)"model.diffusion_model.out.2.weight", 34), "plain name");
}

int main(void) {
    test_checksums();
    test_floats();
    test_json();
    test_names();
    printf("test_unit: %d failures\n", failures);
    return failures ? 1 : 0;
}
