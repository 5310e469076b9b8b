/**
 * Module parallel: hooks split across ranks in contiguous runs; harvested activations shared by a
 * rank's dictionaries (one forward per batch, equal to runWithCache on the same rows); and end to
 * end under `mpirun --oversubscribe -np 2` on the tiny GPT-2 fixture, three dictionaries trained
 * by `sae train --hooks … --ranks 2` are byte for byte the dictionaries each hook trains alone in
 * one process, from a live model and from one store per hook. The mpirun parts skip, saying why,
 * when mpirun is absent (REQUIRE_MPI=1 makes that a failure).
 */
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as t from "../mod.ts";
import { assert, assertEquals, assertThrows, test } from "./harness.ts";
import { runSync, scriptCommand } from "../tensor/platform/process.ts";
import { readEnv } from "../tensor/platform/env.ts";
import { loadModel, runWithCache } from "../data/lm/model.ts";
import { harvestData } from "../data/lm/harvest.ts";
import { saveNpy } from "../data/npy.ts";
import { assignModules, moduleDir } from "../sae/train/module_parallel.ts";

const MODEL = "tests/golden/fixtures/lm/gpt2";
const HOOKS = ["blocks.0.hook_resid_post", "blocks.1.hook_mlp_out", "blocks.1.hook_resid_post"];
const N = 16, T = 8;

const mpirun = runSync("mpirun", ["--version"]);
const why = mpirun.error ??
  (mpirun.status !== 0 ? `mpirun --version exited ${mpirun.status}` : null);
if (why && readEnv("REQUIRE_MPI") === "1") {
  throw new Error(`REQUIRE_MPI=1 but mpirun is absent: ${why}`);
}
if (why) console.log(`skip: module-parallel training under mpirun: ${why}`);

/** Deterministic token ids [N, T] below the fixture's vocabulary of 64. */
const ids = () =>
  t.tensor(Int32Array.from({ length: N * T }, (_, i) => (i * 37 + 11) % 64), { shape: [N, T] });

test("module parallel: contiguous runs of hooks per rank; too many ranks and bad names refused", () => {
  assertEquals(assignModules(HOOKS, 2), [[HOOKS[0]], [HOOKS[1], HOOKS[2]]]);
  assertEquals(assignModules(HOOKS, 3), HOOKS.map((h) => [h]));
  assertEquals(assignModules(["a", "b", "c", "d", "e"], 2), [["a", "b"], ["c", "d", "e"]]);
  assertThrows(() => assignModules(HOOKS, 4), "4 ranks for 3 dictionaries", "at most 3 ranks");
  assertThrows(() => assignModules(["a", "a"], 1), "a hook is named twice");
  assertEquals(moduleDir("out", HOOKS[0]), `out/${HOOKS[0]}`);
  assertThrows(() => moduleDir("out", "../x"), "cannot be a folder name");
});

test("module parallel: harvested hooks share one forward per batch and equal runWithCache", async () => {
  const model = await loadModel(MODEL);
  const tokens = ids();
  const h = harvestData(model, tokens, HOOKS.slice(0, 2));
  const setup = h.forwards(); // the width probe
  const [a, b] = HOOKS.slice(0, 2).map((k) => h.sources[k]);
  assertEquals([a.width, b.width], [32, 32]);
  for (let g = 0; g < 5; g++) {
    const xa = a.batch(g, 4 * T), xb = b.batch(g, 4 * T);
    assertEquals(xa.x.shape, [4 * T, 32]);
    // Batch g holds sequences 4g … 4g+3 (mod N), flattened in order.
    const rows = Array.from({ length: 4 }, (_, j) => ((4 * g + j) % N));
    const want = runWithCache(
      model,
      t.tensor(
        Int32Array.from(
          rows.flatMap((r) => Array.from({ length: T }, (_, p) => ((r * T + p) * 37 + 11) % 64)),
        ),
        { shape: [4, T] },
      ),
      HOOKS.slice(0, 2),
    ).cache;
    assertEquals(Array.from(await xa.x.data()), Array.from(await want[HOOKS[0]].data()));
    assertEquals(Array.from(await xb.x.data()), Array.from(await want[HOOKS[1]].data()));
    xa.x.dispose(); // a consumer disposing its batch leaves the cached one to the others
    assertEquals((await b.batch(g, 4 * T).x.data()).length, 4 * T * 32);
  }
  assertEquals(h.forwards() - setup, 5, "one forward per batch for both hooks");
  assertThrows(() => a.batch(0, 12), "12 rows is not whole sequences of 8 tokens");
  assertThrows(
    () => harvestData(model, tokens, ["blocks.9.hook_resid_post"]),
    "is not a hook point",
  );
  assertThrows(
    () => harvestData(model, t.tensor(Int32Array.of(1, 99), { shape: [1, 2] }), HOOKS),
    "holds token 99, outside the vocabulary [0, 64)",
  );
  h.dispose();
});

if (!why) {
  const root = await mkdtemp(join(tmpdir(), "sc-modules-"));
  const cli = (args: string[]) => {
    const cmd = scriptCommand("cli.ts");
    const r = runSync(cmd[0], [...cmd.slice(1), "train", ...args], { timeoutMs: 120_000 });
    if (r.status !== 0) {
      throw new Error(`sae train ${args.join(" ")}: exit ${r.status}\n${r.stdout}\n${r.stderr}`);
    }
    return r;
  };
  const common = [
    "--steps",
    "12",
    "--batch",
    String(4 * T),
    "--d-sae",
    "64",
    "--k",
    "4",
    "--quiet",
  ];
  const weights = (dir: string, hook: string) =>
    readFile(join(dir, hook, "sae_weights.safetensors"));

  test("module parallel: 3 dictionaries on 2 ranks = each hook alone in one process (live model, stores)", async () => {
    await saveNpy(join(root, "ids.npy"), ids());
    const lm = ["--model", MODEL, "--tokens", join(root, "ids.npy"), ...common];
    cli(["--hooks", HOOKS.join(","), "--ranks", "2", "--out", join(root, "two"), ...lm]);
    const plan = JSON.parse(await readFile(join(root, "two", "modules.json"), "utf8"));
    assertEquals(plan.ranks, [[HOOKS[0]], [HOOKS[1], HOOKS[2]]]);
    for (const hook of HOOKS) {
      cli(["--hooks", hook, "--out", join(root, "alone"), ...lm]);
      const [x, y] = await Promise.all([
        weights(join(root, "two"), hook),
        weights(join(root, "alone"), hook),
      ]);
      assert(
        x.length > 0 && Buffer.compare(x, y) === 0,
        `${hook}: the 2-rank dictionary differs from training it alone`,
      );
      const files = await readdir(join(root, "two", hook));
      for (const f of ["cfg.json", "metrics.jsonl", "eval.json", "checkpoint", "data.json"]) {
        assert(files.includes(f), `${hook} lacks ${f}: ${files.join(", ")}`);
      }
    }
    // One store per hook: the activations of the same tokens, saved as .npy.
    const model = await loadModel(MODEL);
    const { cache } = runWithCache(model, ids(), HOOKS);
    for (const h of HOOKS) await saveNpy(join(root, `${h}.npy`), t.reshape(cache[h], [N * T, 32]));
    const stores = ["--data", join(root, "{hook}.npy"), ...common];
    cli(["--hooks", HOOKS.join(","), "--ranks", "2", "--out", join(root, "stores2"), ...stores]);
    for (const hook of HOOKS) {
      cli(["--hooks", hook, "--out", join(root, "stores1"), ...stores]);
      const [x, y] = await Promise.all([
        weights(join(root, "stores2"), hook),
        weights(join(root, "stores1"), hook),
      ]);
      assert(Buffer.compare(x, y) === 0, `${hook}: from stores, 2 ranks differ from alone`);
    }
  });

  test("module parallel: more ranks than hooks, and --hooks without a source, are usage errors", () => {
    const cmd = scriptCommand("cli.ts");
    const r = runSync(cmd[0], [
      ...cmd.slice(1),
      "train",
      "--hooks",
      HOOKS[0],
      "--out",
      join(root, "x"),
    ]);
    assert(
      r.status === 2 && r.stderr.includes("--hooks needs --model M --tokens ids.npy"),
      r.stderr,
    );
    const many = runSync(cmd[0], [
      ...cmd.slice(1),
      "train",
      "--hooks",
      HOOKS[0],
      "--ranks",
      "2",
      "--model",
      MODEL,
      "--tokens",
      join(root, "ids.npy"),
      "--out",
      join(root, "y"),
      "--quiet",
    ], { timeoutMs: 120_000 });
    assert(
      many.status !== 0 && (many.stderr + many.stdout).includes("2 ranks for 1 dictionaries"),
      many.stderr,
    );
  });

  test("module parallel: clean up", () => rm(root, { recursive: true, force: true }));
}
