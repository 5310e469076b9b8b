import { assertEquals, test } from "./harness.ts";
import * as t from "../mod.ts";
import { makeSynthetic } from "../data/synthetic.ts";
import { resolveConfig } from "../sae/config.ts";
import { runTraining } from "../sae/train/driver.ts";
import { syntheticData } from "../data/sources.ts";
import { stateTensors } from "../sae/train/step.ts";
import { resolveTrainConfig } from "../sae/train/config.ts";

test("a training loop under tidy holds a flat number of live buffers", () => {
  const [k1, k2] = t.random.split(t.random.key(0));
  const x = t.random.normal(k1, [64, 16]);
  type P = { W: t.Tensor; b: t.Tensor };
  let params: P = { W: t.random.normal(k2, [16, 32], { std: 0.1 }), b: t.zeros([32]) };
  const opt = t.chain(t.clipByGlobalNorm(1), t.adam({ lr: 1e-3 }));
  let state = opt.init(params);
  const lg = t.valueAndGrad((p: P) => {
    const f = t.relu(t.add(t.matmul(x, p.W), p.b));
    return t.mean(t.sum(t.square(t.sub(t.matmul(f, t.transpose(p.W)), x)), -1));
  });
  const counts: number[] = [];
  for (let step = 0; step < 300; step++) {
    const next = t.tidy(() => {
      const [loss, g] = lg(params);
      const [u, s] = opt.update(g, state, params);
      return { params: t.applyUpdates(params, u), state: s, loss };
    });
    t.dispose([params, state, next.loss]);
    params = next.params;
    state = next.state;
    if (step >= 10 && step % 50 === 0) counts.push(t.memoryStats().liveBuffers);
  }
  assertEquals(new Set(counts).size, 1, `live buffers per checkpoint ${counts.join(", ")}`);
});

test("tidy releases intermediates, keeps results and kept tensors, and nests", () => {
  const before = t.memoryStats().liveBuffers;
  let inner: t.Tensor | undefined;
  const out = t.tidy(() => {
    const a = t.ones([4]);
    inner = t.keep(t.mul(a, 3));
    const r = t.tidy(() => t.add(a, t.exp(a)));
    return { r };
  });
  assertEquals(out.r.disposed, false);
  assertEquals(inner!.disposed, false);
  assertEquals(t.memoryStats().liveBuffers - before, 2);
  t.dispose([out, inner]);
  assertEquals(t.memoryStats().liveBuffers, before);
});

test("views share storage: the buffer is freed when the last view goes", () => {
  const before = t.memoryStats().liveBuffers;
  const a = t.ones([2, 3]);
  const v = t.transpose(a);
  a.dispose();
  assertEquals(t.memoryStats().liveBuffers - before, 1);
  assertEquals(Array.from(v.dataSync()), [1, 1, 1, 1, 1, 1]);
  {
    using w = t.reshape(v, [6]);
    v.dispose();
    assertEquals(w.size, 6);
  }
  assertEquals(t.memoryStats().liveBuffers, before);
});

test("SAE training from initialisation to the folded weights leaves no buffer to the GC (topk, jumprelu, crosscoder; normalised, geometric-median b_dec)", async () => {
  // On the cpu nothing is reclaimed behind the count's back (host buffers have no finalizer), so
  // an intermediate that is neither disposed nor returned shows up here deterministically; on a
  // GPU the same tensor would hold device memory until the GC happened to run.
  const cases = [
    { arch: "topk", d_in: 8, d_sae: 32, k: 2 },
    { arch: "jumprelu", d_in: 8, d_sae: 32 },
    { arch: "batchtopk-crosscoder", d_in: 8, d_sae: 32, k: 2, n_inputs: 2 },
  ] as const;
  for (const c of cases) {
    const src = makeSynthetic({
      d: 8,
      nFeatures: 16,
      meanActive: 2,
      seed: 3,
      ...("n_inputs" in c ? { layers: c.n_inputs } : {}),
    });
    const data = syntheticData(src);
    const cfg = resolveConfig(c);
    const train = resolveTrainConfig(cfg, {
      steps: 3,
      batch_size: 16,
      seed: 0,
      normalize_activations: true,
      geometric_median_init: true,
    });
    const before = t.memoryStats();
    const res = await runTraining({ cfg, train, data });
    t.dispose([res.params, stateTensors(res.state)]);
    assertEquals(
      t.memoryStats(),
      before,
      `${c.arch}: live storage after training and disposing its results`,
    );
    t.dispose(src.features);
    if (src.offset) t.dispose(src.offset);
  }
});
