/*
** doctor.c — `anetrain doctor`: a report on the Neural Engine path for bug reports. It says
** where it runs (platform, chip, OS, BLAS), which device it uses, whether the private
** framework and each class and selector the bridge sends resolve, compiles and runs a small
** dynamic-weight matmul kernel on the device and checks it against sgemm on the CPU, and times
** a larger matmul kernel. On Linux the device is the emulator and the framework rows say why
** they are not checked.
**
** The kernels are the dynamic-weight linear pattern of docs/ane-facts.md §2.4 (activations in spatial
** columns [0, S), W[ic][oc] in the next OC columns), the one every weight-bearing training
** kernel uses, written here in full so the report does not depend on the planner.
*/
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>

#if defined(__APPLE__)
#include <sys/sysctl.h>
#endif

#include <cjson/cJSON.h>

#include "../backend/ane/darwin.h"
#include "../backend/ane/device.h"
#include "../backend/ane/emu/emu.h"
#include "../backend/ane/emu/fp16.h"
#include "../backend/ane/mil_write.h"
#include "../util/blas.h"
#include "../util/parallel.h"
#include "../util/rng.h"
#include "args.h"
#include "cli.h"

#ifndef ANETRAIN_VERSION
#define ANETRAIN_VERSION "0.1.0" /* keep in step with src/main.c */
#endif

static const char *doctor_help =
    "usage: anetrain doctor [--device auto|emu|darwin] [--ane-limits strict|probed] [--json] [--evals N]\n"
    "\n"
    "Checks the Neural Engine path end to end and prints a report to paste, whole, into a bug\n"
    "report: anetrain's version; the platform, chip and OS version; the BLAS; the device used\n"
    "(darwin: Apple's private AppleNeuralEngine framework; emu: the emulator); whether the\n"
    "framework and each class and selector the bridge sends resolve; a small dynamic-weight\n"
    "matmul kernel compiled and run on the device and compared with sgemm on the CPU; and the\n"
    "speed of a 1024x1024 matmul kernel over 512 positions (achieved TFLOP/s), with compile\n"
    "times and the compile budget used.\n"
    "\n"
    "  --device D   auto (default: darwin on macOS, emu elsewhere), emu or darwin\n"
    "  --ane-limits strict|probed\n"
    "               the device limits the kernels are checked against before they compile\n"
    "               (default strict; see train --help)\n"
    "  --json       print one JSON object instead of text\n"
    "  --evals N    timed evaluations of the big kernel (default 10; 0 skips the timing)\n"
    "\n"
    "Exits 0 when the device's result matches the CPU, 1 otherwise.\n";

/* ------------------------------------------------------------------ the report */

typedef struct {
    char sysname[256], release[256], machine[256];
    char os_version[160], cpu[160], model[96];
    int cpus;
    const char *blas;
    const char *device_requested, *device; /* device: "emu", "darwin" or NULL (none could be made) */
    AneDarwinProbe probe;
    int probe_rc;
    char device_error[ERR_MSG_MAX];
    /* the check kernel */
    int ck_ic, ck_oc, ck_s;
    int check_ran, check_pass;
    double check_err, check_tol, check_compile_ms;
    char check_error[ERR_MSG_MAX];
    /* the timing kernel */
    int tm_ic, tm_oc, tm_s, evals;
    int timing_ran;
    double timing_ms, timing_tflops, timing_compile_ms;
    char timing_error[ERR_MSG_MAX];
    uint64_t compiles_used;
    int compile_budget;
    int pass;
} Report;

static void read_first_match(const char *path, const char *key, char *out, size_t n) {
    FILE *f = fopen(path, "r");
    if (!f) return;
    char line[512];
    size_t kl = strlen(key);
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, kl) != 0) continue;
        char *v = line + kl;
        while (*v == ' ' || *v == '\t' || *v == ':' || *v == '=' || *v == '"')
            v++;
        size_t len = strcspn(v, "\"\n");
        v[len] = '\0';
        snprintf(out, n, "%s", v);
        break;
    }
    fclose(f);
}

#if defined(__APPLE__)
static void sysctl_string(const char *name, char *out, size_t n) {
    size_t len = n;
    if (sysctlbyname(name, out, &len, NULL, 0) != 0) out[0] = '\0';
    else out[len < n ? len : n - 1] = '\0';
}
#endif

static void platform_info(Report *r) {
    struct utsname u;
    if (uname(&u) == 0) {
        snprintf(r->sysname, sizeof r->sysname, "%s", u.sysname);
        snprintf(r->release, sizeof r->release, "%s", u.release);
        snprintf(r->machine, sizeof r->machine, "%s", u.machine);
    }
    r->cpus = parallel_cpu_count();
#if defined(__APPLE__)
    char product[64] = "", build[64] = "";
    sysctl_string("kern.osproductversion", product, sizeof product);
    sysctl_string("kern.osversion", build, sizeof build);
    snprintf(r->os_version, sizeof r->os_version, "macOS %s (%s)", product[0] ? product : "?", build[0] ? build : "?");
    sysctl_string("machdep.cpu.brand_string", r->cpu, sizeof r->cpu);
    sysctl_string("hw.model", r->model, sizeof r->model);
#else
    read_first_match("/etc/os-release", "PRETTY_NAME", r->os_version, sizeof r->os_version);
    read_first_match("/proc/cpuinfo", "model name", r->cpu, sizeof r->cpu);
    if (!r->cpu[0]) read_first_match("/proc/cpuinfo", "Hardware", r->cpu, sizeof r->cpu);
    read_first_match("/sys/devices/virtual/dmi/id/product_name", "", r->model, sizeof r->model);
#endif
    if (!r->os_version[0]) snprintf(r->os_version, sizeof r->os_version, "unknown");
    if (!r->cpu[0]) snprintf(r->cpu, sizeof r->cpu, "unknown");
}

/* ------------------------------------------------------------------ kernels */

/* docs/ane-facts.md §2.4, written with the training kernels' MIL writer: input [1, IC, 1, S + OC]
** (act | W[ic][oc]), output [1, OC, 1, S], y[oc][s] = sum_ic act[ic][s] W[ic][oc]. */
static char *matmul_mil(int IC, int OC, int S, Err *err) {
    MilW *w = milw_create();
    if (!w) {
        err_set(err, "out of memory writing a MIL program");
        return NULL;
    }
    MilT x = milw_input(w, IC, S + OC);
    MilT act = milw_slice(w, x, (const int[]){0, 0, 0, 0}, (const int[]){1, IC, 1, S});
    MilT wt = milw_slice(w, x, (const int[]){0, 0, 0, S}, (const int[]){1, IC, 1, OC});
    MilT a = milw_transpose(w, milw_reshape4(w, act, 1, 1, IC, S));               /* [1, 1, S, IC] */
    MilT y = milw_matmul(w, a, 0, milw_reshape4(w, wt, 1, 1, IC, OC), 0);          /* [1, 1, S, OC] */
    char *mil = milw_finish(w, milw_reshape4(w, milw_transpose(w, y), 1, OC, 1, S), err);
    milw_free(w);
    return mil;
}

typedef struct {
    AneDevice *dev;
    AneProgram *prog;
    AneSurface *in, *out;
    double compile_ms;
} Kernel;

static void kernel_free(Kernel *k) {
    if (!k->dev) return;
    k->dev->surface_free(k->dev, k->in);
    k->dev->surface_free(k->dev, k->out);
    if (k->prog) k->dev->release(k->dev, k->prog);
    memset(k, 0, sizeof *k);
}

/* Compiles the matmul kernel and stages act [IC][S] and W [IC][OC] (fp32, rounded to fp16). */
static int kernel_make(Kernel *k, AneDevice *dev, int IC, int OC, int S, const float *act, const float *W, Err *err) {
    memset(k, 0, sizeof *k);
    k->dev = dev;
    char *mil = matmul_mil(IC, OC, S, err);
    if (!mil) return -1;
    double t0 = now_seconds();
    k->prog = dev->compile(dev, mil, NULL, 0, err);
    k->compile_ms = (now_seconds() - t0) * 1e3;
    free(mil);
    if (!k->prog) return -1;
    int SP = S + OC;
    k->in = dev->surface_create(dev, (size_t)IC * SP * 2, err);
    k->out = k->in ? dev->surface_create(dev, (size_t)OC * S * 2, err) : NULL;
    if (!k->out) return -1;
    uint16_t *h = dev->surface_lock(dev, k->in, 0);
    if (!h) return err_set(err, "cannot lock the input surface");
    for (int ic = 0; ic < IC; ic++) {
        fp16_from_float_array(h + (size_t)ic * SP, act + (size_t)ic * S, (size_t)S);
        fp16_from_float_array(h + (size_t)ic * SP + S, W + (size_t)ic * OC, (size_t)OC);
    }
    dev->surface_unlock(dev, k->in, 0);
    return 0;
}

static void fill_uniform(Rng *rng, float *v, size_t n, float lo, float hi) {
    for (size_t i = 0; i < n; i++)
        v[i] = fp16_round(lo + (hi - lo) * rng_uniform(rng), 0);
}

/* Runs the small kernel and compares it with sgemm on the same fp16-rounded inputs. */
static void run_check(Report *r, AneDevice *dev) {
    int IC = r->ck_ic, OC = r->ck_oc, S = r->ck_s;
    Err err = {{0}};
    Rng rng;
    rng_seed(&rng, 20250314);
    float *act = malloc(sizeof(float) * IC * S), *W = malloc(sizeof(float) * IC * OC);
    float *ref = malloc(sizeof(float) * OC * S), *got = malloc(sizeof(float) * OC * S);
    Kernel k = {0};
    if (!act || !W || !ref || !got) {
        snprintf(r->check_error, sizeof r->check_error, "out of memory");
        goto done;
    }
    fill_uniform(&rng, act, (size_t)IC * S, -1.0f, 1.0f);
    fill_uniform(&rng, W, (size_t)IC * OC, -1.0f / sqrtf((float)IC), 1.0f / sqrtf((float)IC));
    /* Y [OC][S] = W^T act */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, S, IC, 1.0f, W, OC, act, S, 0.0f, ref, S);
    if (kernel_make(&k, dev, IC, OC, S, act, W, &err) != 0 || dev->evaluate(dev, k.prog, k.in, k.out, &err) != 0) {
        snprintf(r->check_error, sizeof r->check_error, "%s", err.msg);
        r->check_compile_ms = k.compile_ms;
        goto done;
    }
    r->check_compile_ms = k.compile_ms;
    const uint16_t *o = dev->surface_lock(dev, k.out, 1);
    if (!o) {
        snprintf(r->check_error, sizeof r->check_error, "cannot lock the output surface");
        goto done;
    }
    fp16_to_float_array(got, o, (size_t)OC * S, 0);
    dev->surface_unlock(dev, k.out, 1);
    double worst = 0;
    for (size_t i = 0; i < (size_t)OC * S; i++) {
        double e = fabs((double)got[i] - (double)ref[i]);
        if (!(e <= worst)) worst = e; /* NaN propagates */
    }
    r->check_ran = 1;
    r->check_err = worst;
    r->check_pass = worst <= r->check_tol;
done:
    kernel_free(&k);
    free(act);
    free(W);
    free(ref);
    free(got);
}

static void run_timing(Report *r, AneDevice *dev) {
    int IC = r->tm_ic, OC = r->tm_oc, S = r->tm_s;
    Err err = {{0}};
    Rng rng;
    rng_seed(&rng, 7);
    float *act = malloc(sizeof(float) * IC * S), *W = malloc(sizeof(float) * IC * OC);
    Kernel k = {0};
    if (!act || !W) {
        snprintf(r->timing_error, sizeof r->timing_error, "out of memory");
        goto done;
    }
    fill_uniform(&rng, act, (size_t)IC * S, -1.0f, 1.0f);
    fill_uniform(&rng, W, (size_t)IC * OC, -0.03f, 0.03f);
    int rc = kernel_make(&k, dev, IC, OC, S, act, W, &err);
    r->timing_compile_ms = k.compile_ms;
    if (rc == 0) rc = dev->evaluate(dev, k.prog, k.in, k.out, &err); /* warm-up */
    double t0 = now_seconds();
    for (int i = 0; rc == 0 && i < r->evals; i++)
        rc = dev->evaluate(dev, k.prog, k.in, k.out, &err);
    double secs = (now_seconds() - t0) / r->evals;
    if (rc != 0) {
        snprintf(r->timing_error, sizeof r->timing_error, "%s", err.msg);
        goto done;
    }
    r->timing_ran = 1;
    r->timing_ms = secs * 1e3;
    r->timing_tflops = 2.0 * IC * OC * S / secs * 1e-12;
done:
    kernel_free(&k);
    free(act);
    free(W);
}

/* ------------------------------------------------------------------ printing */

static void print_text(const Report *r) {
    printf("anetrain doctor (paste this whole report into a bug report)\n\n");
    printf("anetrain      %s\n", ANETRAIN_VERSION);
    printf("platform      %s %s %s\n", r->sysname, r->release, r->machine);
    printf("os            %s\n", r->os_version);
    printf("cpu           %s%s%s (%d logical CPUs)\n", r->cpu, r->model[0] ? ", " : "", r->model, r->cpus);
    printf("blas          %s\n", r->blas);
    if (r->device)
        printf("device        %s (%s) [--device %s]\n", r->device,
               strcmp(r->device, "darwin") == 0 ? "Apple Neural Engine through the private framework"
                                                : "emulated ANE: MIL checked and run in fp16 on the CPU",
               r->device_requested);
    else printf("device        none [--device %s]: %s\n", r->device_requested, r->device_error);
    if (!ane_darwin_available()) {
        printf("framework     not checked: %s\n", r->probe.framework_error);
    } else {
        printf("framework     %s: %s\n", r->probe.framework_path,
               r->probe.framework_loaded ? "loaded" : r->probe.framework_error);
        for (int i = 0; i < r->probe.n_symbols; i++) {
            const AneDarwinSymbol *s = &r->probe.symbols[i];
            char name[160];
            if (s->selector) snprintf(name, sizeof name, "  %c%s", s->class_method ? '+' : '-', s->selector);
            else snprintf(name, sizeof name, "class %s", s->class_name);
            printf("  %-70s %s%s\n", name, s->found ? "found" : "MISSING", s->required ? "" : " (optional)");
        }
        if (r->probe_rc != 0 && r->probe.framework_loaded) printf("  problem: %s\n", r->probe.framework_error);
        printf("ane subtype   %s\n", r->probe.ane_subtype[0] ? r->probe.ane_subtype : "unknown");
    }
    if (r->check_ran)
        printf("check         matmul %d -> %d channels over S=%d (in [1,%d,1,%d], out [1,%d,1,%d]) vs CPU sgemm: max "
               "|error| %.3g (tolerance %.3g): %s\n",
               r->ck_ic, r->ck_oc, r->ck_s, r->ck_ic, r->ck_s + r->ck_oc, r->ck_oc, r->ck_s, r->check_err, r->check_tol,
               r->check_pass ? "PASS" : "FAIL");
    else if (r->device) printf("check         FAIL: %s\n", r->check_error);
    else printf("check         not run: no device\n");
    if (r->timing_ran)
        printf("timing        matmul %dx%d over S=%d: %d evaluations, %.3f ms each, %.4f TFLOP/s (%.1f GFLOP/s)\n",
               r->tm_ic, r->tm_oc, r->tm_s, r->evals, r->timing_ms, r->timing_tflops, r->timing_tflops * 1e3);
    else if (r->timing_error[0]) printf("timing        failed: %s\n", r->timing_error);
    else printf("timing        not run%s\n", r->evals == 0 ? " (--evals 0)" : "");
    if (r->device)
        printf("compile       check kernel %.1f ms, timing kernel %.1f ms; budget: %llu of %d compiles used in "
               "this process\n",
               r->check_compile_ms, r->timing_compile_ms, (unsigned long long)r->compiles_used, r->compile_budget);
    printf("result        %s\n", r->pass ? "PASS" : "FAIL");
}

static void print_json(const Report *r) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "anetrain", ANETRAIN_VERSION);
    cJSON *p = cJSON_AddObjectToObject(j, "platform");
    cJSON_AddStringToObject(p, "system", r->sysname);
    cJSON_AddStringToObject(p, "release", r->release);
    cJSON_AddStringToObject(p, "machine", r->machine);
    cJSON_AddStringToObject(p, "os", r->os_version);
    cJSON_AddStringToObject(p, "cpu", r->cpu);
    cJSON_AddStringToObject(p, "model", r->model);
    cJSON_AddNumberToObject(p, "logical_cpus", r->cpus);
    cJSON_AddStringToObject(j, "blas", r->blas);
    cJSON_AddStringToObject(j, "device_requested", r->device_requested);
    if (r->device) cJSON_AddStringToObject(j, "device", r->device);
    else cJSON_AddNullToObject(j, "device");
    if (r->device_error[0]) cJSON_AddStringToObject(j, "device_error", r->device_error);
    cJSON *f = cJSON_AddObjectToObject(j, "framework");
    cJSON_AddBoolToObject(f, "available", ane_darwin_available());
    cJSON_AddStringToObject(f, "path", r->probe.framework_path);
    cJSON_AddBoolToObject(f, "loaded", r->probe.framework_loaded);
    cJSON_AddBoolToObject(f, "complete", r->probe_rc == 0);
    if (r->probe.framework_error[0]) cJSON_AddStringToObject(f, "error", r->probe.framework_error);
    cJSON_AddStringToObject(f, "ane_subtype", r->probe.ane_subtype);
    cJSON *syms = cJSON_AddArrayToObject(f, "symbols");
    for (int i = 0; i < r->probe.n_symbols; i++) {
        const AneDarwinSymbol *s = &r->probe.symbols[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "class", s->class_name);
        if (s->selector) {
            char sel[160];
            snprintf(sel, sizeof sel, "%c%s", s->class_method ? '+' : '-', s->selector);
            cJSON_AddStringToObject(o, "selector", sel);
        }
        cJSON_AddBoolToObject(o, "found", s->found);
        cJSON_AddBoolToObject(o, "required", s->required);
        cJSON_AddItemToArray(syms, o);
    }
    cJSON *c = cJSON_AddObjectToObject(j, "check");
    cJSON_AddBoolToObject(c, "ran", r->check_ran);
    cJSON_AddBoolToObject(c, "pass", r->check_pass);
    cJSON_AddNumberToObject(c, "in_channels", r->ck_ic);
    cJSON_AddNumberToObject(c, "out_channels", r->ck_oc);
    cJSON_AddNumberToObject(c, "seq", r->ck_s);
    if (r->check_ran) cJSON_AddNumberToObject(c, "max_abs_error", r->check_err);
    cJSON_AddNumberToObject(c, "tolerance", r->check_tol);
    cJSON_AddNumberToObject(c, "compile_ms", r->check_compile_ms);
    if (r->check_error[0]) cJSON_AddStringToObject(c, "error", r->check_error);
    cJSON *t = cJSON_AddObjectToObject(j, "timing");
    cJSON_AddBoolToObject(t, "ran", r->timing_ran);
    cJSON_AddNumberToObject(t, "in_channels", r->tm_ic);
    cJSON_AddNumberToObject(t, "out_channels", r->tm_oc);
    cJSON_AddNumberToObject(t, "seq", r->tm_s);
    cJSON_AddNumberToObject(t, "evals", r->evals);
    cJSON_AddNumberToObject(t, "compile_ms", r->timing_compile_ms);
    if (r->timing_ran) {
        cJSON_AddNumberToObject(t, "ms_per_eval", r->timing_ms);
        cJSON_AddNumberToObject(t, "tflops", r->timing_tflops);
    }
    if (r->timing_error[0]) cJSON_AddStringToObject(t, "error", r->timing_error);
    cJSON *b = cJSON_AddObjectToObject(j, "compile_budget");
    cJSON_AddNumberToObject(b, "used", (double)r->compiles_used);
    cJSON_AddNumberToObject(b, "budget", r->compile_budget);
    cJSON_AddBoolToObject(j, "pass", r->pass);
    char *s = cJSON_PrintUnformatted(j);
    if (s) puts(s);
    free(s);
    cJSON_Delete(j);
}

/* ------------------------------------------------------------------ the command */

int cli_doctor(int argc, char **argv) {
    if (args_want_help(argc, argv)) {
        fputs(doctor_help, stdout);
        return 0;
    }
    Err err = {{0}};
    const char *device = "auto", *limits = "strict";
    int json = 0, evals = 10;
    const ArgSpec specs[] = {
        {"--device", ARG_STR, &device, 0, 0, NULL},
        {"--ane-limits", ARG_STR, &limits, 0, 0, NULL},
        {"--json", ARG_BOOL, &json, 0, 0, NULL},
        {"--evals", ARG_INT, &evals, 0, 100000, NULL},
    };
    if (args_parse(argc, argv, specs, (int)(sizeof specs / sizeof specs[0]), NULL, 0, NULL, &err) != 0)
        return cli_fail("doctor", &err);
    if (strcmp(device, "auto") != 0 && strcmp(device, "emu") != 0 && strcmp(device, "darwin") != 0) {
        err_set(&err, "--device: expected auto, emu or darwin, found '%s'", device);
        return cli_fail("doctor", &err);
    }
    AneLimits ane_limits;
    if (ane_limits_parse("--ane-limits", limits, &ane_limits, &err) != 0) return cli_fail("doctor", &err);

    Report *r = calloc(1, sizeof *r);
    if (!r) return err_set(&err, "out of memory"), cli_fail("doctor", &err);
    platform_info(r);
    r->blas = blas_name();
    r->device_requested = device;
    r->ck_ic = 128, r->ck_oc = 64, r->ck_s = 64;
    r->check_tol = 1e-2; /* the matmul threshold of maderix/ANE's tests (docs/ane-facts.md §2.5) */
    r->tm_ic = 1024, r->tm_oc = 1024, r->tm_s = 512, r->evals = evals;
    r->probe_rc = ane_darwin_probe(NULL, &r->probe);

    int use_darwin = strcmp(device, "darwin") == 0 || (strcmp(device, "auto") == 0 && ane_darwin_available());
    AneDevice *dev;
    if (use_darwin) {
        AneDarwinOptions o;
        ane_darwin_default_options(&o);
        o.limits = ane_limits;
        dev = ane_darwin_create(&o, &err);
    } else {
        AneEmuOptions o;
        ane_emu_default_options(&o);
        o.limits = ane_limits;
        dev = ane_emu_create(&o, &err);
    }
    if (dev) {
        r->device = dev->name;
        run_check(r, dev);
        if (r->check_ran && evals > 0) run_timing(r, dev);
        r->compiles_used = use_darwin ? ane_darwin_process_compiles() : ane_emu_process_compiles();
        r->compile_budget = dev->compile_budget;
        r->pass = r->check_pass && !r->timing_error[0];
    } else {
        snprintf(r->device_error, sizeof r->device_error, "%s", err.msg);
    }
    if (json) print_json(r);
    else print_text(r);
    fflush(stdout);
    if (dev) dev->destroy(dev);
    int rc = r->pass ? 0 : 1;
    free(r);
    return rc;
}
