/**
 * A GPT-2-shaped model whose weights and token ids come from a counter-based hash rather than a
 * random generator, so that bench/lm_forward_torch.py builds the very same values without a file
 * passing between the two: both sides then run one model, and their logits can be compared.
 */
import * as t from "../mod.ts";
import type { Gpt2Config } from "../data/lm/config.ts";
import type { Gpt2Params } from "../data/lm/load.ts";

/**
 * center + scale·u for u in [−1, 1) from a 32-bit mix of (index, seed); computed in f64 and
 * rounded once to f32, exactly as the Python side does with int64 tensors.
 */
export function hashed(n: number, seed: number, center: number, scale: number): Float32Array {
  const out = new Float32Array(n);
  const s = Math.imul(seed + 1, 0x85ebca77);
  for (let i = 0; i < n; i++) {
    let x = (Math.imul(i, 0x9e3779b1) + s) >>> 0;
    x = (x ^ (x >>> 16)) >>> 0;
    x = Math.imul(x, 0x2c1b3c6d) >>> 0;
    x = (x ^ (x >>> 13)) >>> 0;
    out[i] = ((x - 2147483648) / 2147483648) * scale + center;
  }
  return out;
}

/** The GPT-2 config of a model with these sizes (gelu_new, eps 1e-5, as GPT-2 small). */
export function benchConfig(
  o: { nLayer: number; dModel: number; nHead: number; vocabSize: number; nPositions: number },
): Gpt2Config {
  return {
    modelType: "gpt2",
    ...o,
    dMlp: 4 * o.dModel,
    gelu: "tanh",
    layerNormEps: 1e-5,
    scaleAttnByInverseLayerIdx: false,
    scaleAttnWeights: true,
  };
}

/** Hashed weights, in the order (and with the seeds) the Python side makes them. */
export function benchParams(cfg: Gpt2Config): Gpt2Params {
  let seed = 0;
  const p = (shape: number[], center: number, scale: number) =>
    t.tensor(hashed(shape.reduce((a, b) => a * b, 1), seed++, center, scale), { shape });
  const d = cfg.dModel, m = cfg.dMlp;
  const ln = () => ({ w: p([d], 1, 0.1), b: p([d], 0, 0.02) });
  const wte = p([cfg.vocabSize, d], 0, 0.04);
  const wpe = p([cfg.nPositions, d], 0, 0.01);
  const blocks = Array.from({ length: cfg.nLayer }, () => {
    const ln1 = ln();
    const wQkv = p([d, 3 * d], 0, 0.04), bQkv = p([3 * d], 0, 0.02);
    const wO = p([d, d], 0, 0.04), bO = p([d], 0, 0.02);
    const ln2 = ln();
    const wIn = p([d, m], 0, 0.04), bIn = p([m], 0, 0.02);
    const wOut = p([m, d], 0, 0.04), bOut = p([d], 0, 0.02);
    return { ln1, wQkv, bQkv, wO, bO, ln2, wIn, bIn, wOut, bOut };
  });
  return { wte, wpe, blocks, lnF: ln() };
}

/** Token ids [B, T] from the hash (seed 999), as the Python side makes them. */
export function benchTokens(B: number, T: number, vocab: number): t.Tensor {
  const u = hashed(B * T, 999, 0.5, 0.5);
  const ids = Int32Array.from(u, (x) => Math.min(vocab - 1, Math.max(0, Math.floor(x * vocab))));
  return t.tensor(ids, { shape: [B, T] });
}
