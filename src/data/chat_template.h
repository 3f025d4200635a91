/*
** chat_template.h — ChatML, the chat template of Qwen3 (and of every model whose
** tokenizer_config.json has a ChatML chat_template), rendered without a Jinja engine.
**
**   <|im_start|>system\nSYSTEM<|im_end|>\n                 (a system message, where it is)
**   <|im_start|>user\nMESSAGE<|im_end|>\n
**   <|im_start|>assistant\nREPLY<|im_end|>\n
**   <|im_start|>assistant\n                                 (add_generation_prompt)
**   <think>\n\n</think>\n\n                                 (think_block: after the generation prompt,
**                                                           or before the last reply when it follows
**                                                           the last user message, as Qwen3's does)
** A reply keeps only its text after its last "</think>", leading newlines removed (Qwen3's
** content.split('</think>')[-1].lstrip('\n')). The text is handed out in pieces, each marked
** counted (a reply's text and its <|im_end|>: what a masked loss counts) or not.
*/
#ifndef ANETRAIN_CHAT_TEMPLATE_H
#define ANETRAIN_CHAT_TEMPLATE_H

#include <stddef.h>

#include "../util/err.h"

typedef enum { CHAT_SYSTEM = 0, CHAT_USER = 1, CHAT_ASSISTANT = 2 } ChatRole;

typedef struct {
    ChatRole role;
    const char *text;
    size_t len;
} ChatMessage;

/* Receives the rendered text piece by piece; nonzero stops the rendering (returned). */
typedef int (*ChatEmit)(void *ctx, const char *text, size_t len, int counted);

/* Renders messages [0, n) as above through emit. Returns 0, or emit's nonzero value. */
int chatml_render(const ChatMessage *msgs, int n, int add_generation_prompt, int think_block, ChatEmit emit,
                  void *ctx);

/* Checks that the tokenizer_config.json at path has a ChatML chat_template (a string, or the
** "default" one of a list), and sets *qwen3 when it is Qwen3's (it knows enable_thinking and
** writes exactly the empty think block above). An unknown kind is an error naming the field. */
int chat_template_check(const char *path, int *qwen3, Err *err);

#endif
