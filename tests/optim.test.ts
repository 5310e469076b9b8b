import { assert, assertClose, assertEquals, test } from "./harness.ts";
import * as t from "../mod.ts";

/** Adam in scalar JS, the textbook form, as the reference. */
function adamRef(
  p: number[],
  grads: number[][],
  lr: number,
  b1: number,
  b2: number,
  eps: number,
  wd = 0,
): number[] {
  const m = p.map(() => 0), v = p.map(() => 0);
  const x = [...p];
  grads.forEach((g, s) => {
    const tt = s + 1;
    for (let i = 0; i < x.length; i++) {
      m[i] = b1 * m[i] + (1 - b1) * g[i];
      v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
      const mh = m[i] / (1 - b1 ** tt), vh = v[i] / (1 - b2 ** tt);
      x[i] = x[i] - lr * mh / (Math.sqrt(vh) + eps) - lr * wd * x[i];
    }
  });
  return x;
}

test("adam and adamw match the textbook update over several steps (f64)", async () => {
  const p0 = [0.5, -1.25, 2, 0.125];
  const grads = [[0.1, -0.2, 0.3, 0], [1, 1, -1, 0.5], [-0.3, 0.05, 0.2, 2]];
  for (const wd of [0, 0.01]) {
    const opt = wd ? t.adamw({ lr: 0.1, weightDecay: wd }) : t.adam({ lr: 0.1 });
    let params = { w: t.tensor(p0, { dtype: "f64" }) };
    let state = opt.init(params);
    for (const g of grads) {
      const [u, s] = opt.update({ w: t.tensor(g, { dtype: "f64" }) }, state, params);
      params = t.applyUpdates(params, u);
      state = s;
    }
    assertClose(await params.w.data(), adamRef(p0, grads, 0.1, 0.9, 0.999, 1e-8, wd), {
      rtol: 1e-12,
      atol: 1e-14,
    });
    assertEquals(state.count, 3);
  }
});

test("sgd with momentum and nesterov", async () => {
  const opt = t.sgd({ lr: 0.5, momentum: 0.9 });
  let p = { w: t.tensor([1], { dtype: "f64" }) };
  let s = opt.init(p);
  for (const g of [1, 2]) {
    const [u, s2] = opt.update({ w: t.tensor([g], { dtype: "f64" }) }, s, p);
    p = t.applyUpdates(p, u);
    s = s2;
  }
  // m1 = 1, m2 = 0.9 + 2 = 2.9: 1 - 0.5·1 - 0.5·2.9
  assertClose(await p.w.data(), [1 - 0.5 - 1.45], { rtol: 1e-12 });
  const nest = t.sgd({ lr: 1, momentum: 0.5, nesterov: true });
  const [u] = nest.update({ w: t.tensor([2]) }, nest.init({ w: t.tensor([0]) }));
  assertClose(await u.w.data(), [-(2 + 0.5 * 2)]);
});

test("a learning-rate schedule is read at the optimizer's step count", async () => {
  const opt = t.sgd({ lr: (step) => [1, 10, 100][step] });
  let s = opt.init({ w: t.tensor([0]) });
  const seen: number[] = [];
  for (let i = 0; i < 3; i++) {
    const [u, s2] = opt.update({ w: t.tensor([1]) }, s);
    seen.push(-(await u.w.data())[0]);
    s = s2;
  }
  assertEquals(seen, [1, 10, 100]);
});

test("clipByGlobalNorm scales all leaves together only above the threshold", async () => {
  const clip = t.clipByGlobalNorm(1);
  const g = { a: t.tensor([3]), b: [t.tensor([4])] };
  const [c] = clip.update(g, null);
  assertClose(await c.a.data(), [0.6]);
  assertClose(await c.b[0].data(), [0.8]);
  const [same] = clip.update({ a: t.tensor([0.3]) }, null);
  assertClose(await same.a.data(), [0.3]);
  assertClose(await t.globalNorm(g).data(), [5]);
});

test("chain(clip, adam) clips before the Adam moments see the gradient", async () => {
  const opt = t.chain(t.clipByGlobalNorm(1), t.adam({ lr: 1 }));
  const s = opt.init({ w: t.tensor([0, 0]) });
  const [u, s2] = opt.update({ w: t.tensor([30, 40]) }, s);
  // First Adam step is lr·sign(g) up to eps, whatever the scale.
  assertClose(await u.w.data(), [-1, -1], { rtol: 1e-6 });
  const adamState = (s2 as t.AdamState[])[1];
  assertClose(await (adamState.mu as { w: t.Tensor }).w.data(), [0.06, 0.08], { rtol: 1e-6 });
});

test("schedules: dictionary_learning's warmup/decay figures, linear, cosine", () => {
  const s = t.warmupDecaySchedule({ peak: 1, warmupSteps: 100, totalSteps: 1000, decayStart: 800 });
  assertClose([s(0), s(50), s(500), s(950), s(1000)], [0, 0.5, 1, 0.25, 0]);
  const lin = t.linearSchedule(1, 0, 10, 5);
  assertClose([lin(0), lin(5), lin(10), lin(15), lin(99)], [1, 1, 0.5, 0, 0]);
  const cos = t.cosineDecaySchedule(2, 100, 0.1);
  assertClose([cos(0), cos(50), cos(100), cos(200)], [2, 1.1, 0.2, 0.2]);
  const wc = t.warmupCosineSchedule({ peak: 1, warmupSteps: 10, totalSteps: 110 });
  assertClose([wc(5), wc(10), wc(60), wc(110)], [0.5, 1, 0.5, 0], { atol: 1e-12 });
  assert(t.constantSchedule(3)(1e9) === 3);
});

test("fitting a least-squares problem with valueAndGrad and Adam converges", async () => {
  const k = t.random.split(t.random.key(7), 2);
  const X = t.random.normal(k[0], [64, 3], { dtype: "f64" });
  const wTrue = t.tensor([[1.5], [-2], [0.25]], { dtype: "f64" });
  const y = t.matmul(X, wTrue);
  const opt = t.adam({ lr: 0.05 });
  let p = { w: t.zeros([3, 1], "f64") };
  let s = opt.init(p);
  const lg = t.valueAndGrad((q: typeof p) => t.mean(t.square(t.sub(t.matmul(X, q.w), y))));
  for (let i = 0; i < 600; i++) {
    const next = t.tidy(() => {
      const [, g] = lg(p);
      const [u, s2] = opt.update(g, s, p);
      return { p: t.applyUpdates(p, u), s: s2 };
    });
    t.dispose([p, s]);
    ({ p, s } = next);
  }
  assertClose(await p.w.data(), [1.5, -2, 0.25], { atol: 1e-3 });
});

test("adam: the backend's fused kernel and the composite path agree", async () => {
  const [k1, k2] = t.random.split(t.random.key(3));
  const g = t.random.normal(k1, [7, 5]), p = t.random.normal(k2, [7, 5]);
  const opt = t.adamw({ lr: 0.01, weightDecay: 0.1 });
  // A transposed view is not contiguous, so this call takes the composite path.
  const asView = (x: t.Tensor) =>
    t.transpose(t.tensor(t.transpose(x).dataSync() as Float32Array, { shape: [5, 7] }));
  const gT = asView(g), pT = asView(p);
  let sa = opt.init({ w: p }), sb = opt.init({ w: pT });
  for (let i = 0; i < 3; i++) {
    const [ua, sa2] = opt.update({ w: g }, sa, { w: p });
    const [ub, sb2] = opt.update({ w: gT }, sb, { w: pT });
    assertClose(await ub.w.data(), await ua.w.data(), { rtol: 1e-5, atol: 1e-7 });
    [sa, sb] = [sa2, sb2];
  }
  assert(!gT.isContiguous() && g.isContiguous(), "the two calls take different paths");
});
