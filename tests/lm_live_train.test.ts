/**
 * Training from a live model: the activation buffer serves every kept token of a pass exactly once,
 * refills when half is read, is deterministic, and its rows are runWithCache's activations (several
 * hooks as [L, d], a transcoder's target as y, padding and special tokens left out); a batch found
 * by replaying the bookkeeping on ids equals the one served in order. Through the CLI on the tiny
 * GPT-2 fixture: a run killed by SIGKILL after a checkpoint and resumed ends with exactly the
 * weights of an uninterrupted run, and a resume on other --data is refused.
 */
import { access, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as t from "../mod.ts";
import { assert, assertClose, assertEquals, assertThrows, test } from "./harness.ts";
import { takeBatch as take } from "./lm_fixtures.ts";
import { runCli, spawnCli } from "./cli_run.ts";
import { loadModel, runWithCache } from "../data/lm/model.ts";
import { activationBuffer, type LiveSource } from "../data/lm/activation_buffer.ts";
import { idRows } from "../data/text/id_rows.ts";
import { saveNpy } from "../data/npy.ts";
import { runTraining } from "../sae/train/driver.ts";
import { resolveConfig } from "../sae/config.ts";
import { resolveTrainConfig } from "../sae/train/config.ts";
import { HELD_OUT_START } from "../data/sources.ts";

const MODEL = "tests/golden/fixtures/lm/gpt2";
const H0 = "blocks.0.hook_resid_post", H1 = "blocks.1.hook_resid_post";
const R = 20, T = 8, D = 32;

/** Deterministic token ids [R·T] below the fixture's vocabulary of 64. */
const idsOf = (mul: number, add: number, n = R * T) =>
  Int32Array.from({ length: n }, (_, i) => (i * mul + add) % 64);

const model = await loadModel(MODEL);

function buffer(opts: Partial<Parameters<typeof activationBuffer>[0]> = {}): LiveSource {
  return activationBuffer({
    model,
    modelName: MODEL,
    rows: idRows(idsOf(37, 11), T, { name: "ids" }),
    hooks: [H0],
    contexts: 6,
    modelBatch: 4,
    seed: 1,
    ...opts,
  });
}

test("activation buffer: each token of a pass served exactly once, refilled at half, deterministic", async () => {
  const n = 8, cap = 6 * T, src = buffer();
  assertEquals([src.width, src.stats().capacity], [D, cap]);
  const seen = new Map<string, number>();
  let refills = 0, unread = 0;
  const order: string[] = [];
  for (let i = 0; i < 2 * (R * T) / n; i++) {
    const b = await take(src, i, n);
    const s = src.stats();
    // A refill exactly when half (or more) had been read before this batch.
    const expectRefill = i === 0 || 2 * unread <= cap || unread < n;
    assertEquals(s.refills - refills, expectRefill ? 1 : 0, `batch ${i}: refills`);
    // Mid-pass, a refill fills the buffer to its capacity (whole rows of T tokens).
    if (expectRefill && i < 10) assertEquals(s.unread + n, cap, `batch ${i}: filled`);
    refills = s.refills;
    unread = s.unread;
    for (let j = 0; j < n; j++) {
      const key = `${b.origin.epoch[j]}:${b.origin.row[j]}:${b.origin.position[j]}`;
      seen.set(key, (seen.get(key) ?? 0) + 1);
      order.push(key);
      // Batches 0 … R·T/n − 1 are pass 0, the next ones pass 1.
      assertEquals(b.origin.epoch[j], i < (R * T) / n ? 0 : 1, `batch ${i} row ${j}: pass`);
    }
  }
  assertEquals(seen.size, 2 * R * T, "every (pass, row, position) once");
  assert([...seen.values()].every((c) => c === 1), "none twice");
  assert(order.slice(0, 16).some((k, i) => k !== `0:${i >> 3}:${i & 7}`), "served shuffled");

  // The same seed gives the same batches; another seed another order.
  const again = buffer(), other = buffer({ seed: 2 });
  const a = await take(again, 0, n), b = await take(buffer(), 0, n), c = await take(other, 0, n);
  assertEquals([...a.x], [...b.x], "same seed, same rows");
  assert(JSON.stringify(a.origin) !== JSON.stringify(c.origin), "another seed, another order");
  await Promise.all([src.close(), again.close(), other.close()]);
});

test("activation buffer: rows are runWithCache's activations (one hook, [L, d], transcoder targets)", async () => {
  const ids = idsOf(37, 11);
  const { cache } = runWithCache(model, t.tensor(ids, { shape: [R, T] }), [H0, H1]);
  const at = (h: string, r: number, p: number) =>
    (cache[h].dataSync() as Float32Array).subarray((r * T + p) * D, (r * T + p + 1) * D);
  const close = (got: Float32Array, want: Float32Array, msg: string) =>
    assertClose(got, want, { rtol: 1e-5, atol: 1e-5, msg });

  const one = buffer(), several = buffer({ hooks: [H0, H1] });
  const tc = buffer({ hooks: [H0], targetHook: H1 });
  assertEquals([several.layers, tc.targetWidth], [2, D]);
  for (const i of [0, 3, 7]) {
    const b = await take(one, i, 16);
    assertEquals(b.shape, [16, D]);
    for (let j = 0; j < 16; j++) {
      close(
        b.x.subarray(j * D, (j + 1) * D),
        at(H0, b.origin.row[j], b.origin.position[j]),
        `row ${j}`,
      );
    }
    const m = await take(several, i, 16), y = await take(tc, i, 16);
    assertEquals(m.shape, [16, 2, D]);
    assertEquals(m.origin, b.origin, "the same tokens whatever the hooks");
    for (let j = 0; j < 16; j++) {
      const [r, p] = [m.origin.row[j], m.origin.position[j]];
      close(m.x.subarray(2 * j * D, (2 * j + 1) * D), at(H0, r, p), `[L, d] row ${j}, layer 0`);
      close(
        m.x.subarray((2 * j + 1) * D, (2 * j + 2) * D),
        at(H1, r, p),
        `[L, d] row ${j}, layer 1`,
      );
      close(y.y!.subarray(j * D, (j + 1) * D), at(H1, r, p), `target row ${j}`);
    }
  }
  // Evaluation batches: rows in order from a separate pass.
  const e = await take(one, HELD_OUT_START + 1, 16);
  assertEquals(e.origin.row, [2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3]);
  close(e.x.subarray(0, D), at(H0, 2, 0), "held-out row 0");
  await Promise.all([one.close(), several.close(), tc.close()]);
});

test("activation buffer: padding and special tokens are never served; bad input named", async () => {
  const ids = idsOf(37, 11);
  const lengths = Array.from({ length: R }, (_, r) => 3 + (r % 6));
  const special = new Set([ids[0], ids[5]]);
  const src = buffer({ rows: idRows(ids, T, { name: "ids", lengths }), exclude: special });
  let kept = 0;
  for (let r = 0; r < R; r++) {
    for (let p = 0; p < lengths[r]; p++) if (!special.has(ids[r * T + p])) kept++;
  }
  const served = new Set<string>();
  for (let i = 0; served.size < kept; i++) {
    const b = await take(src, i, 4);
    for (let j = 0; j < 4; j++) {
      const [e, r, p] = [b.origin.epoch[j], b.origin.row[j], b.origin.position[j]];
      assert(p < lengths[r], `row ${r} position ${p} is padding`);
      assert(!special.has(ids[r * T + p]), `row ${r} position ${p} is a special token`);
      if (e === 0) served.add(`${r}:${p}`);
    }
    assert(i < 200, "the pass never ended");
  }
  assertEquals(served.size, kept, "every kept token of pass 0");
  await src.close();

  assertThrows(() => buffer({ hooks: ["blocks.9.hook_resid_post"] }), "not a hook point", "gpt2");
  assertThrows(
    () => buffer({ hooks: [H0, "blocks.0.mlp.hook_post"] }),
    "equal widths",
    "blocks.0.mlp.hook_post has 128",
  );
  assertThrows(() => buffer({ rows: idRows(ids, 64) }), "context 64", "[1, 32]");
  const bad = Int32Array.from(ids);
  bad[3 * T + 2] = 99;
  const b = buffer({ rows: idRows(bad, T, { name: "bad.npy" }) });
  let msg = "";
  await b.prepare(0, 8).catch((e) => (msg = (e as Error).message));
  assert(
    msg.includes("bad.npy") && msg.includes("row 3 position 2") && msg.includes("token 99"),
    msg,
  );
  assertThrows(() => buffer().batch(0, 8), "not prepared", "prepare(0, 8)");
});

test("activation buffer: batch i found by replaying on ids equals batch i served in order, with fewer forwards", async () => {
  const inOrder = buffer({ contexts: 5, modelBatch: 3 });
  let last = null;
  for (let i = 0; i <= 23; i++) last = await take(inOrder, i, 12);
  for (const at of [23, 9]) {
    const jumped = buffer({ contexts: 5, modelBatch: 3 });
    const b = await take(jumped, at, 12);
    if (at === 23) {
      assertEquals([...b.x], [...last!.x], "bitwise the same rows");
      assertEquals(b.origin, last!.origin, "the same tokens");
      assert(
        jumped.stats().contextsRun < inOrder.stats().contextsRun / 2,
        `replay ran ${jumped.stats().contextsRun} rows through the model, in order ${inOrder.stats().contextsRun}`,
      );
    }
    await jumped.close();
  }
  // Going back replays from the start too.
  const back = await take(inOrder, 2, 12), fresh = buffer({ contexts: 5, modelBatch: 3 });
  for (let i = 0; i < 2; i++) await take(fresh, i, 12);
  assertEquals([...back.x], [...(await take(fresh, 2, 12)).x], "batch 2 again");
  await Promise.all([inOrder.close(), fresh.close()]);
});

test("runTraining on a live buffer: stop and resume = straight (in process); other data refused", async () => {
  const dir = await mkdtemp(join(tmpdir(), "live-drv-"));
  try {
    const cfg = resolveConfig({ arch: "topk", d_in: D, d_sae: 64, k: 4 });
    const train = resolveTrainConfig(cfg, { steps: 16, batch_size: 16, seed: 1 });
    const setup = (out: string, data = buffer()) => ({ cfg, train, data, out, checkpointEvery: 4 });
    const straight = await runTraining(setup(join(dir, "a")));
    await runTraining({ ...setup(join(dir, "b")), stopAfter: 7 });
    const resumed = await runTraining({ ...setup(join(dir, "b")), resume: true });
    for (const k of ["W_enc", "W_dec", "b_enc", "b_dec"] as const) {
      assertEquals(
        [...resumed.params[k]!.dataSync()],
        [...straight.params[k]!.dataSync()],
        `${k} after resume`,
      );
    }
    let msg = "";
    const other = buffer({ rows: idRows(idsOf(13, 5), T, { name: "other" }) });
    await runTraining({ ...setup(join(dir, "b"), other), resume: true }).catch((e) =>
      msg = (e as Error).message
    );
    assert(msg.includes("trained on other data") && msg.includes("other (20 rows"), msg);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

/** `sae train` on the fixture, as a child process; resolves when it exits. */
const spawnTrain = (args: string[], killWhen?: () => Promise<boolean>) =>
  spawnCli(["train", ...args], killWhen);

test(
  "sae train --model --hook --data: SIGKILL after a checkpoint, --resume = the uninterrupted run, bitwise",
  async () => {
    const dir = await mkdtemp(join(tmpdir(), "live-cli-"));
    try {
      const [ids, ids2] = [join(dir, "ids.npy"), join(dir, "ids2.npy")];
      await saveNpy(ids, t.tensor(idsOf(37, 11, 48 * T), { shape: [48, T] }));
      await saveNpy(ids2, t.tensor(idsOf(13, 5, 48 * T), { shape: [48, T] }));
      const args = (out: string, data = ids) => [
        ...["--model", MODEL, "--hook", H0, "--data", data, "--context", String(T)],
        ...["--buffer-contexts", "12", "--model-batch", "4", "--exclude-special"],
        ...["--steps", "300", "--batch", "32", "--d-sae", "256", "--k", "8", "--seed", "3"],
        ...["--checkpoint-every", "20", "--quiet", "--out", out],
      ];
      const straight = await runCli("train", ...args(join(dir, "a")));
      assertEquals(straight.code, 0, straight.err);
      const cfgJson = JSON.parse(await readFile(join(dir, "a", "cfg.json"), "utf8"));
      assertEquals([cfgJson.model_name, cfgJson.hook_name, cfgJson.context_size], [MODEL, H0, T]);
      const dataJson = JSON.parse(await readFile(join(dir, "a", "data.json"), "utf8"));
      assertEquals([dataJson.kind, dataJson.exclude], ["model", [63]], "BOS/EOS 63 excluded");

      const b = join(dir, "b");
      const killed = await spawnTrain(
        args(b),
        () => access(join(b, "checkpoint", "state.json")).then(() => true, () => false),
      );
      assertEquals(killed.signal, "SIGKILL", `the run ended by itself: ${killed.output}`);
      const state = JSON.parse(await readFile(join(b, "checkpoint", "state.json"), "utf8"));
      assert(state.step > 0 && state.step < 300, `killed at step ${state.step}`);
      await access(join(b, "sae_weights.safetensors")).then(
        () => assert(false, "weights written before the end"),
        () => {},
      );
      const resumed = await runCli("train", ...args(b), "--resume");
      assertEquals(resumed.code, 0, resumed.err);
      const [wa, wb] = await Promise.all(
        ["a", "b"].map((d) => readFile(join(dir, d, "sae_weights.safetensors"))),
      );
      assert(
        wa.length > 0 && Buffer.compare(wa, wb) === 0,
        "resumed weights differ from the straight run",
      );

      // Other tokens under the same options: the checkpoint's data position means nothing there.
      let msg = "";
      await runCli("train", ...args(b, ids2), "--resume").catch((
        e,
      ) => (msg = (e as Error).message));
      assert(
        msg.includes(`${join(b, "checkpoint")} was trained on other data`) &&
          msg.includes(`of npy ${ids}, token ids" then, "`) &&
          msg.includes(`of npy ${ids2}, token ids" now`),
        msg,
      );
      // Live options without a model, and a model without a hook, are usage errors.
      const r1 = await runCli("train", "--hook", H0, "--data", ids);
      assert(r1.code === 2 && r1.err.includes("--hook needs --model"), r1.err);
      const r2 = await runCli("train", "--model", MODEL, "--data", ids);
      assert(r2.code === 2 && r2.err.includes("--model needs --hook"), r2.err);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  },
  240_000,
);
