/**
 * Where a TopK SAE training step's time goes on the cuda backend, with real times (not launch
 * times, which bench/sae_profile.ts gives there). Three measurements of trainStep at one shape:
 *   A. the plain step (as bench/cuda_bench.ts times it): ms/step, driver allocations, readbacks;
 *   B. GPU time per kernel launch (CUDA events around every launch, cuBLAS GEMM, memset and copy,
 *      no host sync inside the step): which kernels keep the GPU busy, and the launch count;
 *   C. every backend call (primitive and fused kernel, keyed by operand shapes as in
 *      bench/kernel_timer.ts) with a device synchronise before and after it: real GPU+host time
 *      per primitive, top N and the total against the step's wall time;
 *   deno run -A --no-check --v8-flags=--no-maglev bench/cuda_profile.ts \
 *     [--shape d,F,B,k] [--warmup 3] [--steps 5] [--top 25] [--emulate]
 * SPARSECODER_BACKEND picks the backend (cpu runs A and C with the cpu's own times, to check the
 * script); --emulate runs the cuda backend on the CPU emulation of its kernels (tests/cuda_emu,
 * needs g++), for tiny shapes only.
 */
import * as t from "../mod.ts";
import { resolveConfig } from "../sae/config.ts";
import { resolveTrainConfig } from "../sae/train/config.ts";
import { initTrainState, stateTensors, trainStep } from "../sae/train/step.ts";
import { args } from "../tensor/platform/runtime.ts";
import { cudaRuntime, installRuntime } from "../tensor/cuda/runtime.ts";
import { timeKernels } from "./kernel_timer.ts";

const argv = args();
const opt = (name: string, dflt: string) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1] : dflt;
};
const [d, F, B, k] = opt("shape", "512,8192,2048,32").split(",").map(Number);
const WARMUP = Number(opt("warmup", "3")), STEPS = Number(opt("steps", "5"));
const TOP = Number(opt("top", "25"));

if (argv.includes("--emulate")) {
  const { emulatedRuntime } = await import("../tests/cuda_emu/runtime.ts");
  const emu = emulatedRuntime();
  // The emulation's kernels run synchronously on the CPU: host-clock "events" time them.
  const stamps = new Map<bigint, number>();
  let nextEvent = 1n;
  Object.assign(emu.driver, {
    createEvent: () => nextEvent++,
    record: (e: bigint) => void stamps.set(e, performance.now()),
    eventSync: () => {},
    elapsedMs: (a: bigint, b: bigint) => stamps.get(b)! - stamps.get(a)!,
    destroyEvent: (e: bigint) => void stamps.delete(e),
  });
  installRuntime(emu);
  t.useBackend("cuda");
}
const backend = t.getBackend();
const isCuda = backend.name === "cuda";
const rt = isCuda ? cudaRuntime() : null;
if (isCuda && !rt) throw new Error(`cuda backend without a runtime: ${t.cudaUnavailableReason()}`);
const sync = () => {
  if (isCuda) t.cudaSynchronize();
};
const ms = (x: number) => x.toFixed(3).padStart(10);

/** Uniform values from a fast LCG (as bench/cuda_bench.ts: Threefry in JS would be slow here). */
function filled(shape: number[], seed: number): t.Tensor {
  const a = new Float32Array(shape.reduce((x, y) => x * y, 1));
  let s = seed >>> 0;
  for (let i = 0; i < a.length; i++) {
    (s = (Math.imul(s, 1664525) + 1013904223) >>> 0), (a[i] = (s >>> 8) / 2 ** 24 - 0.5);
  }
  return t.tensor(a, { shape });
}

console.log(
  `== TopK step profile d=${d} F=${F} B=${B} k=${k}, warmup ${WARMUP}, ${STEPS} steps per part (${backend.info()})`,
);
const cfg = resolveConfig({ arch: "topk", d_in: d, d_sae: F, k });
const tc = resolveTrainConfig(cfg, {
  steps: 1000,
  batch_size: B,
  geometric_median_init: false,
  normalize_activations: false,
});
console.log(
  `   train config: optimizer ${tc.optimizer}, grad_clip ${tc.grad_clip}, auxk_alpha ${cfg.auxk_alpha}, matmul ${
    isCuda ? (rt!.precision) : "-"
  }`,
);
const x = filled([B, d], 3);
const tInit = performance.now();
let state = await initTrainState(t.random.key(0), cfg, tc, []);
sync();
console.log(`   init ${(performance.now() - tInit).toFixed(0)} ms`);
await t.cpuThreadsReady();

async function step(): Promise<void> {
  const { state: next } = await trainStep(state, { x }, cfg, tc);
  t.disposeReplaced(stateTensors(state), stateTensors(next));
  state = next;
}

// deno-lint-ignore no-explicit-any
type Table = Record<string, any>;
/** Replace obj[name] by wrap(original); returns the undo. */
function patch(obj: Table, name: string, wrap: (f: Table[string]) => Table[string]): () => void {
  const f = obj[name];
  obj[name] = wrap(f);
  return () => (obj[name] = f);
}

/** Print the entries of `times` (total ms, calls) per step, costliest first; returns the sum. */
function report(title: string, times: Map<string, [number, number]>, per: number): number {
  const rows = [...times].sort((a, b) => b[1][0] - a[1][0]);
  const total = rows.reduce((s, [, [m]]) => s + m, 0) / per;
  const calls = rows.reduce((s, [, [, n]]) => s + n, 0) / per;
  console.log(
    `-- ${title}: top ${Math.min(TOP, rows.length)} of ${rows.length} keys, ${
      calls.toFixed(0)
    } calls and ${total.toFixed(3)} ms per step`,
  );
  console.log(`${"ms/step".padStart(10)} ${"%".padStart(6)} ${"calls".padStart(6)}  key`);
  for (const [key, [m, n]] of rows.slice(0, TOP)) {
    console.log(
      `${ms(m / per)} ${(100 * m / per / (total || 1)).toFixed(1).padStart(6)} ${
        String(+(n / per).toFixed(2)).padStart(6)
      }  ${key}`,
    );
  }
  return total;
}

// --- A. The plain step ---------------------------------------------------------------------------
let reads = 0;
const undoReads = ["read", "readSync"].map((name) =>
  patch(backend as unknown as Table, name, (f) =>
    function (this: unknown, ...a: unknown[]) {
      reads++;
      return f.apply(this, a);
    })
);
for (let i = 0; i < WARMUP; i++) await step();
sync();
const mem0 = isCuda ? t.cudaMemoryStats()! : null;
reads = 0;
let t0 = performance.now();
for (let i = 0; i < STEPS; i++) await step();
sync();
const plainMs = (performance.now() - t0) / STEPS;
const mem1 = isCuda ? t.cudaMemoryStats()! : null;
undoReads.forEach((u) => u());
console.log(
  `A. plain step: ${plainMs.toFixed(2)} ms (${(B * 1000 / plainMs).toFixed(0)} tok/s), ${
    reads / STEPS
  } readbacks/step${
    mem0 && mem1
      ? `, driver allocs/step ${(mem1.driverAllocs - mem0.driverAllocs) / STEPS}, frees/step ${
        (mem1.driverFrees - mem0.driverFrees) / STEPS
      }, in use ${(mem1.inUse / 2 ** 20).toFixed(0)} MiB, cached ${
        (mem1.cached / 2 ** 20).toFixed(0)
      } MiB`
      : ""
  }`,
);

// --- B. GPU time per launch (CUDA events) ---------------------------------------------------------
if (isCuda && rt && typeof rt.driver.createEvent === "function") {
  const pool: bigint[] = [];
  const marks: [key: string, start: bigint, end: bigint][] = [];
  let used = 0;
  const ev = () => {
    if (used === pool.length) pool.push(rt.driver.createEvent());
    return pool[used++];
  };
  const around = (key: string, fn: () => void) => {
    const a = ev(), b = ev();
    rt.driver.record(a, rt.stream);
    fn();
    rt.driver.record(b, rt.stream);
    marks.push([key, a, b]);
  };
  const gpu = new Map<string, [number, number]>();
  const drain = () => {
    rt.driver.streamSync(rt.stream);
    for (const [key, a, b] of marks) {
      const e = gpu.get(key) ?? [0, 0];
      e[0] += rt.driver.elapsedMs(a, b);
      e[1]++;
      gpu.set(key, e);
    }
    marks.length = 0;
    used = 0;
  };
  const undo = [
    patch(rt as unknown as Table, "launch", (f) => (...a: unknown[]) => {
      const [, , name, grid, block] = a as [unknown, string, string, number[], number];
      around(`${name} grid(${grid.map((g) => g ?? 1).join(",")}) block ${block}`, () => f(...a));
    }),
    patch(rt.cublas as unknown as Table, "gemm", (f) => (c: Table) => {
      const p = c.plan;
      around(
        `cublas gemm m=${p.m} n=${p.n} k=${p.k} batch=${p.batch} ${c.dtype}/${c.precision}`,
        () => f(c),
      );
    }),
    patch(
      rt.driver as unknown as Table,
      "memsetD8",
      (f) => (dst: bigint, v: number, bytes: number, s: bigint) =>
        around(`memsetD8 ${bytes} B`, () => f(dst, v, bytes, s)),
    ),
    patch(
      rt.driver as unknown as Table,
      "copyHtoD",
      (f) => (dst: bigint, src: ArrayBufferView, s: bigint) =>
        around(`copyHtoD ${src.byteLength} B`, () => f(dst, src, s)),
    ),
    patch(
      rt.driver as unknown as Table,
      "copyDtoH",
      (f) => (dst: ArrayBufferView, src: bigint, s: bigint) =>
        around(`copyDtoH ${dst.byteLength} B`, () => f(dst, src, s)),
    ),
  ];
  sync();
  t0 = performance.now();
  for (let i = 0; i < STEPS; i++) {
    await step();
    drain();
  }
  const wall = (performance.now() - t0) / STEPS;
  undo.forEach((u) => u());
  const busy = report("B. GPU time per launch (CUDA events, no sync inside the step)", gpu, STEPS);
  console.log(
    `   GPU busy ${busy.toFixed(2)} ms of ${
      wall.toFixed(2)
    } ms wall per step (events add ~2 µs per launch)`,
  );
  // The same by kernel name alone (grids differ with shapes).
  const byName = new Map<string, [number, number]>();
  for (const [key, [m, n]] of gpu) {
    const name = key.replace(/ grid\(.*$/, "").replace(/ m=.*$/, "").replace(/ \d+ B$/, "");
    const e = byName.get(name) ?? [0, 0];
    e[0] += m, e[1] += n;
    byName.set(name, e);
  }
  report("B'. GPU time per kernel name", byName, STEPS);
}

// --- C. Every backend call, synchronised before and after (last: the timer stays installed) ------
{
  const timer = timeKernels({ sync });
  sync();
  t0 = performance.now();
  for (let i = 0; i < STEPS; i++) await step();
  sync();
  const wall = (performance.now() - t0) / STEPS;
  const total = report(
    "C. backend calls, device synchronised before and after each",
    new Map(timer.entries()),
    STEPS,
  );
  console.log(
    `   calls total ${total.toFixed(2)} ms of ${
      wall.toFixed(2)
    } ms wall per step (rest: JS, autodiff, syncs); plain step ${plainMs.toFixed(2)} ms`,
  );
}
t.dispose([stateTensors(state), x]);
