/**
 * A fresh GPT-2 for training, as nanoGPT initialises one: every matrix and embedding N(0, 0.02),
 * the residual projections (attention c_proj = wO, MLP c_proj = wOut) N(0, 0.02/√(2L)), biases 0,
 * LayerNorm weight 1 and bias 0, the head tied to wte. The config uses the exact erf GELU.
 */
import { ones, zeros } from "../../../tensor/ops/create.ts";
import { foldIn, key, normal } from "../../../tensor/random.ts";
import type { Gpt2Config } from "../config.ts";
import type { Gpt2BlockParams, Gpt2Params, LayerNormParams } from "../load.ts";

/** The sizes a training run chooses. */
export interface ModelShape {
  layers: number;
  dModel: number;
  heads: number;
  /** Context length: the position table's rows. */
  context: number;
  vocabSize: number;
}

/** The Gpt2Config of a model of this shape: MLP 4·d, exact GELU, LayerNorm eps 1e-5. */
export function gpt2ConfigFor(s: ModelShape): Gpt2Config {
  for (const k of ["layers", "dModel", "heads", "context", "vocabSize"] as const) {
    if (!Number.isSafeInteger(s[k]) || s[k] <= 0) {
      throw new RangeError(`gpt2ConfigFor: ${k} must be a positive integer, got ${s[k]}`);
    }
  }
  if (s.dModel % s.heads !== 0) {
    throw new RangeError(`gpt2ConfigFor: d_model ${s.dModel} is not divisible by heads ${s.heads}`);
  }
  return {
    modelType: "gpt2",
    vocabSize: s.vocabSize,
    nPositions: s.context,
    dModel: s.dModel,
    nLayer: s.layers,
    nHead: s.heads,
    dMlp: 4 * s.dModel,
    gelu: "none",
    layerNormEps: 1e-5,
    scaleAttnByInverseLayerIdx: false,
    scaleAttnWeights: true,
  };
}

/** nanoGPT's initial weights for `cfg`, a pure function of `seed` (each tensor its own key). */
export function initGpt2(seed: number, cfg: Gpt2Config): Gpt2Params {
  const root = key(seed);
  let n = 0;
  const draw = (shape: number[], std: number) => normal(foldIn(root, n++), shape, { std });
  const { dModel: d, dMlp: m, nLayer: L } = cfg;
  const residStd = 0.02 / Math.sqrt(2 * L);
  const ln = (): LayerNormParams => ({ w: ones([d]), b: zeros([d]) });
  const wte = draw([cfg.vocabSize, d], 0.02);
  const wpe = draw([cfg.nPositions, d], 0.02);
  const blocks: Gpt2BlockParams[] = [];
  for (let l = 0; l < L; l++) {
    blocks.push({
      ln1: ln(),
      wQkv: draw([d, 3 * d], 0.02),
      bQkv: zeros([3 * d]),
      wO: draw([d, d], residStd),
      bO: zeros([d]),
      ln2: ln(),
      wIn: draw([d, m], 0.02),
      bIn: zeros([m]),
      wOut: draw([m, d], residStd),
      bOut: zeros([d]),
    });
  }
  return { wte, wpe, blocks, lnF: ln() };
}
