/**
 * CUDA benchmarks, ours beside PyTorch on the same GPU in the same call (bench/cuda_bench_torch.py):
 * matmul 8192³ in f32, TF32 and bf16 (target ≥ 90% of PyTorch), and one TopK SAE training step —
 * the library's real trainStep — at d=2304 F=65536 B=4096 k=64 and d=512 F=8192 B=2048 k=32
 * (target ≥ 1.5× PyTorch's dense step), with the floor: our step's dense FLOPs (the encoder
 * matmul, 2·B·d·F) over the f32 matmul rate measured here.
 *   deno run -A --v8-flags=--no-maglev bench/cuda_bench.ts [--n 8192] [--json] [--small]   |   bun bench/cuda_bench.ts
 * (--small: tiny sizes, to check the script itself, e.g. on the CPU emulation of the kernels)
 */
import { spawnSync } from "node:child_process";
import * as t from "../mod.ts";
import { resolveConfig } from "../sae/config.ts";
import { resolveTrainConfig } from "../sae/train/config.ts";
import { initTrainState, stateTensors, trainStep } from "../sae/train/step.ts";
import { args, runtime } from "../tensor/platform/runtime.ts";

const argv = args();
const json = argv.includes("--json");
const small = argv.includes("--small");
const n = small ? 128 : Number(argv[argv.indexOf("--n") + 1] ?? 8192) || 8192;
const CONFIGS: readonly (readonly [number, number, number, number])[] = small
  ? [[32, 256, 64, 8]]
  : [[2304, 65536, 4096, 64], [512, 8192, 2048, 32]];
t.useBackend("cuda");

/** Uniform values from a fast LCG: 67M numbers from Threefry in JS would take longer than the benchmark. */
function filled(shape: number[], seed: number, dtype: t.DType = "f32"): t.Tensor {
  const a = new Float32Array(shape.reduce((x, y) => x * y, 1));
  let s = seed >>> 0;
  for (let i = 0; i < a.length; i++) {
    (s = (Math.imul(s, 1664525) + 1013904223) >>> 0), (a[i] = (s >>> 8) / 2 ** 24 - 0.5);
  }
  const x = t.tensor(a, { shape });
  if (dtype === "f32") return x;
  const c = t.cast(x, dtype);
  x.dispose();
  return c;
}

function timed(fn: () => void, warm: number, reps: number): number {
  for (let i = 0; i < warm; i++) fn();
  t.cudaSynchronize();
  const t0 = performance.now();
  for (let i = 0; i < reps; i++) fn();
  t.cudaSynchronize();
  return (performance.now() - t0) / 1000 / reps;
}

const ours: Record<string, number> = {};
for (const mode of ["f32", "tf32", "bf16"] as const) {
  // bf16: bf16 tensors (cublasGemmEx, f32 accumulation), as PyTorch's bf16 matmul.
  t.setCudaMatmulPrecision(mode === "tf32" ? "tf32" : "f32");
  const dt = mode === "bf16" ? "bf16" : "f32";
  const a = filled([n, n], 1, dt), b = filled([n, n], 2, dt);
  const s = timed(() => t.matmul(a, b).dispose(), 3, 10);
  ours[mode] = (2 * n ** 3) / s / 1e12;
  t.dispose([a, b]);
}
t.setCudaMatmulPrecision("f32");

const saeOurs: number[] = [];
for (const [d, F, B, k] of CONFIGS) {
  const cfg = resolveConfig({ arch: "topk", d_in: d, d_sae: F, k });
  const tc = resolveTrainConfig(cfg, {
    steps: 1000,
    batch_size: B,
    geometric_median_init: false,
    normalize_activations: false,
  });
  const x = filled([B, d], 3);
  let state = await initTrainState(t.random.key(0), cfg, tc, []);
  const one = async () => {
    const { state: next } = await trainStep(state, { x }, cfg, tc);
    t.disposeReplaced(stateTensors(state), stateTensors(next));
    state = next;
  };
  for (let i = 0; i < 3; i++) await one();
  t.cudaSynchronize();
  const reps = 5, t0 = performance.now();
  for (let i = 0; i < reps; i++) await one();
  t.cudaSynchronize();
  saeOurs.push((B * reps * 1000) / (performance.now() - t0));
  t.dispose([stateTensors(state), x]);
  t.cudaReleaseCached();
}

const torch = new Map<string, number>();
let why = "";
const py = spawnSync("python3", [
  new URL("./cuda_bench_torch.py", import.meta.url).pathname,
  String(n),
  ...CONFIGS.map((c) => c.join(",")),
], { encoding: "utf8" });
if (py.status === 0) {
  for (const line of py.stdout.trim().split("\n")) {
    const r = JSON.parse(line);
    torch.set(
      r.what === "matmul" ? r.mode : `${r.d},${r.F}`,
      r.what === "matmul" ? r.tflops : r.tokens_per_s,
    );
  }
} else why = `PyTorch failed: ${(py.stderr || String(py.error)).trim().split("\n").pop()}`;

const pct = (a: number, b?: number) => (b ? `${((100 * a) / b).toFixed(1)}%` : why);
if (!json) console.log(`CUDA benchmarks (${runtime}; ${t.backendInfo().backends.cuda})`);
for (const mode of ["f32", "tf32", "bf16"]) {
  const pt = torch.get(mode);
  if (json) {
    console.log(
      JSON.stringify({
        what: "matmul",
        n,
        mode,
        tflops: ours[mode],
        torch_tflops: pt ?? null,
        share: pt ? ours[mode] / pt : null,
        runtime,
      }),
    );
  } else {console.log(
      `  matmul ${n}³ ${mode.padEnd(4)} ours ${
        ours[mode].toFixed(1).padStart(6)
      } TFLOP/s   PyTorch ${pt ? pt.toFixed(1).padStart(6) : "   n/a"} TFLOP/s   ${
        pct(ours[mode], pt)
      } (target ≥ 90%)`,
    );}
}
CONFIGS.forEach(([d, F, B, k], i) => {
  const pt = torch.get(`${d},${F}`), tps = saeOurs[i];
  // Our step's only dense work is the encoder matmul; everything else is O(B·k·d) or O(F·d).
  const floorTps = B / ((2 * B * d * F) / (ours.f32 * 1e12));
  if (json) {
    console.log(
      JSON.stringify({
        what: "sae_topk_step",
        d,
        F,
        B,
        k,
        tokens_per_s: tps,
        torch_tokens_per_s: pt ?? null,
        ratio: pt ? tps / pt : null,
        floor_tokens_per_s: floorTps,
        runtime,
      }),
    );
  } else {console.log(
      `  TopK SAE step d=${d} F=${F} B=${B} k=${k}: ours ${tps.toFixed(0)} tok/s   PyTorch ${
        pt ? pt.toFixed(0) : "n/a"
      } tok/s   ${pt ? (tps / pt).toFixed(2) + "×" : why} (target ≥ 1.5×)   floor ${
        floorTps.toFixed(0)
      } tok/s (2·B·d·F at the f32 rate above)`,
    );}
});
