/**
 * One step of a dense SAE-like function (x@W_enc + b, relu, @W_dec + b, squared error, backward,
 * Adam) at d=512, F=8192, batch 2048, in tokens/s, beside the same step in PyTorch (Debian's
 * python3-torch, when present) run from this process on the same machine, with the ratio.
 *   deno run -A bench/sae_step.ts [--json]      bun bench/sae_step.ts [--json]
 */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import * as t from "../mod.ts";
import { args, runtime } from "../tensor/platform/runtime.ts";

const d = 512, F = 8192, B = 2048, steps = 5;
const json = args().includes("--json");

const [k1, k2, k3] = t.random.split(t.random.key(0), 3);
type P = { W_enc: t.Tensor; b_enc: t.Tensor; W_dec: t.Tensor; b_dec: t.Tensor };
let params: P = {
  W_enc: t.random.normal(k1, [d, F], { std: 0.01 }),
  b_enc: t.zeros([F]),
  W_dec: t.random.normal(k2, [F, d], { std: 0.01 }),
  b_dec: t.zeros([d]),
};
const x = t.random.normal(k3, [B, d]);
const opt = t.adam({ lr: 1e-4 });
let state = opt.init(params);
const lossGrad = t.valueAndGrad((p: P, x: t.Tensor) => {
  const f = t.relu(t.add(t.matmul(t.sub(x, p.b_dec), p.W_enc), p.b_enc));
  const xhat = t.add(t.matmul(f, p.W_dec), p.b_dec);
  return t.mean(t.sum(t.square(t.sub(x, xhat)), -1));
});

function step(): void {
  const next = t.tidy(() => {
    const [, g] = lossGrad(params, x);
    const [u, s] = opt.update(g, state, params);
    return { p: t.applyUpdates(params, u), s };
  });
  t.dispose([params, state]);
  params = next.p;
  state = next.s;
}

// Warm-up: the kernels' long loops reach the optimising JIT tier only after a few steps.
for (let i = 0; i < 4; i++) step();
const t0 = performance.now();
for (let i = 0; i < steps; i++) step();
const ms = (performance.now() - t0) / steps;
const ours = { tokens_per_s: (B * 1000) / ms, ms_per_step: ms };

let torch: { tokens_per_s: number; ms_per_step: number; threads: number; torch: string } | null =
  null;
let why = "";
const py = "/usr/bin/python3";
if (existsSync(py)) {
  const script = new URL("./sae_train_torch.py", import.meta.url).pathname;
  const r = spawnSync(py, [script, String(d), String(F), String(B), "0", String(steps), "dense"], {
    encoding: "utf8",
  });
  if (r.status === 0) torch = JSON.parse(r.stdout.trim().split("\n").pop()!);
  else why = `python3-torch failed: ${(r.stderr || "").trim().split("\n").pop()}`;
} else why = "no /usr/bin/python3 (apt-get install python3-torch)";

if (json) {
  console.log(
    JSON.stringify({
      bench: "dense_sae_step",
      runtime,
      d,
      F,
      batch: B,
      ...ours,
      torch,
      ratio: torch ? ours.tokens_per_s / torch.tokens_per_s : null,
    }),
  );
} else {
  console.log(`dense SAE step d=${d} F=${F} batch=${B} (${runtime}, ${t.getBackend().info()})`);
  console.log(`  ours:    ${ours.tokens_per_s.toFixed(0)} tokens/s (${ms.toFixed(0)} ms/step)`);
  if (torch) {
    console.log(
      `  pytorch: ${torch.tokens_per_s.toFixed(0)} tokens/s (${
        torch.ms_per_step.toFixed(0)
      } ms/step, ${torch.threads} threads, torch ${torch.torch})`,
    );
    console.log(`  ratio ours/pytorch: ${(ours.tokens_per_s / torch.tokens_per_s).toFixed(2)}x`);
  } else console.log(`  pytorch: not run (${why})`);
}
