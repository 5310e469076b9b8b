"""The dense SAE-like training step of bench/sae_step.ts, in PyTorch on the CPU.

Prints one JSON line: {"tokens_per_s", "ms_per_step", "threads", "torch"}.
Usage: python3 bench/sae_step_torch.py [d] [F] [batch] [steps]
"""
import json
import os
import sys
import time

import torch

d, F, B, steps = (int(a) for a in (sys.argv[1:] + ["512", "8192", "2048", "5"][len(sys.argv) - 1:]))
torch.set_num_threads(os.cpu_count() or 1)
torch.manual_seed(0)
W_enc = (torch.randn(d, F) * 0.01).requires_grad_()
b_enc = torch.zeros(F, requires_grad=True)
W_dec = (torch.randn(F, d) * 0.01).requires_grad_()
b_dec = torch.zeros(d, requires_grad=True)
opt = torch.optim.Adam([W_enc, b_enc, W_dec, b_dec], lr=1e-4)
x = torch.randn(B, d)


def step():
    f = torch.relu((x - b_dec) @ W_enc + b_enc)
    xhat = f @ W_dec + b_dec
    loss = (x - xhat).pow(2).sum(-1).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss


step()
step()
t0 = time.perf_counter()
for _ in range(steps):
    step()
dt = (time.perf_counter() - t0) / steps
print(json.dumps({"tokens_per_s": B / dt, "ms_per_step": dt * 1e3, "threads": torch.get_num_threads(), "torch": torch.__version__}))
