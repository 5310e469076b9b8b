/** README: write activations to an Arrow store, stream them through a shuffle buffer, train on them. */
import * as t from "../mod.ts";
import * as data from "../data/mod.ts"; // the data entry loads apache-arrow
import { rm } from "node:fs/promises";
const { sae } = t;
await rm("runs/acts", { recursive: true, force: true }); // a store folder is written once

// Write rows in any amounts: whole shards are renamed into place, the manifest last.
const w = data.createStoreWriter("runs/acts", {
  rowShape: [64],
  dtype: "bf16",
  model: "synthetic",
});
const src = t.synthetic.makeSynthetic({ d: 64, nFeatures: 256 });
for (let i = 0; i < 8; i++) await w.append(src.batch(i, 4096).x); // Float32Array or Tensor [n, 64]
const manifest = await w.finish(); // rows, shards with sha256, per-dimension mean and variance

// Read any supported format (store, SAELens cache, memmap cache, .npy, …) as a restartable stream.
const stream = await data.openActivations("runs/acts");
const buf = new data.ShuffleBuffer(stream, { capacity: 16384, seed: 0 }); // bounded memory
const batch = buf.next(1024)!; // { x: Float32Array [1024·64], rows, epoch }

// Train on it: the CLI's `sae train --data runs/acts` does exactly this.
const { data: source } = await data.activationData("runs/acts", { seed: 0 });
const cfg = sae.resolveConfig({ arch: "topk", d_in: 64, d_sae: 512, k: 8 });
const train = sae.resolveTrainConfig(cfg, { steps: 50, batch_size: 1024 });
await sae.runTraining({ cfg, train, data: source, out: "runs/from-store" });
console.log(manifest.rows, batch.rows, source.describe());
