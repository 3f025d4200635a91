/*
** chat_template.c — ChatML rendering (see chat_template.h).
*/
#include "chat_template.h"

#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "../util/fileio.h"

static int emit_s(ChatEmit emit, void *ctx, const char *s, int counted) { return emit(ctx, s, strlen(s), counted); }

int chatml_render(const ChatMessage *msgs, int n, int add_generation_prompt, int think_block, ChatEmit emit,
                  void *ctx) {
    static const char *const starts[3] = {"<|im_start|>system\n", "<|im_start|>user\n", "<|im_start|>assistant\n"};
    int last_user = -1;
    for (int i = 0; i < n; i++)
        if (msgs[i].role == CHAT_USER) last_user = i;
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        const ChatMessage *m = &msgs[i];
        const char *text = m->text;
        size_t len = m->len;
        int reply = m->role == CHAT_ASSISTANT;
        if (reply) {
            for (const char *p = text; (p = mem_find(p, (size_t)(m->text + m->len - p), "</think>", 8)) != NULL; p += 8)
                text = p + 8;
            len = (size_t)(m->text + m->len - text);
            while (len > 0 && *text == '\n') text++, len--;
        }
        rc = emit_s(emit, ctx, starts[m->role], 0);
        if (rc == 0 && reply && think_block && !add_generation_prompt && i == n - 1 && i > last_user)
            rc = emit_s(emit, ctx, "<think>\n\n</think>\n\n", 0);
        if (rc == 0 && len > 0) rc = emit(ctx, text, len, reply);
        if (rc == 0) rc = emit_s(emit, ctx, "<|im_end|>", reply);
        if (rc == 0) rc = emit_s(emit, ctx, "\n", 0);
    }
    if (rc == 0 && add_generation_prompt) {
        rc = emit_s(emit, ctx, starts[CHAT_ASSISTANT], 0);
        if (rc == 0 && think_block) rc = emit_s(emit, ctx, "<think>\n\n</think>\n\n", 0);
    }
    return rc;
}

int chat_template_check(const char *path, int *qwen3, Err *err) {
    size_t size;
    char *text = file_read_all(path, &size, err);
    if (!text) return err_wrap(err, "--tokenizer-config");
    cJSON *root = cJSON_ParseWithLength(text, size);
    free(text);
    if (!root) return err_set(err, "%s: expected a JSON object (tokenizer_config.json), found invalid JSON", path);
    const cJSON *tpl = cJSON_GetObjectItemCaseSensitive(root, "chat_template");
    if (cJSON_IsArray(tpl)) { /* [{"name": "default", "template": "..."}, ...] */
        const cJSON *item, *pick = NULL;
        cJSON_ArrayForEach(item, tpl) {
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(item, "name");
            if (!pick || (cJSON_IsString(name) && !strcmp(name->valuestring, "default"))) pick = item;
        }
        tpl = pick ? cJSON_GetObjectItemCaseSensitive(pick, "template") : NULL;
    }
    int rc = 0;
    if (!cJSON_IsString(tpl)) {
        rc = err_set(err, "%s: field chat_template: expected a string (the Jinja chat template), found %s", path,
                     tpl ? "another JSON type" : "no such field");
    } else if (!strstr(tpl->valuestring, "<|im_start|>") || !strstr(tpl->valuestring, "<|im_end|>")) {
        rc = err_set(err,
                     "%s: field chat_template: expected a ChatML template (<|im_start|>role ... <|im_end|>, as "
                     "Qwen3's), found another kind: anetrain chat implements only ChatML",
                     path);
    } else if (strstr(tpl->valuestring, "enable_thinking")) {
        if (!strstr(tpl->valuestring, "<think>\\n\\n</think>\\n\\n"))
            rc = err_set(err,
                         "%s: field chat_template: it has enable_thinking but not the empty think block "
                         "'<think>\\n\\n</think>\\n\\n' of Qwen3's template: an unknown variant",
                         path);
        *qwen3 = 1;
    } else {
        *qwen3 = 0;
    }
    cJSON_Delete(root);
    return rc;
}
