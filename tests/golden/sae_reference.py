#!/usr/bin/env python3
"""Golden values for every SAE architecture in sae/*.ts, from an independent PyTorch reference.

Each case builds fixed small parameters and inputs from a seeded torch generator, computes the
forward pass, every loss term and the gradients of the total loss w.r.t. every parameter in
float64, written from the definitions in /work/shared/SAE-REFERENCE.md (dictionary_learning's
choices where the implementations differ), not from the TypeScript. Writes
tests/golden/fixtures/<case>.json. Rerun: `/usr/bin/python3 tests/golden/sae_reference.py`;
the output is byte-identical from run to run.

Inputs and parameters are drawn in float32 and widened, so the f32 test sees exactly the values
the f64 reference used. Every selection (ReLU sign, top-k boundary, JumpReLU threshold and its
rectangle window, gate sign) is checked to sit at least MARGIN away from a tie, so f32 rounding
cannot flip it and the reference is unambiguous.
"""
import json
import math
import os

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures")
F64 = torch.float64
MARGIN = 1e-3
LN_EPS = 1e-5

torch.set_num_threads(1)  # one reduction order, so reruns are bit-identical


# ---------------------------------------------------------------------------------------------
# Drawing fixed values


def draw(g, shape, scale=1.0, shift=0.0):
    """Normal draws computed in f32 (so exactly representable there), widened to f64."""
    return (torch.randn(*shape, generator=g, dtype=torch.float32) * scale + shift).to(F64)


def f32(v):
    return float(torch.tensor(v, dtype=torch.float32))


def sae_params(g, d_in, F, d_out):
    return {
        "W_enc": draw(g, [d_in, F], 0.6),
        "b_enc": draw(g, [F], 0.2, 0.1),
        "W_dec": draw(g, [F, d_out], 0.5),
        "b_dec": draw(g, [d_out], 0.2),
    }


# ---------------------------------------------------------------------------------------------
# Guards: the reference must not sit on a tie


def require(cond, msg):
    if not cond:
        raise SystemExit(f"sae_reference.py: fixture guard failed: {msg} (change the seed)")


def guard_sign(v, what):
    require(bool((v.abs() > MARGIN).all()), f"{what}: an entry within {MARGIN} of 0")


def guard_rows(pre, k, what):
    """Per row: the k-th largest is positive and clearly above the (k+1)-th."""
    s = pre.sort(dim=-1, descending=True).values
    require(bool((s[:, k - 1] > MARGIN).all()), f"{what}: k-th value not positive")
    if k < pre.shape[1]:
        require(bool((s[:, k - 1] - s[:, k] > MARGIN).all()), f"{what}: tie at the top-k boundary")


def guard_batch(pre, n, what):
    s = pre.reshape(-1).sort(descending=True).values
    require(float(s[n - 1]) > MARGIN and float(s[n - 1] - s[n]) > MARGIN, f"{what}: tie at the batch top-k boundary")


def guard_aux(pre, dead, k_aux, what):
    """Among dead features, per row: a clear gap at k_aux, unless the boundary is ReLU'd to 0 anyway."""
    d = pre[:, dead].sort(dim=-1, descending=True).values
    if k_aux < d.shape[1]:
        ok = (d[:, k_aux - 1] - d[:, k_aux] > MARGIN) | (d[:, k_aux - 1] < -MARGIN)
        require(bool(ok.all()), f"{what}: tie at the AuxK boundary")
    require(bool((d[:, :k_aux] > MARGIN).any()), f"{what}: AuxK code is all zero")


# ---------------------------------------------------------------------------------------------
# Reference definitions (SAE-REFERENCE.md)


def mse(target, xhat):
    """Reconstruction: mean over the batch of sum_d (x - xhat)^2 (DL, SL)."""
    return ((target - xhat) ** 2).sum(-1).mean()


def topk_mask(a, k):
    """0/1 mask of the k largest entries of each row (selection carries no gradient)."""
    idx = a.detach().topk(k, dim=-1).indices
    return torch.zeros_like(a).scatter(-1, idx, 1.0)


def batch_topk_mask(a, n):
    flat = a.detach().reshape(-1)
    idx = flat.topk(n).indices
    return torch.zeros_like(flat).scatter(0, idx, 1.0).reshape(a.shape)


def auxk_term(post_relu, dead, k_aux, residual, W_dec):
    """DL AuxK: top k_aux dead post-ReLU activations decoded without bias fit the detached residual,
    normalised by the residual's variance about its batch mean; NaN -> 0."""
    masked = torch.where(dead[None, :], post_relu.detach(), torch.tensor(-math.inf, dtype=F64))
    aux_code = post_relu * topk_mask(masked, k_aux)
    e = residual.detach()
    err = ((e - aux_code @ W_dec) ** 2).sum(-1).mean()
    den = ((e - e.mean(0, keepdim=True)) ** 2).sum(-1).mean()
    r = err / den
    return torch.where(torch.isnan(r), torch.zeros_like(r), r)


def rect(u):
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class JumpReLU(torch.autograd.Function):
    """pre * H(pre - theta); d/dpre = H(pre - theta); d/dtheta = -(theta/eps) rect((pre - theta)/eps) g."""

    @staticmethod
    def forward(ctx, pre, theta, eps):
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return pre * (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, g):
        pre, theta = ctx.saved_tensors
        eps = ctx.eps
        d_pre = (pre > theta).to(pre.dtype) * g
        d_theta = (-(theta / eps) * rect((pre - theta) / eps) * g).sum(0)
        return d_pre, d_theta, None


class Step(torch.autograd.Function):
    """H(pre - theta); no gradient to pre; d/dtheta = -(1/eps) rect((pre - theta)/eps) g."""

    @staticmethod
    def forward(ctx, pre, theta, eps):
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, g):
        pre, theta = ctx.saved_tensors
        eps = ctx.eps
        return torch.zeros_like(pre), (-(1.0 / eps) * rect((pre - theta) / eps) * g).sum(0), None


def encoder_input(p, x, cfg):
    return x - p["b_dec"] if cfg["apply_b_dec_to_input"] else x


def ref_relu(p, x, target, cfg, ctx):
    pre = encoder_input(p, x, cfg) @ p["W_enc"] + p["b_enc"]
    guard_sign(pre, "relu pre-activations")
    f = torch.relu(pre)
    xhat = f @ p["W_dec"] + p["b_dec"]
    recon = mse(target, xhat)
    if cfg["l1_variant"] == "plain":
        sparsity = f.abs().sum(-1).mean()
    else:  # decoder-norm weighted: sum_i f_i ||W_dec[i]||
        sparsity = (f.abs() * p["W_dec"].norm(dim=-1)).sum(-1).mean()
    total = recon + cfg["l1_coefficient"] * ctx.get("l1Scale", 1.0) * sparsity
    return f, xhat, {"recon": recon, "sparsity": sparsity}, total


def ref_gated(p, x, target, cfg, ctx):
    z = encoder_input(p, x, cfg) @ p["W_enc"]
    pi_gate = z + p["b_gate"]
    pi_mag = torch.exp(p["r_mag"]) * z + p["b_mag"]
    guard_sign(pi_gate, "gate pre-activations")
    guard_sign(pi_mag, "magnitude pre-activations")
    f = (pi_gate > 0).to(F64) * torch.relu(pi_mag)  # the Heaviside gate passes no gradient
    xhat = f @ p["W_dec"] + p["b_dec"]
    recon = mse(target, xhat)
    gate = torch.relu(pi_gate)
    sparsity = gate.abs().sum(-1).mean()
    gated_aux = mse(target, gate @ p["W_dec"].detach() + p["b_dec"].detach())  # DL: detached decoder
    total = recon + cfg["l1_coefficient"] * ctx.get("l1Scale", 1.0) * sparsity + gated_aux
    return f, xhat, {"recon": recon, "sparsity": sparsity, "gatedAux": gated_aux}, total


def ref_jumprelu(p, x, target, cfg, ctx):
    pre = encoder_input(p, x, cfg) @ p["W_enc"] + p["b_enc"]
    eps, theta = cfg["jumprelu_bandwidth"], p["threshold"]
    u = (pre - theta) / eps
    require(bool(((pre - theta).abs() > 5e-5).all()), "jumprelu: pre within 5e-5 of theta")
    require(bool(((u.abs() - 0.5).abs() > 0.05).all()), "jumprelu: pre on the rectangle's edge")
    require(int((u.abs() < 0.5).sum()) >= 2, "jumprelu: fewer than 2 entries in the STE window")
    f = JumpReLU.apply(pre, theta, eps)
    xhat = f @ p["W_dec"] + p["b_dec"]
    recon = mse(target, xhat)
    l0 = Step.apply(pre, theta, eps).sum(-1).mean()  # reference: the step of pre (DL applies it to f)
    sparsity = (l0 / cfg["jumprelu_target_l0"] - 1) ** 2
    total = recon + cfg["l1_coefficient"] * ctx.get("l1Scale", 1.0) * sparsity
    return f, xhat, {"recon": recon, "sparsity": sparsity}, total


def ref_topk_family(p, x, target, cfg, ctx, batch_select=False, prefixes=None):
    pre = encoder_input(p, x, cfg) @ p["W_enc"] + p["b_enc"]
    guard_sign(pre, "pre-activations")
    a = torch.relu(pre)
    if batch_select:
        n = cfg["k"] * x.shape[0]
        guard_batch(pre, n, "batch top-k")
        f = a * batch_topk_mask(a, n)
    else:
        guard_rows(pre, cfg["k"], "top-k")
        f = a * topk_mask(a, cfg["k"])
    if prefixes is None:
        xhat = f @ p["W_dec"] + p["b_dec"]
        recon = mse(target, xhat)
    else:  # Matryoshka: sum_m w_m * MSE of the decode through the first m groups
        recon, end = 0.0, 0
        for size, w in zip(*prefixes):
            end += size
            xhat = f[:, :end] @ p["W_dec"][:end] + p["b_dec"]
            recon = recon + w * mse(target, xhat)
    terms = {"recon": recon}
    total = recon
    if ctx.get("dead") is not None:
        dead = torch.tensor(ctx["dead"], dtype=torch.bool)
        k_aux = min(cfg["auxk_k"], ctx["numDead"])
        guard_aux(pre, dead, k_aux, "AuxK")
        terms["auxk"] = auxk_term(a, dead, k_aux, target - xhat, p["W_dec"])
        total = recon + cfg["auxk_alpha"] * terms["auxk"]
    return f, xhat, terms, total


def standardize(x):
    """Per token over d: zero mean, unit variance (biased), eps inside the square root."""
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + LN_EPS)


def ref_mlsae(p, x, target, cfg, ctx):
    B, L, d = x.shape
    xs = standardize(x).reshape(B * L, d)  # each (token, layer) vector is a sample
    pre = xs - p["b_dec"] if cfg["apply_b_dec_to_input"] else xs
    pre = pre @ p["W_enc"] + p["b_enc"]
    guard_sign(pre, "mlsae pre-activations")
    guard_rows(pre, cfg["k"], "mlsae top-k")
    a = torch.relu(pre)
    f = a * topk_mask(a, cfg["k"])
    xhat = f @ p["W_dec"] + p["b_dec"]
    # FVU per layer: sum over batch and d of the error / of the deviation from the batch mean
    xs3, xh3 = xs.reshape(B, L, d), xhat.reshape(B, L, d)
    err = ((xs3 - xh3) ** 2).sum(dim=(0, 2))
    tot = ((xs3 - xs3.mean(0, keepdim=True)) ** 2).sum(dim=(0, 2))
    recon = (err / tot).mean()
    terms, total = {"recon": recon}, recon
    if ctx.get("dead") is not None:
        dead = torch.tensor(ctx["dead"], dtype=torch.bool)
        k_aux = min(cfg["auxk_k"], ctx["numDead"])
        guard_aux(pre, dead, k_aux, "mlsae AuxK")
        terms["auxk"] = auxk_term(a, dead, k_aux, xs - xhat, p["W_dec"])
        total = recon + cfg["auxk_alpha"] * terms["auxk"]
    return f, xhat, terms, total


# ---------------------------------------------------------------------------------------------
# Cases


def base_cfg(arch, **over):
    """The fields every case fixes explicitly, plus the TS defaults (sae/config.ts) the reference assumes."""
    c = {"arch": arch, "d_in": 6, "d_sae": 10}
    c.update(over)
    return c


def jumprelu_thresholds(g, p, x, F, near, eps):
    """Positive thresholds; for the features in `near`, place theta within the STE window of one
    pre-activation (alternately just above and just below it) so the STE gradients are exercised."""
    theta = (draw(g, [F]).abs() * 0.3 + 0.05).to(torch.float32).to(F64)
    pre = x @ p["W_enc"] + p["b_enc"]
    for n, j in enumerate(near):
        b = int(pre[:, j].argmax())
        theta[j] = f32(float(pre[b, j]) + (0.2 if n % 2 == 0 else -0.2) * eps)
    return theta


def make_case(name, seed):
    g = torch.Generator().manual_seed(seed)
    B, d, F = 5, 6, 10
    ctx = {}
    y = None
    dead = None
    if name.startswith("relu"):
        variant = "plain" if name == "relu_plain" else "decoder_norm"
        cfg_in = base_cfg("relu", l1_variant=variant)
        assumed = {"l1_coefficient": 0.1, "l1_variant": variant, "apply_b_dec_to_input": True}
        p = sae_params(g, d, F, d)
        x = draw(g, [B, d])
        if variant == "decoder_norm":
            ctx["l1Scale"] = 0.5  # sparsity warmup factor s(t)
        ref = ref_relu
    elif name == "gated":
        cfg_in = base_cfg("gated")
        assumed = {"l1_coefficient": 1.0, "apply_b_dec_to_input": True}
        p = {
            "W_enc": draw(g, [d, F], 0.6),
            "W_dec": draw(g, [F, d], 0.5),
            "b_dec": draw(g, [d], 0.2),
            "b_gate": draw(g, [F], 0.2),
            "b_mag": draw(g, [F], 0.2, 0.1),
            "r_mag": draw(g, [F], 0.3),
        }
        x = draw(g, [B, d])
        ref = ref_gated
    elif name.startswith("jumprelu"):
        if name == "jumprelu":  # every JumpReLU default (DL: eps 0.001, target 20, lambda 1)
            cfg_in = base_cfg("jumprelu")
            assumed = {"l1_coefficient": 1.0, "apply_b_dec_to_input": False, "jumprelu_bandwidth": 0.001, "jumprelu_target_l0": 20}
        else:  # SAELens-like bandwidth, a target near the actual L0
            cfg_in = base_cfg("jumprelu", jumprelu_bandwidth=0.05, jumprelu_target_l0=4, l1_coefficient=0.5)
            assumed = {"l1_coefficient": 0.5, "apply_b_dec_to_input": False, "jumprelu_bandwidth": 0.05, "jumprelu_target_l0": 4}
        p = sae_params(g, d, F, d)
        x = draw(g, [B, d])
        p["threshold"] = jumprelu_thresholds(g, p, x, F, [0, 3, 6, 8] if name == "jumprelu" else [1, 5, 7], assumed["jumprelu_bandwidth"])
        ref = ref_jumprelu
    elif name.startswith(("topk", "batchtopk", "matryoshka")):
        arch = name.split("_")[0]
        over = {"k": 3}
        if arch == "matryoshka":
            over["matryoshka_groups"] = [2, 3, 5]
        aux = name.endswith("_auxk")
        if aux:
            over["auxk_k"] = {"topk": 2, "batchtopk": 6, "matryoshka": 2}[arch]
        cfg_in = base_cfg(arch, **over)
        assumed = {"apply_b_dec_to_input": True, "auxk_alpha": 1 / 32}
        if arch == "matryoshka":
            assumed["matryoshka_weights"] = [1 / 3, 1 / 3, 1 / 3]
        p = sae_params(g, d, F, d)
        x = draw(g, [B, d])
        if aux:
            dead = {"topk": [1, 4, 7, 9], "batchtopk": [0, 5, 8], "matryoshka": [1, 3, 6, 9]}[arch]
        if arch == "topk":
            ref = lambda p, x, t, c, cx: ref_topk_family(p, x, t, c, cx)
        elif arch == "batchtopk":
            ref = lambda p, x, t, c, cx: ref_topk_family(p, x, t, c, cx, batch_select=True)
        else:
            ref = lambda p, x, t, c, cx: ref_topk_family(p, x, t, c, cx, batch_select=True, prefixes=(c["matryoshka_groups"], c["matryoshka_weights"]))
    elif name.startswith("transcoder"):
        over = {"k": 3, "d_out": 4}
        aux = name.endswith("_auxk")
        if aux:
            over["auxk_k"] = 3
        cfg_in = base_cfg("transcoder", **over)
        assumed = {"apply_b_dec_to_input": False, "auxk_alpha": 1 / 32}
        p = sae_params(g, d, F, 4)
        x = draw(g, [B, d])
        y = draw(g, [B, 4])
        if aux:
            dead = [2, 3, 5, 8, 9]
        ref = lambda p, x, t, c, cx: ref_topk_family(p, x, t, c, cx)
    elif name.startswith("mlsae"):
        over = {"k": 3}
        aux = name.endswith("_auxk")
        if aux:
            over["auxk_k"] = 2
        cfg_in = base_cfg("mlsae", **over)
        assumed = {"apply_b_dec_to_input": True, "auxk_alpha": 1 / 32}
        p = sae_params(g, d, F, d)
        # Layers of different scale and offset, which standardisation must remove; the last layer's
        # per-token variance (~1e-5) is comparable to eps, so where eps goes is visible. Computed in
        # f32 so the values stay exactly representable there.
        scale = torch.tensor([1.0, 2.0, 0.003], dtype=torch.float32)[None, :, None]
        shift = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float32)[None, :, None]
        x = (torch.randn(4, 3, d, generator=g, dtype=torch.float32) * scale + shift).to(F64)
        if aux:
            dead = [0, 2, 7]
        ref = ref_mlsae
    else:
        raise ValueError(name)

    cfg = resolved(cfg_in)
    for key, v in assumed.items():
        require(cfg[key] == v, f"{name}: assumed {key} = {v}, resolved {cfg[key]}")
    if dead is not None:
        ctx["dead"] = [i in dead for i in range(F)]
        ctx["numDead"] = len(dead)

    leaves = {k: v.clone().requires_grad_(True) for k, v in p.items()}
    f, xhat, terms, total = ref(leaves, x, y if y is not None else x, cfg, ctx)
    names = list(leaves)
    grads = torch.autograd.grad(total, [leaves[k] for k in names])
    for k, gr in zip(names, grads):
        require(bool(torch.isfinite(gr).all()), f"{name}: non-finite gradient for {k}")
    if "auxk" in terms:
        require(float(terms["auxk"]) > 0, f"{name}: AuxK term is zero")
    if name.startswith("jumprelu"):
        require(float(grads[names.index("threshold")].abs().max()) > 0, f"{name}: no threshold gradient")

    inputs = {"x": arr(x)}
    if y is not None:
        inputs["y"] = arr(y)
    return {
        "case": name,
        "arch": cfg_in["arch"],
        "reference": REFERENCES[name.replace("_auxk", "")],
        "config": cfg_in,
        "assumed": assumed,
        "context": ctx,
        "inputs": inputs,
        "params": {k: arr(v) for k, v in p.items()},
        "expected": {
            "code": arr(f),
            "xhat": arr(xhat),
            "terms": {k: float(v) for k, v in terms.items()},
            "total": float(total),
            "grads": {k: arr(gr) for k, gr in zip(names, grads)},
        },
    }


def resolved(cfg_in):
    """The config values the reference uses: explicit fields, else the documented TS defaults."""
    arch = cfg_in["arch"]
    c = dict(cfg_in)
    c.setdefault("d_out", c["d_in"])
    c.setdefault("l1_coefficient", 1.0 if arch in ("jumprelu", "gated") else 0.1)
    c.setdefault("l1_variant", "plain")
    c.setdefault("apply_b_dec_to_input", arch not in ("jumprelu", "transcoder"))
    c.setdefault("jumprelu_bandwidth", 0.001)
    c.setdefault("jumprelu_target_l0", 20)
    c.setdefault("auxk_alpha", 1 / 32)
    c.setdefault("auxk_k", max(1, c["d_in"] // 2))
    if arch == "matryoshka":
        n = len(c["matryoshka_groups"])
        c.setdefault("matryoshka_weights", [1 / n] * n)
    return c


def arr(t):
    t = t.detach().to(F64)
    return {"shape": list(t.shape), "data": [float(v) for v in t.reshape(-1).tolist()]}


REFERENCES = {
    "relu_plain": "DL StandardTrainer: MSE + lambda*s(t)*mean||f||_1",
    "relu_decoder_norm": "DL April update / SAELens: MSE + lambda*s(t)*mean sum_i f_i ||W_dec[i]||",
    "gated": "Rajamanoharan et al. 2024 / DL GatedSAETrainer: aux loss with detached decoder",
    "jumprelu": "DL JumpReluTrainer defaults (eps 0.001, target L0 20, lambda 1); step STE on pre as in SAE-REFERENCE.md",
    "jumprelu_wide": "JumpReLU with eps 0.05 (SAELens bandwidth), target L0 4, lambda 0.5",
    "topk": "Gao et al. 2024 / DL TopKTrainer; AuxK normalised by residual variance, alpha 1/32",
    "batchtopk": "Bussmann et al. 2024 / DL BatchTopKTrainer (training-time batch selection)",
    "matryoshka": "DL MatryoshkaBatchTopKTrainer, loss sum_m w_m MSE_m with uniform w_m = 1/G",
    "transcoder": "DL 'MLP stretcher' as a TopK dictionary from x (d 6) to y (d 4), no b_dec on the input",
    "mlsae": "Lawson et al. 2024 as defined in SAE-REFERENCE.md: LayerNorm-style standardisation, mean per-layer FVU",
}

CASES = [
    ("relu_plain", 101),
    ("relu_decoder_norm", 102),
    ("gated", 103),
    ("jumprelu", 104),
    ("jumprelu_wide", 205),
    ("topk", 106),
    ("topk_auxk", 107),
    ("batchtopk", 108),
    ("batchtopk_auxk", 109),
    ("matryoshka", 110),
    ("matryoshka_auxk", 111),
    ("transcoder", 112),
    ("transcoder_auxk", 413),
    ("mlsae", 114),
    ("mlsae_auxk", 115),
]


def write_fixture(name, fx):
    """fixtures/<name>.json with repr-exact floats; one top-level key per line keeps diffs readable."""
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, f"{name}.json"), "w") as fh:
        fh.write("{\n")
        items = list(fx.items())
        for i, (k, v) in enumerate(items):
            fh.write(f"{json.dumps(k)}: {json.dumps(v, separators=(',', ':'), allow_nan=False)}{',' if i < len(items) - 1 else ''}\n")
        fh.write("}\n")
    print(f"wrote {name}.json")


def main():
    for name, seed in CASES:
        write_fixture(name, make_case(name, seed))


if __name__ == "__main__":
    main()
