"""One training step of TopK, BatchTopK and ReLU SAEs in PyTorch on the CPU, in two formulations:

- "dense", as the Python references (dictionary_learning, SAELens) write it: encoder matmul,
  activation (top-k scattered into a dense code), dense decoder matmul, MSE (+ L1 for ReLU),
  backward, Adam. "dense" as an architecture is the ReLU step without the L1 term
  (bench/sae_step.ts's SAE-like function).
- "sparse", as EleutherAI's sparsify writes the TopK step: a fused encoder (forward relu(x·W_encᵀ +
  b) and top-k; backward: the input gradient as an embedding bag over W_enc's rows, the W_enc and
  b_enc gradients by index_add over the selected rows) and an embedding-bag decoder. BatchTopK uses
  the same pieces with per-row offsets. The step does the same work as the dense one (loss,
  backward, Adam; no decoder projection or clipping), so it is the strongest peer. ReLU has no
  sparse formulation (its code is dense) and is skipped.

Prints one JSON line per (architecture, formulation):
  {"arch", "form", "tokens_per_s", "ms_per_step", "threads", "torch"}.
Usage: python3 bench/sae_train_torch.py [d] [F] [batch] [k] [steps] [archs,comma] [forms,comma]
"""
import json
import os
import sys

from median_step import median_step_seconds

import torch
import torch.nn.functional as Fn

args = sys.argv[1:]
d, F, B, k, steps = (int(a) for a in (args[:5] + ["512", "8192", "2048", "32", "5"][len(args[:5]):]))
archs = (args[5] if len(args) > 5 else "topk,batchtopk,relu").split(",")
forms = (args[6] if len(args) > 6 else "dense").split(",")
torch.set_num_threads(os.cpu_count() or 1)


def make(enc_rows):
    """Parameters (W_enc as [F, d] rows for the sparse form, [d, F] for the dense one) and Adam."""
    torch.manual_seed(0)
    W_dec = torch.randn(F, d)
    W_dec = W_dec / W_dec.norm(dim=-1, keepdim=True)
    p = {
        "W_enc": (W_dec if enc_rows else W_dec.T).clone().requires_grad_(),
        "b_enc": torch.zeros(F, requires_grad=True),
        "W_dec": W_dec.clone().requires_grad_(),
        "b_dec": torch.zeros(d, requires_grad=True),
    }
    return p, torch.optim.Adam(p.values(), lr=1e-4)


def encode_dense(p, x, arch):
    pre = (x - p["b_dec"]) @ p["W_enc"] + p["b_enc"]
    acts = torch.relu(pre)
    if arch in ("relu", "dense"):
        return acts
    if arch == "topk":
        v, i = acts.topk(k, dim=-1, sorted=False)
        return torch.zeros_like(acts).scatter(-1, i, v)
    flat = acts.flatten()
    v, i = flat.topk(k * B, sorted=False)
    return torch.zeros_like(flat).scatter(-1, i, v).reshape(acts.shape)


class FusedEncoder(torch.autograd.Function):
    """Selected relu(x·Wᵀ + b) entries as (values, feature indices, bag offsets); a sparse backward.

    `batch` selects the k·B largest of the whole batch instead of k per row; the entries come out
    in row order with one bag per row (offsets), as embedding_bag wants them.
    """

    @staticmethod
    def forward(ctx, x, W, b, batch):
        pre = Fn.relu(Fn.linear(x, W, b))
        if batch:
            v, flat = pre.flatten().topk(k * B, sorted=False)
            flat, order = flat.sort()
            v = v[order]
            rows, idx = flat // F, flat % F
            counts = torch.bincount(rows, minlength=B)
            offsets = torch.cumsum(counts, 0) - counts
        else:
            v, idx = pre.topk(k, dim=-1, sorted=False)
            v, idx = v.flatten(), idx.flatten()
            rows = torch.arange(B).repeat_interleave(k)
            offsets = torch.arange(0, B * k, k)
        ctx.save_for_backward(x, W, idx, rows, offsets)
        return v, idx, offsets

    @staticmethod
    def backward(ctx, dv, _di, _do):
        x, W, idx, rows, offsets = ctx.saved_tensors
        dx = Fn.embedding_bag(idx, W, offsets, mode="sum", per_sample_weights=dv)
        dW = torch.zeros_like(W).index_add_(0, idx, dv[:, None] * x[rows])
        db = torch.zeros_like(W[:, 0]).index_add_(0, idx, dv)
        return dx, dW, db, None


def step_fn(p, opt, x, arch, form):
    def step():
        if form == "sparse":
            v, idx, offsets = FusedEncoder.apply(x - p["b_dec"], p["W_enc"], p["b_enc"], arch == "batchtopk")
            xhat = Fn.embedding_bag(idx, p["W_dec"], offsets, mode="sum", per_sample_weights=v) + p["b_dec"]
            f = None
        else:
            f = encode_dense(p, x, arch)
            xhat = f @ p["W_dec"] + p["b_dec"]
        loss = (x - xhat).pow(2).sum(-1).mean()
        if arch == "relu":
            loss = loss + 0.1 * f.abs().sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


x = torch.randn(B, d, generator=torch.Generator().manual_seed(1))
for arch in archs:
    for form in forms:
        if form == "sparse" and arch not in ("topk", "batchtopk"):
            continue
        p, opt = make(form == "sparse")
        dt = median_step_seconds(step_fn(p, opt, x, arch, form), steps)  # four warm-up steps, as ours
        print(json.dumps({"arch": arch, "form": form, "tokens_per_s": B / dt, "ms_per_step": dt * 1e3,
                          "threads": torch.get_num_threads(), "torch": torch.__version__}), flush=True)
