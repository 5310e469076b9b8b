import * as t from "./mod.ts";
const a = t.add(t.random.normal(t.random.key(1), [2048, 512]), 0);
const w = t.add(t.random.normal(t.random.key(2), [512, 8192]), 0);
console.log("threads", await t.cpuThreadsReady()); (globalThis as any).DBG = 1;
for (const mm of [false, true, false, true]) {
  let best = 1e9, tot = 0;
  for (let r = 0; r < 6; r++) {
    const x = t.matmul(a, w);
    if (!mm) await new Promise((r) => setTimeout(r, 50));
    const t0 = performance.now(); const [v, i] = t.topk(x, 32); const dt = performance.now() - t0; best = Math.min(best, dt); tot += dt;
    v.dispose(); i.dispose(); x.dispose();
    await new Promise((r) => setTimeout(r, 0));
  }
  console.log(mm ? "right after matmul" : "50 ms after matmul", "topk best", best.toFixed(1), "mean", (tot / 6).toFixed(1));
}
