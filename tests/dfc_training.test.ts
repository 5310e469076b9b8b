// DFC training on the paired synthetic generator (two "models" sharing most true features, each
// with a few of its own): the exclusive true features land in their model's exclusive partition
// (or, at worst, in a shared feature whose decoder is one-sided, which the model-diffing view
// flags), the shared ones in the shared set with balanced decoder norms, and the partition is
// intact after training. The shared set is sized to the shared true features, so exclusive
// features have no spare shared capacity to settle in (with spare capacity nothing in the DFC
// objective prefers an exclusive slot over a shared one with a zeroed decoder row).
import * as t from "../mod.ts";
import { resolveConfig } from "../sae/config.ts";
import { runTraining } from "../sae/train/driver.ts";
import { pairedData } from "../sae/crosscoder/paired_source.ts";
import { featureOwner, verifyPartitionIntegrity } from "../sae/crosscoder/partition.ts";
import {
  exclusiveCounts,
  partitionUsage,
  relativeDecoderNorms,
} from "../sae/crosscoder/diffing.ts";
import { evaluateCrosscoder } from "../sae/crosscoder/eval.ts";
import { resolveTrainConfig } from "../sae/train/config.ts";
import { assert, assertEquals, test } from "./harness.ts";
import { dfcPartition } from "../sae/arch/registry.ts";

test(
  "dfc training: exclusive true features land in their model's exclusive set, shared ones in the shared set",
  async () => {
    const d = 32, nTrue = 24, exclusive = 3, F = 30;
    const src = t.synthetic.makePairedSynthetic({
      d,
      nFeatures: nTrue,
      exclusive,
      seed: 5,
      alpha: 0,
    });
    const cfg = resolveConfig({
      arch: "dfc",
      d_in: d,
      d_sae: F,
      k: 5,
      n_inputs: 2,
      dfc_shares: [0.2, 0.2],
    }); // 6 | 6 | 18 shared
    const train = resolveTrainConfig(cfg, {
      steps: 1000,
      batch_size: 256,
      lr: 0.003,
      seed: 5,
      dead_tokens: 5000,
    });
    const res = await runTraining({ cfg, train, data: pairedData(src) });
    const part = dfcPartition(cfg)!;
    const integrity = await verifyPartitionIntegrity(res.params, part);
    assert(
      integrity.ok && integrity.max === 0,
      `partition intact after training: ${JSON.stringify(integrity)}`,
    );

    const slotOwner = featureOwner(part);
    const rel = await relativeDecoderNorms(res.params.W_dec);
    const tally = {
      exclusiveInOwnSet: 0,
      exclusiveOneSidedShared: 0,
      exclusiveElsewhere: 0,
      sharedInShared: 0,
      sharedElsewhere: 0,
      missed: 0,
    };
    for (const m of [0, 1]) {
      const dec = t.reshape(t.sliceAxis(res.params.W_dec, 0, m, m + 1), [F, d]);
      const r = await t.synthetic.featureRecovery(
        t.synthetic.featureSlice(src.features, m),
        dec,
        0.9,
      );
      for (let j = 0; j < nTrue; j++) {
        const o = src.owner[j];
        if (o !== -1 && o !== m) continue; // not present in this model
        if (!(r.bestCosine[j] > 0.9)) {
          tally.missed++;
          continue;
        }
        const slot = r.bestIndex[j];
        if (o === m) {
          if (slotOwner[slot] === m) tally.exclusiveInOwnSet++;
          else if (slotOwner[slot] === -1 && (m === 0 ? rel[slot] < 0.1 : rel[slot] > 0.9)) {
            tally.exclusiveOneSidedShared++;
          } else tally.exclusiveElsewhere++;
        } else if (slotOwner[slot] === -1) tally.sharedInShared++;
        else tally.sharedElsewhere++;
      }
    }
    const summary = JSON.stringify(tally);
    console.log(`dfc training: ${summary}; final FVU ${res.last!.fvu.toFixed(4)}`);
    // 6 exclusive and 36 (18 × 2 models) shared (true feature, model) pairs.
    assert(tally.missed <= 2, `at most 2 of 42 missed: ${summary}`);
    assertEquals(
      tally.exclusiveElsewhere,
      0,
      `no exclusive feature on a two-sided or wrong-model feature: ${summary}`,
    );
    assert(
      tally.exclusiveInOwnSet >= 4,
      `most exclusive features in their own exclusive set: ${summary}`,
    );
    assert(tally.sharedInShared >= 32, `shared features in the shared set: ${summary}`);

    // The views agree: the exclusive sets are used by their model only; shared features are mostly balanced.
    const m = await evaluateCrosscoder(res.params, cfg, [src.batch(10_000, 1024)], {
      threshold: (res.state.threshold as number) * res.state.scaleOut,
    });
    const usage = partitionUsage(part, m, rel);
    assert(
      usage[0].meanRelativeNorm === 0 && usage[1].meanRelativeNorm === 1,
      JSON.stringify(usage),
    );
    assert(usage[2].alive >= 16, `shared features are used: ${JSON.stringify(usage)}`);
    const counts = exclusiveCounts(rel);
    assert(counts.shared >= 15, `most features are two-sided: ${JSON.stringify(counts)}`);
    assert(m.fvu < 0.1, `reconstruction: FVU ${m.fvu}`);
  },
  300_000,
);
