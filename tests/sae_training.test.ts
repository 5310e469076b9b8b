// Training outcomes: every architecture trained with the real driver (runTraining) on synthetic
// superposition data with known features (64 unit directions in R^32, ~3 active per sample, power-law
// frequencies: the rarest fires ~8× less often than the commonest), then judged on held-out batches by
// FVU (inference encoding, BatchTopK/Matryoshka through the learned θ) and by ground-truth recovery:
// the share of true features whose best decoder row has cosine > 0.9 (featureRecovery).
//
// Everything is seeded, and the runtimes compute the same bits, so the figures are fixed; the
// thresholds leave a margin below what three data seeds reached during tuning (noted per case).
import * as t from "../mod.ts";
import type { Batch } from "../sae/arch/architecture.ts";
import { type ArchName, resolveConfig, type SaeConfigInput } from "../sae/config.ts";
import { runTraining } from "../sae/train/driver.ts";
import { evaluate } from "../sae/eval/metrics.ts";
import { type DataSource, syntheticData } from "../data/sources.ts";
import { resolveTrainConfig, type TrainConfigInput } from "../sae/train/config.ts";
import { featureRecovery, featureSlice, makeSynthetic } from "../data/synthetic.ts";
import { assert, test } from "./harness.ts";

const D = 32, N_TRUE = 64, BATCH = 512;

interface Case {
  arch: ArchName;
  cfg: Partial<SaeConfigInput>;
  train: TrainConfigInput;
  /** Held-out FVU must stay below this. */
  maxFvu: number;
  /** Share of true features recovered (per layer for MLSAE) must reach this. */
  minRecovery: number;
  batch?: number;
}

// AuxK only acts on features dead for dead_tokens; DL's 10M tokens is longer than these whole runs,
// so the TopK family uses 100 steps' worth (51,200 tokens) to let AuxK revive dead latents (without
// it BatchTopK merged pairs of rare features into one latent and recovered ~55/64).
const AUX = { dead_tokens: 100 * BATCH };

// The L1 family first: under Bun, training after TopK-family runs with AuxK active is several
// times slower in the same process (reported; Deno is unaffected), which would push this file
// past its time budget.
const CASES: Case[] = [
  // L1 ReLU (λ 0.3, DL's plain L1 on normalised inputs): 64/64 on three seeds, FVU ~0.15 (the L1
  // shrinkage costs reconstruction). Expect nearly all features.
  {
    arch: "relu",
    cfg: { l1_coefficient: 0.3 },
    train: { steps: 1500, lr: 3e-3 },
    maxFvu: 0.2,
    minRecovery: 0.95,
  },
  // Gated (λ 1, lr 1e-2 with b1 0.9: DL's 5e-5 and b1 0 barely move in this budget): 63–64/64,
  // FVU ~0.22 (its gate is sparser than the data, L0 ~1.8).
  {
    arch: "gated",
    cfg: { l1_coefficient: 1 },
    train: { steps: 1500, lr: 1e-2, b1: 0.9 },
    maxFvu: 0.3,
    minRecovery: 0.9,
  },
  // JumpReLU (target L0 4, SAELens's bandwidth 0.05 and θ₀ 0.2 on these unit-scale inputs; DL's
  // 0.001 barely moves θ here): FVU ~0.075 but 53–55/64 — it merges pairs of the rarest features
  // into one latent, and there is no dead-latent revival to undo that. So the bar is lower.
  {
    arch: "jumprelu",
    cfg: {
      l1_coefficient: 1,
      jumprelu_target_l0: 4,
      jumprelu_bandwidth: 0.05,
      jumprelu_init_threshold: 0.2,
    },
    train: { steps: 2000, lr: 3e-3, b1: 0.9 },
    maxFvu: 0.12,
    minRecovery: 0.75,
  },
  // TopK k 4: 62–64/64, FVU ~0.10 (rows with more than 4 active features lose the rest).
  { arch: "topk", cfg: { k: 4 }, train: { steps: 1500, lr: 3e-3 }, maxFvu: 0.15, minRecovery: 0.9 },
  // BatchTopK k 4 with AuxK revival: 59–61/64 on three data seeds, FVU ~0.07.
  {
    arch: "batchtopk",
    cfg: { k: 4 },
    train: { steps: 1500, lr: 1e-2, ...AUX },
    maxFvu: 0.12,
    minRecovery: 0.85,
  },
  // Matryoshka, groups [64, 64] weighted [0.2, 0.8]: 58–62/64, FVU ~0.07. (Equal weights, or a
  // small first group, pull the prefix towards blends of features: ~50/64.)
  {
    arch: "matryoshka",
    cfg: { k: 4, matryoshka_groups: [64, 64], matryoshka_weights: [0.2, 0.8] },
    train: { steps: 1500, lr: 1e-2, ...AUX },
    maxFvu: 0.12,
    minRecovery: 0.85,
  },
  // Transcoder x → y = x·M (M: 32 → 48): recovery against the rows of features·M: 63–64/64, FVU ~0.10.
  {
    arch: "transcoder",
    cfg: { k: 4, d_out: 48 },
    train: { steps: 1500, lr: 1e-2, ...AUX },
    maxFvu: 0.15,
    minRecovery: 0.9,
  },
  // MLSAE over 3 layers whose directions drift (cosine 0.7 between neighbours), so a latent serves
  // one layer: d_sae 256 ≥ 3·64, batch 256 × 3 tokens, dead after ~33 steps. Outer layers 61–64/64,
  // the middle one (cosine 0.7 to both neighbours, so blends compete) 53–59/64; FVU ~0.14.
  {
    arch: "mlsae",
    cfg: { k: 4, d_sae: 256 },
    train: { steps: 1500, lr: 1e-2, dead_tokens: 25_600 },
    maxFvu: 0.2,
    minRecovery: 0.8,
    batch: 256,
  },
];

const LAYERS = 3, LAYER_DRIFT = 0.3, D_OUT = 48;

function dataFor(c: Case): { data: DataSource; truth: t.Tensor[] } {
  if (c.arch === "mlsae") {
    const src = makeSynthetic({
      d: D,
      nFeatures: N_TRUE,
      meanActive: 3,
      seed: 1,
      layers: LAYERS,
      layerDrift: LAYER_DRIFT,
    });
    return {
      data: syntheticData(src),
      truth: Array.from({ length: LAYERS }, (_, l) => featureSlice(src.features, l)),
    };
  }
  const src = makeSynthetic({ d: D, nFeatures: N_TRUE, meanActive: 3, seed: 1 });
  if (c.arch !== "transcoder") return { data: syntheticData(src), truth: [src.features] };
  // Targets y = x·M: the true decoder directions are the rows of features·M.
  const M = t.random.normal(t.random.key(99), [D, D_OUT], { std: 1 / Math.sqrt(D) });
  const data: DataSource = {
    batch(i, size) {
      const { x } = src.batch(i, size);
      return { x, y: t.matmul(x, M) };
    },
    describe: () => "synthetic transcoder pairs",
    width: D,
    targetWidth: D_OUT,
  };
  return { data, truth: [t.matmul(src.features, M)] };
}

for (const c of CASES) {
  test(
    `training ${c.arch} on synthetic features: held-out FVU < ${c.maxFvu}, recovery ≥ ${
      100 * c.minRecovery
    }%`,
    async () => {
      const started = performance.now();
      const batch = c.batch ?? BATCH;
      const cfg = resolveConfig({ arch: c.arch, d_in: D, d_sae: 128, ...c.cfg });
      const train = resolveTrainConfig(cfg, { batch_size: batch, seed: 0, ...c.train });
      const { data, truth } = dataFor(c);
      const res = await runTraining({ cfg, train, data });

      // Held-out batches: indices far beyond the ones training read.
      const held: Batch[] = Array.from({ length: 4 }, (_, i) => data.batch(1_000_000 + i, 1024));
      const usesTheta = c.arch === "batchtopk" || c.arch === "matryoshka";
      if (usesTheta) {
        assert(
          (res.state.threshold as number) > 0,
          `${c.arch}: θ was never learned (${res.state.threshold})`,
        );
      }
      const m = await evaluate(
        res.params,
        cfg,
        held,
        usesTheta ? { threshold: res.state.threshold as number } : {},
      );
      t.dispose(held);

      const recoveries = [];
      for (const tr of truth) recoveries.push(await featureRecovery(tr, res.params.W_dec, 0.9));
      const seconds = (performance.now() - started) / 1000;
      console.log(
        `${c.arch.padEnd(10)} held-out FVU ${m.fvu.toFixed(4)}  L0 ${m.l0.toFixed(2)}  recovered ` +
          recoveries.map((r) =>
            `${r.recovered}/${N_TRUE} (${(100 * r.fraction).toFixed(1)}%, MMCS ${
              r.mmcs.toFixed(3)
            })`
          ).join(", ") +
          `  ${train.steps} steps × ${batch}${
            usesTheta ? `  θ ${(res.state.threshold as number).toFixed(4)}` : ""
          }  ${seconds.toFixed(1)} s`,
      );
      assert(m.fvu < c.maxFvu, `${c.arch}: held-out FVU ${m.fvu} ≥ ${c.maxFvu}`);
      recoveries.forEach((r, l) =>
        assert(
          r.fraction >= c.minRecovery,
          `${c.arch}${
            truth.length > 1 ? ` layer ${l}` : ""
          }: recovered ${r.recovered}/${N_TRUE} < ${100 * c.minRecovery}%`,
        )
      );
      t.dispose([res.params, res.state.params, res.state.opt, res.state.sinceFired]);
      // Alone each case takes 2–10 s; in a full `bun test tests/` run Bun gets several times slower
      // after earlier files (reported), hence the generous limit.
    },
    600_000,
  );
}
