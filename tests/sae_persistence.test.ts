// Dictionaries on disk (sae/io/saelens.ts) and training checkpoints (sae/train/checkpoint.ts, sae/train/driver.ts):
// bit-exact round trips for every architecture, folders written the way SAELens v6 writes them
// (tests/fixtures/saelens, made by make_saelens_fixture.py with SAELens's formulas), errors for
// broken folders, atomic writes, and resuming a run bit-exactly.
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import * as t from "../mod.ts";
import { ARCHITECTURES, ARCHS, isCrosscoderArch } from "../sae/arch/registry.ts";
import { toDense } from "../sae/code.ts";
import { type ArchName, resolveConfig, type SaeConfigInput } from "../sae/config.ts";
import { CFG_FILE, loadSae, saveSae, WEIGHTS_FILE } from "../sae/io/saelens.ts";
import type { SaeParams } from "../sae/params.ts";
import { loadCheckpoint, saveCheckpoint } from "../sae/train/checkpoint.ts";
import { runTraining } from "../sae/train/driver.ts";
import { syntheticData } from "../data/sources.ts";
import { resolveTrainConfig, type TrainConfigInput } from "../sae/train/config.ts";
import { stateTensors, type TrainState } from "../sae/train/step.ts";
import { makeSynthetic } from "../data/synthetic.ts";
import { assert, assertClose, assertEquals, test } from "./harness.ts";

const FIXTURES = fileURLToPath(new URL("./fixtures/saelens/", import.meta.url));

async function tempDir(): Promise<string> {
  return await mkdtemp(join(tmpdir(), "sae-persist-"));
}

/** The promise must reject with a message containing every fragment. */
async function rejects(p: Promise<unknown>, ...fragments: string[]): Promise<string> {
  try {
    await p;
  } catch (e) {
    const msg = String((e as Error).message);
    for (const f of fragments) {
      assert(msg.includes(f), `error message ${JSON.stringify(msg)} lacks ${JSON.stringify(f)}`);
    }
    return msg;
  }
  throw new Error(`expected a rejection mentioning ${fragments.join(", ")}`);
}

/** Bit patterns of a float tensor, so -0/NaN payloads and last bits all count. */
async function bits(x: t.Tensor): Promise<number[]> {
  const d = await x.data();
  const f = Float32Array.from(d as ArrayLike<number>);
  assert(x.dtype === "f32", `expected f32, got ${x.dtype}`);
  return Array.from(new Uint32Array(f.buffer));
}

/** Every tensor leaf of two trees has the same shape, dtype and bits; other leaves are equal. */
async function assertTreesIdentical(a: unknown, b: unknown, what: string): Promise<void> {
  const [la, da] = t.treeFlatten(a), [lb, db] = t.treeFlatten(b);
  assertEquals(JSON.stringify(db), JSON.stringify(da), `${what}: tree structure`);
  for (let i = 0; i < la.length; i++) {
    const x = la[i], y = lb[i];
    if (x instanceof t.Tensor) {
      assert(y instanceof t.Tensor, `${what}: leaf ${i} is not a tensor`);
      assertEquals([y.shape, y.dtype], [x.shape, x.dtype], `${what}: leaf ${i} shape/dtype`);
      assertEquals(await bits(y), await bits(x), `${what}: leaf ${i} values`);
    } else assertEquals(y, x, `${what}: leaf ${i}`);
  }
}

const cfgInput = (arch: ArchName): SaeConfigInput => ({
  arch,
  d_in: 6,
  d_sae: 12,
  // Non-default values everywhere, so a field dropped on the way fails the comparison.
  ...(arch === "transcoder" ? { d_out: 5 } : {}),
  ...(["topk", "batchtopk", "matryoshka", "transcoder", "mlsae"].includes(arch) ? { k: 3 } : {}),
  ...(arch === "matryoshka" ? { matryoshka_groups: [4, 8], matryoshka_weights: [0.25, 0.75] } : {}),
  l1_coefficient: 0.37,
  l1_variant: "decoder_norm",
  jumprelu_bandwidth: 0.02,
  jumprelu_target_l0: 7,
  auxk_alpha: 0.05,
  auxk_k: 2,
});

/** Initialised params with every tensor perturbed (biases non-zero, last bits random). */
function randomParams(arch: ArchName, seed: number): SaeParams {
  const cfg = resolveConfig(cfgInput(arch));
  const p = ARCHITECTURES[arch].init(t.random.key(seed), cfg);
  const keys = t.random.split(t.random.key(seed + 1), 8);
  const out: Record<string, t.Tensor> = {};
  Object.entries(p).forEach(([k, v], i) => {
    if (v) out[k] = t.add(v, t.random.normal(keys[i], v.shape, { std: 0.3 }));
  });
  return out as unknown as SaeParams;
}

// ---- round trips --------------------------------------------------------------------------------

// Crosscoders ([L, d, F] weights, DFC partitions): tests/crosscoder_persistence.test.ts.
for (const arch of ARCHS.filter((a) => !isCrosscoderArch(a))) {
  test(`saveSae/loadSae round trip (${arch}): params bit-exact, cfg equal, threshold restored, nothing else left`, async () => {
    const dir = await tempDir();
    try {
      const cfg = resolveConfig(cfgInput(arch));
      const params = randomParams(arch, 11);
      const threshold = arch === "batchtopk" || arch === "matryoshka" ? 0.123456789 : undefined;
      await saveSae(dir, { params, cfg, ...(threshold !== undefined ? { threshold } : {}) });
      const got = await loadSae(dir);
      assertEquals(Object.keys(got.params).sort(), Object.keys(params).sort(), "param names");
      await assertTreesIdentical(params, got.params, `${arch} params`);
      assertEquals(got.cfg, cfg, "cfg");
      assertEquals(got.threshold, threshold, "threshold");
      // Atomic writes go through temporary files; none may remain.
      assertEquals((await readdir(dir)).sort(), [CFG_FILE, WEIGHTS_FILE].sort(), "folder contents");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
}

test("unknown cfg.json fields survive load → save → load", async () => {
  const [a, b] = [await tempDir(), await tempDir()];
  try {
    const cfg = resolveConfig(cfgInput("topk"));
    await saveSae(a, { params: randomParams("topk", 3), cfg });
    const raw = JSON.parse(await readFile(join(a, CFG_FILE), "utf8"));
    const unknown = {
      model_name: "gpt2",
      hook_name: "blocks.3.hook_resid_post",
      metadata: { context_size: 128, prepend_bos: true, seqpos_slice: [null, 5] },
    };
    await writeFile(join(a, CFG_FILE), JSON.stringify({ ...raw, ...unknown }));
    const first = await loadSae(a);
    assertEquals(first.cfg.extra, unknown, "extra after the first load");
    await saveSae(b, first);
    const rawB = JSON.parse(await readFile(join(b, CFG_FILE), "utf8"));
    for (const [k, v] of Object.entries(unknown)) {
      assertEquals(rawB[k], v, `cfg.json field ${k} after saving again`);
    }
    const second = await loadSae(b);
    assertEquals(second.cfg, first.cfg, "cfg after the second load");
    await assertTreesIdentical(first.params, second.params, "params");
  } finally {
    await rm(a, { recursive: true, force: true });
    await rm(b, { recursive: true, force: true });
  }
});

// ---- folders written by SAELens -----------------------------------------------------------------

interface Expected {
  x: { shape: number[]; data: number[] };
  feature_acts: { shape: number[]; data: number[] };
  reconstruction: { shape: number[]; data: number[] };
}

const SAELENS: [string, ArchName, { apply: boolean; k?: number; storage: "f32" | "bf16" }][] = [
  ["standard", "relu", { apply: true, storage: "f32" }],
  ["standard_no_bdec", "relu", { apply: false, storage: "f32" }],
  ["standard_bf16", "relu", { apply: true, storage: "bf16" }],
  ["topk", "topk", { apply: true, k: 3, storage: "f32" }],
  ["jumprelu", "jumprelu", { apply: false, storage: "f32" }],
  ["gated", "gated", { apply: true, storage: "f32" }],
];

for (const [name, arch, want] of SAELENS) {
  test(`SAELens folder "${name}": config mapped to ${arch}, encoding matches SAELens's formulas`, async () => {
    const dir = join(FIXTURES, name);
    const raw = JSON.parse(await readFile(join(dir, CFG_FILE), "utf8"));
    const { tensors } = await t.loadSafetensors(join(dir, WEIGHTS_FILE));
    assertEquals(tensors.W_enc.dtype, want.storage, "storage dtype of the fixture");
    t.dispose(tensors);

    const s = await loadSae(dir);
    assertEquals(s.cfg.arch, arch, "architecture");
    assertEquals([s.cfg.d_in, s.cfg.d_sae, s.cfg.d_out], [6, 10, 6], "sizes");
    assertEquals(s.cfg.apply_b_dec_to_input, want.apply, "apply_b_dec_to_input");
    if (want.k) assertEquals(s.cfg.k, want.k, "k");
    assertEquals(s.cfg.extra.metadata, raw.metadata, "metadata kept as an unknown field");
    assertEquals(s.cfg.extra.device, "cpu", "device kept");
    if (raw.model_name) {
      assertEquals(s.cfg.extra.model_name, raw.model_name, "top-level model_name kept");
    }
    for (const [k, v] of Object.entries(s.params)) {
      if (v) assertEquals(v.dtype, "f32", `${k} computes in f32`);
    }
    assertEquals(s.params.W_enc.shape, [6, 10]);
    assertEquals(s.params.W_dec.shape, [10, 6]);

    const ex = JSON.parse(await readFile(join(dir, "expected.json"), "utf8")) as Expected;
    const x = t.tensor(ex.x.data, { shape: ex.x.shape });
    const code = ARCHITECTURES[arch].encodeInference(s.params, x, s.cfg);
    const f = await toDense(code, s.cfg.d_sae).data();
    assertClose(f, ex.feature_acts.data, { rtol: 1e-5, atol: 1e-5, msg: "feature_acts" });
    assert(
      ex.feature_acts.data.some((v) => v > 0) && ex.feature_acts.data.some((v) => v === 0),
      "the fixture has both active and inactive features",
    );
    const xhat = await ARCHITECTURES[arch].decode(s.params, code, s.cfg).data();
    assertClose(xhat, ex.reconstruction.data, { rtol: 1e-5, atol: 1e-5, msg: "reconstruction" });

    // Saving it again keeps SAELens's architecture name and the metadata.
    const out = await tempDir();
    try {
      await saveSae(out, s);
      const back = JSON.parse(await readFile(join(out, CFG_FILE), "utf8"));
      assertEquals(back.architecture, raw.architecture, "architecture name after saving");
      assertEquals(back.metadata, raw.metadata, "metadata after saving");
      assertEquals(back.apply_b_dec_to_input, raw.apply_b_dec_to_input);
      const again = await loadSae(out);
      assertEquals(again.cfg, s.cfg, "cfg after a round trip");
      await assertTreesIdentical(s.params, again.params, "params after a round trip");
    } finally {
      await rm(out, { recursive: true, force: true });
    }
  });
}

// ---- broken folders -----------------------------------------------------------------------------

test("broken folders: errors name the file and the field", async () => {
  const dir = await tempDir();
  try {
    const src = join(FIXTURES, "standard");
    const cfgText = await readFile(join(src, CFG_FILE), "utf8");
    const weights = await readFile(join(src, WEIGHTS_FILE));
    const cfgPath = join(dir, CFG_FILE), wPath = join(dir, WEIGHTS_FILE);
    const reset = async () => {
      await writeFile(cfgPath, cfgText);
      await writeFile(wPath, weights);
    };
    await reset();
    await loadSae(dir); // the copy itself loads

    await rm(cfgPath);
    await rejects(loadSae(dir), cfgPath);

    await reset();
    await writeFile(cfgPath, '{"architecture": "standard", "d_in": 6,');
    await rejects(loadSae(dir), cfgPath, "JSON");

    await reset();
    await writeFile(cfgPath, JSON.stringify({ ...JSON.parse(cfgText), d_sae: undefined }));
    await rejects(loadSae(dir), cfgPath, "d_sae");

    await reset();
    await writeFile(
      cfgPath,
      JSON.stringify({ ...JSON.parse(cfgText), architecture: "crosscoder" }),
    );
    await rejects(loadSae(dir), cfgPath, "architecture", "crosscoder");

    // Weights: a missing tensor, a wrong shape, a truncated file, no file.
    const { tensors } = await t.loadSafetensors(join(src, WEIGHTS_FILE));
    const { b_enc: _drop, ...noBEnc } = tensors;
    await reset();
    await t.saveSafetensors(wPath, noBEnc);
    await rejects(loadSae(dir), wPath, '"b_enc"');

    await reset();
    await t.saveSafetensors(wPath, { ...tensors, W_enc: t.sliceAxis(tensors.W_enc, 1, 0, 9) });
    await rejects(loadSae(dir), wPath, '"W_enc"', "[6, 9]", "[6, 10]");

    await reset();
    await writeFile(wPath, weights.subarray(0, weights.length - 17));
    await rejects(loadSae(dir), wPath);
    await writeFile(wPath, weights.subarray(0, 5));
    await rejects(loadSae(dir), wPath);

    await rm(wPath);
    await rejects(loadSae(dir), wPath);
    t.dispose(tensors);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

// ---- checkpoints --------------------------------------------------------------------------------

test("saveCheckpoint replaces the previous checkpoint atomically and leaves no temporary folders", async () => {
  const dir = await tempDir();
  try {
    const cfg = resolveConfig(cfgInput("topk"));
    const train = resolveTrainConfig(cfg, { steps: 10, batch_size: 8 });
    const params = randomParams("topk", 5);
    const state: TrainState = {
      step: 3,
      params,
      opt: [null, { count: 3, mu: params, nu: params }],
      sinceFired: t.full([12], 24),
      numDead: 0,
      threshold: -1,
      scale: 1.5,
      scaleOut: 1.5,
      key: t.random.key(9),
    };
    const ckpt = join(dir, "checkpoint");
    await saveCheckpoint(ckpt, { state, cfg, train, data: { nextBatch: 4 } });
    await saveCheckpoint(ckpt, {
      state: { ...state, step: 4 },
      cfg,
      train,
      data: { nextBatch: 5 },
    });
    assertEquals(await readdir(dir), ["checkpoint"], "run folder");
    assertEquals(
      (await readdir(ckpt)).sort(),
      ["state.json", "state.safetensors"],
      "checkpoint folder",
    );
    const back = await loadCheckpoint(ckpt);
    assertEquals([back.state.step, back.data.nextBatch], [4, 5], "the newer checkpoint");
    await assertTreesIdentical(stateTensors(state), stateTensors(back.state), "state tensors");
    assertEquals(back.state.key.words, state.key.words, "random key");
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

/** A fresh config, train config and data source each time, as a new process would build them. */
function runSetup(arch: ArchName, extra: Partial<SaeConfigInput>, train: TrainConfigInput) {
  const cfg = resolveConfig({
    arch,
    d_in: 8,
    d_sae: 24,
    ...(["topk", "batchtopk"].includes(arch) ? { k: 3 } : {}),
    ...extra,
  });
  const tc = resolveTrainConfig(cfg, { steps: 12, batch_size: 32, lr: 5e-3, seed: 4, ...train });
  const data = syntheticData(makeSynthetic({ d: 8, nFeatures: 16, meanActive: 2, seed: 2 }));
  return { cfg, train: tc, data };
}

const metricsLines = async (dir: string) =>
  (await readFile(join(dir, "metrics.jsonl"), "utf8")).trim().split("\n").map((l) => {
    const { tokens_per_s: _wallClock, ...m } = JSON.parse(l);
    return JSON.stringify(m);
  });

const RESUME_CASES: [ArchName, Partial<SaeConfigInput>, TrainConfigInput, string][] = [
  // dead_tokens small: AuxK runs, so numDead and the counters must come back exactly.
  ["topk", {}, { dead_tokens: 32 }, "AuxK from restored dead counters"],
  // Resampling draws from the state's random key after the resume.
  [
    "relu",
    { l1_coefficient: 3 },
    { resample_steps: 4, dead_tokens: 64, warmup_steps: 0 },
    "resampling with the restored key",
  ],
  // θ starts moving before the stop and keeps moving after it.
  ["batchtopk", {}, { threshold_start_step: 3 }, "the threshold"],
];

for (const [arch, extra, train, why] of RESUME_CASES) {
  test(`checkpoint/resume (${arch}): stop at 6 and resume to 12 = 12 straight, bit-exact (${why})`, async () => {
    const [a, b] = [await tempDir(), await tempDir()];
    try {
      const opts = { logEvery: 1, checkpointEvery: 4 };
      const straight = await runTraining({ ...runSetup(arch, extra, train), out: a, ...opts });
      const half = await runTraining({
        ...runSetup(arch, extra, train),
        out: b,
        ...opts,
        stopAfter: 6,
      });
      assertEquals(half.state.step, 6, "stopped at 6");
      assert(!(await readdir(b)).includes(WEIGHTS_FILE), "no dictionary saved before the run ends");
      t.dispose(stateTensors(half.state));
      const resumed = await runTraining({
        ...runSetup(arch, extra, train),
        out: b,
        ...opts,
        resume: true,
      });
      assertEquals(resumed.state.step, 12, "resumed to the end");

      await assertTreesIdentical(straight.state.params, resumed.state.params, "params");
      await assertTreesIdentical(straight.state.opt, resumed.state.opt, "optimizer state");
      await assertTreesIdentical(
        straight.state.sinceFired,
        resumed.state.sinceFired,
        "dead-feature counters",
      );
      for (const k of ["numDead", "threshold", "scale", "scaleOut"] as const) {
        assertEquals(resumed.state[k], straight.state[k], k);
      }
      assertEquals(resumed.state.key.words, straight.state.key.words, "random key");
      assertEquals(resumed.last, straight.last, "last step's metrics");

      const [ma, mb] = [await metricsLines(a), await metricsLines(b)];
      assertEquals(ma.length, 12, "a line per step");
      assertEquals(mb, ma, "metrics.jsonl");
      if (arch === "relu") {
        assert(
          ma.slice(6).some((l) => (JSON.parse(l).resampled ?? 0) > 0),
          "a resample after the resume point",
        );
      }
      if (arch === "topk") {
        assert(
          JSON.parse(ma[5]).dead_fraction > 0 && "auxk" in JSON.parse(ma[6]),
          "dead features at the stop, AuxK right after it",
        );
      }
      if (arch === "batchtopk") assert(JSON.parse(ma[5]).threshold > 0, "θ set before the stop");

      assertEquals(
        await readFile(join(b, WEIGHTS_FILE)),
        await readFile(join(a, WEIGHTS_FILE)),
        "saved weights",
      );
      assertEquals(
        await readFile(join(b, CFG_FILE), "utf8"),
        await readFile(join(a, CFG_FILE), "utf8"),
        "saved cfg.json",
      );
    } finally {
      await rm(a, { recursive: true, force: true });
      await rm(b, { recursive: true, force: true });
    }
  });
}

test("resume refuses a different configuration, and a folder without a checkpoint", async () => {
  const dir = await tempDir();
  try {
    await runTraining({ ...runSetup("topk", {}, {}), out: dir, stopAfter: 2 });
    await rejects(
      runTraining({ ...runSetup("topk", {}, { lr: 1e-3 }), out: dir, resume: true }),
      "different configuration",
      join(dir, "checkpoint"),
    );
    await rejects(
      runTraining({ ...runSetup("topk", { k: 4 }, {}), out: dir, resume: true }),
      "different configuration",
    );
    const empty = join(dir, "empty");
    await rejects(
      runTraining({ ...runSetup("topk", {}, {}), out: empty, resume: true }),
      "no readable checkpoint",
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
