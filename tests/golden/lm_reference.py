#!/usr/bin/env python3
"""Reference fixtures for the language-model loaders and forward passes (issue 14).

Writes tests/golden/fixtures/lm/<name>/ with Debian's PyTorch (/usr/bin/python3, torch 1.13), no
`transformers`, no `safetensors` package: the safetensors files are written by hand (8-byte
little-endian header length, JSON header {name: {dtype, shape, data_offsets}} plus
"__metadata__": {"format": "pt"}, padded with spaces to a multiple of 8, then the raw
little-endian data). Every forward pass below is written from /work/shared/LM-REFERENCE.md in plain
torch (no code copied from transformers or TransformerLens). Rerun:

    /usr/bin/python3 tests/golden/lm_reference.py

The output is byte-identical from run to run (fixed seeds, one thread, fixed key order).

Each folder holds a tiny random model in Hugging Face's file layout (`config.json` with the real
field names of its family, `model.safetensors` or two shards + `model.safetensors.index.json`) and
`reference.safetensors`: `tokens` (I32 [B, T]), `logits` (F32 [B, T, V]) and the TransformerLens
hook points of the raw (unprocessed) Hugging Face model, all F32. Weights are drawn in f32 (or
rounded to bf16), widened to f64, the forward pass runs in f64, results are stored as f32, so an
f32 implementation can be compared at ~1e-4 relative.

Fixtures and what each exercises
  gpt2           GPT-2, keys with the `transformer.` prefix (save_pretrained style), Conv1D [in, out]
                 weights, tied head (no lm_head.weight in the file), legacy buffers
                 `transformer.h.{i}.attn.bias` (F32 [1,1,P,P] lower-triangular) and
                 `transformer.h.{i}.attn.masked_bias` (F32 scalar, shape []) that must be ignored
                 (and `c_attn.bias` must NOT be dropped with them). gelu_new, n_inner null (-> 4d).
  gpt2_noprefix  GPT-2 as the original `gpt2` upload stores it: no prefix (`wte.weight`, `h.0...`),
                 legacy `h.{i}.attn.bias` buffers, old config fields (`n_ctx`, no `n_inner`).
  gpt2_sharded   GPT-2 (prefixed) in two shards `model-0000{1,2}-of-00002.safetensors` with
                 `model.safetensors.index.json` ({"metadata": {"total_size"}, "weight_map"}); layer 0
                 in shard 1, layer 1 + ln_f in shard 2. Explicit `n_inner` = 48 (not 4d).
  gpt_neox       Pythia-style: per-head interleaved query_key_value ([H, 3*hd] per row block),
                 partial rotary (rotary_pct 0.25, head_dim 16 -> n_rot 4, so inv_freq's denominator
                 n_rot vs hd is visible), rotate_half pairing, parallel residual, exact erf gelu,
                 untied embed_out, vocab_size 96 while tokens only use ids < 80 (padding rows).
                 The file also carries buffers to ignore: `attention.bias` (BOOL [1,1,P,P]),
                 `attention.masked_bias` (F32 scalar) and `attention.rotary_emb.inv_freq` (F32).
  llama          Llama: GQA (4 query heads, 2 key/value heads), untied lm_head, RMSNorm (eps 1e-6),
                 SiLU gated MLP, RoPE over the whole head (rotate_half pairing), rope_theta 10000.
  llama_bf16     A Llama stored in BF16 (config torch_dtype "bfloat16"); the reference is computed
                 (in f64) from the bf16-rounded weights. This one has tie_word_embeddings true (no
                 lm_head.weight, as Llama-3.2-1B), 1 key/value head (MQA), rope_theta 500000.
  qwen2          Qwen2: as Llama plus q/k/v biases (no o bias); TIED head (tie_word_embeddings true,
                 no lm_head.weight, as Qwen2-0.5B / 1.5B), GQA 4/2, rope_theta 1e6,
                 use_sliding_window false (so no window).
  gemma2         Gemma-2: embedding x f32(sqrt(d)), RMSNorm with (1 + w), GeGLU with tanh gelu,
                 pre/post norms around attention and MLP, scores scaled by query_pre_attn_scalar^-1/2
                 (24, deliberately != head_dim 16), head_dim * H = 64 != hidden 32, GQA 4/2,
                 attention soft-capping then final logit soft-capping, tied head, sliding window 5
                 on layer 0 (even layers), layer 1 global, T = 24 so the window matters. The caps in
                 config.json are 8.0 (attention) and 3.0 (final), NOT Gemma-2's 50/30: the tiny
                 model's scores and logits reach about the cap there, so a wrong cap or a missing
                 tanh is visible at 1e-4 (read the values from the config).

Hook points (TransformerLens names; values of the raw HF model, no weight processing)
  all:    hook_embed, blocks.{l}.hook_resid_pre, blocks.{l}.hook_attn_out, blocks.{l}.hook_mlp_out,
          blocks.{l}.hook_resid_post, blocks.{l}.ln1.hook_scale|hook_normalized,
          blocks.{l}.ln2.hook_scale|hook_normalized, blocks.{l}.attn.hook_q|hook_k|hook_v
          [B,T,H(kv),hd], blocks.{l}.attn.hook_pattern [B,H,T,T], blocks.{l}.attn.hook_z [B,T,H,hd],
          blocks.{l}.mlp.hook_pre|hook_post, ln_final.hook_scale|hook_normalized, logits
  gpt2*:  + hook_pos_embed ([B,T,d], wpe rows broadcast over the batch), blocks.{l}.hook_resid_mid
  gpt_neox: + blocks.{l}.attn.hook_rot_q|hook_rot_k; NO hook_resid_mid (parallel residual: both
          branches read hook_resid_pre, resid_post = resid_pre + attn_out + mlp_out; there is no
          intermediate residual and TransformerLens defines no hook_resid_mid for it). ln2 is
          post_attention_layernorm applied to resid_pre.
  llama*, qwen2: + hook_resid_mid, attn.hook_rot_q|hook_rot_k, mlp.hook_pre_linear
  gemma2: + hook_resid_mid, attn.hook_rot_q|hook_rot_k, mlp.hook_pre_linear,
          blocks.{l}.ln1_post.hook_scale|hook_normalized (post_attention_layernorm) and
          blocks.{l}.ln2_post.hook_scale|hook_normalized (post_feedforward_layernorm)

Choices (where LM-REFERENCE.md or TransformerLens leave room)
  - hook_scale is [B,T,1]: sqrt(var_biased + eps) for LayerNorm, sqrt(mean x^2 + eps) for RMSNorm.
  - hook_normalized is the value BEFORE the affine weights: (x - mean)/scale for LayerNorm,
    x/scale for RMSNorm, as LM-REFERENCE.md defines it. (TransformerLens's unfolded `LayerNorm`
    component hooks its output after w and b; with its default fold_ln the hook is LayerNormPre's
    (x - mean)/scale, the value stored here; its RMSNorm hooks x/scale before w.)
  - hook_q/hook_k are before rotary (TransformerLens's meaning); hook_rot_q/hook_rot_k after. They
    include the projection biases (GPT-2, NeoX, Qwen2). hook_k/hook_v have Hkv heads under GQA.
  - hook_attn_out includes the output projection's bias (GPT-2, NeoX) and, for Gemma-2, the
    post_attention_layernorm (TransformerLens's ln1_post); hook_mlp_out likewise after
    post_feedforward_layernorm. hook_resid_mid = resid_pre + attn_out.
  - mlp.hook_pre is the pre-activation fed to the nonlinearity (x W_fc + b; for gated MLPs the gate
    projection), mlp.hook_pre_linear the up projection, mlp.hook_post the input to the down
    projection (act(gate) * up for gated MLPs).
  - Gemma-2's hook_embed is the SCALED embedding (TransformerLens folds sqrt(d), cast to the weights'
    dtype, into W_E), so hook_embed == blocks.0.hook_resid_pre there.
  - ln_final.hook_normalized is the final norm's input normalised (before its weight); logits are
    after Gemma-2's final soft-capping.
"""
import json
import math
import os
import struct

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures", "lm")
F64 = torch.float64
torch.set_num_threads(1)  # one reduction order, so reruns are bit-identical

# ---------------------------------------------------------------------------------------------
# safetensors by hand

DTYPES = {torch.float32: ("F32", "<f4"), torch.int32: ("I32", "<i4"), torch.int64: ("I64", "<i8"),
          torch.float16: ("F16", "<f2")}


def tensor_bytes(t):
    t = t.contiguous()
    if t.dtype == torch.bfloat16:
        return "BF16", t.view(torch.int16).numpy().astype("<i2").tobytes()
    if t.dtype == torch.bool:
        return "BOOL", t.numpy().astype(np.uint8).tobytes()
    code, np_dtype = DTYPES[t.dtype]
    return code, t.numpy().astype(np_dtype).tobytes()


def safetensors_bytes(tensors, metadata=None):
    """tensors: list of (name, tensor) in file order."""
    header = {"__metadata__": metadata if metadata is not None else {"format": "pt"}}
    blobs, pos = [], 0
    for name, t in tensors:
        code, b = tensor_bytes(t)
        header[name] = {"dtype": code, "shape": list(t.shape), "data_offsets": [pos, pos + len(b)]}
        blobs.append(b)
        pos += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)


def write_json(path, obj):
    write(path, (json.dumps(obj, indent=2) + "\n").encode())


def nbytes(t):
    return t.numel() * t.element_size()


# ---------------------------------------------------------------------------------------------
# Drawing weights: f32 draws (so the stored file holds exactly what the reference uses)


class Drawer:
    def __init__(self, seed):
        self.g = torch.Generator().manual_seed(seed)

    def normal(self, *shape, scale=1.0, shift=0.0):
        return torch.randn(*shape, generator=self.g, dtype=torch.float32) * scale + shift

    def linear(self, out_f, in_f, gain=1.0):
        """nn.Linear layout [out, in], std gain/sqrt(in)."""
        return self.normal(out_f, in_f, scale=gain / math.sqrt(in_f))

    def tokens(self, B, T, hi):
        return torch.randint(0, hi, (B, T), generator=self.g, dtype=torch.int64).to(torch.int32)


# ---------------------------------------------------------------------------------------------
# Building blocks (f64)


def layer_norm(x, w, b, eps):
    xc = x - x.mean(-1, keepdim=True)
    scale = (xc.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    normed = xc / scale
    return normed * w + b, scale, normed


def rms_norm(x, w, eps, plus_one=False):
    scale = (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    normed = x / scale
    return normed * ((1.0 + w) if plus_one else w), scale, normed


def gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def gelu_erf(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def silu(x):
    return x * torch.sigmoid(x)


def rotate_half(x):
    n = x.shape[-1] // 2
    return torch.cat([-x[..., n:], x[..., :n]], dim=-1)


def rope(x, n_rot, base):
    """x [B, T, H, hd]; rotate the first n_rot dims of each head, dims j and j + n_rot/2 paired."""
    T = x.shape[1]
    i = torch.arange(0, n_rot // 2, dtype=F64)
    inv_freq = base ** (-2.0 * i / n_rot)
    freqs = torch.arange(T, dtype=F64)[:, None] * inv_freq[None, :]  # [T, n_rot/2]
    emb = torch.cat([freqs, freqs], dim=-1)[None, :, None, :]  # [1, T, 1, n_rot]
    xr, xp = x[..., :n_rot], x[..., n_rot:]
    xr = xr * emb.cos() + rotate_half(xr) * emb.sin()
    return torch.cat([xr, xp], dim=-1)


def attention(q, k, v, scale, softcap=None, window=None):
    """q [B,T,H,hd], k/v [B,T,Hkv,hd] -> pattern [B,H,T,T], z [B,T,H,hd]. Causal (+ window)."""
    B, T, H, hd = q.shape
    Hkv = k.shape[2]
    rep = H // Hkv  # query head h uses key/value head h // rep
    k = k.repeat_interleave(rep, dim=2)
    v = v.repeat_interleave(rep, dim=2)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) * scale
    if softcap is not None:
        scores = softcap * torch.tanh(scores / softcap)
    qi = torch.arange(T)[:, None]
    ki = torch.arange(T)[None, :]
    allowed = ki <= qi
    if window is not None:
        allowed = allowed & (ki > qi - window)  # a query at i sees keys i-window+1 .. i
    scores = scores.masked_fill(~allowed, float("-inf"))
    pattern = torch.softmax(scores, dim=-1)
    z = torch.einsum("bhqk,bkhd->bqhd", pattern, v)
    return pattern, z, scores


class Hooks(dict):
    def norm(self, prefix, scale, normed):
        self[prefix + ".hook_scale"] = scale
        self[prefix + ".hook_normalized"] = normed


# ---------------------------------------------------------------------------------------------
# Forward passes. `p` maps HF tensor names (without the GPT-2 prefix) to f64 tensors.


def gpt2_forward(p, cfg, tokens):
    d, H, L = cfg["n_embd"], cfg["n_head"], cfg["n_layer"]
    hd = d // H
    eps = cfg.get("layer_norm_epsilon", 1e-5)
    act = gelu_tanh if cfg.get("activation_function", "gelu_new") == "gelu_new" else gelu_erf
    B, T = tokens.shape
    hk = Hooks()
    ids = tokens.long()
    hk["hook_embed"] = p["wte.weight"][ids]
    hk["hook_pos_embed"] = p["wpe.weight"][:T][None].expand(B, T, d)
    x = hk["hook_embed"] + hk["hook_pos_embed"]
    for l in range(L):
        pre = f"h.{l}."
        b = f"blocks.{l}."
        hk[b + "hook_resid_pre"] = x
        u, s, n = layer_norm(x, p[pre + "ln_1.weight"], p[pre + "ln_1.bias"], eps)
        hk.norm(b + "ln1", s, n)
        qkv = u @ p[pre + "attn.c_attn.weight"] + p[pre + "attn.c_attn.bias"]  # Conv1D: x W + b
        q, k, v = qkv.split(d, dim=-1)  # all-q | all-k | all-v
        q, k, v = (t.reshape(B, T, H, hd) for t in (q, k, v))
        hk[b + "attn.hook_q"], hk[b + "attn.hook_k"], hk[b + "attn.hook_v"] = q, k, v
        pattern, z, _ = attention(q, k, v, 1.0 / math.sqrt(hd))
        hk[b + "attn.hook_pattern"], hk[b + "attn.hook_z"] = pattern, z
        attn_out = z.reshape(B, T, d) @ p[pre + "attn.c_proj.weight"] + p[pre + "attn.c_proj.bias"]
        hk[b + "hook_attn_out"] = attn_out
        x = x + attn_out
        hk[b + "hook_resid_mid"] = x
        u, s, n = layer_norm(x, p[pre + "ln_2.weight"], p[pre + "ln_2.bias"], eps)
        hk.norm(b + "ln2", s, n)
        hpre = u @ p[pre + "mlp.c_fc.weight"] + p[pre + "mlp.c_fc.bias"]
        hpost = act(hpre)
        hk[b + "mlp.hook_pre"], hk[b + "mlp.hook_post"] = hpre, hpost
        mlp_out = hpost @ p[pre + "mlp.c_proj.weight"] + p[pre + "mlp.c_proj.bias"]
        hk[b + "hook_mlp_out"] = mlp_out
        x = x + mlp_out
        hk[b + "hook_resid_post"] = x
    u, s, n = layer_norm(x, p["ln_f.weight"], p["ln_f.bias"], eps)
    hk.norm("ln_final", s, n)
    logits = u @ p["wte.weight"].T  # tied head
    return logits, hk


def neox_forward(p, cfg, tokens):
    d, H, L = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_hidden_layers"]
    hd = d // H
    n_rot = int(hd * cfg["rotary_pct"])
    base = cfg["rotary_emb_base"]
    eps = cfg["layer_norm_eps"]
    assert cfg["hidden_act"] == "gelu" and cfg["use_parallel_residual"]
    B, T = tokens.shape
    hk = Hooks()
    P = "gpt_neox."
    x = p[P + "embed_in.weight"][tokens.long()]
    hk["hook_embed"] = x
    for l in range(L):
        pre = f"{P}layers.{l}."
        b = f"blocks.{l}."
        hk[b + "hook_resid_pre"] = x
        u, s, n = layer_norm(x, p[pre + "input_layernorm.weight"], p[pre + "input_layernorm.bias"], eps)
        hk.norm(b + "ln1", s, n)
        qkv = u @ p[pre + "attention.query_key_value.weight"].T + p[pre + "attention.query_key_value.bias"]
        qkv = qkv.reshape(B, T, H, 3 * hd)  # interleaved per head
        q, k, v = qkv[..., :hd], qkv[..., hd:2 * hd], qkv[..., 2 * hd:]
        hk[b + "attn.hook_q"], hk[b + "attn.hook_k"], hk[b + "attn.hook_v"] = q, k, v
        q, k = rope(q, n_rot, base), rope(k, n_rot, base)
        hk[b + "attn.hook_rot_q"], hk[b + "attn.hook_rot_k"] = q, k
        pattern, z, _ = attention(q, k, v, 1.0 / math.sqrt(hd))
        hk[b + "attn.hook_pattern"], hk[b + "attn.hook_z"] = pattern, z
        attn_out = z.reshape(B, T, d) @ p[pre + "attention.dense.weight"].T + p[pre + "attention.dense.bias"]
        hk[b + "hook_attn_out"] = attn_out
        # parallel residual: the MLP branch reads the block input too (no resid_mid)
        u, s, n = layer_norm(x, p[pre + "post_attention_layernorm.weight"], p[pre + "post_attention_layernorm.bias"], eps)
        hk.norm(b + "ln2", s, n)
        hpre = u @ p[pre + "mlp.dense_h_to_4h.weight"].T + p[pre + "mlp.dense_h_to_4h.bias"]
        hpost = gelu_erf(hpre)
        hk[b + "mlp.hook_pre"], hk[b + "mlp.hook_post"] = hpre, hpost
        mlp_out = hpost @ p[pre + "mlp.dense_4h_to_h.weight"].T + p[pre + "mlp.dense_4h_to_h.bias"]
        hk[b + "hook_mlp_out"] = mlp_out
        x = x + attn_out + mlp_out
        hk[b + "hook_resid_post"] = x
    u, s, n = layer_norm(x, p[P + "final_layer_norm.weight"], p[P + "final_layer_norm.bias"], eps)
    hk.norm("ln_final", s, n)
    logits = u @ p["embed_out.weight"].T
    return logits, hk


def llama_like_forward(p, cfg, tokens, family):
    """llama, qwen2, gemma2."""
    d, H, L = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_hidden_layers"]
    Hkv = cfg.get("num_key_value_heads", H)
    hd = cfg.get("head_dim") or d // H
    eps = cfg["rms_norm_eps"]
    base = cfg["rope_theta"]
    gemma = family == "gemma2"
    B, T = tokens.shape
    hk = Hooks()
    emb = p["model.embed_tokens.weight"][tokens.long()]
    if gemma:
        # the normaliser is cast to the weights' dtype (f32 here) before multiplying
        emb = emb * float(torch.tensor(math.sqrt(d), dtype=torch.float32))
        scale = cfg["query_pre_attn_scalar"] ** -0.5
        softcap = cfg["attn_logit_softcapping"]
    else:
        scale, softcap = 1.0 / math.sqrt(hd), None
    hk["hook_embed"] = emb
    x = emb
    for l in range(L):
        pre = f"model.layers.{l}."
        b = f"blocks.{l}."
        hk[b + "hook_resid_pre"] = x
        u, s, n = rms_norm(x, p[pre + "input_layernorm.weight"], eps, gemma)
        hk.norm(b + "ln1", s, n)

        def proj(name):
            y = u @ p[pre + f"self_attn.{name}.weight"].T
            bias = p.get(pre + f"self_attn.{name}.bias")
            return y if bias is None else y + bias

        q = proj("q_proj").reshape(B, T, H, hd)
        k = proj("k_proj").reshape(B, T, Hkv, hd)
        v = proj("v_proj").reshape(B, T, Hkv, hd)
        hk[b + "attn.hook_q"], hk[b + "attn.hook_k"], hk[b + "attn.hook_v"] = q, k, v
        q, k = rope(q, hd, base), rope(k, hd, base)
        hk[b + "attn.hook_rot_q"], hk[b + "attn.hook_rot_k"] = q, k
        window = cfg["sliding_window"] if gemma and l % 2 == 0 else None
        pattern, z, _ = attention(q, k, v, scale, softcap, window)
        hk[b + "attn.hook_pattern"], hk[b + "attn.hook_z"] = pattern, z
        attn_out = z.reshape(B, T, H * hd) @ p[pre + "self_attn.o_proj.weight"].T
        if gemma:
            attn_out, s, n = rms_norm(attn_out, p[pre + "post_attention_layernorm.weight"], eps, True)
            hk.norm(b + "ln1_post", s, n)
        hk[b + "hook_attn_out"] = attn_out
        x = x + attn_out
        hk[b + "hook_resid_mid"] = x
        ln2 = "pre_feedforward_layernorm" if gemma else "post_attention_layernorm"
        u, s, n = rms_norm(x, p[pre + ln2 + ".weight"], eps, gemma)
        hk.norm(b + "ln2", s, n)
        gate = u @ p[pre + "mlp.gate_proj.weight"].T
        up = u @ p[pre + "mlp.up_proj.weight"].T
        hpost = (gelu_tanh(gate) if gemma else silu(gate)) * up
        hk[b + "mlp.hook_pre"], hk[b + "mlp.hook_pre_linear"], hk[b + "mlp.hook_post"] = gate, up, hpost
        mlp_out = hpost @ p[pre + "mlp.down_proj.weight"].T
        if gemma:
            mlp_out, s, n = rms_norm(mlp_out, p[pre + "post_feedforward_layernorm.weight"], eps, True)
            hk.norm(b + "ln2_post", s, n)
        hk[b + "hook_mlp_out"] = mlp_out
        x = x + mlp_out
        hk[b + "hook_resid_post"] = x
    u, s, n = rms_norm(x, p["model.norm.weight"], eps, gemma)
    hk.norm("ln_final", s, n)
    head = p.get("lm_head.weight", p["model.embed_tokens.weight"])
    logits = u @ head.T
    if gemma:
        f = cfg["final_logit_softcapping"]
        hk["_logits_before_cap"] = logits
        logits = f * torch.tanh(logits / f)
    return logits, hk


# ---------------------------------------------------------------------------------------------
# Models


B = 2


def gpt2_weights(dr, cfg):
    d, L, V, P = cfg["n_embd"], cfg["n_layer"], cfg["vocab_size"], cfg["n_positions"]
    inner = cfg.get("n_inner") or 4 * d
    w = [("wte.weight", dr.normal(V, d)), ("wpe.weight", dr.normal(P, d, scale=0.5))]
    for l in range(L):
        pre = f"h.{l}."
        w += [
            (pre + "ln_1.weight", dr.normal(d, scale=0.2, shift=1.0)),
            (pre + "ln_1.bias", dr.normal(d, scale=0.1)),
            (pre + "attn.c_attn.weight", dr.linear(3 * d, d).T.contiguous()),  # Conv1D [in, out]
            (pre + "attn.c_attn.bias", dr.normal(3 * d, scale=0.2)),
            (pre + "attn.c_proj.weight", dr.linear(d, d).T.contiguous()),
            (pre + "attn.c_proj.bias", dr.normal(d, scale=0.1)),
            (pre + "ln_2.weight", dr.normal(d, scale=0.2, shift=1.0)),
            (pre + "ln_2.bias", dr.normal(d, scale=0.1)),
            (pre + "mlp.c_fc.weight", dr.linear(inner, d).T.contiguous()),
            (pre + "mlp.c_fc.bias", dr.normal(inner, scale=0.2)),
            (pre + "mlp.c_proj.weight", dr.linear(d, inner).T.contiguous()),
            (pre + "mlp.c_proj.bias", dr.normal(d, scale=0.1)),
        ]
    w += [("ln_f.weight", dr.normal(d, scale=0.2, shift=1.0)), ("ln_f.bias", dr.normal(d, scale=0.1))]
    return w


def gpt2_config(d, H, L, V, P, n_inner=None, old=False):
    if old:  # the original `gpt2` upload's config.json
        return {"activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1,
                "bos_token_id": V - 1, "embd_pdrop": 0.1, "eos_token_id": V - 1, "initializer_range": 0.02,
                "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_ctx": P, "n_embd": d, "n_head": H,
                "n_layer": L, "n_positions": P, "resid_pdrop": 0.1, "summary_activation": None,
                "summary_first_dropout": 0.1, "summary_proj_to_labels": True, "summary_type": "cls_index",
                "summary_use_proj": True, "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}},
                "vocab_size": V}
    return {"activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1,
            "bos_token_id": V - 1, "embd_pdrop": 0.1, "eos_token_id": V - 1, "initializer_range": 0.02,
            "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_embd": d, "n_head": H, "n_inner": n_inner,
            "n_layer": L, "n_positions": P, "reorder_and_upcast_attn": False, "resid_pdrop": 0.1,
            "scale_attn_by_inverse_layer_idx": False, "scale_attn_weights": True, "summary_activation": None,
            "summary_first_dropout": 0.1, "summary_proj_to_labels": True, "summary_type": "cls_index",
            "summary_use_proj": True, "torch_dtype": "float32", "transformers_version": "4.40.0",
            "use_cache": True, "vocab_size": V}


def with_gpt2_buffers(w, L, P, prefix, masked_bias):
    """Insert the legacy attention buffers after each layer's c_attn/c_proj tensors."""
    out = []
    causal = torch.tril(torch.ones(P, P, dtype=torch.float32)).reshape(1, 1, P, P)
    for name, t in w:
        out.append((prefix + name, t))
        if name.endswith(".attn.c_proj.bias"):
            layer = name[: -len("attn.c_proj.bias")]
            out.append((prefix + layer + "attn.bias", causal))
            if masked_bias:
                out.append((prefix + layer + "attn.masked_bias", torch.tensor(-1e4, dtype=torch.float32)))
    return out


def make_gpt2(seed, old=False, n_inner=None):
    dr = Drawer(seed)
    d, H, L, V, P = 32, 4, 2, 64, 32
    cfg = gpt2_config(d, H, L, V, P, n_inner=n_inner, old=old)
    w = gpt2_weights(dr, cfg)
    tokens = dr.tokens(B, 12, V)
    return cfg, w, tokens


def make_neox(seed):
    dr = Drawer(seed)
    d, H, L, V, P, inner, used = 32, 2, 2, 96, 32, 64, 80
    cfg = {"architectures": ["GPTNeoXForCausalLM"], "attention_bias": True, "attention_dropout": 0.0,
           "bos_token_id": 0, "classifier_dropout": 0.1, "eos_token_id": 0, "hidden_act": "gelu",
           "hidden_dropout": 0.0, "hidden_size": d, "initializer_range": 0.02, "intermediate_size": inner,
           "layer_norm_eps": 1e-05, "max_position_embeddings": P, "model_type": "gpt_neox",
           "num_attention_heads": H, "num_hidden_layers": L, "rope_scaling": None, "rotary_emb_base": 10000,
           "rotary_pct": 0.25, "tie_word_embeddings": False, "torch_dtype": "float32",
           "transformers_version": "4.40.0", "use_cache": True, "use_parallel_residual": True, "vocab_size": V}
    hd = d // H
    n_rot = int(hd * 0.25)
    P_ = "gpt_neox."
    w = [(P_ + "embed_in.weight", dr.normal(V, d))]
    causal = torch.tril(torch.ones(P, P, dtype=torch.bool)).reshape(1, 1, P, P)
    inv_freq = (1.0 / (10000 ** (torch.arange(0, n_rot, 2, dtype=torch.float64) / n_rot))).float()
    for l in range(L):
        pre = f"{P_}layers.{l}."
        w += [
            (pre + "input_layernorm.weight", dr.normal(d, scale=0.2, shift=1.0)),
            (pre + "input_layernorm.bias", dr.normal(d, scale=0.1)),
            (pre + "post_attention_layernorm.weight", dr.normal(d, scale=0.2, shift=1.0)),
            (pre + "post_attention_layernorm.bias", dr.normal(d, scale=0.1)),
            (pre + "attention.bias", causal),
            (pre + "attention.masked_bias", torch.tensor(-1e9, dtype=torch.float32)),
            (pre + "attention.rotary_emb.inv_freq", inv_freq),
            (pre + "attention.query_key_value.weight", dr.linear(3 * d, d, gain=1.5)),
            (pre + "attention.query_key_value.bias", dr.normal(3 * d, scale=0.2)),
            (pre + "attention.dense.weight", dr.linear(d, d)),
            (pre + "attention.dense.bias", dr.normal(d, scale=0.1)),
            (pre + "mlp.dense_h_to_4h.weight", dr.linear(inner, d)),
            (pre + "mlp.dense_h_to_4h.bias", dr.normal(inner, scale=0.2)),
            (pre + "mlp.dense_4h_to_h.weight", dr.linear(d, inner)),
            (pre + "mlp.dense_4h_to_h.bias", dr.normal(d, scale=0.1)),
        ]
    w += [(P_ + "final_layer_norm.weight", dr.normal(d, scale=0.2, shift=1.0)),
          (P_ + "final_layer_norm.bias", dr.normal(d, scale=0.1)),
          ("embed_out.weight", dr.linear(V, d, gain=2.0))]
    tokens = dr.tokens(B, 12, used)
    return cfg, w, tokens


def llama_weights(dr, cfg, family):
    d, H, L, V = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_hidden_layers"], cfg["vocab_size"]
    Hkv, hd, inner = cfg["num_key_value_heads"], cfg["head_dim"], cfg["intermediate_size"]
    gemma = family == "gemma2"
    # RMSNorm weights: Llama/Qwen multiply by w (around 1), Gemma by (1 + w) (w around 0)
    nw = (lambda: dr.normal(d, scale=0.2)) if gemma else (lambda: dr.normal(d, scale=0.2, shift=1.0))
    emb_scale = (1.0 / math.sqrt(d)) if gemma else 1.0  # Gemma multiplies the embedding by sqrt(d)
    w = [("model.embed_tokens.weight", dr.normal(V, d, scale=emb_scale))]
    qk_gain = 2.0 if gemma else 1.5
    for l in range(L):
        pre = f"model.layers.{l}."
        w.append((pre + "input_layernorm.weight", nw()))
        w.append((pre + "self_attn.q_proj.weight", dr.linear(H * hd, d, gain=qk_gain)))
        if family == "qwen2":
            w.append((pre + "self_attn.q_proj.bias", dr.normal(H * hd, scale=0.3)))
        w.append((pre + "self_attn.k_proj.weight", dr.linear(Hkv * hd, d, gain=qk_gain)))
        if family == "qwen2":
            w.append((pre + "self_attn.k_proj.bias", dr.normal(Hkv * hd, scale=0.3)))
        w.append((pre + "self_attn.v_proj.weight", dr.linear(Hkv * hd, d)))
        if family == "qwen2":
            w.append((pre + "self_attn.v_proj.bias", dr.normal(Hkv * hd, scale=0.3)))
        w.append((pre + "self_attn.o_proj.weight", dr.linear(d, H * hd)))
        w.append((pre + "post_attention_layernorm.weight", nw()))
        if gemma:
            w.append((pre + "pre_feedforward_layernorm.weight", nw()))
            w.append((pre + "post_feedforward_layernorm.weight", nw()))
        w += [(pre + "mlp.gate_proj.weight", dr.linear(inner, d, gain=1.5)),
              (pre + "mlp.up_proj.weight", dr.linear(inner, d)),
              (pre + "mlp.down_proj.weight", dr.linear(d, inner))]
    w.append(("model.norm.weight", nw()))
    if not cfg["tie_word_embeddings"]:
        w.append(("lm_head.weight", dr.linear(V, d, gain=2.0)))
    return w


def llama_config(d, H, Hkv, hd, L, V, P, inner, theta, tie, dtype="float32"):
    return {"architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
            "bos_token_id": 1, "eos_token_id": 2, "head_dim": hd, "hidden_act": "silu", "hidden_size": d,
            "initializer_range": 0.02, "intermediate_size": inner, "max_position_embeddings": P,
            "mlp_bias": False, "model_type": "llama", "num_attention_heads": H, "num_hidden_layers": L,
            "num_key_value_heads": Hkv, "pretraining_tp": 1, "rms_norm_eps": 1e-06, "rope_scaling": None,
            "rope_theta": theta, "tie_word_embeddings": tie, "torch_dtype": dtype,
            "transformers_version": "4.44.0", "use_cache": True, "vocab_size": V}


def make_llama(seed):
    dr = Drawer(seed)
    cfg = llama_config(32, 4, 2, 8, 2, 80, 32, 64, 10000.0, False)
    w = llama_weights(dr, cfg, "llama")
    return cfg, w, dr.tokens(B, 12, 80)


def make_llama_bf16(seed):
    dr = Drawer(seed)
    cfg = llama_config(32, 4, 1, 8, 2, 72, 32, 64, 500000.0, True, dtype="bfloat16")
    w = [(n, t.to(torch.bfloat16)) for n, t in llama_weights(dr, cfg, "llama")]
    return cfg, w, dr.tokens(B, 12, 72)


def make_qwen2(seed):
    dr = Drawer(seed)
    d, H, Hkv, L, V, P, inner = 32, 4, 2, 2, 88, 32, 64
    cfg = {"architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 0,
           "eos_token_id": 1, "hidden_act": "silu", "hidden_size": d, "initializer_range": 0.02,
           "intermediate_size": inner, "max_position_embeddings": P, "max_window_layers": L,
           "model_type": "qwen2", "num_attention_heads": H, "num_hidden_layers": L, "num_key_value_heads": Hkv,
           "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": P, "tie_word_embeddings": True,
           "torch_dtype": "float32", "transformers_version": "4.40.1", "use_cache": True,
           "use_sliding_window": False, "vocab_size": V}
    wcfg = dict(cfg, head_dim=d // H)
    w = llama_weights(dr, wcfg, "qwen2")
    return cfg, w, dr.tokens(B, 12, V)


def make_gemma2(seed):
    dr = Drawer(seed)
    d, H, Hkv, hd, L, V, P, inner = 32, 4, 2, 16, 2, 96, 32, 48
    cfg = {"architectures": ["Gemma2ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
           "attn_logit_softcapping": 8.0, "bos_token_id": 2, "cache_implementation": "hybrid",
           "eos_token_id": 1, "final_logit_softcapping": 3.0, "head_dim": hd,
           "hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu_pytorch_tanh", "hidden_size": d,
           "initializer_range": 0.02, "intermediate_size": inner, "max_position_embeddings": P,
           "model_type": "gemma2", "num_attention_heads": H, "num_hidden_layers": L,
           "num_key_value_heads": Hkv, "pad_token_id": 0, "query_pre_attn_scalar": 24, "rms_norm_eps": 1e-06,
           "rope_theta": 10000.0, "sliding_window": 5, "torch_dtype": "float32",
           "transformers_version": "4.42.4", "use_cache": True, "vocab_size": V}
    wcfg = dict(cfg, tie_word_embeddings=True)
    w = llama_weights(dr, wcfg, "gemma2")
    return cfg, w, dr.tokens(B, 24, V)


# ---------------------------------------------------------------------------------------------
# Writing


def strip(name, prefix):
    return name[len(prefix):] if prefix and name.startswith(prefix) else name


def params_f64(w, prefix=""):
    ignore = (".attn.bias", ".attn.masked_bias", ".attention.bias", ".attention.masked_bias", ".inv_freq")
    return {strip(n, prefix): t.to(F64) for n, t in w if not n.endswith(ignore)}


def write_reference(folder, tokens, logits, hooks):
    items = [("tokens", tokens), ("logits", logits.float())]
    items += [(k, v.float().contiguous()) for k, v in hooks.items() if not k.startswith("_")]
    write(os.path.join(folder, "reference.safetensors"), safetensors_bytes(items))


def check(name, logits, hooks):
    assert torch.isfinite(logits).all(), name
    for k, v in hooks.items():
        assert torch.isfinite(v).all(), (name, k)


def emit(name, cfg, file_tensors, tokens, logits, hooks, shards=None):
    folder = os.path.join(OUT, name)
    write_json(os.path.join(folder, "config.json"), cfg)
    if shards is None:
        write(os.path.join(folder, "model.safetensors"), safetensors_bytes(file_tensors))
    else:
        weight_map, total = {}, 0
        for i, part in enumerate(shards):
            fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            write(os.path.join(folder, fname), safetensors_bytes(part))
            for n, t in part:
                weight_map[n] = fname
                total += nbytes(t)
        write_json(os.path.join(folder, "model.safetensors.index.json"),
                   {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))})
    check(name, logits, hooks)
    write_reference(folder, tokens, logits, hooks)
    return folder


def main():
    summary = {}

    # gpt2: prefixed, legacy buffers incl. masked_bias, tied
    cfg, w, tokens = make_gpt2(1401)
    logits, hk = gpt2_forward(params_f64(w), cfg, tokens)
    emit("gpt2", cfg, with_gpt2_buffers(w, cfg["n_layer"], cfg["n_positions"], "transformer.", True),
         tokens, logits, hk)
    summary["gpt2"] = logits

    # gpt2_noprefix: original upload layout
    cfg, w, tokens = make_gpt2(1402, old=True)
    logits, hk = gpt2_forward(params_f64(w), cfg, tokens)
    emit("gpt2_noprefix", cfg, with_gpt2_buffers(w, cfg["n_layer"], cfg["n_positions"], "", False),
         tokens, logits, hk)

    # gpt2_sharded: two shards + index, explicit n_inner
    cfg, w, tokens = make_gpt2(1403, n_inner=48)
    logits, hk = gpt2_forward(params_f64(w), cfg, tokens)
    full = [("transformer." + n, t) for n, t in w]
    first = [(n, t) for n, t in full if ".h.1." not in n and ".ln_f." not in n]
    second = [(n, t) for n, t in full if ".h.1." in n or ".ln_f." in n]
    emit("gpt2_sharded", cfg, None, tokens, logits, hk, shards=[first, second])

    # gpt_neox
    cfg, w, tokens = make_neox(1404)
    logits, hk = neox_forward(params_f64(w), cfg, tokens)
    emit("gpt_neox", cfg, w, tokens, logits, hk)

    # llama (GQA, untied)
    cfg, w, tokens = make_llama(1405)
    logits, hk = llama_like_forward(params_f64(w), cfg, tokens, "llama")
    emit("llama", cfg, w, tokens, logits, hk)

    # llama_bf16 (bf16 weights, tied, MQA)
    cfg, w, tokens = make_llama_bf16(1406)
    logits, hk = llama_like_forward(params_f64(w), cfg, tokens, "llama")
    emit("llama_bf16", cfg, w, tokens, logits, hk)

    # qwen2 (qkv biases, tied)
    cfg, w, tokens = make_qwen2(1407)
    logits, hk = llama_like_forward(params_f64(w), dict(cfg, head_dim=None), tokens, "qwen2")
    emit("qwen2", cfg, w, tokens, logits, hk)

    # gemma2
    cfg, w, tokens = make_gemma2(1408)
    logits, hk = llama_like_forward(params_f64(w), cfg, tokens, "gemma2")
    emit("gemma2", cfg, w, tokens, logits, hk)
    pre_cap = hk["_logits_before_cap"]
    scores = []
    for l in range(cfg["num_hidden_layers"]):
        q, k = hk[f"blocks.{l}.attn.hook_rot_q"], hk[f"blocks.{l}.attn.hook_rot_k"]
        k = k.repeat_interleave(q.shape[2] // k.shape[2], dim=2)
        scores.append((torch.einsum("bqhd,bkhd->bhqk", q, k) * cfg["query_pre_attn_scalar"] ** -0.5).abs().max().item())
    if os.environ.get("LM_REFERENCE_VERBOSE"):
        print(f"gemma2: max |score| before cap per layer {scores} (cap {cfg['attn_logit_softcapping']}), "
              f"max |logit| before cap {pre_cap.abs().max().item():.3f} (cap {cfg['final_logit_softcapping']})")


if __name__ == "__main__":
    main()
