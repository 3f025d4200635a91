#!/usr/bin/python3
"""test_lora_parity.py — LoRA fine-tuning on the CPU backend against float64 PyTorch.

    /usr/bin/python3 tests/test_lora_parity.py --build BUILD_DIR [--keep DIR] [--only NAME] [--seed N]

For each case a random small model (HF directory or llama2.c .bin) and a random PEFT adapter
(adapter_config.json + adapter_model.safetensors with the names PEFT saves; A and B both
random, so every gradient is non-zero) are written; BUILD_DIR/tests/tool_lora (see
tests/tool_lora.c) loads both and, on the CPU backend, computes the adapter's gradient and
trains the adapter alone for 3 AdamW steps, two ways: unmerged (the frozen-base backend, the
adapter beside the weights, LoRA dropout) and, for cases without dropout, merged (W + s B A in
the weights, the full gradient projected onto A and B). The reference is tests/torch_ref.py's
model in float64 with every targeted projection LoRA-wrapped the way PEFT computes it,
unmerged:  y = x Wᵀ + s (drop(x) Aᵀ) Bᵀ,  s = alpha/r (rsLoRA: alpha/sqrt(r)), with the base
frozen (requires_grad False) and torch.optim.AdamW + clip_grad_norm_ over the adapter's
parameters only. With lora_dropout p > 0, drop(x) = x * mask with the masks the tool dumps
(masks.safetensors: 0 or 1/(1-p), one per step, layer, module and sequence), so both sides
drop the same elements; the final loss is evaluation (no dropout), as the tool's. For a llama2.c model (interleaved RoPE) the reference runs the
HF-converted weights (rotate-half) with the adapter exactly as in the file: this checks that
the C side permutes the adapter's q/k rows as it permutes wq/wk.

  logits   max |c - ref| / max |ref|                          < 1e-4
  loss     relative error                                     < 1e-5
  grads    per adapter tensor (lora_A, lora_B of each module and layer):
           ||c - ref|| / ||ref|| < 1e-4 and cosine > 0.99999
  train    3 adapter-only AdamW steps (betas 0.9/0.999, eps 1e-8, weight decay on A and B) with
           clipping that triggers at every step: losses and the final loss relative error < 1e-4,
           pre-clip norms < 1e-4, total adapter update ||c - ref|| / ||ref|| < 3e-3

Without torch: a "skipped" line and exit 0, unless ANETRAIN_REQUIRE_TORCH=1. The last line is
"N passed, N failed"; the exit status is 1 on any failure.
"""
import argparse
import json
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
STEPS, LR, WD, BETAS, EPS = 3, 1e-3, 0.1, (0.9, 0.999), 1e-8

PATHS = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
         "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}

CASES = [
    dict(name="llama-tied-attn",  # the default targets, HF directory
         cfg=dict(model_type="llama", hidden_size=64, intermediate_size=172, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=4, vocab_size=97, tie_word_embeddings=True),
         B=2, T=17, file="hf", targets=["q", "k", "v", "o"], r=4, alpha=8.0, rslora=False),
    dict(name="llama-gqa-interleaved-all",  # llama2.c .bin: the RoPE permutation of q/k adapter rows
         cfg=dict(model_type="llama", hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=8, num_key_value_heads=4, vocab_size=113, tie_word_embeddings=False),
         B=2, T=16, file="llama2c", targets=list(PATHS), r=3, alpha=5.0, rslora=False),
    dict(name="qwen3-mixed-rslora",  # q/k norm after the adapted q/k, a subset of targets, rsLoRA scaling
         cfg=dict(model_type="qwen3", hidden_size=40, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=101, rope_theta=1e6,
                  rms_norm_eps=1e-6, tie_word_embeddings=True),
         B=2, T=19, file="hf", targets=["q", "v", "gate", "down"], r=8, alpha=4.0, rslora=True),
    dict(name="llama-gqa-interleaved-all-dropout",  # LoRA dropout on every module (unmerged only)
         cfg=dict(model_type="llama", hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=8, num_key_value_heads=4, vocab_size=113, tie_word_embeddings=False),
         B=2, T=16, file="llama2c", targets=list(PATHS), r=3, alpha=5.0, rslora=False, dropout=0.3),
    dict(name="qwen3-dropout",
         cfg=dict(model_type="qwen3", hidden_size=40, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=101, rope_theta=1e6,
                  rms_norm_eps=1e-6, tie_word_embeddings=True),
         B=3, T=13, file="hf", targets=["q", "k", "o", "up"], r=4, alpha=8.0, rslora=False, dropout=0.1),
]
MODULE_OF_PATH = {v: k for k, v in PATHS.items()}

passed = 0
failed = 0


def report(ok, label, detail):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
    print("%s %s: %s" % ("ok  " if ok else "FAIL", label, detail), flush=True)


def random_model(ref, torch, cfg, seed):
    """As test_parity.py: every part of the model matters (projections ~ 1/sqrt(fan_in))."""
    g = torch.Generator().manual_seed(seed)
    params = {}
    for name, shape in ref.param_shapes(cfg).items():
        if len(shape) == 1:
            t = 1.0 + 0.25 * torch.randn(shape, generator=g)
        elif name in ("model.embed_tokens.weight", "lm_head.weight"):
            t = 2.0 * torch.randn(shape, generator=g) / shape[1] ** 0.5
        else:
            t = torch.randn(shape, generator=g) / shape[1] ** 0.5
        params[name] = t.to(torch.float32).numpy()
    return params


def random_adapter(ref, torch, cfg, case, seed):
    """HF weight name -> (A [r][in], B [out][r]) as float32 numpy, B rows in rotate-half order
    (PEFT's, for the HF model). The delta s B A is about a third of W, so it matters."""
    g = torch.Generator().manual_seed(seed)
    shapes = ref.param_shapes(cfg)
    r = case["r"]
    out = {}
    for l in range(cfg.num_hidden_layers):
        for t in case["targets"]:
            name = "model.layers.%d.%s.weight" % (l, PATHS[t])
            o, i = shapes[name]
            A = torch.rand((r, i), generator=g) * 2 / i ** 0.5 - 1 / i ** 0.5  # PEFT's init range
            B = torch.randn((o, r), generator=g) * 0.3 / r ** 0.5
            out[name] = (A.to(torch.float32).numpy(), B.to(torch.float32).numpy())
    return out


def scale_of(case):
    return case["alpha"] / (case["r"] ** 0.5 if case["rslora"] else case["r"])


def peft_key(weight_name, which):
    """model.layers.0.self_attn.q_proj.weight -> base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"""
    return "base_model.model." + weight_name[: -len(".weight")] + ".lora_%s.weight" % which


def write_adapter(ref, path, case, adapter):
    os.makedirs(path, exist_ok=True)
    tensors = {}
    for name, (A, B) in adapter.items():
        tensors[peft_key(name, "A")] = A
        tensors[peft_key(name, "B")] = B
    ref.st_write(os.path.join(path, "adapter_model.safetensors"), tensors, {"format": "pt"})
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": case["r"], "lora_alpha": case["alpha"],
              "lora_dropout": case.get("dropout", 0.0), "target_modules": [PATHS[t].split(".")[1] for t in case["targets"]],
              "bias": "none", "fan_in_fan_out": False, "use_rslora": case["rslora"], "use_dora": False,
              "modules_to_save": None, "rank_pattern": {}, "alpha_pattern": {}, "layers_to_transform": None,
              "base_model_name_or_path": None, "inference_mode": True, "init_lora_weights": True}
    with open(os.path.join(path, "adapter_config.json"), "w") as f:
        json.dump(config, f, indent=2)


def read_adapter(ref, path, adapter):
    tensors, _ = ref.st_read(os.path.join(path, "adapter_model.safetensors"))
    return {name: (tensors[peft_key(name, "A")], tensors[peft_key(name, "B")]) for name in adapter}


def lora_linear(torch, F, P, AB, s, masks, state):
    """linear(name, x) for torch_ref.forward: PEFT's LoRA Linear, unmerged. masks (or None: no
    dropout) maps "mask.STEP.LAYER.MODULE" to [B][In][T] arrays; state["step"] picks the step,
    None for evaluation (no dropout)."""
    def linear(name, x):
        y = F.linear(x, P[name])
        if name in AB:
            A, B = AB[name]
            xd = x
            if masks is not None and state["step"] is not None:
                parts = name.split(".")  # model.layers.L.self_attn.q_proj.weight
                key = "mask.%d.%s.%s" % (state["step"], parts[2], MODULE_OF_PATH[parts[3] + "." + parts[4]])
                xd = x * torch.tensor(masks[key], dtype=torch.float64).permute(0, 2, 1)
            y = y + s * F.linear(F.linear(xd, A), B)
        return y
    return linear


def reference(ref, torch, F, cfg, params, adapter, s, inputs, targets, clip, masks=None):
    """float64: logits, loss, dA/dB at the adapter (step 0's masks), and STEPS adapter-only AdamW
    steps (step i with masks i); the final loss without dropout."""
    P = {k: torch.tensor(v, dtype=torch.float64) for k, v in params.items()}  # frozen
    AB = {k: (torch.tensor(a, dtype=torch.float64, requires_grad=True),
              torch.tensor(b, dtype=torch.float64, requires_grad=True)) for k, (a, b) in adapter.items()}
    state = {"step": 0}
    lin = lora_linear(torch, F, P, AB, s, masks, state)
    logits = ref.forward(cfg, P, inputs, "half", linear=lin)
    loss = ref.loss_fn(logits, targets)
    loss.backward()
    grads = {k: (a.grad.numpy().copy(), b.grad.numpy().copy()) for k, (a, b) in AB.items()}
    trainable = [t for pair in AB.values() for t in pair]
    opt = torch.optim.AdamW(trainable, lr=LR, betas=BETAS, eps=EPS, weight_decay=WD)
    losses, norms = [], []
    for i in range(STEPS):
        state["step"] = i
        opt.zero_grad(set_to_none=True)
        l = ref.loss_fn(ref.forward(cfg, P, inputs, "half", linear=lin), targets)
        l.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(trainable, clip)))
        opt.step()
        losses.append(float(l))
    state["step"] = None
    with torch.no_grad():
        final = float(ref.loss_fn(ref.forward(cfg, P, inputs, "half", linear=lin), targets))
    final_ad = {k: (a.detach().numpy(), b.detach().numpy()) for k, (a, b) in AB.items()}
    return logits.detach().numpy(), float(loss), grads, losses, norms, final, final_ad


def compare(ref, np, label, case, adapter, out, R, clip):
    logits_ref, loss_ref, grads_ref, losses_ref, norms_ref, final_ref, final_ad_ref = R
    tensors, meta = ref.st_read(os.path.join(out, "result.safetensors"))
    logits_c = tensors["logits"].astype(np.float64).transpose(0, 2, 1)
    scale = float(np.abs(logits_ref).max())
    err = float(np.abs(logits_c - logits_ref).max()) / scale
    report(err < TOL_LOGITS, label + " logits", "max|d|/max|ref| = %.2e (< %.0e)" % (err, TOL_LOGITS))
    loss_c = float(meta["loss"])
    err = abs(loss_c - loss_ref) / abs(loss_ref)
    report(err < TOL_LOSS, label + " loss", "C %.9f ref %.9f rel %.2e (< %.0e)" % (loss_c, loss_ref, err, TOL_LOSS))

    grads_c = read_adapter(ref, os.path.join(out, "grad"), adapter)
    worst_rel, worst_cos, worst_name, bad = 0.0, 1.0, "", []
    for name in adapter:
        for which, gc, gr in (("A", grads_c[name][0], grads_ref[name][0]), ("B", grads_c[name][1], grads_ref[name][1])):
            gc = gc.astype(np.float64)
            nr = float(np.linalg.norm(gr))
            rel = float(np.linalg.norm(gc - gr)) / nr
            cos = float((gc * gr).sum()) / (float(np.linalg.norm(gc)) * nr + 1e-300)
            if rel > worst_rel:
                worst_rel, worst_name = rel, "%s lora_%s" % (name, which)
            worst_cos = min(worst_cos, cos)
            if not (rel < TOL_GRAD_REL and cos > TOL_GRAD_COS):
                bad.append("%s lora_%s rel %.2e cos 1-%.1e" % (name, which, rel, 1 - cos))
    report(not bad, label + " dA dB", "%d tensors, worst rel %.2e (%s), worst 1-cos %.1e%s" % (
        2 * len(adapter), worst_rel, worst_name, 1 - worst_cos, ("; " + "; ".join(bad)) if bad else ""))

    losses_c = [float(x) for x in meta["train_losses"].split(",")]
    norms_c = [float(x) for x in meta["train_grad_norms"].split(",")]
    final_c = float(meta["final_loss"])
    loss_errs = [abs(a - b) / abs(b) for a, b in zip(losses_c + [final_c], losses_ref + [final_ref])]
    norm_errs = [abs(a - b) / abs(b) for a, b in zip(norms_c, norms_ref)]
    clipped = all(n > clip for n in norms_c + norms_ref)
    final_c_ad = read_adapter(ref, os.path.join(out, "final"), adapter)
    dc, dr = [], []
    for name in adapter:
        for i in range(2):
            p0 = adapter[name][i].astype(np.float64)
            dc.append((final_c_ad[name][i].astype(np.float64) - p0).ravel())
            dr.append((final_ad_ref[name][i] - p0).ravel())
    dc, dr = np.concatenate(dc), np.concatenate(dr)
    upd = float(np.linalg.norm(dc - dr)) / float(np.linalg.norm(dr))
    ok = len(losses_c) == STEPS and max(loss_errs) < TOL_TRAIN and max(norm_errs) < TOL_TRAIN and clipped and \
        upd < TOL_UPDATE
    report(ok, label + " train", "%d adapter-only AdamW steps: losses %s -> %.6f, max rel %.2e; pre-clip norms "
           "max rel %.2e (clipped: %s); adapter update rel %.2e (< %.0e)" % (
               STEPS, "/".join("%.6f" % x for x in losses_c), final_c, max(loss_errs), max(norm_errs),
               "yes" if clipped else "NO", upd, TOL_UPDATE))


def main():
    ap = argparse.ArgumentParser(description=__doc__.strip().split("\n")[0])
    ap.add_argument("--build", default=os.environ.get("BUILD", "build"))
    ap.add_argument("--keep", help="keep the generated files here")
    ap.add_argument("--only", help="run only the cases whose name contains this")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    sys.path.insert(0, HERE)
    import parity_setup
    missing = parity_setup.torch_missing("test_lora_parity")
    if missing is not None:
        return missing
    import numpy as np
    import torch
    import torch.nn.functional as F
    import torch_ref as ref

    tool = os.path.join(args.build, "tests", "tool_lora")
    missing = parity_setup.tool_missing("test_lora_parity", tool)
    if missing is not None:
        return missing
    torch.set_num_threads(1)
    start = time.time()
    work = args.keep or tempfile.mkdtemp(prefix="anetrain-lora-parity-")
    os.makedirs(work, exist_ok=True)
    try:
        for i, case in enumerate(CASES):
            if args.only and args.only not in case["name"]:
                continue
            label = case["name"]
            cfg = ref.Config(max_position_embeddings=64, **case["cfg"])
            B, T = case["B"], case["T"]
            params = random_model(ref, torch, cfg, seed=3000 + i + 100 * args.seed)  # rotate-half style
            adapter = random_adapter(ref, torch, cfg, case, seed=4000 + i + 100 * args.seed)
            g = torch.Generator().manual_seed(5000 + i + 100 * args.seed)
            ids = torch.randint(0, cfg.vocab_size, (B, T + 1), generator=g, dtype=torch.int64)
            tok_path = os.path.join(work, "%s.tokens" % label)
            ids.numpy().astype("<i4").tofile(tok_path)
            inputs, targets = ids[:, :-1].contiguous(), ids[:, 1:].contiguous()
            if case["file"] == "llama2c":  # the C side reads interleaved weights; the reference the HF ones
                model = os.path.join(work, "%s.bin" % label)
                ref.llama2c_save(model, cfg, ref.convert_rope(cfg, params, to_half=False),
                                 seq_len=cfg.max_position_embeddings)
            else:
                model = os.path.join(work, "%s-hf" % label)
                ref.hf_save(model, cfg, params)
            adapter_dir = os.path.join(work, "%s-adapter" % label)
            write_adapter(ref, adapter_dir, case, adapter)
            s = scale_of(case)
            # a clip below the first norm, so that clipping triggers at every step
            R0 = reference(ref, torch, F, cfg, params, adapter, s, inputs, targets, clip=1e30)
            norm0 = float(np.sqrt(sum(float((a ** 2).sum() + (b ** 2).sum()) for a, b in R0[2].values())))
            clip = float(np.float32(norm0 * 0.3))
            dropout = case.get("dropout", 0.0)
            R_plain = None if dropout else reference(ref, torch, F, cfg, params, adapter, s, inputs, targets, clip)
            for mode in ["unmerged"] + ([] if dropout else ["merged"]):
                out = os.path.join(work, "%s-%s-out" % (label, mode))
                cmd = [tool, model, tok_path, str(B), str(T), adapter_dir, str(STEPS), repr(LR), repr(WD), repr(clip),
                       out, "--threads", "2"] + (["--merged"] if mode == "merged" else ["--dropout-seed", str(77 + i)])
                p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
                if p.returncode != 0:
                    report(False, "%s %s" % (label, mode),
                           "tool_lora failed: exit %d: %s" % (p.returncode, p.stderr.decode(errors="replace")))
                    continue
                try:
                    R = R_plain
                    if dropout:  # the same masks as the C side
                        masks, _ = ref.st_read(os.path.join(out, "masks.safetensors"))
                        kept = np.concatenate([m.ravel() != 0 for m in masks.values()]).mean()
                        report(abs((1 - kept) - dropout) < 0.05, label + " masks",
                               "%d masks, %.3f of the elements dropped (p = %g)" % (len(masks), 1 - kept, dropout))
                        R = reference(ref, torch, F, cfg, params, adapter, s, inputs, targets, clip, masks)
                    compare(ref, np, "%s [%s, %s, r=%d, %s%s%s]" % (
                        label, mode, case["file"], case["r"], ",".join(case["targets"]),
                        ", rslora" if case["rslora"] else "", ", dropout %g" % dropout if dropout else ""),
                        case, adapter, out, R, clip)
                except Exception as e:
                    report(False, "%s %s" % (label, mode), "comparison failed: %s: %s" % (type(e).__name__, e))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print("test_lora_parity: %.1f s" % (time.time() - start))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
