"""One training step of a BatchTopK CrossCoder and of a DFC in PyTorch on the CPU, written densely
as crosscoder_learning / dfc_learning do: per-input encoder einsum, ReLU, top k*B of the
decoder-norm-scaled code scattered into a dense code, per-input decoder einsum, squared error,
backward, (DFC: gradients of forbidden entries zeroed), Adam.

Prints one JSON line per architecture: {"arch", "tokens_per_s", "ms_per_step", "mask_ms", "threads"}.
Usage: python3 bench/crosscoder_train_torch.py [L] [d] [F] [batch] [k] [steps] [share]
"""
import json
import math
import os
import sys
import time

from median_step import median_step_seconds

import torch

args = sys.argv[1:]
defaults = ["2", "512", "8192", "2048", "32", "5", "0.05"]
L, d, F, B, k, steps = (int(a) for a in (args[:6] + defaults[len(args[:6]):6]))
share = float(args[6]) if len(args) > 6 else 0.05
torch.set_num_threads(os.cpu_count() or 1)
torch.manual_seed(0)

n = math.floor(F * share)
forbidden = torch.zeros(L, F, dtype=torch.bool)
for l in range(L):
    for m in range(L):
        if m != l:
            forbidden[l, m * n:(m + 1) * n] = True


def make(dfc):
    W_dec = torch.randn(L, F, d)
    W_dec = W_dec / W_dec.norm(dim=-1, keepdim=True)
    if dfc:
        W_dec[forbidden] = 0
    p = {
        "W_enc": W_dec.permute(0, 2, 1).contiguous().requires_grad_(),
        "b_enc": torch.zeros(F, requires_grad=True),
        "W_dec": W_dec.clone().requires_grad_(),
        "b_dec": torch.zeros(L, d, requires_grad=True),
    }
    return p, torch.optim.Adam(p.values(), lr=1e-4)


x = torch.randn(B, L, d)
enc_mask, dec_mask = forbidden[:, None, :], forbidden[:, :, None]
for arch in ("batchtopk-crosscoder", "dfc"):
    p, opt = make(arch == "dfc")
    mask_s = [0.0]

    def step():
        pre = torch.einsum("bld,ldf->bf", x, p["W_enc"]) + p["b_enc"]
        f = torch.relu(pre)
        w = p["W_dec"].norm(dim=-1).sum(0).detach()
        idx = (f * w).flatten().topk(k * B, sorted=False).indices
        code = torch.zeros_like(f.flatten()).scatter(0, idx, f.flatten()[idx]).reshape(f.shape)
        xhat = torch.einsum("bf,lfd->bld", code, p["W_dec"]) + p["b_dec"]
        loss = (x - xhat).pow(2).sum(dim=(1, 2)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if arch == "dfc":
            t0 = time.perf_counter()
            p["W_enc"].grad.masked_fill_(enc_mask, 0)
            p["W_dec"].grad.masked_fill_(dec_mask, 0)
            mask_s[0] += time.perf_counter() - t0
        opt.step()

    for _ in range(4):  # the same warm-up as the TypeScript side
        step()
    mask_s[0] = 0.0
    dt = median_step_seconds(step, steps, warmup=0)
    print(json.dumps({"arch": arch, "tokens_per_s": B / dt, "ms_per_step": dt * 1e3, "mask_ms": mask_s[0] / steps * 1e3, "threads": torch.get_num_threads(), "torch": torch.__version__}))
