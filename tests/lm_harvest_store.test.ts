// Harvesting into an Arrow store on the tiny fixture models: the stored rows equal runWithCache on
// the same token rows (bitwise in f32, bf16 the rounding of that), excluded ids and padding are
// absent with the others' sequence_id/position right, [L, d] rows for several hooks, [2, d] rows
// pairing two models on one token, and a harvest killed (in-process, and a real SIGKILL of the
// CLI) continues to the very store an uninterrupted run writes; other options are refused.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { tensor } from "../tensor/ops/create.ts";
import { type Manifest, PROGRESS, storeStream, writeStore } from "../data/arrow_store.ts";
import { saveNpy } from "../data/npy.ts";
import { countProgress } from "../data/progress.ts";
import { type HarvestStoreOptions, harvestToStore } from "../data/lm/harvest_store.ts";
import { type LanguageModel, loadModel, runWithCache } from "../data/lm/model.ts";
import type { TokenRow, TokenRowStream } from "../data/text/token_rows.ts";
import { assert, assertEquals, test, withTempDir } from "./harness.ts";
import { runCli, spawnCli } from "./cli_run.ts";
import { expectError, root } from "./lm_fixtures.ts";

const HOOK = "blocks.1.hook_resid_post";

const withTemp = (fn: (dir: string) => Promise<void>) => withTempDir("lm-harvest-", fn);

/** Deterministic ids in [0, vocab): row i, position p. */
function idRows(n: number, T: number, vocab: number, seed = 1): Int32Array[] {
  return Array.from(
    { length: n },
    (_, i) =>
      Int32Array.from({ length: T }, (_, p) => (((i + seed) * 7919 + p * 104729) >>> 3) % vocab),
  );
}

/** A TokenRowStream over `rows`; `lengths` give padded rows; `failAfter` throws past that row. */
function rowStream(
  rows: Int32Array[],
  o: { lengths?: number[]; failAfter?: number } = {},
): TokenRowStream {
  return {
    context: rows[0].length,
    describe: () => `test rows [${rows.length}, ${rows[0].length}]`,
    async *rows() {
      for (let i = 0; i < rows.length; i++) {
        if (o.failAfter !== undefined && i >= o.failAfter) throw new Error("simulated crash");
        const row: TokenRow & { length?: number } = { ids: rows[i], index: i };
        if (o.lengths) row.length = o.lengths[i];
        yield row;
      }
    },
  };
}

interface Stored {
  x: Float32Array;
  tokenId: number[];
  sequenceId: number[];
  position: number[];
  rows: number;
  manifest: Manifest;
}

function readStore(dir: string): Stored {
  const s = storeStream(dir, { tokenIds: true, sequenceIds: true, positions: true });
  const xs: Float32Array[] = [], tokenId: number[] = [], sequenceId: number[] = [];
  const position: number[] = [];
  for (let it = s.open(), r = it.next(); !r.done; r = it.next()) {
    const c = r.value;
    xs.push(c.x.slice());
    tokenId.push(...c.tokenIds!);
    sequenceId.push(...c.sequenceIds!);
    position.push(...c.positions!);
  }
  const x = new Float32Array(xs.reduce((a, v) => a + v.length, 0));
  let o = 0;
  for (const v of xs) x.set(v, o), o += v.length;
  return { x, tokenId, sequenceId, position, rows: s.manifest.rows, manifest: s.manifest };
}

/** runWithCache on rows grouped as the harvest groups them: per token, the hook's f32 values. */
function reference(
  m: LanguageModel,
  rows: Int32Array[],
  hooks: string[],
  batch: number,
): Map<string, Float32Array>[] {
  const T = rows[0].length, out: Map<string, Float32Array>[] = [];
  for (let i = 0; i < rows.length; i += batch) {
    const group = rows.slice(i, i + batch), ids = new Int32Array(group.length * T);
    group.forEach((r, j) => ids.set(r, j * T));
    const { cache } = runWithCache(m, tensor(ids, { shape: [group.length, T] }), hooks, {
      stopEarly: true,
    });
    const vals = hooks.map((h) => cache[h].dataSync() as Float32Array);
    const d = vals[0].length / (group.length * T);
    for (let k = 0; k < group.length * T; k++) {
      out.push(new Map(hooks.map((h, j) => [h, vals[j].slice(k * d, (k + 1) * d)])));
    }
  }
  return out;
}

function bf16Round(x: number): number {
  const f = new Float32Array([x]), u = new Uint32Array(f.buffer);
  u[0] = ((u[0] + 0x7fff + ((u[0] >>> 16) & 1)) >>> 0) & 0xffff0000;
  return f[0];
}

function assertRow(got: Float32Array, want: Float32Array, what: string): void {
  for (let j = 0; j < want.length; j++) {
    if (!Object.is(got[j], want[j])) {
      throw new Error(`${what}[${j}]: stored ${got[j]}, expected ${want[j]}`);
    }
  }
}

test("harvest: f32 rows equal runWithCache bitwise, with token_id, sequence_id, position", async () => {
  const model = await loadModel(root + "gpt2");
  const rows = idRows(7, 12, 64);
  await withTemp(async (dir) => {
    const out = join(dir, "store");
    const r = await harvestToStore({
      model,
      modelName: "gpt2-fixture",
      hooks: [HOOK],
      rows: rowStream(rows),
      tokens: 1000,
      out,
      batch: 3,
      rowsPerShard: 20,
    });
    assert(r.exhausted && !r.alreadyComplete && r.written === 84, JSON.stringify(r));
    const s = readStore(out);
    assertEquals(s.rows, 84);
    assertEquals(s.manifest.row_shape, [32]);
    // Shards end between batches of 3 rows (36 tokens): 36, 36, 12.
    assertEquals(s.manifest.shards.map((e) => e.rows), [36, 36, 12]);
    const meta = s.manifest.meta!.harvest as Record<string, unknown>;
    assertEquals(
      [meta.model, meta.hooks, meta.context, meta.data],
      ["gpt2-fixture", [HOOK], 12, "test rows [7, 12]"],
    );
    assert(!existsSync(join(out, PROGRESS)), "the progress record is gone once finished");
    const ref = reference(model, rows, [HOOK], 3);
    for (let k = 0; k < 84; k++) {
      assertEquals(
        [s.tokenId[k], s.sequenceId[k], s.position[k]],
        [rows[Math.floor(k / 12)][k % 12], Math.floor(k / 12), k % 12],
      );
      assertRow(s.x.subarray(k * 32, (k + 1) * 32), ref[k].get(HOOK)!, `row ${k}`);
    }
  });
});

test("harvest: a bf16 store holds the rounding of the f32 value", async () => {
  const model = await loadModel(root + "llama");
  const rows = idRows(4, 10, 80);
  await withTemp(async (dir) => {
    const hook = "blocks.0.hook_mlp_out";
    await harvestToStore({
      model,
      modelName: "llama",
      hooks: [hook],
      rows: rowStream(rows),
      tokens: 40,
      out: dir + "/s",
      dtype: "bf16",
      batch: 2,
    });
    const s = readStore(dir + "/s");
    assertEquals([s.rows, s.manifest.dtype], [40, "bf16"]);
    const ref = reference(model, rows, [hook], 2);
    for (let k = 0; k < 40; k++) {
      assertRow(s.x.subarray(k * 32, (k + 1) * 32), ref[k].get(hook)!.map(bf16Round), `row ${k}`);
    }
  });
});

test("harvest: excluded ids and padding are left out; the store stops at exactly N tokens", async () => {
  const model = await loadModel(root + "gpt2");
  const rows = idRows(5, 12, 64, 3);
  const lengths = [12, 7, 12, 0, 12];
  const exclude = new Set([rows[0][0], rows[2][5], 9]);
  await withTemp(async (dir) => {
    const base = { model, modelName: "m", hooks: [HOOK], out: "", batch: 2, excludeIds: exclude };
    // Which (row, position) survive, in order.
    const keep: [number, number][] = [];
    rows.forEach((r, i) => {
      for (let p = 0; p < lengths[i]; p++) if (!exclude.has(r[p])) keep.push([i, p]);
    });
    const all = await harvestToStore({
      ...base,
      rows: rowStream(rows, { lengths }),
      tokens: 1000,
      out: dir + "/all",
    });
    assert(all.exhausted, "fewer tokens than asked");
    const s = readStore(dir + "/all");
    assertEquals(s.rows, keep.length);
    assertEquals(s.sequenceId, keep.map(([i]) => i));
    assertEquals(s.position, keep.map(([, p]) => p));
    assertEquals(s.tokenId, keep.map(([i, p]) => rows[i][p]));
    assert(s.tokenId.every((t) => !exclude.has(t)), "no excluded id is stored");
    const ref = reference(model, rows, [HOOK], 2);
    keep.forEach(([i, p], k) =>
      assertRow(s.x.subarray(k * 32, (k + 1) * 32), ref[i * 12 + p].get(HOOK)!, `row ${k}`)
    );
    // Cut exactly: N = 15 ends inside a token row; the rows are the first 15 of the full harvest.
    const cut = await harvestToStore({
      ...base,
      rows: rowStream(rows, { lengths }),
      tokens: 15,
      out: dir + "/cut",
    });
    assert(!cut.exhausted, "15 tokens were there");
    const c = readStore(dir + "/cut");
    assertEquals(c.rows, 15);
    assertEquals(c.sequenceId, s.sequenceId.slice(0, 15));
    assertEquals(c.position, s.position.slice(0, 15));
    assertEquals(Array.from(c.x), Array.from(s.x.subarray(0, 15 * 32)));
  });
});

test("harvest: several hooks give rows [L, d]; different widths are refused", async () => {
  const model = await loadModel(root + "gpt_neox");
  const rows = idRows(3, 8, 80);
  const hooks = ["blocks.0.hook_resid_post", "blocks.1.hook_attn_out", "hook_embed"];
  await withTemp(async (dir) => {
    await harvestToStore({
      model,
      modelName: "neox",
      hooks,
      rows: rowStream(rows),
      tokens: 24,
      out: dir + "/s",
      batch: 2,
    });
    const s = readStore(dir + "/s");
    assertEquals([s.rows, s.manifest.row_shape, s.manifest.hook_point], [
      24,
      [3, 32],
      hooks.join(","),
    ]);
    const ref = reference(model, rows, hooks, 2);
    for (let k = 0; k < 24; k++) {
      hooks.forEach((h, l) =>
        assertRow(s.x.subarray((k * 3 + l) * 32, (k * 3 + l + 1) * 32), ref[k].get(h)!, `${h} ${k}`)
      );
    }
    const o: HarvestStoreOptions = {
      model,
      modelName: "neox",
      hooks: ["blocks.0.hook_resid_post", "blocks.0.mlp.hook_post"],
      rows: rowStream(rows),
      tokens: 8,
      out: dir + "/bad",
    };
    await expectError(() => harvestToStore(o), [
      "same width",
      "blocks.0.hook_resid_post 32",
      "blocks.0.mlp.hook_post 64",
    ]);
    await expectError(
      () => harvestToStore({ ...o, hooks: ["blocks.0.attn.hook_pattern"] }),
      ["blocks.0.attn.hook_pattern", "not one value per token"],
    );
    await expectError(
      () => harvestToStore({ ...o, hooks: ["blocks.9.hook_resid_post"] }),
      ["neox", "no hook point", "blocks.9.hook_resid_post"],
    );
    assert(!existsSync(dir + "/bad"), "nothing written for refused options");
  });
});

test("harvest: a second model on the same tokens gives rows [2, d]; mismatches are refused", async () => {
  const [a, b] = await Promise.all([loadModel(root + "gpt2"), loadModel(root + "gpt2_sharded")]);
  const rows = idRows(5, 12, 64, 5);
  await withTemp(async (dir) => {
    await harvestToStore({
      model: a,
      modelName: "A",
      modelB: b,
      modelBName: "B",
      hooks: [HOOK],
      rows: rowStream(rows),
      tokens: 50,
      out: dir + "/s",
      batch: 2,
      excludeIds: [rows[1][3]],
    });
    const s = readStore(dir + "/s");
    assertEquals([s.rows, s.manifest.row_shape, s.manifest.model], [50, [2, 32], "A,B"]);
    const [refA, refB] = [reference(a, rows, [HOOK], 2), reference(b, rows, [HOOK], 2)];
    let differ = false;
    for (let k = 0; k < 50; k++) {
      const t = s.sequenceId[k] * 12 + s.position[k];
      assertEquals(s.tokenId[k], rows[s.sequenceId[k]][s.position[k]]);
      assertRow(s.x.subarray(k * 64, k * 64 + 32), refA[t].get(HOOK)!, `A ${k}`);
      assertRow(s.x.subarray(k * 64 + 32, k * 64 + 64), refB[t].get(HOOK)!, `B ${k}`);
      differ ||= refA[t].get(HOOK)![0] !== refB[t].get(HOOK)![0];
    }
    assert(differ, "the two models differ, so the halves tell them apart");
    const o = { model: a, modelName: "A", hooks: [HOOK], rows: rowStream(rows), tokens: 8 };
    const neox = await loadModel(root + "gpt_neox");
    await expectError(
      () => harvestToStore({ ...o, modelB: neox, modelBName: "N", out: dir + "/v" }),
      ["share a vocabulary", "A has 64", "N 96"],
    );
    // gpt2_sharded's MLP is 48 wide (n_inner), gpt2's 128.
    await expectError(
      () =>
        harvestToStore({
          ...o,
          hooks: ["blocks.0.mlp.hook_post"],
          modelB: b,
          modelBName: "B",
          out: dir + "/w",
        }),
      ["blocks.0.mlp.hook_post is 128 wide in A but 48 in B"],
    );
    await expectError(
      () => harvestToStore({ ...o, hooks: [HOOK, "hook_embed"], modelB: b, out: dir + "/h" }),
      ["one hook point", "[2, d]"],
    );
  });
});

test("harvest: a crashed harvest continues to the same store; other options are refused", async () => {
  const model = await loadModel(root + "gpt2");
  const rows = idRows(20, 10, 64, 7);
  await withTemp(async (dir) => {
    const o = {
      model,
      modelName: "gpt2",
      hooks: [HOOK],
      tokens: 175,
      batch: 2,
      rowsPerShard: 30,
      excludeIds: [5],
    };
    const full = await harvestToStore({ ...o, rows: rowStream(rows), out: dir + "/full" });
    await expectError(
      () => harvestToStore({ ...o, rows: rowStream(rows, { failAfter: 11 }), out: dir + "/r" }),
      ["simulated crash"],
    );
    const progress = JSON.parse(readFileSync(join(dir, "r", PROGRESS), "utf8"));
    assert(progress.shards.length >= 1 && progress.cursor.next_row <= 11, JSON.stringify(progress));
    assert(!existsSync(join(dir, "r", "manifest.json")), "not finished");
    await expectError(
      () => harvestToStore({ ...o, dtype: "bf16", rows: rowStream(rows), out: dir + "/r" }),
      ["other options", 'dtype: the store has "f32", this run "bf16"'],
    );
    const resumed = await harvestToStore({ ...o, rows: rowStream(rows), out: dir + "/r" });
    assertEquals(resumed.startRow, progress.cursor.next_row);
    assert(resumed.startRow > 0 && resumed.written < 175, JSON.stringify(resumed));
    assertEquals(resumed.manifest, full.manifest, "the same manifest (shards' sha256 included)");
    for (const sh of full.manifest.shards) {
      assert(
        readFileSync(join(dir, "full", sh.file)).equals(readFileSync(join(dir, "r", sh.file))),
        `${sh.file} byte for byte`,
      );
    }
    const again = await harvestToStore({ ...o, rows: rowStream(rows), out: dir + "/r" });
    assert(again.alreadyComplete && again.written === 0, "a complete store is left as it is");
    await expectError(
      () => harvestToStore({ ...o, batch: 4, rows: rowStream(rows), out: dir + "/r" }),
      ["batch: the store has 2, this run 4"],
    );
    await writeStore(dir + "/plain", new Float32Array(64), { rowShape: [32] });
    await expectError(
      () => harvestToStore({ ...o, rows: rowStream(rows), out: dir + "/plain" }),
      ["/plain holds a store that was not harvested"],
    );
  });
});

/** The harvest CLI's arguments for a store in `out`. */
const cliArgs = (ids: string, out: string, extra: string[] = []) => [
  "harvest",
  "--model",
  root + "gpt2",
  "--hooks",
  HOOK,
  "--data",
  ids,
  "--context",
  "16",
  "--tokens",
  "12000",
  "--out",
  out,
  "--batch",
  "4",
  "--rows-per-shard",
  "64",
  "--exclude-ids",
  "3,4",
  ...extra,
];

test(
  "sae harvest: SIGKILLed once a shard is done, the same command finishes the same store",
  async () => {
    await withTemp(async (dir) => {
      const ids = join(dir, "ids.npy");
      const rows = idRows(800, 20, 64, 11), flat = new Int32Array(800 * 20);
      rows.forEach((r, i) => flat.set(r, i * 20));
      await saveNpy(ids, tensor(flat, { shape: [800, 20] }));
      const killed = join(dir, "killed"), whole = join(dir, "whole");
      let shardsAtKill = -1;
      const child = await spawnCli(cliArgs(ids, killed), () => {
        if (!existsSync(join(killed, PROGRESS))) return false;
        shardsAtKill = JSON.parse(readFileSync(join(killed, PROGRESS), "utf8")).shards.length;
        return true;
      }, 60_000);
      assertEquals(child.signal, "SIGKILL", `killed mid-harvest: ${child.output}`);
      assert(shardsAtKill >= 1, "at least one shard was complete");
      assert(!existsSync(join(killed, "manifest.json")), "killed before it finished");
      const resumed = await runCli(...cliArgs(ids, killed));
      assertEquals(resumed.code, 0, resumed.err);
      assert(/continued at token row [1-9]/.test(resumed.out), resumed.out);
      const fresh = await runCli(...cliArgs(ids, whole));
      assertEquals(fresh.code, 0, fresh.err);
      const [mk, mw] = [readStore(killed), readStore(whole)];
      assertEquals(mk.manifest, mw.manifest, "the same manifest, shard hashes included");
      assertEquals(mk.rows, 12000);
      assertEquals(Array.from(mk.x), Array.from(mw.x));
      // Every (sequence, position) once, in order: none lost, none duplicated.
      for (let k = 1; k < mk.rows; k++) {
        const [a, b] = [
          mk.sequenceId[k - 1] * 20 + mk.position[k - 1],
          mk.sequenceId[k] * 20 + mk.position[k],
        ];
        if (!(b > a)) {
          throw new Error(`row ${k}: (${mk.sequenceId[k]}, ${mk.position[k]}) after row ${k - 1}`);
        }
      }
      const other = await runCli(...cliArgs(ids, killed, ["--dtype", "bf16"]));
      assertEquals(other.code, 1, other.out);
      assert(other.err.includes('dtype: the store has "f32", this run "bf16"'), other.err);
      const done = await runCli(...cliArgs(ids, killed));
      assert(done.code === 0 && done.out.includes("already complete"), done.out + done.err);
    });
  },
  240_000,
);

test("sae harvest: --exclude-special drops the model's special ids; usage errors", async () => {
  await withTemp(async (dir) => {
    const ids = join(dir, "ids.npy");
    const rows = idRows(4, 16, 64, 2);
    rows[1][4] = 63, rows[2][0] = 63; // the fixture's bos = eos = 63
    const flat = new Int32Array(64);
    rows.forEach((r, i) => flat.set(r, i * 16));
    await saveNpy(ids, tensor(flat, { shape: [4, 16] }));
    const r = await runCli(
      "harvest",
      "--model",
      root + "gpt2",
      "--hooks",
      HOOK,
      "--data",
      ids,
      "--context",
      "12",
      "--packing",
      "truncate",
      "--tokens",
      "100",
      "--out",
      dir + "/s",
      "--exclude-special",
    );
    assertEquals(r.code, 0, r.err);
    assert(r.err.includes("the data ran out after 46 tokens"), r.err);
    const s = readStore(dir + "/s");
    assertEquals(s.rows, 46);
    assert(!s.tokenId.includes(63) && Math.max(...s.position) === 11, "63 dropped, rows cut to 12");
    assertEquals((s.manifest.meta!.harvest as { exclude_ids: number[] }).exclude_ids, [63]);
    const ctx = await runCli(
      "harvest",
      "--model",
      root + "gpt2",
      "--hooks",
      HOOK,
      "--data",
      ids,
      "--context",
      "20",
      "--packing",
      "zip",
      "--tokens",
      "5",
      "--out",
      dir + "/t",
    );
    assertEquals(ctx.code, 2);
    assert(ctx.err.includes("--packing must be pack or truncate, got zip"), ctx.err);
    const unknown = await runCli("harvest", "--modle", "x");
    assert(unknown.code === 2 && unknown.err.includes("unknown option --modle"), unknown.err);
  });
});

test("countProgress: a few lines in a log, a bar redrawn in place on a terminal", () => {
  const log: string[] = [];
  const p = countProgress("harvest", 100, { unit: "tokens", sink: { write: (s) => log.push(s) } });
  for (let i = 0; i < 100; i++) p.advance(1);
  p.note("shards 3");
  p.done();
  assertEquals(log.length, 5, log.join(""));
  assert(log[0].startsWith("harvest: 100 tokens") && log[4].includes("100/100 tokens"), log[4]);
  assert(log[4].includes("tokens/s ETA") && log[4].endsWith("shards 3\n"), log[4]);
  const tty: string[] = [];
  const q = countProgress("h", 10, { start: 4, sink: { write: (s) => tty.push(s), isTTY: true } });
  q.advance(6);
  q.done();
  assert(tty.every((s) => s.startsWith("\r")) && tty.at(-1)!.includes("10/10"), tty.join("|"));
});
