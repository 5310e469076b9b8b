#!/usr/bin/env python3
"""Reference for TransformerLens's default weight processing (HookedTransformer.from_pretrained:
fold_ln, center_writing_weights, center_unembed, fold_value_biases all True).

Rebuilds the gpt2, gpt_neox and qwen2 fixtures' weights with lm_reference.py's seeded makers (the
same bytes as their model.safetensors), converts them to TransformerLens's per-head layout (W_Q
[H, d, hd], W_O [H, hd, d], W_in [d, m], W_U [d, V], ...), processes them as TransformerLens defines
each step, and runs a TransformerLens-style forward with LayerNormPre / RMSNormPre in float64.
Writes tests/golden/fixtures/lm/<name>/reference_processed.safetensors: `tokens`, `logits` and
every hook point (F32), the same names as reference.safetensors. Plain torch written from the
definitions (no TransformerLens code); the layout conversion here is independent of the library's,
which processes the Hugging Face layouts directly. Rerun (byte-identical, leaves the other fixture
files untouched):

    /usr/bin/python3 tests/golden/lm_tl_processed.py

What each step does (TransformerLens's definitions, its skips in brackets):
  fold_ln         LayerNorm (w, b) before a reading matrix W (and bias c): c += b @ W, W *= w per
                  input row, then W -= its mean over d_model (the normalised input is mean-free);
                  the norm becomes LayerNormPre. Into W_Q/W_K/W_V (ln1), W_in (ln2; and W_gate),
                  W_U (ln_final; the unembedding bias b_U takes b @ W_U). RMSNorm: weights only, no
                  bias, no centring; the norm becomes RMSNormPre. [MoE, no norm, shortformer, OLMo-2]
                  Gemma-2's post-norms (ln1_post, ln2_post) are not folded.
  center_writing  W_E, W_pos, W_O, b_O, W_out, b_out -= their mean over d_model. [not LayerNorm]
  center_unembed  W_U -= its mean over the vocabulary, b_U -= its mean. [final logit soft-cap]
  fold_value_bias b_O += sum_h b_V[h] @ W_O[h] (b_V repeated per query head under GQA), b_V = 0.
"""
import math
import os

import torch

import lm_reference as ref
from lm_reference import F64, Hooks, attention, gelu_erf, gelu_tanh, rope, silu

# ---------------------------------------------------------------------------------------------
# Hugging Face tensors -> TransformerLens state dict (f64)


def heads_in(w_out_in, n):
    """nn.Linear weight [n*hd, d] -> [n, d, hd]."""
    return w_out_in.reshape(n, -1, w_out_in.shape[1]).transpose(1, 2)


def gpt2_to_tl(p, cfg):
    d, H, L, V = cfg["n_embd"], cfg["n_head"], cfg["n_layer"], cfg["vocab_size"]
    hd = d // H
    sd = {"embed.W_E": p["wte.weight"], "pos_embed.W_pos": p["wpe.weight"]}
    for l in range(L):
        h, b = f"h.{l}.", f"blocks.{l}."
        W, c = p[h + "attn.c_attn.weight"], p[h + "attn.c_attn.bias"]  # Conv1D [d, 3d]: q | k | v
        for i, x in enumerate("QKV"):
            sd[b + f"attn.W_{x}"] = W[:, i * d:(i + 1) * d].reshape(d, H, hd).transpose(0, 1)
            sd[b + f"attn.b_{x}"] = c[i * d:(i + 1) * d].reshape(H, hd)
        sd[b + "attn.W_O"] = p[h + "attn.c_proj.weight"].reshape(H, hd, d)
        sd[b + "attn.b_O"] = p[h + "attn.c_proj.bias"]
        sd[b + "mlp.W_in"], sd[b + "mlp.b_in"] = p[h + "mlp.c_fc.weight"], p[h + "mlp.c_fc.bias"]
        sd[b + "mlp.W_out"], sd[b + "mlp.b_out"] = p[h + "mlp.c_proj.weight"], p[h + "mlp.c_proj.bias"]
        for tl, hf in (("ln1", "ln_1"), ("ln2", "ln_2")):
            sd[b + tl + ".w"], sd[b + tl + ".b"] = p[h + hf + ".weight"], p[h + hf + ".bias"]
    sd["ln_final.w"], sd["ln_final.b"] = p["ln_f.weight"], p["ln_f.bias"]
    sd["unembed.W_U"] = p["wte.weight"].T
    sd["unembed.b_U"] = torch.zeros(V, dtype=F64)
    tl = dict(family="gpt2", norm="LN", d=d, H=H, Hkv=H, hd=hd, L=L, eps=cfg.get("layer_norm_epsilon", 1e-5),
              act=gelu_tanh, parallel=False, gated=False, n_rot=0, base=None, pos=True)
    return sd, tl


def neox_to_tl(p, cfg):
    d, H, L, V = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_hidden_layers"], cfg["vocab_size"]
    hd = d // H
    P = "gpt_neox."
    sd = {"embed.W_E": p[P + "embed_in.weight"]}
    for l in range(L):
        h, b = f"{P}layers.{l}.", f"blocks.{l}."
        W = p[h + "attention.query_key_value.weight"].reshape(H, 3 * hd, d)  # per head: q, k, v rows
        c = p[h + "attention.query_key_value.bias"].reshape(H, 3 * hd)
        for i, x in enumerate("QKV"):
            sd[b + f"attn.W_{x}"] = W[:, i * hd:(i + 1) * hd, :].transpose(1, 2)
            sd[b + f"attn.b_{x}"] = c[:, i * hd:(i + 1) * hd]
        sd[b + "attn.W_O"] = p[h + "attention.dense.weight"].T.reshape(H, hd, d)
        sd[b + "attn.b_O"] = p[h + "attention.dense.bias"]
        sd[b + "mlp.W_in"], sd[b + "mlp.b_in"] = p[h + "mlp.dense_h_to_4h.weight"].T, p[h + "mlp.dense_h_to_4h.bias"]
        sd[b + "mlp.W_out"], sd[b + "mlp.b_out"] = p[h + "mlp.dense_4h_to_h.weight"].T, p[h + "mlp.dense_4h_to_h.bias"]
        for tl, hf in (("ln1", "input_layernorm"), ("ln2", "post_attention_layernorm")):
            sd[b + tl + ".w"], sd[b + tl + ".b"] = p[h + hf + ".weight"], p[h + hf + ".bias"]
    sd["ln_final.w"], sd["ln_final.b"] = p[P + "final_layer_norm.weight"], p[P + "final_layer_norm.bias"]
    sd["unembed.W_U"] = p["embed_out.weight"].T
    sd["unembed.b_U"] = torch.zeros(V, dtype=F64)
    tl = dict(family="gpt_neox", norm="LN", d=d, H=H, Hkv=H, hd=hd, L=L, eps=cfg["layer_norm_eps"], act=gelu_erf,
              parallel=cfg["use_parallel_residual"], gated=False, n_rot=int(hd * cfg["rotary_pct"]),
              base=cfg["rotary_emb_base"], pos=False)
    return sd, tl


def qwen2_to_tl(p, cfg):
    d, H, L, V = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_hidden_layers"], cfg["vocab_size"]
    Hkv = cfg["num_key_value_heads"]
    hd = d // H
    sd = {"embed.W_E": p["model.embed_tokens.weight"]}
    for l in range(L):
        h, b = f"model.layers.{l}.", f"blocks.{l}."
        for x, n in (("Q", H), ("K", Hkv), ("V", Hkv)):
            name = h + f"self_attn.{x.lower()}_proj."
            sd[b + f"attn.W_{x}"] = heads_in(p[name + "weight"], n)
            sd[b + f"attn.b_{x}"] = p[name + "bias"].reshape(n, hd)
        sd[b + "attn.W_O"] = p[h + "self_attn.o_proj.weight"].T.reshape(H, hd, d)
        sd[b + "attn.b_O"] = torch.zeros(d, dtype=F64)
        sd[b + "mlp.W_gate"] = p[h + "mlp.gate_proj.weight"].T
        sd[b + "mlp.W_in"] = p[h + "mlp.up_proj.weight"].T
        sd[b + "mlp.W_out"] = p[h + "mlp.down_proj.weight"].T
        sd[b + "mlp.b_in"] = torch.zeros(sd[b + "mlp.W_in"].shape[1], dtype=F64)
        sd[b + "mlp.b_out"] = torch.zeros(d, dtype=F64)
        sd[b + "ln1.w"] = p[h + "input_layernorm.weight"]
        sd[b + "ln2.w"] = p[h + "post_attention_layernorm.weight"]
    sd["ln_final.w"] = p["model.norm.weight"]
    sd["unembed.W_U"] = p.get("lm_head.weight", p["model.embed_tokens.weight"]).T
    sd["unembed.b_U"] = torch.zeros(V, dtype=F64)
    tl = dict(family="qwen2", norm="RMS", d=d, H=H, Hkv=Hkv, hd=hd, L=L, eps=cfg["rms_norm_eps"], act=silu,
              parallel=False, gated=True, n_rot=hd, base=cfg["rope_theta"], pos=False)
    return sd, tl


# ---------------------------------------------------------------------------------------------
# The processing steps, on TransformerLens's layout


def fold_ln(sd, tl):
    sd = dict(sd)
    layer_norm = tl["norm"] == "LN"  # RMSNorm: no bias to fold, no centring
    for l in range(tl["L"]):
        b = f"blocks.{l}."
        w1 = sd.pop(b + "ln1.w")
        b1 = sd.pop(b + "ln1.b") if layer_norm else None
        for x in "QKV":
            W = sd[b + f"attn.W_{x}"]  # [heads, d, hd]
            if layer_norm:
                sd[b + f"attn.b_{x}"] = sd[b + f"attn.b_{x}"] + (W * b1[None, :, None]).sum(-2)
            W = W * w1[None, :, None]
            if layer_norm:
                W = W - W.mean(-2, keepdim=True)
            sd[b + f"attn.W_{x}"] = W
        w2 = sd.pop(b + "ln2.w")
        b2 = sd.pop(b + "ln2.b") if layer_norm else None
        W = sd[b + "mlp.W_in"]  # [d, m]
        if layer_norm:
            sd[b + "mlp.b_in"] = sd[b + "mlp.b_in"] + (W * b2[:, None]).sum(-2)
        W = W * w2[:, None]
        if layer_norm:
            W = W - W.mean(0, keepdim=True)
        sd[b + "mlp.W_in"] = W
        if tl["gated"]:
            sd[b + "mlp.W_gate"] = sd[b + "mlp.W_gate"] * w2[:, None]
    wf = sd.pop("ln_final.w")
    W = sd["unembed.W_U"]  # [d, V]
    if layer_norm:
        sd["unembed.b_U"] = sd["unembed.b_U"] + (W * sd.pop("ln_final.b")[:, None]).sum(-2)
    W = W * wf[:, None]
    if layer_norm:
        W = W - W.mean(0, keepdim=True)
    sd["unembed.W_U"] = W
    return sd


def center_writing_weights(sd, tl):
    sd = dict(sd)
    sd["embed.W_E"] = sd["embed.W_E"] - sd["embed.W_E"].mean(-1, keepdim=True)
    if tl["pos"]:
        sd["pos_embed.W_pos"] = sd["pos_embed.W_pos"] - sd["pos_embed.W_pos"].mean(-1, keepdim=True)
    for l in range(tl["L"]):
        b = f"blocks.{l}."
        for k in ("attn.W_O", "attn.b_O", "mlp.W_out", "mlp.b_out"):
            sd[b + k] = sd[b + k] - sd[b + k].mean(-1, keepdim=True)
    return sd


def center_unembed(sd):
    sd = dict(sd)
    sd["unembed.W_U"] = sd["unembed.W_U"] - sd["unembed.W_U"].mean(-1, keepdim=True)
    sd["unembed.b_U"] = sd["unembed.b_U"] - sd["unembed.b_U"].mean()
    return sd


def fold_value_biases(sd, tl):
    sd = dict(sd)
    for l in range(tl["L"]):
        b = f"blocks.{l}."
        b_V = sd[b + "attn.b_V"].repeat_interleave(tl["H"] // tl["Hkv"], dim=0)  # [H, hd]
        sd[b + "attn.b_O"] = sd[b + "attn.b_O"] + (b_V[:, :, None] * sd[b + "attn.W_O"]).sum((0, 1))
        sd[b + "attn.b_V"] = torch.zeros_like(sd[b + "attn.b_V"])
    return sd


def process(sd, tl):
    """from_pretrained's defaults, with its skips for these families."""
    sd = fold_ln(sd, tl)
    if tl["norm"] == "LN":
        sd = center_writing_weights(sd, tl)
    sd = center_unembed(sd)  # none of these families soft-caps its logits
    return fold_value_biases(sd, tl)


# ---------------------------------------------------------------------------------------------
# TransformerLens-style forward with folded (Pre) norms


def norm(hk, prefix, x, tl, sd):
    """LayerNormPre / RMSNormPre, then the norm's own weights where they are still unfolded."""
    if tl["norm"] == "LN":
        x = x - x.mean(-1, keepdim=True)
    scale = (x.pow(2).mean(-1, keepdim=True) + tl["eps"]).sqrt()
    hk[prefix + ".hook_scale"] = scale
    y = hk[prefix + ".hook_normalized"] = x / scale
    if prefix + ".w" in sd:
        y = y * sd[prefix + ".w"]
    if prefix + ".b" in sd:
        y = y + sd[prefix + ".b"]
    return y


def tl_forward(sd, tl, tokens):
    B, T = tokens.shape
    hk = Hooks()
    ids = tokens.long()
    x = hk["hook_embed"] = sd["embed.W_E"][ids]
    if tl["pos"]:
        hk["hook_pos_embed"] = sd["pos_embed.W_pos"][:T][None].expand(B, T, tl["d"])
        x = x + hk["hook_pos_embed"]
    for l in range(tl["L"]):
        b = f"blocks.{l}."
        hk[b + "hook_resid_pre"] = x
        n = norm(hk, b + "ln1", x, tl, sd)
        qkv = [torch.einsum("btd,hdk->bthk", n, sd[b + f"attn.W_{c}"]) + sd[b + f"attn.b_{c}"] for c in "QKV"]
        q, k, v = qkv
        hk[b + "attn.hook_q"], hk[b + "attn.hook_k"], hk[b + "attn.hook_v"] = q, k, v
        if tl["n_rot"]:
            q, k = rope(q, tl["n_rot"], tl["base"]), rope(k, tl["n_rot"], tl["base"])
            hk[b + "attn.hook_rot_q"], hk[b + "attn.hook_rot_k"] = q, k
        pattern, z, _ = attention(q, k, v, 1.0 / math.sqrt(tl["hd"]))
        hk[b + "attn.hook_pattern"], hk[b + "attn.hook_z"] = pattern, z
        attn_out = torch.einsum("bthk,hkd->btd", z, sd[b + "attn.W_O"]) + sd[b + "attn.b_O"]
        hk[b + "hook_attn_out"] = attn_out
        if tl["parallel"]:
            mlp_in = x
        else:
            mlp_in = hk[b + "hook_resid_mid"] = x + attn_out
        n = norm(hk, b + "ln2", mlp_in, tl, sd)
        if tl["gated"]:
            gate = n @ sd[b + "mlp.W_gate"]
            up = n @ sd[b + "mlp.W_in"] + sd[b + "mlp.b_in"]
            post = tl["act"](gate) * up
            hk[b + "mlp.hook_pre"], hk[b + "mlp.hook_pre_linear"], hk[b + "mlp.hook_post"] = gate, up, post
        else:
            pre = n @ sd[b + "mlp.W_in"] + sd[b + "mlp.b_in"]
            post = tl["act"](pre)
            hk[b + "mlp.hook_pre"], hk[b + "mlp.hook_post"] = pre, post
        mlp_out = post @ sd[b + "mlp.W_out"] + sd[b + "mlp.b_out"]
        hk[b + "hook_mlp_out"] = mlp_out
        x = (x + attn_out if tl["parallel"] else mlp_in) + mlp_out
        hk[b + "hook_resid_post"] = x
    n = norm(hk, "ln_final", x, tl, sd)
    return n @ sd["unembed.W_U"] + sd["unembed.b_U"], hk


# ---------------------------------------------------------------------------------------------


def emit(name, make, seed, to_tl, hf_forward):
    cfg, w, tokens = make(seed)
    p = ref.params_f64(w)
    sd, tl = to_tl(p, cfg)
    # The conversion is checked before processing: the unprocessed TransformerLens-layout weights
    # (norms applied) must reproduce the Hugging Face reference's logits and every hook.
    raw_logits, raw_hk = hf_forward(p, cfg, tokens)
    unprocessed_logits, unprocessed_hk = tl_forward(sd, tl, tokens)
    assert (unprocessed_logits - raw_logits).abs().max() < 1e-9, name
    assert sorted(unprocessed_hk) == sorted(k for k in raw_hk if not k.startswith("_")), name
    for k, v in unprocessed_hk.items():
        assert (v - raw_hk[k]).abs().max() < 1e-9, (name, k)
    logits, hk = tl_forward(process(sd, tl), tl, tokens)
    lp, lp_raw = torch.log_softmax(logits, -1), torch.log_softmax(raw_logits, -1)
    assert (lp - lp_raw).abs().max() < 1e-9, (name, (lp - lp_raw).abs().max())
    assert (logits - (raw_logits - raw_logits.mean(-1, keepdim=True))).abs().max() < 1e-9, name
    ref.check(name, logits, hk)
    items = [("tokens", tokens), ("logits", logits.float())]
    items += [(k, v.float().contiguous()) for k, v in hk.items()]
    ref.write(os.path.join(ref.OUT, name, "reference_processed.safetensors"), ref.safetensors_bytes(items))


def main():
    emit("gpt2", ref.make_gpt2, 1401, gpt2_to_tl, ref.gpt2_forward)
    emit("gpt_neox", ref.make_neox, 1404, neox_to_tl, ref.neox_forward)
    emit("qwen2", ref.make_qwen2, 1407, qwen2_to_tl,
         lambda p, cfg, t: ref.llama_like_forward(p, dict(cfg, head_dim=None), t, "qwen2"))


if __name__ == "__main__":
    main()
