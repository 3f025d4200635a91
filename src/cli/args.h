/*
** args.h — command-line parsing helpers shared by the subcommands.
**
** Flags take their value as the next argument or after '=' (--steps 100, --steps=100).
** Every parse names the flag, what it expected and what it found.
*/
#ifndef ANETRAIN_ARGS_H
#define ANETRAIN_ARGS_H

#include <stdint.h>

#include "../util/clock.h"
#include "../util/err.h"

/* 1 if argv[*i] is `name` or `name=...`: *value gets the value and *i is advanced past a
** separate value. -1 (with err) if the value is missing. 0 if argv[*i] is another flag. */
int arg_value(int argc, char **argv, int *i, const char *name, const char **value, Err *err);

int parse_int(const char *flag, const char *s, long min, long max, int *out, Err *err);
int parse_long(const char *flag, const char *s, long min, long max, long *out, Err *err);
int parse_u64(const char *flag, const char *s, uint64_t *out, Err *err);
int parse_float(const char *flag, const char *s, double min, double max, float *out, Err *err);
int parse_double(const char *flag, const char *s, double min, double max, double *out, Err *err);

/* Table-driven parsing: each subcommand lists its flags once. */
typedef enum { ARG_STR, ARG_INT, ARG_LONG, ARG_FLOAT, ARG_DOUBLE, ARG_U64, ARG_BOOL } ArgType;

typedef struct {
    const char *name; /* "--steps" */
    ArgType type;
    void *dest;       /* const char **, int *, long *, float *, double *, uint64_t *, or int * (BOOL: set to 1) */
    double min, max;  /* inclusive range for numbers */
    int *given;       /* optional: set to 1 when the flag appears */
} ArgSpec;

/* Parses argv[1..argc) against specs. Arguments not starting with "--" are positional: they
** are collected into positional[0..max_positional) and counted in *n_positional (an error
** if there are more). Unknown flags are errors. */
int args_parse(int argc, char **argv, const ArgSpec *specs, int n_specs, const char **positional,
               int max_positional, int *n_positional, Err *err);

/* --grad-comm fp32|bf16 (train, finetune): *bf16 <- 1 for bf16, 0 for fp32 or NULL (the default). */
int grad_comm_parse(const char *value, int *bf16, Err *err);

/* 1 if any argument is --help or -h. */
int args_want_help(int argc, char **argv);

/* Prints "anetrain: <message>" and a hint to run --help, for the CLI's error exits. */
int cli_fail(const char *command, const Err *err);
/* Under mpirun, joins the data-parallel run (util/dist.h: dist_init); ranks other than 0 then
** print nothing on stdout: rank 0 alone prints and writes the files. One process: nothing to do. */
int cli_join_ranks(Err *err);

#endif
