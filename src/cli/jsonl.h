/*
** jsonl.h — the CLI's reading of a JSON-lines example file (data/examples.h) with a model's
** tokenizer and chat template: what `finetune` and `eval` share (and finding the tokenizer).
*/
#ifndef ANETRAIN_CLI_JSONL_H
#define ANETRAIN_CLI_JSONL_H

#include "../data/examples.h"
#include "../data/tokenizer.h"
#include "../model/config.h"

/* One .jsonl file, read and rendered. */
typedef struct {
    ExampleSet set;
    RenderedExamples r;
} JsonlFile;

/* --data names JSON lines: a directory (holding train.jsonl) or a file ending in .jsonl. */
int jsonl_is_data(const char *path);

/* The model's tokenizer: tokenizer (--tokenizer), or MODEL/tokenizer.json when model is a HF
** directory; its vocabulary checked to fit cfg's; its path in tok_path. NULL on error. */
Tokenizer *jsonl_tokenizer_load(const char *model, const char *tokenizer, const ModelConfig *cfg, char *tok_path,
                                size_t size, Err *err);

/* Reads path (fields may hold NULL keys) and renders it with tok (loaded from tok_path); chat
** examples take the ChatML template of tokenizer_config (NULL: the tokenizer_config.json beside
** tok_path, an error naming --tokenizer-config when absent). Nothing is written. */
int jsonl_file_load(JsonlFile *f, const char *path, const ExampleFields *fields, const Tokenizer *tok,
                    const char *tok_path, const char *tokenizer_config, Err *err);
/* One "data" line about f (masked: the line says the loss counts completions only). */
void jsonl_file_print(const JsonlFile *f, const char *path, int masked);
void jsonl_file_free(JsonlFile *f);

#endif
