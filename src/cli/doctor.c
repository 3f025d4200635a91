/*
** doctor.c — `anetrain doctor`: a report on the Neural Engine path for bug reports. It says
** where it runs (platform, chip, OS, BLAS), which device it uses, and then compiles and
** evaluates the very kernels training runs (layer_fwd, layer_bwd: ane_plan_make and
** ane_kernel_make, inspect.h), first for a tiny plan and then, with --model, for that model's
** shapes, each against its CPU reference (ane_kernel_reference); then it times a large
** dynamic-weight matmul and, last, probes whether the private framework and each class and
** selector the bridge sends resolve. On Linux the device is the emulator and the framework
** rows say why they are not checked.
**
** Every kernel runs in a child process of its own (fork; the result comes back through a pipe),
** so an exception in the framework (an NSException aborts the process), a crash or a hang is
** one FAIL line naming the kernel, and every compile starts in a fresh process, as the device
** needs after a failed compile (docs/ane-facts.md §8). The parent touches neither the
** framework nor a device before the last child has ended: on macOS a forked child may not use
** frameworks its parent has initialized.
*/
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if defined(__APPLE__)
#include <sys/sysctl.h>
#endif

#include <cjson/cJSON.h>

#include "../backend/ane/darwin.h"
#include "../backend/ane/device.h"
#include "../backend/ane/inspect.h"
#include "../backend/ane/kernel_check.h"
#include "../backend/ane/mil_write.h"
#include "../model/lora.h"
#include "../io/model_file.h"
#include "../util/blas.h"
#include "../util/fp16.h"
#include "../util/parallel.h"
#include "../util/rng.h"
#include "args.h"
#include "cli.h"

#ifndef ANETRAIN_VERSION
#define ANETRAIN_VERSION "0.1.0" /* keep in step with src/main.c */
#endif

static const char *doctor_help =
    "usage: anetrain doctor [--model M [--seq T]] [--lora-rank R [--lora-targets LIST] [--lora-dropout P]]\n"
    "                       [--int8] [--device auto|emu|darwin] [--ane-limits strict|probed] [--json]\n"
    "                       [--evals N] [--timeout SECONDS] [--tolerance E]\n"
    "\n"
    "Checks the Neural Engine path with the kernels training runs and prints a report to paste,\n"
    "whole, into a bug report. In this order:\n"
    "\n"
    "  1. where it runs: anetrain's version, the platform, the OS version, the CPU, the BLAS and\n"
    "     the device (darwin: Apple's private AppleNeuralEngine framework; emu: the emulator,\n"
    "     which parses, checks and runs the same MIL in fp16 on the CPU);\n"
    "  2. the training kernels of a tiny plan (the \"tiny\" preset at 64 tokens), then, with\n"
    "     --model, those of M at T tokens: layer_fwd and layer_bwd, exactly as `train` (or, with\n"
    "     the LoRA and int8 flags, `finetune`) would compile them. Each kernel is first checked\n"
    "     against the device limits (docs/ane-facts.md section 9; a refusal names the rule and\n"
    "     the kernel is not compiled), then, in a child process of its own, compiled, given\n"
    "     random inputs of the right kind (weights of scale 1/sqrt(fan-in), positive norms),\n"
    "     evaluated and compared with its CPU reference (fp32, the reference ops). One line per\n"
    "     kernel: the plan, the kernel, its input and output shapes, the compile time, the time\n"
    "     of one evaluation, the largest error max|device - cpu| / max|cpu| over its output\n"
    "     taps (and which tap), and PASS or FAIL (a compile the device refuses: its message and\n"
    "     the device limit the kernel comes nearest to);\n"
    "  3. timing: a 1024x1024 dynamic-weight matmul over 512 positions, in its own child process\n"
    "     (ms per evaluation, achieved TFLOP/s);\n"
    "  4. the framework (macOS): whether it loads and every class and selector the bridge sends\n"
    "     resolves, and the chip (_ANEDeviceInfo's subtype). Off macOS these rows say why they\n"
    "     are not checked.\n"
    "\n"
    "A kernel whose child process dies (an exception in the framework aborts it with SIGABRT; a\n"
    "crash is SIGSEGV or SIGBUS), exits early or runs past --timeout is one FAIL line that names\n"
    "the kernel and the signal, the exit status or the timeout; the report goes on with the next\n"
    "kernel. Every compile thus happens in a fresh process, as the device needs after a failed\n"
    "compile (docs/ane-facts.md section 8), and none counts against the budget of the next.\n"
    "\n"
    "What to run and paste into a bug report: the whole output of\n"
    "    anetrain doctor --model M --seq T [the LoRA/int8 flags of the failing run]\n"
    "with the M, T and flags of the run that failed, plus, for a kernel that fails, the directory\n"
    "written by `anetrain ane-plan --model M --seq T [same flags] --dump DIR` (its MIL and weights).\n";

/* (two strings: C11 compilers need only take string literals of up to 4095 characters) */
static const char *doctor_help_options =
    "\n"
    "  --model M       also test M's kernels: a preset (stories15m stories42m stories110m\n"
    "                  qwen3-0.6b tiny tiny-qwen3), a HF config.json or directory, an anetrain\n"
    "                  checkpoint or a llama2.c .bin (only the config is read)\n"
    "  --seq T         tokens per sequence for M (default min(256, its max_seq))\n"
    "  --lora-rank R, --lora-targets LIST, --lora-dropout P, --int8\n"
    "                  the kernels of a LoRA fine-tune over a frozen (int8) base, as finetune\n"
    "                  (and ane-plan) take them; they apply to both plans\n"
    "  --device D      auto (default: darwin on macOS, emu elsewhere), emu or darwin\n"
    "  --ane-limits strict|probed\n"
    "                  the device limits the kernels are checked against before they compile\n"
    "                  (default strict, as train)\n"
    "  --json          print one JSON object instead of text (\"kernels\": one entry per kernel)\n"
    "  --evals N       evaluations timed per kernel after the checked one (default 5; 0: the checked\n"
    "                  evaluation's time) and of the timing matmul (0 skips the timing)\n"
    "  --timeout S     seconds a kernel's child may take before it is killed (default 300)\n"
    "  --tolerance E   the largest relative error that passes (default 5e-3, the tolerance the\n"
    "                  emulator is held to in tests/test_ane_kernels.c: a few fp16 ulps)\n"
    "\n"
    "Exits 0 when every kernel passes (and the device, the timing and the framework probe work),\n"
    "1 otherwise.\n"
    "\n"
    "For tests only: ANETRAIN_DOCTOR_CRASH=NAME makes the child process of every kernel named NAME\n"
    "(layer_fwd, layer_bwd or timing) raise SIGABRT before compiling, to show how a crash is\n"
    "reported; ANETRAIN_DOCTOR_HANG=NAME makes it wait forever, to show the timeout.\n";

/* ------------------------------------------------------------------ the report */

/* What a kernel's child process sends back through its pipe (plain data, fixed size). */
typedef struct {
    int device_made;            /* 0: it stopped creating the device */
    char device[16];            /* the device's name ("emu", "darwin") */
    AneKernelCheck check;       /* stage reached, compile and evaluation ms, error, worst tap */
    double tflops;              /* the timing kernel */
    char error[ERR_MSG_MAX];    /* why it stopped before the end */
} ChildResult;

/* One kernel's line of the report. */
typedef struct {
    char plan[96];              /* "tiny at 64", "stories15m at 256" */
    const char *name;           /* "layer_fwd", "layer_bwd", "timing" */
    AneShape in, out;
    int refused;                /* 1: the device limits refuse it; not compiled */
    const char *rule;           /* the rule that refused it (or NULL) */
    char refusal[ERR_MSG_MAX];
    long long max_axis;
    int ran;                    /* 1: a child process ran it */
    ChildResult res;
    int signal;                 /* the signal that ended the child (0: none) */
    int exit_status;            /* its exit status when it did not report (-1: none) */
    int timed_out;
    int reported;               /* 1: the child sent its whole result */
    char failure[ERR_MSG_MAX];  /* a failure of the parent's (pipe, fork) */
    int pass;
} KernelLine;

enum { MAX_LINES = 2 * ANE_KERNELS };

typedef struct {
    char sysname[256], release[256], machine[256];
    char os_version[160], cpu[160], model[96];
    int cpus;
    const char *blas;
    const char *device_requested, *device; /* device: "emu", "darwin" or NULL (none could be made) */
    int use_darwin;
    AneLimits limits;
    char run[160];                         /* "full training", "LoRA r8 on q,k,v,o, over an int8 base" */
    AneDarwinProbe probe;
    int probe_rc;
    char device_error[ERR_MSG_MAX];
    int timeout_s, evals;
    double tol;
    KernelLine lines[MAX_LINES];
    int n_lines;
    KernelLine timing;                     /* the timing matmul; ran 0 when skipped */
    int tm_ic, tm_oc, tm_s;
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


/* ------------------------------------------------------------------ the timing kernel */

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

/* ------------------------------------------------------------------ what a child runs */

typedef struct {
    int use_darwin;
    AneLimits limits;
    int evals;
    const AneLayerPlan *plan;   /* a training kernel: its plan and the kernel (made by the parent) */
    AneKernelId id;
    const AneKernel *k;
    int tm_ic, tm_oc, tm_s;     /* the timing matmul (k NULL) */
    int crash, hang;            /* ANETRAIN_DOCTOR_CRASH / _HANG named this kernel */
} Job;

static AneDevice *device_make(const Job *job, Err *err) {
    if (job->use_darwin) {
        AneDarwinOptions o;
        ane_darwin_default_options(&o);
        o.limits = job->limits;
        return ane_darwin_create(&o, err);
    }
    AneEmuOptions o;
    ane_emu_default_options(&o);
    o.limits = job->limits;
    return ane_emu_create(&o, err);
}

/* A training kernel: kernel_check.h does the work. A compile the device refuses also names the
** limit the kernel comes nearest to, as train's error does. */
static int job_training_kernel(AneDevice *dev, const Job *job, ChildResult *res, Err *err) {
    if (ane_kernel_check(dev, job->plan, job->id, job->k, job->evals, &res->check, err) == 0) return 0;
    if (res->check.reached == ANE_CHECK_COMPILE) {
        char nearest[ERR_MSG_MAX], device[ERR_MSG_MAX];
        ane_kernel_nearest_limit(job->k, nearest, sizeof nearest);
        memcpy(device, err->msg, sizeof device);
        err_set(err, "%s; %s", device, nearest);
    }
    return -1;
}

/* The timing kernel: a dynamic-weight matmul, timed. */
static int job_timing(AneDevice *dev, const Job *job, ChildResult *res, Err *err) {
    int IC = job->tm_ic, OC = job->tm_oc, S = job->tm_s;
    size_t n_in = (size_t)IC * (S + OC), n_out = (size_t)OC * S;
    char *mil = matmul_mil(IC, OC, S, err);
    uint16_t *in = calloc(n_in, sizeof *in);
    float *out = malloc(sizeof(float) * n_out);
    int rc = -1;
    if (!mil || !in || !out) {
        if (mil) err_set(err, "out of memory");
        goto done;
    }
    Rng rng;
    rng_seed(&rng, 7);
    for (size_t i = 0; i < n_in; i++) in[i] = fp16_from_float((float)(0.03 * rng_normal(&rng)));
    if (ane_program_run(dev, mil, NULL, 0, in, n_in, out, n_out, job->evals > 0 ? job->evals : 1, &res->check, err))
        goto done;
    res->tflops = 2.0 * IC * OC * S / (res->check.eval_ms * 1e-3) * 1e-12;
    res->check.reached = ANE_CHECK_DONE;
    rc = 0;
done:
    free(mil);
    free(in);
    free(out);
    return rc;
}

/* The child's whole life: a device of its own, the job, the result. */
static void child_main(const Job *job, ChildResult *res) {
    Err err = {{0}};
    parallel_init(parallel_cpu_count()); /* the emulator's threads, started in this process */
    AneDevice *dev = device_make(job, &err);
    if (!dev) {
        snprintf(res->error, sizeof res->error, "%s", err.msg);
        return;
    }
    res->device_made = 1;
    snprintf(res->device, sizeof res->device, "%s", dev->name);
    if (job->crash) raise(SIGABRT); /* ANETRAIN_DOCTOR_CRASH: what an NSException does to a process */
    while (job->hang) pause();      /* ANETRAIN_DOCTOR_HANG: a compile that never returns */
    int rc = job->k ? job_training_kernel(dev, job, res, &err) : job_timing(dev, job, res, &err);
    if (rc != 0) snprintf(res->error, sizeof res->error, "%s", err.msg[0] ? err.msg : "failed");
    dev->destroy(dev);
}

/* ------------------------------------------------------------------ one child per kernel */

static const char *signal_name(int sig) {
    switch (sig) {
    case SIGABRT: return "SIGABRT";
    case SIGSEGV: return "SIGSEGV";
    case SIGBUS: return "SIGBUS";
    case SIGILL: return "SIGILL";
    case SIGFPE: return "SIGFPE";
    case SIGKILL: return "SIGKILL";
    case SIGTERM: return "SIGTERM";
#ifdef SIGTRAP
    case SIGTRAP: return "SIGTRAP";
#endif
    default: return "a signal";
    }
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Runs job in a child process and fills line: the child's result, or how it ended when it sent
** none (a signal, an exit status, the timeout: then it is killed). */
static void run_isolated(const Job *job, int timeout_s, KernelLine *line) {
    line->ran = 1;
    line->exit_status = -1;
    int fds[2];
    if (pipe(fds) != 0) {
        snprintf(line->failure, sizeof line->failure, "cannot create a pipe: %s", strerror(errno));
        return;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(line->failure, sizeof line->failure, "cannot start a child process: %s", strerror(errno));
        close(fds[0]);
        close(fds[1]);
        return;
    }
    if (pid == 0) {
        close(fds[0]);
        ChildResult res;
        memset(&res, 0, sizeof res);
        child_main(job, &res);
        const char *b = (const char *)&res;
        for (size_t done = 0; done < sizeof res;) {
            ssize_t n = write(fds[1], b + done, sizeof res - done);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) _exit(3);
            done += (size_t)n;
        }
        _exit(0); /* no atexit handlers, no stdio buffers of the parent's flushed twice */
    }
    close(fds[1]);
    double deadline = now_seconds() + timeout_s;
    size_t got = 0;
    char *b = (char *)&line->res;
    while (got < sizeof line->res) { /* the result, or EOF when the child ends without one */
        int ms = (int)((deadline - now_seconds()) * 1e3);
        if (ms <= 0) {
            line->timed_out = 1;
            break;
        }
        struct pollfd pfd = {fds[0], POLLIN, 0};
        int pr = poll(&pfd, 1, ms);
        if (pr < 0 && errno == EINTR) continue;
        if (pr <= 0) {
            line->timed_out = pr == 0;
            break;
        }
        ssize_t n = read(fds[0], b + got, sizeof line->res - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += (size_t)n;
    }
    close(fds[0]);
    line->reported = got == sizeof line->res;
    int status = 0;
    for (;;) { /* the child's end, within the same deadline */
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid) break;
        if (w < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (line->timed_out || now_seconds() >= deadline) {
            line->timed_out = 1;
            kill(pid, SIGKILL);
            while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
            }
            break;
        }
        sleep_ms(5);
    }
    if (line->timed_out) {
        if (got < sizeof line->res) memset(&line->res, 0, sizeof line->res);
        return;
    }
    if (WIFSIGNALED(status)) line->signal = WTERMSIG(status);
    else if (WIFEXITED(status) && (got < sizeof line->res || WEXITSTATUS(status) != 0))
        line->exit_status = WEXITSTATUS(status);
    if (got < sizeof line->res) memset(&line->res, 0, sizeof line->res);
}

static int line_pass(const KernelLine *l, double tol) {
    return l->ran && !l->refused && !l->timed_out && !l->signal && l->exit_status < 0 && !l->failure[0] &&
           l->res.check.reached == ANE_CHECK_DONE && l->res.check.max_error <= tol;
}

/* The test hooks: ANETRAIN_DOCTOR_CRASH (or _HANG) = the kernel's name. */
static int is_hook_target(const char *hook, const char *name) {
    const char *c = getenv(hook);
    return c && strcmp(c, name) == 0;
}

/* Checks and runs both kernels of cfg planned as spec says; one line each (or one line saying
** why the model cannot be planned). */
static void run_plan(Report *r, const char *label, const ModelConfig *cfg, const AnePlanSpec *spec) {
    AnePlanReport pr;
    Err err = {{0}};
    if (ane_plan_inspect(cfg, spec, 1, 1, r->limits, &pr, &err) != 0) {
        KernelLine *l = &r->lines[r->n_lines++];
        snprintf(l->plan, sizeof l->plan, "%s", label);
        l->name = "plan";
        l->exit_status = -1;
        l->refused = 1;
        snprintf(l->refusal, sizeof l->refusal, "%s", err.msg);
        return;
    }
    for (int id = 0; id < pr.n_kernels && r->n_lines < MAX_LINES; id++) {
        const AneKernelReport *kr = &pr.kernels[id];
        KernelLine *l = &r->lines[r->n_lines++];
        snprintf(l->plan, sizeof l->plan, "%s", label);
        l->name = kr->k.name;
        l->in = kr->k.in;
        l->out = kr->k.out;
        l->exit_status = -1;
        l->max_axis = kr->max_axis;
        if (!kr->pass) {
            l->refused = 1;
            l->rule = kr->rule;
            snprintf(l->refusal, sizeof l->refusal, "%s", kr->check);
            continue;
        }
        if (r->device_error[0]) continue; /* no device: nothing runs */
        Job job = {r->use_darwin, r->limits, r->evals, &pr.plan, (AneKernelId)id, &kr->k, 0, 0, 0, 0, 0};
        job.crash = is_hook_target("ANETRAIN_DOCTOR_CRASH", l->name);
        job.hang = is_hook_target("ANETRAIN_DOCTOR_HANG", l->name);
        run_isolated(&job, r->timeout_s, l);
        if (l->res.device[0]) r->device = strcmp(l->res.device, "darwin") == 0 ? "darwin" : "emu";
        else if (l->ran && !l->signal && !l->timed_out && l->exit_status < 0 && !l->res.device_made)
            snprintf(r->device_error, sizeof r->device_error, "%s", l->res.error);
        l->pass = line_pass(l, r->tol);
    }
    ane_plan_report_free(&pr);
}

static void run_timing(Report *r) {
    KernelLine *l = &r->timing;
    snprintf(l->plan, sizeof l->plan, "matmul");
    l->name = "timing";
    l->in = (AneShape){r->tm_ic, r->tm_s + r->tm_oc};
    l->out = (AneShape){r->tm_oc, r->tm_s};
    l->exit_status = -1;
    Job job = {r->use_darwin, r->limits, r->evals, NULL, ANE_KERNEL_LAYER_FWD, NULL, r->tm_ic, r->tm_oc, r->tm_s, 0, 0};
    job.crash = is_hook_target("ANETRAIN_DOCTOR_CRASH", "timing");
    job.hang = is_hook_target("ANETRAIN_DOCTOR_HANG", "timing");
    run_isolated(&job, r->timeout_s, l);
    l->pass = line_pass(l, INFINITY);
}

/* ------------------------------------------------------------------ printing */

/* Where a child stopped: "creating the device", "compiling", ..., "done". */
static const char *stage_name(const ChildResult *res) {
    return res->device_made ? ane_check_stage_name(res->check.reached) : "creating the device";
}

/* The verdict of a line in words: "PASS", "FAIL: ...", "not run: ...". */
static void line_verdict(const Report *r, const KernelLine *l, char *buf, size_t n) {
    if (l->refused && l->rule) snprintf(buf, n, "FAIL: refused before compiling, rule %s: %s", l->rule, l->refusal);
    else if (l->refused) snprintf(buf, n, "FAIL: refused before compiling: %s", l->refusal);
    else if (!l->ran) snprintf(buf, n, "not run: no device");
    else if (l->failure[0]) snprintf(buf, n, "FAIL: %s", l->failure);
    else if (l->timed_out && l->reported)
        snprintf(buf, n, "FAIL: its child process reported (%s) but did not exit within %d s (--timeout): killed",
                 stage_name(&l->res), r->timeout_s);
    else if (l->timed_out)
        snprintf(buf, n, "FAIL: no result after %d s (--timeout): its child process was killed", r->timeout_s);
    else if (l->signal)
        snprintf(buf, n, "FAIL: its child process died of %s (signal %d)%s", signal_name(l->signal), l->signal,
                 l->signal == SIGABRT ? ": an abort, e.g. an exception in the framework" : "");
    else if (l->exit_status >= 0) snprintf(buf, n, "FAIL: its child process exited with status %d", l->exit_status);
    else if (l->res.check.reached != ANE_CHECK_DONE || !l->res.device_made)
        snprintf(buf, n, "FAIL: %s: %s", stage_name(&l->res), l->res.error);
    else if (l->pass) snprintf(buf, n, "PASS");
    else snprintf(buf, n, "FAIL: error above the tolerance %.0e", r->tol);
}

static void print_text(const Report *r) {
    printf("anetrain doctor (paste this whole report into a bug report)\n\n");
    printf("anetrain      %s\n", ANETRAIN_VERSION);
    printf("platform      %s %s %s\n", r->sysname, r->release, r->machine);
    printf("os            %s\n", r->os_version);
    printf("cpu           %s%s%s (%d logical CPUs)\n", r->cpu, r->model[0] ? ", " : "", r->model, r->cpus);
    printf("ane subtype   %s\n", !ane_darwin_available() ? "none (not macOS)"
                                 : r->probe.ane_subtype[0] ? r->probe.ane_subtype
                                                           : "unknown");
    printf("blas          %s\n", r->blas);
    if (r->device)
        printf("device        %s (%s) [--device %s]\n", r->device,
               strcmp(r->device, "darwin") == 0 ? "Apple Neural Engine through the private framework"
                                                : "emulated ANE: MIL checked and run in fp16 on the CPU",
               r->device_requested);
    else printf("device        none [--device %s]: %s\n", r->device_requested, r->device_error);
    printf("run           %s; limits %s (docs/ane-facts.md section 9)\n", r->run, ane_limits_name(r->limits));
    char evals_txt[64];
    if (r->evals > 0) snprintf(evals_txt, sizeof evals_txt, "the mean of %d after the checked one", r->evals);
    else snprintf(evals_txt, sizeof evals_txt, "the checked one");
    printf("kernels       each in a child process of its own (timeout %d s), random inputs, against its CPU\n"
           "              reference; error = max|device - cpu| / max|cpu| of the worst output tap, tolerance %.0e;\n"
           "              eval = ms per evaluation (%s)\n",
           r->timeout_s, r->tol, evals_txt);
    for (int i = 0; i < r->n_lines; i++) {
        const KernelLine *l = &r->lines[i];
        char verdict[ERR_MSG_MAX + 160], io[96] = "", times[96] = "", error[64] = "";
        line_verdict(r, l, verdict, sizeof verdict);
        if (l->in.channels)
            snprintf(io, sizeof io, "[1, %d, 1, %d] -> [1, %d, 1, %d]", l->in.channels, l->in.spatial, l->out.channels,
                     l->out.spatial);
        const AneKernelCheck *c = &l->res.check;
        if (l->res.device_made && c->reached > ANE_CHECK_EVALUATE)
            snprintf(times, sizeof times, "compile %8.1f ms  eval %8.2f ms", c->compile_ms, c->eval_ms);
        else if (l->res.device_made)
            snprintf(times, sizeof times, "compile %8.1f ms  %-16s", c->compile_ms, "");
        if (l->res.device_made && c->reached == ANE_CHECK_DONE)
            snprintf(error, sizeof error, "error %.1e (%s)", c->max_error, c->worst_tap);
        printf("  %-18s %-9s %-38s %-37s %-22s %s\n", l->plan, l->name, io, times, error, verdict);
    }
    const KernelLine *t = &r->timing;
    if (t->ran && t->pass)
        printf("timing        matmul %dx%d over S=%d in its own process: compile %.1f ms, %d evaluations, %.3f ms each, "
               "%.4f TFLOP/s (%.1f GFLOP/s)\n",
               r->tm_ic, r->tm_oc, r->tm_s, t->res.check.compile_ms, r->evals > 0 ? r->evals : 1, t->res.check.eval_ms, t->res.tflops,
               t->res.tflops * 1e3);
    else if (t->ran) {
        char verdict[ERR_MSG_MAX + 160];
        line_verdict(r, t, verdict, sizeof verdict);
        printf("timing        matmul %dx%d over S=%d: %s\n", r->tm_ic, r->tm_oc, r->tm_s, verdict);
    } else printf("timing        not run%s\n", r->evals == 0 ? " (--evals 0)" : ": no device");
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
    }
    printf("result        %s\n", r->pass ? "PASS" : "FAIL");
}

static cJSON *line_json(const Report *r, const KernelLine *l) {
    cJSON *o = cJSON_CreateObject();
    char verdict[ERR_MSG_MAX + 160];
    line_verdict(r, l, verdict, sizeof verdict);
    cJSON_AddStringToObject(o, "plan", l->plan);
    cJSON_AddStringToObject(o, "name", l->name);
    int in[4] = {1, l->in.channels, 1, l->in.spatial}, out[4] = {1, l->out.channels, 1, l->out.spatial};
    if (l->in.channels) { /* a model that cannot be planned has no kernels, hence no shapes */
        cJSON_AddItemToObject(o, "input", cJSON_CreateIntArray(in, 4));
        cJSON_AddItemToObject(o, "output", cJSON_CreateIntArray(out, 4));
    } else {
        cJSON_AddNullToObject(o, "input");
        cJSON_AddNullToObject(o, "output");
    }
    cJSON_AddBoolToObject(o, "pass", l->pass);
    cJSON_AddStringToObject(o, "result", verdict);
    cJSON_AddBoolToObject(o, "refused", l->refused);
    if (l->rule) cJSON_AddStringToObject(o, "rule", l->rule);
    else cJSON_AddNullToObject(o, "rule");
    cJSON_AddNumberToObject(o, "max_axis", (double)l->max_axis);
    cJSON_AddBoolToObject(o, "ran", l->ran);
    const AneKernelCheck *c = &l->res.check;
    int made = l->ran && l->res.device_made;
    cJSON_AddStringToObject(o, "stage", l->ran ? stage_name(&l->res) : "not run");
    if (made) cJSON_AddNumberToObject(o, "compile_ms", c->compile_ms);
    else cJSON_AddNullToObject(o, "compile_ms");
    if (made && c->reached > ANE_CHECK_EVALUATE) cJSON_AddNumberToObject(o, "eval_ms", c->eval_ms);
    else cJSON_AddNullToObject(o, "eval_ms");
    if (made && c->reached == ANE_CHECK_DONE && isfinite(c->max_error)) {
        cJSON_AddNumberToObject(o, "max_rel_error", c->max_error);
        cJSON_AddStringToObject(o, "worst_tap", c->worst_tap);
    } else {
        cJSON_AddNullToObject(o, "max_rel_error");
    }
    cJSON_AddNumberToObject(o, "tolerance", r->tol);
    if (l->signal) cJSON_AddStringToObject(o, "signal", signal_name(l->signal));
    else cJSON_AddNullToObject(o, "signal");
    if (l->exit_status >= 0) cJSON_AddNumberToObject(o, "exit_status", l->exit_status);
    cJSON_AddBoolToObject(o, "timed_out", l->timed_out);
    return o;
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
    cJSON_AddStringToObject(j, "run", r->run);
    cJSON_AddStringToObject(j, "limits", ane_limits_name(r->limits));
    cJSON_AddNumberToObject(j, "timeout_s", r->timeout_s);
    cJSON *ks = cJSON_AddArrayToObject(j, "kernels");
    for (int i = 0; i < r->n_lines; i++) cJSON_AddItemToArray(ks, line_json(r, &r->lines[i]));
    cJSON *t = line_json(r, &r->timing);
    cJSON_AddItemToObject(j, "timing", t);
    cJSON_AddNumberToObject(t, "evals", r->evals);
    if (r->timing.ran && r->timing.pass) cJSON_AddNumberToObject(t, "tflops", r->timing.res.tflops);
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
    cJSON_AddBoolToObject(j, "pass", r->pass);
    char *s = cJSON_PrintUnformatted(j);
    if (s) puts(s);
    free(s);
    cJSON_Delete(j);
}

/* ------------------------------------------------------------------ the command */

/* The run's kind in words, as ane-plan says it. */
static void describe_run(const AnePlanSpec *spec, const char *targets, char *buf, size_t n) {
    int k;
    if (spec->lora_rank)
        k = snprintf(buf, n, "LoRA r%d on %s%s", spec->lora_rank, targets, spec->lora_dropout ? " with dropout" : "");
    else k = snprintf(buf, n, "full training");
    if (spec->int8_base && k > 0 && (size_t)k < n) snprintf(buf + k, n - (size_t)k, ", over an int8 base");
}

int cli_doctor(int argc, char **argv) {
    if (args_want_help(argc, argv)) {
        fputs(doctor_help, stdout);
        fputs(doctor_help_options, stdout);
        return 0;
    }
    Err err = {{0}};
    const char *device = "auto", *limits = "strict", *model = NULL, *targets = NULL;
    int json = 0, evals = 5, seq = 0, rank = 0, int8 = 0, timeout_s = 300, rank_given = 0, dropout_given = 0;
    float dropout = 0;
    double tol = 5e-3;
    const ArgSpec specs[] = {
        {"--device", ARG_STR, &device, 0, 0, NULL},
        {"--ane-limits", ARG_STR, &limits, 0, 0, NULL},
        {"--json", ARG_BOOL, &json, 0, 0, NULL},
        {"--evals", ARG_INT, &evals, 0, 100000, NULL},
        {"--model", ARG_STR, &model, 0, 0, NULL},
        {"--seq", ARG_INT, &seq, 1, 1 << 20, NULL},
        {"--lora-rank", ARG_INT, &rank, 1, 4096, &rank_given},
        {"--lora-targets", ARG_STR, &targets, 0, 0, NULL},
        {"--lora-dropout", ARG_FLOAT, &dropout, 0, 0.999, &dropout_given},
        {"--int8", ARG_BOOL, &int8, 0, 0, NULL},
        {"--timeout", ARG_INT, &timeout_s, 1, 86400, NULL},
        {"--tolerance", ARG_DOUBLE, &tol, 0, 1, NULL},
    };
    if (args_parse(argc, argv, specs, (int)(sizeof specs / sizeof specs[0]), NULL, 0, NULL, &err) != 0)
        return cli_fail("doctor", &err);
    if (strcmp(device, "auto") != 0 && strcmp(device, "emu") != 0 && strcmp(device, "darwin") != 0) {
        err_set(&err, "--device: expected auto, emu or darwin, found '%s'", device);
        return cli_fail("doctor", &err);
    }
    AneLimits ane_limits;
    if (ane_limits_parse("--ane-limits", limits, &ane_limits, &err) != 0) return cli_fail("doctor", &err);
    if (!rank_given && (targets || dropout_given)) {
        err_set(&err, "%s: needs --lora-rank (the adapters' rank)", targets ? "--lora-targets" : "--lora-dropout");
        return cli_fail("doctor", &err);
    }
    if (seq && !model) return err_set(&err, "--seq: needs --model (the tiny plan is always at 64 tokens)"),
                              cli_fail("doctor", &err);
    unsigned mods = 0;
    if (rank_given && lora_parse_targets(targets ? targets : "q,k,v,o", &mods, &err) != 0)
        return cli_fail("doctor", &err);
    ModelConfig tiny, cfg;
    config_from_preset(&tiny, "tiny", &err);
    if (model) {
        Err perr = {{0}};
        if (config_from_preset(&cfg, model, &perr) != 0 && model_config_load_any(model, &cfg, &err) != 0) {
            err_wrap(&err, "--model: not a preset (%s) and not a model file", config_preset_names());
            return cli_fail("doctor", &err);
        }
        if (seq == 0) seq = cfg.max_seq_len < 256 ? cfg.max_seq_len : 256;
    }

    Report *r = calloc(1, sizeof *r);
    if (!r) return err_set(&err, "out of memory"), cli_fail("doctor", &err);
    platform_info(r);
    r->blas = blas_name();
    r->device_requested = device;
    r->use_darwin = strcmp(device, "darwin") == 0 || (strcmp(device, "auto") == 0 && ane_darwin_available());
    r->limits = ane_limits;
    r->timeout_s = timeout_s;
    r->evals = evals;
    r->tol = tol;
    r->tm_ic = 1024, r->tm_oc = 1024, r->tm_s = 512;
    AnePlanSpec spec = {64, rank, mods, rank && dropout > 0, int8, 0};
    describe_run(&spec, targets ? targets : "q,k,v,o", r->run, sizeof r->run);

    /* The kernels first, each in its child, before this process touches the framework. */
    run_plan(r, "tiny at 64", &tiny, &spec);
    if (model) {
        char label[96];
        snprintf(label, sizeof label, "%s at %d", model, seq);
        spec.T_max = seq;
        run_plan(r, label, &cfg, &spec);
    }
    if (!r->device_error[0] && evals > 0) run_timing(r);
    r->probe_rc = ane_darwin_probe(NULL, &r->probe);

    r->pass = r->device != NULL && !r->device_error[0] && r->n_lines > 0 && (!r->timing.ran || r->timing.pass) &&
              (!r->use_darwin || r->probe_rc == 0);
    for (int i = 0; i < r->n_lines; i++) r->pass &= r->lines[i].pass;
    if (json) print_json(r);
    else print_text(r);
    fflush(stdout);
    int rc = r->pass ? 0 : 1;
    free(r);
    return rc;
}
