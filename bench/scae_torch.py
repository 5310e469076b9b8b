"""The SCAE pruned pass the reference's way, in PyTorch: the comparison side of bench/scae.ts.

Reads the frozen run, dictionaries and connections bench/scae.ts wrote (one safetensors file) and,
module by module in model order, computes each downstream pre-activation with DENSE virtual
weights times a 0/1 connection mask (jacobcd52's SCAE fork): V = c(W_dec_up) W_enc_down [F_up,
F_down] for MLP modules, V_h = c(W_dec_up) W_OV_h W_enc_down [H, F_up, F_down] mixed by the frozen
pattern for attention modules; embedding and upstream b_dec through the same path; top-k, ReLU,
decode. Loss = sum of per-module FVU + CE of unembed(ln_final(embed + sum recon)). f32.
One command per stdin line: "fwd" (no grad) answers {"ms"}, "step" (loss, backward, Adam) answers
{"ms", "loss"}, "mem" answers {"setup_mib", "peak_mib"} (VmHWM); EOF ends it.

Usage: python3 bench/scae_torch.py FILE k threads lr
"""
import json
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as Fn

path, K, threads, LR = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
torch.set_num_threads(threads)
DT = {"F32": np.float32, "I32": np.int32}


def read_safetensors(p):
    with open(p, "rb") as fh:
        raw = fh.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {})
    out = {}
    for name, h in header.items():
        a, b = h["data_offsets"]
        arr = np.frombuffer(raw[8 + n + a:8 + n + b], dtype=DT[h["dtype"]]).reshape(h["shape"])
        out[name] = torch.from_numpy(arr.copy())
    return out, meta


def vm_hwm_mib():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


ts, meta = read_safetensors(path)
tokens = ts["tokens"].long()
B, T = tokens.shape
N = B * T
embed, wte, lnf_w, lnf_b = ts["embed"], ts["wte"], ts["lnf_w"], ts["lnf_b"]
mods = [n[len("scale:"):] for n in ts if n.startswith("scale:")]
order = {"attn": 0, "mlp": 1}
mods.sort(key=lambda n: (int(n.split("_")[1]), order[n.split("_")[0]]))
apply_b_dec = dict(zip(mods, json.loads(meta["apply_b_dec"])))
params = {m: {k: ts[f"{m}.{k}"].clone().requires_grad_(True) for k in ("W_enc", "W_dec", "b_enc", "b_dec")}
          for m in mods}


def upstream(down):
    kind, l = down.split("_")[0], int(down.split("_")[1])
    return [u for u in mods if int(u.split("_")[1]) < l or
            (int(u.split("_")[1]) == l and u.startswith("attn") and kind == "mlp")]


def dense_mask(table, F_up):
    """[F_down, C] ids padded with -1 -> [F_up, F_down] 0/1, as the reference builds its masks."""
    F_down = table.shape[0]
    m = torch.zeros(F_up + 1, F_down)
    ids = table.long().clone()
    ids[ids < 0] = F_up  # padded slots land on a spare row, then dropped
    m[ids, torch.arange(F_down)[:, None].expand_as(ids)] = 1.0
    return m[:F_up]


masks = {}
for m in mods:
    for u in upstream(m):
        key = f"conn:{m}<-{u}"
        if key in ts:
            masks[(m, u)] = dense_mask(ts[key], params[u]["W_dec"].shape[0])


def centre(x):
    return x - x.mean(-1, keepdim=True)


def pruned_pass(P):
    codes, recons = {}, {}
    for m in mods:
        D, kind, l = P[m], m.split("_")[0], int(m.split("_")[1])
        ups = upstream(m)
        s = ts[f"scale:{m}"]
        bias_res = centre(embed + sum((P[u]["b_dec"] for u in ups), torch.zeros(embed.shape[1]))) / s
        b_in = D["b_enc"] - (D["b_dec"] @ D["W_enc"] if apply_b_dec[m] else 0)
        if kind == "mlp":
            pre = bias_res @ D["W_enc"] + b_in
            for u in ups:
                if (m, u) in masks:
                    V = centre(P[u]["W_dec"]) @ D["W_enc"]  # [F_up, F_down], dense
                    pre = pre + (codes[u] / s) @ (V * masks[(m, u)])
        else:
            W_OV, bO, pat = ts[f"wOV:{l}"], ts[f"bO:{l}"], ts[f"pattern:{l}"]
            H = W_OV.shape[0]
            per_head = torch.einsum("nd,hde,ef->hnf", bias_res, W_OV, D["W_enc"])
            for u in ups:
                if (m, u) in masks:
                    V = torch.einsum("ud,hde,ef->huf", centre(P[u]["W_dec"]), W_OV, D["W_enc"])
                    per_head = per_head + torch.einsum("nu,huf->hnf", codes[u] / s, V * masks[(m, u)][None])
            moved = torch.einsum("bhqk,bhkf->bqf", pat, per_head.reshape(H, B, T, -1).transpose(0, 1))
            pre = moved.reshape(N, -1) + bO @ D["W_enc"] + b_in
        top = pre.topk(K, dim=-1)
        f = torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))
        codes[m] = f
        recons[m] = f @ D["W_dec"] + D["b_dec"]
    return recons


def loss_of(recons):
    fvu = [((ts[f"target:{m}"] - recons[m]) ** 2).sum() /
           ((ts[f"target:{m}"] - ts[f"target:{m}"].mean(0)) ** 2).sum() for m in mods]
    resid = embed + sum(recons.values())
    logits = Fn.layer_norm(resid, (resid.shape[1],), lnf_w, lnf_b, 1e-5) @ wte.T
    ce = Fn.cross_entropy(logits.reshape(B, T, -1)[:, :-1].reshape(-1, wte.shape[0]), tokens[:, 1:].reshape(-1))
    return sum(fvu) + ce


leaves = [p for D in params.values() for p in D.values()]
opt = torch.optim.Adam(leaves, lr=LR)
setup = vm_hwm_mib()
print(json.dumps({"threads": torch.get_num_threads(), "torch": torch.__version__}), flush=True)
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "fwd":
        t0 = time.perf_counter()
        with torch.no_grad():
            pruned_pass(params)
        print(json.dumps({"ms": (time.perf_counter() - t0) * 1000}), flush=True)
    elif cmd == "step":
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_of(pruned_pass(params))
        loss.backward()
        opt.step()
        print(json.dumps({"ms": (time.perf_counter() - t0) * 1000, "loss": loss.item()}), flush=True)
    elif cmd == "mem":
        print(json.dumps({"setup_mib": setup, "peak_mib": vm_hwm_mib()}), flush=True)
