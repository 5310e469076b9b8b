/** README: train a TopK SAE on synthetic activations, encode with it, save and load it. */
import * as t from "../mod.ts";
const { sae } = t;

// 64-dimensional activations made of 256 known sparse features (batch i is a function of i).
const truth = t.synthetic.makeSynthetic({ d: 64, nFeatures: 256 });
const data = sae.syntheticData(truth);
const cfg = sae.resolveConfig({ arch: "topk", d_in: 64, d_sae: 512, k: 8 });
const train = sae.resolveTrainConfig(cfg, { steps: 1000, batch_size: 1024 });
const { params } = await sae.runTraining({ cfg, train, data, out: "runs/example" }); // saves there

const held = data.batch(sae.HELD_OUT_START, 4096); // batches training never drew
const code = sae.architecture(cfg.arch).encode(params, held.x, cfg); // sparse: k entries per row
console.log(sae.formatMetricsTable(await sae.evaluate(params, cfg, [held])));
const saved = await sae.loadSae("runs/example"); // cfg.json + sae_weights.safetensors (SAELens layout)

const { recovered } = await t.synthetic.featureRecovery(truth.features, params.W_dec); // cosine > 0.9
console.log(`${recovered} of 256 true features recovered; code kind: ${code.kind}`, saved.cfg.arch);
