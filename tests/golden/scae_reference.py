#!/usr/bin/env python3
"""Reference for SCAE suites (sparsely connected autoencoders): the pruned forward pass, its losses
and gradients, and the reference's pickled connection files.

Writes tests/golden/fixtures/scae/ with Debian's PyTorch (/usr/bin/python3, torch 1.13) and numpy.
Rerun (fixed seeds, one thread: byte-identical output except the pickles, whose storage keys
PyTorch derives from memory addresses):

    /usr/bin/python3 tests/golden/scae_reference.py

Models: the `gpt2` (sequential residual) and `gpt_neox` (parallel residual) fixtures of
lm_reference.py, rebuilt from its seeds and run by its forward passes in float64. Per model, a
suite of random TopK dictionaries (d_model 32, F 40, k 5): attn_l encodes hook_attn_out with b_dec
subtracted from the input; mlp_l is a transcoder from ln2.hook_normalized to hook_mlp_out, no b_dec
on the input. Random connections: each downstream feature gets C = 6 upstream (module, feature)
pairs drawn jointly from all its upstream modules, tables padded with -1.

The pruned pass as SAE-REFERENCE.md defines it, computed the reference's (jacobcd52's SCAE fork)
way, with DENSE virtual weights multiplied by a 0/1 connection mask:
  residual contributions are centred over d_model (LayerNorm's mean subtraction: a no-op on the
  reference's TransformerLens-processed weights, exact here on raw ones) and divided by the clean
  run's LayerNorm scale (ln1 for attn_l, ln2 for mlp_l);
  mlp_l:  pre = c(e)/s2 W_enc + sum_up (f_up/s2) (M * c(W_dec_up) W_enc) + c(sum_up b_dec_up)/s2 W_enc + b_enc
  attn_l: each head's W_OV = diag(ln1.w) W_V^h W_O^h, b_O' = b_O + sum_h (ln1.b W_V^h + b_V^h) W_O^h
          (pattern rows sum to 1); pre = sum_h P_h [c(e)/s1 W_OV_h + sum_up (f_up/s1)(M * c(W_dec_up)
          W_OV_h W_enc) ...] + (b_O' - b_dec) W_enc + b_enc
  then top-k (k 5) of pre, ReLU, x_hat = f W_dec + b_dec.
Loss = sum over modules of FVU (sum ||y - y_hat||^2 / sum ||y - mean y||^2 over the B*T tokens, y
the clean hook_out) + CE of unembed(ln_final(embed + sum x_hat)) (ln_final recomputed, next-token
mean over B*(T-1) positions). Gradients of the loss w.r.t. every dictionary parameter (autograd).
Top-k gaps are asserted wide so float32 selects the same features.

Pickles (connections of the gpt2 suite): top_connections_6.pkl (pickle.dump of {down: {up:
LongTensor}}, as find_top_connections.py writes it), top_connections_6_torchsave.pkl (torch.save),
bad_range.pkl (mlp_1<-attn_0 row 3 holds id 40 = F), bad_shape.pkl (a 1-D table).
"""
import json
import os
import pickle
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import lm_reference as ref  # noqa: E402

OUT = os.path.join(HERE, "fixtures", "scae")
F64 = torch.float64
torch.set_num_threads(1)
ref.DTYPES[torch.float64] = ("F64", "<f8")
F, K, C = 40, 5, 6


def modules(L):
    return [(f"{kind}_{l}", kind, l) for l in range(L) for kind in ("attn", "mlp")]


def feeds(up, down, parallel):
    if up[2] < down[2]:
        return True
    return (not parallel) and up[2] == down[2] and up[1] == "attn" and down[1] == "mlp"


def draw_dict(g, d, kind):
    W_dec = torch.randn(F, d, generator=g, dtype=torch.float32)
    W_dec = W_dec / W_dec.norm(dim=1, keepdim=True)
    W_enc = torch.randn(d, F, generator=g, dtype=torch.float32) * (1.5 / d ** 0.5)
    b_enc = torch.randn(F, generator=g, dtype=torch.float32) * 0.3
    b_dec = torch.randn(d, generator=g, dtype=torch.float32) * 0.2
    return {"W_enc": W_enc, "W_dec": W_dec, "b_enc": b_enc, "b_dec": b_dec}


def draw_connections(g, mods, parallel):
    conns = {}
    for down in mods:
        ups = [u for u in mods if feeds(u, down, parallel)]
        if not ups:
            continue
        tables = {u[0]: torch.full((F, C), -1, dtype=torch.int64) for u in ups}
        for i in range(F):
            flat = torch.randperm(len(ups) * F, generator=g)[:C].tolist()
            fill = {u[0]: 0 for u in ups}
            for x in flat:
                u = ups[x // F][0]
                tables[u][i, fill[u]] = x % F
                fill[u] += 1
        conns[down[0]] = tables
    return conns


def centre(x):
    return x - x.mean(-1, keepdim=True)


def head_weights(p, cfg, family, l):
    """[H, d, d] W_OV per head (ln1 weight folded in) and b_O' [d], float64."""
    if family == "gpt2":
        d, H = cfg["n_embd"], cfg["n_head"]
        hd = d // H
        pre = f"h.{l}."
        Wqkv, bqkv = p[pre + "attn.c_attn.weight"], p[pre + "attn.c_attn.bias"]
        WV = [Wqkv[:, 2 * d + h * hd: 2 * d + (h + 1) * hd] for h in range(H)]
        bV = [bqkv[2 * d + h * hd: 2 * d + (h + 1) * hd] for h in range(H)]
        WO = [p[pre + "attn.c_proj.weight"][h * hd:(h + 1) * hd] for h in range(H)]
        bO = p[pre + "attn.c_proj.bias"]
        w, b = p[pre + "ln_1.weight"], p[pre + "ln_1.bias"]
    else:
        d, H = cfg["hidden_size"], cfg["num_attention_heads"]
        hd = d // H
        pre = f"gpt_neox.layers.{l}."
        Wqkv, bqkv = p[pre + "attention.query_key_value.weight"], p[pre + "attention.query_key_value.bias"]
        WV = [Wqkv[h * 3 * hd + 2 * hd: (h + 1) * 3 * hd].T for h in range(H)]
        bV = [bqkv[h * 3 * hd + 2 * hd: (h + 1) * 3 * hd] for h in range(H)]
        WO = [p[pre + "attention.dense.weight"][:, h * hd:(h + 1) * hd].T for h in range(H)]
        bO = p[pre + "attention.dense.bias"]
        w, b = p[pre + "input_layernorm.weight"], p[pre + "input_layernorm.bias"]
    W_OV = torch.stack([torch.diag(w) @ WV[h] @ WO[h] for h in range(H)])
    b_eff = bO + sum((b @ WV[h] + bV[h]) @ WO[h] for h in range(H))
    return W_OV, b_eff


def pruned_pass(dicts, conns, mods, parallel, hk, heads, B, T):
    """Pre-activations, dense codes and reconstructions [B*T, ...] of every module."""
    N = B * T
    e = hk["blocks.0.hook_resid_pre"].reshape(N, -1)
    pre_all, codes, recons = {}, {}, {}
    for down in mods:
        name, kind, l = down
        D = dicts[name]
        ups = [u for u in mods if feeds(u, down, parallel)]
        s = hk[f"blocks.{l}.{'ln1' if kind == 'attn' else 'ln2'}.hook_scale"].reshape(N, 1)
        bias_res = centre(e + sum((dicts[u[0]]["b_dec"] for u in ups), torch.zeros(e.shape[1], dtype=F64))) / s
        if kind == "mlp":
            pre = bias_res @ D["W_enc"] + D["b_enc"]
            for u in ups:
                V = centre(dicts[u[0]]["W_dec"]) @ D["W_enc"]  # [F_up, F_down]
                pre = pre + (codes[u[0]] / s) @ (V * mask(conns, name, u[0]))
        else:
            W_OV, b_eff = heads[l]
            H = W_OV.shape[0]
            P = hk[f"blocks.{l}.attn.hook_pattern"]  # [B, H, T, T]
            per_head = torch.einsum("nd,hde,ef->hnf", bias_res, W_OV, D["W_enc"])
            for u in ups:
                V = torch.einsum("ud,hde,ef->huf", centre(dicts[u[0]]["W_dec"]), W_OV, D["W_enc"])
                V = V * mask(conns, name, u[0])[None]
                per_head = per_head + torch.einsum("nu,huf->hnf", codes[u[0]] / s, V)
            moved = torch.einsum("bhqk,bhkf->bqf", P, per_head.reshape(H, B, T, -1).transpose(0, 1))
            pre = moved.reshape(N, -1) + (b_eff - D["b_dec"]) @ D["W_enc"] + D["b_enc"]
        top = pre.topk(K + 1, dim=-1)
        gap = (top.values[:, K - 1] - top.values[:, K]).min().item()
        if gap < 1e-3:
            raise TieError(f"{name}: top-k gap {gap}")
        f = torch.zeros_like(pre).scatter(-1, top.indices[:, :K], torch.relu(top.values[:, :K]))
        pre_all[name], codes[name] = pre, f
        recons[name] = f @ D["W_dec"] + D["b_dec"]
    return pre_all, codes, recons


class TieError(Exception):
    pass


def mask(conns, down, up):
    m = torch.zeros(F, F, dtype=F64)  # [F_up, F_down]
    t = conns.get(down, {}).get(up)
    if t is None:
        return m
    for i in range(F):
        for j in t[i].tolist():
            if j >= 0:
                m[j, i] = 1.0
    return m


def losses(recons, hk, mods, p, cfg, family, tokens, B, T):
    N = B * T
    fvu = []
    for name, kind, l in mods:
        y = hk[f"blocks.{l}.hook_{'attn' if kind == 'attn' else 'mlp'}_out"].reshape(N, -1)
        fvu.append(((y - recons[name]) ** 2).sum() / ((y - y.mean(0)) ** 2).sum())
    resid = hk["blocks.0.hook_resid_pre"].reshape(N, -1) + sum(recons.values())
    if family == "gpt2":
        u, _, _ = ref.layer_norm(resid, p["ln_f.weight"], p["ln_f.bias"], 1e-5)
        logits = u @ p["wte.weight"].T
    else:
        u, _, _ = ref.layer_norm(resid, p["gpt_neox.final_layer_norm.weight"],
                                 p["gpt_neox.final_layer_norm.bias"], 1e-5)
        logits = u @ p["embed_out.weight"].T
    logp = torch.log_softmax(logits.reshape(B, T, -1)[:, :-1], -1)
    ce = -logp.gather(-1, tokens[:, 1:].long()[..., None]).mean()
    return torch.stack(fvu), ce


def suite_json(family, mods, parallel):
    return {"format": "sparsecoder-scae", "version": 1, "model": family,
            "residual": "parallel" if parallel else "sequential", "k": K, "C": C,
            "modules": [{"name": n, "kind": kd, "layer": l,
                         "hook_in": f"blocks.{l}.hook_attn_out" if kd == "attn" else f"blocks.{l}.ln2.hook_normalized",
                         "hook_out": f"blocks.{l}.hook_attn_out" if kd == "attn" else f"blocks.{l}.hook_mlp_out"}
                        for n, kd, l in mods]}


def sae_cfg(kind, d):
    arch = "topk" if kind == "attn" else "transcoder"
    return {"architecture": "topk", "d_in": d, "d_sae": F, "dtype": "float32",
            "apply_b_dec_to_input": kind == "attn", "k": K, "normalize_activations": "none",
            "sparsecoder": {"arch": arch, "d_in": d, "d_sae": F, "d_out": d, "k": K,
                            "apply_b_dec_to_input": kind == "attn"}}


def run_case(family, seed_model, dict_seed):
    if family == "gpt2":
        cfg, w, tokens = ref.make_gpt2(seed_model)
        p = ref.params_f64(w)
        _, hk = ref.gpt2_forward(p, cfg, tokens)
        d, L, parallel = cfg["n_embd"], cfg["n_layer"], False
    else:
        cfg, w, tokens = ref.make_neox(seed_model)
        p = ref.params_f64(w)
        _, hk = ref.neox_forward(p, cfg, tokens)
        d, L, parallel = cfg["hidden_size"], cfg["num_hidden_layers"], True
    B, T = tokens.shape
    mods = modules(L)
    heads = {l: head_weights(p, cfg, family, l) for l in range(L)}
    for seed in range(dict_seed, dict_seed + 200):  # the first seed whose top-k has no near ties
        g = torch.Generator().manual_seed(seed)
        raw = {n: draw_dict(g, d, kind) for n, kind, _ in mods}
        conns = draw_connections(g, mods, parallel)
        dicts = {n: {k: v.to(F64).requires_grad_(True) for k, v in D.items()} for n, D in raw.items()}
        try:
            pre, codes, recons = pruned_pass(dicts, conns, mods, parallel, hk, heads, B, T)
            break
        except TieError:
            continue
    print(family, "dictionary seed", seed)
    fvu, ce = losses(recons, hk, mods, p, cfg, family, tokens, B, T)
    loss = fvu.sum() + ce
    loss.backward()

    folder = os.path.join(OUT, family)
    ref.write_json(os.path.join(folder, "suite", "suite.json"), suite_json(family, mods, parallel))
    for n, kind, _ in mods:
        sub = os.path.join(folder, "suite", n)
        ref.write_json(os.path.join(sub, "cfg.json"), sae_cfg(kind, d))
        ref.write(os.path.join(sub, "sae_weights.safetensors"),
                  ref.safetensors_bytes([(k, raw[n][k]) for k in ("W_enc", "W_dec", "b_dec", "b_enc")]))
    ctens = [(f"{dn}<-{un}", t.to(torch.int32)) for dn, ups in conns.items() for un, t in ups.items()]
    ref.write(os.path.join(folder, "suite", "connections.safetensors"), ref.safetensors_bytes(ctens))
    exp = [("tokens", tokens), ("fvu", fvu.detach()), ("ce", ce.detach().reshape(1)),
           ("loss", loss.detach().reshape(1))]
    for n, _, _ in mods:
        exp += [(f"pre:{n}", pre[n].detach()), (f"code:{n}", codes[n].detach()),
                (f"recon:{n}", recons[n].detach())]
        exp += [(f"grad:{n}.{k}", dicts[n][k].grad) for k in ("W_enc", "W_dec", "b_dec", "b_enc")]
    ref.write(os.path.join(folder, "expected.safetensors"), ref.safetensors_bytes(exp))
    return conns


def write_pickles(conns):
    folder = os.path.join(OUT, "pickles")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "top_connections_6.pkl"), "wb") as fh:
        pickle.dump(conns, fh)
    torch.save(conns, os.path.join(folder, "top_connections_6_torchsave.pkl"))
    bad = {dn: {un: t.clone() for un, t in ups.items()} for dn, ups in conns.items()}
    bad["mlp_1"]["attn_0"][3, 0] = F
    with open(os.path.join(folder, "bad_range.pkl"), "wb") as fh:
        pickle.dump(bad, fh)
    bad = {dn: dict(ups) for dn, ups in conns.items()}
    bad["mlp_1"]["attn_0"] = torch.zeros(F, dtype=torch.int64)
    with open(os.path.join(folder, "bad_shape.pkl"), "wb") as fh:
        pickle.dump(bad, fh)


def main():
    conns = run_case("gpt2", 1401, 7101)
    run_case("gpt_neox", 1404, 7104)
    write_pickles(conns)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
