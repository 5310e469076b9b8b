// Choosing SCAE connections (sae/scae/connect.ts) on the tiny GPT-2 and NeoX fixtures: the streamed
// sums give the same connections and scores as a dense brute-force mean contribution
// (P·(f/s) per head, then V_h, [F_down, F_up] per pair) ranked jointly over upstream modules, and
// streaming the tokens in two batches equals one batch.
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Tensor } from "../tensor/tensor.ts";
import { div, mul, sub } from "../tensor/ops/elementwise.ts";
import { matmul } from "../tensor/ops/linalg.ts";
import { mean, sum } from "../tensor/ops/reduce.ts";
import { expandDims, reshape, sliceAxis, transpose } from "../tensor/ops/shape.ts";
import { loadSafetensors } from "../data/safetensors.ts";
import { loadModel } from "../data/lm/model.ts";
import { toDense } from "../sae/code.ts";
import { topkEncode } from "../sae/arch/topk_encode.ts";
import { loadSuite, upstreamOf } from "../sae/scae/suite.ts";
import { frozenRun, type HeadWeights, headWeights } from "../sae/scae/frozen.ts";
import { accumulate, emptyStats, selectConnections } from "../sae/scae/connect.ts";
import { assert, assertClose, assertEquals, test } from "./harness.ts";

const FIX = fileURLToPath(new URL("./golden/fixtures/scae/", import.meta.url));
const LM = fileURLToPath(new URL("./golden/fixtures/lm/", import.meta.url));

for (const family of ["gpt2", "gpt_neox"] as const) {
  test(`scae connect (${family}): streamed top-C equals the dense brute force, in one batch or two`, async () => {
    const model = await loadModel(join(LM, family), { dtype: "f32" });
    const suite = await loadSuite(join(FIX, family, "suite"));
    const { tensors: exp } = await loadSafetensors(join(FIX, family, "expected.safetensors"));
    const tokens = exp.tokens;
    const heads: Record<number, HeadWeights> = {};
    for (const m of suite.modules) {
      if (m.kind === "attn") heads[m.layer] = headWeights(model, m.layer);
    }
    const C = 5;
    const one = emptyStats();
    await accumulate(one, model, suite, tokens);
    const two = emptyStats();
    await accumulate(two, model, suite, sliceAxis(tokens, 0, 0, 1));
    await accumulate(two, model, suite, sliceAxis(tokens, 0, 1, 2));
    const a = await selectConnections(one, suite, heads, C, 7);
    const b = await selectConnections(two, suite, heads, C);
    for (const [down, ups] of Object.entries(a)) {
      for (const [up, t] of Object.entries(ups)) {
        assertEquals(Array.from(b[down][up].ids), Array.from(t.ids), `two batches ${down}<-${up}`);
      }
    }

    // Brute force: dense mean contributions M[i, j] per pair.
    const fr = frozenRun(model, tokens, suite);
    const { B, T } = fr, N = B * T;
    let kept = 0;
    for (const down of suite.modules) {
      const ups = upstreamOf(suite, down.name);
      if (!ups.length) continue;
      const Wenc = suite.dicts[down.name].params.W_enc;
      const dense: number[][] = []; // per up: [F_down × F_up] row-major
      for (const up of ups) {
        const { params: p, cfg } = suite.dicts[up.name];
        const code = topkEncode(
          fr.inputs[up.name],
          p.W_enc,
          p.b_enc!,
          cfg.apply_b_dec_to_input ? p.b_dec : null,
          cfg.k,
        );
        const f = div(toDense({ kind: "rows", ...code }, cfg.d_sae), fr.scale[down.name]); // [N, F_up]
        const Wc = sub(p.W_dec, mean(p.W_dec, -1, { keepdims: true }));
        let M: Tensor;
        if (down.kind === "mlp") {
          M = mul(expandDims(mean(f, 0), 0), transpose(matmul(Wc, Wenc))); // [F_down, F_up]
        } else {
          const hw = heads[down.layer];
          const H = hw.wOV.shape[0];
          const moved = matmul(fr.pattern[down.layer], expandDims(reshape(f, [B, T, -1]), 1)); // [B, H, T, F_up]
          const m = reshape(mean(reshape(transpose(moved, [1, 0, 2, 3]), [H, N, -1]), 1), [
            H,
            1,
            -1,
          ]); // [H, 1, F_up]
          const V = transpose(matmul(matmul(expandDims(Wc, 0), hw.wOV), Wenc), [0, 2, 1]); // [H, F_down, F_up]
          M = sum(mul(V, m), 0);
        }
        dense.push(Array.from(await M.data()));
      }
      const Fd = suite.dicts[down.name].cfg.d_sae;
      for (let i = 0; i < Fd; i++) {
        const cand: { s: number; u: number; j: number }[] = [];
        ups.forEach((u, ui) => {
          const Fu = suite.dicts[u.name].cfg.d_sae;
          for (let j = 0; j < Fu; j++) {
            const s = dense[ui][i * Fu + j];
            if (s !== 0) cand.push({ s, u: ui, j });
          }
        });
        cand.sort((x, y) => Math.abs(y.s) - Math.abs(x.s));
        const top = cand.slice(0, C);
        ups.forEach((u, ui) => {
          const t = a[down.name][u.name];
          const want = top.filter((x) => x.u === ui);
          const got = Array.from(t.ids.slice(i * C, (i + 1) * C)).filter((v) => v >= 0);
          assertEquals(got, want.map((x) => x.j), `${down.name}<-${u.name} row ${i}`);
          assertClose(
            Array.from(t.scores!.slice(i * C, i * C + got.length)),
            want.map((x) => x.s),
            { rtol: 1e-3, atol: 1e-6, msg: `scores ${down.name}<-${u.name} row ${i}` },
          );
          kept += got.length;
        });
      }
    }
    assert(kept > 0, "some connections were kept");
  });
}
