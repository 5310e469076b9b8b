"""GPT-2's forward pass in plain PyTorch (no transformers): the comparison side of
bench/lm_forward.ts. The weights and token ids come from the same counter-based hash as the
TypeScript side (bench/lm_weights.ts), so both sides run the same model on the same tokens
and their logits can be compared. f32, torch.no_grad, one hook's activation kept (the residual
stream after block `hook_layer`), PyTorch's own fused ops (layer_norm, gelu, softmax).

Usage: python3 bench/lm_forward_torch.py layers d heads vocab ctx batch hook_layer threads, then
commands on stdin (see the loop at the end).
"""
import json
import math
import sys
import time

import torch
import torch.nn.functional as F

L, d, H, V, T, B, hook_layer, threads = (int(a) for a in sys.argv[1:9])
torch.set_num_threads(threads)
hd, P = d // H, T

M32 = 0xFFFFFFFF


def hashed(n, seed, center, scale):
    """The same values as lm_weights.ts's hashed(): a 32-bit mix of (index, seed) mapped to
    center + scale·u, u in [-1, 1), computed in f64 and rounded once to f32."""
    out = torch.empty(n, dtype=torch.float32)
    step = 1 << 22
    for lo in range(0, n, step):
        i = torch.arange(lo, min(n, lo + step), dtype=torch.int64)
        x = (i * 0x9E3779B1 + (seed + 1) * 0x85EBCA77) & M32
        x = x ^ (x >> 16)
        x = (x * 0x2C1B3C6D) & M32
        x = x ^ (x >> 13)
        u = (x - 2**31).double() / 2**31
        out[lo : lo + len(i)] = (u * scale + center).float()
    return out


seed = 0


def param(shape, center, scale):
    global seed
    v = hashed(math.prod(shape), seed, center, scale).reshape(shape)
    seed += 1
    return v


wte = param([V, d], 0.0, 0.04)
wpe = param([P, d], 0.0, 0.01)
blocks = []
for _ in range(L):
    blocks.append({
        "ln1": (param([d], 1.0, 0.1), param([d], 0.0, 0.02)),
        "wQkv": param([d, 3 * d], 0.0, 0.04),
        "bQkv": param([3 * d], 0.0, 0.02),
        "wO": param([d, d], 0.0, 0.04),
        "bO": param([d], 0.0, 0.02),
        "ln2": (param([d], 1.0, 0.1), param([d], 0.0, 0.02)),
        "wIn": param([d, 4 * d], 0.0, 0.04),
        "bIn": param([4 * d], 0.0, 0.02),
        "wOut": param([4 * d, d], 0.0, 0.04),
        "bOut": param([d], 0.0, 0.02),
    })
lnF = (param([d], 1.0, 0.1), param([d], 0.0, 0.02))
ids = (hashed(B * T, 999, 0.5, 0.5).double() * V).long().clamp_(0, V - 1).reshape(B, T)

causal = torch.ones(T, T, dtype=torch.bool).tril()


def forward(ids):
    cache = None
    x = wte[ids] + wpe[:T]
    for l, p in enumerate(blocks):
        h = F.layer_norm(x, (d,), *p["ln1"], 1e-5)
        q, k, v = torch.addmm(p["bQkv"], h.reshape(-1, d), p["wQkv"]).split(d, -1)
        q, k, v = (t.reshape(B, T, H, hd).transpose(1, 2) for t in (q, k, v))
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        pattern = scores.masked_fill(~causal, float("-inf")).softmax(-1)
        z = (pattern @ v).transpose(1, 2).reshape(-1, d)
        x = x + torch.addmm(p["bO"], z, p["wO"]).reshape(B, T, d)
        h = F.layer_norm(x, (d,), *p["ln2"], 1e-5)
        post = F.gelu(torch.addmm(p["bIn"], h.reshape(-1, d), p["wIn"]), approximate="tanh")
        x = x + torch.addmm(p["bOut"], post, p["wOut"]).reshape(B, T, d)
        if l == hook_layer:
            cache = x
    return F.layer_norm(x, (d,), *lnF, 1e-5) @ wte.T, cache




def one():
    t0 = time.perf_counter()
    with torch.no_grad():
        out = forward(ids)
    return time.perf_counter() - t0, out


# Driven line by line from stdin, so that the TypeScript side can alternate its forwards with
# ours and both meet the same load on a shared machine: "run" times one forward (printed in ms),
# "probe" prints the probe values, end of input ends the process.
print(json.dumps({"ready": True, "threads": torch.get_num_threads(), "torch": torch.__version__}), flush=True)
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "run":
        print(json.dumps({"ms": one()[0] * 1e3}), flush=True)
    elif cmd == "probe":
        _, (logits, cache) = one()
        # Fixed probe positions (the TypeScript side reads the same ones).
        print(json.dumps({
            "logits": [logits[b % B, (7 * b) % T, (7919 * b) % V].item() for b in range(16)],
            "cache": [cache[b % B, (5 * b) % T, (131 * b) % d].item() for b in range(16)],
        }), flush=True)
