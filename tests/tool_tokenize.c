/*
** tool_tokenize.c — our token ids for a file of texts, for tests/test_tokenizer_ref.sh.
**
**   tool_tokenize [options] TOKENIZER TEXTS
**
** TEXTS holds one JSON string per line; for each line the tool prints the ids of the string
** as a JSON array on one line of standard output, in order, e.g. [1,9038,2501].
**
** Options:
**   --vocab N        vocabulary size for a llama2.c tokenizer.bin (default 0: all tokens in the file)
**   --no-special     do not add what the post-processor adds (BOS for Llama-2)
**   --js-regex       read Split regexes as JavaScript does (\s with U+FEFF, without U+0085),
**                    as the JS reference tokenizers do
**   --threads N      encode on N threads (default: all CPUs)
**   --decode         print each line decoded back (as a JSON string) instead of ids
**   --throughput F   instead: encode the raw file F as one document on one thread, then its
**                    lines as documents on all threads, and print MB/s
*/
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "data/tokenizer.h"
#include "util/fileio.h"
#include "util/parallel.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int usage(void) {
    fprintf(stderr, "usage: tool_tokenize [--vocab N] [--no-special] [--js-regex] [--threads N] [--decode] "
                    "TOKENIZER TEXTS.jsonl\n       tool_tokenize [--vocab N] --throughput FILE TOKENIZER\n");
    return 2;
}

static int throughput(const Tokenizer *tok, const char *path) {
    Err err;
    size_t size;
    char *text = file_read_all(path, &size, &err);
    if (!text) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    TokenIds ids = {0};
    double t0 = now();
    if (tokenizer_encode(tok, text, size, 1, &ids, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    double t1 = now();
    printf("one document, 1 thread: %.2f MB in %.3f s = %.2f MB/s, %zu tokens\n", size / 1e6, t1 - t0,
           size / 1e6 / (t1 - t0), ids.n);
    token_ids_free(&ids);
    /* the lines as documents */
    int n = 0;
    for (size_t i = 0; i < size; i++) n += text[i] == '\n';
    n += size > 0 && text[size - 1] != '\n';
    const char **docs = malloc((size_t)n * sizeof *docs);
    size_t *lens = malloc((size_t)n * sizeof *lens);
    TokenIds *outs = calloc((size_t)n, sizeof *outs);
    int k = 0;
    for (size_t i = 0, start = 0; i <= size && k < n; i++) {
        if (i == size || text[i] == '\n') {
            docs[k] = text + start;
            lens[k++] = i - start;
            start = i + 1;
        }
    }
    t0 = now();
    if (tokenizer_encode_many(tok, docs, lens, k, 1, outs, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    t1 = now();
    size_t total = 0;
    for (int i = 0; i < k; i++) total += outs[i].n;
    printf("%d lines as documents, %d threads: %.2f MB/s, %zu tokens\n", k, parallel_threads(), size / 1e6 / (t1 - t0),
           total);
    for (int i = 0; i < k; i++) token_ids_free(&outs[i]);
    free(outs);
    free(docs);
    free(lens);
    free(text);
    return 0;
}

int main(int argc, char **argv) {
    int vocab = 0, add_special = 1, js = 0, threads = parallel_cpu_count(), decode = 0;
    const char *bench = NULL;
    int i = 1;
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        if (strcmp(argv[i], "--vocab") == 0 && i + 1 < argc)
            vocab = atoi(argv[++i]);
        else if (strcmp(argv[i], "--no-special") == 0)
            add_special = 0;
        else if (strcmp(argv[i], "--js-regex") == 0)
            js = 1;
        else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--decode") == 0)
            decode = 1;
        else if (strcmp(argv[i], "--throughput") == 0 && i + 1 < argc)
            bench = argv[++i];
        else
            return usage();
    }
    if (argc - i != (bench ? 1 : 2)) return usage();
    parallel_init(threads);
    Err err;
    Tokenizer *tok;
    if (tokenizer_load(argv[i], vocab, &tok, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    if (js && tokenizer_set_regex_dialect(tok, TOKENIZER_REGEX_JS, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    if (bench) {
        int rc = throughput(tok, bench);
        tokenizer_free(tok);
        parallel_shutdown();
        return rc;
    }
    size_t size;
    char *data = file_read_all(argv[i + 1], &size, &err);
    if (!data) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    /* one JSON string per line */
    int n = 0, cap = 1024;
    char **texts = malloc((size_t)cap * sizeof *texts);
    size_t *lens = malloc((size_t)cap * sizeof *lens);
    int line = 0;
    for (char *p = data, *end = data + size; p < end;) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        line++;
        cJSON *v = cJSON_ParseWithLength(p, len);
        if (!cJSON_IsString(v)) {
            fprintf(stderr, "%s: line %d: expected a JSON string, found %.40s\n", argv[i + 1], line, p);
            return 1;
        }
        if (n == cap) {
            cap *= 2;
            texts = realloc(texts, (size_t)cap * sizeof *texts);
            lens = realloc(lens, (size_t)cap * sizeof *lens);
        }
        texts[n] = strdup(v->valuestring); /* cJSON strings end at a NUL: the corpus has none */
        lens[n] = strlen(texts[n]);
        n++;
        cJSON_Delete(v);
        p = nl ? nl + 1 : end;
    }
    TokenIds *outs = calloc((size_t)n + 1, sizeof *outs);
    if (tokenizer_encode_many(tok, (const char *const *)texts, lens, n, add_special, outs, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    for (int k = 0; k < n; k++) {
        if (decode) {
            size_t len;
            char *s = tokenizer_decode(tok, outs[k].ids, outs[k].n, 1, &len, &err);
            if (!s) {
                fprintf(stderr, "line %d: %s\n", k + 1, err.msg);
                return 1;
            }
            cJSON *str = cJSON_CreateString(s);
            char *json = cJSON_PrintUnformatted(str);
            printf("%s\n", json);
            free(json);
            cJSON_Delete(str);
            free(s);
        } else {
            putchar('[');
            for (size_t j = 0; j < outs[k].n; j++) printf(j ? ",%d" : "%d", outs[k].ids[j]);
            putchar(']');
            putchar('\n');
        }
        token_ids_free(&outs[k]);
        free(texts[k]);
    }
    free(outs);
    free(texts);
    free(lens);
    free(data);
    tokenizer_free(tok);
    parallel_shutdown();
    return 0;
}
