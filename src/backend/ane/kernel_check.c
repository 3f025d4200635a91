/*
** kernel_check.c — one kernel on a device against its CPU reference (kernel_check.h).
*/
#include "kernel_check.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../util/clock.h"
#include "../../util/rng.h"
#include "half.h"
#include "inspect.h"

const char *ane_check_stage_name(AneCheckStage s) {
    static const char *names[] = {"compiling", "evaluating", "comparing with the CPU reference", "done"};
    return s <= ANE_CHECK_DONE ? names[s] : "?";
}

int ane_plan_random_inputs(const AneLayerPlan *p, uint16_t *in, uint64_t seed, Err *err) {
    Rng rng;
    rng_seed(&rng, seed);
    for (int id = 0; id < AR_COUNT; id++) {
        const AneRegion *g = &p->reg[id];
        if (!g->n) continue;
        float *v = malloc(sizeof(float) * (size_t)g->n);
        if (!v) return err_set(err, "out of memory staging %lld values of region %s", g->n, ane_region_name(id));
        int is_rstd = id == AR_RSTD1 || id == AR_RSTD2 || id == AR_RSTDQ || id == AR_RSTDK;
        int is_norm = id == AR_RMS_ATT || id == AR_RMS_FFN || id == AR_QNORM || id == AR_KNORM;
        int is_scale = id >= AR_SCALE && id < AR_SCALE + ANE_LORA_MODULES;
        int is_mask = id >= AR_LORA_MASK && id < AR_LORA_MASK + ANE_LORA_MODULES;
        double sd = id >= AR_WQ && id <= AR_W2 ? 1 / sqrt((double)g->b) : id >= AR_LORA_A && id < AR_SCALE ? 0.2 : 1;
        for (long long i = 0; i < g->n; i++)
            v[i] = is_mask                          ? (float)(rng_normal(&rng) > -0.7)
                   : is_rstd || is_norm || is_scale ? (float)(1 + 0.2 * rng_normal(&rng))
                                                    : (float)(sd * rng_normal(&rng));
        ane_region_put_f32(p, in, id, v);
        free(v);
    }
    return 0;
}

static void tap_name(AneKernelId id, int t, char *buf, size_t n) {
    static const char *fwd[] = {"x_next", "att", "xh2", "rstd2", "h1", "h3", "q", "k", "v", "rstd_q", "rstd_k"};
    static const char *bwd[] = {"dxn2", "dh1", "dh3", "dq", "dk", "dv", "dxn1"};
    static const char *modules[ANE_LORA_MODULES] = {"q", "k", "v", "o", "gate", "up", "down"};
    if (id == ANE_KERNEL_LAYER_FWD)
        t < AF_LORA_U ? snprintf(buf, n, "%s", fwd[t]) : snprintf(buf, n, "u.%s", modules[t - AF_LORA_U]);
    else t < AB_LORA_V ? snprintf(buf, n, "%s", bwd[t]) : snprintf(buf, n, "v.%s", modules[t - AB_LORA_V]);
}

/* The worst output tap of kernel id: max|dev - ref| / max|ref| over its rows and all S columns. */
static double worst_tap_error(const AneLayerPlan *p, AneKernelId id, const float *dev, const float *ref, char *tap,
                              size_t tap_n) {
    const AneTap *taps = id == ANE_KERNEL_LAYER_FWD ? p->fwd : p->bwd;
    int n_taps = id == ANE_KERNEL_LAYER_FWD ? AF_COUNT : AB_COUNT, S = p->S;
    double worst = -1;
    for (int t = 0; t < n_taps; t++) {
        if (!taps[t].rows) continue;
        double emax = 0, rmax = 0;
        for (size_t i = (size_t)taps[t].off * S; i < (size_t)(taps[t].off + taps[t].rows) * S; i++) {
            double e = isfinite(dev[i]) ? fabs((double)dev[i] - (double)ref[i]) : INFINITY;
            if (e > emax) emax = e;
            if (fabs((double)ref[i]) > rmax) rmax = fabs((double)ref[i]);
        }
        double rel = rmax > 0 ? emax / rmax : emax;
        if (rel > worst) {
            worst = rel;
            tap_name(id, t, tap, tap_n);
        }
    }
    return worst < 0 ? 0 : worst;
}

int ane_program_run(AneDevice *dev, const char *mil, const AneBlob *blobs, int n_blobs, const uint16_t *in, size_t n_in,
                    float *out, size_t n_out, int evals, AneKernelCheck *c, Err *err) {
    c->reached = ANE_CHECK_COMPILE;
    double t0 = now_seconds();
    AneProgram *prog = dev->compile(dev, mil, blobs, n_blobs, err);
    c->compile_ms = (now_seconds() - t0) * 1e3;
    if (!prog) return -1;
    AneShape si, so;
    dev->program_io(prog, &si, &so);
    AneSurface *s_in = NULL, *s_out = NULL;
    int rc = -1;
    if ((size_t)si.channels * si.spatial != n_in || (size_t)so.channels * so.spatial != n_out) {
        err_set(err, "the program's I/O is [1, %d, 1, %d] -> [1, %d, 1, %d]: expected %zu -> %zu values", si.channels,
                si.spatial, so.channels, so.spatial, n_in, n_out);
        goto done;
    }
    c->reached = ANE_CHECK_EVALUATE;
    s_in = dev->surface_create(dev, n_in * 2, err);
    s_out = s_in ? dev->surface_create(dev, n_out * 2, err) : NULL;
    if (!s_out) goto done;
    uint16_t *h = dev->surface_lock(dev, s_in, 0);
    if (!h) {
        err_set(err, "cannot lock the input surface");
        goto done;
    }
    memcpy(h, in, n_in * 2);
    dev->surface_unlock(dev, s_in, 0);
    t0 = now_seconds();
    if (dev->evaluate(dev, prog, s_in, s_out, err) != 0) goto done;
    c->eval_ms = (now_seconds() - t0) * 1e3;
    if (evals > 0) {
        t0 = now_seconds();
        for (int i = 0; i < evals; i++)
            if (dev->evaluate(dev, prog, s_in, s_out, err) != 0) goto done;
        c->eval_ms = (now_seconds() - t0) * 1e3 / evals;
    }
    const uint16_t *o = dev->surface_lock(dev, s_out, 1);
    if (!o) {
        err_set(err, "cannot lock the output surface");
        goto done;
    }
    half_to_f32(out, o, n_out);
    dev->surface_unlock(dev, s_out, 1);
    rc = 0;
done:
    if (s_in) dev->surface_free(dev, s_in);
    if (s_out) dev->surface_free(dev, s_out);
    dev->release(dev, prog);
    return rc;
}

int ane_kernel_check(AneDevice *dev, const AneLayerPlan *p, AneKernelId id, const AneKernel *k, int evals,
                     AneKernelCheck *c, Err *err) {
    memset(c, 0, sizeof *c);
    size_t n_in = (size_t)p->in_C * p->in_S, n_out = (size_t)k->out.channels * k->out.spatial;
    uint16_t *in = calloc(n_in, sizeof *in);
    float *out = malloc(sizeof(float) * n_out), *ref = malloc(sizeof(float) * n_out);
    int rc = -1;
    if (!in || !out || !ref) {
        err_set(err, "out of memory for %s's surfaces ([1, %d, 1, %d] -> [1, %d, 1, %d])", k->name, p->in_C, p->in_S,
                k->out.channels, k->out.spatial);
        goto done;
    }
    if (ane_plan_random_inputs(p, in, 20250314u + (unsigned)id, err) != 0) goto done;
    if (ane_program_run(dev, k->mil, k->blobs, k->n_blobs, in, n_in, out, n_out, evals, c, err) != 0) goto done;
    c->reached = ANE_CHECK_COMPARE;
    if (ane_kernel_reference(p, id, in, ref, err) != 0) goto done;
    c->max_error = worst_tap_error(p, id, out, ref, c->worst_tap, sizeof c->worst_tap);
    c->reached = ANE_CHECK_DONE;
    rc = 0;
done:
    free(in);
    free(out);
    free(ref);
    return rc;
}
