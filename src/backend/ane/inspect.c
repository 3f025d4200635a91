/*
** inspect.c — the kernels a run would compile, checked against the device limits, and the
** plan's cost (inspect.h). Generates and checks only: no device, no compile.
*/
#include "inspect.h"

#include <stdio.h>
#include <string.h>

#include "../../util/fileio.h"
#include "emu/mil.h"

int ane_plan_inspect(const ModelConfig *cfg, const AnePlanSpec *spec, int batch, int training, AneLimits limits,
                     AnePlanReport *r, Err *err) {
    memset(r, 0, sizeof *r);
    if (batch < 1) return err_set(err, "ane plan: batch must be positive, found %d", batch);
    if (ane_plan_make(&r->plan, cfg, spec, err)) return -1;
    r->n_layers = cfg->n_layers;
    r->batch = batch;
    r->training = training != 0;
    r->limits = limits;
    r->all_pass = 1;
    for (int id = 0; id < ANE_KERNELS; id++) {
        AneKernelReport *kr = &r->kernels[id];
        if (ane_kernel_make(&r->plan, (AneKernelId)id, &kr->k, err)) {
            ane_plan_report_free(r);
            return -1;
        }
        r->n_kernels++;
        MilCheckReport rep;
        MilCheckOptions co = {0, 0, limits, &rep};
        Err cerr = {{0}};
        kr->pass = mil_check_text(kr->k.mil, kr->k.blobs, kr->k.n_blobs, &co, NULL, NULL, &cerr) == 0;
        if (!kr->pass) snprintf(kr->check, sizeof kr->check, "%s", cerr.msg);
        kr->rule = rep.rule;
        kr->max_axis = rep.max_axis;
        snprintf(kr->max_axis_value, sizeof kr->max_axis_value, "%s", rep.max_axis_value);
        if (rep.max_axis) mil_type_format(&rep.max_axis_type, kr->max_axis_type, sizeof kr->max_axis_type);
        kr->n_ops = rep.n_ops;
        kr->n_values = rep.n_values;
        if (kr->max_axis > r->max_axis) r->max_axis = kr->max_axis;
        r->all_pass &= kr->pass;
    }
    ane_plan_cost(&r->plan, r->n_layers, batch, r->training, &r->cost);
    return 0;
}

void ane_kernel_nearest_limit(const AneKernel *k, char *buf, size_t n) {
    MilCheckReport rep;
    memset(&rep, 0, sizeof rep);
    MilCheckOptions co = {0, 0, ANE_LIMITS_PROBED, &rep};
    Err cerr = {{0}};
    mil_check_text(k->mil, k->blobs, k->n_blobs, &co, NULL, NULL, &cerr);
    char type[160] = "";
    if (rep.max_axis) mil_type_format(&rep.max_axis_type, type, sizeof type);
    double width = 100.0 * k->in.spatial / ANE_MAX_AXIS, axis = 100.0 * (double)rep.max_axis / ANE_MAX_AXIS;
    char w_txt[160], a_txt[400];
    snprintf(w_txt, sizeof w_txt, "rule input-width: the input is %d wide, %.0f%% of its limit 16384", k->in.spatial,
             width);
    if (rep.max_axis)
        snprintf(a_txt, sizeof a_txt,
                 "rule axis-16384 (strict; axis-65536 under both limits): the largest axis is %lld, of '%s' %s, "
                 "%.0f%% of 16384",
                 (long long)rep.max_axis, rep.max_axis_value, type, axis);
    else snprintf(a_txt, sizeof a_txt, "rule axis-16384: the largest axis is unknown (%.200s)", cerr.msg);
    snprintf(buf, n,
             "nearest device limit (docs/ane-facts.md section 9): %s; then %s. Compiles on real chips also fail "
             "intermittently (section 8): run `anetrain doctor` with this run's --model, --seq and LoRA/int8 flags",
             axis > width ? a_txt : w_txt, axis > width ? w_txt : a_txt);
}

void ane_plan_report_free(AnePlanReport *r) {
    for (int i = 0; i < ANE_KERNELS; i++) ane_kernel_free(&r->kernels[i].k);
    r->n_kernels = 0;
}

/* Writes n bytes to path atomically. */
static int write_file(const char *path, const void *data, size_t n, Err *err) {
    AtomicFile f;
    if (atomic_file_open(&f, path, err)) return -1;
    if (atomic_file_write(&f, data, n, err)) {
        atomic_file_abort(&f);
        return -1;
    }
    return atomic_file_commit(&f, err);
}

int ane_plan_dump(const AnePlanReport *r, const char *dir, Err *err) {
    static const char prefix[] = "@model_path/";
    char path[1024];
    if (dir_ensure(dir, err)) return -1;
    for (int i = 0; i < r->n_kernels; i++) {
        const AneKernel *k = &r->kernels[i].k;
        snprintf(path, sizeof path, "%s/%s", dir, k->name);
        if (dir_ensure(path, err)) return -1;
        snprintf(path, sizeof path, "%s/%s/model.mil", dir, k->name);
        if (write_file(path, k->mil, strlen(k->mil), err)) return -1;
        if (k->n_blobs) {
            snprintf(path, sizeof path, "%s/%s/weights", dir, k->name);
            if (dir_ensure(path, err)) return -1;
        }
        for (int b = 0; b < k->n_blobs; b++) {
            const char *rel = k->blobs[b].path;
            if (strncmp(rel, prefix, sizeof prefix - 1) != 0 || strncmp(rel + sizeof prefix - 1, "weights/", 8) != 0 ||
                strchr(rel + sizeof prefix - 1 + 8, '/'))
                return err_set(err, "ane plan dump: %s blob '%s' is not \"@model_path/weights/<file>\"", k->name, rel);
            snprintf(path, sizeof path, "%s/%s/%s", dir, k->name, rel + sizeof prefix - 1);
            if (write_file(path, k->blobs[b].data, k->blobs[b].size, err)) return -1;
        }
    }
    return 0;
}
