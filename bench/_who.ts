import * as t from "../mod.ts";
import { resolveConfig } from "../sae/config.ts";
import { resolveTrainConfig } from "../sae/train_config.ts";
import { initTrainState, trainStep } from "../sae/train.ts";
const be = t.getBackend() as any;
for (const name of ["reduce", "unary", "binary"]) {
  const f = be[name];
  be[name] = function (...a: any[]) {
    const big = a.filter((x) => x && x.shape && x.shape[0] * (x.shape[1] ?? 1) >= 2048 * 8192);
    if (big.length) console.log(name, a.filter((x) => typeof x === "string").join(","), JSON.stringify(a.find((x)=>Array.isArray(x))), new Error().stack!.split("\n").slice(3, 9).map((s) => s.trim().replace(/.*\/main\//, "")).join(" < "));
    return f.apply(this, a);
  };
}
const cfg = resolveConfig({ arch: "relu", d_in: 512, d_sae: 8192 });
const tc = resolveTrainConfig(cfg, { steps: 100, batch_size: 2048, geometric_median_init: false, normalize_activations: false });
const x = t.random.normal(t.random.key(1), [2048, 512]);
let s = await initTrainState(t.random.key(0), cfg, tc, [{ x }] as any);
console.log("---");
const r = await trainStep(s, { x }, cfg, tc);
