// `sae scae train|connect|finetune|eval` end to end on the tiny 2-layer GPT-2 and NeoX fixtures with
// random token ids: the suite folder the trainer writes (one forward per batch), connections equal
// to the library's estimate, the evaluation's JSON (CE of the clean residual = the model's own CE,
// the first module unchanged by pruning), finetuning that resumes bit-identically after a stop and
// after SIGKILL, `sae features` on a suite's module, and bad input named in the errors.
import { existsSync } from "node:fs";
import { cp, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { tensor } from "../tensor/ops/create.ts";
import { saveNpy } from "../data/npy.ts";
import { loadModel, runWithCache } from "../data/lm/model.ts";
import { loadSuite } from "../sae/scae/suite.ts";
import { loadConnections } from "../sae/scae/connections.ts";
import { accumulate, emptyStats, selectConnections } from "../sae/scae/connect.ts";
import { type HeadWeights, headWeights } from "../sae/scae/frozen.ts";
import { assert, assertClose, assertEquals, test } from "./harness.ts";
import { runCli, spawnCli } from "./cli_run.ts";

const LM = fileURLToPath(new URL("./golden/fixtures/lm/", import.meta.url));
const FIX = fileURLToPath(new URL("./golden/fixtures/scae/", import.meta.url));
const root = await mkdtemp(join(tmpdir(), "sc-scae-cli-"));
const model = join(LM, "gpt2");
const ids = join(root, "ids.npy");
const STEPS = 12;

/** Deterministic token ids [40, 16] in the fixtures' vocabulary of 64. */
async function writeIds(): Promise<void> {
  const v = new Int32Array(40 * 16);
  let s = 7;
  for (let i = 0; i < v.length; i++) {
    v[i] = ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) >>> 16) % 64;
  }
  await saveNpy(ids, tensor(v, { shape: [40, 16], dtype: "i32" }));
}

const data = ["--model", model, "--data", ids, "--context", "16"];

let made: Promise<string> | null = null;
/** A pretrained, connected (C 6) suite of the GPT-2 fixture. */
function suite(): Promise<string> {
  return made ??= (async () => {
    await writeIds();
    const dir = join(root, "suite");
    const t = await runCli(
      ...["scae", "train", dir, ...data, "--expansion", "2", "--k", "4"],
      ...["--steps", String(STEPS), "--batch", "128", "--tokens", "512", "--quiet"],
    );
    assertEquals(t.code, 0, t.err);
    // Batch 0 initialises, STEPS batches train, one short pass finds the widths.
    assert(t.out.includes(`4 modules, ${STEPS + 2} model forwards`), t.out);
    const c = await runCli("scae", "connect", dir, ...data, "--c", "6", "--tokens", "256");
    assertEquals(c.code, 0, c.err);
    return dir;
  })();
}

async function json(path: string) {
  return JSON.parse(await readFile(path, "utf8"));
}

test("scae train: suite.json and one SAELens folder per module, hooks named in cfg.json", async () => {
  const dir = await suite();
  const s = await loadSuite(dir);
  assertEquals(s.modules.map((m) => m.name), ["attn_0", "mlp_0", "attn_1", "mlp_1"]);
  assertEquals([s.residual, s.k, s.C, s.model], ["sequential", 4, 6, model]);
  for (const m of s.modules) {
    const cfg = s.dicts[m.name].cfg;
    assertEquals(cfg.arch, m.kind === "attn" ? "topk" : "transcoder", m.name);
    assertEquals([cfg.d_sae, cfg.k, cfg.extra.hook_name], [64, 4, m.hookIn], m.name);
    if (m.kind === "mlp") assertEquals(cfg.extra.hook_name_out, m.hookOut);
    const lines = (await readFile(join(dir, m.name, "metrics.jsonl"), "utf8")).trim().split("\n");
    assert(lines.length >= 2, `${m.name} metrics.jsonl`);
  }
  // A parallel-residual model gets a parallel suite.
  const neox = join(root, "neox");
  const r = await runCli(
    ...["scae", "train", neox, "--model", join(LM, "gpt_neox"), "--data", ids, "--context", "16"],
    ...["--expansion", "1", "--k", "3", "--steps", "2", "--batch", "64", "--quiet"],
  );
  assertEquals(r.code, 0, r.err);
  assertEquals((await json(join(neox, "suite.json"))).residual, "parallel");
});

test("scae connect: the tables the library's streaming estimate gives, C in suite.json", async () => {
  const dir = await suite();
  const s = await loadSuite(dir);
  const conns = await loadConnections(
    join(dir, "connections.safetensors"),
    s,
    (m) => s.dicts[m].cfg.d_sae,
  );
  const lm = await loadModel(model);
  const stats = emptyStats();
  const { loadNpy } = await import("../data/npy.ts");
  const { sliceAxis } = await import("../tensor/ops/shape.ts");
  const all = await loadNpy(ids);
  for (let r = 0; r < 16; r += 8) await accumulate(stats, lm, s, sliceAxis(all, 0, r, r + 8));
  const heads: Record<number, HeadWeights> = {};
  for (const m of s.modules) if (m.kind === "attn") heads[m.layer] = headWeights(lm, m.layer);
  const want = await selectConnections(stats, s, heads, 6);
  assertEquals(Object.keys(conns).sort(), ["attn_1", "mlp_0", "mlp_1"]);
  for (const [down, ups] of Object.entries(want)) {
    for (const [up, t] of Object.entries(ups)) {
      assertEquals(Array.from(conns[down][up].ids), Array.from(t.ids), `${down}<-${up}`);
    }
  }
});

/** The model's own next-token CE on the ids, mean over B·(T − 1) positions. */
async function modelCe(): Promise<number> {
  const { loadNpy } = await import("../data/npy.ts");
  const lm = await loadModel(model);
  const t = await loadNpy(ids);
  const { logits } = runWithCache(lm, t, []);
  const [B, T, V] = logits!.shape;
  const l = logits!.dataSync(), x = t.dataSync();
  let total = 0;
  for (let b = 0; b < B; b++) {
    for (let p = 0; p < T - 1; p++) {
      const at = (b * T + p) * V;
      let max = -Infinity;
      for (let v = 0; v < V; v++) max = Math.max(max, l[at + v]);
      let z = 0;
      for (let v = 0; v < V; v++) z += Math.exp(l[at + v] - max);
      total += max + Math.log(z) - l[at + Number(x[b * T + p + 1])];
    }
  }
  return total / (B * (T - 1));
}

test("scae eval --json: rows per C, CE of the clean residual = the model's CE, recovered", async () => {
  const dir = await suite();
  const r = await runCli("scae", "eval", dir, ...data, "--c", "0,3,6,all", "--json");
  assertEquals(r.code, 0, r.err);
  const e = JSON.parse(r.out);
  assertEquals(e.tokens, 640);
  assertClose([e.ce_clean], [await modelCe()], { rtol: 1e-4, msg: "ce_clean" });
  assert(Number.isFinite(e.ce_zero) && e.ce_zero !== e.ce_clean, `zero-ablation ${e.ce_zero}`);
  assertEquals(e.rows.map((x: { c: unknown }) => x.c), ["unpruned", 0, 3, 6, "all"]);
  for (const row of e.rows) {
    assertClose([row.ce_diff], [row.ce - e.ce_clean], { rtol: 1e-9, atol: 1e-12 });
    assertClose([row.ce_loss_recovered], [(e.ce_zero - row.ce) / (e.ce_zero - e.ce_clean)], {
      rtol: 1e-9,
    });
    for (const m of ["attn_0", "mlp_0", "attn_1", "mlp_1"]) {
      const { fvu, l0 } = row.modules[m];
      assert(fvu > 0 && Number.isFinite(fvu) && l0 > 0 && l0 <= 4, `${row.c} ${m}: ${fvu} ${l0}`);
    }
    // attn_0 reads only the embedding: pruning cannot change it.
    assertClose([row.modules.attn_0.fvu], [e.rows[0].modules.attn_0.fvu], { rtol: 1e-5 });
  }
  // Downstream modules do see the pruning: C 0 differs from all.
  assert(e.rows[1].modules.mlp_1.fvu !== e.rows[4].modules.mlp_1.fvu, "C 0 vs all");
  const table = await runCli("scae", "eval", dir, ...data, "--c", "0,all");
  assertEquals(table.code, 0, table.err);
  assert(/^C\s+CE\s+ce_diff\s+recovered\s+attn_0 FVU/m.test(table.out), table.out);
  assert(/^unpruned /m.test(table.out) && /^all /m.test(table.out), table.out);
});

const ft = (out: string, ...more: string[]) => [
  ...["scae", "finetune", join(root, "suite"), ...data, "--out", out, "--loss", "fvu+ce"],
  ...["--auxk", "--dead-tokens", "64", "--steps", "8", "--batch", "64", "--quiet"],
  ...more,
];

async function weights(dir: string): Promise<string[]> {
  return await Promise.all(
    ["attn_0", "mlp_0", "attn_1", "mlp_1"].map(async (m) =>
      Buffer.from(await readFile(join(dir, m, "sae_weights.safetensors"))).toString("base64")
    ),
  );
}

test("scae finetune: stopped and resumed equals the straight run, bit for bit", async () => {
  await suite();
  const straight = join(root, "ft-straight"), parts = join(root, "ft-parts");
  const a = await runCli(...ft(straight));
  assertEquals(a.code, 0, a.err);
  const b = await runCli(...ft(parts, "--stop-after", "3", "--checkpoint-every", "2"));
  assertEquals(b.code, 0, b.err);
  assert(b.out.includes("stopped at step 3 of 8"), b.out);
  assert(!existsSync(join(parts, "suite.json")), "no suite before the last step");
  const c = await runCli(...ft(parts, "--resume"));
  assertEquals(c.code, 0, c.err);
  assertEquals(await weights(parts), await weights(straight));
  const was = await weights(join(root, "suite"));
  (await weights(straight)).forEach((w, i) => assert(w !== was[i], `module ${i} was finetuned`));
  const info = await json(join(straight, "suite.json"));
  assertEquals(info.C, 6);
  assert(existsSync(join(straight, "connections.safetensors")), "connections kept");
  const metrics = (await readFile(join(straight, "metrics.jsonl"), "utf8")).trim().split("\n");
  assertEquals(metrics.length, 8);
  assert(JSON.parse(metrics[7]).auxk !== undefined, "AuxK ran once features were dead");
  // Other options than the checkpoint's are refused.
  const other = await runCli(...ft(parts, "--resume", "--lr", "0.01"));
  assertEquals(other.code, 2, other.out);
  assert(other.err.includes("written with other options"), other.err);
});

test("scae finetune: SIGKILLed after a checkpoint, --resume ends with the straight run's suite", async () => {
  await suite();
  const killed = join(root, "ft-killed");
  const args = ft(killed, "--steps", "14", "--checkpoint-every", "2");
  const straight = join(root, "ft-straight14");
  const a = await runCli(...ft(straight, "--steps", "14"));
  assertEquals(a.code, 0, a.err);
  const ckpt = join(killed, "checkpoint/state.json");
  const child = await spawnCli(args, () => existsSync(ckpt), 60_000);
  assertEquals(child.signal, "SIGKILL", `killed mid-run: ${child.output}`);
  assert(!existsSync(join(killed, "suite.json")), "killed before it finished");
  const r = await runCli(...args, "--resume");
  assertEquals(r.code, 0, r.err);
  assertEquals(await weights(killed), await weights(straight));
});

test("sae features on a suite module: hooks from cfg.json, or from suite.json", async () => {
  const dir = await suite();
  const r = await runCli("features", join(dir, "mlp_1"), ...data, "--quiet", "--show", "1");
  assertEquals(r.code, 0, r.err);
  assertEquals(
    (await json(join(dir, "mlp_1/features/features.json"))).hook,
    "blocks.1.ln2.hook_normalized",
  );
  // The golden suite's cfg.json files name no hooks.
  const copy = join(root, "golden");
  await cp(join(FIX, "gpt2/suite"), copy, { recursive: true });
  const g = await runCli("features", join(copy, "attn_1"), ...data, "--quiet", "--show", "1");
  assertEquals(g.code, 0, g.err);
  assertEquals(
    (await json(join(copy, "attn_1/features/features.json"))).hook,
    "blocks.1.hook_attn_out",
  );
});

test("scae: bad input is named — no suite.json, C over F_up, unknown loss, C not stored", async () => {
  const dir = await suite();
  const cases: [string[], string][] = [
    [["scae", "eval", join(root, "nowhere"), ...data], "suite.json"],
    [["scae", "connect", dir, ...data, "--c", "65"], "--c 65 exceeds attn_0's 64 features"],
    [
      ["scae", "finetune", dir, ...data, "--out", join(root, "x"), "--loss", "kl"],
      "--loss must be one of fvu, ce, fvu+ce",
    ],
    [["scae", "eval", dir, ...data, "--c", "10"], "holds 6 connections per feature"],
    [
      ["scae", "finetune", dir, ...data, "--out", join(root, "x"), "--c", "9"],
      "exceeds the 6 connections stored",
    ],
    [["scae", "frobnicate", dir], "unknown subcommand"],
    [
      ["scae", "train", join(root, "y"), ...data, "--batch", "100"],
      "whole rows of the 16-token context",
    ],
  ];
  for (const [args, want] of cases) {
    const r = await runCli(...args);
    assertEquals(r.code, 2, `${args.join(" ")}: ${r.out}`);
    assert(r.err.includes(want), `${args.join(" ")}: ${r.err}`);
  }
});

test("scae cli: clean up", () => rm(root, { recursive: true, force: true }));
