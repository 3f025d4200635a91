/*
** cli.h — one entry point per subcommand (cli/<name>.c). Each returns the process exit
** code; only these functions and main() print to the user or decide to exit.
*/
#ifndef ANETRAIN_CLI_H
#define ANETRAIN_CLI_H

/* argv[0] of the process, set by main (the compile-budget restart re-executes it). */
extern const char *cli_program;

int cli_train(int argc, char **argv);
int cli_eval(int argc, char **argv);
int cli_convert(int argc, char **argv);
int cli_plot(int argc, char **argv);
int cli_tokenize(int argc, char **argv);
int cli_tokenizer(int argc, char **argv);
int cli_sample(int argc, char **argv);
int cli_chat(int argc, char **argv);
int cli_doctor(int argc, char **argv);
int cli_ane_plan(int argc, char **argv);
int cli_finetune(int argc, char **argv);

#endif
