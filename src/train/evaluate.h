/*
** evaluate.h — mean loss of a model over consecutive windows of a token range.
**
** Window w reads tokens [first + w*T, first + w*T + T + 1): T inputs and their T next tokens.
** Used by `anetrain eval` (a whole file) and by training's validation at a sequence length
** of its own (--eval-seq), on any backend. Fine-tuning examples are evaluated row by row
** instead (eval_examples_loss): the mean over their counted targets.
*/
#ifndef ANETRAIN_EVALUATE_H
#define ANETRAIN_EVALUATE_H

#include <stddef.h>
#include <stdint.h>

#include "../backend/backend.h"
#include "../data/examples.h"

/* Number of whole windows of T+1 tokens at stride T in n tokens. */
size_t eval_windows(size_t n_tokens, int T);

/* Mean loss over windows [0, n_windows) of tokens[0..): batches of up to B windows through
** backend (created for at least B x T), with params and (a backend over a frozen LoRA base, else
** NULL) the adapter. inputs/targets hold B*T ids. progress, if not NULL,
** is called after each batch with the windows done so far. */
int eval_loss(Backend *backend, const float *params, const float *adapter, const int32_t *tokens, size_t n_windows,
              int B, int T, int32_t *inputs, int32_t *targets, double *loss,
              void (*progress)(size_t done, size_t total), Err *err);

/* Mean loss over the counted targets of rows' kept examples (data/examples.h), in their sorted
** order, batches of up to rows->B through backend (created for at least B x T, T = rows->T), with
** params and adapter as eval_loss; max_batches > 0 stops after that many batches. inputs/targets
** hold B*T ids. *counted (may be NULL) receives the targets counted. */
int eval_examples_loss(Backend *backend, const float *params, const float *adapter, const ExampleBatches *rows,
                       size_t max_batches, int32_t *inputs, int32_t *targets, double *loss, long long *counted,
                       void (*progress)(size_t done, size_t total), Err *err);

#endif
