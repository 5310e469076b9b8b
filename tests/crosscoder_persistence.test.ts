// Crosscoders on disk (sae/crosscoder/io.ts through sae/io/saelens.ts): bit-exact round trips with the
// partition in cfg.json, DFC integrity kept through save/load and through a whole training run
// (runTraining's final save, θ folded with the activation scale), and corrupted partitions —
// in cfg.json or in the weights — reported by loadSae rather than silently fixed.
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as t from "../mod.ts";
import { ARCHITECTURES, CROSSCODER_ARCHS, dfcPartition } from "../sae/arch/registry.ts";
import * as testing from "../testing/mod.ts";
import { resolveConfig } from "../sae/config.ts";
import { CFG_FILE, loadSae, saveSae, WEIGHTS_FILE } from "../sae/io/saelens.ts";
import { maskParams } from "../sae/crosscoder/grad_mask.ts";
import { runTraining } from "../sae/train/driver.ts";
import { loadCheckpoint, saveCheckpoint } from "../sae/train/checkpoint.ts";
import { pairedData } from "../sae/crosscoder/paired_source.ts";
import { resolveTrainConfig } from "../sae/train/config.ts";
import { verifyPartitionIntegrity } from "../sae/crosscoder/partition.ts";
import { assert, assertEquals, test } from "./harness.ts";

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "crosscoder-io-"));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function rejects(p: Promise<unknown>, ...fragments: string[]): Promise<void> {
  let msg: string | null = null;
  try {
    await p;
  } catch (e) {
    msg = String((e as Error).message);
  }
  assert(msg !== null, `expected an error mentioning ${fragments.join(", ")}`);
  for (const f of fragments) {
    assert(msg!.includes(f), `error ${JSON.stringify(msg)} lacks ${JSON.stringify(f)}`);
  }
}

const cfgOf = (arch: (typeof CROSSCODER_ARCHS)[number]) =>
  resolveConfig({
    arch,
    d_in: 4,
    d_sae: 20,
    k: 3,
    n_inputs: 2,
    dfc_shares: [0.15, 0.25],
    code_norm: "mixed",
    crosscoder_recon: "unsquared",
    l1_coefficient: 0.2,
    auxk_k: 3,
  });

/** Init with every tensor perturbed; a DFC's forbidden entries zeroed again. */
function randomParams(arch: (typeof CROSSCODER_ARCHS)[number], seed: number) {
  const cfg = cfgOf(arch);
  const p = ARCHITECTURES[arch].init(t.random.key(seed), cfg);
  const keys = t.random.split(t.random.key(seed + 1), 4);
  const q = Object.fromEntries(
    Object.entries(p).map((
      [k, v],
      i,
    ) => [k, t.add(v!, t.random.normal(keys[i], v!.shape, { std: 0.3 }))]),
  ) as unknown as typeof p;
  const part = dfcPartition(cfg);
  return part ? maskParams(q, part) : q;
}

const bitsOf = async (x: t.Tensor) =>
  Array.from(new Uint32Array(Float32Array.from(await x.data() as Float32Array).buffer));

for (const arch of CROSSCODER_ARCHS) {
  test(`crosscoder save/load round trip (${arch}): params bit-exact, cfg equal, θ kept, partition in cfg.json`, async () => {
    await withDir(async (dir) => {
      const cfg = cfgOf(arch);
      const params = randomParams(arch, 7);
      const threshold = arch === "crosscoder" ? undefined : 0.4321;
      await saveSae(dir, { params, cfg, ...(threshold !== undefined ? { threshold } : {}) });
      const got = await loadSae(dir);
      assertEquals(got.cfg, cfg, "cfg");
      assertEquals(got.threshold, threshold, "threshold");
      for (const k of ["W_enc", "W_dec", "b_enc", "b_dec"] as const) {
        assertEquals(got.params[k]!.shape, params[k]!.shape, `${k} shape`);
        assertEquals(await bitsOf(got.params[k]!), await bitsOf(params[k]!), `${k} bits`);
      }
      const raw = JSON.parse(await readFile(join(dir, CFG_FILE), "utf8"));
      assertEquals(raw.n_inputs, 2);
      if (arch === "dfc") {
        assertEquals(
          raw.partition,
          { features: 20, exclusive: [[0, 3], [3, 8]], shared: [8, 20] },
          "documented partition layout",
        );
        const r = await verifyPartitionIntegrity(got.params, dfcPartition(got.cfg)!);
        assert(r.ok && r.max === 0, "integrity kept through save/load");
      } else assert(raw.partition === undefined, "no partition outside DFC");
    });
  });
}

test("dfc load: a corrupted partition in cfg.json or non-zero forbidden weights are reported, not fixed", async () => {
  await withDir(async (dir) => {
    const cfg = cfgOf("dfc");
    await saveSae(dir, { params: randomParams("dfc", 3), cfg, threshold: 0.1 });
    const cfgPath = join(dir, CFG_FILE);
    const good = JSON.parse(await readFile(cfgPath, "utf8"));
    const write = (j: unknown) => writeFile(cfgPath, JSON.stringify(j));
    await write({ ...good, partition: { ...good.partition, exclusive: [[0, 3], [2, 8]] } });
    await rejects(loadSae(dir), "cfg.json: partition", "exclusive[1]", "should start at 3");
    await write({
      ...good,
      partition: { features: 20, exclusive: [[0, 4], [4, 8]], shared: [8, 20] },
    });
    await rejects(loadSae(dir), "does not match dfc_shares [0.15,0.25]");
    const { partition: _drop, ...noPartition } = good;
    await write(noPartition);
    await rejects(loadSae(dir), 'needs a "partition" field');
    await write({ ...good, partition: { ...good.partition, shared: [8, 19] } });
    await rejects(loadSae(dir), "shared");
    // Weights: one forbidden decoder entry of input 1 (B) on A-only feature 2 made non-zero.
    await write(good);
    const saved = await loadSae(dir);
    const bump = t.tensor(
      Array.from({ length: 2 * 20 * 4 }, (_, i) => (i === (20 + 2) * 4 + 1 ? 0.25 : 0)),
      { shape: [2, 20, 4] },
    );
    await saveSae(dir, {
      ...saved,
      params: { ...saved.params, W_dec: t.add(saved.params.W_dec, bump) },
    });
    await rejects(loadSae(dir), WEIGHTS_FILE, "input 1: max |W_enc| 0, max |W_dec| 0.25");
  });
});

test("dfc training run: the saved dictionary keeps its partition and θ is folded with the activation scale", async () => {
  await withDir(async (dir) => {
    const src = t.synthetic.makePairedSynthetic({
      d: 8,
      nFeatures: 24,
      exclusive: 3,
      seed: 5,
      bias: true,
    });
    const cfg = resolveConfig({
      arch: "dfc",
      d_in: 8,
      d_sae: 32,
      k: 3,
      n_inputs: 2,
      dfc_shares: [0.125, 0.125],
    });
    const train = resolveTrainConfig(cfg, { steps: 30, batch_size: 64, threshold_start_step: 0 });
    const res = await runTraining({ cfg, train, data: pairedData(src), out: dir });
    const loaded = await loadSae(dir); // would throw on a broken partition
    const r = await verifyPartitionIntegrity(loaded.params, dfcPartition(cfg)!);
    assert(r.ok && r.max === 0, JSON.stringify(r));
    assert(res.state.scale !== 1, "inputs were rescaled during training");
    assertEquals(
      loaded.threshold,
      (res.state.threshold as number) * res.state.scaleOut,
      "θ in saved units",
    );
    // Same codes from the training-time view (scaled input, training weights, θ) and the saved one.
    const x = src.batch(777, 32).x;
    const a = ARCHITECTURES.dfc.encodeInference(
      res.state.params,
      t.div(x, res.state.scale),
      cfg,
      res.state.threshold,
    );
    const b = ARCHITECTURES.dfc.encodeInference(loaded.params, x, cfg, loaded.threshold);
    const [fa, fb] = [await t.sae.toDense(a, 32).data(), await t.sae.toDense(b, 32).data()];
    let differ = 0;
    for (let i = 0; i < fa.length; i++) if ((fa[i] > 0) !== (fb[i] > 0)) differ++;
    assert(differ <= 2, `${differ} entries change on/off after folding (rounding at θ only)`);
  });
});

test("dfc checkpoint: a run stopped and resumed ends bit-identical to an uninterrupted one", async () => {
  await withDir(async (dir) => {
    const src = t.synthetic.makePairedSynthetic({ d: 6, nFeatures: 16, exclusive: 2, seed: 8 });
    const cfg = resolveConfig({
      arch: "dfc",
      d_in: 6,
      d_sae: 20,
      k: 2,
      n_inputs: 2,
      dfc_shares: [0.15, 0.15],
    });
    const train = resolveTrainConfig(cfg, {
      steps: 16,
      batch_size: 32,
      dead_tokens: 64,
      threshold_start_step: 0,
    });
    const whole = await runTraining({ cfg, train, data: pairedData(src), out: join(dir, "a") });
    await runTraining({
      cfg,
      train,
      data: pairedData(src),
      out: join(dir, "b"),
      stopAfter: 7,
      checkpointEvery: 100,
    });
    const resumed = await runTraining({
      cfg,
      train,
      data: pairedData(src),
      out: join(dir, "b"),
      resume: true,
    });
    for (const k of ["W_enc", "W_dec", "b_enc", "b_dec"] as const) {
      assertEquals(await bitsOf(resumed.params[k]!), await bitsOf(whole.params[k]!), k);
    }
    assertEquals(resumed.state.threshold, whole.state.threshold, "θ");
    await testing.assertMomentsMasked(resumed.state.opt, dfcPartition(cfg)!);
    // A checkpoint whose forbidden second moment is non-zero is refused, not resumed.
    const ck = await loadCheckpoint(join(dir, "b", "checkpoint"));
    const opt = ck.state.opt as unknown[];
    const adamAt = opt.findIndex((o) => o && typeof o === "object" && "nu" in (o as object));
    const adamState = opt[adamAt] as { nu: { W_dec: t.Tensor } };
    const polluted = [...opt];
    polluted[adamAt] = {
      ...adamState,
      nu: { ...adamState.nu, W_dec: t.add(adamState.nu.W_dec, 1e-20) },
    };
    await saveCheckpoint(join(dir, "c", "checkpoint"), {
      ...ck,
      state: { ...ck.state, opt: polluted },
      data: ck.data,
    });
    await rejects(
      runTraining({ cfg, train, data: pairedData(src), out: join(dir, "c"), resume: true }),
      "opt[1].nu breaks the DFC partition",
      "refusing to resume",
    );
  });
});

test("decoupled dfc: θ per input through a run, a checkpoint resume, saveSae/loadSae (folded, [L, d_sae] tensor); a malformed θ is reported", async () => {
  await withDir(async (dir) => {
    const src = t.synthetic.makePairedSynthetic({
      d: 6,
      nFeatures: 16,
      exclusive: 2,
      seed: 9,
      bias: true,
    });
    const cfg = resolveConfig({
      arch: "dfc",
      d_in: 6,
      d_sae: 20,
      k: 2,
      n_inputs: 2,
      dfc_shares: [0.15, 0.15],
      code_norm: "decoupled",
    });
    const train = resolveTrainConfig(cfg, {
      steps: 12,
      batch_size: 32,
      dead_tokens: 64,
      threshold_start_step: 0,
    });
    const whole = await runTraining({ cfg, train, data: pairedData(src), out: join(dir, "a") });
    await runTraining({
      cfg,
      train,
      data: pairedData(src),
      out: join(dir, "b"),
      stopAfter: 5,
      checkpointEvery: 100,
    });
    const resumed = await runTraining({
      cfg,
      train,
      data: pairedData(src),
      out: join(dir, "b"),
      resume: true,
    });
    for (const k of ["W_enc", "W_dec", "b_enc", "b_dec"] as const) {
      assertEquals(await bitsOf(resumed.params[k]!), await bitsOf(whole.params[k]!), k);
    }
    const θ = whole.state.threshold as number[];
    assert(
      Array.isArray(θ) && θ.length === 2 && θ.every((v) => v > 0) && θ[0] !== θ[1],
      `θ per input, set: ${JSON.stringify(θ)}`,
    );
    assertEquals(resumed.state.threshold, θ, "θ after resuming");
    await testing.assertMomentsMasked(resumed.state.opt, dfcPartition(cfg)!);
    const loaded = await loadSae(join(dir, "a"));
    assertEquals(
      loaded.threshold,
      θ.map((v) => v * whole.state.scaleOut),
      "saved θ folded with the output scale",
    );
    const { tensors } = await t.loadSafetensors(join(dir, "a", WEIGHTS_FILE));
    assertEquals(tensors.threshold.shape, [2, 20], "per-feature θ tensor, one row per input");
    const rows = await tensors.threshold.data();
    assertEquals([rows[0], rows[20]], [
      Math.fround(θ[0] * whole.state.scaleOut),
      Math.fround(θ[1] * whole.state.scaleOut),
    ]);
    // A θ of the wrong length in cfg.json is an error naming the file and the field.
    const cfgPath = join(dir, "a", CFG_FILE);
    const json = JSON.parse(await readFile(cfgPath, "utf8"));
    json.sparsecoder.threshold = [0.5];
    await writeFile(cfgPath, JSON.stringify(json));
    await rejects(loadSae(join(dir, "a")), CFG_FILE, "threshold must be 2 finite numbers", "[0.5]");
  });
});

test("evaluate (the SAE metrics) points crosscoders to evaluateCrosscoder", async () => {
  const cfg = cfgOf("dfc");
  await rejects(t.sae.evaluate(randomParams("dfc", 1), cfg, []), "use evaluateCrosscoder");
});
