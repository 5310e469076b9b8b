/**
 * Activation data throughput:
 *   1. Arrow store read from the page cache, f32 and bf16, with and without the sha256 check:
 *      GB/s of shard bytes read and of f32 values delivered (rows × d × 4).
 *   2. The time the shuffle buffer adds per training batch (refills from the store included,
 *      amortised), as a share of a TopK training step (d=512, F=8192, batch 2048, k=32) measured
 *      in the same process with sae/train/step.ts trainStep, as bench/sae_train.ts does.
 *   deno run -A --v8-flags=--no-maglev bench/data_read.ts [--rows N] [--json]     bun bench/data_read.ts
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as t from "../mod.ts";
import { storeStream, writeStore } from "../data/arrow_store.ts";
import { ShuffleBuffer } from "../data/shuffle_buffer.ts";
import { adoptHostArray } from "../data/safetensors.ts";
import { resolveConfig } from "../sae/config.ts";
import { resolveTrainConfig } from "../sae/train/config.ts";
import { initTrainState, stateTensors, trainStep } from "../sae/train/step.ts";
import { args, runtime } from "../tensor/platform/runtime.ts";

const argv = args();
const json = argv.includes("--json");
const ri = argv.indexOf("--rows");
const d = 512, F = 8192, B = 2048, k = 32;
const N = ri >= 0 ? Number(argv[ri + 1]) : 65536;
const out: Record<string, unknown>[] = [];
const report = (r: Record<string, unknown>) => {
  out.push(r);
  if (!json) {
    console.log(
      "  " +
        Object.entries(r).map(([a, b]) =>
          `${a} ${typeof b === "number" && !Number.isInteger(b) ? Number(b.toPrecision(4)) : b}`
        ).join("  "),
    );
  }
};

const dir = mkdtempSync(join(tmpdir(), "sc-bench-"));
try {
  if (!json) {
    console.log(
      `activation store, ${N} rows × d=${d} (${runtime}; machine shared: figures as measured)`,
    );
  }
  // Rows of a fixed pattern: the content does not matter for throughput.
  const x = new Float32Array(N * d);
  for (let i = 0; i < x.length; i++) x[i] = ((i * 2654435761) >>> 0) / 2 ** 32 - 0.5;
  for (const dtype of ["f32", "bf16"] as const) {
    const path = join(dir, dtype);
    let t0 = performance.now();
    const m = await writeStore(path, x, { rowShape: [d], dtype });
    const writeS = (performance.now() - t0) / 1000;
    const bytes = m.shards.reduce((a, s) => a + s.bytes, 0);
    report({
      what: `write ${dtype}`,
      shards: m.shards.length,
      MB: bytes / 1e6,
      GBps: bytes / 1e9 / writeS,
    });
    for (const verify of [true, false]) {
      const read = () => {
        const s = storeStream(path, { verify });
        let rows = 0;
        for (let it = s.open(), r = it.next(); !r.done; r = it.next()) rows += r.value.rows;
        return rows;
      };
      read(); // warm the page cache and the JIT
      const reps = 3;
      t0 = performance.now();
      for (let i = 0; i < reps; i++) if (read() !== N) throw new Error("row count");
      const s = (performance.now() - t0) / 1000 / reps;
      report({
        what: `read ${dtype}${verify ? " +sha256" : ""}`,
        file_GBps: bytes / 1e9 / s,
        f32_GBps: (N * d * 4) / 1e9 / s,
        ms_per_pass: s * 1000,
      });
    }
  }

  // The buffer's cost per batch: draw + copy + refills from the store + the tensor's creation,
  // over more than one pass of the store (the first pass also checks sha256).
  const bufferMs = (dtype: "f32" | "bf16", verify: boolean | "always") => {
    const buf = new ShuffleBuffer(storeStream(join(dir, dtype), { verify }), {
      capacity: 16 * B,
      seed: 0,
    });
    for (let i = 0; i < 4; i++) buf.next(B); // warm-up
    const batches = Math.ceil((1.5 * N) / B);
    const t0 = performance.now();
    for (let i = 0; i < batches; i++) adoptHostArray(buf.next(B)!.x, "f32", [B, d]).dispose();
    return (performance.now() - t0) / batches;
  };
  const buffers = (["f32", "bf16"] as const).flatMap((dt) =>
    ([["first pass", true], ["every pass", "always"], ["off", false]] as const).map((
      [v, verify],
    ) => ({ dt, v, ms: bufferMs(dt, verify) }))
  );
  let t0 = performance.now();

  const cfg = resolveConfig({ arch: "topk", d_in: d, d_sae: F, k });
  const tc = resolveTrainConfig(cfg, {
    steps: 1000,
    batch_size: B,
    geometric_median_init: false,
    normalize_activations: false,
  });
  const xb = t.random.normal(t.random.key(1), [B, d]);
  let state = await initTrainState(t.random.key(0), cfg, tc, []);
  const step = async () => {
    const { state: next } = await trainStep(state, { x: xb }, cfg, tc);
    t.disposeReplaced(stateTensors(state), stateTensors(next));
    state = next;
  };
  for (let i = 0; i < 3; i++) await step();
  const steps = 4;
  t0 = performance.now();
  for (let i = 0; i < steps; i++) await step();
  const stepMs = (performance.now() - t0) / steps;
  t.dispose([stateTensors(state), xb]);
  report({ what: "topk train step", d, F, batch: B, k, ms: stepMs });
  for (const b of buffers) {
    report({
      what: `shuffle buffer per batch, ${b.dt} store, sha256 ${b.v}`,
      capacity_rows: 16 * B,
      ms: b.ms,
      share_of_step_pct: (100 * b.ms) / stepMs,
      target_pct: 5,
    });
  }
  if (json) { for (const r of out) console.log(JSON.stringify({ ...r, runtime })); }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
