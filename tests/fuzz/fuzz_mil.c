/*
** fuzz_mil.c — the emulated device's MIL front end: mil_program_compile (parser, checker with
** the device's constraints, planner) on any text, with the weight blobs the input carries, and
** a run of what compiles when it is small. Input parts: the MIL text, then one part per blob,
** its path, a NUL, its bytes. No writer turns a parsed program back into text, so there is no
** round trip; the checks are that nothing crashes, hangs or leaks.
*/
#include "backend/ane/emu/mil.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *part[FUZZ_MAX_PARTS];
    size_t len[FUZZ_MAX_PARTS];
    int n = fuzz_split(data, size, part, len, FUZZ_MAX_PARTS);
    char *text = malloc(len[0] + 1);
    if (!text) return 0;
    memcpy(text, part[0], len[0]);
    text[len[0]] = '\0';
    AneBlob blobs[FUZZ_MAX_PARTS];
    int n_blobs = 0;
    for (int i = 1; i < n; i++) {
        const uint8_t *nul = memchr(part[i], 0, len[i]);
        if (!nul) continue;
        blobs[n_blobs++] = (AneBlob){(const char *)part[i], nul + 1, len[i] - (size_t)(nul + 1 - part[i])};
    }
    /* small tensors: quick to plan and to run; both limit modes (probed accepts more programs,
    ** so more of them reach the interpreter) */
    MilOptions opt = {.accumulate_fp32 = 1, .flush_subnormals = 0, .max_elements = 1 << 16,
                      .limits = size % 2 ? ANE_LIMITS_PROBED : ANE_LIMITS_STRICT};
    Err err;
    MilProgram *p = mil_program_compile(text, blobs, n_blobs, &opt, &err);
    if (!p) fuzz_rejected("mil_program_compile", err.msg);
    if (p && mil_program_buffer_bytes(p) + mil_program_const_bytes(p) < (8u << 20)) {
        AneShape in, out;
        mil_program_io(p, &in, &out);
        uint16_t *x = calloc((size_t)in.channels * in.spatial + 1, sizeof *x);
        uint16_t *y = calloc((size_t)out.channels * out.spatial + 1, sizeof *y);
        for (size_t i = 0; x && i < (size_t)in.channels * in.spatial; i++) x[i] = (uint16_t)(0x3c00 ^ (i * 40503u));
        if (x && y) (void)mil_program_run(p, x, y, &err);
        free(x);
        free(y);
    }
    mil_program_free(p);
    free(text);
    return 0;
}
