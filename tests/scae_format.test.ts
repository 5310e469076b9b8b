// SCAE suites on disk (sae/scae/suite.ts, connections.ts): the module order and upstream rule of
// each residual style, suite folders and connection files round-tripping, the reference's pickled
// connections (tests/golden/scae_reference.py wrote them with PyTorch) read through the safe pickle
// reader, and bad files rejected with errors naming the file, the pair and the row.
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { resolveConfig } from "../sae/config.ts";
import { architecture } from "../sae/arch/registry.ts";
import * as random from "../tensor/random.ts";
import {
  loadSuite,
  readSuiteInfo,
  saveSuite,
  type ScaeSuite,
  type SuiteInfo,
  suiteModules,
  upstreamOf,
} from "../sae/scae/suite.ts";
import {
  checkConnections,
  type Connections,
  importPickledConnections,
  loadConnections,
  saveConnections,
  saveSuiteConnections,
  truncateConnections,
} from "../sae/scae/connections.ts";
import { assert, assertEquals, assertThrows, test, withTempDir } from "./harness.ts";

const FIX = fileURLToPath(new URL("./golden/fixtures/scae/", import.meta.url));

async function rejects(p: Promise<unknown>, ...fragments: string[]): Promise<void> {
  try {
    await p;
  } catch (e) {
    const msg = String((e as Error).message);
    for (const f of fragments) {
      assert(msg.includes(f), `error ${JSON.stringify(msg)} lacks ${JSON.stringify(f)}`);
    }
    return;
  }
  throw new Error(`expected a rejection mentioning ${fragments.join(", ")}`);
}

const info = (residual: "sequential" | "parallel", L = 2): SuiteInfo => ({
  model: "tiny",
  residual,
  modules: suiteModules(L),
  k: 2,
  C: 3,
});

test("scae: module order and upstream rule of each residual style", () => {
  const seq = info("sequential"), par = info("parallel");
  assertEquals(seq.modules.map((m) => m.name), ["attn_0", "mlp_0", "attn_1", "mlp_1"]);
  assertEquals(seq.modules[1].hookIn, "blocks.0.ln2.hook_normalized");
  assertEquals(seq.modules[1].hookOut, "blocks.0.hook_mlp_out");
  const names = (i: SuiteInfo, d: string) => upstreamOf(i, d).map((m) => m.name);
  assertEquals(names(seq, "attn_0"), []);
  assertEquals(names(seq, "mlp_0"), ["attn_0"]);
  assertEquals(names(seq, "attn_1"), ["attn_0", "mlp_0"]);
  assertEquals(names(seq, "mlp_1"), ["attn_0", "mlp_0", "attn_1"]);
  assertEquals(names(par, "mlp_0"), []);
  assertEquals(names(par, "mlp_1"), ["attn_0", "mlp_0"]);
});

function tinySuite(L = 2, d = 8, F = 6): ScaeSuite {
  const dicts: ScaeSuite["dicts"] = {};
  suiteModules(L).forEach((m, i) => {
    const cfg = resolveConfig({
      arch: m.kind === "attn" ? "topk" : "transcoder",
      d_in: d,
      d_sae: F,
      d_out: d,
      k: 2,
    });
    dicts[m.name] = { cfg, params: architecture(cfg.arch).init(random.key(i + 1), cfg) };
  });
  return { ...info("sequential", L), dicts };
}

test("scae: a suite folder round-trips (suite.json + one SAELens folder per module)", async () => {
  await withTempDir("scae-", async (dir) => {
    const s = tinySuite();
    await saveSuite(dir, s);
    const back = await loadSuite(dir);
    assertEquals(back.modules, s.modules);
    assertEquals([back.model, back.residual, back.k, back.C], ["tiny", "sequential", 2, 3]);
    for (const m of s.modules) {
      assertEquals(back.dicts[m.name].cfg.arch, s.dicts[m.name].cfg.arch);
      assertEquals(
        Array.from(await back.dicts[m.name].params.W_dec.data()),
        Array.from(await s.dicts[m.name].params.W_dec.data()),
      );
    }
    const json = JSON.parse(await readFile(join(dir, "suite.json"), "utf8"));
    json.modules.reverse();
    await writeFile(join(dir, "suite.json"), JSON.stringify(json));
    await rejects(readSuiteInfo(dir), "suite.json", "comes before");
    await writeFile(join(dir, "suite.json"), JSON.stringify({ ...json, residual: "diagonal" }));
    await rejects(readSuiteInfo(dir), "suite.json", "residual");
  });
});

test("scae: connecting a suite writes its tables and C into suite.json", async () => {
  await withTempDir("scae-", async (dir) => {
    const s = { ...tinySuite(), C: null };
    await saveSuite(dir, s);
    assertEquals((await readSuiteInfo(dir)).C, null);
    const conns: Connections = {
      mlp_0: {
        attn_0: table(6, 4, Array.from({ length: 24 }, (_, i) => (i % 4 === 3 ? -1 : i % 4))),
      },
    };
    const written = await saveSuiteConnections(dir, s, conns);
    assertEquals(written.C, 4);
    const back = await loadSuite(dir);
    assertEquals([back.C, back.k, back.modules], [4, 2, s.modules]);
    const F = (m: string) => back.dicts[m].cfg.d_sae;
    const loaded = await loadConnections(join(dir, "connections.safetensors"), back, F);
    assertEquals(Array.from(loaded.mlp_0.attn_0.ids), Array.from(conns.mlp_0.attn_0.ids));
    await saveSuiteConnections(dir, back, {});
    assertEquals((await readSuiteInfo(dir)).C, 0);
  });
});

const table = (rows: number, C: number, ids: number[], scores?: number[]) => ({
  rows,
  C,
  ids: Int32Array.from(ids),
  ...(scores ? { scores: Float32Array.from(scores) } : {}),
});

test("scae: connections round-trip, are checked, and cut jointly by score", async () => {
  const i = info("sequential");
  const F = () => 3;
  const conns: Connections = {
    mlp_1: {
      attn_0: table(3, 2, [0, -1, 2, 1, -1, -1], [0.9, NaN, 0.1, 0.8, NaN, NaN]),
      attn_1: table(3, 2, [1, 0, -1, -1, 2, -1], [0.5, -0.7, NaN, NaN, 0.3, NaN]),
    },
  };
  await withTempDir("scae-", async (dir) => {
    const path = join(dir, "connections.safetensors");
    await saveConnections(path, conns);
    const back = await loadConnections(path, i, F);
    assertEquals(Array.from(back.mlp_1.attn_1.ids), [1, 0, -1, -1, 2, -1]);
    assertEquals(Array.from(back.mlp_1.attn_0.scores!).slice(0, 1), [Math.fround(0.9)]);
  });
  // Joint top 2: row 0 keeps attn_0:0 (0.9) and attn_1:0 (|−0.7|); row 1 keeps 1 (0.8), then 2.
  const cut = truncateConnections(conns, 2);
  assertEquals(Array.from(cut.mlp_1.attn_0.ids), [0, -1, 1, 2, -1, -1]);
  assertEquals(Array.from(cut.mlp_1.attn_1.ids), [0, -1, -1, -1, 2, -1]);
  const one = truncateConnections(conns, 1);
  assertEquals(Array.from(one.mlp_1.attn_0.ids), [0, 1, -1]);
  assertEquals(Array.from(one.mlp_1.attn_1.ids), [-1, -1, 2]);
  const noScores: Connections = { mlp_1: { attn_0: table(3, 2, [0, 1, 2, -1, -1, -1]) } };
  assertThrows(() => truncateConnections(noScores, 1), "mlp_1 row 0", "scores");
  assertEquals(truncateConnections(noScores, 2).mlp_1.attn_0.ids.length, 6);

  const bad = (c: Connections) => () => checkConnections(i, F, c, "x.safetensors");
  assertThrows(bad({ mlp_1: { attn_0: table(3, 1, [0, 3, 1]) } }), '"mlp_1<-attn_0" row 1', "id 3");
  assertThrows(bad({ mlp_1: { attn_0: table(3, 2, [0, 0, 1, 2, -1, -1]) } }), "row 0", "twice");
  assertThrows(bad({ mlp_1: { attn_0: table(3, 1, [0, -2, 1]) } }), "row 1", "id -2");
  assertThrows(bad({ attn_1: { attn_1: table(3, 1, [0, 1, 2]) } }), "not upstream");
  assertThrows(bad({ mlp_1: { attn_0: table(2, 1, [0, 1]) } }), "2 rows", "3 features");
  assertThrows(
    () => checkConnections(info("parallel"), F, { mlp_1: { attn_1: table(3, 1, [0, 1, 2]) } }, "p"),
    "not upstream of mlp_1 in a parallel-residual model",
  );
});

test("scae: the reference's pickled top_connections (pickle.dump and torch.save) import", async () => {
  const i = info("sequential");
  const F = () => 40;
  const a = await importPickledConnections(join(FIX, "pickles/top_connections_6.pkl"), i, F);
  const b = await importPickledConnections(
    join(FIX, "pickles/top_connections_6_torchsave.pkl"),
    i,
    F,
  );
  const ref = await loadConnections(join(FIX, "gpt2/suite/connections.safetensors"), i, F);
  for (const c of [a, b]) {
    assertEquals(Object.keys(c).sort(), Object.keys(ref).sort());
    for (const [down, ups] of Object.entries(ref)) {
      assertEquals(Object.keys(c[down]).sort(), Object.keys(ups).sort());
      for (const [up, t] of Object.entries(ups)) {
        assertEquals([c[down][up].rows, c[down][up].C], [40, 6]);
        assertEquals(Array.from(c[down][up].ids), Array.from(t.ids), `${down}<-${up}`);
      }
    }
  }
  await rejects(
    importPickledConnections(join(FIX, "pickles/bad_range.pkl"), i, F),
    "bad_range.pkl",
    '"mlp_1<-attn_0" row 3',
    "id 40",
  );
  await rejects(
    importPickledConnections(join(FIX, "pickles/bad_shape.pkl"), i, F),
    "bad_shape.pkl",
    "mlp_1<-attn_0",
    "[F_down, C]",
  );
  await withTempDir("scae-", async (dir) => {
    const p = join(dir, "evil.pkl");
    // GLOBAL os.system: refused by name, never looked up.
    await writeFile(
      p,
      new Uint8Array([0x80, 0x02, 0x63, ...new TextEncoder().encode("os\nsystem\n"), 0x2e]),
    );
    await rejects(importPickledConnections(p, i, F), "os.system");
  });
});
