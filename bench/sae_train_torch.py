"""One training step of TopK, BatchTopK and ReLU SAEs in PyTorch on the CPU, written densely as
the Python references (dictionary_learning, SAELens) do: encoder matmul, activation (top-k
scattered into a dense code), dense decoder matmul, MSE (+ L1 for ReLU), backward, Adam.
"dense" is the ReLU step without the L1 term (bench/sae_step.ts's SAE-like function).

Prints one JSON line per architecture: {"arch", "tokens_per_s", "ms_per_step", "threads"}.
Usage: python3 bench/sae_train_torch.py [d] [F] [batch] [k] [steps] [archs,comma,separated]
"""
import json
import os
import sys

from median_step import median_step_seconds

import torch

args = sys.argv[1:]
d, F, B, k, steps = (int(a) for a in (args[:5] + ["512", "8192", "2048", "32", "5"][len(args[:5]):]))
archs = (args[5] if len(args) > 5 else "topk,batchtopk,relu").split(",")
torch.set_num_threads(os.cpu_count() or 1)
torch.manual_seed(0)


def make():
    W_dec = torch.randn(F, d)
    W_dec = W_dec / W_dec.norm(dim=-1, keepdim=True)
    p = {
        "W_enc": W_dec.T.clone().requires_grad_(),
        "b_enc": torch.zeros(F, requires_grad=True),
        "W_dec": W_dec.clone().requires_grad_(),
        "b_dec": torch.zeros(d, requires_grad=True),
    }
    return p, torch.optim.Adam(p.values(), lr=1e-4)


def encode(p, x, arch):
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


x = torch.randn(B, d)
for arch in archs:
    p, opt = make()

    def step():
        f = encode(p, x, arch)
        xhat = f @ p["W_dec"] + p["b_dec"]
        loss = (x - xhat).pow(2).sum(-1).mean()
        if arch == "relu":
            loss = loss + 0.1 * f.abs().sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    dt = median_step_seconds(step, steps)  # four warm-up steps, as on the TypeScript side
    print(json.dumps({"arch": arch, "tokens_per_s": B / dt, "ms_per_step": dt * 1e3, "threads": torch.get_num_threads(), "torch": torch.__version__}))
