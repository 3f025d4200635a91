/*
** fuzz_examples.c — fine-tuning examples from JSON lines: examples_parse on any bytes; what parses
** must be consistent (one format, every example's parts of that format's kinds, every text
** NUL-terminated at its length), and its rows (a stand-in rendering: one token per byte of each
** part, counted as examples_render counts it) must batch consistently: sorted by length, padded,
** the counted targets the counts say, every training micro-batch a whole batch.
*/
#include <stdlib.h>
#include <string.h>

#include "data/examples.h"
#include "fuzz_common.h"

/* A rendering with one token per byte (ids < 256), counted as examples_render counts. */
static void stand_in_render(const ExampleSet *s, RenderedExamples *r) {
    size_t n = 0;
    for (size_t k = 0; k < s->n_parts; k++) n += s->parts[k].len;
    r->ids = malloc((n + 1) * sizeof *r->ids);
    r->counted = malloc(n + 1);
    r->start = malloc((s->n + 1) * sizeof *r->start);
    FUZZ_CHECK(r->ids && r->counted && r->start, "out of memory");
    r->n = 0;
    for (size_t i = 0; i < s->n; i++) {
        r->start[i] = r->n;
        for (size_t k = s->first[i]; k < s->first[i + 1]; k++) {
            const ExamplePart *p = &s->parts[k];
            int counted = p->kind == PART_TEXT || p->kind == PART_COMPLETION || p->kind == PART_ASSISTANT;
            for (size_t j = 0; j < p->len; j++) {
                r->ids[r->n] = (uint8_t)s->text[p->off + j];
                r->counted[r->n++] = (uint8_t)counted;
            }
        }
    }
    r->start[s->n] = r->n;
    r->n_examples = s->n;
    r->cap = n + 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ExampleSet s;
    Err err;
    if (examples_parse(&s, (const char *)data, size, "in.jsonl", NULL, &err) != 0) {
        FUZZ_CHECK(s.n == 0 && !s.parts && !s.text, "a refused input keeps nothing");
        return fuzz_rejected("examples_parse", err.msg);
    }
    FUZZ_CHECK(s.n >= 1 && s.first[0] == 0 && s.first[s.n] == s.n_parts, "example bounds");
    for (size_t i = 0; i < s.n; i++) {
        size_t np = s.first[i + 1] - s.first[i];
        FUZZ_CHECK(s.format == EXAMPLES_CHAT ? np >= 1 : np == (s.format == EXAMPLES_TEXT ? 1u : 2u),
                   "example %zu: %zu parts in format %d", i, np, s.format);
        for (size_t k = s.first[i]; k < s.first[i + 1]; k++) {
            const ExamplePart *p = &s.parts[k];
            int ok = s.format == EXAMPLES_TEXT         ? p->kind == PART_TEXT
                     : s.format == EXAMPLES_COMPLETION ? p->kind == (k == s.first[i] ? PART_PROMPT : PART_COMPLETION)
                                                       : p->kind >= PART_SYSTEM && p->kind <= PART_ASSISTANT;
            FUZZ_CHECK(ok, "part %zu: kind %d in format %d", k, p->kind, s.format);
            FUZZ_CHECK(p->off + p->len < s.text_n && s.text[p->off + p->len] == '\0', "part %zu text", k);
            FUZZ_CHECK(p->kind != PART_COMPLETION || p->len > 0, "an empty completion was accepted");
        }
    }
    RenderedExamples r;
    memset(&r, 0, sizeof r);
    stand_in_render(&s, &r);
    for (int mask = 0; mask < 2; mask++) {
        ExampleBatches eb;
        enum { B = 2, T = 8 };
        if (example_batches_init(&eb, &r, 0, r.n_examples, B, T, mask, 0, "in.jsonl", &err) != 0) continue;
        FUZZ_CHECK(eb.n_kept + eb.n_dropped == r.n_examples && eb.n_batches == eb.n_kept / B, "row counts");
        long long total = 0;
        int32_t in[B * T], tg[B * T];
        for (size_t first = 0; first < eb.n_kept; first += B) {
            int nb = eb.n_kept - first < B ? (int)(eb.n_kept - first) : B;
            long long c = example_batches_fill(&eb, first, nb, in, tg);
            long long want = example_batches_counted(&eb, first, nb), seen = 0;
            for (int i = 0; i < nb * T; i++) {
                FUZZ_CHECK(tg[i] >= -1 && tg[i] < 256 && in[i] >= 0 && in[i] < 256, "ids");
                seen += tg[i] >= 0;
            }
            FUZZ_CHECK(c == want && seen == c && c > 0, "counted %lld, %lld, %lld", c, want, seen);
            total += c;
            if (first > 0) {
                size_t a = eb.order[first - 1], b = eb.order[first];
                FUZZ_CHECK(r.start[a + 1] - r.start[a] <= r.start[b + 1] - r.start[b], "sorted by length");
            }
        }
        FUZZ_CHECK(total == eb.n_counted, "total counted");
        for (uint64_t k = 0; eb.n_batches > 0 && k < 3 * eb.n_batches && k < 64; k++) {
            size_t first = example_batches_train_first(&eb, 7, k);
            FUZZ_CHECK(first % B == 0 && first + B <= eb.n_kept, "training batch at row %zu", first);
        }
        example_batches_free(&eb);
    }
    rendered_examples_free(&r);
    examples_free(&s);
    return 0;
}
