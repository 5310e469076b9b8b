/**
 * How the CPU backend computes large f32 matmuls: "f32" (sgemm), or "bf16" — inputs rounded to
 * bf16, products accumulated in f32 (OpenBLAS's cblas_sbgemm), the CUDA backend's bf16 mode on
 * the CPU. bf16 runs only where it pays: the library exports cblas_sbgemm and the CPU has bf16 dot
 * products (AVX-512 BF16 or AMX-BF16); elsewhere f32 runs and the status says why. `emulate`
 * rounds the inputs to bf16 and multiplies with sgemm: sbgemm's numbers without its speed, to
 * measure what bf16 does to training on a machine without it.
 *   SPARSECODER_CPU_MATMUL=bf16   the same as setCpuMatmulPrecision("bf16") at start-up
 *   SPARSECODER_CPU_BF16_EMULATE=1   emulate wherever bf16 is asked and cannot run (a measurement
 *                                   switch: `sae train --matmul-precision bf16` then shows bf16's
 *                                   numbers on a machine without sbgemm)
 */
import { readFileSync } from "node:fs";
import { readEnv } from "../platform/env.ts";
import { type Blas, loadBlas } from "./blas.ts";

export type CpuMatmulPrecision = "f32" | "bf16";

export interface CpuPrecisionStatus {
  /** What was asked. */
  asked: CpuMatmulPrecision;
  /** What runs: "bf16" (sbgemm), "bf16-emulated" (rounded inputs through sgemm) or "f32". */
  running: "f32" | "bf16" | "bf16-emulated";
  /** Why bf16 is not running when it was asked (empty otherwise). */
  reason: string;
}

/** Below this many multiply-adds a matmul stays f32: rounding both operands costs more than it saves. */
export const BF16_MIN_WORK = 1 << 24;

/** The CPU's bf16 dot-product extensions from /proc/cpuinfo, or why there are none. */
export function cpuBf16Support(
  cpuinfo: () => string = () => readFileSync("/proc/cpuinfo", "utf8"),
): { ok: boolean; reason: string } {
  let flags: string[];
  try {
    flags = (cpuinfo().match(/^flags\s*:(.*)$/m)?.[1] ?? "").trim().split(/\s+/);
  } catch (e) {
    return { ok: false, reason: `cannot read /proc/cpuinfo (${(e as Error).message})` };
  }
  const has = ["avx512_bf16", "amx_bf16"].filter((f) => flags.includes(f));
  if (has.length) return { ok: true, reason: has.join(", ") };
  const simd = ["avx512f", "avx2"].find((f) => flags.includes(f)) ?? "no AVX";
  return { ok: false, reason: `the CPU has no avx512_bf16 or amx_bf16 (best: ${simd})` };
}

/** Whether bf16 can run here with this library, and why not. */
export function bf16Availability(
  blas: Blas | null = loadBlas().blas,
  cpu = cpuBf16Support(),
): { ok: boolean; reason: string } {
  if (!blas) return { ok: false, reason: `no BLAS (${loadBlas().reason})` };
  if (!blas.sbgemm) {
    return {
      ok: false,
      reason: `${blas.path} has no cblas_sbgemm (OpenBLAS built without BFLOAT16)`,
    };
  }
  if (!cpu.ok) return { ok: false, reason: cpu.reason };
  return { ok: true, reason: "" };
}

function parse(v: string | undefined, where: string): CpuMatmulPrecision {
  if (v === undefined || v === "" || v === "f32") return "f32";
  if (v === "bf16") return v;
  throw new Error(`${where}=${v}: expected f32 or bf16`);
}

let status: CpuPrecisionStatus | undefined;

/**
 * Compute large f32 matmuls on the CPU in `p` from now on (see the file's comment); returns what
 * runs and, when bf16 was asked but cannot run, why. With `emulate`, bf16 that cannot run is
 * emulated (rounded inputs, sgemm) instead of falling back to f32.
 */
export function setCpuMatmulPrecision(
  p: CpuMatmulPrecision,
  o: { emulate?: boolean } = {},
): CpuPrecisionStatus {
  const asked = parse(p, "setCpuMatmulPrecision");
  if (asked === "f32") return status = { asked, running: "f32", reason: "" };
  const can = bf16Availability();
  if (can.ok) return status = { asked, running: "bf16", reason: "" };
  const emulate = o.emulate ?? readEnv("SPARSECODER_CPU_BF16_EMULATE") === "1";
  return status = { asked, running: emulate ? "bf16-emulated" : "f32", reason: can.reason };
}

/** The current setting (SPARSECODER_CPU_MATMUL until set). */
export function cpuMatmulPrecision(): CpuPrecisionStatus {
  return status ??= setCpuMatmulPrecision(
    parse(readEnv("SPARSECODER_CPU_MATMUL"), "SPARSECODER_CPU_MATMUL"),
  );
}
