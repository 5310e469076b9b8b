/**
 * The CPU backend's bf16 matmul switch: the availability check names what is missing (library
 * symbol, CPU extension), a bf16 request that cannot run falls back to f32 with that reason, the
 * emulated mode multiplies the bf16-rounded operands (the numbers sbgemm would give, up to f32
 * summation order), and a real bf16 product (sbgemm, or the native kernels' AMX tiles where the
 * library lacks it), where present, agrees with the emulation.
 */
import { assert, assertEquals, assertThrows, test } from "./harness.ts";
import * as t from "../mod.ts";
import {
  BF16_MIN_WORK,
  bf16Availability,
  cpuBf16Support,
  setCpuMatmulPrecision,
} from "../tensor/cpu/matmul_precision.ts";
import { loadBlas } from "../tensor/cpu/blas.ts";
import { bf16ToF32, f32ToBf16 } from "../tensor/dtype.ts";
import { setEnv } from "../tensor/platform/env.ts";

const blas = loadBlas().blas;

test("bf16 availability names the missing CPU extension or library symbol", () => {
  const flags = (f: string) => () => `processor\t: 0\nflags\t\t: fpu sse ${f}\n`;
  assertEquals(cpuBf16Support(flags("avx2 avx512f avx512_bf16")), {
    ok: true,
    reason: "avx512_bf16",
  });
  const no = cpuBf16Support(flags("avx2"));
  assert(!no.ok && no.reason.includes("no avx512_bf16") && no.reason.includes("avx2"), no.reason);
  const noAmx = () => false, amx = () => true;
  if (blas) {
    const noSym = bf16Availability({ ...blas, sbgemm: null }, { ok: true, reason: "" }, noAmx);
    assert(!noSym.ok && noSym.reason.includes("cblas_sbgemm"), noSym.reason);
    assert(noSym.reason.includes("no AMX-BF16"), noSym.reason);
    const noCpu = bf16Availability({ ...blas, sbgemm: () => {} }, no, noAmx);
    assert(!noCpu.ok && noCpu.reason.startsWith(no.reason), noCpu.reason);
    // sbgemm first where it can run; the native AMX kernels where the library lacks it.
    const both = bf16Availability({ ...blas, sbgemm: () => {} }, { ok: true, reason: "" }, amx);
    assertEquals(both.via, "sbgemm");
    assertEquals(bf16Availability({ ...blas, sbgemm: null }, no, amx).via, "amx");
  }
  assertThrows(() => setCpuMatmulPrecision("fp8" as never), "expected f32 or bf16");
});

test("bf16 matmul: falls back with a reason, or emulates sbgemm's numbers on request", () => {
  if (!blas) return;
  // Large enough to take the bf16 path (M·N·K ≥ BF16_MIN_WORK).
  const M = 256, K = 256, N = 512;
  assert(M * N * K >= BF16_MIN_WORK, "the product is large enough");
  const a = t.random.normal(t.random.key(1), [M, K]);
  const b = t.random.normal(t.random.key(2), [K, N]);
  const f32 = t.matmul(a, b).dataSync();
  const round = (x: t.Tensor) =>
    t.tensor(Float32Array.from(x.dataSync() as Float32Array, (v) => bf16ToF32(f32ToBf16(v))), {
      shape: x.shape,
    });
  const want = t.matmul(round(a), round(b)).dataSync();
  try {
    const s = setCpuMatmulPrecision("bf16");
    if (s.running === "f32") {
      assert(s.reason.length > 0, "a fallback says why");
      assertEquals(Array.from(t.matmul(a, b).dataSync()), Array.from(f32), "fallback is f32");
    }
    const e = setCpuMatmulPrecision("bf16", { emulate: true });
    const got = t.matmul(a, b).dataSync();
    if (e.running === "bf16-emulated") {
      // The same sgemm on the same rounded operands: the same bits.
      assertEquals(Array.from(got), Array.from(want), "emulated bf16");
    } else {
      // Real bf16 (sbgemm or AMX): f32 accumulation in its own order.
      console.log(`bf16 matmul runs through ${e.via}`);
      for (let i = 0; i < got.length; i++) {
        assert(Math.abs(got[i] - want[i]) <= 1e-4 * (1 + Math.abs(want[i])), `${e.via} [${i}]`);
      }
    }
    // bf16 changes the result (the comparison above is not f32 against itself).
    assert(got.some((v, i) => v !== f32[i]), "bf16 rounding shows");
    // A transposed operand reads the same elements.
    const bt = t.contiguous(t.transpose(b));
    const got2 = t.matmul(a, t.transpose(bt)).dataSync();
    assertEquals(Array.from(got2), Array.from(got), "transposed B");
    if (e.via === "amx") {
      // Tiles of 32 rows, columns and depth: odd sizes exercise every padded edge; A transposed.
      const [m, k, n] = [301, 333, 171];
      assert(m * k * n >= BF16_MIN_WORK, "large enough for bf16");
      const x = t.random.normal(t.random.key(3), [k, m]),
        y = t.random.normal(t.random.key(4), [k, n]);
      const odd = t.matmul(t.transpose(x), y).dataSync();
      setCpuMatmulPrecision("bf16", { emulate: true });
      const ref = t.matmul(t.transpose(round(x)), round(y)).dataSync();
      for (let i = 0; i < ref.length; i++) {
        assert(Math.abs(odd[i] - ref[i]) <= 1e-4 * (1 + Math.abs(ref[i])), `AMX odd [${i}]`);
      }
    }
  } finally {
    setCpuMatmulPrecision("f32");
  }
});

test("SPARSECODER_CPU_BF16_EMULATE=1 makes a bf16 request that cannot run emulate (what sae train --matmul-precision bf16 then runs)", () => {
  const can = bf16Availability();
  if (!setEnv("SPARSECODER_CPU_BF16_EMULATE", "1")) {
    console.log("skipped: this runtime cannot set the environment variable");
    return;
  }
  try {
    const s = setCpuMatmulPrecision("bf16");
    assertEquals(s.running, can.ok ? "bf16" : "bf16-emulated", s.reason);
    assertEquals(
      setCpuMatmulPrecision("bf16", { emulate: false }).running,
      can.ok ? "bf16" : "f32",
    );
  } finally {
    setEnv("SPARSECODER_CPU_BF16_EMULATE", "");
    setCpuMatmulPrecision("f32");
  }
  assertEquals(setCpuMatmulPrecision("bf16").running, can.ok ? "bf16" : "f32", "unset again");
  setCpuMatmulPrecision("f32");
});
