// The golden SCAE suites of tests/golden/scae_reference.py (tiny GPT-2 and GPT-NeoX, random
// dictionaries and connections) loaded with their model, frozen run and expected values.
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { loadSafetensors } from "../data/safetensors.ts";
import { loadModel } from "../data/lm/model.ts";
import { loadSuite } from "../sae/scae/suite.ts";
import { loadConnections } from "../sae/scae/connections.ts";
import { frozenRun, headWeights } from "../sae/scae/frozen.ts";
import type { SuiteContext, SuiteParams } from "../sae/scae/pruned.ts";

const FIX = fileURLToPath(new URL("./golden/fixtures/scae/", import.meta.url));
const LM = fileURLToPath(new URL("./golden/fixtures/lm/", import.meta.url));

export async function setup(family: "gpt2" | "gpt_neox") {
  const model = await loadModel(join(LM, family), { dtype: "f32" });
  const suite = await loadSuite(join(FIX, family, "suite"));
  const F = (m: string) => suite.dicts[m].cfg.d_sae;
  const conns = await loadConnections(join(FIX, family, "suite/connections.safetensors"), suite, F);
  const { tensors: exp } = await loadSafetensors(join(FIX, family, "expected.safetensors"));
  const frozen = frozenRun(model, exp.tokens, suite);
  const heads: SuiteContext["heads"] = {};
  for (const m of suite.modules) {
    if (m.kind === "attn") heads[m.layer] = headWeights(model, m.layer);
  }
  const cfgs = Object.fromEntries(suite.modules.map((m) => [m.name, suite.dicts[m.name].cfg]));
  const ctx: SuiteContext = { info: suite, cfgs, frozen, heads };
  const params: SuiteParams = Object.fromEntries(
    suite.modules.map((m) => [m.name, suite.dicts[m.name].params]),
  );
  return { model, suite, conns, exp, ctx, params };
}
