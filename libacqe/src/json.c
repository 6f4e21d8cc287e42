/* The METADATA section's strict JSON (spec section 8): one RFC 8259 object in UTF-8, no BOM, no
 * duplicate member names at any depth (compared after unescaping), no NaN/Infinity, numbers with a
 * fraction or exponent finite when rounded to binary64, integers in [-2^63, 2^64-1], no lone surrogate
 * escapes, nesting depth (the top-level object counts as 1) at most 64.
 *
 * A validator only: nothing is built but the member names of the objects currently open (to find
 * duplicates), whose total size is at most the text's. */
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

/* 2^1024 - 2^970: the smallest decimal value that rounds to infinity in binary64 (it is the midpoint
 * between DBL_MAX and 2^1024, and ties go to the even 2^1024). 309 digits. */
static const char OVERFLOW_AT[] =
    "1797693134862315807937289714053034150799341327100378269361737789804449682927647509466490179775872070963302"
    "8641669288791094655554785194040263065748867150582068190890200070838367627385484581771153176447573027006985"
    "5571366959622842914819860834936475292719074168444365510704342711559699508093042880177904174497792";

typedef struct key_ref {
    size_t off, len;
} key_ref;

typedef struct jp {
    const uint8_t *p;
    size_t n, i;
    int depth;
    acqe_error *err;
    acqe_status st;
    uint8_t *arena; /* unescaped member names of the open objects */
    size_t arena_len, arena_cap;
    key_ref *keys;
    size_t nkeys, keys_cap;
    const uint8_t *sort_base; /* for the comparator */
} jp;

static int jfail(jp *j, const char *fmt, const char *detail) {
    if (j->st == ACQE_OK) {
        char buf[320];
        snprintf(buf, sizeof buf, fmt, detail ? detail : "");
        acqe__fail(j->err, ACQE_ERR_METADATA, "%s (at byte %zu)", buf, j->i);
        j->st = ACQE_ERR_METADATA;
    }
    return -1;
}

static void skip_ws(jp *j) {
    while (j->i < j->n) {
        uint8_t c = j->p[j->i];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        j->i++;
    }
}

static int arena_put(jp *j, const uint8_t *s, size_t k) {
    if (j->arena_len + k > j->arena_cap) {
        size_t cap = j->arena_cap ? j->arena_cap : 256;
        uint8_t *a;
        while (cap < j->arena_len + k) cap *= 2;
        a = (uint8_t *)realloc(j->arena, cap);
        if (!a) {
            acqe__fail(j->err, ACQE_ERR_NOMEM, "out of memory validating the metadata");
            j->st = ACQE_ERR_NOMEM;
            return -1;
        }
        j->arena = a;
        j->arena_cap = cap;
    }
    memcpy(j->arena + j->arena_len, s, k);
    j->arena_len += k;
    return 0;
}

static int hex4(jp *j, size_t at, uint32_t *cp) {
    uint32_t v = 0;
    size_t k;
    if (at + 4 > j->n) return -1;
    for (k = 0; k < 4; k++) {
        uint8_t c = j->p[at + k];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (uint32_t)(c - 'A' + 10);
        else return -1;
    }
    *cp = v;
    return 0;
}

/* a string at j->i (the opening quote); if `keep`, its unescaped UTF-8 bytes go to the arena */
static int parse_string(jp *j, int keep) {
    j->i++; /* opening quote */
    for (;;) {
        size_t start = j->i;
        uint8_t c;
        while (j->i < j->n && (c = j->p[j->i]) != '"' && c != '\\' && c >= 0x20) j->i++;
        if (keep && j->i > start && arena_put(j, j->p + start, j->i - start)) return -1;
        if (j->i >= j->n) return jfail(j, "metadata is not valid JSON: unterminated string%s", NULL);
        c = j->p[j->i];
        if (c == '"') {
            j->i++;
            return 0;
        }
        if (c < 0x20) return jfail(j, "metadata is not valid JSON: control character in a string%s", NULL);
        /* escape */
        if (j->i + 1 >= j->n) return jfail(j, "metadata is not valid JSON: unterminated string%s", NULL);
        c = j->p[j->i + 1];
        if (c == 'u') {
            uint32_t cp, lo;
            uint8_t u[4];
            size_t k = 0;
            if (hex4(j, j->i + 2, &cp)) return jfail(j, "metadata is not valid JSON: bad \\u escape%s", NULL);
            j->i += 6;
            if (cp >= 0xDC00 && cp <= 0xDFFF)
                return jfail(j, "JSON string contains a lone surrogate escape%s", NULL);
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (j->i + 1 < j->n && j->p[j->i] == '\\' && j->p[j->i + 1] == 'u' && !hex4(j, j->i + 2, &lo) &&
                    lo >= 0xDC00 && lo <= 0xDFFF) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    j->i += 6;
                } else {
                    return jfail(j, "JSON string contains a lone surrogate escape%s", NULL);
                }
            }
            if (keep) {
                if (cp < 0x80) {
                    u[k++] = (uint8_t)cp;
                } else if (cp < 0x800) {
                    u[k++] = (uint8_t)(0xC0 | (cp >> 6));
                    u[k++] = (uint8_t)(0x80 | (cp & 0x3F));
                } else if (cp < 0x10000) {
                    u[k++] = (uint8_t)(0xE0 | (cp >> 12));
                    u[k++] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
                    u[k++] = (uint8_t)(0x80 | (cp & 0x3F));
                } else {
                    u[k++] = (uint8_t)(0xF0 | (cp >> 18));
                    u[k++] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
                    u[k++] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
                    u[k++] = (uint8_t)(0x80 | (cp & 0x3F));
                }
                if (arena_put(j, u, k)) return -1;
            }
            continue;
        }
        {
            uint8_t out;
            switch (c) {
            case '"': out = '"'; break;
            case '\\': out = '\\'; break;
            case '/': out = '/'; break;
            case 'b': out = 8; break;
            case 'f': out = 12; break;
            case 'n': out = 10; break;
            case 'r': out = 13; break;
            case 't': out = 9; break;
            default: return jfail(j, "metadata is not valid JSON: bad escape%s", NULL);
            }
            if (keep && arena_put(j, &out, 1)) return -1;
            j->i += 2;
        }
    }
}

static int is_digit(uint8_t c) { return c >= '0' && c <= '9'; }

/* compare a run of digits (no leading zeros) with a decimal constant of the same kind: <0, 0, >0 */
static int cmp_digits(const uint8_t *d, size_t nd, const char *ref) {
    size_t nr = strlen(ref), k;
    if (nd != nr) return nd < nr ? -1 : 1;
    for (k = 0; k < nd; k++)
        if (d[k] != (uint8_t)ref[k]) return d[k] < (uint8_t)ref[k] ? -1 : 1;
    return 0;
}

static int parse_number(jp *j) {
    size_t start = j->i, int_at, int_len, frac_at = 0, frac_len = 0;
    int neg = 0, has_frac = 0, has_exp = 0;
    int64_t e10 = 0;
    if (j->p[j->i] == '-') {
        neg = 1;
        j->i++;
    }
    if (j->i >= j->n || !is_digit(j->p[j->i])) {
        if (j->i + 8 <= j->n && !memcmp(j->p + j->i, "Infinity", 8))
            return jfail(j, "JSON constant %s is not allowed", "-Infinity");
        return jfail(j, "metadata is not valid JSON: bad number%s", NULL);
    }
    int_at = j->i;
    if (j->p[j->i] == '0') {
        j->i++;
    } else {
        while (j->i < j->n && is_digit(j->p[j->i])) j->i++;
    }
    int_len = j->i - int_at;
    if (j->i < j->n && j->p[j->i] == '.') {
        has_frac = 1;
        j->i++;
        frac_at = j->i;
        while (j->i < j->n && is_digit(j->p[j->i])) j->i++;
        frac_len = j->i - frac_at;
        if (!frac_len) return jfail(j, "metadata is not valid JSON: bad number%s", NULL);
    }
    if (j->i < j->n && (j->p[j->i] == 'e' || j->p[j->i] == 'E')) {
        int eneg = 0;
        size_t ed;
        has_exp = 1;
        j->i++;
        if (j->i < j->n && (j->p[j->i] == '+' || j->p[j->i] == '-')) {
            eneg = j->p[j->i] == '-';
            j->i++;
        }
        ed = j->i;
        while (j->i < j->n && is_digit(j->p[j->i])) {
            if (e10 < 1000000000) e10 = e10 * 10 + (j->p[j->i] - '0'); /* saturates: only the magnitude matters */
            j->i++;
        }
        if (j->i == ed) return jfail(j, "metadata is not valid JSON: bad number%s", NULL);
        if (eneg) e10 = -e10;
    }
    if (!has_frac && !has_exp) {
        /* an integer: [-2^63, 2^64 - 1] */
        if (int_len == 1 && j->p[int_at] == '0') return 0;
        if (cmp_digits(j->p + int_at, int_len, neg ? "9223372036854775808" : "18446744073709551615") > 0) {
            char buf[48];
            size_t k = j->i - start < 40 ? j->i - start : 40;
            memcpy(buf, j->p + start, k);
            buf[k] = 0;
            return jfail(j, "JSON integer %s is outside [-2**63, 2**64-1]", buf);
        }
        return 0;
    }
    {
        /* finite after rounding to binary64 <=> |value| < OVERFLOW_AT. value = 0.D * 10^m with D the
         * significant digits (integer then fraction digits, leading zeros dropped) */
        uint8_t dig[320];
        size_t nd = 0, k, lead = 0, total = int_len + frac_len;
        int64_t m;
        int started = 0;
        for (k = 0; k < total; k++) {
            uint8_t c = k < int_len ? j->p[int_at + k] : j->p[frac_at + k - int_len];
            if (!started) {
                if (c == '0') {
                    lead++;
                    continue;
                }
                started = 1;
            }
            if (nd < sizeof dig) {
                dig[nd++] = c;
            } else if (c != '0') { /* only whether more non-zero digits follow matters */
                dig[sizeof dig - 1] = '9';
            }
        }
        if (!started) return 0; /* zero */
        while (nd > 0 && dig[nd - 1] == '0') nd--;
        m = (int64_t)int_len - (int64_t)lead + e10;
        if (m <= 308) return 0;
        if (m == 309) {
            size_t nr = sizeof OVERFLOW_AT - 1, c = nd < nr ? nd : nr;
            int cmp = 0;
            for (k = 0; k < c && !cmp; k++)
                if (dig[k] != (uint8_t)OVERFLOW_AT[k]) cmp = dig[k] < (uint8_t)OVERFLOW_AT[k] ? -1 : 1;
            if (!cmp) cmp = nd < nr ? -1 : (nd > nr ? 1 : 0); /* OVERFLOW_AT has no trailing zeros */
            if (cmp < 0) return 0;
        }
        {
            char buf[48];
            size_t q = j->i - start < 40 ? j->i - start : 40;
            memcpy(buf, j->p + start, q);
            buf[q] = 0;
            return jfail(j, "JSON number %s overflows binary64", buf);
        }
    }
}

static int key_cmp(const void *a, const void *b, const uint8_t *base) {
    const key_ref *x = (const key_ref *)a, *y = (const key_ref *)b;
    size_t m = x->len < y->len ? x->len : y->len;
    int c = memcmp(base + x->off, base + y->off, m);
    if (c) return c;
    return x->len < y->len ? -1 : (x->len > y->len ? 1 : 0);
}

/* insertion of `k` into keys[lo, hi) sorted (keys are few per object in practice; a merge sort handles
 * the large cases) */
static void sort_keys(key_ref *k, size_t n, key_ref *tmp, const uint8_t *base) {
    size_t w, i;
    if (n < 2) return;
    if (n <= 16) {
        for (i = 1; i < n; i++) {
            key_ref v = k[i];
            size_t q = i;
            while (q > 0 && key_cmp(&k[q - 1], &v, base) > 0) {
                k[q] = k[q - 1];
                q--;
            }
            k[q] = v;
        }
        return;
    }
    w = n / 2;
    sort_keys(k, w, tmp, base);
    sort_keys(k + w, n - w, tmp, base);
    {
        size_t a = 0, b = w, o = 0;
        while (a < w && b < n) tmp[o++] = key_cmp(&k[b], &k[a], base) < 0 ? k[b++] : k[a++];
        while (a < w) tmp[o++] = k[a++];
        while (b < n) tmp[o++] = k[b++];
        memcpy(k, tmp, n * sizeof *k);
    }
}

static int parse_value(jp *j);

static int parse_object(jp *j) {
    size_t keys_start = j->nkeys, arena_start = j->arena_len;
    j->i++;
    skip_ws(j);
    if (j->i < j->n && j->p[j->i] == '}') {
        j->i++;
        return 0;
    }
    for (;;) {
        size_t before;
        if (j->i >= j->n || j->p[j->i] != '"')
            return jfail(j, "metadata is not valid JSON: expected a member name%s", NULL);
        before = j->arena_len;
        if (parse_string(j, 1)) return -1;
        if (j->nkeys == j->keys_cap) {
            size_t cap = j->keys_cap ? 2 * j->keys_cap : 64;
            key_ref *nk = (key_ref *)realloc(j->keys, cap * sizeof *nk);
            if (!nk) {
                acqe__fail(j->err, ACQE_ERR_NOMEM, "out of memory validating the metadata");
                j->st = ACQE_ERR_NOMEM;
                return -1;
            }
            j->keys = nk;
            j->keys_cap = cap;
        }
        j->keys[j->nkeys].off = before;
        j->keys[j->nkeys].len = j->arena_len - before;
        j->nkeys++;
        skip_ws(j);
        if (j->i >= j->n || j->p[j->i] != ':') return jfail(j, "metadata is not valid JSON: expected ':'%s", NULL);
        j->i++;
        skip_ws(j);
        if (parse_value(j)) return -1;
        skip_ws(j);
        if (j->i < j->n && j->p[j->i] == ',') {
            j->i++;
            skip_ws(j);
            continue;
        }
        if (j->i < j->n && j->p[j->i] == '}') {
            j->i++;
            break;
        }
        return jfail(j, "metadata is not valid JSON: expected ',' or '}'%s", NULL);
    }
    {
        size_t n = j->nkeys - keys_start, i;
        if (n > 1) {
            key_ref *tmp = (key_ref *)malloc(n * sizeof *tmp);
            key_ref *k = j->keys + keys_start;
            if (!tmp) {
                acqe__fail(j->err, ACQE_ERR_NOMEM, "out of memory validating the metadata");
                j->st = ACQE_ERR_NOMEM;
                return -1;
            }
            sort_keys(k, n, tmp, j->arena);
            free(tmp);
            for (i = 1; i < n; i++) {
                if (!key_cmp(&k[i - 1], &k[i], j->arena)) {
                    char q[QUOTE_CAP];
                    acqe__quote(j->arena + k[i].off, k[i].len, q, sizeof q);
                    return jfail(j, "duplicate JSON key %s", q);
                }
            }
        }
        j->nkeys = keys_start;
        j->arena_len = arena_start;
    }
    return 0;
}

static int parse_array(jp *j) {
    j->i++;
    skip_ws(j);
    if (j->i < j->n && j->p[j->i] == ']') {
        j->i++;
        return 0;
    }
    for (;;) {
        if (parse_value(j)) return -1;
        skip_ws(j);
        if (j->i < j->n && j->p[j->i] == ',') {
            j->i++;
            skip_ws(j);
            continue;
        }
        if (j->i < j->n && j->p[j->i] == ']') {
            j->i++;
            return 0;
        }
        return jfail(j, "metadata is not valid JSON: expected ',' or ']'%s", NULL);
    }
}

static int lit(jp *j, const char *w) {
    size_t k = strlen(w);
    if (j->i + k <= j->n && !memcmp(j->p + j->i, w, k)) {
        j->i += k;
        return 1;
    }
    return 0;
}

static int parse_value(jp *j) {
    uint8_t c;
    if (j->i >= j->n) return jfail(j, "metadata is not valid JSON: expected a value%s", NULL);
    c = j->p[j->i];
    if (c == '{' || c == '[') {
        int r;
        if (++j->depth > MAX_JSON_DEPTH) return jfail(j, "JSON nesting deeper than 64%s", NULL);
        r = c == '{' ? parse_object(j) : parse_array(j);
        j->depth--;
        return r;
    }
    if (c == '"') return parse_string(j, 0);
    if (c == '-' || is_digit(c)) return parse_number(j);
    if (lit(j, "true") || lit(j, "false") || lit(j, "null")) return 0;
    if (j->i + 3 <= j->n && !memcmp(j->p + j->i, "NaN", 3)) return jfail(j, "JSON constant %s is not allowed", "NaN");
    if (j->i + 8 <= j->n && !memcmp(j->p + j->i, "Infinity", 8))
        return jfail(j, "JSON constant %s is not allowed", "Infinity");
    return jfail(j, "metadata is not valid JSON: expected a value%s", NULL);
}

acqe_status acqe__check_metadata(const uint8_t *p, size_t n, acqe_error *err) {
    jp j;
    if (n >= 3 && p[0] == 0xEF && p[1] == 0xBB && p[2] == 0xBF)
        return acqe__fail(err, ACQE_ERR_METADATA, "metadata starts with a UTF-8 BOM");
    if (!acqe__utf8_valid(p, n)) return acqe__fail(err, ACQE_ERR_METADATA, "metadata is not UTF-8");
    memset(&j, 0, sizeof j);
    j.p = p;
    j.n = n;
    j.err = err;
    j.st = ACQE_OK;
    skip_ws(&j);
    if (j.i < n && p[j.i] != '{') {
        /* still parse it, so that an invalid text is reported as such first (all are Metadata errors) */
        if (!parse_value(&j)) {
            skip_ws(&j);
            if (j.i == n) acqe__fail(err, ACQE_ERR_METADATA, "metadata must be a JSON object");
            else jfail(&j, "metadata is not valid JSON: extra data%s", NULL);
            j.st = ACQE_ERR_METADATA;
        }
    } else if (!parse_value(&j)) {
        skip_ws(&j);
        if (j.i != n) jfail(&j, "metadata is not valid JSON: extra data%s", NULL);
    }
    free(j.arena);
    free(j.keys);
    return j.st;
}
