/**
 * TransformerLens's default weight processing (`HookedTransformer.from_pretrained`), so that
 * dictionaries trained on TransformerLens activations see the values they were trained on:
 *
 * - foldLn: each norm's weight (and a LayerNorm's bias) moves into the matrices that read the
 *   norm's output; after a LayerNorm those matrices are also centred over d, since their input
 *   has zero mean. RMSNorm: weights only.
 * - centerWritingWeights (LayerNorm families only): the embeddings and every matrix and bias that
 *   writes to the residual stream lose their mean over d, so the whole stream is centred.
 * - centerUnembed: the unembedding (and its bias) lose their mean over the vocabulary; skipped
 *   under a final soft-cap, which is not invariant to a constant shift.
 * - foldValueBiases: attention rows sum to 1, so a value bias adds a constant to z; it moves into
 *   the output bias (b_O += Σ_h b_V[h]·W_O[h]) and the value bias becomes 0.
 *
 * Log-probabilities are unchanged; hooks on the residual stream, v, z and the logits are not
 * (see docs). Pure: new tensors; tensors no step touches are shared with the input.
 *
 * A folded norm stays in the forward pass with identity parameters (LayerNorm w = 1, b = 0;
 * RMSNorm w = 1; Gemma's (1 + w) form w = 0) rather than a flag: x·1 + 0 is exact in floating
 * point, so it computes TransformerLens's LayerNormPre / RMSNormPre, and every family keeps one
 * code path. The price is one multiply and add per norm.
 */
import { onesLike, tensor, zerosLike } from "../../tensor/ops/create.ts";
import { add, mul, sub } from "../../tensor/ops/elementwise.ts";
import { mean, sum } from "../../tensor/ops/reduce.ts";
import { concat, reshape, sliceAxis, take } from "../../tensor/ops/shape.ts";
import { Tensor } from "../../tensor/tensor.ts";
import { widen16 } from "./common.ts";
import type { Gemma2BlockParams, Gemma2Params } from "./gemma2.ts";
import type { NeoxBlockParams, NeoxParams } from "./gpt_neox.ts";
import type { LlamaBlockParams, LlamaConfig, LlamaParams } from "./llama.ts";
import type { Gpt2BlockParams, Gpt2Params, LayerNormParams } from "./load.ts";
import type { LanguageModel } from "./model.ts";

/** TransformerLens's processing flags (all true by default, as in `from_pretrained`). */
export interface ProcessWeightsOptions {
  foldLn?: boolean;
  centerWritingWeights?: boolean;
  centerUnembed?: boolean;
  foldValueBiases?: boolean;
}

/**
 * The steps that apply to `model`: the options with TransformerLens's defaults, less what it skips
 * (centring writing weights needs LayerNorm; centring the unembedding is skipped under a final
 * soft-cap; folding value biases needs value biases).
 */
export function processingSteps(
  model: LanguageModel,
  opts: ProcessWeightsOptions = {},
): Required<ProcessWeightsOptions> {
  const layerNorm = model.family === "gpt2" || model.family === "gpt_neox";
  const softcapped = model.family === "gemma2" && model.cfg.finalSoftcap !== null;
  const valueBias = layerNorm || (model.family === "qwen2" && model.cfg.qkvBias);
  return {
    foldLn: opts.foldLn ?? true,
    centerWritingWeights: (opts.centerWritingWeights ?? true) && layerNorm,
    centerUnembed: (opts.centerUnembed ?? true) && !softcapped,
    foldValueBiases: (opts.foldValueBiases ?? true) && valueBias,
  };
}

/** A new model with TransformerLens's weight processing applied; `model` is left as it was. */
export function processWeights(
  model: LanguageModel,
  opts: ProcessWeightsOptions = {},
): LanguageModel {
  const steps = processingSteps(model, opts);
  // Folding multiplies weights together: 16-bit weights are widened so that it happens in f32.
  model = { ...model, params: widenAll(model.params) } as LanguageModel;
  switch (model.family) {
    case "gpt2":
      return { ...model, params: processGpt2(model.params, steps) };
    case "gpt_neox":
      return { ...model, params: processNeox(model.params, model.cfg.nHead, steps) };
    case "llama":
    case "qwen2":
      return { ...model, params: processLlama(model.params, model.cfg, steps) };
    case "gemma2":
      return { ...model, params: processGemma2(model.params, steps) };
  }
}

type Steps = Required<ProcessWeightsOptions>;

/** Every f16/bf16 tensor of a parameter tree as f32; other leaves shared. */
function widenAll<T>(tree: T): T {
  if (tree instanceof Tensor) return widen16(tree) as T;
  if (Array.isArray(tree)) return tree.map(widenAll) as T;
  if (tree === null || typeof tree !== "object") return tree;
  return Object.fromEntries(
    Object.entries(tree as Record<string, unknown>).map(([k, v]) => [k, widenAll(v)]),
  ) as T;
}

/** x less its mean along `axis`. */
const center = (x: Tensor, axis: number): Tensor => sub(x, mean(x, axis, { keepdims: true }));

/** A LayerNorm that passes its normalised input through: LayerNormPre. */
const identityLn = (ln: LayerNormParams): LayerNormParams => ({
  w: onesLike(ln.w),
  b: zerosLike(ln.b),
});

/**
 * Fold a LayerNorm (w, b) into a projection y = LN(x)·W + c that reads it. `inAxis` is W's input
 * (d) axis: 0 for GPT-2's Conv1D [in, out], 1 for nn.Linear [out, in]. The bias takes b·W (with
 * the unscaled W), W takes w on its input rows, then W loses its mean over d.
 */
function foldLayerNorm(
  W: Tensor,
  c: Tensor,
  ln: LayerNormParams,
  inAxis: 0 | 1,
): { W: Tensor; c: Tensor } {
  const along = (v: Tensor) => reshape(v, inAxis === 0 ? [-1, 1] : [1, -1]);
  const c2 = add(c, sum(mul(W, along(ln.b)), inAxis));
  return { W: center(mul(W, along(ln.w)), inAxis), c: c2 };
}

/** The weights a LayerNorm block (GPT-2, NeoX) shares, whatever its orientation. */
type LnBlock = Gpt2BlockParams & NeoxBlockParams;

/**
 * Fold ln1 into the QKV projection and ln2 into the MLP input, and centre the weights that write
 * to the residual, for a block whose matrices are [in, out] (`inAxis` 0: GPT-2's Conv1D) or
 * [out, in] (`inAxis` 1: nn.Linear).
 */
function foldAndCentreBlock<B extends LnBlock>(b: B, inAxis: 0 | 1, steps: Steps): B {
  let { ln1, wQkv, bQkv, wO, bO, ln2, wIn, bIn, wOut, bOut } = b;
  if (steps.foldLn) {
    ({ W: wQkv, c: bQkv } = foldLayerNorm(wQkv, bQkv, ln1, inAxis));
    ({ W: wIn, c: bIn } = foldLayerNorm(wIn, bIn, ln2, inAxis));
    ln1 = identityLn(ln1);
    ln2 = identityLn(ln2);
  }
  if (steps.centerWritingWeights) {
    // The output (d) axis is the other one.
    const outAxis = inAxis === 0 ? 1 : 0;
    wO = center(wO, outAxis);
    bO = center(bO, 0);
    wOut = center(wOut, outAxis);
    bOut = center(bOut, 0);
  }
  return { ...b, ln1, wQkv, bQkv, wO, bO, ln2, wIn, bIn, wOut, bOut };
}

/**
 * The unembedding [V, d] (and bias [V]) after the final norm's fold and the vocabulary centring.
 * An `ln` without `b` is an RMSNorm weight: no bias to fold, no centring over d (an RMSNorm's
 * output is not mean-free).
 */
function processHead(
  head: Tensor,
  bias: Tensor | undefined,
  ln: LayerNormParams | { w: Tensor; b?: undefined },
  steps: Steps,
): { head: Tensor; bias: Tensor | undefined } {
  if (steps.foldLn) {
    if (ln.b) bias = bias ? add(bias, sum(mul(head, ln.b), 1)) : sum(mul(head, ln.b), 1);
    head = mul(head, ln.w);
    if (ln.b) head = center(head, 1);
  }
  if (steps.centerUnembed) {
    head = center(head, 0);
    if (bias) bias = center(bias, 0);
  }
  return { head, bias };
}

function processGpt2(p: Gpt2Params, steps: Steps): Gpt2Params {
  const d = p.wte.shape[1];
  const blocks = p.blocks.map((b): Gpt2BlockParams => {
    const f = foldAndCentreBlock(b, 0, steps);
    let { bO, bQkv } = f;
    const { wO } = f;
    if (steps.foldValueBiases) {
      // Columns 2d…3d of the QKV bias are v, head-major as z is flattened; wO is [H·hd, d].
      const bV = sliceAxis(bQkv, 0, 2 * d, 3 * d);
      bO = add(bO, sum(mul(wO, reshape(bV, [d, 1])), 0));
      bQkv = concat([sliceAxis(bQkv, 0, 0, 2 * d), zerosLike(bV)], 0);
    }
    return { ...f, bQkv, bO };
  });
  // The head reads the original wte: it is untied before wte is centred.
  const { head, bias } = processHead(p.head ?? p.wte, p.headBias, p.lnF, steps);
  const wte = steps.centerWritingWeights ? center(p.wte, 1) : p.wte;
  const out: Gpt2Params = {
    wte,
    wpe: steps.centerWritingWeights ? center(p.wpe, 1) : p.wpe,
    blocks,
    lnF: steps.foldLn ? identityLn(p.lnF) : p.lnF,
  };
  if (head !== wte) out.head = head;
  if (bias) out.headBias = bias;
  return out;
}

function processNeox(p: NeoxParams, H: number, steps: Steps): NeoxParams {
  const d = p.embedIn.shape[1], hd = d / H;
  const blocks = p.blocks.map((b): NeoxBlockParams => {
    const f = foldAndCentreBlock(b, 1, steps);
    let { bO, bQkv } = f;
    const { wO } = f;
    if (steps.foldValueBiases) {
      // Per head, the QKV rows are q, k, v (hd each); v flattened head-major matches z.
      const perHead = reshape(bQkv, [H, 3 * hd]);
      const bV = sliceAxis(perHead, 1, 2 * hd);
      bO = add(bO, sum(mul(wO, reshape(bV, [1, d])), 1));
      bQkv = reshape(concat([sliceAxis(perHead, 1, 0, 2 * hd), zerosLike(bV)], 1), [3 * d]);
    }
    return { ...f, bQkv, bO };
  });
  const { head, bias } = processHead(p.embedOut, p.headBias, p.lnF, steps);
  const out: NeoxParams = {
    embedIn: steps.centerWritingWeights ? center(p.embedIn, 1) : p.embedIn,
    blocks,
    lnF: steps.foldLn ? identityLn(p.lnF) : p.lnF,
    embedOut: head,
  };
  if (bias) out.headBias = bias;
  return out;
}

/** W [out, in] with an RMSNorm weight w folded into its input columns. */
const foldRms = (W: Tensor, w: Tensor): Tensor => mul(W, w);

function processLlama(p: LlamaParams, cfg: LlamaConfig, steps: Steps): LlamaParams {
  const rep = cfg.nHead / cfg.nKvHead;
  const kvOfHead = tensor(
    Array.from({ length: cfg.nHead }, (_, h) => Math.floor(h / rep)),
    { dtype: "i32" },
  );
  const blocks = p.blocks.map((b): LlamaBlockParams => {
    const out = { ...b };
    if (steps.foldLn) {
      out.wQ = foldRms(b.wQ, b.ln1);
      out.wK = foldRms(b.wK, b.ln1);
      out.wV = foldRms(b.wV, b.ln1);
      out.wGate = foldRms(b.wGate, b.ln2);
      out.wUp = foldRms(b.wUp, b.ln2);
      out.ln1 = onesLike(b.ln1);
      out.ln2 = onesLike(b.ln2);
    }
    if (steps.foldValueBiases && b.bV) {
      // Query head h reads key/value head ⌊h/rep⌋, so its z carries that head's value bias.
      const perHead = reshape(take(reshape(b.bV, [cfg.nKvHead, cfg.headDim]), kvOfHead, 0), [
        1,
        cfg.nHead * cfg.headDim,
      ]);
      const folded = sum(mul(b.wO, perHead), 1);
      out.bO = b.bO ? add(b.bO, folded) : folded;
      out.bV = zerosLike(b.bV);
    }
    return out;
  });
  const { head } = processHead(p.head, undefined, { w: p.lnF }, steps);
  return {
    embed: p.embed,
    blocks,
    lnF: steps.foldLn ? onesLike(p.lnF) : p.lnF,
    head,
  };
}

function processGemma2(p: Gemma2Params, steps: Steps): Gemma2Params {
  // Gemma's norms multiply by (1 + w): the folded scale is 1 + w and the identity is w = 0. The
  // post-norms (ln1_post, ln2_post) feed the residual directly and stay as they are.
  const scale = (w: Tensor) => add(w, 1);
  const blocks = p.blocks.map((b): Gemma2BlockParams => {
    if (!steps.foldLn) return b;
    return {
      ...b,
      wQ: foldRms(b.wQ, scale(b.ln1)),
      wK: foldRms(b.wK, scale(b.ln1)),
      wV: foldRms(b.wV, scale(b.ln1)),
      wGate: foldRms(b.wGate, scale(b.ln2)),
      wUp: foldRms(b.wUp, scale(b.ln2)),
      ln1: zerosLike(b.ln1),
      ln2: zerosLike(b.ln2),
    };
  });
  const { head } = processHead(p.head, undefined, { w: scale(p.lnF) }, steps);
  return {
    embed: p.embed,
    blocks,
    lnF: steps.foldLn ? zerosLike(p.lnF) : p.lnF,
    head,
  };
}
