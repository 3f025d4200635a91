#!/usr/bin/python3
"""torch_step.py — the PyTorch peer of bench_train: the same training step, timed the same way.

A plain Llama-2 in float32 written the way a typical PyTorch 1.13 user writes it (nn.Module
per block, explicit causal attention with a mask since F.scaled_dot_product_attention only
arrived in 2.0), AdamW with llama2.c's settings and parameter groups, clip_grad_norm_(1.0).
One step = zero_grad + forward + loss + backward + clip + AdamW, on random weights and random
tokens. Prints table rows in bench_train's format, so bench/run.sh can show them side by side.

Run it with Debian's interpreter, /usr/bin/python3, the one python3-torch installs into.
"""
import argparse
import math
import os
import statistics
import sys
import time

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError as e:  # run.sh checks for this before calling us; be clear if run by hand
    sys.exit(f"torch_step.py: cannot import torch ({e}); install python3-torch and run with /usr/bin/python3")

# The presets of src/model/config.c that this bench knows (Llama-2 "stories" models, tied).
PRESETS = {
    "stories15m": dict(dim=288, hidden_dim=768, n_layers=6, n_heads=6, vocab_size=32000, max_seq_len=256),
    "stories42m": dict(dim=512, hidden_dim=1376, n_layers=8, n_heads=8, vocab_size=32000, max_seq_len=1024),
    "stories110m": dict(dim=768, hidden_dim=2048, n_layers=12, n_heads=12, vocab_size=32000, max_seq_len=1024),
}


# ---------------------------------------------------------------------------- the model

class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(head_dim, seq_len, theta=10000.0):
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2).float() / head_dim))
    angles = torch.outer(torch.arange(seq_len).float(), freqs)  # (T, D/2)
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    # x (B, T, H, D): pairs (2i, 2i+1) rotate together, as llama2.c's model.py.
    xr, xi = x.float().reshape(x.shape[:-1] + (-1, 2)).unbind(-1)
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    return torch.stack([xr * cos - xi * sin, xr * sin + xi * cos], dim=-1).flatten(3)


class Attention(nn.Module):
    def __init__(self, dim, n_heads, max_seq_len):
        super().__init__()
        self.n_heads, self.head_dim = n_heads, dim // n_heads
        self.wq = nn.Linear(dim, dim, bias=False)
        self.wk = nn.Linear(dim, dim, bias=False)
        self.wv = nn.Linear(dim, dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)
        mask = torch.full((1, 1, max_seq_len, max_seq_len), float("-inf")).triu(1)
        self.register_buffer("mask", mask)

    def forward(self, x, cos, sin):
        B, T, C = x.shape
        q = self.wq(x).view(B, T, self.n_heads, self.head_dim)
        k = self.wk(x).view(B, T, self.n_heads, self.head_dim)
        v = self.wv(x).view(B, T, self.n_heads, self.head_dim)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H, T, D)
        scores = q @ k.transpose(2, 3) / math.sqrt(self.head_dim) + self.mask[:, :, :T, :T]
        att = F.softmax(scores, dim=-1) @ v
        return self.wo(att.transpose(1, 2).contiguous().view(B, T, C))


class FeedForward(nn.Module):
    def __init__(self, dim, hidden_dim):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden_dim, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, p):
        super().__init__()
        self.attention_norm = RMSNorm(p["dim"])
        self.attention = Attention(p["dim"], p["n_heads"], p["max_seq_len"])
        self.ffn_norm = RMSNorm(p["dim"])
        self.feed_forward = FeedForward(p["dim"], p["hidden_dim"])

    def forward(self, x, cos, sin):
        x = x + self.attention(self.attention_norm(x), cos, sin)
        return x + self.feed_forward(self.ffn_norm(x))


class Llama(nn.Module):
    def __init__(self, p):
        super().__init__()
        self.tok_embeddings = nn.Embedding(p["vocab_size"], p["dim"])
        self.layers = nn.ModuleList(Block(p) for _ in range(p["n_layers"]))
        self.norm = RMSNorm(p["dim"])
        self.output = nn.Linear(p["dim"], p["vocab_size"], bias=False)
        self.tok_embeddings.weight = self.output.weight  # tied, as the stories models
        cos, sin = rope_tables(p["dim"] // p["n_heads"], p["max_seq_len"])
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        for name, w in self.named_parameters():  # llama2.c's init
            if w.dim() == 2:
                std = 0.02 / math.sqrt(2 * p["n_layers"]) if name.endswith(("wo.weight", "w3.weight")) else 0.02
                nn.init.normal_(w, mean=0.0, std=std)

    def forward(self, tokens, targets):
        T = tokens.shape[1]
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]
        x = self.tok_embeddings(tokens)
        for layer in self.layers:
            x = layer(x, cos, sin)
        logits = self.output(self.norm(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


# ---------------------------------------------------------------------------- the bench

def train_flops_per_seq(p, T):
    """config_train_flops_per_seq of src/model/config.c, so %peak means the same thing."""
    C, Fh, L, V, H = p["dim"], p["hidden_dim"], p["n_layers"], p["vocab_size"], p["n_heads"]
    D = C // H
    weights = L * (4 * C * C + 3 * Fh * C) + V * C
    return 6.0 * weights * T + L * H * (2.0 * T * T * D) * 7


def bench(name, args):
    p = PRESETS[name]
    torch.manual_seed(args.seed)
    model = Llama(p)
    model.train()
    decay = [w for w in model.parameters() if w.dim() >= 2]
    no_decay = [w for w in model.parameters() if w.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=5e-4, betas=(0.9, 0.95), eps=1e-8)
    tokens = torch.randint(0, p["vocab_size"], (args.batch, args.seq))
    targets = torch.randint(0, p["vocab_size"], (args.batch, args.seq))

    fb, op, total, losses = [], [], [], []
    for i in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        t1 = time.perf_counter()
        loss = model(tokens, targets)
        loss.backward()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        t3 = time.perf_counter()
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            sys.exit(f"torch_step.py: {name}: step {i + 1}: loss is {losses[-1]} (expected a finite number)")
        if i >= args.warmup:
            fb.append(t2 - t1)
            op.append((t1 - t0) + (t3 - t2))
            total.append(t3 - t0)

    step = statistics.median(total)
    gflops = train_flops_per_seq(p, args.seq) * args.batch / step / 1e9
    peak = f"{100 * gflops / args.peak_gflops:5.1f}%" if args.peak_gflops > 0 else "    -"
    print(f"{'torch':<8} {name:<12} {f'{args.batch}x{args.seq}':<7} {args.steps:5d} {1e3 * step:9.1f} "
          f"{1e3 * min(total):9.1f} {args.batch * args.seq / step:8.0f} {gflops:8.1f} {peak} "
          f"{1e3 * statistics.median(fb):10.1f} {1e3 * statistics.median(op):8.1f}", flush=True)
    if args.detail:
        print(f"         {'':<12} torch {torch.__version__}, {torch.get_num_threads()} threads; "
              f"loss {losses[0]:.4f} -> {losses[-1]:.4f}", flush=True)


def main():
    ap = argparse.ArgumentParser(description="Times full training steps of a plain PyTorch Llama-2 "
                                 "(the peer of bench_train; same table columns).")
    ap.add_argument("--model", action="append", default=None,
                    help="preset(s), repeatable or comma-separated: " + " ".join(PRESETS))
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=5, help="timed steps; the row shows the median")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--peak-gflops", type=float, default=0.0, help="sgemm peak in GFLOP/s for the %%peak column")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--detail", action="store_true")
    ap.add_argument("--no-header", action="store_true")
    args = ap.parse_args()
    models = [m for arg in (args.model or ["stories15m,stories110m"]) for m in arg.split(",") if m]
    for m in models:
        if m not in PRESETS:
            ap.error(f"--model: unknown preset '{m}' (expected one of: {' '.join(PRESETS)})")
    if args.batch < 1 or args.seq < 1 or args.steps < 1 or args.warmup < 0 or args.threads < 1:
        ap.error("--batch, --seq, --steps, --threads must be >= 1 and --warmup >= 0")
    torch.set_num_threads(args.threads)
    if not args.no_header:
        print(f"{'impl':<8} {'model':<12} {'BxT':<7} {'steps':>5} {'ms/step':>9} {'best ms':>9} {'tok/s':>8} "
              f"{'GFLOP/s':>8} {'%peak':>6} {'fwd+bwd ms':>10} {'optim ms':>8}")
    for m in models:
        bench(m, args)


if __name__ == "__main__":
    main()
