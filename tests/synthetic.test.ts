import { assert, assertClose, assertEquals, assertThrows, test } from "./harness.ts";
import * as t from "../mod.ts";
import {
  featureRecovery,
  featureSlice,
  makePairedSynthetic,
  makeSynthetic,
} from "../data/synthetic.ts";

const f32 = async (x: t.Tensor) => (await x.data()) as Float32Array;

/** FNV-1a over the raw bits: a bit-exact fingerprint of an array. */
function fingerprint(a: Float32Array | Float64Array): string {
  const w = new Uint32Array(a.buffer, a.byteOffset, a.byteLength / 4);
  let h = 0x811c9dc5;
  for (let i = 0; i < w.length; i++) h = Math.imul(h ^ w[i], 0x01000193) >>> 0;
  return h.toString(16);
}

/** Per-feature firing counts of codes [B, n] (or of one model's codes). */
function firing(codes: Float32Array, B: number, n: number): Float64Array {
  const c = new Float64Array(n);
  for (let s = 0; s < B; s++) for (let i = 0; i < n; i++) if (codes[s * n + i] !== 0) c[i]++;
  return c;
}

test("synthetic: same seed and index give the same batch; other indices and seeds differ", async () => {
  const cfg = { d: 24, nFeatures: 64, noise: 0.05, bias: true, correlatedGroups: 4, seed: 7 };
  const a = makeSynthetic(cfg), b = makeSynthetic(cfg);
  assertEquals(fingerprint(await f32(a.features)), fingerprint(await f32(b.features)), "features");
  const x1 = a.batch(3, 50, { withCodes: true }), x2 = b.batch(3, 50, { withCodes: true });
  assertEquals(fingerprint(await f32(x1.x)), fingerprint(await f32(x2.x)), "x");
  assertEquals(fingerprint(await f32(x1.codes!)), fingerprint(await f32(x2.codes!)), "codes");
  assert(
    fingerprint(await f32(a.batch(4, 50).x)) !== fingerprint(await f32(x1.x)),
    "index 4 should differ from index 3",
  );
  const other = makeSynthetic({ ...cfg, seed: 8 });
  assert(
    fingerprint(await f32(other.batch(3, 50).x)) !== fingerprint(await f32(x1.x)),
    "seed 8 should differ from seed 7",
  );
});

test("synthetic: batches are bit-identical across runtimes (golden fingerprints)", async () => {
  // Drawn on the host with basic IEEE arithmetic only, so Deno and Bun must agree to the bit.
  const src = makeSynthetic({
    d: 16,
    nFeatures: 48,
    meanActive: 4,
    correlatedGroups: 3,
    magnitude: { kind: "exponential", mean: 1 },
    seed: 11,
  });
  const { codes } = src.batch(5, 64, { withCodes: true });
  assertEquals(fingerprint(src.frequencies), "dce925eb", "frequencies");
  assertEquals(fingerprint(await f32(src.features)), "33943757", "features");
  assertEquals(fingerprint(await f32(codes!)), "254cdd2a", "codes");
});

test("synthetic: shapes in plain, layered and paired modes", () => {
  const plain = makeSynthetic({ d: 8, nFeatures: 20, bias: true });
  assertEquals(plain.features.shape, [20, 8]);
  assertEquals(plain.offset!.shape, [8]);
  const p = plain.batch(0, 5, { withCodes: true });
  assertEquals([p.x.shape, p.codes!.shape], [[5, 8], [5, 20]]);
  assertEquals(plain.batch(0, 5).codes, undefined);
  assertEquals(makeSynthetic({ d: 8, nFeatures: 20 }).offset, null);

  const layered = makeSynthetic({ d: 8, nFeatures: 20, layers: 3, bias: true });
  assertEquals(layered.features.shape, [3, 20, 8]);
  assertEquals(layered.offset!.shape, [3, 8]);
  const l = layered.batch(1, 6, { withCodes: true });
  assertEquals([l.x.shape, l.codes!.shape], [[6, 3, 8], [6, 20]]);

  const paired = makePairedSynthetic({ d: 8, nFeatures: 20, exclusive: 2, models: 3, bias: true });
  assertEquals(paired.features.shape, [3, 20, 8]);
  assertEquals(paired.offset!.shape, [3, 8]);
  const q = paired.batch(2, 7, { withCodes: true });
  assertEquals([q.x.shape, q.codes!.shape], [[7, 3, 8], [7, 3, 20]]);
  assertEquals(paired.config.models, 3);
  // A batch of one sample with almost nothing active still works.
  assertEquals(makeSynthetic({ d: 4, nFeatures: 100, meanActive: 0.01 }).batch(0, 1).x.shape, [
    1,
    4,
  ]);
});

test("synthetic: firing rates match the power-law frequencies; mean active count = meanActive", async () => {
  const n = 32, B = 20000;
  const src = makeSynthetic({ d: 16, nFeatures: n, meanActive: 5, alpha: 0.5, seed: 3 });
  const p = src.frequencies;
  assertClose([p.reduce((a, b) => a + b)], [5], { rtol: 1e-12 });
  assertClose([p[0] / p[3]], [2], { rtol: 1e-12 }); // (1/4)^-0.5
  const codes = await f32(src.batch(0, B, { withCodes: true }).codes!);
  const counts = firing(codes, B, n);
  for (let i = 0; i < n; i++) {
    const se = Math.sqrt((p[i] * (1 - p[i])) / B);
    assert(
      Math.abs(counts[i] / B - p[i]) < 5 * se,
      `feature ${i}: rate ${counts[i] / B} vs p ${p[i]} (se ${se})`,
    );
  }
  const meanActive = counts.reduce((a, b) => a + b) / B;
  assert(Math.abs(meanActive - 5) < 0.08, `mean active ${meanActive}`);

  // Uniform frequencies, and a clipped power law whose excess mass is redistributed.
  assertClose(
    makeSynthetic({ d: 4, nFeatures: 10, meanActive: 2, alpha: 0 }).frequencies,
    new Array(10).fill(0.2),
    { rtol: 1e-12 },
  );
  const clipped = makeSynthetic({ d: 4, nFeatures: 8, meanActive: 6, alpha: 2 });
  const q = clipped.frequencies;
  assertClose([q.reduce((a, b) => a + b)], [6], { rtol: 1e-12 });
  assert(q.every((v) => v <= 1) && q[0] === 1 && q[7] < 1, `clipped frequencies ${Array.from(q)}`);
  const cc = firing(await f32(clipped.batch(0, 2000, { withCodes: true }).codes!), 2000, 8);
  assertEquals(cc[0], 2000, "a feature with p = 1 fires in every sample");
});

test("synthetic: x = codes @ features (+ offset); features are unit norm (orthonormal when nFeatures ≤ d)", async () => {
  for (const cfg of [{ d: 16, nFeatures: 64 }, { d: 16, nFeatures: 12, bias: true }]) {
    const src = makeSynthetic(cfg);
    assertClose(await f32(t.norm(src.features, -1)), new Array(cfg.nFeatures).fill(1), {
      rtol: 1e-5,
    });
    const { x, codes } = src.batch(0, 200, { withCodes: true });
    let want = t.matmul(codes!, src.features);
    if (src.offset) want = t.add(want, src.offset);
    assertClose(await f32(x), await f32(want), { atol: 1e-5, rtol: 1e-5 });
  }
  const small = makeSynthetic({ d: 16, nFeatures: 12 });
  const gram = t.matmul(small.features, t.transpose(small.features));
  assertClose(await f32(gram), await f32(t.eye(12)), { atol: 1e-6 });
  assertClose([await t.norm(makeSynthetic({ d: 16, nFeatures: 12, bias: true }).offset!).item()], [
    1,
  ], { rtol: 1e-6 });
});

test("synthetic: layers share one code; consecutive layers' directions have cosine 1 − layerDrift", async () => {
  for (const n of [48, 12, 8]) { // superposition; n ≤ d < 2n; 2n ≤ d (every layer orthonormal)
    const L = 3, drift = 0.3;
    const src = makeSynthetic({ d: 16, nFeatures: n, layers: L, layerDrift: drift });
    assertClose(await f32(t.norm(src.features, -1)), new Array(L * n).fill(1), { rtol: 1e-5 });
    for (let l = 1; l < L; l++) {
      const cos = t.sum(
        t.mul(featureSlice(src.features, l), featureSlice(src.features, l - 1)),
        -1,
      );
      assertClose(await f32(cos), new Array(n).fill(1 - drift), {
        atol: 1e-5,
        msg: `layers ${l - 1}→${l}, n = ${n}`,
      });
      if (n === 8) {
        const fl = featureSlice(src.features, l);
        assertClose(await f32(t.matmul(fl, t.transpose(fl))), await f32(t.eye(n)), {
          atol: 1e-6,
          msg: `layer ${l} orthonormal`,
        });
      }
    }
    const { x, codes } = src.batch(2, 30, { withCodes: true });
    for (let l = 0; l < L; l++) {
      const xl = t.squeeze(t.sliceAxis(x, 1, l, l + 1), 1);
      assertClose(await f32(xl), await f32(t.matmul(codes!, featureSlice(src.features, l))), {
        atol: 1e-5,
      });
    }
  }
  const same = makeSynthetic({ d: 8, nFeatures: 20, layers: 2, layerDrift: 0 });
  assertClose(
    await f32(featureSlice(same.features, 1)),
    await f32(featureSlice(same.features, 0)),
    { atol: 1e-7 },
  );
});

test("synthetic: noise has the configured standard deviation", async () => {
  const src = makeSynthetic({ d: 32, nFeatures: 64, noise: 0.2, seed: 5 });
  const { x, codes } = src.batch(0, 2000, { withCodes: true });
  const r = await f32(t.sub(x, t.matmul(codes!, src.features)));
  let s = 0, s2 = 0;
  for (const v of r) {
    s += v;
    s2 += v * v;
  }
  const mean = s / r.length, std = Math.sqrt(s2 / r.length - mean * mean);
  assert(Math.abs(mean) < 0.005 && Math.abs(std - 0.2) < 0.003, `noise mean ${mean}, std ${std}`);
});

test("synthetic: magnitudes follow the configured distribution", async () => {
  const nonzero = async (m: NonNullable<Parameters<typeof makeSynthetic>[0]["magnitude"]>) => {
    const codes = await f32(
      makeSynthetic({ d: 8, nFeatures: 40, meanActive: 5, magnitude: m }).batch(0, 4000, {
        withCodes: true,
      }).codes!,
    );
    return codes.filter((v) => v !== 0);
  };
  const mean = (a: Float32Array) => a.reduce((x, y) => x + y, 0) / a.length;
  const u = await nonzero({ kind: "uniform", min: 2, max: 3 });
  assert(
    u.every((v) => v >= 2 && v <= 3) && Math.abs(mean(u) - 2.5) < 0.01,
    `uniform mean ${mean(u)}`,
  );
  const e = await nonzero({ kind: "exponential", mean: 0.7 });
  assert(e.every((v) => v > 0) && Math.abs(mean(e) - 0.7) < 0.02, `exponential mean ${mean(e)}`);
  const c = await nonzero({ kind: "constant", value: 1.25 });
  assert(c.length > 15000 && c.every((v) => v === 1.25), "constant magnitudes");
  const d = await nonzero(undefined as never); // the default: uniform on [0.5, 1.5]
  assert(
    d.every((v) => v >= 0.5 && v <= 1.5) && Math.abs(mean(d) - 1) < 0.01,
    `default mean ${mean(d)}`,
  );
});

test("synthetic: correlated groups raise co-firing with the leader; marginals stay as reported", async () => {
  const n = 40, G = 4, B = 20000, rho = 0.6;
  const base = { d: 16, nFeatures: n, meanActive: 4, alpha: 0.5, seed: 9 };
  const grouped = makeSynthetic({ ...base, correlatedGroups: G, correlation: rho });
  const plain = makeSynthetic(base);
  assertEquals(Array.from(grouped.groups!.slice(0, 10)), [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]);
  assertEquals(plain.groups, null);
  const given = async (src: typeof plain) => {
    const codes = await f32(src.batch(0, B, { withCodes: true }).codes!);
    const both = new Float64Array(n), lead = new Float64Array(n);
    for (let s = 0; s < B; s++) {
      for (let i = G; i < n; i++) {
        if (codes[s * n + (i % G)] === 0) continue;
        lead[i]++;
        if (codes[s * n + i] !== 0) both[i]++;
      }
    }
    return { cond: both.map((b, i) => (i < G ? NaN : b / lead[i])), counts: firing(codes, B, n) };
  };
  const g = await given(grouped), p = await given(plain);
  for (let i = G; i < n; i++) {
    assert(
      Math.abs(g.cond[i] - rho) < 0.05,
      `P(feature ${i} | leader) = ${g.cond[i]}, want ${rho}`,
    );
    assert(p.cond[i] < 0.3, `without groups P(feature ${i} | leader ${i % G}) = ${p.cond[i]}`);
    const f = grouped.frequencies[i], se = Math.sqrt((f * (1 - f)) / B);
    assert(
      Math.abs(g.counts[i] / B - f) < 5 * se,
      `feature ${i}: rate ${g.counts[i] / B} vs frequency ${f}`,
    );
    assert(
      f >= rho * grouped.frequencies[i % G] - 1e-12,
      `feature ${i}: frequency ${f} below rho·p_leader`,
    );
  }
  // The rates are rescaled so that meanActive still holds.
  assertClose([grouped.frequencies.reduce((a, b) => a + b)], [4], { rtol: 1e-12 });
  const active = g.counts.reduce((a, b) => a + b) / B;
  assert(Math.abs(active - 4) < 0.1, `mean active with groups ${active}`);
});

test("synthetic: paired mode: exclusive features never appear in another model", async () => {
  const M = 3, E = 4, n = 60, B = 3000;
  const src = makePairedSynthetic({
    d: 12,
    nFeatures: n,
    models: M,
    exclusive: E,
    meanActive: 8,
    alpha: 0.3,
    modelDrift: 0.2,
    seed: 2,
  });
  for (let m = 0; m < M; m++) {
    assertEquals(src.owner.filter((o) => o === m).length, E, `model ${m} owns ${E}`);
  }
  assertEquals(src.owner.filter((o) => o === -1).length, n - M * E);
  const { x, codes } = src.batch(0, B, { withCodes: true });
  const c = await f32(codes!);
  const fired = new Float64Array(M * n);
  for (let s = 0; s < B; s++) {
    for (let i = 0; i < n; i++) {
      const o = src.owner[i];
      for (let m = 0; m < M; m++) {
        const v = c[(s * M + m) * n + i];
        if (v !== 0) fired[m * n + i]++;
        if (o >= 0 && o !== m) assertEquals(v, 0, `feature ${i} (model ${o}'s) in model ${m}`);
        if (o === -1) {
          assertEquals(v, c[s * M * n + i], `shared feature ${i} differs between models`);
        }
      }
    }
  }
  for (let i = 0; i < n; i++) {
    const o = src.owner[i];
    if (o >= 0) {
      assert(fired[o * n + i] > 0, `exclusive feature ${i} never fired in its model ${o}`);
    }
  }
  // Each model's activations are its own codes times its own directions.
  for (let m = 0; m < M; m++) {
    const xm = t.squeeze(t.sliceAxis(x, 1, m, m + 1), 1),
      cm = t.squeeze(t.sliceAxis(codes!, 1, m, m + 1), 1);
    assertClose(await f32(xm), await f32(t.matmul(cm, featureSlice(src.features, m))), {
      atol: 1e-5,
    });
  }
  // modelDrift 0: every model uses the same directions.
  const same = makePairedSynthetic({ d: 12, nFeatures: 20, exclusive: 2 });
  assertClose(
    await f32(featureSlice(same.features, 1)),
    await f32(featureSlice(same.features, 0)),
    { atol: 1e-7 },
  );
});

test("featureRecovery: the truth itself (shuffled, padded with random rows) is fully recovered", async () => {
  const src = makeSynthetic({ d: 32, nFeatures: 100, seed: 4 });
  const [kp, kr] = t.random.split(t.random.key(1));
  const perm = t.random.permutation(kp, 100);
  const decoder = t.concat(
    [t.random.normal(kr, [30, 32]), t.mul(t.take(src.features, perm), 3)],
    0,
  ); // scale must not matter
  const r = await featureRecovery(src.features, decoder);
  assertEquals([r.recovered, r.fraction], [100, 1]);
  assertClose([r.mmcs], [1], { atol: 1e-5 });
  // bestIndex points at the row that holds each true feature.
  const p = (await perm.data()) as Int32Array;
  const want = new Int32Array(100);
  for (let j = 0; j < 100; j++) want[p[j]] = 30 + j;
  assertEquals(Array.from(r.bestIndex), Array.from(want));
  // Layered truth: pass one layer.
  const layered = makeSynthetic({ d: 16, nFeatures: 40, layers: 2 });
  assertEquals(
    (await featureRecovery(featureSlice(layered.features, 1), featureSlice(layered.features, 1)))
      .fraction,
    1,
  );
  const err = await featureRecovery(layered.features, featureSlice(layered.features, 0)).then(
    () => null,
    (e: Error) => e,
  );
  assert(
    err?.message.includes("featureRecovery: truth must be [nFeatures, d]"),
    `got ${err?.message}`,
  );
});

test("featureRecovery: random decoders recover nothing", async () => {
  const src = makeSynthetic({ d: 64, nFeatures: 200, seed: 6 });
  const r = await featureRecovery(src.features, t.random.normal(t.random.key(2), [400, 64]));
  assertEquals(r.recovered, 0);
  assert(r.mmcs < 0.5, `mmcs ${r.mmcs}`);
  assertEquals(r.bestCosine.length, 200);
  // A lower threshold counts more; a zero row is harmless.
  const loose = await featureRecovery(
    src.features,
    t.concat([t.zeros([1, 64]), src.features], 0),
    0.5,
  );
  assertEquals(loose.fraction, 1);
});

test("synthetic: bad configs throw naming the field", () => {
  const ok = { d: 8, nFeatures: 16 };
  assertThrows(
    () => makeSynthetic({ ...ok, nFeatures: 0 }),
    "synthetic: nFeatures must be a positive integer, got 0",
  );
  assertThrows(() => makeSynthetic({ ...ok, d: 2.5 }), "d must be a positive integer", "2.5");
  assertThrows(() => makeSynthetic({ ...ok, meanActive: 17 }), "meanActive", "17");
  assertThrows(() => makeSynthetic({ ...ok, meanActive: 0 }), "meanActive");
  assertThrows(() => makeSynthetic({ ...ok, alpha: -1 }), "alpha");
  assertThrows(
    () => makeSynthetic({ ...ok, magnitude: { kind: "uniform", min: 1, max: 1 } }),
    "magnitude.max",
  );
  assertThrows(
    () => makeSynthetic({ ...ok, magnitude: { kind: "uniform", min: -1, max: 1 } }),
    "magnitude.min",
  );
  assertThrows(
    () => makeSynthetic({ ...ok, magnitude: { kind: "exponential", mean: 0 } }),
    "magnitude.mean",
  );
  assertThrows(
    () => makeSynthetic({ ...ok, magnitude: { kind: "gamma" } as never }),
    "magnitude.kind",
    "gamma",
  );
  assertThrows(() => makeSynthetic({ ...ok, correlatedGroups: 17 }), "correlatedGroups");
  assertThrows(() => makeSynthetic({ ...ok, correlation: 1.5 }), "correlation");
  assertThrows(() => makeSynthetic({ ...ok, noise: -0.1 }), "noise");
  assertThrows(() => makeSynthetic({ ...ok, noise: NaN }), "noise");
  assertThrows(() => makeSynthetic({ ...ok, bias: 1 as never }), "bias");
  assertThrows(() => makeSynthetic({ ...ok, seed: -1 }), "seed");
  assertThrows(() => makeSynthetic({ ...ok, layers: 0 }), "layers");
  assertThrows(() => makeSynthetic({ ...ok, layerDrift: 2 }), "layerDrift");
  assertThrows(
    () => makeSynthetic({ ...ok, nfeatures: 3 } as never),
    "unknown option",
    "nfeatures",
  );
  assertThrows(() => makePairedSynthetic({ ...ok, exclusive: 9 }), "exclusive", "16");
  assertThrows(() => makePairedSynthetic({ ...ok, exclusive: 1, models: 1 }), "models");
  assertThrows(() => makePairedSynthetic({ ...ok, exclusive: -1 }), "exclusive");
  assertThrows(
    () => makePairedSynthetic({ ...ok, exclusive: 1, layers: 2 } as never),
    "unknown option",
    "layers",
    "paired",
  );
  const src = makeSynthetic(ok);
  assertThrows(() => src.batch(-1, 4), "batch index");
  assertThrows(() => src.batch(0, 0), "batch size");
});

test("synthetic: a small ReLU SAE trained on it recovers the true features", async () => {
  // The end-to-end use: superposition (32 features in 24 dims), 300 Adam steps, ~1 s on the CPU.
  const d = 24, F = 64, l1 = 0.15, steps = 300;
  const src = makeSynthetic({ d, nFeatures: 32, meanActive: 1.5, alpha: 0.3, seed: 1 });
  type Params = { W_enc: t.Tensor; b_enc: t.Tensor; W_dec: t.Tensor; b_dec: t.Tensor };
  const W = t.tidy(() => {
    const w = t.random.normal(t.random.key(9), [F, d]);
    return t.mul(t.div(w, t.norm(w, 1, { keepdims: true })), 0.1);
  });
  let params: Params = {
    W_enc: t.transpose(W),
    b_enc: t.zeros([F]),
    W_dec: W,
    b_dec: t.zeros([d]),
  };
  const loss = (p: Params, x: t.Tensor) => {
    const f = t.relu(t.add(t.matmul(t.sub(x, p.b_dec), p.W_enc), p.b_enc));
    const mse = t.mean(t.sum(t.square(t.sub(x, t.add(t.matmul(f, p.W_dec), p.b_dec))), -1));
    return t.add(mse, t.mul(t.mean(t.sum(t.mul(f, t.norm(p.W_dec, -1)), -1)), l1));
  };
  const opt = t.adam({
    lr: t.warmupDecaySchedule({ peak: 1e-2, warmupSteps: 20, totalSteps: steps, decayStart: 210 }),
  });
  let state = opt.init(params);
  const step = t.valueAndGrad(loss);
  for (let i = 0; i < steps; i++) {
    const next = t.tidy(() => {
      const [, grads] = step(params, src.batch(i, 256).x);
      const [updates, s] = opt.update(grads, state, params);
      return { params: t.applyUpdates(params, updates), state: s };
    });
    t.dispose([params, state]);
    ({ params, state } = next);
  }
  const r = await featureRecovery(src.features, params.W_dec);
  // 32/32 with MMCS 0.98 when written; the margin absorbs kernel-level rounding changes.
  assert(r.fraction >= 0.9 && r.mmcs > 0.95, `recovered ${r.recovered}/32, MMCS ${r.mmcs}`);
});

test("synthetic: an unreachable meanActive under correlation is reported, not looped on", () => {
  // Leaders always fire at meanActive = nFeatures, so members can fire at most `correlation` of the time.
  assertThrows(
    () =>
      makeSynthetic({ d: 4, nFeatures: 8, meanActive: 8, correlatedGroups: 2, correlation: 0.5 }),
    "meanActive = 8 cannot be reached",
  );
  const all = makeSynthetic({ d: 4, nFeatures: 8, meanActive: 8 });
  assert(
    all.frequencies.every((p) => p === 1),
    "meanActive = nFeatures: every feature always fires",
  );
});
