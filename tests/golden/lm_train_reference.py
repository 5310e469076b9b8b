#!/usr/bin/env python3
"""Reference fixtures for the language-model training step (issue 16, `sae lm train`).

Debian's PyTorch (/usr/bin/python3, torch 1.13), no `transformers`, no `safetensors` package (the
files are written by hand, as lm_reference.py does). A tiny GPT-2 (2 layers, d 32, 4 heads,
vocabulary 64, context 16, exact erf GELU, tied head) with its own random weights takes three
training steps on one batch [4, 17] (inputs = columns 0..15, targets = columns 1..16), the recipe
of LM-REFERENCE.md's end written in plain torch from that text:

  loss  mean next-token cross-entropy (F.cross_entropy over the B*T positions)
  clip  torch.nn.utils.clip_grad_norm_ at CLIP (the script refuses weights whose gradients would
        not be clipped at every step)
  opt   torch.optim.AdamW, betas (0.9, 0.95), eps 1e-8, weight decay 0.1 on the matrices only
        (wte, wpe, c_attn, c_proj, c_fc, mlp c_proj; not biases, not LayerNorm)
  lr    linear warmup over WARMUP steps from 0, then cosine to MIN_LR at STEPS
        (lr_t = t/warmup·peak for t < warmup, else min + ½(1+cos(π·(t−warmup)/(steps−warmup)))·(peak−min))

Everything runs in float64 from f32-drawn weights; results are stored as F32, so an f32
implementation matches at ~1e-4 relative. Rerun (byte-identical output):

    /usr/bin/python3 tests/golden/lm_train_reference.py

Writes tests/golden/fixtures/lm_train/:
  model/config.json, model/model.safetensors   the initial weights, Hugging Face GPT-2 layout
                                              (Conv1D [in, out], `transformer.` prefix, tied head)
  reference.safetensors                       `tokens` I32 [4, 17]; `lr`, `loss`, `grad_norm`
                                              F32 [3] (per step, loss and norm before clipping);
                                              `grad.<name>` the step-0 gradients; `after.<name>`
                                              the weights after the three steps
  reference.json                              the hyperparameters above
"""
import json
import math
import os
import struct

import torch
import torch.nn.functional as F

torch.manual_seed(16)
torch.set_num_threads(1)
L, d, H, V, T, B = 2, 32, 4, 64, 16, 4
hd = d // H
PEAK, MIN_LR, WARMUP, STEPS, N_STEPS = 1e-2, 1e-3, 1, 4, 3
CLIP, WD, BETAS, EPS = 1.0, 0.1, (0.9, 0.95), 1e-8
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "lm_train")


def draw(shape, center, scale):
    """f32-drawn values widened to f64, so both sides start from the same numbers."""
    return (torch.randn(shape, dtype=torch.float32) * scale + center).double()


# Weights larger than nanoGPT's init so that the gradient norm exceeds CLIP at every step.
W = {"wte.weight": draw([V, d], 0, 0.3), "wpe.weight": draw([T, d], 0, 0.1)}
for l in range(L):
    p = f"h.{l}."
    W[p + "ln_1.weight"] = draw([d], 1, 0.1)
    W[p + "ln_1.bias"] = draw([d], 0, 0.05)
    W[p + "attn.c_attn.weight"] = draw([d, 3 * d], 0, 0.2)
    W[p + "attn.c_attn.bias"] = draw([3 * d], 0, 0.05)
    W[p + "attn.c_proj.weight"] = draw([d, d], 0, 0.2)
    W[p + "attn.c_proj.bias"] = draw([d], 0, 0.05)
    W[p + "ln_2.weight"] = draw([d], 1, 0.1)
    W[p + "ln_2.bias"] = draw([d], 0, 0.05)
    W[p + "mlp.c_fc.weight"] = draw([d, 4 * d], 0, 0.2)
    W[p + "mlp.c_fc.bias"] = draw([4 * d], 0, 0.05)
    W[p + "mlp.c_proj.weight"] = draw([4 * d, d], 0, 0.1)
    W[p + "mlp.c_proj.bias"] = draw([d], 0, 0.05)
W["ln_f.weight"] = draw([d], 1, 0.1)
W["ln_f.bias"] = draw([d], 0, 0.05)
NAMES = list(W.keys())
tokens = torch.randint(0, V, (B, T + 1), dtype=torch.int32)
initial = {k: v.clone() for k, v in W.items()}
params = {k: v.clone().requires_grad_(True) for k, v in W.items()}


def layer_norm(x, w, b):
    mu = x.mean(-1, keepdim=True)
    c = x - mu
    return c / torch.sqrt((c * c).mean(-1, keepdim=True) + 1e-5) * w + b


def forward(P, ids):
    Tn = ids.shape[1]
    x = P["wte.weight"][ids.long()] + P["wpe.weight"][:Tn]
    causal = torch.tril(torch.ones(Tn, Tn, dtype=torch.bool))
    for l in range(L):
        p = f"h.{l}."
        u = layer_norm(x, P[p + "ln_1.weight"], P[p + "ln_1.bias"])
        qkv = u @ P[p + "attn.c_attn.weight"] + P[p + "attn.c_attn.bias"]
        q, k, v = (t.reshape(B, Tn, H, hd).transpose(1, 2) for t in qkv.split(d, -1))
        s = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        a = torch.softmax(s.masked_fill(~causal, float("-inf")), -1)
        z = (a @ v).transpose(1, 2).reshape(B, Tn, d)
        x = x + z @ P[p + "attn.c_proj.weight"] + P[p + "attn.c_proj.bias"]
        u = layer_norm(x, P[p + "ln_2.weight"], P[p + "ln_2.bias"])
        h = F.gelu(u @ P[p + "mlp.c_fc.weight"] + P[p + "mlp.c_fc.bias"])  # exact erf
        x = x + h @ P[p + "mlp.c_proj.weight"] + P[p + "mlp.c_proj.bias"]
    return layer_norm(x, P["ln_f.weight"], P["ln_f.bias"]) @ P["wte.weight"].T


def lr_at(t):
    if t < WARMUP:
        return PEAK * t / WARMUP
    r = (t - WARMUP) / (STEPS - WARMUP)
    return MIN_LR + 0.5 * (1 + math.cos(math.pi * r)) * (PEAK - MIN_LR)


decay = [params[k] for k in NAMES if params[k].ndim >= 2]
no_decay = [params[k] for k in NAMES if params[k].ndim < 2]
opt = torch.optim.AdamW(
    [{"params": decay, "weight_decay": WD}, {"params": no_decay, "weight_decay": 0.0}],
    lr=PEAK, betas=BETAS, eps=EPS,
)
inputs, targets = tokens[:, :T], tokens[:, 1:].long()
lrs, losses, norms, grads0 = [], [], [], None
for step in range(N_STEPS):
    lr = lr_at(step)
    for g in opt.param_groups:
        g["lr"] = lr
    opt.zero_grad()
    logits = forward(params, inputs)
    loss = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1))
    loss.backward()
    if grads0 is None:
        grads0 = {k: params[k].grad.detach().clone() for k in NAMES}
    norm = torch.nn.utils.clip_grad_norm_([params[k] for k in NAMES], CLIP)
    assert norm.item() > CLIP * 1.5, f"step {step}: gradient norm {norm.item()} would not clip"
    opt.step()
    lrs.append(lr)
    losses.append(loss.item())
    norms.append(norm.item())
after = {k: params[k].detach() for k in NAMES}


def write_safetensors(path, tensors, meta=None):
    names = sorted(tensors)
    header, blobs, pos = {}, [], 0
    if meta:
        header["__metadata__"] = meta
    for n in names:
        t = tensors[n].contiguous()
        dt = {torch.float32: "F32", torch.int32: "I32"}[t.dtype]
        raw = t.numpy().tobytes()
        header[n] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [pos, pos + len(raw)]}
        blobs.append(raw)
        pos += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b_ in blobs:
            f.write(b_)


f32 = lambda t: t.float()
os.makedirs(os.path.join(OUT, "model"), exist_ok=True)
with open(os.path.join(OUT, "model", "config.json"), "w") as f:
    json.dump({
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": V,
        "n_positions": T, "n_embd": d, "n_layer": L, "n_head": H, "n_inner": None,
        "activation_function": "gelu", "layer_norm_epsilon": 1e-5, "tie_word_embeddings": True,
    }, f, indent=2)
    f.write("\n")
write_safetensors(os.path.join(OUT, "model", "model.safetensors"),
                  {"transformer." + k: f32(v) for k, v in initial.items()}, {"format": "pt"})
ref = {"tokens": tokens, "lr": torch.tensor(lrs, dtype=torch.float32),
       "loss": torch.tensor(losses, dtype=torch.float32),
       "grad_norm": torch.tensor(norms, dtype=torch.float32)}
ref.update({"grad." + k: f32(v) for k, v in grads0.items()})
ref.update({"after." + k: f32(v) for k, v in after.items()})
write_safetensors(os.path.join(OUT, "reference.safetensors"), ref)
with open(os.path.join(OUT, "reference.json"), "w") as f:
    json.dump({"peak_lr": PEAK, "min_lr": MIN_LR, "warmup": WARMUP, "steps": STEPS,
               "n_steps": N_STEPS, "clip": CLIP, "weight_decay": WD, "betas": list(BETAS),
               "eps": EPS, "batch": B, "context": T, "torch": torch.__version__}, f, indent=2)
    f.write("\n")
print(f"wrote {OUT}: losses {losses}, grad norms {norms}, lrs {lrs}")
