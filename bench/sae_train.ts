/**
 * One training step of TopK, BatchTopK and ReLU SAEs at d=512, F=8192, batch 2048, k=32 — the
 * library's real trainStep (loss, gradients, constrained Adam, dead tracking) — in tokens/s,
 * beside the same step written densely in PyTorch (bench/sae_train_torch.py, Debian's
 * python3-torch) run from this process on the same machine, with the ratio.
 *   deno task bench:sae [--json]        bun bench/sae_train.ts [--json]
 */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import * as t from "../mod.ts";
import { resolveConfig } from "../sae/config.ts";
import { resolveTrainConfig } from "../sae/train/config.ts";
import { msPerTrainStep } from "./train_timer.ts";
import { args, runtime } from "../tensor/platform/runtime.ts";

const argv = args();
const json = argv.includes("--json");
const d = 512, F = 8192, B = 2048, k = 32, steps = 9, WARMUP = 4;
const archs = ["topk", "batchtopk", "relu"] as const;

async function ours(arch: (typeof archs)[number]): Promise<number> {
  const cfg = resolveConfig({ arch, d_in: d, d_sae: F, k });
  const tc = resolveTrainConfig(cfg, {
    steps: 1000,
    batch_size: B,
    geometric_median_init: false,
    normalize_activations: false,
  });
  const x = t.random.normal(t.random.key(1), [B, d]);
  const ms = await msPerTrainStep(cfg, tc, x, { warmup: WARMUP, steps });
  x.dispose();
  return (B * 1000) / ms;
}

const torch = new Map<string, number>();
let why = "";
if (existsSync("/usr/bin/python3")) {
  const r = spawnSync("/usr/bin/python3", [
    new URL("./sae_train_torch.py", import.meta.url).pathname,
    String(d),
    String(F),
    String(B),
    String(k),
    String(steps),
    archs.join(","),
  ], { encoding: "utf8" });
  if (r.status === 0) {
    for (const line of r.stdout.trim().split("\n")) {
      torch.set(JSON.parse(line).arch, JSON.parse(line).tokens_per_s);
    }
  } else why = `python3-torch failed: ${(r.stderr || "").trim().split("\n").pop()}`;
} else why = "no /usr/bin/python3 (apt-get install python3-torch)";

if (!json) {
  console.log(
    `SAE training step, d=${d} F=${F} batch=${B} k=${k} (${runtime}; ${t.getBackend().info()})`,
  );
}
for (const arch of archs) {
  const tps = await ours(arch);
  const pt = torch.get(arch);
  if (json) {
    console.log(
      JSON.stringify({
        arch,
        tokens_per_s: tps,
        torch_tokens_per_s: pt ?? null,
        ratio: pt ? tps / pt : null,
        runtime,
      }),
    );
  } else {console.log(
      `  ${arch.padEnd(10)} ours ${tps.toFixed(0).padStart(6)} tok/s   pytorch ${
        pt ? pt.toFixed(0).padStart(6) : "   n/a"
      } tok/s   ratio ${pt ? (tps / pt).toFixed(2) + "x" : why}`,
    );}
}
