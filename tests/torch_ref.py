#!/usr/bin/python3
"""torch_ref.py — an independent float64 PyTorch reference of the Llama-2 / Qwen3 decoder.

Written the ordinary token-major PyTorch way, from the model definitions (HF
modeling_llama.py / modeling_qwen3.py, llama2.c model.py), not from anetrain's C code:

    x = embed(ids)                                              [B, T, C]
    per layer:
        h = rmsnorm(x) * input_layernorm
        q, k, v = q_proj(h), k_proj(h), v_proj(h)               [B, T, heads, D]
        (qwen3) q, k = rmsnorm over D * q_norm / k_norm         before RoPE
        q, k = rope(q), rope(k)                                 "half" (HF rotate_half) or
                                                                "interleaved" (llama2.c / Meta)
        a = softmax(causal(q k^T / sqrt(D))) v                  GQA: query head h uses kv head
                                                                h // (H / KV), as HF repeat_kv
        x = x + o_proj(a)
        h = rmsnorm(x) * post_attention_layernorm
        x = x + down(silu(gate(h)) * up(h))
    logits = lm_head(rmsnorm(x) * norm)   (lm_head = embed_tokens when tied)
    loss = mean cross-entropy over the B*T positions

Parameters are a dict of HF names -> tensors ([out][in] weights, as nn.Linear). Also here:
a minimal safetensors reader/writer (F32/F64/F16/BF16 read, F32 write), HF directory and
llama2.c .bin load/save, the HF RoPE row permutation, and a token-file reader.

Command line (a quick check of one model):
    /usr/bin/python3 tests/torch_ref.py MODEL TOKENS B T [--rope half|interleaved]
prints the float64 loss. MODEL is a HF directory or a llama2.c .bin; TOKENS raw int32 ids,
B*(T+1) of them.
"""
import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------- safetensors

_ST_DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16}


def st_read(path):
    """Returns (dict name -> float numpy array, metadata dict)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n].decode("utf-8"))
    base = 8 + n
    meta = header.pop("__metadata__", {}) or {}
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        raw = data[base + b:base + e]
        dt = info["dtype"]
        if dt == "BF16":
            u = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            arr = u.view(np.float32)
        elif dt in _ST_DTYPES:
            arr = np.frombuffer(raw, dtype=np.dtype(_ST_DTYPES[dt]).newbyteorder("<"))
        else:
            raise ValueError("%s: tensor %s: unsupported dtype %s" % (path, name, dt))
        out[name] = arr.reshape(info["shape"]).copy()
    return out, meta


def st_write(path, tensors, metadata=None):
    """Writes a dict name -> array as F32 safetensors (names sorted, header padded to 8)."""
    header = {}
    blobs = []
    off = 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(np.asarray(tensors[name], dtype="<f4"))
        raw = a.tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for raw in blobs:
            f.write(raw)


# ----------------------------------------------------------------------------- config

class Config:
    """The fields of a HF config.json that define the function the model computes."""

    def __init__(self, model_type, hidden_size, intermediate_size, num_hidden_layers, num_attention_heads,
                 num_key_value_heads, vocab_size, head_dim=None, rope_theta=10000.0, rms_norm_eps=1e-5,
                 tie_word_embeddings=False, max_position_embeddings=2048):
        self.model_type = model_type
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads
        self.vocab_size = vocab_size
        self.head_dim = head_dim if head_dim else hidden_size // num_attention_heads
        self.rope_theta = float(rope_theta)
        self.rms_norm_eps = float(rms_norm_eps)
        self.tie_word_embeddings = bool(tie_word_embeddings)
        self.max_position_embeddings = max_position_embeddings

    @property
    def qk_norm(self):
        return self.model_type == "qwen3"

    @classmethod
    def from_json(cls, d):
        return cls(model_type=d["model_type"], hidden_size=d["hidden_size"], intermediate_size=d["intermediate_size"],
                   num_hidden_layers=d["num_hidden_layers"], num_attention_heads=d["num_attention_heads"],
                   num_key_value_heads=d.get("num_key_value_heads", d["num_attention_heads"]),
                   vocab_size=d["vocab_size"], head_dim=d.get("head_dim"), rope_theta=d.get("rope_theta", 10000.0),
                   rms_norm_eps=d.get("rms_norm_eps", 1e-6), tie_word_embeddings=d.get("tie_word_embeddings", False),
                   max_position_embeddings=d.get("max_position_embeddings", 2048))

    def to_json(self):
        """A config.json as HF writes it for LlamaForCausalLM / Qwen3ForCausalLM."""
        common = {
            "hidden_size": self.hidden_size, "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers, "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads, "vocab_size": self.vocab_size,
            "max_position_embeddings": self.max_position_embeddings, "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta, "rope_scaling": None, "hidden_act": "silu", "attention_bias": False,
            "attention_dropout": 0.0, "tie_word_embeddings": self.tie_word_embeddings, "torch_dtype": "float32",
            "initializer_range": 0.02, "use_cache": True, "bos_token_id": 1, "eos_token_id": 2,
        }
        if self.model_type == "qwen3":
            common.update({"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "head_dim": self.head_dim,
                           "use_sliding_window": False, "sliding_window": None,
                           "max_window_layers": self.num_hidden_layers})
        else:
            common.update({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "mlp_bias": False,
                           "pretraining_tp": 1})
            if self.head_dim != self.hidden_size // self.num_attention_heads:
                common["head_dim"] = self.head_dim
        return common


def param_shapes(cfg):
    """HF name -> shape of every parameter of the model."""
    C, Fh, D = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    H, KV, V = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.vocab_size
    s = {"model.embed_tokens.weight": (V, C), "model.norm.weight": (C,)}
    for l in range(cfg.num_hidden_layers):
        p = "model.layers.%d." % l
        s[p + "input_layernorm.weight"] = (C,)
        s[p + "self_attn.q_proj.weight"] = (H * D, C)
        s[p + "self_attn.k_proj.weight"] = (KV * D, C)
        s[p + "self_attn.v_proj.weight"] = (KV * D, C)
        s[p + "self_attn.o_proj.weight"] = (C, H * D)
        if cfg.qk_norm:
            s[p + "self_attn.q_norm.weight"] = (D,)
            s[p + "self_attn.k_norm.weight"] = (D,)
        s[p + "post_attention_layernorm.weight"] = (C,)
        s[p + "mlp.gate_proj.weight"] = (Fh, C)
        s[p + "mlp.up_proj.weight"] = (Fh, C)
        s[p + "mlp.down_proj.weight"] = (C, Fh)
    if not cfg.tie_word_embeddings:
        s["lm_head.weight"] = (V, C)
    return s


# ----------------------------------------------------------------------------- model files

def hf_load(path):
    """Loads a HF directory: (Config, dict HF name -> numpy array)."""
    with open(os.path.join(path, "config.json")) as f:
        cfg = Config.from_json(json.load(f))
    tensors, _ = st_read(os.path.join(path, "model.safetensors"))
    shapes = param_shapes(cfg)
    params = {}
    for name, shape in shapes.items():
        if name not in tensors:
            raise ValueError("%s: missing tensor %s" % (path, name))
        if tuple(tensors[name].shape) != tuple(shape):
            raise ValueError("%s: tensor %s: expected shape %s, found %s" % (path, name, shape, tensors[name].shape))
        params[name] = tensors[name]
    return cfg, params


def hf_save(path, cfg, params):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg.to_json(), f, indent=2)
    st_write(os.path.join(path, "model.safetensors"), {k: params[k] for k in param_shapes(cfg)},
             {"format": "pt"})


def rope_rows_to_half(w, n_heads, head_dim):
    """Permutes rows (first axis) of a q/k projection (or q/k norm) from interleaved pairs to
    rotate-half: half row h*D + p*(D/2) + i = interleaved row h*D + 2i + p (HF's converter)."""
    w = np.asarray(w)
    rest = w.shape[1:]
    return w.reshape(n_heads, head_dim // 2, 2, *rest).swapaxes(1, 2).reshape(n_heads * head_dim, *rest)


def rope_rows_to_interleaved(w, n_heads, head_dim):
    """The inverse of rope_rows_to_half."""
    w = np.asarray(w)
    rest = w.shape[1:]
    return w.reshape(n_heads, 2, head_dim // 2, *rest).swapaxes(1, 2).reshape(n_heads * head_dim, *rest)


def convert_rope(cfg, params, to_half):
    """A copy of params with q/k rows (and q_norm/k_norm) permuted between the two RoPE styles."""
    f = rope_rows_to_half if to_half else rope_rows_to_interleaved
    out = dict(params)
    D = cfg.head_dim
    for l in range(cfg.num_hidden_layers):
        p = "model.layers.%d.self_attn." % l
        out[p + "q_proj.weight"] = f(params[p + "q_proj.weight"], cfg.num_attention_heads, D)
        out[p + "k_proj.weight"] = f(params[p + "k_proj.weight"], cfg.num_key_value_heads, D)
        if cfg.qk_norm:
            out[p + "q_norm.weight"] = f(params[p + "q_norm.weight"], 1, D)
            out[p + "k_norm.weight"] = f(params[p + "k_norm.weight"], 1, D)
    return out


def _llama2c_order(cfg):
    L = cfg.num_hidden_layers
    per_layer = lambda s: ["model.layers.%d.%s" % (l, s) for l in range(L)]
    return (["model.embed_tokens.weight"] + per_layer("input_layernorm.weight") +
            per_layer("self_attn.q_proj.weight") + per_layer("self_attn.k_proj.weight") +
            per_layer("self_attn.v_proj.weight") + per_layer("self_attn.o_proj.weight") +
            per_layer("post_attention_layernorm.weight") + per_layer("mlp.gate_proj.weight") +
            per_layer("mlp.down_proj.weight") + per_layer("mlp.up_proj.weight") + ["model.norm.weight"])


def llama2c_save(path, cfg, params, seq_len):
    """Writes a llama2.c legacy (version 0) checkpoint. params are in INTERLEAVED RoPE style
    (llama2.c's own); negative vocab marks an untied classifier stored at the end."""
    if cfg.qk_norm or cfg.head_dim * cfg.num_attention_heads != cfg.hidden_size:
        raise ValueError("llama2.c format cannot hold qk-norm or head_dim != dim/n_heads")
    V = cfg.vocab_size if cfg.tie_word_embeddings else -cfg.vocab_size
    D = cfg.head_dim
    with open(path, "wb") as f:
        f.write(struct.pack("<7i", cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers,
                            cfg.num_attention_heads, cfg.num_key_value_heads, V, seq_len))
        for name in _llama2c_order(cfg):
            f.write(np.ascontiguousarray(params[name], dtype="<f4").tobytes())
        freqs = 1.0 / (10000.0 ** (np.arange(0, D, 2)[: D // 2] / D))
        ang = np.outer(np.arange(seq_len), freqs)
        f.write(np.cos(ang).astype("<f4").tobytes())
        f.write(np.sin(ang).astype("<f4").tobytes())
        if not cfg.tie_word_embeddings:
            f.write(np.ascontiguousarray(params["lm_head.weight"], dtype="<f4").tobytes())


def llama2c_load(path):
    """Reads a llama2.c legacy checkpoint: (Config, params in interleaved style, seq_len)."""
    with open(path, "rb") as f:
        data = f.read()
    dim, hidden, L, H, KV, V, seq_len = struct.unpack("<7i", data[:28])
    cfg = Config("llama", dim, hidden, L, H, KV, abs(V), rope_theta=10000.0, rms_norm_eps=1e-5,
                 tie_word_embeddings=V > 0, max_position_embeddings=seq_len)
    shapes = param_shapes(cfg)
    off = 28
    params = {}

    def take(shape):
        nonlocal off
        n = int(np.prod(shape))
        a = np.frombuffer(data, dtype="<f4", count=n, offset=off).reshape(shape).copy()
        off += 4 * n
        return a

    for name in _llama2c_order(cfg):
        params[name] = take(shapes[name])
    off += 2 * 4 * seq_len * (cfg.head_dim // 2)
    if V < 0:
        params["lm_head.weight"] = take(shapes["lm_head.weight"])
    if off != len(data):
        raise ValueError("%s: %d trailing bytes" % (path, len(data) - off))
    return cfg, params, seq_len


def load_model(path):
    """HF directory or llama2.c .bin: (Config, params, rope style of the file)."""
    if os.path.isdir(path):
        cfg, params = hf_load(path)
        return cfg, params, "half"
    cfg, params, _ = llama2c_load(path)
    return cfg, params, "interleaved"


def read_tokens(path, B, T):
    """Raw little-endian int32 ids, B*(T+1) of them -> (inputs, targets) LongTensors [B, T]."""
    ids = np.fromfile(path, dtype="<i4")
    if ids.size != B * (T + 1):
        raise ValueError("%s: expected %d ids, found %d" % (path, B * (T + 1), ids.size))
    ids = torch.from_numpy(ids.astype(np.int64)).view(B, T + 1)
    return ids[:, :-1].contiguous(), ids[:, 1:].contiguous()


# ----------------------------------------------------------------------------- the model

def rms_norm(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rope_cos_sin(T, D, theta, dtype=torch.float64):
    """cos, sin of pos * theta^(-2i/D) for pos < T, i < D/2: [T, D/2]."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
    ang = torch.outer(torch.arange(T, dtype=torch.float64), inv_freq)
    return ang.cos().to(dtype), ang.sin().to(dtype)


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x, cos, sin, style):
    """x [B, heads, T, D]; cos, sin [T, D/2]."""
    if style == "half":  # HF: q * cos + rotate_half(q) * sin, cos = cat(freqs, freqs)
        c = torch.cat((cos, cos), dim=-1)
        s = torch.cat((sin, sin), dim=-1)
        return x * c + rotate_half(x) * s
    if style == "interleaved":  # llama2.c / Meta: complex multiply of pairs (x[2i], x[2i+1])
        xr = x.reshape(*x.shape[:-1], -1, 2)
        x0, x1 = xr[..., 0], xr[..., 1]
        return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)
    raise ValueError("rope style: expected half or interleaved, found %r" % (style,))


def repeat_kv(x, n_rep):
    """[B, KV, T, D] -> [B, KV*n_rep, T, D] (as HF's repeat_kv)."""
    if n_rep == 1:
        return x
    B, KV, T, D = x.shape
    return x[:, :, None, :, :].expand(B, KV, n_rep, T, D).reshape(B, KV * n_rep, T, D)


def forward(cfg, P, idx, rope_style, linear=None, key_mask=None):
    """P: dict HF name -> tensor; idx [B, T] long. Returns logits [B, T, V].
    linear(name, x), if given, computes each projection of a layer in place of
    F.linear(x, P[name]) (name: the weight's HF name), e.g. a LoRA-wrapped linear.
    key_mask [B, T] bool, if given: False keys (padding) are masked out of every query's
    attention, besides the causal mask (HF's attention_mask)."""
    if linear is None:
        linear = lambda name, x: F.linear(x, P[name])
    B, T = idx.shape
    H, KV, D, eps = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, cfg.rms_norm_eps
    emb = P["model.embed_tokens.weight"]
    cos, sin = rope_cos_sin(T, D, cfg.rope_theta, emb.dtype)
    mask = torch.ones(T, T, dtype=torch.bool).triu(1)
    if key_mask is not None:  # [B, 1, T, T]: a query sees no padding key
        mask = mask[None, None, :, :] | ~key_mask[:, None, None, :]
    x = F.embedding(idx, emb)
    for l in range(cfg.num_hidden_layers):
        p = "model.layers.%d." % l
        h = rms_norm(x, P[p + "input_layernorm.weight"], eps)
        q = linear(p + "self_attn.q_proj.weight", h).view(B, T, H, D)
        k = linear(p + "self_attn.k_proj.weight", h).view(B, T, KV, D)
        v = linear(p + "self_attn.v_proj.weight", h).view(B, T, KV, D)
        if cfg.qk_norm:
            q = rms_norm(q, P[p + "self_attn.q_norm.weight"], eps)
            k = rms_norm(k, P[p + "self_attn.k_norm.weight"], eps)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        q = apply_rope(q, cos, sin, rope_style)
        k = apply_rope(k, cos, sin, rope_style)
        k = repeat_kv(k, H // KV)
        v = repeat_kv(v, H // KV)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(D)
        att = att.masked_fill(mask, float("-inf")).softmax(dim=-1)
        a = (att @ v).transpose(1, 2).reshape(B, T, H * D)
        x = x + linear(p + "self_attn.o_proj.weight", a)
        h = rms_norm(x, P[p + "post_attention_layernorm.weight"], eps)
        x = x + linear(p + "mlp.down_proj.weight",
                       F.silu(linear(p + "mlp.gate_proj.weight", h)) * linear(p + "mlp.up_proj.weight", h))
    x = rms_norm(x, P["model.norm.weight"], eps)
    wcls = emb if cfg.tie_word_embeddings else P["lm_head.weight"]
    return F.linear(x, wcls)


def loss_fn(logits, targets):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def to_torch(params, dtype=torch.float64):
    """numpy dict -> dict of leaf tensors with requires_grad."""
    return {k: torch.tensor(np.asarray(v), dtype=dtype).requires_grad_(True) for k, v in params.items()}


def grads_and_logits(cfg, params, inputs, targets, rope_style):
    """One forward/backward in float64: (logits [B, T, V], loss float, dict name -> grad numpy)."""
    P = to_torch(params)
    logits = forward(cfg, P, inputs, rope_style)
    loss = loss_fn(logits, targets)
    loss.backward()
    return logits.detach().numpy(), float(loss), {k: t.grad.numpy() for k, t in P.items()}


def train(cfg, params, inputs, targets, rope_style, steps, lr, weight_decay, clip, betas=(0.9, 0.95), eps=1e-8):
    """steps AdamW updates on one batch in float64, as torch.optim.AdamW with decay on >= 2-D
    parameters and torch.nn.utils.clip_grad_norm_. Returns (losses before each update, grad norms
    before clipping, loss after the last update, final params as numpy)."""
    P = to_torch(params)
    decay = [t for t in P.values() if t.dim() >= 2]
    no_decay = [t for t in P.values() if t.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=betas, eps=eps)
    losses, norms = [], []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(forward(cfg, P, inputs, rope_style), targets)
        loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(list(P.values()), clip)))
        opt.step()
        losses.append(float(loss))
    with torch.no_grad():
        final = float(loss_fn(forward(cfg, P, inputs, rope_style), targets))
    return losses, norms, final, {k: t.detach().numpy() for k, t in P.items()}


def main(argv):
    if len(argv) < 5:
        print(__doc__.strip().split("\n\n")[-1], file=sys.stderr)
        return 2
    path, tok, B, T = argv[1], argv[2], int(argv[3]), int(argv[4])
    cfg, params, style = load_model(path)
    if "--rope" in argv:
        want = argv[argv.index("--rope") + 1]
        if want != style:
            params = convert_rope(cfg, params, to_half=(want == "half"))
            style = want
    inputs, targets = read_tokens(tok, B, T)
    with torch.no_grad():
        loss = loss_fn(forward(cfg, {k: torch.tensor(v, dtype=torch.float64) for k, v in params.items()}, inputs,
                               style), targets)
    print("%.17g" % float(loss))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
