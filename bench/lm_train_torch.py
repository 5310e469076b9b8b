"""The step of bench/lm_train_profile.ts in PyTorch: a 1-layer GPT-2 layout (d_model 256, 4 heads,
MLP 1024, exact gelu, vocab 4096, context 128, tied head), mean cross-entropy, backward, AdamW.
    /usr/bin/python3 bench/lm_train_torch.py [steps] [batch] [threads]
"""
import sys
import time

import torch

steps = int(sys.argv[1]) if len(sys.argv) > 1 else 6
B = int(sys.argv[2]) if len(sys.argv) > 2 else 16
torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 2)
d, V, T, P, H = 256, 4096, 128, 256, 4
torch.manual_seed(0)


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.ln1, self.ln2 = torch.nn.LayerNorm(d), torch.nn.LayerNorm(d)
        self.qkv, self.o = torch.nn.Linear(d, 3 * d), torch.nn.Linear(d, d)
        self.fc, self.proj = torch.nn.Linear(d, 4 * d), torch.nn.Linear(4 * d, d)

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, 2)
        q, k, v = [z.view(b, t, H, d // H).transpose(1, 2) for z in (q, k, v)]
        att = (q @ k.transpose(-1, -2)) / (d // H) ** 0.5
        causal = torch.triu(torch.ones(t, t, dtype=torch.bool), 1)
        att = att.masked_fill(causal, float("-inf")).softmax(-1)
        x = x + self.o((att @ v).transpose(1, 2).reshape(b, t, d))
        return x + self.proj(torch.nn.functional.gelu(self.fc(self.ln2(x))))


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.wte, self.wpe = torch.nn.Embedding(V, d), torch.nn.Embedding(P, d)
        self.block, self.lnf = Block(), torch.nn.LayerNorm(d)
        for p in self.parameters():
            if p.dim() == 2:
                torch.nn.init.normal_(p, std=0.02)

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        return self.lnf(self.block(x)) @ self.wte.weight.T


model = Model()
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
toks = torch.randint(0, V, (B, T + 1))
times = []
for i in range(2 + steps):
    t0 = time.perf_counter()
    logits = model(toks[:, :-1])
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), toks[:, 1:].reshape(-1))
    opt.zero_grad()
    loss.backward()
    opt.step()
    ms = (time.perf_counter() - t0) * 1000
    if i >= 2:
        times.append(ms)
times.sort()
med = times[len(times) // 2]
print(f"torch {torch.__version__} step (fwd+bwd+AdamW) B={B} T={T}: median {med:.0f} ms, "
      f"{B * T / med * 1000:.0f} tok/s ({torch.get_num_threads()} threads)")
