/*
** main.c — anetrain: train and fine-tune Llama-2 and Qwen3 models on the CPU or Apple's
** Neural Engine. Dispatches to one subcommand per file in cli/.
*/
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

#define ANETRAIN_VERSION "0.1.0"

static const char *usage =
    "anetrain " ANETRAIN_VERSION " — train and fine-tune Llama-2 and Qwen3 language models\n"
    "\n"
    "usage: anetrain <command> [options]      (anetrain <command> --help for its manual)\n"
    "\n"
    "commands:\n"
    "  train     train a model from scratch or from a checkpoint, llama2.c .bin or HF directory\n"
    "  eval      loss and perplexity of a model on a token file\n"
    "  convert   convert a model between anetrain checkpoints, llama2.c .bin and HF safetensors\n"
    "  plot      draw the loss curve of a metrics log (JSON lines) as an SVG file\n"
    "  finetune  LoRA fine-tuning of a model on a text file; saves a PEFT adapter\n"
    "  tokenize  turn text files into token files (or print their ids as JSON lines)\n"
    "  tokenizer train a BPE vocabulary on text and write a HF tokenizer.json\n"
    "  sample    generate text from a model (KV cache, temperature, top-p)\n"
    "  chat      chat with a Qwen3 model using its chat template\n"
    "  doctor    test the Neural Engine (or its emulator) with the training kernels, one process each\n"
    "  ane-plan  the Neural Engine kernels a run would compile: shapes, limits check, cost\n"
    "  help      this text\n"
    "  version   print the version\n"
    "\n"
    "example (a 15M-parameter llama2.c 'stories' model on a token file):\n"
    "  anetrain train --model stories15m --data tokens.bin --steps 2000 --out out/model.ckpt\n";

const char *cli_program = "anetrain";

int main(int argc, char **argv) {
    if (argc > 0 && argv[0]) cli_program = argv[0];
    /* A file-size limit (ulimit -f) then fails the write with EFBIG, reported like a full disk,
    ** and the writer removes its temporary file, instead of the signal killing us mid-write. */
    signal(SIGXFSZ, SIG_IGN);
    if (argc < 2 || !strcmp(argv[1], "help") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fputs(usage, stdout);
        return argc < 2 ? 1 : 0;
    }
    if (!strcmp(argv[1], "version") || !strcmp(argv[1], "--version")) {
        printf("anetrain %s\n", ANETRAIN_VERSION);
        return 0;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "train")) return cli_train(argc - 1, argv + 1);
    if (!strcmp(cmd, "eval")) return cli_eval(argc - 1, argv + 1);
    if (!strcmp(cmd, "convert")) return cli_convert(argc - 1, argv + 1);
    if (!strcmp(cmd, "plot")) return cli_plot(argc - 1, argv + 1);
    if (!strcmp(cmd, "finetune")) return cli_finetune(argc - 1, argv + 1);
    if (!strcmp(cmd, "tokenize")) return cli_tokenize(argc - 1, argv + 1);
    if (!strcmp(cmd, "tokenizer")) return cli_tokenizer(argc - 1, argv + 1);
    if (!strcmp(cmd, "sample")) return cli_sample(argc - 1, argv + 1);
    if (!strcmp(cmd, "chat")) return cli_chat(argc - 1, argv + 1);
    if (!strcmp(cmd, "doctor")) return cli_doctor(argc - 1, argv + 1);
    if (!strcmp(cmd, "ane-plan")) return cli_ane_plan(argc - 1, argv + 1);
    fprintf(stderr,
            "anetrain: unknown command '%s' (expected train, finetune, eval, convert, plot, tokenize, tokenizer, sample, "
            "chat, doctor, ane-plan, help, version)\n",
            cmd);
    return 2;
}
