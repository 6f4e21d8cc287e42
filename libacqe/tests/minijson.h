/* A tiny JSON reader for the tests (the vectors' .json files and MANIFEST.json): trusted input only. */
#ifndef MINIJSON_H
#define MINIJSON_H

#include <stdlib.h>
#include <string.h>

typedef enum { MJ_NULL, MJ_BOOL, MJ_NUM, MJ_STR, MJ_ARR, MJ_OBJ } mj_type;

typedef struct mj {
    mj_type type;
    char *str;          /* MJ_STR: unescaped, NUL-terminated; MJ_NUM: the text */
    size_t len;         /* MJ_STR: bytes */
    int b;
    struct mj **items;  /* MJ_ARR, MJ_OBJ values */
    char **keys;        /* MJ_OBJ */
    size_t n;
} mj;

static const char *mj_ws(const char *p) {
    while (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t') p++;
    return p;
}

static void mj_put_utf8(char *o, size_t *k, unsigned cp) {
    if (cp < 0x80) o[(*k)++] = (char)cp;
    else if (cp < 0x800) {
        o[(*k)++] = (char)(0xC0 | (cp >> 6));
        o[(*k)++] = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        o[(*k)++] = (char)(0xE0 | (cp >> 12));
        o[(*k)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[(*k)++] = (char)(0x80 | (cp & 0x3F));
    } else {
        o[(*k)++] = (char)(0xF0 | (cp >> 18));
        o[(*k)++] = (char)(0x80 | ((cp >> 12) & 0x3F));
        o[(*k)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[(*k)++] = (char)(0x80 | (cp & 0x3F));
    }
}

static const char *mj_string(const char *p, char **out, size_t *len) {
    size_t cap = 16, k = 0;
    char *o = (char *)malloc(cap);
    p++;
    while (*p && *p != '"') {
        if (k + 8 > cap) o = (char *)realloc(o, cap *= 2);
        if (*p == '\\') {
            p++;
            switch (*p) {
            case 'n': o[k++] = '\n'; break;
            case 't': o[k++] = '\t'; break;
            case 'r': o[k++] = '\r'; break;
            case 'b': o[k++] = '\b'; break;
            case 'f': o[k++] = '\f'; break;
            case 'u': {
                unsigned cp = (unsigned)strtoul((char[5]){p[1], p[2], p[3], p[4], 0}, NULL, 16);
                p += 4;
                if (cp >= 0xD800 && cp <= 0xDBFF && p[1] == '\\' && p[2] == 'u') {
                    unsigned lo = (unsigned)strtoul((char[5]){p[3], p[4], p[5], p[6], 0}, NULL, 16);
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    p += 6;
                }
                mj_put_utf8(o, &k, cp);
                break;
            }
            default: o[k++] = *p;
            }
            p++;
        } else {
            o[k++] = *p++;
        }
    }
    o[k] = 0;
    *out = o;
    *len = k;
    return *p ? p + 1 : p;
}

static const char *mj_parse(const char *p, mj **out) {
    mj *v = (mj *)calloc(1, sizeof *v);
    p = mj_ws(p);
    *out = v;
    if (*p == '{' || *p == '[') {
        int obj = *p == '{';
        v->type = obj ? MJ_OBJ : MJ_ARR;
        p = mj_ws(p + 1);
        while (*p && *p != (obj ? '}' : ']')) {
            v->items = (mj **)realloc(v->items, (v->n + 1) * sizeof *v->items);
            if (obj) {
                size_t kl;
                v->keys = (char **)realloc(v->keys, (v->n + 1) * sizeof *v->keys);
                p = mj_string(mj_ws(p), &v->keys[v->n], &kl);
                p = mj_ws(p) + 1; /* ':' */
            }
            p = mj_parse(p, &v->items[v->n]);
            v->n++;
            p = mj_ws(p);
            if (*p == ',') p = mj_ws(p + 1);
        }
        return *p ? p + 1 : p;
    }
    if (*p == '"') {
        v->type = MJ_STR;
        return mj_string(p, &v->str, &v->len);
    }
    if (!strncmp(p, "true", 4) || !strncmp(p, "false", 5)) {
        v->type = MJ_BOOL;
        v->b = *p == 't';
        return p + (v->b ? 4 : 5);
    }
    if (!strncmp(p, "null", 4)) {
        v->type = MJ_NULL;
        return p + 4;
    }
    {
        const char *s = p;
        v->type = MJ_NUM;
        while (*p && strchr("+-0123456789.eE", *p)) p++;
        v->str = (char *)malloc((size_t)(p - s) + 1);
        memcpy(v->str, s, (size_t)(p - s));
        v->str[p - s] = 0;
        return p;
    }
}

static mj *mj_get(const mj *o, const char *key) {
    size_t i;
    if (!o || o->type != MJ_OBJ) return NULL;
    for (i = 0; i < o->n; i++)
        if (!strcmp(o->keys[i], key)) return o->items[i];
    return NULL;
}

static void mj_free(mj *v) {
    size_t i;
    if (!v) return;
    for (i = 0; i < v->n; i++) {
        mj_free(v->items[i]);
        if (v->keys) free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    free(v->str);
    free(v);
}

#endif
