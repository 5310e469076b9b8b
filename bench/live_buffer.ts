/**
 * What training straight from a model costs per batch: the activation buffer's own work (reading
 * token rows, bookkeeping, copies in and out, the batch tensor) with the model's forwards excluded
 * and included, beside an SAE training step on the same batch, on a small GPT-2-shaped model
 * (4 layers, d 256, vocabulary 50257, context 128, hook blocks.2.hook_resid_post). Also the replay
 * a resume does: preparing batch K of a fresh buffer (bookkeeping on ids for K batches, then the
 * forwards of the rows still unread).
 *   deno run -A bench/live_buffer.ts [--json] [--batches N]     bun bench/live_buffer.ts …
 */
import * as t from "../mod.ts";
import { args, runtime } from "../tensor/platform/runtime.ts";
import { getBackend } from "../tensor/registry.ts";
import { activationBuffer } from "../data/lm/activation_buffer.ts";
import type { LanguageModel } from "../data/lm/model.ts";
import { idRows } from "../data/text/id_rows.ts";
import { arrayData } from "../data/sources.ts";
import { runTraining } from "../sae/train/driver.ts";
import { resolveConfig } from "../sae/config.ts";
import { resolveTrainConfig } from "../sae/train/config.ts";
import { benchConfig, benchParams, hashed } from "./lm_weights.ts";

const argv = args();
const json = argv.includes("--json");
const at = argv.indexOf("--batches");
const batches = at >= 0 ? Number(argv[at + 1]) : 40;
const T = 128, BATCH = 1024, CONTEXTS = 64, MODEL_BATCH = 8, ROWS = 2048;
const hook = "blocks.2.hook_resid_post";

const cfg = benchConfig({ nLayer: 4, dModel: 256, nHead: 4, vocabSize: 50257, nPositions: T });
const model: LanguageModel = { family: "gpt2", cfg, params: benchParams(cfg) };
const ids = Int32Array.from(
  hashed(ROWS * T, 7, 0.5, 0.5),
  (u) => Math.min(50256, Math.floor(u * 50257)),
);
const make = () =>
  activationBuffer({
    model,
    modelName: "bench-gpt2-4x256",
    rows: idRows(ids, T, { name: "hashed ids" }),
    hooks: [hook],
    contexts: CONTEXTS,
    modelBatch: MODEL_BATCH,
    seed: 0,
  });

// 1. The buffer alone, batches in order: wall time per batch, the forwards' share, the rest.
const src = make();
await src.prepare(0, BATCH); // the first fill, not steady state
src.batch(0, BATCH).x.dispose();
const s0 = src.stats();
const started = performance.now();
for (let i = 1; i <= batches; i++) {
  await src.prepare(i, BATCH);
  src.batch(i, BATCH).x.dispose();
}
const wall = (performance.now() - started) / 1000;
const s1 = src.stats();
const fwd = s1.forwardSeconds - s0.forwardSeconds;
await src.close();

// 2. A training step on the same batches: live vs the same number of rows already in memory.
const sae = resolveConfig({ arch: "topk", d_in: cfg.dModel, d_sae: 8 * cfg.dModel, k: 32 });
const train = resolveTrainConfig(sae, { steps: batches, batch_size: BATCH, seed: 0 });
const time = async (data: Parameters<typeof runTraining>[0]["data"]) => {
  const t0 = performance.now();
  await runTraining({ cfg: sae, train, data });
  return (performance.now() - t0) / 1000 / batches;
};
const live = make();
const stepLive = await time(live);
await live.close();
const x = t.tensor(hashed(BATCH * 8 * cfg.dModel, 3, 0, 1), { shape: [BATCH * 8, cfg.dModel] });
const stepArray = await time(arrayData(x));

// 3. The replay of a resume at batch K.
const K = batches;
const fresh = make();
const r0 = performance.now();
await fresh.prepare(K, BATCH);
const replay = (performance.now() - r0) / 1000;
const rs = fresh.stats();
await fresh.close();

const ms = (s: number) => +(1000 * s).toFixed(2);
const out = {
  runtime,
  backend: getBackend().info(),
  model: "gpt2-shaped, 4 layers, d 256, vocab 50257",
  context: T,
  batch: BATCH,
  buffer_contexts: CONTEXTS,
  model_batch: MODEL_BATCH,
  batches,
  per_batch_ms: {
    buffer_with_forwards: ms(wall / batches),
    forwards: ms(fwd / batches),
    buffer_without_forwards: ms((wall - fwd) / batches),
    train_step_live: ms(stepLive),
    train_step_in_memory: ms(stepArray),
  },
  tokens_per_s_buffer_with_forwards: Math.round((batches * BATCH) / wall),
  replay_to_batch: {
    batch: K,
    ms: ms(replay),
    forward_ms: ms(rs.forwardSeconds),
    contexts_run: rs.contextsRun,
  },
};
if (json) console.log(JSON.stringify(out));
else {
  console.log(
    `${out.model}, context ${T}, batch ${BATCH}, buffer ${CONTEXTS} contexts, ${runtime}, ${out.backend}`,
  );
  for (const [k, v] of Object.entries(out.per_batch_ms)) console.log(`  ${k.padEnd(26)} ${v} ms`);
  console.log(
    `  replay to batch ${K}: ${out.replay_to_batch.ms} ms (forwards ${out.replay_to_batch.forward_ms} ms, ${rs.contextsRun} contexts)`,
  );
}
