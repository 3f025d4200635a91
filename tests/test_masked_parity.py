#!/usr/bin/python3
"""test_masked_parity.py — the masked fine-tuning loss (--mask-prompt) and its LoRA gradients
against float64 PyTorch, on the CPU backend, and the ANE backend (emulator) against the CPU.

    /usr/bin/python3 tests/test_masked_parity.py --build BUILD_DIR [--keep DIR] [--only NAME]

For a tiny Llama and a tiny Qwen3 (random weights, a random PEFT adapter: test_lora_parity.py's
helpers), a batch of examples of uneven lengths is laid out as the fine-tuning batches are: one
example per row, right-padded to T with token 0, each row's targets the next tokens where they
count and ignored (-1 on the C side, -100 = ignore_index on the torch side) at padding and at
"prompt" tokens. The counted spans look like a chat's: two assistant turns per example, the
system/user text and the padding ignored. tests/tool_lora (--targets) computes the loss, the mean
over the counted targets of the whole batch, and dL/dA, dL/dB:
  cpu             the batch as one micro-batch
  cpu, 2 micro    the batch as two micro-batches of B/2 rows, gradients accumulated: the mean is
                  still over the whole batch's counted tokens (not a mean of means)
  ane             the ANE backend (the emulator where there is no device), as one micro-batch
The reference masks the padding keys out of attention explicitly (key_mask); the C side does
not: with causal attention no real position attends to a later padding key, so right padding
needs no key mask, and the match proves it. (Padding queries do attend to real keys on both
sides, but their targets are ignored.)

  cpu vs torch    loss (and the forward-only loss) relative error < 1e-5; per adapter tensor
                  ||c - ref|| / ||ref|| < 1e-4 and cosine > 0.99999
  ane vs cpu      loss within 1e-3 + 2e-4 |loss| (fp16 activations, as test_ane_lora); adapter
                  gradient cosine > 0.9999 overall and > 0.999 per tensor

Without torch: a "skipped" line and exit 0, unless ANETRAIN_REQUIRE_TORCH=1. The last line is
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

TOL_LOSS = 1e-5
TOL_GRAD_REL = 1e-4
TOL_GRAD_COS = 0.99999
ANE_COS_ALL, ANE_COS_TENSOR = 0.9999, 0.999

CASES = [
    dict(name="llama-masked",
         cfg=dict(model_type="llama", hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=8, num_key_value_heads=4, vocab_size=113, tie_word_embeddings=False),
         B=4, T=16, lengths=[17, 11, 6, 14], targets=["q", "k", "v", "o", "gate", "up", "down"], r=4, alpha=8.0,
         rslora=False),
    dict(name="qwen3-masked",
         cfg=dict(model_type="qwen3", hidden_size=40, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=101, rope_theta=1e6,
                  rms_norm_eps=1e-6, tie_word_embeddings=True),
         B=4, T=19, lengths=[9, 20, 13, 5], targets=["q", "k", "v", "o", "up"], r=8, alpha=4.0, rslora=True),
]

passed = 0
failed = 0


def report(ok, label, detail):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
    print("%s %s: %s" % ("ok  " if ok else "FAIL", label, detail), flush=True)


def batch(torch, case, vocab, seed):
    """inputs [B][T] (padding 0), targets [B][T] (-100 ignored), key_mask [B][T] (True: a real token)."""
    g = torch.Generator().manual_seed(seed)
    B, T = case["B"], case["T"]
    inputs = torch.zeros((B, T), dtype=torch.int64)
    targets = torch.full((B, T), -100, dtype=torch.int64)
    key_mask = torch.zeros((B, T), dtype=torch.bool)
    for b, n in enumerate(case["lengths"]):
        assert 2 <= n <= T + 1
        ids = torch.randint(1, vocab, (n,), generator=g, dtype=torch.int64)
        # counted (a reply and its end token): tokens [n/4, n/2) and [3n/4, n), the rest is prompt
        counted = torch.zeros(n, dtype=torch.bool)
        counted[n // 4: n // 2] = True
        counted[(3 * n) // 4:] = True
        inputs[b, : n - 1] = ids[: n - 1]
        key_mask[b, : n - 1] = True
        for t in range(n - 1):
            if counted[t + 1]:
                targets[b, t] = ids[t + 1]
    return inputs, targets, key_mask


def reference(ref, torch, F, lp, cfg, params, adapter, s, inputs, targets, key_mask):
    P = {k: torch.tensor(v, dtype=torch.float64) for k, v in params.items()}
    AB = {k: (torch.tensor(a, dtype=torch.float64, requires_grad=True),
              torch.tensor(b, dtype=torch.float64, requires_grad=True)) for k, (a, b) in adapter.items()}
    lin = lp.lora_linear(torch, F, P, AB, s, None, {"step": None})
    logits = ref.forward(cfg, P, inputs, "half", linear=lin, key_mask=key_mask)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
    loss.backward()
    grads = {k: (a.grad.numpy().copy(), b.grad.numpy().copy()) for k, (a, b) in AB.items()}
    return float(loss), grads


def grad_stats(np, adapter, ga, gb):
    """Worst relative error and cosine per tensor of ga against gb, and the overall cosine."""
    worst_rel, worst_cos, flat_a, flat_b = 0.0, 1.0, [], []
    for name in adapter:
        for i in range(2):
            a, b = ga[name][i].astype(np.float64), gb[name][i].astype(np.float64)
            nb = float(np.linalg.norm(b))
            worst_rel = max(worst_rel, float(np.linalg.norm(a - b)) / nb)
            worst_cos = min(worst_cos, float((a * b).sum()) / (float(np.linalg.norm(a)) * nb + 1e-300))
            flat_a.append(a.ravel())
            flat_b.append(b.ravel())
    fa, fb = np.concatenate(flat_a), np.concatenate(flat_b)
    cos_all = float((fa * fb).sum()) / (float(np.linalg.norm(fa)) * float(np.linalg.norm(fb)))
    return worst_rel, worst_cos, cos_all


def main():
    ap = argparse.ArgumentParser(description=__doc__.strip().split("\n")[0])
    ap.add_argument("--build", default=os.environ.get("BUILD", "build"))
    ap.add_argument("--keep", help="keep the generated files here")
    ap.add_argument("--only", help="run only the cases whose name contains this")
    args = ap.parse_args()
    sys.path.insert(0, HERE)
    import parity_setup
    missing = parity_setup.torch_missing("test_masked_parity")
    if missing is not None:
        return missing
    import numpy as np
    import torch
    import torch.nn.functional as F
    import torch_ref as ref
    import test_lora_parity as lp

    tool = os.path.join(args.build, "tests", "tool_lora")
    missing = parity_setup.tool_missing("test_masked_parity", tool)
    if missing is not None:
        return missing
    torch.set_num_threads(1)
    start = time.time()
    work = args.keep or tempfile.mkdtemp(prefix="anetrain-masked-parity-")
    os.makedirs(work, exist_ok=True)
    try:
        for i, case in enumerate(CASES):
            if args.only and args.only not in case["name"]:
                continue
            label = case["name"]
            cfg = ref.Config(max_position_embeddings=64, **case["cfg"])
            B, T = case["B"], case["T"]
            params = lp.random_model(ref, torch, cfg, seed=6000 + i)
            adapter = lp.random_adapter(ref, torch, cfg, case, seed=7000 + i)
            inputs, targets, key_mask = batch(torch, case, cfg.vocab_size, seed=8000 + i)
            # the tool's TOKENS hold B*(T+1) ids (inputs and one more); --targets replaces the targets
            ids = torch.cat([inputs, torch.zeros((B, 1), dtype=torch.int64)], dim=1)
            tok_path = os.path.join(work, "%s.tokens" % label)
            ids.numpy().astype("<i4").tofile(tok_path)
            tgt_path = os.path.join(work, "%s.targets" % label)
            targets.clamp(min=-1).numpy().astype("<i4").tofile(tgt_path)
            model = os.path.join(work, "%s-hf" % label)
            ref.hf_save(model, cfg, params)
            adapter_dir = os.path.join(work, "%s-adapter" % label)
            lp.write_adapter(ref, adapter_dir, case, adapter)
            s = lp.scale_of(case)
            loss_ref, grads_ref = reference(ref, torch, F, lp, cfg, params, adapter, s, inputs, targets, key_mask)
            counted = int((targets >= 0).sum())
            results = {}
            for mode, extra in (("cpu", []), ("cpu, 2 micro", ["--micro", "2"]), ("ane", ["--backend", "ane"])):
                out = os.path.join(work, "%s-%s-out" % (label, mode.replace(", ", "-").replace(" ", "")))
                cmd = [tool, model, tok_path, str(B), str(T), adapter_dir, "0", "1e-3", "0", "1", out,
                       "--threads", "2", "--targets", tgt_path] + extra
                p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)
                if p.returncode != 0:
                    report(False, "%s [%s]" % (label, mode),
                           "tool_lora failed: exit %d: %s" % (p.returncode, p.stderr.decode(errors="replace")))
                    continue
                _, meta = ref.st_read(os.path.join(out, "result.safetensors"))
                results[mode] = (float(meta["loss"]), float(meta["final_loss"]),
                                 lp.read_adapter(ref, os.path.join(out, "grad"), adapter))
            what = "%d rows of lengths %s, T %d, %d of %d targets counted" % (
                B, "/".join(str(n) for n in case["lengths"]), T, counted, B * T)
            for mode in ("cpu", "cpu, 2 micro"):
                if mode not in results:
                    continue
                loss_c, final_c, grads_c = results[mode]
                err = max(abs(loss_c - loss_ref), abs(final_c - loss_ref)) / abs(loss_ref)
                report(err < TOL_LOSS, "%s [%s] masked loss" % (label, mode),
                       "C %.9f (forward only %.9f) torch %.9f rel %.2e (< %.0e); %s" % (
                           loss_c, final_c, loss_ref, err, TOL_LOSS, what))
                rel, cos, _ = grad_stats(np, adapter, grads_c, grads_ref)
                report(rel < TOL_GRAD_REL and cos > TOL_GRAD_COS, "%s [%s] dA dB" % (label, mode),
                       "%d tensors, worst rel %.2e (< %.0e), worst 1-cos %.1e" % (
                           2 * len(adapter), rel, TOL_GRAD_REL, 1 - cos))
            if "ane" in results and "cpu" in results:
                la, _, ga = results["ane"]
                lc, _, gc = results["cpu"]
                tol = 1e-3 + 2e-4 * abs(lc)
                report(abs(la - lc) < tol, "%s [ane vs cpu] masked loss" % label,
                       "ane %.6f cpu %.6f |d| %.2e (< %.2e)" % (la, lc, abs(la - lc), tol))
                _, cos, cos_all = grad_stats(np, adapter, ga, gc)
                report(cos_all > ANE_COS_ALL and cos > ANE_COS_TENSOR, "%s [ane vs cpu] dA dB" % label,
                       "cosine %.6f overall (> %g), worst tensor %.6f (> %g)" % (
                           cos_all, ANE_COS_ALL, cos, ANE_COS_TENSOR))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print("test_masked_parity: %.1f s" % (time.time() - start))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
