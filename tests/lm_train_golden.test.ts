/**
 * The training step of `sae lm train` against PyTorch (tests/golden/lm_train_reference.py): a tiny
 * GPT-2 (2 layers, d 32, 4 heads, V 64, T 16, B 4, exact GELU, tied head) on one batch — the loss,
 * every gradient, and the weights after three steps of the schedule (lr 0, 1e-2, 7.75e-3) with
 * clipping that clips (norms ~4 and ~2.6 against 1.0) and AdamW decaying matrices only. Ours runs
 * in f32, the reference in f64 from the same f32 weights: rtol 1e-4 (atol 1e-6 for values near 0).
 *
 * The weights after the steps get one allowance more. Adam divides each gradient by its own size,
 * so an element whose gradient is tiny turns f32 rounding (~1e-4·max|g| of its tensor, after
 * accumulation) into a large relative change of its update: element i may differ by
 * Σlr·min(1, 1e-4·max|g|/|g_i|) (g: the step-0 gradient). The key bias is the extreme case: its
 * exact gradient is 0 (softmax ignores a constant added to a row's scores), f64 sees ~1e-18 and
 * does not move it, f32 sees ~1e-9, which against eps 1e-8 moves it by a fraction of lr.
 */
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { loadSafetensors } from "../data/safetensors.ts";
import { loadModel } from "../data/lm/model.ts";
import type { Gpt2Config } from "../data/lm/config.ts";
import type { Gpt2Params } from "../data/lm/load.ts";
import { valueAndGrad } from "../autodiff/grad.ts";
import { forward } from "../data/lm/gpt2.ts";
import { splitWindows } from "../data/lm/train/batches.ts";
import { lmLoss } from "../data/lm/train/loss.ts";
import { gpt2TensorsOf } from "../data/lm/train/save.ts";
import { initTrainState, type TrainHyper, trainStep } from "../data/lm/train/step.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { assert, assertClose, test } from "./harness.ts";

const dir = fileURLToPath(new URL("./golden/fixtures/lm_train/", import.meta.url));
const TOL = { rtol: 1e-4, atol: 1e-6 };

async function fixture() {
  const model = await loadModel(dir + "model", { dtype: "f32" });
  if (model.family !== "gpt2") throw new Error("fixture is not gpt2");
  const { tensors: ref } = await loadSafetensors(dir + "reference.safetensors");
  const hyper = JSON.parse(await readFile(dir + "reference.json", "utf8"));
  return { cfg: model.cfg as Gpt2Config, params: model.params as Gpt2Params, ref, hyper };
}

function checkRecord(
  ours: Gpt2Params,
  ref: Record<string, Tensor>,
  prefix: string,
  lrSum = 0,
): void {
  const named = gpt2TensorsOf(ours);
  for (const [name, t] of Object.entries(named)) {
    const r = ref[prefix + name], g = ref["grad." + name].dataSync();
    assert(r !== undefined, `reference lacks ${prefix + name}`);
    const a = t.dataSync(), e = r.dataSync();
    const gMax = Math.max(...Array.from(g, Math.abs));
    for (let i = 0; i < a.length; i++) {
      const noise = lrSum * Math.min(1, (1e-4 * gMax) / Math.abs(g[i]));
      const tol = TOL.atol + TOL.rtol * Math.abs(e[i]) + noise;
      assert(
        Math.abs(a[i] - e[i]) <= tol,
        `${prefix}${name} element ${i}: got ${a[i]}, expected ${e[i]} (tolerance ${tol})`,
      );
    }
  }
}

test("lm train golden: loss and every gradient match PyTorch (rtol 1e-4)", async () => {
  const { cfg, params, ref } = await fixture();
  const windows = Int32Array.from(ref.tokens.dataSync());
  const { inputs, targets } = splitWindows(windows, cfg.nPositions);
  const [loss, grads] = valueAndGrad((p: Gpt2Params) => lmLoss(forward(p, inputs, cfg), targets))(
    params,
  );
  assertClose([await loss.item()], [ref.loss.dataSync()[0]], { ...TOL, msg: "loss" });
  checkRecord(grads as Gpt2Params, ref, "grad.");
});

test("lm train golden: three AdamW steps with clipping and masked decay match PyTorch", async () => {
  const { cfg, params, ref, hyper } = await fixture();
  const h: TrainHyper = {
    lr: hyper.peak_lr,
    minLr: hyper.min_lr,
    warmup: hyper.warmup,
    steps: hyper.steps,
    weightDecay: hyper.weight_decay,
    clip: hyper.clip,
  };
  const windows = Int32Array.from(ref.tokens.dataSync());
  let state = initTrainState(params, h);
  const lrs: number[] = [], losses: number[] = [], norms: number[] = [];
  for (let i = 0; i < hyper.n_steps; i++) {
    const r = await trainStep(state, windows, cfg, h);
    state = r.state;
    lrs.push(r.lr), losses.push(r.loss), norms.push(r.gradNorm);
  }
  assertClose(lrs, ref.lr.dataSync(), { rtol: 1e-6, msg: "lr" });
  assertClose(losses, ref.loss.dataSync(), { ...TOL, msg: "loss" });
  assertClose(norms, ref.grad_norm.dataSync(), { ...TOL, msg: "grad norm" });
  checkRecord(state.params, ref, "after.", lrs.reduce((x, y) => x + y));
});
