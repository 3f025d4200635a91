/*
** examples.h — fine-tuning examples from JSON lines (mlx-lm's data formats), and rendering them
** to tokens with a per-token "counted" flag for masked losses.
**
** A .jsonl file holds one example per line (blank lines are skipped), in one of three formats:
**   text        {"text": "..."}
**   completion  {"prompt": "...", "completion": "..."}
**   chat        {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}
** The format is detected from the first example (messages, then prompt and completion, then
** text; mlx-lm checks prompt and completion before messages, which differs only for a line
** holding both) and every line must have it. The keys of text, prompt and completion can
** be renamed (ExampleFields: --text-field, --prompt-field, --completion-field). Other keys are
** ignored, but for a chat example's "tools" (mlx-lm's chat with tools), refused unless null or an
** empty list: tool definitions are not rendered yet. A line that is no JSON object, lacks a field of the format, holds a non-string where
** a string belongs, names an unknown role, or holds an empty completion is an error naming the
** file and its line (1-based); nothing of the file is kept then.
**
** Rendering (examples_render): each example becomes its tokens and, per token, whether it is
** "completion" (counted by a masked loss, --mask-prompt) or "prompt":
**   text        encode(text, with BOS as the tokenizer adds it) + EOS            all counted
**   completion  encode(prompt, with BOS) + encode(completion) + EOS              the completion
**                                                                              and EOS counted
**   chat        the model's chat template, ChatML (chat_template.h), special    each assistant
**               tokens as their ids                                              turn's content
**                                                                              and its <|im_end|>
** A model whose tokenizer has no <|im_start|> and <|im_end|> (the stories models, our BPE) has no
** chat template: chat examples are refused for it, with a message saying so.
*/
#ifndef ANETRAIN_EXAMPLES_H
#define ANETRAIN_EXAMPLES_H

#include <stddef.h>
#include <stdint.h>

#include "../util/err.h"
#include "../util/rng.h"
#include "tokenizer.h"

typedef enum { EXAMPLES_TEXT = 0, EXAMPLES_COMPLETION = 1, EXAMPLES_CHAT = 2 } ExampleFormat;

/* One part of an example: a text, a prompt or a completion, or a chat message of a role. */
typedef enum {
    PART_TEXT = 0,
    PART_PROMPT,
    PART_COMPLETION,
    PART_SYSTEM,
    PART_USER,
    PART_ASSISTANT
} ExamplePartKind;

typedef struct {
    ExamplePartKind kind;
    size_t off, len; /* its text: ExampleSet.text[off, off + len) (NUL-terminated there) */
} ExamplePart;

/* The keys of the text, prompt and completion fields (NULL: "text", "prompt", "completion"). */
typedef struct {
    const char *text, *prompt, *completion;
} ExampleFields;

typedef struct {
    ExampleFormat format;
    char *text;             /* every part's text, back to back */
    size_t text_n, text_cap;
    ExamplePart *parts;     /* the parts of every example, back to back */
    size_t n_parts, cap_parts;
    size_t *first;          /* example i: parts [first[i], first[i + 1]) */
    size_t n, cap;          /* examples */
} ExampleSet;

/* "text", "completion", "chat". */
const char *example_format_name(ExampleFormat f);

/* Reads the JSON lines of path into *set (zeroed first; free with examples_free). fields may be
** NULL. A file without any example is an error. */
int examples_read(ExampleSet *set, const char *path, const ExampleFields *fields, Err *err);
/* The same from a text in memory; name stands for the file in messages. */
int examples_parse(ExampleSet *set, const char *text, size_t size, const char *name, const ExampleFields *fields,
                   Err *err);
void examples_free(ExampleSet *set);

/* Tokens of rendered examples, back to back, with one counted flag per token. */
typedef struct {
    int32_t *ids;
    uint8_t *counted; /* 1: a completion token (counted by a masked loss) */
    size_t n, cap;
    size_t *start;    /* example i: tokens [start[i], start[i + 1]) (n_examples + 1 entries) */
    size_t n_examples;
} RenderedExamples;

/* Renders every example of set with tok (see the table above) into *out (zeroed first; free
** with rendered_examples_free). think_block: the template is Qwen3's (chat_template_check), whose
** last reply after the last user message starts with the empty think block (not counted). Pieces
** of one flag are encoded together (a prompt and its completion apart). Fails when the tokenizer
** has no EOS (text, completion), or for chat examples when it has no ChatML tokens (naming
** `name`, the data file, and the tokenizer's lack). */
int examples_render(const ExampleSet *set, const Tokenizer *tok, int think_block, const char *name,
                    RenderedExamples *out, Err *err);
void rendered_examples_free(RenderedExamples *r);

/* ---------------------------------------------------------------- batches of examples
** One example per row of T positions: an example of n tokens gives inputs ids[0, n-1) and
** targets ids[1, n), its first T+1 tokens only (a longer one is truncated: the rest is never
** seen, and counted). Rows are right-padded to T: inputs pad_id, targets ignored (TARGET_IGNORE,
** -1, backend.h). With causal attention no real position attends to a later (padding) key, so
** right padding needs no attention mask: a real position's loss and gradient are those of the
** example alone (tests/test_masked_parity.py checks it against PyTorch with the padding keys
** masked out). mask_prompt: a target counts only where its token is counted (examples_render:
** a completion, or a reply and its end token); otherwise every real target counts. An example
** with no counted target left (after truncation) is dropped, and counted.
**
** Order (as mlx-lm's iterate_batches): the kept examples sorted by length (their rendered token
** count, ties in file order); batch j is sorted rows [j*B, j*B + B). Training uses the
** n_kept / B whole batches (a partial last one is left out) in a random order per epoch:
** micro-batch k of the run (counting every micro-batch since step 0) is batch
** perm_e[k mod n_batches] of epoch e = k / n_batches, perm_e a Fisher-Yates shuffle drawn from
** rng_seed(seed ^ 0x6a736f6e6c ^ e * 0x9e3779b97f4a7c15): a function of the seed and k only, so
** a run is reproducible from its seed (and a resumed one reads what an uninterrupted one would). Evaluation reads every sorted row once, in order, the
** last batch possibly partial. */
typedef struct {
    const RenderedExamples *r; /* not owned */
    int B, T, mask_prompt;
    int32_t pad_id;
    size_t *order;       /* the kept examples' indices, sorted by length [n_kept] */
    uint32_t *counted;   /* counted targets of each sorted row [n_kept] */
    size_t n_kept, n_batches; /* n_batches: whole training batches, n_kept / B */
    size_t n_truncated;  /* examples of more than T+1 tokens (among the kept and the dropped) */
    size_t n_dropped;    /* examples with no counted target */
    long long n_counted; /* counted targets of all kept rows */
    size_t *perm;        /* the shuffle of epoch perm_epoch (if perm_valid) [n_batches] */
    uint64_t perm_epoch;
    int perm_valid;
} ExampleBatches;

/* The rows of examples [begin, end) of r. Fails (naming `name`) when no example is kept. */
int example_batches_init(ExampleBatches *eb, const RenderedExamples *r, size_t begin, size_t end, int B, int T,
                         int mask_prompt, int32_t pad_id, const char *name, Err *err);
void example_batches_free(ExampleBatches *eb);
/* The sorted-row index of training micro-batch k's first row (see the order above); needs
** n_batches >= 1 (the caller checks there are B examples). */
size_t example_batches_train_first(ExampleBatches *eb, uint64_t seed, uint64_t k);
/* Fills inputs and targets [n][T] with sorted rows [first, first + n); returns their counted
** targets. */
long long example_batches_fill(const ExampleBatches *eb, size_t first, int n, int32_t *inputs, int32_t *targets);
/* Counted targets of sorted rows [first, first + n). */
long long example_batches_counted(const ExampleBatches *eb, size_t first, int n);

#endif
