/**
 * The core at work until the SAE module lands: fit a small ReLU sparse autoencoder with
 * valueAndGrad and Adam to synthetic activations built from known sparse features, then report
 * how well it reconstructs and how many true features it found. Runs under Deno and Bun:
 *   deno run -A examples/fit.ts        bun examples/fit.ts
 */
import * as t from "../mod.ts";

const d = 32, nTrue = 64, F = 128, batch = 256, steps = 1500, l1 = 0.2;
const [kFeat, kInit, kData] = t.random.split(t.random.key(0), 3);

// Ground truth: unit-norm feature directions, each active with probability 4%, magnitudes in (0, 1].
const truth = t.tidy(() => {
  const dirs = t.random.normal(kFeat, [nTrue, d]);
  return t.div(dirs, t.norm(dirs, 1, { keepdims: true }));
});
function sample(key: t.PRNGKey): t.Tensor {
  const [ka, km] = t.random.split(key);
  const active = t.cast(t.random.bernoulli(ka, 0.04, [batch, nTrue]), "f32");
  return t.matmul(t.mul(active, t.random.uniform(km, [batch, nTrue])), truth);
}

type Params = { W_enc: t.Tensor; b_enc: t.Tensor; W_dec: t.Tensor; b_dec: t.Tensor };
const W = t.tidy(() => {
  const w = t.random.normal(kInit, [F, d]);
  return t.mul(t.div(w, t.norm(w, 1, { keepdims: true })), 0.1);
});
let params: Params = { W_enc: t.transpose(W), b_enc: t.zeros([F]), W_dec: W, b_dec: t.zeros([d]) };

function loss(p: Params, x: t.Tensor): [t.Tensor, { mse: t.Tensor; l0: t.Tensor }] {
  const f = t.relu(t.add(t.matmul(t.sub(x, p.b_dec), p.W_enc), p.b_enc));
  const xhat = t.add(t.matmul(f, p.W_dec), p.b_dec);
  const mse = t.mean(t.sum(t.square(t.sub(x, xhat)), -1));
  const sparsity = t.mean(t.sum(t.mul(f, t.norm(p.W_dec, -1)), -1));
  const l0 = t.mean(t.sum(t.gt(f, 0), -1));
  return [t.add(mse, t.mul(sparsity, l1)), { mse, l0 }];
}

const opt = t.adam({
  lr: t.warmupDecaySchedule({ peak: 3e-3, warmupSteps: 50, totalSteps: steps, decayStart: 1000 }),
});
let state = opt.init(params);
const lossAndGrad = t.valueAndGrad(loss, { hasAux: true });
const started = performance.now();
for (let step = 0; step < steps; step++) {
  const next = t.tidy(() => {
    const x = sample(t.random.foldIn(kData, step));
    const [[value, aux], grads] = lossAndGrad(params, x);
    const [updates, s] = opt.update(grads, state, params);
    return { params: t.applyUpdates(params, updates), state: s, value, aux };
  });
  t.dispose([params, state]);
  ({ params, state } = next);
  if (step % 250 === 0 || step === steps - 1) {
    const [v, mse, l0] = await Promise.all([
      next.value.item(),
      next.aux.mse.item(),
      next.aux.l0.item(),
    ]);
    console.log(
      `step ${String(step).padStart(4)}  loss ${v.toFixed(5)}  mse ${mse.toFixed(5)}  L0 ${
        l0.toFixed(1)
      }`,
    );
  }
  t.dispose([next.value, next.aux]);
}
const seconds = (performance.now() - started) / 1000;

// Recovery: share of true features whose best-matching decoder row has cosine > 0.9.
const cos = t.matmul(
  truth,
  t.transpose(t.div(params.W_dec, t.norm(params.W_dec, 1, { keepdims: true }))),
);
const best = await t.max(cos, 1).data();
const recovered = best.filter((c) => c > 0.9).length;
const x = sample(t.random.key(12345));
const [, aux] = loss(params, x);
const fvu = (await aux.mse.item()) / (await t.sum(t.variance(x, 0)).item());
console.log(
  `trained ${steps} steps in ${seconds.toFixed(1)} s (${
    ((steps * batch) / seconds).toFixed(0)
  } samples/s) on ${t.getBackend().info()}`,
);
console.log(
  `held-out FVU ${fvu.toFixed(4)}, L0 ${
    (await aux.l0.item()).toFixed(1)
  }, true features recovered (cos > 0.9): ${recovered}/${nTrue}`,
);
