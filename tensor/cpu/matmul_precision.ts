/**
 * How the CPU backend computes large f32 matmuls: "f32" (sgemm), or "bf16" — inputs rounded to
 * bf16, products accumulated in f32, the CUDA backend's bf16 mode on the CPU. bf16 runs only where
 * it pays: through OpenBLAS's cblas_sbgemm where the library exports it and the CPU has bf16 dot
 * products (AVX-512 BF16 or AMX-BF16), else through the native kernels' AMX tiles
 * (csrc/gemm_bf16.c, and the TopK encoder's fused GEMM) where the CPU has AMX-BF16 and Linux
 * grants the tiles; elsewhere f32 runs and the status says why. `emulate`
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
import { native } from "./native.ts";

export type CpuMatmulPrecision = "f32" | "bf16";

export interface CpuPrecisionStatus {
  /** What was asked. */
  asked: CpuMatmulPrecision;
  /** What runs: "bf16" (sbgemm), "bf16-emulated" (rounded inputs through sgemm) or "f32". */
  running: "f32" | "bf16" | "bf16-emulated";
  /** Why bf16 is not running when it was asked (empty otherwise). */
  reason: string;
  /** What computes bf16 when it runs: "sbgemm" (OpenBLAS) or "amx" (the native kernels). */
  via?: "sbgemm" | "amx";
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

/** Whether bf16 can run here (through sbgemm, or else AMX tiles), and why not. */
export function bf16Availability(
  blas: Blas | null = loadBlas().blas,
  cpu = cpuBf16Support(),
  amx: () => boolean = () => native()?.amxBf16() ?? false,
): { ok: boolean; reason: string; via?: "sbgemm" | "amx" } {
  if (blas?.sbgemm && cpu.ok) return { ok: true, reason: "", via: "sbgemm" };
  if (amx()) return { ok: true, reason: "", via: "amx" };
  const lib = !blas
    ? `no BLAS (${loadBlas().reason})`
    : !blas.sbgemm
    ? `${blas.path} has no cblas_sbgemm (OpenBLAS built without BFLOAT16)`
    : "";
  const noAmx = "no AMX-BF16 tiles for the native kernels";
  if (lib) return { ok: false, reason: `${lib}, and ${noAmx}` };
  return { ok: false, reason: `${cpu.reason}, and ${noAmx}` };
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
  if (can.ok) return status = { asked, running: "bf16", reason: "", via: can.via };
  const emulate = o.emulate ?? readEnv("SPARSECODER_CPU_BF16_EMULATE") === "1";
  return status = { asked, running: emulate ? "bf16-emulated" : "f32", reason: can.reason };
}

/** The current setting (SPARSECODER_CPU_MATMUL until set). */
export function cpuMatmulPrecision(): CpuPrecisionStatus {
  return status ??= setCpuMatmulPrecision(
    parse(readEnv("SPARSECODER_CPU_MATMUL"), "SPARSECODER_CPU_MATMUL"),
  );
}
