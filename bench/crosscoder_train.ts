/**
 * One training step of a BatchTopK CrossCoder and of a DFC at L=2, d=512, F=8192, batch 2048,
 * k=32 — the library's real trainStep (loss, sparse gradients, gradient masks, Adam, dead
 * tracking, θ) — in tokens/s, beside the same step written densely in PyTorch
 * (bench/crosscoder_train_torch.py) run from this process on the same machine. The DFC's gradient
 * masking is timed on its own (maskGradients on gradient-shaped records, as the step calls it) and
 * reported as a share of the DFC step.
 *   deno run -A --v8-flags=--no-maglev bench/crosscoder_train.ts [--json] [--steps N]
 *   bun bench/crosscoder_train.ts [--json]
 */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import * as t from "../mod.ts";
import { resolveConfig } from "../sae/config.ts";
import { maskGradients } from "../sae/crosscoder/grad_mask.ts";
import { resolveTrainConfig } from "../sae/train/config.ts";
import { msPerTrainStep } from "./train_timer.ts";
import { dfcPartition } from "../sae/arch/registry.ts";
import { args, runtime } from "../tensor/platform/runtime.ts";

const argv = args();
const json = argv.includes("--json");
const stepsAt = argv.indexOf("--steps");
const L = 2, d = 512, F = 8192, B = 2048, k = 32, WARMUP = 3, share = 0.05;
const steps = stepsAt >= 0 ? Number(argv[stepsAt + 1]) : 4;
const archs = ["batchtopk-crosscoder", "dfc"] as const;

async function ours(arch: (typeof archs)[number]): Promise<{ tps: number; ms: number }> {
  const cfg = resolveConfig({
    arch,
    d_in: d,
    d_sae: F,
    k,
    n_inputs: L,
    dfc_shares: [share, share],
  });
  const tc = resolveTrainConfig(cfg, {
    steps: 1000,
    batch_size: B,
    geometric_median_init: false,
    normalize_activations: false,
  });
  const x = t.random.normal(t.random.key(1), [B, L, d]);
  const ms = await msPerTrainStep(cfg, tc, x, { warmup: WARMUP, steps });
  x.dispose();
  return { tps: (B * 1000) / ms, ms };
}

/** Milliseconds per maskGradients call on a [L, d, F] + [L, F, d] gradient record (masks built per call, as in trainStep). */
async function maskMs(): Promise<number> {
  const cfg = resolveConfig({
    arch: "dfc",
    d_in: d,
    d_sae: F,
    k,
    n_inputs: L,
    dfc_shares: [share, share],
  });
  const p = dfcPartition(cfg)!;
  const g = {
    W_enc: t.random.normal(t.random.key(2), [L, d, F]),
    W_dec: t.random.normal(t.random.key(3), [L, F, d]),
    b_enc: t.zeros([F]),
    b_dec: t.zeros([L, d]),
  };
  const once = async () => {
    const m = maskGradients(g, p);
    // The CPU backend computes eagerly; one element read back forces it on async backends (reading
    // back all of it would time a 67 MB copy that is not the masking's).
    await t.sliceAxis(t.reshape(m.W_dec, [-1]), 0, 0, 1).data();
    t.dispose([m.W_enc, m.W_dec]);
  };
  for (let i = 0; i < 3; i++) await once();
  const reps = 10, t0 = performance.now();
  for (let i = 0; i < reps; i++) await once();
  const ms = (performance.now() - t0) / reps;
  t.dispose(g);
  return ms;
}

const torch = new Map<string, { tokens_per_s: number; ms_per_step: number; mask_ms: number }>();
let why = "";
if (existsSync("/usr/bin/python3")) {
  const r = spawnSync("/usr/bin/python3", [
    new URL("./crosscoder_train_torch.py", import.meta.url).pathname,
    String(L),
    String(d),
    String(F),
    String(B),
    String(k),
    String(steps),
    String(share),
  ], { encoding: "utf8" });
  if (r.status === 0) {
    for (const line of r.stdout.trim().split("\n")) {
      torch.set(JSON.parse(line).arch, JSON.parse(line));
    }
  } else why = `python3-torch failed: ${(r.stderr || "").trim().split("\n").pop()}`;
} else why = "no /usr/bin/python3 (apt-get install python3-torch)";

if (!json) {
  console.log(
    `crosscoder training step, L=${L} d=${d} F=${F} batch=${B} k=${k}, DFC shares ${share}/${share} (${runtime}; ${t.getBackend().info()})`,
  );
}
const results: Record<string, { tps: number; ms: number }> = {};
for (const arch of archs) {
  const r = (results[arch] = await ours(arch));
  const pt = torch.get(arch);
  if (json) {
    console.log(
      JSON.stringify({
        arch,
        tokens_per_s: r.tps,
        ms_per_step: r.ms,
        torch_tokens_per_s: pt?.tokens_per_s ?? null,
        ratio: pt ? r.tps / pt.tokens_per_s : null,
        runtime,
      }),
    );
  } else {console.log(
      `  ${arch.padEnd(21)} ours ${r.tps.toFixed(0).padStart(6)} tok/s (${
        r.ms.toFixed(0)
      } ms/step)   pytorch ${
        pt ? pt.tokens_per_s.toFixed(0).padStart(6) : "   n/a"
      } tok/s   ratio ${pt ? (r.tps / pt.tokens_per_s).toFixed(2) + "x" : why}`,
    );}
}
const mask = await maskMs();
const share_ = mask / results.dfc.ms;
const ptMask = torch.get("dfc")?.mask_ms;
if (json) {
  console.log(
    JSON.stringify({
      what: "dfc gradient masking",
      ms: mask,
      share_of_step: share_,
      torch_mask_ms: ptMask ?? null,
      runtime,
    }),
  );
} else {console.log(
    `  DFC gradient masking ${mask.toFixed(1)} ms = ${
      (100 * share_).toFixed(1)
    }% of a DFC step (target < 10%)${
      ptMask !== undefined ? `; PyTorch masked_fill_ ${ptMask.toFixed(1)} ms` : ""
    }`,
  );}
