/*
** convert.c — `anetrain convert`: between anetrain checkpoints, llama2.c .bin and HF.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../io/model_file.h"
#include "../io/peft.h"
#include "../train/checkpoint.h"
#include "../util/fileio.h"
#include "args.h"
#include "cli.h"

static const char *convert_help =
    "usage: anetrain convert IN OUT [--to llama2c|hf|checkpoint] [--adapter DIR]\n"
    "\n"
    "Converts model weights between the formats anetrain reads. IN's format is detected:\n"
    "  anetrain checkpoint   file starting with ANECKPT (training state is dropped on export)\n"
    "  llama2.c .bin         legacy version-0 file (run.c reads it); interleaved RoPE\n"
    "  HF directory          config.json + model.safetensors (Llama or Qwen3); rotate-half RoPE\n"
    "OUT's format is --to, or else guessed from OUT: *.bin -> llama2c, *.ckpt -> checkpoint,\n"
    "anything else -> a HF directory. RoPE rows of wq/wk are permuted as the target format\n"
    "needs, so the converted model computes the same logits. llama2.c cannot hold Qwen3\n"
    "(q/k-norm) or a head_dim other than dim/heads; such a conversion is refused.\n"
    "\n"
    "  --adapter DIR   merge a LoRA adapter (a PEFT directory: adapter_config.json and\n"
    "                  adapter_model.safetensors, e.g. from `anetrain finetune`) into the weights\n"
    "                  before writing: W + (alpha/r) B A for every adapted matrix\n"
    "\n"
    "examples:\n"
    "  anetrain convert stories15M.bin stories15M-hf          # llama2.c -> HF directory\n"
    "  anetrain convert out/model.ckpt model.bin              # checkpoint -> llama2.c\n"
    "  anetrain convert stories15M.bin merged-hf --adapter out/finetune   # base + LoRA, merged\n";

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

int cli_convert(int argc, char **argv) {
    if (args_want_help(argc, argv)) {
        fputs(convert_help, stdout);
        return 0;
    }
    Err err = {{0}};
    const char *to = NULL, *adapter = NULL, *pos[2];
    int npos = 0;
    const ArgSpec specs[] = {{"--to", ARG_STR, &to, 0, 0, NULL}, {"--adapter", ARG_STR, &adapter, 0, 0, NULL}};
    if (args_parse(argc, argv, specs, 2, pos, 2, &npos, &err) != 0) return cli_fail("convert", &err);
    if (npos != 2) {
        err_set(&err, "expected two arguments IN and OUT, found %d", npos);
        return cli_fail("convert", &err);
    }
    const char *in = pos[0], *out = pos[1];
    ModelFormat target;
    if (to) {
        if (!strcmp(to, "llama2c")) target = MODEL_FORMAT_LLAMA2C;
        else if (!strcmp(to, "hf")) target = MODEL_FORMAT_HF;
        else if (!strcmp(to, "checkpoint")) target = MODEL_FORMAT_CHECKPOINT;
        else {
            err_set(&err, "--to: expected llama2c, hf or checkpoint, found '%s'", to);
            return cli_fail("convert", &err);
        }
    } else if (ends_with(out, ".bin")) {
        target = MODEL_FORMAT_LLAMA2C;
    } else if (ends_with(out, ".ckpt")) {
        target = MODEL_FORMAT_CHECKPOINT;
    } else {
        target = MODEL_FORMAT_HF;
    }
    /* The output path before the work (see train.c): a HF directory, or a file. */
    if ((target == MODEL_FORMAT_HF ? output_dir_check(out, "OUT", "model.safetensors", &err)
                                   : output_file_check(out, "OUT", &err)) != 0)
        return cli_fail("convert", &err);
    ParamLayout layout;
    float *params = NULL;
    if (model_load_any(in, &layout, &params, &err) != 0) return cli_fail("convert", &err);
    if (adapter && lora_apply(adapter, &layout, params, &err) != 0) {
        free(params);
        err_wrap(&err, "--adapter");
        return cli_fail("convert", &err);
    }
    /* Missing parent directories are created here (a HF directory itself by hf_save). */
    int rc = dir_ensure_parent(out, &err);
    if (rc == 0 && target == MODEL_FORMAT_LLAMA2C) rc = llama2c_save(out, &layout, params, &err);
    else if (rc == 0 && target == MODEL_FORMAT_HF) rc = hf_save(out, &layout, params, &err);
    else if (rc == 0) {
        TrainState state;
        memset(&state, 0, sizeof state);
        state.loss_scale = 1.0f;
        rc = ckpt_save(out, &layout, params, NULL, NULL, &state, &err);
    }
    if (rc != 0) {
        free(params);
        return cli_fail("convert", &err);
    }
    char desc[512];
    config_describe(&layout.cfg, desc, sizeof desc);
    printf("%s (%s)%s%s -> %s (%s)\nmodel %s\n", in, model_format_name(model_format_detect(in)),
           adapter ? " + LoRA adapter " : "", adapter ? adapter : "", out, model_format_name(target), desc);
    free(params);
    return 0;
}
