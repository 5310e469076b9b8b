#!/usr/bin/env python3
"""Reference fixtures for tests/data_*.test.ts (files the Python tools write).

Writes tests/fixtures/data/ with Debian's numpy and PyTorch (/usr/bin/python3, torch 1.13):
  dl_<arch>/ae.pt + config.json   dictionary_learning state dicts (torch.save of the same
                                  parameter names and shapes as its classes: AutoEncoder,
                                  GatedAutoEncoder, JumpReluAutoEncoder, AutoEncoderTopK,
                                  BatchTopKSAE, MatryoshkaBatchTopKSAE), and the codes and
                                  reconstructions their encode/decode formulas give on inputs x
  sparsify/layers.0/sae.safetensors + cfg.json   a sparsify TopK SAE (safetensors by hand)
  misc.pt                         a state dict with f16, bf16, f64, int64, bool, a transposed
                                  (non-contiguous) view and two tensors sharing one storage
  dl_module_relu/ae.pt + config.json   a real nn.Module's state_dict() (dictionary_learning's
                                  AutoEncoder): an OrderedDict with _metadata, pickled with BUILD
  bad_view.pt, evil.pt            hostile pickles (a view past its storage, os.system), fixed
                                  ZIP timestamps so that reruns are byte-identical
  dl_cache/                       dictionary_learning ActivationCache folders written the way
                                  its save_shard does (np.memmap, .meta JSON with shape and dtype,
                                  bfloat16 stored as int16; config.json; tokens.pt beside them)
  expected.json                   what each must decode to
The dictionary_learning and sparsify packages are not installable here; the formulas below are
the packages' encode/decode written out in torch, and the files are written by torch.save /
numpy.memmap exactly as those packages call them. Run: /usr/bin/python3 tests/golden/data_reference.py
"""
import collections
import json
import os
import struct

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.normpath(os.path.join(HERE, "..", "fixtures", "data"))
os.makedirs(OUT, exist_ok=True)
torch.manual_seed(0)
d, F, k = 6, 10, 3
expected = {}


def rows(t):
    return t.detach().double().reshape(-1).tolist()


def save_dl(name, sd, cfg, x, f, xhat, extra=None):
    folder = os.path.join(OUT, f"dl_{name}")
    os.makedirs(folder, exist_ok=True)
    torch.save(sd, os.path.join(folder, "ae.pt"))
    with open(os.path.join(folder, "config.json"), "w") as fh:
        json.dump({"trainer": cfg}, fh, indent=2)
    expected[f"dl_{name}"] = {"x": rows(x), "f": rows(f), "xhat": rows(xhat), **(extra or {})}


def topk_keep(pre, kk):
    vals, idx = pre.topk(kk, dim=-1)
    return torch.zeros_like(pre).scatter(-1, idx, vals)


x = torch.randn(4, d) * 2 + 0.3
lin = lambda i, o, bias=True: torch.nn.Linear(i, o, bias=bias)  # noqa: E731

# AutoEncoder (standard ReLU): bias = b_dec; encoder Linear(d, F); decoder Linear(F, d, bias=False)
enc, dec, bias = lin(d, F), lin(F, d, False), torch.randn(d) * 0.1
sd = {"bias": bias, "encoder.weight": enc.weight.data, "encoder.bias": enc.bias.data, "decoder.weight": dec.weight.data}
f = torch.relu((x - bias) @ enc.weight.T + enc.bias)
save_dl("relu", sd, {"dict_class": "AutoEncoder", "trainer_class": "StandardTrainer", "activation_dim": d, "dict_size": F}, x, f, f @ dec.weight.T + bias)

# GatedAutoEncoder
enc, dec = lin(d, F, False), lin(F, d, False)
db, rmag, gb, mb = torch.randn(d) * 0.1, torch.randn(F) * 0.1, torch.randn(F) * 0.3, torch.randn(F) * 0.3
sd = {"decoder_bias": db, "r_mag": rmag, "gate_bias": gb, "mag_bias": mb, "encoder.weight": enc.weight.data, "decoder.weight": dec.weight.data}
xe = (x - db) @ enc.weight.T
f = (xe + gb > 0).float() * torch.relu(torch.exp(rmag) * xe + mb)
save_dl("gated", sd, {"dict_class": "GatedAutoEncoder", "trainer_class": "GatedSAETrainer", "activation_dim": d, "dict_size": F}, x, f, f @ dec.weight.T + db)

# JumpReluAutoEncoder: W_enc [d, F], W_dec [F, d], no b_dec on the input
W_enc, W_dec, b_enc, b_dec, th = torch.randn(d, F) * 0.5, torch.randn(F, d) * 0.5, torch.randn(F) * 0.2, torch.randn(d) * 0.1, torch.rand(F) * 0.5
sd = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec, "threshold": th}
pre = x @ W_enc + b_enc
f = pre * (pre > th).float()
save_dl("jumprelu", sd, {"dict_class": "JumpReluAutoEncoder", "trainer_class": "JumpReluTrainer", "activation_dim": d, "dict_size": F}, x, f, f @ W_dec + b_dec)

# AutoEncoderTopK: buffers k (int32) and threshold; encoder Linear(d, F), decoder Linear(F, d, bias=False), b_dec
enc, dec, b_dec = lin(d, F), lin(F, d, False), torch.randn(d) * 0.1
sd = {"k": torch.tensor(k, dtype=torch.int), "threshold": torch.tensor(-1.0), "encoder.weight": enc.weight.data, "encoder.bias": enc.bias.data, "decoder.weight": dec.weight.data, "b_dec": b_dec}
f = topk_keep(torch.relu((x - b_dec) @ enc.weight.T + enc.bias), k)
save_dl("topk", sd, {"dict_class": "AutoEncoderTopK", "trainer_class": "TopKTrainer", "activation_dim": d, "dict_size": F, "k": k}, x, f, f @ dec.weight.T + b_dec)

# BatchTopKSAE at inference: ReLU(pre) kept where above the learned threshold
enc, dec, b_dec, theta = lin(d, F), lin(F, d, False), torch.randn(d) * 0.1, 0.15
sd = {"k": torch.tensor(k, dtype=torch.int), "threshold": torch.tensor(theta), "encoder.weight": enc.weight.data, "encoder.bias": enc.bias.data, "decoder.weight": dec.weight.data, "b_dec": b_dec}
post = torch.relu((x - b_dec) @ enc.weight.T + enc.bias)
f = post * (post > theta).float()
save_dl("batchtopk", sd, {"dict_class": "BatchTopKSAE", "trainer_class": "BatchTopKTrainer", "activation_dim": d, "dict_size": F, "k": k}, x, f, f @ dec.weight.T + b_dec, {"threshold": theta})

# MatryoshkaBatchTopKSAE: W_enc [d, F], W_dec [F, d], buffers k, threshold, group_sizes
W_enc, W_dec, b_enc, b_dec, theta = torch.randn(d, F) * 0.5, torch.randn(F, d) * 0.5, torch.randn(F) * 0.2, torch.randn(d) * 0.1, 0.2
groups = [2, 3, 5]
sd = {"k": torch.tensor(k, dtype=torch.int), "threshold": torch.tensor(theta), "group_sizes": torch.tensor(groups), "W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}
post = torch.relu((x - b_dec) @ W_enc + b_enc)
f = post * (post > theta).float()
save_dl("matryoshka", sd, {"dict_class": "MatryoshkaBatchTopKSAE", "trainer_class": "MatryoshkaBatchTopKTrainer", "activation_dim": d, "dict_size": F, "k": k, "group_sizes": groups}, x, f, f @ W_dec + b_dec, {"threshold": theta, "groups": groups})


# ---- sparsify: sae.safetensors (by hand, as save_model writes the module's parameters) + cfg.json
def safetensors_bytes(tensors):
    header, blobs, pos = {}, [], 0
    for name in sorted(tensors):
        b = tensors[name].contiguous().numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape), "data_offsets": [pos, pos + len(b)]}
        blobs.append(b)
        pos += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


enc, W_dec, b_dec = lin(d, F), torch.randn(F, d) * 0.4, torch.randn(d) * 0.1
folder = os.path.join(OUT, "sparsify", "layers.0")
os.makedirs(folder, exist_ok=True)
with open(os.path.join(folder, "sae.safetensors"), "wb") as fh:
    fh.write(safetensors_bytes({"encoder.weight": enc.weight.data, "encoder.bias": enc.bias.data, "W_dec": W_dec, "b_dec": b_dec}))
with open(os.path.join(folder, "cfg.json"), "w") as fh:
    json.dump({"activation": "topk", "expansion_factor": 2, "normalize_decoder": True, "num_latents": F, "k": k, "multi_topk": False, "skip_connection": False, "transcode": False, "d_in": d}, fh)
f = topk_keep(torch.relu((x - b_dec) @ enc.weight.T + enc.bias), k)
expected["sparsify"] = {"x": rows(x), "f": rows(f), "xhat": rows(f @ W_dec + b_dec)}

# ---- a state dict exercising the reader: dtypes, a strided view, shared storage
base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
misc = {
    "f16": torch.tensor([1.5, -2.25, 65504.0], dtype=torch.float16),
    "bf16": torch.tensor([1.0, -3.140625, 1e30], dtype=torch.bfloat16),
    "f64": torch.tensor([[1e-300, 2.5]], dtype=torch.float64),
    "i64": torch.tensor([-5, 7, 2**31 - 1]),
    "bool": torch.tensor([True, False, True]),
    "transposed": base.t(),
    "shared_a": base,
    "shared_row": base[1],
    "nested": {"w": torch.ones(2)},
    "count": 3,
}
torch.save(misc, os.path.join(OUT, "misc.pt"))
expected["misc"] = {
    "f16": rows(misc["f16"].float()), "bf16": rows(misc["bf16"].float()), "f64": rows(misc["f64"]), "i64": misc["i64"].tolist(),
    "bool": [1, 0, 1], "transposed": rows(base.t()), "transposed_shape": [4, 3], "shared_row": rows(base[1]),
}


# ---- dictionary_learning ActivationCache: shards as save_shard writes them
def save_shard(acts, store_dir, i):
    dtype = acts.dtype
    if dtype == torch.bfloat16:
        acts = acts.view(torch.int16)
    arr = acts.numpy()
    mm = np.memmap(os.path.join(store_dir, f"shard_{i}.memmap"), dtype=arr.dtype, mode="w+", shape=(arr.shape[0], arr.shape[1]))
    mm[:] = arr
    mm.flush()
    del mm
    with open(os.path.join(store_dir, f"shard_{i}.meta"), "w") as fh:
        json.dump({"shape": list(arr.shape), "dtype": str(dtype).replace("torch.", "")}, fh)


cache = os.path.join(OUT, "dl_cache")
tokens = torch.arange(100, 100 + 13, dtype=torch.long)
for sub, dtype in [("resid_out", torch.float32), ("mlp_out", torch.bfloat16)]:
    store_dir = os.path.join(cache, sub)
    os.makedirs(store_dir, exist_ok=True)
    acts = (torch.randn(13, 5) * 3).to(dtype)
    save_shard(acts[:8], store_dir, 0)
    save_shard(acts[8:], store_dir, 1)
    with open(os.path.join(store_dir, "config.json"), "w") as fh:
        json.dump({"batch_size": 4, "context_len": 8, "shard_size": 8, "d_model": 5, "shuffle_shards": False, "io": "out", "total_size": 13, "shard_count": 2, "store_tokens": True}, fh)
    expected[f"dl_cache/{sub}"] = {"values": rows(acts.float()), "shape": [13, 5], "dtype": str(dtype).replace("torch.", "")}
torch.save(tokens, os.path.join(cache, "tokens.pt"))
expected["dl_cache/tokens"] = tokens.tolist()


# ---- a real module's state_dict(): an OrderedDict carrying `_metadata` (per-submodule versions),
# which pickles as collections.OrderedDict() + SETITEMS + BUILD — unlike the plain dicts above.
# Drawn after everything else so that the fixtures above keep their values.
class AutoEncoder(torch.nn.Module):
    """dictionary_learning's AutoEncoder: the same parameters, names and encode/decode."""

    def __init__(self, activation_dim, dict_size):
        super().__init__()
        self.activation_dim, self.dict_size = activation_dim, dict_size
        self.bias = torch.nn.Parameter(torch.randn(activation_dim) * 0.1)
        self.encoder = torch.nn.Linear(activation_dim, dict_size, bias=True)
        self.decoder = torch.nn.Linear(dict_size, activation_dim, bias=False)

    def encode(self, x):
        return torch.relu(self.encoder(x - self.bias))

    def decode(self, f):
        return self.decoder(f) + self.bias


ae = AutoEncoder(d, F)
sd = ae.state_dict()
assert isinstance(sd, collections.OrderedDict) and set(sd._metadata) == {"", "encoder", "decoder"}
with torch.no_grad():
    f = ae.encode(x)
    xhat = ae.decode(f)
save_dl("module_relu", sd, {"dict_class": "AutoEncoder", "trainer_class": "StandardTrainer", "activation_dim": d, "dict_size": F}, x, f, xhat, {
    # Our layout, from the module's own parameters: W_enc [d, F], W_dec [F, d], b_dec = bias.
    "W_enc": rows(ae.encoder.weight.T), "b_enc": rows(ae.encoder.bias), "W_dec": rows(ae.decoder.weight.T), "b_dec": rows(ae.bias),
})


# ---- hostile torch files, pickled by Python's own pickler into a stored zip as torch lays it out:
# a tensor view reaching past its 4-element storage, and a __reduce__ that would run os.system.
import io  # noqa: E402
import pickle  # noqa: E402
import zipfile  # noqa: E402


class _Storage:
    pass


class _BadView:
    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, (_STORAGE, 0, (100,), (1,), False, collections.OrderedDict()))


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


_STORAGE = _Storage()


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        return ("storage", torch.FloatStorage, "0", "cpu", 4) if obj is _STORAGE else None


def hostile(name, obj):
    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump(obj)
    with zipfile.ZipFile(os.path.join(OUT, name), "w", zipfile.ZIP_STORED) as z:
        for entry, data in [("archive/data.pkl", buf.getvalue()), ("archive/data/0", struct.pack("<4f", 1, 2, 3, 4))]:
            # A fixed timestamp (writestr of a bare name stamps the current time): rerunning the
            # script rewrites these files byte for byte.
            info = zipfile.ZipInfo(entry, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o600 << 16
            z.writestr(info, data)


hostile("bad_view.pt", {"w": _BadView()})
hostile("evil.pt", {"w": _Evil()})

with open(os.path.join(OUT, "expected.json"), "w") as fh:
    json.dump(expected, fh, indent=1)
print("wrote", OUT)
