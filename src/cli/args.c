/*
** args.c — flag parsing and small terminal helpers for the CLI (see args.h).
*/
#include "args.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../util/dist.h"

int arg_value(int argc, char **argv, int *i, const char *name, const char **value, Err *err) {
    const char *arg = argv[*i];
    size_t n = strlen(name);
    if (strncmp(arg, name, n) != 0) return 0;
    if (arg[n] == '=') {
        *value = arg + n + 1;
        return 1;
    }
    if (arg[n] != '\0') return 0;
    if (*i + 1 >= argc) return err_set(err, "%s: expected a value after it, found the end of the command line", name);
    *value = argv[++*i];
    return 1;
}

int parse_long(const char *flag, const char *s, long min, long max, long *out, Err *err) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || errno == ERANGE)
        return err_set(err, "%s: expected an integer, found '%s'", flag, s);
    if (v < min || v > max) return err_set(err, "%s: expected an integer in [%ld, %ld], found %ld", flag, min, max, v);
    *out = v;
    return 0;
}

int parse_int(const char *flag, const char *s, long min, long max, int *out, Err *err) {
    long v = 0;
    if (parse_long(flag, s, min, max, &v, err) != 0) return -1;
    *out = (int)v;
    return 0;
}

int parse_u64(const char *flag, const char *s, uint64_t *out, Err *err) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*s == '\0' || *s == '-' || *end != '\0' || errno == ERANGE)
        return err_set(err, "%s: expected a non-negative integer, found '%s'", flag, s);
    *out = (uint64_t)v;
    return 0;
}

int parse_double(const char *flag, const char *s, double min, double max, double *out, Err *err) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (*s == '\0' || *end != '\0' || errno == ERANGE || !isfinite(v))
        return err_set(err, "%s: expected a number, found '%s'", flag, s);
    if (v < min || v > max) return err_set(err, "%s: expected a number in [%g, %g], found %g", flag, min, max, v);
    *out = v;
    return 0;
}

int parse_float(const char *flag, const char *s, double min, double max, float *out, Err *err) {
    double v = 0;
    if (parse_double(flag, s, min, max, &v, err) != 0) return -1;
    *out = (float)v;
    return 0;
}

static int parse_one(const ArgSpec *sp, const char *v, Err *err) {
    switch (sp->type) {
    case ARG_STR: *(const char **)sp->dest = v; return 0;
    case ARG_INT: return parse_int(sp->name, v, (long)sp->min, (long)sp->max, sp->dest, err);
    case ARG_LONG: return parse_long(sp->name, v, (long)sp->min, (long)sp->max, sp->dest, err);
    case ARG_FLOAT: return parse_float(sp->name, v, sp->min, sp->max, sp->dest, err);
    case ARG_DOUBLE: return parse_double(sp->name, v, sp->min, sp->max, sp->dest, err);
    case ARG_U64: return parse_u64(sp->name, v, sp->dest, err);
    case ARG_BOOL: *(int *)sp->dest = 1; return 0;
    }
    return err_set(err, "%s: internal error: unknown flag type", sp->name);
}

int args_parse(int argc, char **argv, const ArgSpec *specs, int n_specs, const char **positional,
               int max_positional, int *n_positional, Err *err) {
    if (n_positional) *n_positional = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0') {
            if (!n_positional || *n_positional >= max_positional)
                return err_set(err, "unexpected argument '%s'", arg);
            positional[(*n_positional)++] = arg;
            continue;
        }
        int matched = 0;
        for (int k = 0; k < n_specs && !matched; k++) {
            const ArgSpec *sp = &specs[k];
            if (sp->type == ARG_BOOL) {
                if (strcmp(arg, sp->name) != 0) continue;
                matched = 1;
                if (parse_one(sp, NULL, err) != 0) return -1;
            } else {
                const char *v = NULL;
                int r = arg_value(argc, argv, &i, sp->name, &v, err);
                if (r < 0) return -1;
                if (r == 0) continue;
                matched = 1;
                if (parse_one(sp, v, err) != 0) return -1;
            }
            if (sp->given) *sp->given = 1;
        }
        if (!matched) return err_set(err, "unknown option '%s'", arg);
    }
    return 0;
}

int grad_comm_parse(const char *value, int *bf16, Err *err) {
    if (!value || !strcmp(value, "fp32")) *bf16 = 0;
    else if (!strcmp(value, "bf16")) *bf16 = 1;
    else return err_set(err, "--grad-comm: expected fp32 or bf16, found '%s'", value);
    return 0;
}

int args_want_help(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return 1;
    return 0;
}

int cli_fail(const char *command, const Err *err) {
    fprintf(stderr, "anetrain %s: error: %s\n", command, err->msg);
    fprintf(stderr, "(run 'anetrain %s --help' for the manual)\n", command);
    dist_abort(1); /* one of several processes (mpirun): the others would wait for it forever */
    return 1;
}

int cli_join_ranks(Err *err) {
    if (dist_init(NULL, NULL, err) != 0) return -1;
    if (dist_rank() != 0 && !freopen("/dev/null", "w", stdout))
        return err_set(err, "rank %d: cannot silence its output (/dev/null): %s", dist_rank(), strerror(errno));
    return 0;
}
