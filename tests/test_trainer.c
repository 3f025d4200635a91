/*
** test_trainer.c — the trainer's own logic: the learning-rate schedule, the gradient norm's
** independence of the thread count, the clip coefficient, and dynamic loss scaling (an
** injected overflow skips exactly one step and leaves the weights untouched; the scale
** halves on overflow and doubles after a window of clean steps; with scaling the update
** equals the unscaled one).
*/
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/tokfile.h"
#include "test.h"
#include "test_tiny_run.h"
#include "train/trainer.h"
#include "util/parallel.h"

static char tmpdir[256];
static char data_path[300];

static void make_data(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/anetrain-trainer-XXXXXX");
    if (!mkdtemp(tmpdir)) exit(2);
    snprintf(data_path, sizeof data_path, "%s/tokens.bin", tmpdir);
    tiny_run_write_tokens(data_path);
}

static TrainOptions tiny_options(void) {
    TrainOptions o = tiny_run_options(data_path);
    o.order = ORDER_SEQUENTIAL;
    o.steps = 20;
    o.warmup = 0;
    o.lr = 1e-3f;
    o.min_lr = 1e-3f;
    o.loss_scale_init = 1024.0f;
    o.loss_scale_window = 3;
    return o;
}

/* ---------------------------------------------------------------- schedule */

static void test_lr_schedule(void) {
    /* warmup: (step+1)/warmup of the peak */
    CHECK_CLOSE(lr_schedule(0, 100, 10, 1.0f, 0.1f), 0.1, 1e-7, 0, "warmup step 0");
    CHECK_CLOSE(lr_schedule(9, 100, 10, 1.0f, 0.1f), 1.0, 1e-7, 0, "warmup end");
    /* cosine from the peak at step `warmup` to min_lr at the last step, half-way in the middle */
    CHECK_CLOSE(lr_schedule(10, 100, 10, 1.0f, 0.1f), 1.0, 1e-7, 0, "decay start");
    CHECK_CLOSE(lr_schedule(99, 100, 10, 1.0f, 0.1f), 0.1, 1e-7, 0, "last step");
    CHECK_CLOSE(lr_schedule(54, 100, 10, 1.0f, 0.1f), /* (54 - 10) / 89 of the way */
                0.1 + 0.45 * (1 + cos(3.14159265358979323846 * 44.0 / 89.0)), 1e-6, 0, "middle");
    CHECK_CLOSE(lr_schedule(500, 100, 10, 1.0f, 0.1f), 0.1, 1e-7, 0, "past the end stays at min_lr");
    CHECK_CLOSE(lr_schedule(37, 100, 0, 2e-3f, 2e-3f), 2e-3, 1e-10, 0, "constant");
    CHECK_CLOSE(lr_schedule(0, 1, 0, 2e-3f, 1e-4f), 2e-3, 1e-10, 0, "one step, no warmup");
}

/* ---------------------------------------------------------------- norm and clipping */

static void test_grad_norm_threads(void) {
    size_t n = 3 * 65536 + 12345; /* several blocks, a partial one */
    float *g = malloc(n * sizeof *g);
    Rng rng;
    rng_seed(&rng, 3);
    double want = 0;
    for (size_t i = 0; i < n; i++) {
        g[i] = (float)rng_normal(&rng) * (i % 1000 == 0 ? 100.0f : 0.01f);
        want += (double)g[i] * g[i];
    }
    want = sqrt(want);
    parallel_init(1);
    double one = grad_global_norm(g, n);
    parallel_init(2);
    double two = grad_global_norm(g, n);
    parallel_init(3);
    double three = grad_global_norm(g, n);
    CHECK(one == two && two == three, "norm depends on threads: %.17g %.17g %.17g", one, two, three);
    CHECK_CLOSE(one, want, 0, 1e-9, "norm vs a double sum");
    CHECK(grad_clip_coef(one, 0) == 1.0f, "clip 0 disables");
    CHECK(grad_clip_coef(1.0, 2.0f) == 1.0f, "norm below the limit: no clipping");
    CHECK_CLOSE(grad_clip_coef(4.0, 2.0f), 2.0 / (4.0 + 1e-6), 1e-7, 0, "torch's coefficient");
    free(g);
    parallel_init(1);
}

/* ---------------------------------------------------------------- loss scaling */

/* A backend that delegates to the CPU backend and turns one chosen step's gradients into inf,
** as an fp16 overflow would. */
typedef struct {
    Backend base;
    Backend *inner;
    int calls, poison_call;
    float last_grad_scale;
} PoisonBackend;

static int poison_step(Backend *self, const StepArgs *args, double *loss, Err *err) {
    PoisonBackend *pb = (PoisonBackend *)self;
    pb->last_grad_scale = args->grad_scale;
    int rc = pb->inner->step(pb->inner, args, loss, err);
    if (rc == 0 && args->grads && pb->calls++ == pb->poison_call) args->grads[17] = INFINITY;
    return rc;
}

static void poison_destroy(Backend *self) {
    PoisonBackend *pb = (PoisonBackend *)self;
    pb->inner->destroy(pb->inner);
}

static void wrap(Trainer *tr, PoisonBackend *pb, int poison_call) {
    memset(pb, 0, sizeof *pb);
    pb->base.name = "poison";
    pb->base.step = poison_step;
    pb->base.destroy = poison_destroy;
    pb->inner = tr->backend;
    pb->poison_call = poison_call;
    tr->backend = &pb->base;
}

static void test_injected_overflow_skips_one_step(void) {
    TrainOptions o = tiny_options();
    o.loss_scaling = LOSS_SCALE_DYNAMIC;
    o.loss_scale_window = 1000; /* the default, restored after tiny_options' 3 */
    Trainer tr;
    Err err;
    if (trainer_init(&tr, &o, &err) != 0) {
        CHECK(0, "trainer_init: %s", err.msg);
        return;
    }
    PoisonBackend pb;
    wrap(&tr, &pb, 3);
    size_t bytes = tr.layout.n_floats * sizeof(float);
    float *before = malloc(bytes), *m_before = malloc(bytes);
    int skipped = 0;
    for (int s = 0; s < 8; s++) {
        memcpy(before, tr.params, bytes);
        memcpy(m_before, tr.m, bytes);
        float scale_before = tr.state.loss_scale;
        StepStats st;
        CHECK(trainer_step(&tr, &st, &err) == 0, "step %d: %s", s, err.msg);
        CHECK(pb.last_grad_scale == scale_before, "step %d ran with grad_scale %g, expected the loss scale %g", s,
              (double)pb.last_grad_scale, (double)scale_before);
        if (s == 3) {
            CHECK(st.skipped == 1, "the overflowed step is skipped");
            CHECK(memcmp(before, tr.params, bytes) == 0, "skipped step left the weights untouched");
            CHECK(memcmp(m_before, tr.m, bytes) == 0, "skipped step left the moments untouched");
            CHECK(tr.state.loss_scale == scale_before / 2, "scale halved: %g -> %g", (double)scale_before,
                  (double)tr.state.loss_scale);
        } else {
            CHECK(st.skipped == 0, "step %d skipped", s);
            CHECK(memcmp(before, tr.params, bytes) != 0, "step %d updated the weights", s);
        }
        skipped += st.skipped;
    }
    CHECK(skipped == 1, "exactly one step skipped, found %d", skipped);
    CHECK(tr.state.step == 8 && tr.state.skipped_steps == 1, "step %lld, skipped %lld", (long long)tr.state.step,
          (long long)tr.state.skipped_steps);
    free(before), free(m_before);
    trainer_free(&tr);
}

static void test_scale_grows_after_window(void) {
    TrainOptions o = tiny_options(); /* window 3 */
    o.loss_scaling = LOSS_SCALE_DYNAMIC;
    Trainer tr;
    Err err;
    if (trainer_init(&tr, &o, &err) != 0) {
        CHECK(0, "trainer_init: %s", err.msg);
        return;
    }
    float seen[7];
    for (int s = 0; s < 7; s++) {
        StepStats st;
        CHECK(trainer_step(&tr, &st, &err) == 0, "step %d: %s", s, err.msg);
        seen[s] = st.loss_scale;
    }
    CHECK(seen[0] == 1024 && seen[2] == 1024 && seen[3] == 2048 && seen[5] == 2048 && seen[6] == 4096,
          "scales %g %g %g %g %g %g %g", (double)seen[0], (double)seen[1], (double)seen[2], (double)seen[3],
          (double)seen[4], (double)seen[5], (double)seen[6]);
    trainer_free(&tr);
}

/* In fp32, scaling by a power of two and dividing it out changes nothing: the same losses and
** nearly the same weights as an unscaled run (the scaled backward rounds differently only
** where a gradient is at the bottom of the float range). */
static void test_scaled_update_matches_unscaled(void) {
    TrainOptions o = tiny_options();
    Trainer a, b;
    Err err;
    o.loss_scaling = LOSS_SCALE_OFF;
    if (trainer_init(&a, &o, &err) != 0) {
        CHECK(0, "init: %s", err.msg);
        return;
    }
    o.loss_scaling = LOSS_SCALE_FIXED;
    o.loss_scale_init = 4096;
    if (trainer_init(&b, &o, &err) != 0) {
        CHECK(0, "init: %s", err.msg);
        trainer_free(&a);
        return;
    }
    for (int s = 0; s < 5; s++) {
        StepStats sa, sb;
        CHECK(trainer_step(&a, &sa, &err) == 0 && trainer_step(&b, &sb, &err) == 0, "step: %s", err.msg);
        CHECK_CLOSE(sb.loss, sa.loss, 0, 1e-6, "loss with a fixed scale");
        CHECK_CLOSE(sb.grad_norm, sa.grad_norm, 0, 1e-5, "unscaled gradient norm");
    }
    double worst = 0;
    for (size_t i = 0; i < a.layout.n_floats; i++) worst = fmax(worst, fabs(a.params[i] - b.params[i]));
    CHECK(worst < 1e-5, "weights differ by %g", worst);
    trainer_free(&a);
    trainer_free(&b);
}

static void test_overflow_without_dynamic_scaling_is_an_error(void) {
    TrainOptions o = tiny_options();
    o.loss_scaling = LOSS_SCALE_OFF;
    Trainer tr;
    Err err;
    if (trainer_init(&tr, &o, &err) != 0) {
        CHECK(0, "trainer_init: %s", err.msg);
        return;
    }
    PoisonBackend pb;
    wrap(&tr, &pb, 0);
    float *before = malloc(tr.layout.n_floats * sizeof(float));
    memcpy(before, tr.params, tr.layout.n_floats * sizeof(float));
    StepStats st;
    CHECK(trainer_step(&tr, &st, &err) != 0 && strstr(err.msg, "not finite"), "expected an error, got '%s'",
          err.msg);
    CHECK(memcmp(before, tr.params, tr.layout.n_floats * sizeof(float)) == 0, "weights untouched");
    free(before);
    trainer_free(&tr);
}

int main(void) {
    make_data();
    RUN(test_lr_schedule);
    RUN(test_grad_norm_threads);
    RUN(test_injected_overflow_skips_one_step);
    RUN(test_scale_grows_after_window);
    RUN(test_scaled_update_matches_unscaled);
    RUN(test_overflow_without_dynamic_scaling_is_an_error);
    unlink(data_path);
    rmdir(tmpdir);
    return TEST_SUMMARY();
}
