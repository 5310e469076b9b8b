// The webgpu backend end to end (no CPU in the loop): a TopK SAE trained on synthetic data gives
// the CPU's metrics, top-k on both kernel paths, memory and the pipeline cache stay flat over
// TopK training, f64 is refused clearly.
// Kernel-by-kernel agreement over the whole op suite is tests/webgpu_ops.test.ts.
import * as t from "../mod.ts";
import { ROW_K_MAX } from "../tensor/webgpu/topk.ts";
import { resolveConfig } from "../sae/config.ts";
import { runTraining } from "../sae/train/driver.ts";
import { evaluate } from "../sae/eval/metrics.ts";
import { syntheticData } from "../data/sources.ts";
import { resolveTrainConfig } from "../sae/train/config.ts";
import { initTrainState, stateTensors, trainStep } from "../sae/train/step.ts";
import { featureRecovery, makeSynthetic } from "../data/synthetic.ts";
import { main } from "../cli.ts";
import { loadSae } from "../sae/io/saelens.ts";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { assert, assertClose, assertEquals, assertThrows, test } from "./harness.ts";
import { adapterOrSkip, on } from "./webgpu_adapter.ts";

const r = await adapterOrSkip("webgpu backend");

if (!r.ok) {
  test("webgpu: without an adapter, useBackend names the reason", () => {
    assertThrows(() => t.useBackend("webgpu"), "unavailable", r.reason);
    assert(t.backendInfo().backends.webgpu.includes(r.reason));
  });
} else {
  const gpu = r.backend;

  test(
    "webgpu: TopK SAE trained 300 steps gives the cpu's metrics (FVU and MSE within 0.1% relative, same L0, recovery within 1)",
    async () => {
      const D = 32, N_TRUE = 64;
      const train1 = async () => {
        const src = makeSynthetic({ d: D, nFeatures: N_TRUE, meanActive: 3, seed: 1 });
        const data = syntheticData(src);
        const cfg = resolveConfig({ arch: "topk", d_in: D, d_sae: 128, k: 4 });
        const train = resolveTrainConfig(cfg, { batch_size: 256, seed: 0, steps: 300, lr: 3e-3 });
        const res = await runTraining({ cfg, train, data });
        const held = Array.from({ length: 2 }, (_, i) => data.batch(1_000_000 + i, 1024));
        const m = await evaluate(res.params, cfg, held);
        const rec = await featureRecovery(src.features, res.params.W_dec, 0.9);
        t.dispose([held, res.params, res.state.params, res.state.opt, res.state.sinceFired]);
        // Left to the GC, the webgpu run's features would be freed during a later memory test.
        t.dispose([src.features, src.offset]);
        return { fvu: m.fvu, l0: m.l0, mse: m.mse, recovered: rec.recovered };
      };
      const c = await on("cpu", train1);
      const g = await on("webgpu", train1);
      console.log(`cpu ${JSON.stringify(c)}\nwebgpu ${JSON.stringify(g)}`);
      // Measured: FVU 0.194979 on both (differences ~1e-6, from f32 vs f64 accumulation).
      assertClose([g.fvu, g.mse], [c.fvu, c.mse], { rtol: 1e-3, atol: 0, msg: "FVU, MSE" });
      assertClose([g.l0], [c.l0], { rtol: 1e-6 });
      assert(
        Math.abs(c.recovered - g.recovered) <= 1,
        `recovered cpu ${c.recovered} vs webgpu ${g.recovered}`,
      );
      assert(g.fvu < 0.3, `webgpu run did not learn: FVU ${g.fvu}`);
    },
    600_000,
  );

  // Rows with ties, NaN and ±0, as the CPU orders them (descending, lower index first on ties).
  const rowsWithTies = (rows: number, n: number): Float32Array => {
    const a = new Float32Array(rows * n);
    let s = 12345;
    for (let i = 0; i < a.length; i++) {
      s = (s * 1103515245 + 12345) >>> 0;
      a[i] = ((s >>> 8) % 97) / 7 - 6; // many repeats
    }
    a[3] = NaN;
    a[5] = -0;
    return a;
  };

  for (
    const [rows, n, k] of [[3, 3000, ROW_K_MAX], [5, 700, 33], [2, 5000, 1500], [
      1,
      2048,
      2048,
    ]] as const
  ) {
    test(`webgpu: topk k=${k} of ${rows}×${n} (${k <= ROW_K_MAX ? "workgroup radix select" : "global bitonic sort"}) equals the cpu's`, async () => {
      const data = rowsWithTies(rows, n);
      const [cv, ci] = t.topk(t.tensor(data, { shape: [rows, n] }), k);
      // Disposed rather than left to the GC, which would free them during a later memory test.
      const [gv, gi] = await on(
        "webgpu",
        () => Promise.resolve(t.tidy(() => t.topk(t.tensor(data, { shape: [rows, n] }), k))),
      );
      assertEquals(Array.from(await gi.data()), Array.from(ci.dataSync()));
      assertClose(await gv.data(), cv.dataSync(), { rtol: 0, atol: 0 });
      t.dispose([gv, gi]);
    });
  }

  test(
    "webgpu: 300 TopK SAE training steps (AuxK on) keep live buffers, device and pooled bytes and the pipeline count flat after warm-up",
    async () => {
      await on("webgpu", async () => {
        // F > B·k leaves features unfired in every batch, so with dead_tokens 1 AuxK runs from the
        // second step on, always with kAux = d/2: one code path, whose shapes never change.
        const [d, F, B, k, STEPS, WARM] = [16, 256, 32, 4, 300, 10];
        const cfg = resolveConfig({ arch: "topk", d_in: d, d_sae: F, k });
        const tc = resolveTrainConfig(cfg, {
          steps: STEPS,
          batch_size: B,
          dead_tokens: 1,
          geometric_median_init: false,
          normalize_activations: false,
        });
        const src = makeSynthetic({ d, nFeatures: 64, meanActive: 3, seed: 2 });
        // Live plus GC-freed buffers: unchanged by the end unless something was never disposed,
        // whenever the GC runs (a leak the finalizer frees mid-run moves one count to the other).
        const accounted = () => t.memoryStats().liveBuffers + t.memoryStats().finalizedBuffers;
        const before = accounted();
        let state = await initTrainState(t.random.key(0), cfg, tc, []);
        const samples: string[] = [];
        let auxkSteps = 0;
        for (let i = 0; i < STEPS; i++) {
          const x = src.batch(i, B).x; // a fresh batch each step, as in training: uploads go through the pool too
          const { state: next, metrics } = await trainStep(state, { x }, cfg, tc);
          t.disposeReplaced(stateTensors(state), stateTensors(next));
          x.dispose();
          state = next;
          if (metrics.auxk !== undefined) auxkSteps++;
          const m = gpu.gpuMemory();
          if (i >= WARM) {
            samples.push(
              `live buffers ${t.memoryStats().liveBuffers}, device bytes ${m.allocatedBytes}, pooled bytes ${m.pooledBytes}, pipelines ${m.pipelines}`,
            );
          }
        }
        assertEquals(auxkSteps, STEPS - 1, "steps with the AuxK term");
        const seen = [...new Set(samples)];
        assert(
          seen.length === 1,
          `after ${WARM} warm-up steps the state changed ${seen.length - 1} times: ${
            seen.slice(0, 4).join(" → ")
          }`,
        );
        console.log(`steady after warm-up: ${seen[0]}`);
        t.dispose(stateTensors(state));
        assertEquals(accounted(), before, "live + GC-freed buffers after disposing the last state");
      });
    },
    600_000,
  );

  test("webgpu: a TopK training step stays sparse: the encoder's is the only dense-sized matmul; decode and backward are sparse products over B·k entries", async () => {
    const [d, F, B, k] = [16, 256, 32, 4];
    const kAux = d / 2; // AuxK's default k, reached since F > B·k leaves features dead (dead_tokens 1)
    const cfg = resolveConfig({ arch: "topk", d_in: d, d_sae: F, k });
    const tc = resolveTrainConfig(cfg, {
      steps: 10,
      batch_size: B,
      dead_tokens: 1,
      geometric_median_init: false,
      normalize_activations: false,
    });
    // Every dense or sparse product the steps launch, through the backend's own methods.
    const calls: { op: string; work: number; entries?: number; outRows?: number }[] = [];
    const b = gpu as unknown as Record<"matmul" | "spmm" | "sddmm", (...a: unknown[]) => unknown>;
    const orig = { matmul: b.matmul, spmm: b.spmm, sddmm: b.sddmm };
    b.matmul = (x, y, o) => {
      const [xs, ys] = [(x as t.View).shape, (y as t.View).shape];
      calls.push({
        op: `matmul [${xs}]×[${ys}]`,
        work: xs.reduce((p, n) => p * n, 1) * ys.at(-1)!,
      });
      return orig.matmul(x, y, o);
    };
    b.spmm = (rows, cols, vals, dense, transpose, outRows) => {
      const n = (vals as t.View).shape[0];
      calls.push({
        op: `spmm${transpose ? "T" : ""}`,
        work: n * d,
        entries: n,
        outRows: outRows as number,
      });
      return orig.spmm(rows, cols, vals, dense, transpose, outRows);
    };
    b.sddmm = (x, y, rows, cols) => {
      const n = (rows as t.View).shape[0];
      calls.push({ op: "sddmm", work: n * d, entries: n });
      return orig.sddmm(x, y, rows, cols);
    };
    try {
      await on("webgpu", async () => {
        let state = await initTrainState(t.random.key(0), cfg, tc, []);
        for (let i = 0; i < 2; i++) { // step 0 without AuxK, step 1 with it
          const x = t.random.normal(t.random.key(10 + i), [B, d]);
          const { state: next, metrics } = await trainStep(state, { x }, cfg, tc);
          t.disposeReplaced(stateTensors(state), stateTensors(next));
          x.dispose();
          state = next;
          assertEquals(metrics.auxk !== undefined, i === 1, `AuxK on step ${i}`);
        }
        t.dispose(stateTensors(state));
      });
    } finally {
      Object.assign(b, orig);
    }
    const log = calls.map((c) => c.op).join(", ");
    // A dense decoder ([B,F]×[F,d]) or dense weight gradient ([F,B]×[B,d], [d,B]×[B,F]) costs B·F·d.
    // The encoder's is [B, d]×[d, F], or [B, d+1]×[d+1, F] with b_enc folded in: once a step.
    const dense = calls.filter((c) => c.work >= B * F * d).map((c) => c.op);
    const encoder = [`matmul [${B},${d}]×[${d},${F}]`, `matmul [${B},${d + 1}]×[${d + 1},${F}]`];
    assert(
      dense.length === 2 && dense.every((op) => encoder.includes(op)),
      `dense-sized products: ${dense.join(", ")}; all: ${log}`,
    );
    const sparse = calls.filter((c) => c.entries !== undefined);
    assert(
      sparse.every((c) => c.entries! <= B * (k + kAux)),
      `a sparse product over more than B·(k + kAux) = ${B * (k + kAux)} entries: ${
        JSON.stringify(sparse)
      }`,
    );
    assert(
      sparse.some((c) => c.op === "spmm" && c.outRows === B && c.entries === B * k),
      `no sparse decode (spmm to [B, d] over B·k entries): ${log}`,
    );
    assert(
      sparse.some((c) => c.op === "spmmT" && c.outRows === F),
      `no sparse weight gradient (spmmT to [F, d]): ${log}`,
    );
    assert(sparse.some((c) => c.op === "sddmm"), `no sampled backward (sddmm): ${log}`);
  });

  test("webgpu: f64 is refused with a clear error; other dtypes round-trip", async () => {
    await on("webgpu", async () => {
      assertThrows(() => t.tensor([1, 2], { dtype: "f64" }), "f64", "WGSL");
      const x = t.tensor([1.5, -2.25, 65504, 1e-8]);
      assertClose(await t.cast(x, "f16").data(), [1.5, -2.25, 65504, 1e-8], {
        rtol: 1e-3,
        atol: 1e-7,
      });
      assertEquals(Array.from(await t.cast(x, "bool").data()), [1, 1, 1, 1]);
      assertEquals(Array.from(await t.cast(x, "i32").data()), [1, -2, 65504, 0]);
      assertEquals(x.toString(), "Tensor([4], f32, webgpu)");
      assertThrows(() => x.dataSync(), "await t.data()");
    });
  });

  test("webgpu: toBackend moves every dtype to webgpu and back unchanged; f64 is refused there", async () => {
    const cases: [t.DType, number[]][] = [
      ["f32", [1.5, -0, NaN, Infinity]],
      ["i32", [7, -3, 2147483647, 0]],
      ["bool", [1, 0, 1, 1]],
      ["f16", [0.5, -65504, 6e-8, 3.140625]],
      ["bf16", [1, -2.5, 1e30, 0]],
    ];
    for (const [dtype, vals] of cases) {
      const x = t.tensor(vals, { dtype });
      const g = await t.toBackend(x, "webgpu");
      assertEquals(g.backend.name, "webgpu");
      const back = await t.toBackend(
        dtype === "bool" ? t.logicalNot(t.logicalNot(g)) : t.neg(t.neg(g)),
        "cpu",
      );
      assertClose(back.dataSync(), x.dataSync(), { rtol: 0, atol: 0, msg: dtype });
      assertEquals(back.dtype, dtype);
    }
    const x = t.tensor([1], { dtype: "f64" });
    let err = "";
    await t.toBackend(x, "webgpu").catch((e) => (err = e.message));
    assert(err.includes("f64"), err);
    assert(await t.toBackend(x, "cpu") === x, "same backend: the tensor itself");
  });

  test("webgpu: sae train --backend webgpu writes a run that loads on cpu", async () => {
    const dir = await mkdtemp(join(tmpdir(), "sae-webgpu-"));
    try {
      const argv = [
        "train",
        "--backend",
        "webgpu",
        "--steps",
        "12",
        "--batch",
        "64",
        "--d-sae",
        "32",
        "--k",
        "4",
        "--synthetic-d",
        "16",
        "--synthetic-features",
        "24",
        "--synthetic-active",
        "2",
        "--quiet",
        "--out",
        dir,
      ];
      const log = console.log;
      console.log = () => {};
      let code: number;
      try {
        code = await main(argv);
      } finally {
        console.log = log;
        t.useBackend("cpu");
      }
      assertEquals(code, 0);
      const saved = await loadSae(dir);
      assertEquals(saved.params.W_dec.backend.name, "cpu");
      assertEquals(saved.params.W_dec.shape, [32, 16]);
      assert(Array.from(saved.params.W_dec.dataSync()).every(Number.isFinite), "finite weights");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test("webgpu: the device reported no validation or shader errors in this file", async () => {
    await on("webgpu", async () => void (await t.sum(t.ones([4])).data())); // let pending reports arrive
    assertEquals(gpu.errors, []);
  });

  // What "auto" picks (cpu on this software adapter) is tests/webgpu_select.test.ts.
  test("webgpu: selection by name (a fallback adapter too) and backendInfo", async () => {
    assertEquals((await t.selectBackend("webgpu")).name, "webgpu");
    t.useBackend("cpu");
    assert(t.backendInfo().backends.webgpu.startsWith("webgpu: "), t.backendInfo().backends.webgpu);
    assertThrows(() => t.useBackend("nope"), "unknown backend");
  });
}
