/**
 * One training step of TopK, BatchTopK and ReLU SAEs at d=512, F=8192, batch 2048, k=32 — the
 * library's real trainStep (loss, gradients, constrained Adam, dead tracking) — in tokens/s,
 * beside the same step in PyTorch (bench/sae_train_torch.py, Debian's python3-torch) written
 * densely as the Python references do and sparsely as sparsify does, with both ratios.
 * PyTorch and ours alternate for `--rounds` rounds (each a median of 9 steps after 4 warm-up
 * steps); the figures are the medians over the rounds, printed with the load average.
 *   deno task bench:sae [--json] [--rounds N] [--matmul-precision f32|bf16]
 * (bf16: the encoder matmul through cblas_sbgemm where the library and CPU have it, else f32 and why)
 *   bun bench/sae_train.ts [same]
 */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { loadavg } from "node:os";
import * as t from "../mod.ts";
import { resolveConfig } from "../sae/config.ts";
import { resolveTrainConfig } from "../sae/train/config.ts";
import { msPerTrainStep } from "./train_timer.ts";
import { args, runtime } from "../tensor/platform/runtime.ts";

const argv = args();
const json = argv.includes("--json");
const option = (name: string, fallback: string) => {
  const i = argv.indexOf(name);
  return i >= 0 && i + 1 < argv.length ? argv[i + 1] : fallback;
};
const rounds = Number(option("--rounds", "3"));
if (!(Number.isInteger(rounds) && rounds >= 1)) {
  throw new Error(`--rounds: expected a positive integer, got ${option("--rounds", "")}`);
}
const precision = option("--matmul-precision", "f32");
if (precision !== "f32" && precision !== "bf16") {
  throw new Error(`--matmul-precision: expected f32 or bf16, got ${precision}`);
}
// Ours only: PyTorch's CPU step stays f32. A bf16 that cannot run here falls back to f32 and says why.
const matmul = t.setCpuMatmulPrecision(precision);
const d = 512, F = 8192, B = 2048, k = 32, steps = 9, WARMUP = 4;
const archs = ["topk", "batchtopk", "relu"] as const;
type Arch = (typeof archs)[number];
const FORMS = ["dense", "sparse"] as const;

const x = t.random.normal(t.random.key(1), [B, d]);
async function ours(arch: Arch): Promise<number> {
  const cfg = resolveConfig({ arch, d_in: d, d_sae: F, k });
  const tc = resolveTrainConfig(cfg, {
    steps: 1000,
    batch_size: B,
    geometric_median_init: false,
    normalize_activations: false,
  });
  const ms = await msPerTrainStep(cfg, tc, x, { warmup: WARMUP, steps });
  return (B * 1000) / ms;
}

/** One PyTorch run of every architecture in both formulations: tokens/s by "arch/form". */
function torchRound(): { tps: Map<string, number>; why: string } {
  const tps = new Map<string, number>();
  if (!existsSync("/usr/bin/python3")) {
    return { tps, why: "no /usr/bin/python3 (apt-get install python3-torch)" };
  }
  const script = new URL("./sae_train_torch.py", import.meta.url).pathname;
  const r = spawnSync("/usr/bin/python3", [
    script,
    ...[d, F, B, k, steps].map(String),
    archs.join(","),
    FORMS.join(","),
  ], { encoding: "utf8" });
  if (r.status !== 0) {
    return { tps, why: `python3-torch failed: ${(r.stderr || "").trim().split("\n").pop()}` };
  }
  for (const line of r.stdout.trim().split("\n")) {
    const o = JSON.parse(line);
    tps.set(`${o.arch}/${o.form}`, o.tokens_per_s);
  }
  return { tps, why: "" };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b), m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const load = () => loadavg().map((v) => v.toFixed(2)).join(" ");

const loadBefore = load();
const samples = new Map<string, number[]>();
const push = (key: string, v: number) => samples.set(key, [...(samples.get(key) ?? []), v]);
let why = "";
for (let r = 0; r < rounds; r++) {
  const pt = torchRound();
  why = pt.why;
  for (const [key, v] of pt.tps) push(key, v);
  for (const arch of archs) push(`${arch}/ours`, await ours(arch));
}
x.dispose();
const loadAfter = load();

if (!json) {
  console.log(
    `SAE training step, d=${d} F=${F} batch=${B} k=${k}, median of ${rounds} alternating round(s) (${runtime}; ${t.getBackend().info()})`,
  );
  console.log(`  load average before: ${loadBefore}   after: ${loadAfter}`);
  console.log(
    `  matmul precision (ours): ${matmul.running}${matmul.via ? ` (${matmul.via})` : ""}${
      matmul.reason ? ` (asked ${matmul.asked}: ${matmul.reason})` : ""
    }`,
  );
}
const fig = (key: string) => (samples.has(key) ? median(samples.get(key)!) : null);
for (const arch of archs) {
  const tps = fig(`${arch}/ours`)!;
  const dense = fig(`${arch}/dense`), sparse = fig(`${arch}/sparse`);
  if (json) {
    console.log(JSON.stringify({
      arch,
      tokens_per_s: tps,
      torch_dense: dense,
      torch_sparse: sparse,
      ratio_dense: dense ? tps / dense : null,
      ratio_sparse: sparse ? tps / sparse : null,
      rounds,
      matmul_precision: matmul.running,
      ...(matmul.reason ? { matmul_fallback: matmul.reason } : {}),
      samples: {
        ours: samples.get(`${arch}/ours`),
        dense: samples.get(`${arch}/dense`) ?? null,
        sparse: samples.get(`${arch}/sparse`) ?? null,
      },
      load_before: loadBefore,
      load_after: loadAfter,
      runtime,
    }));
    continue;
  }
  const col = (v: number | null) => (v ? v.toFixed(0).padStart(6) : "   n/a");
  const ratio = (v: number | null) => (v ? (tps / v).toFixed(2) + "x" : "  n/a");
  console.log(
    `  ${arch.padEnd(10)} ours ${col(tps)} tok/s   pytorch dense ${col(dense)} (${
      ratio(dense)
    })   sparse ${col(sparse)} (${ratio(sparse)})${dense ? "" : "   " + why}`,
  );
}
