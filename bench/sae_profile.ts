/**
 * Where a training step's time goes: wraps every kernel of the current backend with a timer and
 * prints the per-step time of each primitive (with operand shapes; "T" marks a transposed view).
 *   deno run -A --v8-flags=--no-maglev bench/sae_profile.ts [arch] [steps]     bun bench/sae_profile.ts …
 * CPU kernels are synchronous, so the times are the kernels' own; on a GPU backend they would
 * only be launch times. The last line gives the encoder GEMM's share of the step (the floor).
 */
import { loadavg } from "node:os";
import * as t from "../mod.ts";
import { type ArchName, resolveConfig } from "../sae/config.ts";
import { resolveTrainConfig } from "../sae/train/config.ts";
import { initTrainState, stateTensors, trainStep } from "../sae/train/step.ts";
import { args } from "../tensor/platform/runtime.ts";

const argv = args();
const arch = argv[0] ?? "topk", steps = Number(argv[1] ?? 4), WARMUP = 4;
const d = 512, F = 8192, B = 2048, k = 32;

const times = new Map<string, [ms: number, calls: number]>();
const SKIP = new Set(["alloc", "free", "info", "read", "readSync", "fromHost"]);
// deno-lint-ignore no-explicit-any
type Table = Record<string, any>;
function instrument(obj: Table, prefix: string): void {
  for (const name of Object.keys(obj)) {
    const f = obj[name];
    if (typeof f !== "function" || SKIP.has(name)) continue;
    obj[name] = function (this: unknown, ...args: unknown[]) {
      const t0 = performance.now();
      const r = f.apply(this, args);
      const dt = performance.now() - t0;
      const shapes = args.filter((a): a is t.View => !!a && typeof a === "object" && "shape" in a)
        .map((v) =>
          v.shape.join("x") + (v.strides.length && v.strides[v.strides.length - 1] !== 1 ? "T" : "")
        );
      const key = `${prefix}${name}${typeof args[0] === "string" ? ":" + args[0] : ""} ${
        shapes.join(",")
      }`;
      const e = times.get(key) ?? [0, 0];
      e[0] += dt, e[1]++;
      times.set(key, e);
      return r;
    };
  }
}
const backend = t.getBackend() as unknown as Table;
instrument(backend, "");
if (backend.fused) instrument(backend.fused, "fused.");

const cfg = resolveConfig({ arch: arch as ArchName, d_in: d, d_sae: F, k });
const tc = resolveTrainConfig(cfg, {
  steps: 1000,
  batch_size: B,
  geometric_median_init: false,
  normalize_activations: false,
});
const x = t.random.normal(t.random.key(1), [B, d]);
let state = await initTrainState(t.random.key(0), cfg, tc, []);
await t.cpuThreadsReady();
let total = 0;
for (let i = 0; i < WARMUP + steps; i++) {
  if (i === WARMUP) times.clear();
  const t0 = performance.now();
  const { state: next } = await trainStep(state, { x }, cfg, tc);
  t.disposeReplaced(stateTensors(state), stateTensors(next));
  state = next;
  if (i >= WARMUP) total += performance.now() - t0;
}
console.log(
  `${arch} step, d=${d} F=${F} batch=${B} k=${k}: ${
    (total / steps).toFixed(1)
  } ms (${t.getBackend().info()})`,
);
let kernels = 0;
for (const [key, [ms, n]] of [...times].sort((a, b) => b[1][0] - a[1][0])) {
  kernels += ms;
  if (ms / steps >= 0.5) {
    console.log(
      `${(ms / steps).toFixed(1).padStart(8)} ms  x${String(n / steps).padStart(3)}  ${key}`,
    );
  }
}
console.log(
  `kernels ${(kernels / steps).toFixed(1)} ms of ${(total / steps).toFixed(1)} ms per step`,
);
// The floor: the encoder's one dense matmul (the costliest matmul entry); the rest is overhead.
const gemm =
  [...times].filter(([key]) => key.startsWith("matmul ")).sort((a, b) => b[1][0] - a[1][0])[0];
if (gemm) {
  console.log(
    `encoder GEMM (${gemm[0].slice(7)}): ${(gemm[1][0] / steps).toFixed(1)} ms, ${
      (100 * gemm[1][0] / total).toFixed(1)
    }% of the step (load average ${loadavg().map((v) => v.toFixed(2)).join(" ")})`,
  );
}
t.dispose([stateTensors(state), x]);
