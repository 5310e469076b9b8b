#!/usr/bin/env python3
"""Reference for dictionaries spliced into a language model and the CE/KL figures of sae eval --model.

Writes tests/golden/fixtures/lm_splice/ with Debian's PyTorch (/usr/bin/python3, torch 1.13) and
numpy only. Rerun (byte-identical output: fixed seeds, one thread, fixed key order):

    /usr/bin/python3 tests/golden/lm_splice_reference.py

The model is the `gpt2` fixture of lm_reference.py (same seed, same weights, read from that
script, not from its files); its forward pass is redone here with hook points that may REPLACE an
activation, checked bit-for-bit against lm_reference's gpt2_forward when no hook replaces anything.
Everything runs in float64 from the float32 numbers stored in the files.

Dictionaries (the library's folder format: cfg.json with a "sparsecoder" block +
sae_weights.safetensors, F32), each with a hook point of the tiny GPT-2 (d_model 32, vocab 64):
  relu        ReLU SAE at blocks.1.hook_resid_pre, d_sae 64, b_dec subtracted from the input
  topk        TopK SAE (k 12) at blocks.0.hook_attn_out; the k-th/(k+1)-th pre-activation gap is
              asserted wide, so float32 and float64 select the same features
  transcoder  TopK transcoder (k 8) from blocks.1.ln2.hook_normalized to blocks.1.hook_mlp_out,
              decoder fitted by least squares to the clean MLP outputs
  crosscoder  ReLU crosscoder over blocks.0.hook_resid_mid and blocks.1.hook_resid_mid (both
              replaced, each by its reconstruction from the clean activations of both)

tokens.npy: int32 [6, 16], token 63 (the config's bos/eos id) at position 0 of every row and inside
rows 1 and 4; row 2 ends in three 0s (padding in case relu_pad).

expected.json: per case, the dictionary, hooks, options and metrics, evaluated in batches of 4
rows (so 4 + 2, which makes dictionary_learning's per-batch average differ from a pooled one):
  SAELens (sae_lens/evals.py get_recons_loss + get_downstream_reconstruction_metrics): clean,
  spliced (reconstruction where the input token is not special, clean value where it is) and
  zero-ablated (zeros everywhere) runs; per-token CE of logits[:, :-1] against tokens[:, 1:] and
  KL(clean || run) at every position; positions whose INPUT token is special dropped (for CE the
  mask is cut to [:, :-1]); values of all batches concatenated, then averaged.
    ce_loss_score = (ce_zero - ce_spliced)/(ce_zero - ce_clean), kl_div_score = (kl_zero - kl_spliced)/kl_zero
  dictionary_learning (evaluation.py loss_recovered): spliced at every position, CE averaged over
  positions whose TARGET is not the pad id (ignore_index), frac_recovered = (L_spliced - L_zero)/
  (L_clean - L_zero) per batch, averaged over batches.
Cases: relu (special {63}), relu_nospecial (none), relu_pad (special {63, 0}, pad 0), topk,
transcoder, crosscoder (special {63}).
"""
import json
import math
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import lm_reference as ref  # noqa: E402

OUT = os.path.join(HERE, "fixtures", "lm_splice")
F64 = torch.float64
torch.set_num_threads(1)
BATCH = 4


# ---------------------------------------------------------------------------------------------
# GPT-2 with replaceable hooks (the same arithmetic as lm_reference.gpt2_forward)


def gpt2_run(p, cfg, tokens, hooks):
    d, H, L = cfg["n_embd"], cfg["n_head"], cfg["n_layer"]
    hd = d // H
    eps = cfg.get("layer_norm_epsilon", 1e-5)
    B, T = tokens.shape
    seen = {}

    def hk(name, x):
        f = hooks.get(name)
        y = f(x) if f else None
        y = x if y is None else y
        seen[name] = y
        return y

    ids = tokens.long()
    x = hk("hook_embed", p["wte.weight"][ids]) + hk("hook_pos_embed", p["wpe.weight"][:T][None].expand(B, T, d))
    for l in range(L):
        pre, b = f"h.{l}.", f"blocks.{l}."
        x = hk(b + "hook_resid_pre", x)
        u, s, n = ref.layer_norm(x, p[pre + "ln_1.weight"], p[pre + "ln_1.bias"], eps)
        hk(b + "ln1.hook_scale", s)
        n = hk(b + "ln1.hook_normalized", n)
        u = n * p[pre + "ln_1.weight"] + p[pre + "ln_1.bias"]
        qkv = u @ p[pre + "attn.c_attn.weight"] + p[pre + "attn.c_attn.bias"]
        q, k, v = (t.reshape(B, T, H, hd) for t in qkv.split(d, dim=-1))
        q, k, v = hk(b + "attn.hook_q", q), hk(b + "attn.hook_k", k), hk(b + "attn.hook_v", v)
        pattern, z, _ = ref.attention(q, k, v, 1.0 / math.sqrt(hd))
        hk(b + "attn.hook_pattern", pattern)
        z = hk(b + "attn.hook_z", z)
        attn_out = hk(b + "hook_attn_out", z.reshape(B, T, d) @ p[pre + "attn.c_proj.weight"] + p[pre + "attn.c_proj.bias"])
        x = hk(b + "hook_resid_mid", x + attn_out)
        u, s, n = ref.layer_norm(x, p[pre + "ln_2.weight"], p[pre + "ln_2.bias"], eps)
        hk(b + "ln2.hook_scale", s)
        n = hk(b + "ln2.hook_normalized", n)
        u = n * p[pre + "ln_2.weight"] + p[pre + "ln_2.bias"]
        hpre = hk(b + "mlp.hook_pre", u @ p[pre + "mlp.c_fc.weight"] + p[pre + "mlp.c_fc.bias"])
        hpost = hk(b + "mlp.hook_post", ref.gelu_tanh(hpre))
        mlp_out = hk(b + "hook_mlp_out", hpost @ p[pre + "mlp.c_proj.weight"] + p[pre + "mlp.c_proj.bias"])
        x = hk(b + "hook_resid_post", x + mlp_out)
    u, s, n = ref.layer_norm(x, p["ln_f.weight"], p["ln_f.bias"], eps)
    hk("ln_final.hook_scale", s)
    n = hk("ln_final.hook_normalized", n)
    logits = (n * p["ln_f.weight"] + p["ln_f.bias"]) @ p["wte.weight"].T
    return logits, seen


# ---------------------------------------------------------------------------------------------
# Dictionaries (weights f32, computed in f64)


def f32(t):
    return t.to(torch.float32)


def topk_code(pre, k):
    vals, idx = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, idx, vals.clamp(min=0))


def check_topk_gap(pre, k, what):
    s = pre.sort(dim=-1, descending=True).values
    kth, nxt = s[..., k - 1], s[..., k]
    gap = torch.where(kth > 0, kth - nxt, torch.full_like(kth, float("inf")))
    assert gap.min().item() > 1e-4 * s.abs().max().item(), (what, gap.min().item())


def sae_recon(w, arch, x, k=None):
    xin = x - w["b_dec"] if arch["apply_b_dec_to_input"] else x
    pre = xin @ w["W_enc"] + w["b_enc"]
    f = torch.relu(pre) if k is None else topk_code(pre, k)
    return f @ w["W_dec"] + w["b_dec"], pre


def crosscoder_recon(w, xs):
    """xs: list of L tensors [..., d] -> list of L reconstructions."""
    pre = sum(x @ w["W_enc"][l] for l, x in enumerate(xs)) + w["b_enc"]
    f = torch.relu(pre)
    return [f @ w["W_dec"][l] + w["b_dec"][l] for l in range(len(xs))]


def write_dictionary(name, tensors, cfg_json):
    folder = os.path.join(OUT, name)
    ref.write(os.path.join(folder, "sae_weights.safetensors"),
              ref.safetensors_bytes([(k, f32(v).contiguous()) for k, v in tensors]))
    ref.write_json(os.path.join(folder, "cfg.json"), cfg_json)
    return {k: f32(v).to(F64) for k, v in tensors}  # what a reader of the file computes with


def lstsq_fit(codes, y):
    """[codes, 1] @ [W; b] ≈ y in least squares; returns W [F, d], b [d]."""
    a = torch.cat([codes, torch.ones(codes.shape[0], 1, dtype=F64)], dim=1)
    sol = torch.linalg.lstsq(a, y, driver="gelsd").solution
    return sol[:-1], sol[-1]


# ---------------------------------------------------------------------------------------------
# CE / KL as SAELens and dictionary_learning compute them


def log_probs(logits):
    return torch.log_softmax(logits, dim=-1)


def ce_per_token(lp, tokens):
    return -lp[:, :-1].gather(-1, tokens[:, 1:].long().unsqueeze(-1)).squeeze(-1)


def kl_per_token(lp_clean, lp_new):
    return (lp_clean.exp() * (lp_clean - lp_new)).sum(-1)


def evaluate(run, tokens, splice, zero, special, pad):
    """run(tokens, hooks) -> logits; splice(tokens, mask_or_None) -> hooks; zero -> hooks."""
    acc = {k: [] for k in ("ce_clean", "ce_spliced", "ce_zero", "kl_spliced", "kl_zero")}
    fracs = []
    for i in range(0, tokens.shape[0], BATCH):
        tb = tokens[i:i + BATCH]
        keep = torch.ones_like(tb, dtype=torch.bool)
        for s in special:
            keep &= tb != s
        lc = log_probs(run(tb, {}))
        ls = log_probs(run(tb, splice(tb, keep)))
        lz = log_probs(run(tb, zero))
        ldl = log_probs(run(tb, splice(tb, None))) if not keep.all() else ls
        ce_keep = keep[:, :-1]
        for name, lp in (("ce_clean", lc), ("ce_spliced", ls), ("ce_zero", lz)):
            acc[name].append(ce_per_token(lp, tb)[ce_keep])
        acc["kl_spliced"].append(kl_per_token(lc, ls)[keep])
        acc["kl_zero"].append(kl_per_token(lc, lz)[keep])
        tk = torch.ones_like(tb[:, 1:], dtype=torch.bool) if pad is None else tb[:, 1:] != pad
        lo, lr, lzero = (ce_per_token(lp, tb)[tk].mean() for lp in (lc, ldl, lz))
        fracs.append(((lr - lzero) / (lo - lzero)).item())
    m = {k: torch.cat(v).mean().item() for k, v in acc.items()}
    m["ce_loss_score"] = (m["ce_zero"] - m["ce_spliced"]) / (m["ce_zero"] - m["ce_clean"])
    m["kl_div_score"] = (m["kl_zero"] - m["kl_spliced"]) / m["kl_zero"]
    m["frac_recovered"] = sum(fracs) / len(fracs)
    m["ce_positions"] = sum(v.numel() for v in acc["ce_clean"])
    m["kl_positions"] = sum(v.numel() for v in acc["kl_spliced"])
    return m


def replacing(fn, mask):
    """A hook returning fn(x) where mask [B, T] (everywhere when None), x elsewhere."""
    def hook(x):
        y = fn(x)
        return y if mask is None else torch.where(mask[..., None], y, x)
    return hook


def zeros_at(*names):
    return {n: (lambda x: torch.zeros_like(x)) for n in names}


# ---------------------------------------------------------------------------------------------


def main():
    cfg, w, _ = ref.make_gpt2(1401)  # the `gpt2` fixture's model
    p = ref.params_f64(w)
    dr = ref.Drawer(14_100)
    V, bos = cfg["vocab_size"], cfg["bos_token_id"]
    N, T, d = 6, 16, cfg["n_embd"]
    tokens = dr.tokens(N, T, V - 1)  # ids 0..62; 63 only where placed below
    tokens[:, 0] = bos
    tokens[1, 7] = bos
    tokens[4, 10] = bos
    tokens[2, 13:] = 0
    assert (tokens[:, 1:] == 0).any()

    # The hookable forward agrees with lm_reference's exactly.
    base, hooks0 = ref.gpt2_forward(p, cfg, tokens)
    mine, seen = gpt2_run(p, cfg, tokens, {})
    assert torch.equal(base, mine)
    for k, v in hooks0.items():
        assert torch.equal(v, seen[k]), k

    def run(tb, hooks):
        return gpt2_run(p, cfg, tb, hooks)[0]

    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "tokens.npy"), "wb") as fh:
        np.save(fh, tokens.numpy().astype("<i4"))

    cases = {}
    F = 64

    # ReLU SAE at blocks.1.hook_resid_pre: ± pairs of an orthonormal basis, perturbed; shrinkage by b_enc.
    hook = "blocks.1.hook_resid_pre"
    U = torch.linalg.qr(dr.normal(d, d).to(F64)).Q
    dec = torch.cat([U.T, -U.T]) + 0.05 * dr.normal(F, d).to(F64)
    relu_w = write_dictionary("relu", [
        ("W_enc", dec.T.contiguous()), ("W_dec", dec),
        ("b_enc", -0.3 + 0.1 * dr.normal(F).to(F64)), ("b_dec", 0.1 * dr.normal(d).to(F64)),
    ], {"architecture": "standard", "d_in": d, "d_sae": F, "dtype": "float32",
        "apply_b_dec_to_input": True, "normalize_activations": "none", "hook_name": hook,
        "sparsecoder": {"arch": "relu", "d_in": d, "d_sae": F, "apply_b_dec_to_input": True}})
    relu_arch = {"apply_b_dec_to_input": True}

    def relu_splice(tb, mask):
        return {hook: replacing(lambda x: sae_recon(relu_w, relu_arch, x)[0], mask)}

    for case, special, pad in (("relu", [bos], None), ("relu_nospecial", [], None), ("relu_pad", [bos, 0], 0)):
        cases[case] = {"dictionary": "relu", "hook": hook, "special_ids": special, "pad_id": pad,
                       "metrics": evaluate(run, tokens, relu_splice, zeros_at(hook), special, pad)}

    # TopK SAE at blocks.0.hook_attn_out.
    hook_t, k = "blocks.0.hook_attn_out", 12
    act = seen[hook_t]
    scale = act.norm(dim=-1).mean().item() / math.sqrt(d)
    U = torch.linalg.qr(dr.normal(d, d).to(F64)).Q
    dec = torch.cat([U.T, -U.T]) + 0.05 * dr.normal(F, d).to(F64)
    topk_w = write_dictionary("topk", [
        ("W_enc", dec.T.contiguous()), ("W_dec", dec),
        ("b_enc", 0.05 * scale * dr.normal(F).to(F64)), ("b_dec", 0.1 * scale * dr.normal(d).to(F64)),
    ], {"architecture": "topk", "d_in": d, "d_sae": F, "k": k, "dtype": "float32",
        "apply_b_dec_to_input": True, "normalize_activations": "none", "hook_name": hook_t,
        "sparsecoder": {"arch": "topk", "d_in": d, "d_sae": F, "k": k, "apply_b_dec_to_input": True}})
    topk_arch = {"apply_b_dec_to_input": True}
    check_topk_gap(sae_recon(topk_w, topk_arch, act, k)[1], k, "topk")

    def topk_splice(tb, mask):
        def fn(x):
            xhat, pre = sae_recon(topk_w, topk_arch, x, k)
            check_topk_gap(pre, k, "topk spliced")
            return xhat
        return {hook_t: replacing(fn, mask)}

    cases["topk"] = {"dictionary": "topk", "hook": hook_t, "special_ids": [bos], "pad_id": None,
                     "metrics": evaluate(run, tokens, topk_splice, zeros_at(hook_t), [bos], None)}

    # Transcoder blocks.1.ln2.hook_normalized -> blocks.1.hook_mlp_out.
    t_in, t_out, kt = "blocks.1.ln2.hook_normalized", "blocks.1.hook_mlp_out", 8
    W_enc = f32(dr.normal(d, F) / math.sqrt(d)).to(F64)
    b_enc = f32(0.1 * dr.normal(F)).to(F64)
    x_in, y_out = seen[t_in].reshape(-1, d), seen[t_out].reshape(-1, d)
    codes = topk_code(x_in @ W_enc + b_enc, kt)
    W_dec, b_dec = lstsq_fit(codes, y_out)
    tc_w = write_dictionary("transcoder", [("W_enc", W_enc), ("W_dec", W_dec), ("b_enc", b_enc), ("b_dec", b_dec)],
                            {"architecture": "transcoder", "d_in": d, "d_sae": F, "d_out": d, "k": kt,
                             "dtype": "float32", "apply_b_dec_to_input": False, "normalize_activations": "none",
                             "hook_name": t_in, "hook_name_out": t_out,
                             "sparsecoder": {"arch": "transcoder", "d_in": d, "d_sae": F, "d_out": d, "k": kt,
                                             "apply_b_dec_to_input": False}})
    tc_arch = {"apply_b_dec_to_input": False}
    check_topk_gap(x_in @ tc_w["W_enc"] + tc_w["b_enc"], kt, "transcoder")

    def tc_splice(tb, mask):
        box = {}

        def grab(x):
            box["x"] = x

        def fn(y):
            xhat, pre = sae_recon(tc_w, tc_arch, box["x"], kt)
            check_topk_gap(pre, kt, "transcoder spliced")
            return xhat
        return {t_in: grab, t_out: replacing(fn, mask)}

    cases["transcoder"] = {"dictionary": "transcoder", "hook": t_out, "input_hook": t_in, "special_ids": [bos],
                           "pad_id": None,
                           "metrics": evaluate(run, tokens, tc_splice, zeros_at(t_out), [bos], None)}

    # Crosscoder over the two resid_mid hooks.
    cc_hooks = ["blocks.0.hook_resid_mid", "blocks.1.hook_resid_mid"]
    Wc = f32(dr.normal(2, d, F) / math.sqrt(2 * d)).to(F64)
    bc = f32(-0.1 + 0.05 * dr.normal(F)).to(F64)
    xs = [seen[h].reshape(-1, d) for h in cc_hooks]
    fc = torch.relu(sum(x @ Wc[l] for l, x in enumerate(xs)) + bc)
    fits = [lstsq_fit(fc, x) for x in xs]
    cc_w = write_dictionary("crosscoder", [
        ("W_enc", Wc), ("W_dec", torch.stack([f[0] for f in fits])), ("b_enc", bc),
        ("b_dec", torch.stack([f[1] for f in fits])),
    ], {"architecture": "crosscoder", "d_in": d, "d_sae": F, "n_inputs": 2, "dtype": "float32",
        "apply_b_dec_to_input": False, "normalize_activations": "none", "hook_names": cc_hooks,
        "sparsecoder": {"arch": "crosscoder", "d_in": d, "d_sae": F, "n_inputs": 2,
                        "apply_b_dec_to_input": False}})

    def cc_splice(tb, mask):
        _, clean = gpt2_run(p, cfg, tb, {})
        rec = crosscoder_recon(cc_w, [clean[h] for h in cc_hooks])
        return {h: replacing(lambda x, r=r: r, mask) for h, r in zip(cc_hooks, rec)}

    cases["crosscoder"] = {"dictionary": "crosscoder", "hooks": cc_hooks, "special_ids": [bos], "pad_id": None,
                           "metrics": evaluate(run, tokens, cc_splice, zeros_at(*cc_hooks), [bos], None)}

    for name, c in cases.items():
        m = c["metrics"]
        assert all(math.isfinite(v) for v in m.values()), name
        if os.environ.get("LM_SPLICE_VERBOSE"):
            print(name, {k: round(v, 4) for k, v in m.items()})
    ref.write_json(os.path.join(OUT, "expected.json"),
                   {"model": "../lm/gpt2", "tokens": "tokens.npy", "batch": BATCH, "cases": cases})


if __name__ == "__main__":
    main()
