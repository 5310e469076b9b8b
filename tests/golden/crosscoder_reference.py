#!/usr/bin/env python3
"""Golden values for the crosscoder family in sae/crosscoder/ (crosscoder.ts, batchtopk_crosscoder.ts,
dfc.ts), from an independent PyTorch (float64) reference written from the CrossCoder and DFC
sections of /work/shared/SAE-REFERENCE.md (crosscoder_learning's definitions), not from the
TypeScript. Writes tests/golden/fixtures/<case>.json in the schema of sae_reference.py, so
tests/sae_golden.test.ts checks them with every other architecture; DFC cases also carry
`expected.masked_grads` (the gradient after the partition mask), checked by
tests/crosscoder_arch.test.ts. Rerun: `/usr/bin/python3 tests/golden/crosscoder_reference.py`
(byte-identical output from run to run).

  f      = ReLU(sum_l x_l W_enc[l] + b_enc)                       x [B, L, d], W_enc [L, d, F]
  xhat_l = f W_dec[l] + b_dec[l]                                   W_dec [L, F, d], b_dec [L, d]
  w_i    = crosscoder: sum_l |W_dec[l,i]|; sae: sqrt(sum_l |W_dec[l,i]|^2);
           mixed: 1.0 sae + 0.1 crosscoder; none: 1
  recon  = squared: mean_b sum_{l,d} (x - xhat)^2; unsquared: mean_b |x_b - xhat_b| (L*d vector)
  L1 crosscoder:      total = recon + lambda * mean_b sum_i f_i w_i
  BatchTopK / DFC:    keep the k*B largest entries of f * w (w detached), values f;
                      AuxK over the flattened L*d residual (DL form, alpha 1/32)
  decoupled:          per input l, keep the k*B largest entries of f * |W_dec[l,i]| (detached):
                      code [B, L, F], xhat_l = code_l W_dec[l] + b_dec[l] (crosscoder_learning's
                      encode_decoupled); AuxK as above with the shared code
  DFC:                F = A-only [0, nA) | B-only [nA, nA+nB) | shared, n = floor(F p);
                      forbidden W_enc[l][:, other's exclusive] and W_dec[l][other's exclusive] = 0
"""
import math

import torch

# Only the fixture format (array encoding, file writer) is shared with the SAE reference.
from sae_reference import arr, write_fixture

F64 = torch.float64
MARGIN = 1e-3

torch.set_num_threads(1)


def draw(g, shape, scale=1.0, shift=0.0):
    """Normal draws made in f32 (exact there), widened to f64."""
    return (torch.randn(*shape, generator=g, dtype=torch.float32) * scale + shift).to(F64)


def require(cond, msg):
    if not cond:
        raise SystemExit(f"crosscoder_reference.py: fixture guard failed: {msg} (change the seed)")


def partition(F, shares):
    bounds, start = [], 0
    for p in shares:
        n = math.floor(F * p)
        bounds.append((start, start + n))
        start += n
    return bounds


def forbidden_mask(F, L, shares):
    """[L, F] booleans: feature i is another input's exclusive feature."""
    m = torch.zeros(L, F, dtype=torch.bool)
    for l, (a, b) in enumerate(partition(F, shares)):
        for other in range(L):
            if other != l:
                m[other, a:b] = True
    return m


def code_weight(W_dec, norm, a_sae=1.0, a_cc=0.1):
    per = W_dec.norm(dim=2)  # [L, F]
    if norm == "none":
        return torch.ones(W_dec.shape[1], dtype=F64)
    if norm == "sae":
        return per.pow(2).sum(0).sqrt()
    if norm == "mixed":
        return a_sae * per.pow(2).sum(0).sqrt() + a_cc * per.sum(0)
    return per.sum(0)  # crosscoder (and decoupled, summed over inputs)


def top_n_mask(scores, n):
    """1 on the n largest entries of the whole [B, F] batch, 0 elsewhere (no ties near the boundary)."""
    flat = scores.detach().reshape(-1)
    s = flat.sort(descending=True).values
    require(float(s[n - 1]) > MARGIN and float(s[n - 1] - s[n]) > MARGIN, "tie at the batch top-k boundary of the scaled code")
    return torch.zeros_like(flat).scatter(0, flat.topk(n).indices, 1.0).reshape(scores.shape)


def recon_loss(x, xhat, kind):
    sq = ((x - xhat) ** 2).sum(dim=(1, 2))
    return sq.sqrt().mean() if kind == "unsquared" else sq.mean()


def forward(p, x, c, dead):
    B, L, d = x.shape
    pre = torch.einsum("bld,ldf->bf", x, p["W_enc"]) + p["b_enc"]
    w = code_weight(p["W_dec"], c["code_norm"])
    terms = {}
    if c["arch"] == "crosscoder":
        for v in pre.reshape(-1):
            require(abs(float(v)) > MARGIN, "pre-activation within MARGIN of 0")
        f = torch.relu(pre)
    elif c["code_norm"] == "decoupled":
        post = torch.relu(pre)
        w_in = p["W_dec"].norm(dim=2).detach()  # [L, F]
        keep = torch.stack([top_n_mask(post * w_in[l], c["k"] * B) for l in range(L)], 1)  # [B, L, F]
        f = post[:, None, :] * keep
    else:
        post = torch.relu(pre)
        f = post * top_n_mask(post * w.detach(), c["k"] * B)
    if f.dim() == 3:
        xhat = torch.einsum("blf,lfd->bld", f, p["W_dec"]) + p["b_dec"]
    else:
        xhat = torch.einsum("bf,lfd->bld", f, p["W_dec"]) + p["b_dec"]
    recon = recon_loss(x, xhat, c["crosscoder_recon"])
    terms["recon"] = recon
    total = recon
    if c["arch"] == "crosscoder":
        sparsity = (f * w).sum(-1).mean()
        terms["sparsity"] = sparsity
        total = total + c["l1_coefficient"] * sparsity
    elif dead is not None:
        k_aux = min(c["auxk_k"], int(dead.sum()), pre.shape[1])
        post = torch.relu(pre)
        dpre = pre[:, dead].detach().sort(dim=-1, descending=True).values
        if k_aux < dpre.shape[1]:
            ok = (dpre[:, k_aux - 1] - dpre[:, k_aux] > MARGIN) | (dpre[:, k_aux - 1] < -MARGIN)
            require(bool(ok.all()), "tie at the AuxK boundary")
        masked = torch.where(dead[None, :], post.detach(), torch.tensor(-math.inf, dtype=F64))
        sel = torch.zeros_like(post).scatter(-1, masked.topk(k_aux, dim=-1).indices, 1.0)
        aux_code = post * sel
        e = (x - xhat).detach().reshape(B, L * d)
        W_flat = p["W_dec"].permute(1, 0, 2).reshape(-1, L * d)
        err = ((e - aux_code @ W_flat) ** 2).sum(-1).mean()
        den = ((e - e.mean(0, keepdim=True)) ** 2).sum(-1).mean()
        auxk = err / den
        require(float(auxk) > 0, "AuxK term is zero")
        terms["auxk"] = auxk
        total = total + c["auxk_alpha"] * auxk
    return f, xhat, terms, total


def make_case(name, seed, cfg_in, B, dead_every=None):
    g = torch.Generator().manual_seed(seed)
    c = resolved(cfg_in)
    L, d, F = c["n_inputs"], c["d_in"], c["d_sae"]
    p = {
        "W_enc": draw(g, [L, d, F], 0.6),
        "b_enc": draw(g, [F], 0.2, 0.1),
        "W_dec": draw(g, [L, F, d], 0.5),
        "b_dec": draw(g, [L, d], 0.2),
    }
    mask = forbidden_mask(F, L, c["dfc_shares"]) if c["arch"] == "dfc" else None
    if mask is not None:
        p["W_enc"] = torch.where(mask[:, None, :], torch.zeros((), dtype=F64), p["W_enc"])
        p["W_dec"] = torch.where(mask[:, :, None], torch.zeros((), dtype=F64), p["W_dec"])
    x = draw(g, [B, L, d])
    dead = None
    ctx = {}
    if dead_every:
        dead = torch.tensor([i % dead_every == 1 for i in range(F)])
        ctx = {"dead": [bool(v) for v in dead], "numDead": int(dead.sum())}
    leaves = {k: v.clone().requires_grad_(True) for k, v in p.items()}
    f, xhat, terms, total = forward(leaves, x, c, dead)
    names = sorted(leaves)
    grads = torch.autograd.grad(total, [leaves[k] for k in names])
    expected = {
        "code": arr(f),
        "xhat": arr(xhat),
        "terms": {k: float(v) for k, v in terms.items()},
        "total": float(total),
        "grads": {k: arr(gr) for k, gr in zip(names, grads)},
    }
    if mask is not None:
        masked = dict(zip(names, grads))
        masked["W_enc"] = torch.where(mask[:, None, :], torch.zeros((), dtype=F64), masked["W_enc"])
        masked["W_dec"] = torch.where(mask[:, :, None], torch.zeros((), dtype=F64), masked["W_dec"])
        raw_forbidden = float(grads[names.index("W_dec")][mask].abs().max())
        require(raw_forbidden > 0, "raw gradient is zero on every forbidden decoder entry (the mask would not matter)")
        expected["masked_grads"] = {k: arr(masked[k]) for k in names}
    assumed = {k: c[k] for k in ("apply_b_dec_to_input", "auxk_alpha", "auxk_k", "l1_coefficient", "code_norm", "crosscoder_recon", "n_inputs", "dfc_shares", "code_norm_alpha_sae", "code_norm_alpha_cc")}
    return {
        "case": name,
        "arch": cfg_in["arch"],
        "reference": REFERENCES[name],
        "config": cfg_in,
        "assumed": assumed,
        "context": ctx,
        "inputs": {"x": arr(x)},
        "params": {k: arr(v) for k, v in p.items()},
        "expected": expected,
    }


def resolved(cfg_in):
    """The values the reference uses: explicit fields, else the documented TS defaults."""
    c = dict(cfg_in)
    c.setdefault("n_inputs", 2)
    c.setdefault("code_norm", "crosscoder")
    c.setdefault("crosscoder_recon", "squared")
    c.setdefault("dfc_shares", [0.05] * c["n_inputs"])
    c.setdefault("apply_b_dec_to_input", False)
    c.setdefault("l1_coefficient", 0.1)
    c.setdefault("auxk_alpha", 1 / 32)
    c.setdefault("auxk_k", max(1, c["d_in"] // 2))
    c.setdefault("code_norm_alpha_sae", 1.0)
    c.setdefault("code_norm_alpha_cc", 0.1)
    return c


REFERENCES = {
    "crosscoder_l1": "crosscoder_learning CrossCoder: ReLU code, crosscoder code norm sum_l |W_dec[l,i]|, squared recon, lambda 0.1",
    "crosscoder_l1_sae_unsquared": "CrossCoder with the 'sae' code norm and crosscoder_learning's unsquared L2 reconstruction",
    "crosscoder_l1_mixed_3": "CrossCoder over 3 inputs, 'mixed' code norm 1.0*sae + 0.1*crosscoder",
    "batchtopk_crosscoder": "crosscoder_learning BatchTopKCrossCoder: top k*B of f*w, values f",
    "batchtopk_crosscoder_auxk": "BatchTopK CrossCoder with DL AuxK over the flattened L*d residual (alpha 1/32)",
    "dfc_auxk": "DFC (dfc_learning): BatchTopK CrossCoder with a 20%/20% partition, forbidden weights zero, AuxK",
    "dfc_3_inputs": "DFC generalised to 3 inputs (shares 0.2, 0.1, 0.2), 'sae' code norm",
    "batchtopk_crosscoder_decoupled_auxk": "crosscoder_learning BatchTopKCrossCoder, decoupled code norm: per-input top k*B of f*|W_dec[l]|, per-input codes; AuxK",
    "dfc_decoupled_3_inputs": "DFC over 3 inputs with the decoupled code norm, unsquared reconstruction, AuxK",
}

CASES = [
    ("crosscoder_l1", 301, {"arch": "crosscoder", "d_in": 4, "d_sae": 6, "n_inputs": 2}, 5, None),
    ("crosscoder_l1_sae_unsquared", 302, {"arch": "crosscoder", "d_in": 3, "d_sae": 5, "n_inputs": 2, "code_norm": "sae", "crosscoder_recon": "unsquared", "l1_coefficient": 0.3}, 4, None),
    ("crosscoder_l1_mixed_3", 303, {"arch": "crosscoder", "d_in": 3, "d_sae": 5, "n_inputs": 3, "code_norm": "mixed"}, 4, None),
    ("batchtopk_crosscoder", 304, {"arch": "batchtopk-crosscoder", "d_in": 4, "d_sae": 8, "k": 2, "n_inputs": 2}, 5, None),
    ("batchtopk_crosscoder_auxk", 305, {"arch": "batchtopk-crosscoder", "d_in": 4, "d_sae": 8, "k": 2, "n_inputs": 2, "auxk_k": 2}, 5, 3),
    ("dfc_auxk", 306, {"arch": "dfc", "d_in": 4, "d_sae": 10, "k": 3, "n_inputs": 2, "dfc_shares": [0.2, 0.2], "auxk_k": 2}, 6, 2),
    ("dfc_3_inputs", 307, {"arch": "dfc", "d_in": 3, "d_sae": 10, "k": 2, "n_inputs": 3, "dfc_shares": [0.2, 0.1, 0.2], "code_norm": "sae"}, 6, None),
    ("batchtopk_crosscoder_decoupled_auxk", 308, {"arch": "batchtopk-crosscoder", "d_in": 4, "d_sae": 8, "k": 2, "n_inputs": 2, "code_norm": "decoupled", "auxk_k": 2}, 5, 3),
    ("dfc_decoupled_3_inputs", 309, {"arch": "dfc", "d_in": 3, "d_sae": 10, "k": 2, "n_inputs": 3, "dfc_shares": [0.2, 0.1, 0.2], "code_norm": "decoupled", "crosscoder_recon": "unsquared", "auxk_k": 2}, 6, 3),
]


def main():
    for name, seed, cfg, B, dead_every in CASES:
        write_fixture(name, make_case(name, seed, cfg, B, dead_every))


if __name__ == "__main__":
    main()
