/*
** mil_parse.c — MIL text to syntax tree, for the dialect the seed (maderix/ANE, the project
** anetrain follows) writes (docs/ane-facts.md §2.1-2.2):
**
**   program(1.3)
**   [buildInfo = dict<string, string>({{"k", "v"}, ...})]        (optional)
**   {
**       func main<ios18>(tensor<fp16, [1, C, 1, S]> x) {
**           TYPE NAME = OP(arg = value, ...)[name = string("NAME")];
**           TYPE NAME = const()[name = string("NAME"), val = LITERAL];
**           TYPE NAME = constexpr_affine_dequantize()[axis = int32(0), ..., scale = fp16(0x1p-3)];
**       } -> (NAME);
**   }
**
** TYPE is a dtype keyword (fp16, int32, bool, string, ...) or tensor<DTYPE, [d, ...]>. A value
** is a name, a typed literal (fp16(%f|%g|hex), int32(-1), bool(true), string("..."),
** uint64(64), tensor<..>([..]), tensor<..>(BLOBFILE(path = string(".."), offset = uint64(64)))),
** a bare true/false, or a tuple (a, b, ...). Spacing is free.
**
** This file only checks syntax and literal ranges; what the names mean, which ops and
** arguments exist and whether shapes agree is mil_check.c's job. It must never crash on
** malformed text (it is fuzzed): every read is bounds-checked, recursion is bounded (tuples
** do not nest), and the first error stops the parse with "MIL L:C: expected X, found Y".
*/
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../../util/fp16.h"
#include "mil.h"

/* ------------------------------------------------------------------ arena */

typedef struct ArenaBlock {
    struct ArenaBlock *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
} ArenaBlock;

struct MilArena {
    ArenaBlock *head;
};

enum { ARENA_BLOCK = 64 * 1024 };

/* Zeroed, 16-byte aligned memory that lives until mil_ast_free; NULL when out of memory. */
static void *arena_alloc(MilArena *a, size_t bytes) {
    if (bytes > ((size_t)1 << 40)) return NULL;
    bytes = (bytes + 15) & ~(size_t)15;
    ArenaBlock *b = a->head;
    if (!b || b->cap - b->used < bytes) {
        size_t cap = bytes > ARENA_BLOCK ? bytes : ARENA_BLOCK;
        b = malloc(sizeof *b + cap);
        if (!b) return NULL;
        b->used = 0;
        b->cap = cap;
        /* A dedicated big block goes second so the current small block keeps filling. */
        if (a->head && cap > ARENA_BLOCK) {
            b->next = a->head->next;
            a->head->next = b;
        } else {
            b->next = a->head;
            a->head = b;
        }
    }
    void *p = b->data + b->used;
    b->used += bytes;
    memset(p, 0, bytes);
    return p;
}

static void arena_free(MilArena *a) {
    if (!a) return;
    ArenaBlock *b = a->head;
    while (b) {
        ArenaBlock *next = b->next;
        free(b);
        b = next;
    }
    free(a);
}

/* ------------------------------------------------------------------ dtypes */

static const struct {
    const char *name;
    MilDtype dt;
} dtype_names[] = {
    {"fp16", MIL_DT_FP16},     {"fp32", MIL_DT_FP32},     {"fp64", MIL_DT_FP64},   {"bf16", MIL_DT_BF16},
    {"int8", MIL_DT_INT8},     {"uint8", MIL_DT_UINT8},   {"int16", MIL_DT_INT16}, {"uint16", MIL_DT_UINT16},
    {"int32", MIL_DT_INT32},   {"uint32", MIL_DT_UINT32}, {"int64", MIL_DT_INT64}, {"uint64", MIL_DT_UINT64},
    {"bool", MIL_DT_BOOL},     {"string", MIL_DT_STRING},
};

const char *mil_dtype_name(MilDtype dt) {
    for (size_t i = 0; i < sizeof dtype_names / sizeof dtype_names[0]; i++)
        if (dtype_names[i].dt == dt) return dtype_names[i].name;
    return "?";
}

MilDtype mil_dtype_from_name(const char *s, size_t len) {
    for (size_t i = 0; i < sizeof dtype_names / sizeof dtype_names[0]; i++)
        if (strlen(dtype_names[i].name) == len && memcmp(dtype_names[i].name, s, len) == 0) return dtype_names[i].dt;
    return MIL_DT_INVALID;
}

char *mil_type_format(const MilType *t, char *buf, size_t size) {
    if (!size) return buf;
    if (!t->is_tensor) {
        snprintf(buf, size, "%s", mil_dtype_name(t->dtype));
        return buf;
    }
    size_t n = 0;
    int w = snprintf(buf, size, "tensor<%s, [", mil_dtype_name(t->dtype));
    n = w < 0 ? 0 : (size_t)w;
    for (int i = 0; i < t->rank && n < size; i++) {
        w = snprintf(buf + n, size - n, "%s%lld", i ? ", " : "", (long long)t->dims[i]);
        n += w < 0 ? 0 : (size_t)w;
    }
    if (n < size) snprintf(buf + n, size - n, "]>");
    return buf;
}

/* ------------------------------------------------------------------ lexer */

typedef enum {
    TK_EOF, TK_IDENT, TK_NUMBER, TK_STRING,
    TK_LPAREN, TK_RPAREN, TK_LBRACK, TK_RBRACK, TK_LBRACE, TK_RBRACE,
    TK_LT, TK_GT, TK_COMMA, TK_EQ, TK_SEMI, TK_ARROW, TK_BAD
} TokKind;

typedef struct {
    TokKind kind;
    const char *start;
    size_t len;
    MilPos pos;
} Tok;

typedef struct {
    const char *p, *end;
    int line, col;
    Tok tok;       /* the current token */
    MilArena *arena;
    Err *err;
    int failed;
} Parser;

static int is_alpha(int c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static int is_digit(int c) { return c >= '0' && c <= '9'; }

static void lex_advance(Parser *P) {
    if (P->p >= P->end) return;
    if (*P->p == '\n') {
        P->line++;
        P->col = 1;
    } else {
        P->col++;
    }
    P->p++;
}

/* Reads the next token into P->tok. Never fails: unknown bytes become TK_BAD tokens. */
static void lex_next(Parser *P) {
    while (P->p < P->end && (*P->p == ' ' || *P->p == '\t' || *P->p == '\r' || *P->p == '\n')) lex_advance(P);
    Tok *t = &P->tok;
    t->start = P->p;
    t->pos.line = P->line;
    t->pos.col = P->col;
    t->len = 0;
    if (P->p >= P->end) {
        t->kind = TK_EOF;
        return;
    }
    int c = (unsigned char)*P->p;
    int next = P->p + 1 < P->end ? (unsigned char)P->p[1] : 0;
    if (is_alpha(c)) {
        while (P->p < P->end && (is_alpha((unsigned char)*P->p) || is_digit((unsigned char)*P->p))) lex_advance(P);
        t->kind = TK_IDENT;
    } else if (is_digit(c) ||
               ((c == '-' || c == '+') && (is_digit(next) || next == '.' || next == 'i' || next == 'n')) ||
               (c == '.' && is_digit(next))) {
        /* A number: sign, digits/letters/dots, and a sign only right after an exponent
        ** letter (e/E for decimal, p/P for hex). Validity is checked where it is used. */
        int hex = 0;
        if (c == '-' || c == '+') lex_advance(P);
        if (P->p + 1 < P->end && P->p[0] == '0' && (P->p[1] == 'x' || P->p[1] == 'X')) hex = 1;
        while (P->p < P->end) {
            int d = (unsigned char)*P->p;
            int prev = P->p > t->start ? (unsigned char)P->p[-1] : 0;
            if (is_alpha(d) || is_digit(d) || d == '.') {
                lex_advance(P);
            } else if ((d == '-' || d == '+') &&
                       (hex ? (prev == 'p' || prev == 'P') : (prev == 'e' || prev == 'E'))) {
                lex_advance(P);
            } else {
                break;
            }
        }
        t->kind = TK_NUMBER;
    } else if (c == '"') {
        lex_advance(P);
        t->kind = TK_BAD; /* until the closing quote is seen */
        while (P->p < P->end && *P->p != '"' && *P->p != '\n') {
            if (*P->p == '\\' && P->p + 1 < P->end && P->p[1] != '\n') lex_advance(P);
            lex_advance(P);
        }
        if (P->p < P->end && *P->p == '"') {
            lex_advance(P);
            t->kind = TK_STRING;
        }
    } else if (c == '-' && next == '>') {
        lex_advance(P);
        lex_advance(P);
        t->kind = TK_ARROW;
    } else {
        switch (c) {
        case '(': t->kind = TK_LPAREN; break;
        case ')': t->kind = TK_RPAREN; break;
        case '[': t->kind = TK_LBRACK; break;
        case ']': t->kind = TK_RBRACK; break;
        case '{': t->kind = TK_LBRACE; break;
        case '}': t->kind = TK_RBRACE; break;
        case '<': t->kind = TK_LT; break;
        case '>': t->kind = TK_GT; break;
        case ',': t->kind = TK_COMMA; break;
        case '=': t->kind = TK_EQ; break;
        case ';': t->kind = TK_SEMI; break;
        default: t->kind = TK_BAD; break;
        }
        lex_advance(P);
    }
    t->len = (size_t)(P->p - t->start);
}

/* ------------------------------------------------------------------ errors */

/* "'text'" with non-printable bytes as \xNN, cut at 40 bytes; or "end of text". */
static void tok_describe(const Tok *t, char *buf, size_t size) {
    if (t->kind == TK_EOF) {
        snprintf(buf, size, "end of text");
        return;
    }
    if (t->kind == TK_BAD && t->len > 0 && t->start[0] == '"') {
        snprintf(buf, size, "an unterminated string");
        return;
    }
    size_t n = 0;
    buf[n++] = '\'';
    for (size_t i = 0; i < t->len && i < 40 && n + 6 < size; i++) {
        unsigned char c = (unsigned char)t->start[i];
        if (c >= 32 && c < 127)
            buf[n++] = (char)c;
        else
            n += (size_t)snprintf(buf + n, size - n, "\\x%02X", c);
    }
    if (t->len > 40 && n + 5 < size) {
        memcpy(buf + n, "...", 3);
        n += 3;
    }
    buf[n++] = '\'';
    buf[n] = '\0';
}

static int parse_fail_at(Parser *P, MilPos pos, const char *fmt, ...) ERR_PRINTF(3, 4);
static int parse_fail_at(Parser *P, MilPos pos, const char *fmt, ...) {
    if (P->failed) return -1;
    P->failed = 1;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return err_set(P->err, "MIL %d:%d: %s", pos.line, pos.col, msg);
}

/* "expected WHAT, found <current token>" at the current token. */
static int parse_expected(Parser *P, const char *what) {
    char found[64];
    tok_describe(&P->tok, found, sizeof found);
    return parse_fail_at(P, P->tok.pos, "expected %s, found %s", what, found);
}

static int parse_oom(Parser *P) { return parse_fail_at(P, P->tok.pos, "out of memory while parsing"); }

/* ------------------------------------------------------------------ token helpers */

static int tok_is(const Parser *P, TokKind k) { return P->tok.kind == k; }

static int tok_is_word(const Parser *P, const char *w) {
    return P->tok.kind == TK_IDENT && P->tok.len == strlen(w) && memcmp(P->tok.start, w, P->tok.len) == 0;
}

static int expect(Parser *P, TokKind k, const char *what) {
    if (P->tok.kind != k) return parse_expected(P, what);
    lex_next(P);
    return 0;
}

static int expect_word(Parser *P, const char *w, const char *what) {
    if (!tok_is_word(P, w)) return parse_expected(P, what);
    lex_next(P);
    return 0;
}

static char *arena_strndup(Parser *P, const char *s, size_t n) {
    char *d = arena_alloc(P->arena, n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

/* Takes the current identifier; *out is an arena copy. */
static int take_ident(Parser *P, const char *what, const char **out, MilPos *pos) {
    if (!tok_is(P, TK_IDENT)) return parse_expected(P, what);
    if (pos) *pos = P->tok.pos;
    *out = arena_strndup(P, P->tok.start, P->tok.len);
    if (!*out) return parse_oom(P);
    lex_next(P);
    return 0;
}

/* Takes the current string token, decoding \" \\ \n \t; other escapes keep the character. */
static int take_string(Parser *P, const char *what, const char **out) {
    if (!tok_is(P, TK_STRING)) return parse_expected(P, what);
    const char *s = P->tok.start + 1;
    size_t n = P->tok.len - 2;
    char *d = arena_alloc(P->arena, n + 1);
    if (!d) return parse_oom(P);
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '\\' && i + 1 < n) {
            c = s[++i];
            if (c == 'n') c = '\n';
            else if (c == 't') c = '\t';
        }
        d[j++] = c;
    }
    d[j] = '\0';
    *out = d;
    lex_next(P);
    return 0;
}

/* ------------------------------------------------------------------ numbers */

static int dtype_is_float(MilDtype dt) {
    return dt == MIL_DT_FP16 || dt == MIL_DT_FP32 || dt == MIL_DT_FP64 || dt == MIL_DT_BF16;
}

static int dtype_is_int(MilDtype dt) {
    return dt == MIL_DT_INT8 || dt == MIL_DT_UINT8 || dt == MIL_DT_INT16 || dt == MIL_DT_UINT16 ||
           dt == MIL_DT_INT32 || dt == MIL_DT_UINT32 || dt == MIL_DT_INT64 || dt == MIL_DT_UINT64;
}

static void int_range(MilDtype dt, int64_t *lo, int64_t *hi) {
    switch (dt) {
    case MIL_DT_INT8: *lo = -128; *hi = 127; break;
    case MIL_DT_UINT8: *lo = 0; *hi = 255; break;
    case MIL_DT_INT16: *lo = -32768; *hi = 32767; break;
    case MIL_DT_UINT16: *lo = 0; *hi = 65535; break;
    case MIL_DT_INT32: *lo = INT32_MIN; *hi = INT32_MAX; break;
    case MIL_DT_UINT32: *lo = 0; *hi = UINT32_MAX; break;
    case MIL_DT_UINT64: *lo = 0; *hi = INT64_MAX; break;
    default: *lo = INT64_MIN; *hi = INT64_MAX; break;
    }
}

/* A decimal integer token with an optional sign, in the range of dt. */
static int parse_int_token(Parser *P, MilDtype dt, int64_t *out) {
    const Tok *t = &P->tok;
    char found[64];
    tok_describe(t, found, sizeof found);
    if (t->kind != TK_NUMBER) return parse_fail_at(P, t->pos, "expected an integer, found %s", found);
    size_t i = 0;
    int neg = 0;
    if (t->start[0] == '-' || t->start[0] == '+') {
        neg = t->start[0] == '-';
        i = 1;
    }
    if (i >= t->len) return parse_fail_at(P, t->pos, "expected an integer, found %s", found);
    uint64_t v = 0;
    for (; i < t->len; i++) {
        char c = t->start[i];
        if (!is_digit((unsigned char)c))
            return parse_fail_at(P, t->pos, "expected a decimal integer for %s, found %s", mil_dtype_name(dt), found);
        if (v > (UINT64_MAX - 9) / 10) return parse_fail_at(P, t->pos, "integer %s is too large", found);
        v = v * 10 + (uint64_t)(c - '0');
    }
    int64_t lo, hi;
    int_range(dt, &lo, &hi);
    uint64_t max_neg = lo < 0 ? (uint64_t)(-(lo + 1)) + 1 : 0; /* |lo| without overflow */
    if (neg ? v > max_neg : v > (uint64_t)hi)
        return parse_fail_at(P, t->pos, "integer %s is out of range for %s [%lld, %lld]", found, mil_dtype_name(dt),
                             (long long)lo, (long long)hi);
    *out = !neg ? (int64_t)v : (v == 0 ? 0 : -(int64_t)(v - 1) - 1);
    lex_next(P);
    return 0;
}

/* A floating-point token: decimal, exponent, hex float (0x1p-3), inf, nan; also the
** identifiers inf and nan. fp16 literals must be finite in range unless written as inf.
** *exp_spelled is set to 1 when the token is a decimal written in exponent notation (1e-3,
** 2.5E+2): the checker's strict limits refuse those (rule fp16-literal-exponent), so the
** spelling is remembered here; hex floats (0x1p-3) are not exponent notation. */
static int parse_float_token(Parser *P, MilDtype dt, double *out, int *exp_spelled) {
    const Tok *t = &P->tok;
    char found[64];
    tok_describe(t, found, sizeof found);
    if (t->kind != TK_NUMBER && !(t->kind == TK_IDENT && (tok_is_word(P, "inf") || tok_is_word(P, "nan"))))
        return parse_fail_at(P, t->pos, "expected a number for %s, found %s", mil_dtype_name(dt), found);
    char buf[128];
    if (t->len >= sizeof buf) return parse_fail_at(P, t->pos, "number %s is too long", found);
    memcpy(buf, t->start, t->len);
    buf[t->len] = '\0';
    /* strtod also takes "infinity", "nan(...)": accept only what the lexer can produce and
    ** the spellings inf/nan. */
    const char *body = buf + ((buf[0] == '-' || buf[0] == '+') ? 1 : 0);
    int special = strcmp(body, "inf") == 0 || strcmp(body, "nan") == 0;
    if (!special && !(is_digit((unsigned char)body[0]) || body[0] == '.'))
        return parse_fail_at(P, t->pos, "expected a number for %s, found %s", mil_dtype_name(dt), found);
    char *endp = NULL;
    errno = 0;
    double v = strtod(buf, &endp);
    if (!endp || *endp != '\0' || endp == buf)
        return parse_fail_at(P, t->pos, "malformed number %s for %s", found, mil_dtype_name(dt));
    if (dt == MIL_DT_FP16 && isfinite(v) && fabs(v) > FP16_MAX) {
        /* Rounds to inf: almost surely a writer bug; the real compiler's answer is unknown. */
        if (isinf(fp16_round_double(v, 0)))
            return parse_fail_at(P, t->pos, "rule fp16-literal-range: fp16 literal %s is out of range (largest finite "
                                 "fp16 is 65504)", found);
    }
    if (dt == MIL_DT_FP32 && isfinite(v) && isinf((float)v))
        return parse_fail_at(P, t->pos, "fp32 literal %s is out of range", found);
    int hex = body[0] == '0' && (body[1] == 'x' || body[1] == 'X');
    *exp_spelled = !special && !hex && (strchr(body, 'e') || strchr(body, 'E'));
    *out = v;
    lex_next(P);
    return 0;
}

/* ------------------------------------------------------------------ types */

/* DTYPE or tensor<DTYPE, [d0, d1, ...]> (dims positive decimal integers). */
static int parse_type(Parser *P, MilType *t, const char *what) {
    memset(t, 0, sizeof *t);
    if (!tok_is(P, TK_IDENT)) return parse_expected(P, what);
    if (tok_is_word(P, "tensor")) {
        lex_next(P);
        if (expect(P, TK_LT, "'<' after 'tensor'")) return -1;
        if (!tok_is(P, TK_IDENT)) return parse_expected(P, "a dtype such as fp16");
        t->dtype = mil_dtype_from_name(P->tok.start, P->tok.len);
        if (t->dtype == MIL_DT_INVALID) return parse_expected(P, "a dtype such as fp16");
        lex_next(P);
        if (expect(P, TK_COMMA, "',' after the tensor dtype")) return -1;
        if (expect(P, TK_LBRACK, "'[' opening the tensor shape")) return -1;
        t->is_tensor = 1;
        if (!tok_is(P, TK_RBRACK)) {
            for (;;) {
                if (t->rank >= MIL_MAX_RANK)
                    return parse_fail_at(P, P->tok.pos, "tensor rank above %d is not supported", MIL_MAX_RANK);
                MilPos dpos = P->tok.pos;
                int64_t d;
                if (parse_int_token(P, MIL_DT_INT32, &d)) return -1;
                if (d < 1) return parse_fail_at(P, dpos, "tensor dimension %lld must be positive", (long long)d);
                t->dims[t->rank++] = d;
                if (tok_is(P, TK_COMMA)) {
                    lex_next(P);
                    continue;
                }
                break;
            }
        }
        if (expect(P, TK_RBRACK, "',' or ']' in the tensor shape")) return -1;
        return expect(P, TK_GT, "'>' closing the tensor type");
    }
    t->dtype = mil_dtype_from_name(P->tok.start, P->tok.len);
    if (t->dtype == MIL_DT_INVALID) return parse_expected(P, what);
    lex_next(P);
    return 0;
}

/* ------------------------------------------------------------------ values */

/* The body of DTYPE(...) for a scalar literal; the current token follows the '('. */
static int parse_scalar_body(Parser *P, MilExpr *e) {
    MilDtype dt = e->type.dtype;
    if (dt == MIL_DT_STRING) return take_string(P, "a string in double quotes", &e->str);
    if (dt == MIL_DT_BOOL) {
        if (tok_is_word(P, "true") || tok_is_word(P, "false")) {
            e->inum = tok_is_word(P, "true");
            e->num = (double)e->inum;
            lex_next(P);
            return 0;
        }
        return parse_expected(P, "true or false");
    }
    if (dtype_is_int(dt)) {
        if (parse_int_token(P, dt, &e->inum)) return -1;
        e->num = (double)e->inum;
        return 0;
    }
    if (dtype_is_float(dt)) {
        MilPos pos = P->tok.pos;
        if (parse_float_token(P, dt, &e->num, &e->exp_spelled)) return -1;
        if (e->exp_spelled) e->exp_pos = pos;
        return 0;
    }
    return parse_fail_at(P, e->pos, "literals of dtype %s are not supported", mil_dtype_name(dt));
}

/* [v, v, ...] for an inline tensor literal of e->type. */
static int parse_items(Parser *P, MilExpr *e) {
    if (expect(P, TK_LBRACK, "'[' or BLOBFILE in the tensor literal")) return -1;
    int64_t cap = 16, n = 0;
    double *items = arena_alloc(P->arena, (size_t)cap * sizeof *items);
    if (!items) return parse_oom(P);
    MilDtype dt = e->type.dtype;
    if (!tok_is(P, TK_RBRACK)) {
        for (;;) {
            double v = 0;
            if (dt == MIL_DT_BOOL) {
                if (!(tok_is_word(P, "true") || tok_is_word(P, "false"))) return parse_expected(P, "true or false");
                v = tok_is_word(P, "true");
                lex_next(P);
            } else if (dtype_is_int(dt)) {
                int64_t iv;
                if (parse_int_token(P, dt, &iv)) return -1;
                v = (double)iv;
            } else if (dtype_is_float(dt)) {
                MilPos pos = P->tok.pos;
                int spelled = 0;
                if (parse_float_token(P, dt, &v, &spelled)) return -1;
                if (spelled && !e->exp_spelled) {
                    e->exp_spelled = 1;
                    e->exp_pos = pos;
                }
            } else {
                return parse_fail_at(P, e->pos, "inline tensors of dtype %s are not supported", mil_dtype_name(dt));
            }
            if (n == cap) {
                double *grown = arena_alloc(P->arena, (size_t)cap * 2 * sizeof *grown);
                if (!grown) return parse_oom(P);
                memcpy(grown, items, (size_t)n * sizeof *items);
                items = grown;
                cap *= 2;
            }
            items[n++] = v;
            if (tok_is(P, TK_COMMA)) {
                lex_next(P);
                continue;
            }
            break;
        }
    }
    if (expect(P, TK_RBRACK, "',' or ']' in the tensor literal")) return -1;
    e->items = items;
    e->n_items = n;
    return 0;
}

/* BLOBFILE(path = string("..."), offset = uint64(N)), either order. */
static int parse_blobfile(Parser *P, MilExpr *e) {
    lex_next(P); /* BLOBFILE */
    if (expect(P, TK_LPAREN, "'(' after BLOBFILE")) return -1;
    int have_path = 0, have_offset = 0;
    for (;;) {
        if (tok_is_word(P, "path") && !have_path) {
            lex_next(P);
            if (expect(P, TK_EQ, "'=' after path")) return -1;
            if (expect_word(P, "string", "string(\"...\") for the BLOBFILE path")) return -1;
            if (expect(P, TK_LPAREN, "'(' after string")) return -1;
            if (take_string(P, "the blob path in double quotes", &e->blob_path)) return -1;
            if (expect(P, TK_RPAREN, "')' after the blob path")) return -1;
            have_path = 1;
        } else if (tok_is_word(P, "offset") && !have_offset) {
            lex_next(P);
            if (expect(P, TK_EQ, "'=' after offset")) return -1;
            if (expect_word(P, "uint64", "uint64(N) for the BLOBFILE offset")) return -1;
            if (expect(P, TK_LPAREN, "'(' after uint64")) return -1;
            int64_t off;
            if (parse_int_token(P, MIL_DT_UINT64, &off)) return -1;
            e->blob_offset = (uint64_t)off;
            if (expect(P, TK_RPAREN, "')' after the blob offset")) return -1;
            have_offset = 1;
        } else {
            return parse_expected(P, have_path ? (have_offset ? "')'" : "offset = uint64(N)")
                                               : "path = string(\"...\")");
        }
        if (have_path && have_offset) break;
        if (expect(P, TK_COMMA, "',' between the BLOBFILE arguments")) return -1;
    }
    if (expect(P, TK_RPAREN, "')' closing BLOBFILE")) return -1;
    e->is_blob = 1;
    return 0;
}

/* A value: name, typed literal, bare true/false, or (when allowed) a tuple of values. */
static int parse_value(Parser *P, MilExpr *e, int allow_tuple) {
    memset(e, 0, sizeof *e);
    e->pos = P->tok.pos;
    if (tok_is(P, TK_LPAREN)) {
        if (!allow_tuple) return parse_expected(P, "a name or a literal (tuples do not nest)");
        lex_next(P);
        e->kind = MIL_EXPR_TUPLE;
        int cap = 4;
        e->elems = arena_alloc(P->arena, (size_t)cap * sizeof *e->elems);
        if (!e->elems) return parse_oom(P);
        for (;;) {
            if (e->n_elems == cap) {
                MilExpr *grown = arena_alloc(P->arena, (size_t)cap * 2 * sizeof *grown);
                if (!grown) return parse_oom(P);
                memcpy(grown, e->elems, (size_t)e->n_elems * sizeof *grown);
                e->elems = grown;
                cap *= 2;
            }
            if (parse_value(P, &e->elems[e->n_elems], 0)) return -1;
            e->n_elems++;
            if (tok_is(P, TK_COMMA)) {
                lex_next(P);
                continue;
            }
            break;
        }
        return expect(P, TK_RPAREN, "',' or ')' in the tuple");
    }
    if (!tok_is(P, TK_IDENT)) return parse_expected(P, "a name or a typed literal such as fp16(1.0)");
    if (tok_is_word(P, "true") || tok_is_word(P, "false")) {
        e->kind = MIL_EXPR_LITERAL;
        e->type.dtype = MIL_DT_BOOL;
        e->bare = 1;
        e->inum = tok_is_word(P, "true");
        e->num = (double)e->inum;
        lex_next(P);
        return 0;
    }
    if (tok_is_word(P, "tensor")) {
        e->kind = MIL_EXPR_LITERAL;
        if (parse_type(P, &e->type, "a tensor type")) return -1;
        if (expect(P, TK_LPAREN, "'(' after the tensor literal's type")) return -1;
        if (tok_is_word(P, "BLOBFILE")) {
            if (parse_blobfile(P, e)) return -1;
        } else {
            if (parse_items(P, e)) return -1;
        }
        return expect(P, TK_RPAREN, "')' closing the tensor literal");
    }
    MilDtype dt = mil_dtype_from_name(P->tok.start, P->tok.len);
    Tok ident = P->tok;
    lex_next(P);
    if (dt != MIL_DT_INVALID && tok_is(P, TK_LPAREN)) {
        lex_next(P);
        e->kind = MIL_EXPR_LITERAL;
        e->type.dtype = dt;
        if (parse_scalar_body(P, e)) return -1;
        return expect(P, TK_RPAREN, "')' closing the literal");
    }
    e->kind = MIL_EXPR_NAME;
    e->name = arena_strndup(P, ident.start, ident.len);
    if (!e->name) return parse_oom(P);
    return 0;
}

/* key = value {, key = value} up to `close`; appends to *args. */
static int parse_arg_list(Parser *P, TokKind close, const char *close_what, MilArg **args, int *n_args) {
    int cap = 8, n = 0;
    MilArg *a = arena_alloc(P->arena, (size_t)cap * sizeof *a);
    if (!a) return parse_oom(P);
    if (!tok_is(P, close)) {
        for (;;) {
            if (n == cap) {
                MilArg *grown = arena_alloc(P->arena, (size_t)cap * 2 * sizeof *grown);
                if (!grown) return parse_oom(P);
                memcpy(grown, a, (size_t)n * sizeof *a);
                a = grown;
                cap *= 2;
            }
            if (take_ident(P, "an argument name", &a[n].key, &a[n].pos)) return -1;
            if (expect(P, TK_EQ, "'=' after the argument name")) return -1;
            if (parse_value(P, &a[n].val, 1)) return -1;
            n++;
            if (tok_is(P, TK_COMMA)) {
                lex_next(P);
                continue;
            }
            break;
        }
    }
    if (expect(P, close, close_what)) return -1;
    *args = a;
    *n_args = n;
    return 0;
}

/* TYPE NAME = OP(args)[attrs]; */
static int parse_stmt(Parser *P, MilStmt *s) {
    memset(s, 0, sizeof *s);
    s->pos = P->tok.pos;
    if (parse_type(P, &s->type, "a statement's type (such as tensor<fp16, [...]>) or '}'")) return -1;
    if (take_ident(P, "the name of the value", &s->name, &s->name_pos)) return -1;
    if (expect(P, TK_EQ, "'=' after the value's name")) return -1;
    if (take_ident(P, "an op name", &s->op, &s->op_pos)) return -1;
    if (expect(P, TK_LPAREN, "'(' after the op name")) return -1;
    if (parse_arg_list(P, TK_RPAREN, "',' or ')' after an argument", &s->args, &s->n_args)) return -1;
    if (tok_is(P, TK_LBRACK)) {
        lex_next(P);
        if (parse_arg_list(P, TK_RBRACK, "',' or ']' after an attribute", &s->attrs, &s->n_attrs)) return -1;
    }
    return expect(P, TK_SEMI, "';' ending the statement");
}

/* [key = dict<string, string>({{"k", "v"}, ...}), ...] before the program body. */
static int parse_program_attrs(Parser *P) {
    lex_next(P); /* [ */
    for (;;) {
        const char *key;
        if (take_ident(P, "an attribute name such as buildInfo", &key, NULL)) return -1;
        if (expect(P, TK_EQ, "'=' after the attribute name")) return -1;
        if (expect_word(P, "dict", "dict<string, string>(...)")) return -1;
        if (expect(P, TK_LT, "'<' after dict")) return -1;
        MilType kt, vt;
        if (parse_type(P, &kt, "the dict key type")) return -1;
        if (expect(P, TK_COMMA, "',' in dict<K, V>")) return -1;
        if (parse_type(P, &vt, "the dict value type")) return -1;
        if (kt.dtype != MIL_DT_STRING || kt.is_tensor || vt.dtype != MIL_DT_STRING || vt.is_tensor)
            return parse_fail_at(P, P->tok.pos, "only dict<string, string> attributes are supported");
        if (expect(P, TK_GT, "'>' closing dict<string, string>")) return -1;
        if (expect(P, TK_LPAREN, "'(' after the dict type")) return -1;
        if (expect(P, TK_LBRACE, "'{' opening the dict entries")) return -1;
        if (!tok_is(P, TK_RBRACE)) {
            for (;;) {
                const char *k, *v;
                if (expect(P, TK_LBRACE, "'{' opening a {\"key\", \"value\"} entry")) return -1;
                if (take_string(P, "the entry's key string", &k)) return -1;
                if (expect(P, TK_COMMA, "',' between key and value")) return -1;
                if (take_string(P, "the entry's value string", &v)) return -1;
                if (expect(P, TK_RBRACE, "'}' closing the entry")) return -1;
                if (tok_is(P, TK_COMMA)) {
                    lex_next(P);
                    continue;
                }
                break;
            }
        }
        if (expect(P, TK_RBRACE, "',' or '}' after a dict entry")) return -1;
        if (expect(P, TK_RPAREN, "')' closing the dict")) return -1;
        if (tok_is(P, TK_COMMA)) {
            lex_next(P);
            continue;
        }
        break;
    }
    return expect(P, TK_RBRACK, "',' or ']' closing the program attributes");
}

static int parse_function(Parser *P, MilAst *ast) {
    if (expect_word(P, "func", "'func'")) return -1;
    if (take_ident(P, "the function name", &ast->func_name, &ast->func_pos)) return -1;
    if (expect(P, TK_LT, "'<' opening the opset such as <ios18>")) return -1;
    if (take_ident(P, "an opset such as ios18", &ast->opset, &ast->opset_pos)) return -1;
    if (expect(P, TK_GT, "'>' closing the opset")) return -1;
    if (expect(P, TK_LPAREN, "'(' opening the function inputs")) return -1;

    int cap = 2;
    ast->inputs = arena_alloc(P->arena, (size_t)cap * sizeof *ast->inputs);
    if (!ast->inputs) return parse_oom(P);
    if (!tok_is(P, TK_RPAREN)) {
        for (;;) {
            if (ast->n_inputs == cap) {
                MilParam *grown = arena_alloc(P->arena, (size_t)cap * 2 * sizeof *grown);
                if (!grown) return parse_oom(P);
                memcpy(grown, ast->inputs, (size_t)cap * sizeof *grown);
                ast->inputs = grown;
                cap *= 2;
            }
            MilParam *in = &ast->inputs[ast->n_inputs];
            in->pos = P->tok.pos;
            if (parse_type(P, &in->type, "an input type such as tensor<fp16, [1, C, 1, S]>")) return -1;
            if (take_ident(P, "the input's name", &in->name, NULL)) return -1;
            ast->n_inputs++;
            if (tok_is(P, TK_COMMA)) {
                lex_next(P);
                continue;
            }
            break;
        }
    }
    if (expect(P, TK_RPAREN, "',' or ')' after a function input")) return -1;
    if (expect(P, TK_LBRACE, "'{' opening the function body")) return -1;

    cap = 32;
    ast->stmts = arena_alloc(P->arena, (size_t)cap * sizeof *ast->stmts);
    if (!ast->stmts) return parse_oom(P);
    while (!tok_is(P, TK_RBRACE)) {
        if (ast->n_stmts == cap) {
            MilStmt *grown = arena_alloc(P->arena, (size_t)cap * 2 * sizeof *grown);
            if (!grown) return parse_oom(P);
            memcpy(grown, ast->stmts, (size_t)cap * sizeof *grown);
            ast->stmts = grown;
            cap *= 2;
        }
        if (parse_stmt(P, &ast->stmts[ast->n_stmts])) return -1;
        ast->n_stmts++;
    }
    lex_next(P); /* } */
    ast->outputs_pos = P->tok.pos;
    if (expect(P, TK_ARROW, "'->' after the function body")) return -1;
    if (expect(P, TK_LPAREN, "'(' opening the function outputs")) return -1;
    cap = 2;
    ast->outputs = arena_alloc(P->arena, (size_t)cap * sizeof *ast->outputs);
    if (!ast->outputs) return parse_oom(P);
    for (;;) {
        if (ast->n_outputs == cap) {
            MilRet *grown = arena_alloc(P->arena, (size_t)cap * 2 * sizeof *grown);
            if (!grown) return parse_oom(P);
            memcpy(grown, ast->outputs, (size_t)cap * sizeof *grown);
            ast->outputs = grown;
            cap *= 2;
        }
        MilRet *r = &ast->outputs[ast->n_outputs];
        if (take_ident(P, "the name of an output value", &r->name, &r->pos)) return -1;
        ast->n_outputs++;
        if (tok_is(P, TK_COMMA)) {
            lex_next(P);
            continue;
        }
        break;
    }
    if (expect(P, TK_RPAREN, "',' or ')' after an output name")) return -1;
    return expect(P, TK_SEMI, "';' after the function outputs");
}

int mil_parse(const char *text, MilAst *ast, Err *err) {
    memset(ast, 0, sizeof *ast);
    if (!text) return err_set(err, "MIL 1:1: no text");
    ast->arena = calloc(1, sizeof *ast->arena);
    if (!ast->arena) return err_set(err, "out of memory allocating the MIL parser");
    Parser P = {.p = text, .end = text + strlen(text), .line = 1, .col = 1, .arena = ast->arena, .err = err};
    lex_next(&P);
    int rc = 0;
    if (expect_word(&P, "program", "'program' starting the MIL text") || expect(&P, TK_LPAREN, "'(' after program")) {
        rc = -1;
    } else if (!tok_is(&P, TK_NUMBER)) {
        rc = parse_expected(&P, "a program version such as 1.3");
    } else {
        ast->version_pos = P.tok.pos;
        ast->version = arena_strndup(&P, P.tok.start, P.tok.len);
        if (!ast->version) rc = parse_oom(&P);
        else lex_next(&P);
    }
    if (!rc) rc = expect(&P, TK_RPAREN, "')' after the program version");
    if (!rc && tok_is(&P, TK_LBRACK)) rc = parse_program_attrs(&P);
    if (!rc) rc = expect(&P, TK_LBRACE, "'{' opening the program body");
    if (!rc) rc = parse_function(&P, ast);
    if (!rc) rc = expect(&P, TK_RBRACE, "'}' closing the program (one function only)");
    if (!rc && !tok_is(&P, TK_EOF)) rc = parse_expected(&P, "end of text after the program");
    if (rc) {
        mil_ast_free(ast);
        return -1;
    }
    return 0;
}

void mil_ast_free(MilAst *ast) {
    if (!ast) return;
    arena_free(ast->arena);
    memset(ast, 0, sizeof *ast);
}
