#!/usr/bin/python3
"""test_parity.py — the CPU backend against an independent float64 PyTorch reference.

    /usr/bin/python3 tests/test_parity.py --build BUILD_DIR [--keep DIR] [--only NAME] [--seed N]

For each case a random small model is generated in torch (float32 weights), saved as a HF
directory (config.json + model.safetensors) and/or a llama2.c .bin, with a random batch of
tokens; BUILD_DIR/tests/tool_parity runs the C backend on it (see tests/tool_parity.c) and
the results are compared with tests/torch_ref.py run in float64:

  logits   max |c - ref| / max |ref|                          < 1e-4
  loss     relative error                                     < 1e-5
  grads    per tensor: ||c - ref|| / ||ref|| < 1e-4 and cosine > 0.99999
  train    5 AdamW steps (betas 0.9/0.95, eps 1e-8, decay on >= 2-D tensors) with global-norm
           clipping that triggers at every step (checked: the norm before clipping > clip):
           each step's loss and the loss after the last step, relative error < 1e-4;
           the pre-clip norms, relative error < 1e-4; the total parameter update of each
           tensor (final - initial), ||c - ref|| / ||ref|| < 3e-3 over the elements whose
           first gradient is not at float32 noise level (>= 1e-3 of the tensor's rms)

Without torch the test prints why and a "skipped" line and exits 0, unless the environment
sets ANETRAIN_REQUIRE_TORCH=1 (CI), which makes a missing torch a failure. The last line is
"N passed, N failed"; the exit status is 1 on any failure.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))

TOL_LOGITS = 1e-4
TOL_LOSS = 1e-5
TOL_GRAD_REL = 1e-4
TOL_GRAD_COS = 0.99999
TOL_TRAIN = 1e-4
TOL_UPDATE = 3e-3

# A moderate lr keeps 5 steps of Adam (which normalizes every element, amplifying float32
# noise in tiny gradients) far from the tolerances; a large weight decay makes a wrong decay
# mask or a missing decay move the update by > 10% (measured), far above the float32 noise
# in the update (< 5e-4 over 40 seeds).
STEPS, LR, WD, BETAS, EPS = 5, 5e-4, 0.5, (0.9, 0.95), 1e-8

passed = 0
failed = 0


def report(ok, label, detail):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
    print("%s %s: %s" % ("ok  " if ok else "FAIL", label, detail), flush=True)


# Cases: the model shape, the batch, how the C side gets the model, and tool options.
#   files: "hf" (HF directory, rotate-half), "llama2c" (interleaved .bin), or both.
#   rope:  the style the tool runs the model in ("keep" = the file's).
CASES = [
    dict(name="llama-mha-tied",  # like the stories models: MHA, tied classifier
         cfg=dict(model_type="llama", hidden_size=64, intermediate_size=172, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=4, vocab_size=97, rope_theta=10000.0,
                  rms_norm_eps=1e-5, tie_word_embeddings=True),
         B=2, T=17, files=["hf"], threads=2, slack=0, rope="keep"),
    dict(name="llama-gqa-untied",  # also a large eps and another theta, so both must be read and used
         cfg=dict(model_type="llama", hidden_size=48, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=6, num_key_value_heads=2, vocab_size=131, rope_theta=500000.0,
                  rms_norm_eps=0.05, tie_word_embeddings=False),
         B=3, T=13, files=["hf"], threads=1, slack=3, rope="keep"),
    dict(name="qwen3",  # q/k norm, head_dim != dim/heads, GQA, tied, theta 1e6, eps 1e-6
         cfg=dict(model_type="qwen3", hidden_size=40, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=101,
                  rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=True),
         B=2, T=19, files=["hf"], threads=2, slack=0, rope="keep"),
    dict(name="qwen3-run-interleaved",  # the interleaved op path with q/k norm (params permuted in C)
         cfg=dict(model_type="qwen3", hidden_size=32, intermediate_size=80, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=1, head_dim=12, vocab_size=89,
                  rope_theta=1e6, rms_norm_eps=0.02, tie_word_embeddings=False),  # eps matters in q/k norm
         B=2, T=11, files=["hf"], threads=2, slack=1, rope="interleaved"),
    dict(name="llama-interleaved",  # llama2.c .bin (interleaved) and its HF export (permuted rows)
         cfg=dict(model_type="llama", hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=8, num_key_value_heads=4, vocab_size=113, rope_theta=10000.0,
                  rms_norm_eps=1e-5, tie_word_embeddings=False),
         B=2, T=16, files=["llama2c", "hf"], threads=2, slack=0, rope="keep"),
    dict(name="llama-interleaved-tied",
         cfg=dict(model_type="llama", hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                  num_attention_heads=2, num_key_value_heads=2, vocab_size=67, rope_theta=10000.0,
                  rms_norm_eps=1e-5, tie_word_embeddings=True),
         B=1, T=23, files=["llama2c"], threads=1, slack=0, rope="keep"),
    dict(name="llama-gqa-longer",  # longer sequences, more layers and heads, more sequences than threads
         cfg=dict(model_type="llama", hidden_size=128, intermediate_size=344, num_hidden_layers=3,
                  num_attention_heads=8, num_key_value_heads=2, vocab_size=257, rope_theta=10000.0,
                  rms_norm_eps=1e-5, tie_word_embeddings=True),
         B=4, T=64, files=["hf"], threads=3, slack=5, rope="keep"),
]


def random_model(ref, torch, cfg, seed):
    """Float32 weights (HF names) that make every part of the model matter: projections
    ~ 1/sqrt(fan_in) (so attention is far from uniform and RoPE changes the scores), norm
    weights around 1 but not 1, embeddings of rms 2/sqrt(C) (logits of a few units: softmax
    neither flat nor one-hot). The RoPE style they are meant in is the caller's choice."""
    g = torch.Generator().manual_seed(seed)
    params = {}
    for name, shape in ref.param_shapes(cfg).items():
        if len(shape) == 1:
            t = 1.0 + 0.25 * torch.randn(shape, generator=g)
        elif name in ("model.embed_tokens.weight", "lm_head.weight"):
            t = 2.0 * torch.randn(shape, generator=g) / shape[1] ** 0.5
        else:
            scale = 1.5 if ".q_proj." in name or ".k_proj." in name else 1.0
            t = scale * torch.randn(shape, generator=g) / shape[1] ** 0.5
        params[name] = t.to(torch.float32).numpy()
    return params


def clip_for(ref, np, cfg, params, inputs, targets, style):
    """A clip value well below the gradient norm, so clipping triggers at every step."""
    _, _, grads = ref.grads_and_logits(cfg, params, inputs, targets, style)
    norm = float(np.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads.values())))
    return float(np.float32(norm * 0.1))


def run_tool(tool, model, tokens, B, T, clip, out, case):
    cmd = [tool, model, tokens, str(B), str(T), str(STEPS), repr(LR), repr(WD), repr(clip), out,
           "--threads", str(case["threads"]), "--slack", str(case["slack"]), "--rope", case["rope"]]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    if p.returncode != 0:
        return "exit %d: %s" % (p.returncode, (p.stderr.decode(errors="replace") + p.stdout.decode(errors="replace")).strip())
    return None


def compare(ref, np, label, cfg, params, style, inputs, targets, clip, out):
    """Compares the tool's output file with the float64 reference on params (style = the RoPE
    style those params are meant in, i.e. the file's)."""
    tensors, meta = ref.st_read(out)
    B, T = inputs.shape

    logits_ref, loss_ref, grads_ref = ref.grads_and_logits(cfg, params, inputs, targets, style)
    # logits: the tool writes [B][V][T]
    logits_c = tensors["logits"].astype(np.float64).transpose(0, 2, 1)
    scale = float(np.abs(logits_ref).max())
    err = float(np.abs(logits_c - logits_ref).max()) / scale
    report(err < TOL_LOGITS, label + " logits", "max|d|/max|ref| = %.2e (scale %.3g, < %.0e)" % (err, scale, TOL_LOGITS))

    loss_c = float(meta["loss"])
    err = abs(loss_c - loss_ref) / abs(loss_ref)
    report(err < TOL_LOSS, label + " loss", "C %.9f ref %.9f rel %.2e (< %.0e)" % (loss_c, loss_ref, err, TOL_LOSS))

    missing = sorted(set(grads_ref) - set(tensors))
    extra = sorted(k for k in tensors if k not in grads_ref and not k.startswith("final.")
                   and k not in ("logits", "loss", "train_losses", "train_grad_norms", "final_loss"))
    worst_rel, worst_cos, worst_name, bad = 0.0, 1.0, "", []
    for name, gr in grads_ref.items():
        if name not in tensors:
            continue
        gc = tensors[name].astype(np.float64)
        if gc.shape != gr.shape:
            bad.append("%s shape %s != %s" % (name, gc.shape, gr.shape))
            continue
        nr = float(np.linalg.norm(gr))
        rel = float(np.linalg.norm(gc - gr)) / nr
        cos = float((gc * gr).sum()) / (float(np.linalg.norm(gc)) * nr + 1e-300)
        if rel > worst_rel:
            worst_rel, worst_name = rel, name
        worst_cos = min(worst_cos, cos)
        if not (rel < TOL_GRAD_REL and cos > TOL_GRAD_COS):
            bad.append("%s rel %.2e cos 1-%.1e" % (name, rel, 1 - cos))
    ok = not missing and not extra and not bad
    detail = "%d tensors, worst rel %.2e (%s), worst 1-cos %.1e (< %.0e, 1-cos < %.0e)" % (
        len(grads_ref), worst_rel, worst_name, 1 - worst_cos, TOL_GRAD_REL, 1 - TOL_GRAD_COS)
    if missing:
        detail += "; missing: " + ", ".join(missing)
    if extra:
        detail += "; unexpected: " + ", ".join(extra)
    if bad:
        detail += "; out of tolerance: " + "; ".join(bad)
    report(ok, label + " grads", detail)

    losses_ref, norms_ref, final_ref, params_ref = ref.train(cfg, params, inputs, targets, style, STEPS, LR, WD, clip,
                                                             BETAS, EPS)
    losses_c = [float(x) for x in meta["train_losses"].split(",")]
    norms_c = [float(x) for x in meta["train_grad_norms"].split(",")]
    final_c = float(meta["final_loss"])
    loss_errs = [abs(a - b) / abs(b) for a, b in zip(losses_c + [final_c], losses_ref + [final_ref])]
    norm_errs = [abs(a - b) / abs(b) for a, b in zip(norms_c, norms_ref)]
    clipped = all(nc > clip for nc in norms_c) and all(nr > clip for nr in norms_ref)
    # Adam normalizes each element's step by its own gradient history, so an element whose
    # gradient is at float32 noise level (|g| ~ 1e-7 of the tensor's rms) moves by about lr in
    # an arbitrary direction in any float32 implementation. Such elements are left out of the
    # update comparison (counted in the message); every other element must agree.
    upd_errs, n_skipped = {}, 0
    for name, p0 in params.items():
        g1 = np.abs(grads_ref[name])
        keep = (g1 == 0) | (g1 >= 1e-3 * float(np.sqrt((g1 ** 2).mean())))  # exact zeros: decay only
        n_skipped += int(keep.size - keep.sum())
        dc = tensors["final." + name].astype(np.float64) - p0.astype(np.float64)
        dr = params_ref[name] - p0.astype(np.float64)
        upd_errs[name] = float(np.linalg.norm((dc - dr)[keep])) / max(float(np.linalg.norm(dr[keep])), 1e-300)
    worst_upd = max(upd_errs, key=upd_errs.get)
    ok = (len(losses_c) == STEPS and max(loss_errs) < TOL_TRAIN and max(norm_errs) < TOL_TRAIN and clipped
          and upd_errs[worst_upd] < TOL_UPDATE)
    report(ok, label + " train", "%d AdamW steps lr %g wd %g clip %.4g: losses %s -> %.6f, max rel %.2e; "
           "pre-clip norms %.4g..%.4g (clipped: %s), max rel %.2e; update worst rel %.2e (%s; %d elements with "
           "0 < |g| < 1e-3 rms left out)" % (
               STEPS, LR, WD, clip, "/".join("%.6f" % x for x in losses_c), final_c, max(loss_errs),
               min(norms_c), max(norms_c), "yes" if clipped else "NO", max(norm_errs), upd_errs[worst_upd],
               worst_upd, n_skipped))


def main():
    ap = argparse.ArgumentParser(description=__doc__.strip().split("\n")[0])
    ap.add_argument("--build", default=os.environ.get("BUILD", "build"), help="build directory holding tests/tool_parity")
    ap.add_argument("--keep", help="write the generated models and outputs here and keep them")
    ap.add_argument("--only", help="run only the cases whose name contains this")
    ap.add_argument("--seed", type=int, default=0, help="shifts every case's random seeds (default 0)")
    args = ap.parse_args()
    sys.path.insert(0, HERE)
    import parity_setup
    missing = parity_setup.torch_missing("test_parity")
    if missing is not None:
        return missing
    import numpy as np
    import torch
    import torch_ref as ref
    tool = os.path.join(args.build, "tests", "tool_parity")
    missing = parity_setup.tool_missing("test_parity", tool)
    if missing is not None:
        return missing

    torch.set_num_threads(1)
    start = time.time()
    work = args.keep or tempfile.mkdtemp(prefix="anetrain-parity-")
    os.makedirs(work, exist_ok=True)
    try:
        for i, case in enumerate(CASES):
            if args.only and args.only not in case["name"]:
                continue
            cfg = ref.Config(max_position_embeddings=64, **case["cfg"])
            B, T = case["B"], case["T"]
            # params: the weights as generated, in the RoPE style of the first file listed.
            params = random_model(ref, torch, cfg, seed=1000 + i + 100 * args.seed)
            first_style = "interleaved" if case["files"][0] == "llama2c" else "half"
            g = torch.Generator().manual_seed(2000 + i + 100 * args.seed)
            ids = torch.randint(0, cfg.vocab_size, (B, T + 1), generator=g, dtype=torch.int64)
            tok_path = os.path.join(work, "%s.tokens" % case["name"])
            ids.numpy().astype("<i4").tofile(tok_path)
            inputs, targets = ids[:, :-1].contiguous(), ids[:, 1:].contiguous()
            clip = clip_for(ref, np, cfg, params, inputs, targets, first_style)
            for fmt in case["files"]:
                style = "interleaved" if fmt == "llama2c" else "half"
                p = params if style == first_style else ref.convert_rope(cfg, params, to_half=(style == "half"))
                if fmt == "llama2c":
                    model = os.path.join(work, "%s.bin" % case["name"])
                    ref.llama2c_save(model, cfg, p, seq_len=cfg.max_position_embeddings)
                else:
                    model = os.path.join(work, "%s-hf" % case["name"])
                    ref.hf_save(model, cfg, p)
                label = "%s [%s%s]" % (case["name"], fmt, "" if case["rope"] == "keep" else ", C runs " + case["rope"])
                out = os.path.join(work, "%s-%s.out.safetensors" % (case["name"], fmt))
                error = run_tool(tool, model, tok_path, B, T, clip, out, case)
                if error:
                    report(False, label, "tool_parity failed: " + error)
                    continue
                try:
                    compare(ref, np, label, cfg, p, style, inputs, targets, clip, out)
                except Exception as e:  # a malformed output file is a failure, not a crash
                    report(False, label, "comparison failed: %s: %s" % (type(e).__name__, e))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print("test_parity: %.1f s" % (time.time() - start))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
