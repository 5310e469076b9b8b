"""PyTorch on the same GPU, for bench/cuda_bench.ts: matmul n^3 in f32 (TF32 off), TF32 and bf16,
and one TopK SAE training step per config written densely as the Python references do it
(encoder matmul, top-k scattered into a dense code, dense decoder matmul, MSE, backward, Adam).

Prints JSON lines: {"what": "matmul", "mode", "n", "tflops"} and {"what": "sae", "d", "F", "B", "k", "tokens_per_s", "ms"}.
Usage: python3 bench/cuda_bench_torch.py N d,F,B,k [d,F,B,k ...]
"""
import json
import sys
import time

import torch

dev = "cuda"
n = int(sys.argv[1])
configs = [tuple(int(v) for v in c.split(",")) for c in sys.argv[2:]]
torch.manual_seed(0)


def timed(fn, warm=3, reps=10):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / reps


for mode in ("f32", "tf32", "bf16"):
    torch.backends.cuda.matmul.allow_tf32 = mode == "tf32"
    dt = torch.bfloat16 if mode == "bf16" else torch.float32
    a = torch.randn(n, n, device=dev, dtype=dt)
    b = torch.randn(n, n, device=dev, dtype=dt)
    s = timed(lambda: a @ b)
    print(json.dumps({"what": "matmul", "mode": mode, "n": n, "tflops": 2 * n**3 / s / 1e12}), flush=True)
    del a, b
torch.backends.cuda.matmul.allow_tf32 = False

for d, F, B, k in configs:
    W_dec = torch.randn(F, d, device=dev)
    W_dec = W_dec / W_dec.norm(dim=-1, keepdim=True)
    p = {
        "W_enc": W_dec.T.clone().requires_grad_(),
        "b_enc": torch.zeros(F, device=dev, requires_grad=True),
        "W_dec": W_dec.clone().requires_grad_(),
        "b_dec": torch.zeros(d, device=dev, requires_grad=True),
    }
    opt = torch.optim.Adam(p.values(), lr=1e-4)
    x = torch.randn(B, d, device=dev)

    def step():
        pre = torch.relu((x - p["b_dec"]) @ p["W_enc"] + p["b_enc"])
        v, i = pre.topk(k, dim=-1, sorted=False)
        f = torch.zeros_like(pre).scatter(-1, i, v)
        loss = (x - (f @ p["W_dec"] + p["b_dec"])).pow(2).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    s = timed(step, warm=3, reps=5)
    print(json.dumps({"what": "sae", "d": d, "F": F, "B": B, "k": k, "tokens_per_s": B / s, "ms": s * 1e3}), flush=True)
    del p, opt, x
    torch.cuda.empty_cache()
