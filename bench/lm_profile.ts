/**
 * Where the bench's GPT-2-small-shaped forward spends its time: every kernel of the current
 * backend wrapped with a timer, per-forward time of each primitive with operand shapes ("T" marks
 * a transposed view), as bench/sae_profile.ts does for a training step.
 *   deno run -A --v8-flags=--no-maglev bench/lm_profile.ts [runs]     bun bench/lm_profile.ts …
 */
import * as t from "../mod.ts";
import { runWithCache } from "../data/lm/model.ts";
import { args } from "../tensor/platform/runtime.ts";
import { benchConfig, benchParams, benchTokens } from "./lm_weights.ts";

const runs = Number(args()[0] ?? 2), WARMUP = 1, B = 8, T = 128;
const hook = "blocks.6.hook_resid_post";

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

const cfg = benchConfig({ nLayer: 12, dModel: 768, nHead: 12, vocabSize: 50257, nPositions: T });
const model = { family: "gpt2" as const, cfg, params: benchParams(cfg) };
const ids = benchTokens(B, T, cfg.vocabSize);
const backend = t.getBackend() as unknown as Table;
instrument(backend, "");
if (backend.fused) instrument(backend.fused, "fused.");
await t.cpuThreadsReady();
let total = 0;
for (let i = 0; i < WARMUP + runs; i++) {
  if (i === WARMUP) times.clear();
  const t0 = performance.now();
  const { logits, cache } = t.tidy(() => runWithCache(model, ids, [hook]));
  await logits!.data();
  t.dispose([logits, cache]);
  if (i >= WARMUP) total += performance.now() - t0;
}
console.log(`forward B=${B} T=${T}: ${(total / runs).toFixed(0)} ms (${t.getBackend().info()})`);
let kernels = 0;
for (const [key, [ms, n]] of [...times].sort((a, b) => b[1][0] - a[1][0])) {
  kernels += ms;
  if (ms / runs >= 5) {
    console.log(
      `${(ms / runs).toFixed(1).padStart(8)} ms  x${String(n / runs).padStart(3)}  ${key}`,
    );
  }
}
console.log(
  `kernels ${(kernels / runs).toFixed(0)} ms, outside them ${
    ((total - kernels) / runs).toFixed(0)
  } ms`,
);
