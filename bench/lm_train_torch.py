"""The training step of a GPT-2 (forward, backward, clip, AdamW) in plain PyTorch: the comparison
side of bench/lm_train.ts. Same shape and recipe (exact GELU, tied head, AdamW 0.9/0.95 with decay
on matrices, clip 1.0), f32, its own random weights and tokens. Reads one command per stdin line:
"step" answers {"ms": …, "loss": …}; EOF ends it.

Usage: python3 bench/lm_train_torch.py layers d heads vocab ctx batch threads
"""
import json
import math
import sys
import time

import torch
import torch.nn.functional as F

L, d, H, V, T, B, threads = (int(a) for a in sys.argv[1:8])
torch.set_num_threads(threads)
torch.manual_seed(0)
hd = d // H


def w(*shape, std=0.02):
    return (torch.randn(*shape) * std).requires_grad_(True)


P = {"wte": w(V, d), "wpe": w(T, d)}
for l in range(L):
    P.update({
        f"{l}.ln1w": torch.ones(d, requires_grad=True), f"{l}.ln1b": torch.zeros(d, requires_grad=True),
        f"{l}.qkv": w(d, 3 * d), f"{l}.bqkv": torch.zeros(3 * d, requires_grad=True),
        f"{l}.o": w(d, d), f"{l}.bo": torch.zeros(d, requires_grad=True),
        f"{l}.ln2w": torch.ones(d, requires_grad=True), f"{l}.ln2b": torch.zeros(d, requires_grad=True),
        f"{l}.fc": w(d, 4 * d), f"{l}.bfc": torch.zeros(4 * d, requires_grad=True),
        f"{l}.proj": w(4 * d, d), f"{l}.bproj": torch.zeros(d, requires_grad=True),
    })
P["lnfw"], P["lnfb"] = torch.ones(d, requires_grad=True), torch.zeros(d, requires_grad=True)
causal = torch.tril(torch.ones(T, T, dtype=torch.bool))


def forward(ids):
    x = P["wte"][ids] + P["wpe"][:T]
    for l in range(L):
        u = F.layer_norm(x, (d,), P[f"{l}.ln1w"], P[f"{l}.ln1b"])
        q, k, v = (t.reshape(B, T, H, hd).transpose(1, 2) for t in (u @ P[f"{l}.qkv"] + P[f"{l}.bqkv"]).split(d, -1))
        a = torch.softmax((q @ k.transpose(-1, -2) / math.sqrt(hd)).masked_fill(~causal, float("-inf")), -1)
        x = x + (a @ v).transpose(1, 2).reshape(B, T, d) @ P[f"{l}.o"] + P[f"{l}.bo"]
        u = F.layer_norm(x, (d,), P[f"{l}.ln2w"], P[f"{l}.ln2b"])
        x = x + F.gelu(u @ P[f"{l}.fc"] + P[f"{l}.bfc"]) @ P[f"{l}.proj"] + P[f"{l}.bproj"]
    return F.layer_norm(x, (d,), P["lnfw"], P["lnfb"]) @ P["wte"].T


params = list(P.values())
opt = torch.optim.AdamW([{"params": [p for p in params if p.ndim >= 2], "weight_decay": 0.1},
                         {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}],
                        lr=1e-3, betas=(0.9, 0.95), eps=1e-8)
data = torch.randint(0, V, (1 << 16,))
print(json.dumps({"threads": torch.get_num_threads(), "torch": torch.__version__}), flush=True)
step = 0
for line in sys.stdin:
    if line.strip() != "step":
        continue
    starts = torch.randint(0, len(data) - T - 1, (B,))
    win = torch.stack([data[s:s + T + 1] for s in starts])
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(forward(win[:, :T]).reshape(-1, V), win[:, 1:].reshape(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    ms = (time.perf_counter() - t0) * 1000
    print(json.dumps({"ms": ms, "loss": loss.item()}), flush=True)
