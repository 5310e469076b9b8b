/**
 * Gradients through the forward passes of GPT-NeoX (partial rotary, parallel residual), Llama
 * (grouped key/value heads) and Gemma-2 (attention and final soft-caps, a sliding window shorter
 * than the sequence) against central differences in f64, on the tiny fixture models: with respect
 * to a few weights, and to an activation through a hook that adds a leaf tensor — once with the
 * weights traced too, and once with only the leaf traced, so that the layers before the hook run
 * untraced (fused kernels where the backend has them) and the ones after it run traced.
 */
import { valueAndGrad } from "../autodiff/grad.ts";
import { treeMap } from "../autodiff/tree.ts";
import { type LanguageModel, loadModel } from "../data/lm/model.ts";
import { forward } from "../data/lm/model.ts";
import { tensor, zeros } from "../tensor/ops/create.ts";
import { add, cast, mul } from "../tensor/ops/elementwise.ts";
import { sum } from "../tensor/ops/reduce.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { assert, test } from "./harness.ts";
import { root } from "./lm_fixtures.ts";

type Params = LanguageModel["params"];
/** A path into a parameter record: keys and block indices. */
type Path = (string | number)[];

interface Case {
  fixture: "gpt_neox" | "llama" | "gemma2";
  /** One element of each probed weight (none tied to another leaf). */
  probes: [Path, number][];
  /** Where the leaf is added, and the activation's trailing size. */
  hook: string;
  width: (m: LanguageModel) => number;
}

const CASES: Case[] = [
  {
    fixture: "gpt_neox",
    probes: [
      [["blocks", 0, "wQkv"], 1 * 32 + 3], // q of head 0, a rotated dim
      [["blocks", 1, "wIn"], 77],
      [["blocks", 0, "ln2", "w"], 4],
      [["embedOut"], 3 * 32 + 9],
    ],
    hook: "blocks.0.hook_attn_out",
    width: (m) => m.cfg.dModel,
  },
  {
    fixture: "llama",
    probes: [
      [["blocks", 0, "wK"], 9 * 32 + 2], // a key/value head shared by two query heads
      [["blocks", 1, "wV"], 3 * 32 + 30],
      [["blocks", 0, "wGate"], 100],
      [["lnF"], 11],
    ],
    hook: "blocks.0.mlp.hook_post",
    width: (m) => m.cfg.dMlp,
  },
  {
    fixture: "gemma2",
    probes: [
      [["blocks", 0, "wQ"], 17 * 32 + 5], // layer 0 is the windowed one
      [["blocks", 1, "wK"], 2 * 32 + 7],
      [["blocks", 0, "ln1Post"], 6],
      [["blocks", 1, "wUp"], 200],
    ],
    hook: "blocks.0.hook_resid_mid",
    width: (m) => m.cfg.dModel,
  },
];

// Eight positions: longer than Gemma-2's window of 5, so the window hides keys.
const TOKENS = [[3, 1, 4, 1, 5, 9, 2, 6], [5, 3, 5, 8, 9, 7, 9, 3]];
const B = TOKENS.length, T = TOKENS[0].length;

function getAt(p: unknown, path: Path): Tensor {
  return path.reduce<unknown>((o, k) => (o as Record<string | number, unknown>)[k], p) as Tensor;
}

/** A copy of the record (containers only) with the leaf at `path` replaced. */
function setAt(p: unknown, path: Path, t: Tensor): unknown {
  if (path.length === 0) return t;
  const [k, ...rest] = path;
  const copy = Array.isArray(p) ? [...p] : { ...(p as Record<string, unknown>) };
  (copy as Record<string | number, unknown>)[k] = setAt(
    (p as Record<string | number, unknown>)[k],
    rest,
    t,
  );
  return copy;
}

/** `base` with element i moved by delta. */
function nudged(base: Tensor, i: number, delta: number): Tensor {
  const vals = Float64Array.from(base.dataSync());
  vals[i] += delta;
  return tensor(vals, { shape: base.shape });
}

/** |analytic − central difference| ≤ 1e-5·(|fd| + 1), and the probe must move the loss. */
function assertGrad(what: string, an: number, at: (delta: number) => number): void {
  const h = 1e-5;
  const fd = (at(h) - at(-h)) / (2 * h);
  assert(Math.abs(fd) > 1e-6, `${what}: the probe has no effect (${fd})`);
  assert(Math.abs(an - fd) <= 1e-5 * (Math.abs(fd) + 1), `${what}: gradient ${an}, central ${fd}`);
}

for (const c of CASES) {
  const setup = async () => {
    const loaded = await loadModel(root + c.fixture);
    const params = treeMap((x: Tensor) => cast(x, "f64"), loaded.params) as Params;
    const model = { ...loaded, params } as LanguageModel;
    const V = model.cfg.vocabSize;
    const weights = tensor(Float64Array.from({ length: B * T * V }, (_, i) => Math.sin(i)), {
      shape: [B, T, V],
    });
    /** Σ logits·weights, with `leaf` added at the case's hook. */
    const loss = (p: Params, leaf: Tensor) =>
      sum(mul(
        forward({ ...model, params: p } as LanguageModel, TOKENS, {
          hooks: { [c.hook]: (a) => add(a, leaf) },
        }),
        weights,
      ));
    const leaf = zeros([B, T, c.width(model)], "f64");
    return { model, params, loss, leaf };
  };

  test(`lm grad: ${c.fixture} weight gradients match central differences in f64`, async () => {
    const { params, loss, leaf } = await setup();
    const [, g] = valueAndGrad((p: Params) => loss(p, leaf))(params);
    for (const [path, i] of c.probes) {
      assertGrad(
        `${path.join(".")}[${i}]`,
        getAt(g, path).dataSync()[i],
        (delta) =>
          loss(setAt(params, path, nudged(getAt(params, path), i, delta)) as Params, leaf)
            .dataSync()[0],
      );
    }
  });

  test(`lm grad: ${c.fixture} gradient w.r.t. a hooked activation (${c.hook}) matches central differences`, async () => {
    const { params, loss, leaf } = await setup();
    // Traced together with the weights, and alone (the layers before the hook untraced).
    const [, both] = valueAndGrad((r: { p: Params; leaf: Tensor }) => loss(r.p, r.leaf))({
      p: params,
      leaf,
    });
    const [, alone] = valueAndGrad((l: Tensor) => loss(params, l))(leaf);
    const n = leaf.size, w = leaf.shape[2];
    // A few positions, early and late (a late one reaches fewer later positions).
    for (const i of [3, w + 7, 3 * w + 1, n - w + 2, n - 1]) {
      const at = (delta: number) => loss(params, nudged(leaf, i, delta)).dataSync()[0];
      assertGrad(`${c.hook}[${i}] (with the weights)`, both.leaf.dataSync()[i], at);
      assertGrad(`${c.hook}[${i}] (alone)`, alone.dataSync()[i], at);
    }
  });
}
