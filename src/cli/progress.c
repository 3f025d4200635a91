/*
** progress.c — progress lines and durations for the CLI (see progress.h).
*/
#include "progress.h"

#include <math.h>
#include <stdio.h>
#include <unistd.h>

int term_is_tty(void) { return isatty(STDERR_FILENO); }

void format_duration(double seconds, char *buf, int size) {
    if (!(seconds >= 0) || seconds > 1e8) {
        snprintf(buf, (size_t)size, "?");
        return;
    }
    long s = (long)(seconds + 0.5);
    if (s >= 3600) snprintf(buf, (size_t)size, "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
    else snprintf(buf, (size_t)size, "%ld:%02ld", s / 60, s % 60);
}

void progress_print(const StepProgress *p, const StepStats *s, double ms, double elapsed, long steps_done) {
    double remaining = steps_done > 0 ? elapsed / steps_done * (double)(p->steps - s->step) : 0;
    char eta[32];
    format_duration(remaining, eta, sizeof eta);
    double tok_s = p->tokens_per_step / (ms / 1000.0);
    int width = 1;
    if (p->pad_step)
        for (long n = p->steps; n >= 10; n /= 10) width++;
    char tail[48] = "";
    if (p->show_scale)
        snprintf(tail, sizeof tail, " | scale %g%s", (double)s->loss_scale, s->skipped ? " (skipped: inf/NaN)" : "");
    else if (s->skipped)
        snprintf(tail, sizeof tail, " | skipped (inf/NaN)");
    char comm[40] = ""; /* data parallel: the step's time in the ranks' reductions */
    if (s->t_comm > 0) snprintf(comm, sizeof comm, " (%.0f ms comm)", s->t_comm * 1000.0);
    char line[296];
    snprintf(line, sizeof line, "step %*ld/%ld | loss %.4f | lr %.2e | %.0f tok/s | %.0f ms/step%s | ETA %s%s", width,
             s->step, p->steps, s->loss, (double)s->lr, tok_s, ms, comm, eta, tail);
    if (p->tty) fprintf(stderr, "\r%s\033[K", line);
    else fprintf(stdout, "%s\n", line);
    fflush(p->tty ? stderr : stdout);
}

void progress_on_step(const RunEvent *ev, void *ctx) {
    const StepProgress *p = ctx;
    const StepStats *s = ev->step;
    if (p->tty || s->step % p->print_every == 0 || s->step == p->steps || ev->has_val)
        progress_print(p, s, ev->ms, ev->elapsed, ev->steps_done);
    if (ev->has_val) {
        if (p->tty) fputc('\n', stderr);
        printf("step %ld: val_loss %.4f (perplexity %.2f)\n", s->step, ev->val_loss, exp(ev->val_loss));
        fflush(stdout);
    }
}

static volatile sig_atomic_t stop_requested;
static void on_stop_signal(int sig) {
    (void)sig;
    stop_requested = 1;
}

volatile sig_atomic_t *catch_stop_signals(void) {
    signal(SIGINT, on_stop_signal);
    signal(SIGTERM, on_stop_signal);
    return &stop_requested;
}

void progress_print_comm(const Trainer *tr, const RunReport *rep) {
    if (tr->world <= 1 || rep->steps_done <= 0) return;
    double steps = (double)rep->steps_done, bytes = (double)trainer_comm_bytes(tr);
    printf("comm    %.1f ms/step in the reductions (mean of %ld steps, %.0f%% of the step time); %.2f MB of %s "
           "gradients a step, each process sending and receiving 2(N-1)/N of it: %.2f MB\n",
           rep->t_comm / steps * 1e3, rep->steps_done, rep->t_wall > 0 ? 100.0 * rep->t_comm / rep->t_wall : 0.0,
           bytes / 1e6, tr->opt.grad_comm_bf16 ? "bf16" : "fp32", bytes * 2.0 * (tr->world - 1) / tr->world / 1e6);
}
