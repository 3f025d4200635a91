/*
** test_run.c — the run loop (train/run.c) on a tiny model: a whole run validates and saves on
** schedule and logs one line per step (read back with metrics_log_parse) and ends RUN_DONE with
** the checkpoint at the last step; a stop asked from the per-step callback ends RUN_INTERRUPTED
** after that step with the checkpoint there; on the emulated ANE, validation at another length
** with a compile budget that cannot hold the next evaluation's compiles ends RUN_RESTART with
** the checkpoint saved (and RUN_ERROR when not even one step could be taken first).
*/
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/tokfile.h"
#include "io/metrics_log.h"
#include "test.h"
#include "test_tiny_run.h"
#include "test_tmp.h"
#include "train/run.h"
#include "util/parallel.h"
#include "util/rng.h"

static char data_path[1024];

static void make_data(void) {
    snprintf(data_path, sizeof data_path, "%s", tmp_path("tokens.bin"));
    tiny_run_write_tokens(data_path);
}

static TrainOptions tiny_options(void) {
    TrainOptions o = tiny_run_options(data_path);
    o.steps = 6;
    o.warmup = 1;
    o.lr = 1e-3f;
    o.eval_batches = 2;
    return o;
}

/* What the callback saw, and when it asks the run to stop. */
typedef struct {
    long events, vals, last_step;
    long stop_at; /* 0: never */
    volatile sig_atomic_t *stop;
    double last_val;
} Seen;

static void on_step(const RunEvent *ev, void *ctx) {
    Seen *seen = ctx;
    seen->events++;
    seen->last_step = ev->step->step;
    if (ev->has_val) {
        seen->vals++;
        seen->last_val = ev->val_loss;
    }
    if (seen->stop_at && ev->step->step == seen->stop_at) *seen->stop = 1;
}

/* The step of the checkpoint at path (a trainer resumed from it). */
static long saved_step(const TrainOptions *base, const char *path) {
    TrainOptions o = *base;
    o.resume_path = path;
    Trainer tr;
    Err err = {{0}};
    if (trainer_init(&tr, &o, &err) != 0) {
        CHECK(0, "resume %s: %s", path, err.msg);
        return -1;
    }
    long step = (long)tr.state.step;
    trainer_free(&tr);
    return step;
}

/* Runs o with ro's schedule into log file `log_name` and checkpoint `ckpt_name`. */
static RunStatus run_once(const TrainOptions *o, RunOptions *ro, const char *log_name, const char *ckpt_name,
                          RunReport *rep, Err *err) {
    memset(rep, 0, sizeof *rep);
    Trainer tr;
    if (trainer_init(&tr, o, err) != 0) {
        CHECK(0, "trainer_init: %s", err->msg);
        return RUN_ERROR;
    }
    FILE *log = fopen(tmp_path(log_name), "w");
    CHECK(log != NULL, "open the log");
    if (!log) {
        trainer_free(&tr);
        return RUN_ERROR;
    }
    ro->log = log;
    ro->log_path = tmp_path(log_name);
    ro->save_path = tmp_path(ckpt_name);
    RunStatus st = run_training(&tr, ro, rep, err);
    fclose(log);
    trainer_free(&tr);
    return st;
}

static void test_run_done(void) {
    TrainOptions o = tiny_options();
    volatile sig_atomic_t stop = 0;
    Seen seen = {0};
    seen.stop = &stop;
    RunOptions ro = {0};
    ro.eval_every = 2;
    ro.save_every = 4;
    ro.stop = &stop;
    ro.on_step = on_step;
    ro.ctx = &seen;
    RunReport rep;
    Err err = {{0}};
    RunStatus st = run_once(&o, &ro, "done.jsonl", "done.ckpt", &rep, &err);
    CHECK(st == RUN_DONE, "status %d: %s", (int)st, err.msg);
    CHECK(rep.steps_done == 6 && rep.first_step == 0, "steps done %ld from %ld", rep.steps_done, rep.first_step);
    CHECK(rep.tokens == 6 * 2 * 32, "tokens %lld", rep.tokens);
    CHECK(seen.events == 6 && seen.vals == 3 && seen.last_step == 6, "callback: %ld events, %ld validations",
          seen.events, seen.vals);
    CHECK(rep.last_loss_n == 6, "losses within 10 of the end: %d", rep.last_loss_n);
    CHECK(isfinite(rep.last_val) && rep.last_val == seen.last_val, "last val %g", rep.last_val);
    CHECK(rep.best_val <= rep.last_val && rep.best_val_step >= 2, "best val %g at %ld", rep.best_val,
          rep.best_val_step);
    CHECK(saved_step(&o, tmp_path("done.ckpt")) == 6, "the final checkpoint is at step 6");

    size_t size = 0;
    char *text = file_read_all(tmp_path("done.jsonl"), &size, &err);
    CHECK(text != NULL, "read the log: %s", err.msg);
    if (!text) return;
    MetricsLog log = {0};
    CHECK(metrics_log_parse(text, size, "done.jsonl", &log, &err) == 0, "parse: %s", err.msg);
    CHECK(log.train.n == 6, "%zu loss points", log.train.n);
    CHECK(log.val.n == 3, "%zu val_loss points", log.val.n);
    if (log.train.n == 6 && log.val.n == 3) {
        for (size_t i = 0; i < 6; i++) CHECK(log.train.x[i] == (double)(i + 1), "step %zu", i + 1);
        CHECK(log.val.x[0] == 2 && log.val.x[1] == 4 && log.val.x[2] == 6, "validated at steps 2, 4, 6");
        CHECK(log.val.y[2] == rep.last_val, "the logged last val_loss %.17g is the reported %.17g", log.val.y[2],
              rep.last_val);
    }
    /* the keys of a line, in order (cpu, loss scaling off: neither loss_scale nor device counters) */
    const char *line2 = strchr(text, '\n') + 1;
    CHECK(!strncmp(line2, "{\"step\": 2, \"loss\": ", 20) && strstr(line2, ", \"lr\": ") &&
              strstr(line2, ", \"grad_norm\": ") && strstr(line2, ", \"tokens\": 128, \"ms\": "),
          "line 2: %.120s", line2);
    const char *val = strstr(line2, ", \"val_loss\": ");
    CHECK(val && val < strchr(line2, '\n') && strchr(val, '}') < strchr(line2, '\n') && !strstr(text, "loss_scale"),
          "val_loss last on line 2: %.200s", line2);
    metrics_log_free(&log);
    free(text);
}

static void test_run_interrupted(void) {
    TrainOptions o = tiny_options();
    volatile sig_atomic_t stop = 0;
    Seen seen = {0};
    seen.stop = &stop;
    seen.stop_at = 3;
    RunOptions ro = {0};
    ro.eval_every = 0;
    ro.save_every = 0;
    ro.eval_on_stop = 1;
    ro.stop = &stop;
    ro.on_step = on_step;
    ro.ctx = &seen;
    RunReport rep;
    Err err = {{0}};
    RunStatus st = run_once(&o, &ro, "int.jsonl", "int.ckpt", &rep, &err);
    CHECK(st == RUN_INTERRUPTED, "status %d: %s", (int)st, err.msg);
    CHECK(rep.steps_done == 3 && seen.events == 3, "stopped after step 3: %ld steps", rep.steps_done);
    CHECK(seen.vals == 0 && isfinite(rep.last_val), "validated once, at the stop: %g", rep.last_val);
    CHECK(saved_step(&o, tmp_path("int.ckpt")) == 3, "the checkpoint is at step 3");
}

/* The ANE on the emulator, validation at 16 tokens (a backend of its own per evaluation). */
static TrainOptions ane_options(int budget) {
    TrainOptions o = tiny_options();
    o.backend = "ane";
    o.ane.device = "emu";
    o.ane.compile_budget = budget;
    o.loss_scaling = LOSS_SCALE_DYNAMIC;
    return o;
}

static void test_run_restart_at_compile_budget(void) {
    /* room for the trainer's compiles and not for an evaluation's too: the run takes step 1,
    ** then stops before step 2, whose evaluation would pass the budget */
    int budget = (int)backend_ane_process_compiles() + ANE_BACKEND_COMPILES + 1;
    TrainOptions o = ane_options(budget);
    RunOptions ro = {0};
    ro.eval_every = 2;
    ro.eval_seq = 16;
    ro.log_efficiency = 1;
    RunReport rep;
    Err err = {{0}};
    RunStatus st = run_once(&o, &ro, "restart.jsonl", "restart.ckpt", &rep, &err);
    CHECK(st == RUN_RESTART, "status %d: %s", (int)st, err.msg);
    CHECK(rep.steps_done == 1 && rep.restart_step == 2, "stopped before step %ld after %ld steps", rep.restart_step,
          rep.steps_done);
    CHECK(rep.compiles_used + ANE_BACKEND_COMPILES > (unsigned long long)budget, "compiles used %llu",
          rep.compiles_used);
    size_t size = 0;
    char *text = file_read_all(tmp_path("restart.jsonl"), &size, &err);
    CHECK(text && strstr(text, "\"loss_scale\": ") && strstr(text, "\"device_evals\": "),
          "the step's line has the loss scale and the device counters: %s", text ? text : err.msg);
    free(text);
    /* the checkpoint continues (on the cpu: the same weights and state) */
    TrainOptions cpu = tiny_options();
    CHECK(saved_step(&cpu, tmp_path("restart.ckpt")) == 1, "the checkpoint is at step 1");

    /* a budget without room for the first evaluation even in a fresh process: an error */
    budget = (int)backend_ane_process_compiles() + ANE_BACKEND_COMPILES + 1;
    o = ane_options(budget);
    ro.eval_every = 1;
    st = run_once(&o, &ro, "small.jsonl", "small.ckpt", &rep, &err);
    CHECK(st == RUN_ERROR && strstr(err.msg, "too small even for a fresh process"), "status %d: %s", (int)st,
          err.msg);
    CHECK(rep.steps_done == 0 && !path_exists(tmp_path("small.ckpt")), "nothing trained, nothing saved");
}

int main(void) {
    parallel_init(2);
    tmp_dir_make("run");
    make_data();
    RUN(test_run_done);
    RUN(test_run_interrupted);
    RUN(test_run_restart_at_compile_budget);
    tmp_dir_remove();
    return TEST_SUMMARY();
}
