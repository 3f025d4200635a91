/*
** examples.c — fine-tuning examples from JSON lines, and their rendering (see examples.h).
*/
#include "examples.h"

#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "../util/fileio.h"
#include "chat_template.h"

static const char *const format_names[3] = {"text", "completion", "chat"};

const char *example_format_name(ExampleFormat f) { return f >= 0 && f <= EXAMPLES_CHAT ? format_names[f] : "?"; }

void examples_free(ExampleSet *set) {
    free(set->text);
    free(set->parts);
    free(set->first);
    memset(set, 0, sizeof *set);
}

static int grow(void **p, size_t *cap, size_t need, size_t elem, Err *err) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q) return err_set(err, "out of memory holding %zu examples' data", need);
    *p = q;
    *cap = c;
    return 0;
}

static int add_part(ExampleSet *set, ExamplePartKind kind, const char *s, Err *err) {
    size_t len = strlen(s);
    if (grow((void **)&set->text, &set->text_cap, set->text_n + len + 1, 1, err) != 0) return -1;
    if (grow((void **)&set->parts, &set->cap_parts, set->n_parts + 1, sizeof *set->parts, err) != 0) return -1;
    memcpy(set->text + set->text_n, s, len + 1);
    set->parts[set->n_parts++] = (ExamplePart){kind, set->text_n, len};
    set->text_n += len + 1;
    return 0;
}

static const char *json_kind(const cJSON *v) {
    if (!v) return "nothing";
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsArray(v)) return "an array";
    return "an object";
}

/* The string field key of obj, or an error naming name:line and what was found. */
static const char *string_field(const cJSON *obj, const char *key, const char *name, long line, Err *err) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!f) {
        err_set(err, "%s:%ld: expected a field \"%s\", found none", name, line, key);
        return NULL;
    }
    if (!cJSON_IsString(f)) {
        err_set(err, "%s:%ld: field \"%s\": expected a string, found %s", name, line, key, json_kind(f));
        return NULL;
    }
    return f->valuestring;
}

static int parse_messages(ExampleSet *set, const cJSON *obj, const char *name, long line, Err *err) {
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(obj, "messages");
    if (!msgs) return err_set(err, "%s:%ld: expected a field \"messages\" (chat format), found none", name, line);
    if (!cJSON_IsArray(msgs) || cJSON_GetArraySize(msgs) == 0)
        return err_set(err, "%s:%ld: field \"messages\": expected a non-empty array of messages, found %s", name, line,
                       cJSON_IsArray(msgs) ? "an empty array" : json_kind(msgs));
    /* mlx-lm's chat with tools: not rendered yet, and ignoring the definitions would train replies
    ** that call tools the prompt never shows */
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(obj, "tools");
    if (tools && !cJSON_IsNull(tools) && !(cJSON_IsArray(tools) && cJSON_GetArraySize(tools) == 0))
        return err_set(err, "%s:%ld: field \"tools\": chat with tools is not supported yet (its tool definitions "
                            "are not rendered); expected no \"tools\" (or an empty list)", name, line);
    const cJSON *m;
    int i = 0;
    cJSON_ArrayForEach(m, msgs) {
        if (!cJSON_IsObject(m))
            return err_set(err, "%s:%ld: messages[%d]: expected an object {\"role\", \"content\"}, found %s", name,
                           line, i, json_kind(m));
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (!cJSON_IsString(role))
            return err_set(err, "%s:%ld: messages[%d].role: expected a string, found %s", name, line, i,
                           json_kind(role));
        if (!cJSON_IsString(content))
            return err_set(err, "%s:%ld: messages[%d].content: expected a string, found %s", name, line, i,
                           json_kind(content));
        ExamplePartKind kind;
        if (!strcmp(role->valuestring, "system")) kind = PART_SYSTEM;
        else if (!strcmp(role->valuestring, "user")) kind = PART_USER;
        else if (!strcmp(role->valuestring, "assistant")) kind = PART_ASSISTANT;
        else
            return err_set(err, "%s:%ld: messages[%d].role: expected system, user or assistant, found '%s'", name,
                           line, i, role->valuestring);
        if (add_part(set, kind, content->valuestring, err) != 0) return -1;
        i++;
    }
    return 0;
}

/* One line's example (obj) in set->format, appended. */
static int parse_example(ExampleSet *set, const cJSON *obj, const ExampleFields *f, const char *name, long line,
                         Err *err) {
    if (grow((void **)&set->first, &set->cap, set->n + 2, sizeof *set->first, err) != 0) return -1;
    set->first[set->n] = set->n_parts;
    int rc = 0;
    if (set->format == EXAMPLES_CHAT) {
        rc = parse_messages(set, obj, name, line, err);
    } else if (set->format == EXAMPLES_COMPLETION) {
        const char *prompt = string_field(obj, f->prompt, name, line, err);
        const char *completion = prompt ? string_field(obj, f->completion, name, line, err) : NULL;
        if (!completion) rc = -1;
        else if (!*completion)
            rc = err_set(err, "%s:%ld: field \"%s\": expected a non-empty completion, found \"\"", name, line,
                         f->completion);
        else rc = add_part(set, PART_PROMPT, prompt, err) | add_part(set, PART_COMPLETION, completion, err);
    } else {
        const char *text = string_field(obj, f->text, name, line, err);
        rc = text ? add_part(set, PART_TEXT, text, err) : -1;
    }
    if (rc != 0) return -1;
    set->n++;
    set->first[set->n] = set->n_parts;
    return 0;
}

int examples_parse(ExampleSet *set, const char *text, size_t size, const char *name, const ExampleFields *fields,
                   Err *err) {
    memset(set, 0, sizeof *set);
    ExampleFields f = {"text", "prompt", "completion"};
    if (fields) {
        if (fields->text) f.text = fields->text;
        if (fields->prompt) f.prompt = fields->prompt;
        if (fields->completion) f.completion = fields->completion;
    }
    long line = 0;
    size_t pos = 0;
    int rc = 0;
    while (pos < size && rc == 0) {
        const char *p = text + pos;
        const char *nl = memchr(p, '\n', size - pos);
        size_t len = nl ? (size_t)(nl - p) : size - pos;
        pos += len + (nl ? 1 : 0);
        line++;
        size_t k = 0;
        while (k < len && (p[k] == ' ' || p[k] == '\t' || p[k] == '\r')) k++;
        if (k == len) continue; /* blank */
        cJSON *obj = cJSON_ParseWithLength(p, len);
        if (!obj) {
            rc = err_set(err, "%s:%ld: expected a JSON object, found invalid JSON", name, line);
            break;
        }
        if (!cJSON_IsObject(obj)) {
            rc = err_set(err, "%s:%ld: expected a JSON object, found %s", name, line, json_kind(obj));
        } else {
            if (set->n == 0) { /* the first example decides the format, as mlx-lm's create_dataset */
                if (cJSON_GetObjectItemCaseSensitive(obj, "messages")) set->format = EXAMPLES_CHAT;
                else if (cJSON_GetObjectItemCaseSensitive(obj, f.prompt) &&
                         cJSON_GetObjectItemCaseSensitive(obj, f.completion))
                    set->format = EXAMPLES_COMPLETION;
                else if (cJSON_GetObjectItemCaseSensitive(obj, f.text)) set->format = EXAMPLES_TEXT;
                else
                    rc = err_set(err,
                                 "%s:%ld: expected a field \"messages\" (chat), \"%s\" and \"%s\" (completion) or "
                                 "\"%s\" (text), found none",
                                 name, line, f.prompt, f.completion, f.text);
            }
            if (rc == 0) rc = parse_example(set, obj, &f, name, line, err);
        }
        cJSON_Delete(obj);
    }
    if (rc == 0 && set->n == 0) rc = err_set(err, "%s: expected at least one example (a JSON line), found none", name);
    if (rc != 0) examples_free(set);
    return rc;
}

int examples_read(ExampleSet *set, const char *path, const ExampleFields *fields, Err *err) {
    memset(set, 0, sizeof *set);
    size_t size;
    char *text = file_read_all(path, &size, err);
    if (!text) return -1;
    int rc = examples_parse(set, text, size, path, fields, err);
    free(text);
    return rc;
}

/* ---------------------------------------------------------------- rendering */

void rendered_examples_free(RenderedExamples *r) {
    free(r->ids);
    free(r->counted);
    free(r->start);
    memset(r, 0, sizeof *r);
}

typedef struct {
    const Tokenizer *tok;
    RenderedExamples *out;
    TokenIds scratch;
    int add_bos; /* the next piece is the example's first: BOS as the tokenizer adds it */
    Err *err;
    /* consecutive pieces of the same flag are encoded together, as one text */
    char *pending;
    size_t pending_n, pending_cap;
    int pending_counted;
} Render;

static int push_tokens(Render *r, const int32_t *ids, size_t n, int counted) {
    RenderedExamples *o = r->out;
    if (o->n + n > o->cap) {
        size_t cap = o->cap ? o->cap : 4096;
        while (cap < o->n + n) cap *= 2;
        int32_t *ids2 = realloc(o->ids, cap * sizeof *ids2);
        if (ids2) o->ids = ids2;
        uint8_t *c2 = ids2 ? realloc(o->counted, cap) : NULL;
        if (c2) o->counted = c2;
        if (!ids2 || !c2) return err_set(r->err, "out of memory holding %zu rendered tokens", o->n + n);
        o->cap = cap;
    }
    memcpy(o->ids + o->n, ids, n * sizeof *ids);
    memset(o->counted + o->n, counted ? 1 : 0, n);
    o->n += n;
    return 0;
}

static int flush(Render *r) {
    if (r->pending_n == 0 && !r->add_bos) return 0;
    r->scratch.n = 0;
    if (tokenizer_encode(r->tok, r->pending, r->pending_n, r->add_bos, &r->scratch, r->err) != 0) return -1;
    r->add_bos = 0;
    r->pending_n = 0;
    return push_tokens(r, r->scratch.ids, r->scratch.n, r->pending_counted);
}

static int render_emit(void *ctx, const char *text, size_t len, int counted) {
    Render *r = ctx;
    if (r->pending_n > 0 && counted != r->pending_counted && flush(r) != 0) return -1;
    if (grow((void **)&r->pending, &r->pending_cap, r->pending_n + len, 1, r->err) != 0) return -1;
    memcpy(r->pending + r->pending_n, text, len);
    r->pending_n += len;
    r->pending_counted = counted;
    return 0;
}

int examples_render(const ExampleSet *set, const Tokenizer *tok, int think_block, const char *name,
                    RenderedExamples *out, Err *err) {
    memset(out, 0, sizeof *out);
    int eos = tokenizer_eos_id(tok);
    if (set->format != EXAMPLES_CHAT && eos < 0)
        return err_set(err, "%s: %s examples end with EOS, but the tokenizer has none", name,
                       example_format_name(set->format));
    if (set->format == EXAMPLES_CHAT &&
        (tokenizer_piece_to_id(tok, "<|im_start|>", 12) < 0 || tokenizer_piece_to_id(tok, "<|im_end|>", 10) < 0))
        return err_set(err,
                       "%s: chat examples (\"messages\") take the model's chat template, and this model has none "
                       "(its tokenizer has no <|im_start|> and <|im_end|>): use the text or prompt/completion format",
                       name);
    out->start = malloc((set->n + 1) * sizeof *out->start);
    if (!out->start) return err_set(err, "out of memory holding %zu examples", set->n);
    Render r;
    memset(&r, 0, sizeof r);
    r.tok = tok;
    r.out = out;
    r.err = err;
    ChatMessage *msgs = NULL;
    int rc = 0;
    for (size_t i = 0; i < set->n && rc == 0; i++) {
        out->start[i] = out->n;
        r.add_bos = 1;
        size_t p0 = set->first[i], p1 = set->first[i + 1];
        if (set->format == EXAMPLES_CHAT) {
            ChatMessage *m = realloc(msgs, (p1 - p0) * sizeof *m);
            if (!m) {
                rc = err_set(err, "out of memory");
                break;
            }
            msgs = m;
            for (size_t k = p0; k < p1; k++) {
                const ExamplePart *part = &set->parts[k];
                ChatRole role = part->kind == PART_SYSTEM ? CHAT_SYSTEM
                                : part->kind == PART_USER ? CHAT_USER
                                                          : CHAT_ASSISTANT;
                msgs[k - p0] = (ChatMessage){role, set->text + part->off, part->len};
            }
            rc = chatml_render(msgs, (int)(p1 - p0), 0, think_block, render_emit, &r);
            if (rc == 0) rc = flush(&r);
        } else {
            for (size_t k = p0; k < p1 && rc == 0; k++) {
                const ExamplePart *part = &set->parts[k];
                rc = render_emit(&r, set->text + part->off, part->len, part->kind != PART_PROMPT);
                if (rc == 0) rc = flush(&r); /* prompt and completion are encoded apart */
            }
            int32_t e = eos;
            if (rc == 0) rc = push_tokens(&r, &e, 1, 1);
        }
    }
    out->start[set->n] = out->n;
    out->n_examples = set->n;
    free(msgs);
    free(r.pending);
    token_ids_free(&r.scratch);
    if (rc != 0) {
        rendered_examples_free(out);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- batches of examples */

void example_batches_free(ExampleBatches *eb) {
    free(eb->order);
    free(eb->counted);
    free(eb->perm);
    memset(eb, 0, sizeof *eb);
}

/* Counted targets of example i in a row of T (targets ids[1, min(n, T+1))). */
static uint32_t row_counted(const RenderedExamples *r, size_t i, int T, int mask_prompt) {
    size_t s = r->start[i], n = r->start[i + 1] - s;
    size_t last = n < (size_t)T + 1 ? n : (size_t)T + 1;
    if (!mask_prompt) return last > 1 ? (uint32_t)(last - 1) : 0;
    uint32_t k = 0;
    for (size_t t = 1; t < last; t++) k += r->counted[s + t];
    return k;
}

static const RenderedExamples *sort_r; /* qsort has no context argument */

static int by_length(const void *a, const void *b) {
    size_t i = *(const size_t *)a, j = *(const size_t *)b;
    size_t ni = sort_r->start[i + 1] - sort_r->start[i], nj = sort_r->start[j + 1] - sort_r->start[j];
    if (ni != nj) return ni < nj ? -1 : 1;
    return i < j ? -1 : i > j;
}

int example_batches_init(ExampleBatches *eb, const RenderedExamples *r, size_t begin, size_t end, int B, int T,
                         int mask_prompt, int32_t pad_id, const char *name, Err *err) {
    memset(eb, 0, sizeof *eb);
    eb->r = r;
    eb->B = B;
    eb->T = T;
    eb->mask_prompt = mask_prompt;
    eb->pad_id = pad_id;
    size_t n = end > begin ? end - begin : 0;
    eb->order = malloc((n ? n : 1) * sizeof *eb->order);
    eb->counted = malloc((n ? n : 1) * sizeof *eb->counted);
    if (!eb->order || !eb->counted) {
        example_batches_free(eb);
        return err_set(err, "out of memory holding %zu examples' rows", n);
    }
    for (size_t i = begin; i < end; i++) {
        if (r->start[i + 1] - r->start[i] > (size_t)T + 1) eb->n_truncated++;
        if (row_counted(r, i, T, mask_prompt) == 0) eb->n_dropped++;
        else eb->order[eb->n_kept++] = i;
    }
    if (eb->n_kept == 0) {
        size_t dropped = eb->n_dropped;
        example_batches_free(eb);
        return err_set(err, "%s: expected an example with a target to learn, found none among %zu (%zu dropped: %s)",
                       name, n, dropped,
                       mask_prompt ? "no completion token within --seq" : "fewer than two tokens");
    }
    sort_r = r;
    qsort(eb->order, eb->n_kept, sizeof *eb->order, by_length);
    sort_r = NULL;
    for (size_t k = 0; k < eb->n_kept; k++) {
        eb->counted[k] = row_counted(r, eb->order[k], T, mask_prompt);
        eb->n_counted += eb->counted[k];
    }
    eb->n_batches = eb->n_kept / (size_t)B;
    eb->perm = malloc((eb->n_batches ? eb->n_batches : 1) * sizeof *eb->perm);
    if (!eb->perm) {
        example_batches_free(eb);
        return err_set(err, "out of memory holding %zu examples' rows", n);
    }
    return 0;
}

size_t example_batches_train_first(ExampleBatches *eb, uint64_t seed, uint64_t k) {
    size_t nb = eb->n_batches;
    uint64_t epoch = k / nb;
    if (!eb->perm_valid || eb->perm_epoch != epoch) { /* this epoch's shuffle (Fisher-Yates) */
        Rng rng;
        rng_seed(&rng, seed ^ 0x6a736f6e6cull ^ (epoch * 0x9e3779b97f4a7c15ull));
        for (size_t i = 0; i < nb; i++) eb->perm[i] = i;
        for (size_t i = 0; i + 1 < nb; i++) {
            size_t j = i + (size_t)rng_below(&rng, nb - i);
            size_t t = eb->perm[i];
            eb->perm[i] = eb->perm[j];
            eb->perm[j] = t;
        }
        eb->perm_epoch = epoch;
        eb->perm_valid = 1;
    }
    return eb->perm[k % nb] * (size_t)eb->B;
}

long long example_batches_counted(const ExampleBatches *eb, size_t first, int n) {
    long long k = 0;
    for (int b = 0; b < n && first + (size_t)b < eb->n_kept; b++) k += eb->counted[first + (size_t)b];
    return k;
}

long long example_batches_fill(const ExampleBatches *eb, size_t first, int n, int32_t *inputs, int32_t *targets) {
    const RenderedExamples *r = eb->r;
    int T = eb->T;
    long long counted = 0;
    for (int b = 0; b < n; b++) {
        int32_t *in = inputs + (size_t)b * T, *tg = targets + (size_t)b * T;
        size_t i = eb->order[first + (size_t)b], s = r->start[i], len = r->start[i + 1] - s;
        size_t real = len - 1 < (size_t)T ? len - 1 : (size_t)T; /* positions with a next token */
        for (size_t t = 0; t < real; t++) {
            in[t] = r->ids[s + t];
            int counts = !eb->mask_prompt || r->counted[s + t + 1];
            tg[t] = counts ? r->ids[s + t + 1] : -1;
            counted += counts;
        }
        for (size_t t = real; t < (size_t)T; t++) {
            in[t] = eb->pad_id;
            tg[t] = -1;
        }
    }
    return counted;
}
