/*
** jsonl.c — JSON-lines example files for the CLI (see jsonl.h).
*/
#include "jsonl.h"

#include <stdio.h>
#include <string.h>

#include "../data/chat_template.h"
#include "../util/fileio.h"

int jsonl_is_data(const char *path) {
    size_t n = strlen(path);
    return path_is_dir(path) || (n >= 6 && !strcmp(path + n - 6, ".jsonl"));
}

/* The chat template's kind (Qwen3's think block or plain ChatML) from tokenizer_config, or the
** tokenizer_config.json beside the tokenizer. */
static int chat_think_block(const char *tokenizer_config, const char *tok_path, int *think, Err *err) {
    char config[1200];
    if (tokenizer_config) {
        snprintf(config, sizeof config, "%s", tokenizer_config);
    } else {
        char dir[1100];
        snprintf(dir, sizeof dir, "%s", tok_path);
        char *slash = strrchr(dir, '/');
        if (slash) *slash = '\0';
        else snprintf(dir, sizeof dir, ".");
        snprintf(config, sizeof config, "%s/tokenizer_config.json", dir);
        if (!path_exists(config))
            return err_set(err, "--tokenizer-config: %s: no such file (chat examples take the model's chat template: "
                                "give the tokenizer_config.json that holds it)", config);
    }
    return chat_template_check(config, think, err);
}

Tokenizer *jsonl_tokenizer_load(const char *model, const char *tokenizer, const ModelConfig *cfg, char *tok_path,
                                size_t size, Err *err) {
    if (tokenizer) {
        snprintf(tok_path, size, "%s", tokenizer);
    } else {
        snprintf(tok_path, size, "%s/tokenizer.json", model);
        if (!path_is_dir(model) || !path_exists(tok_path)) {
            err_set(err, "--tokenizer: required: %s comes without a tokenizer (only a HF model directory "
                         "holding a tokenizer.json provides one); give its tokenizer.json or tokenizer.bin",
                    model);
            return NULL;
        }
    }
    Tokenizer *tok = NULL;
    if (tokenizer_load(tok_path, cfg->vocab_size, &tok, err) != 0) {
        err_wrap(err, "--tokenizer");
        return NULL;
    }
    int vocab = tokenizer_vocab_size(tok);
    if (vocab > cfg->vocab_size) {
        tokenizer_free(tok);
        err_set(err, "--tokenizer %s: vocabulary size: expected at most the model's vocab_size %d, found %d "
                     "ids (not this model's tokenizer)", tok_path, cfg->vocab_size, vocab);
        return NULL;
    }
    return tok;
}

int jsonl_file_load(JsonlFile *f, const char *path, const ExampleFields *fields, const Tokenizer *tok,
                    const char *tok_path, const char *tokenizer_config, Err *err) {
    memset(f, 0, sizeof *f);
    if (examples_read(&f->set, path, fields, err) != 0) return -1;
    int think = 0, rc = 0;
    /* without ChatML tokens there is no template: examples_render refuses chat, saying so */
    if (f->set.format == EXAMPLES_CHAT && tokenizer_piece_to_id(tok, "<|im_start|>", 12) >= 0)
        rc = chat_think_block(tokenizer_config, tok_path, &think, err);
    if (rc == 0) rc = examples_render(&f->set, tok, think, path, &f->r, err);
    if (rc != 0) {
        jsonl_file_free(f);
        return -1;
    }
    return 0;
}

void jsonl_file_print(const JsonlFile *f, const char *path, int masked) {
    printf("data    %s: %zu %s examples, %zu tokens%s\n", path, f->set.n, example_format_name(f->set.format), f->r.n,
           masked && f->set.format != EXAMPLES_TEXT ? " (loss on the completions only)" : "");
}

void jsonl_file_free(JsonlFile *f) {
    examples_free(&f->set);
    rendered_examples_free(&f->r);
}
