/**
 * The native kernels never reach past an array: every call is checked before it enters C, and a
 * count too large for an array, or an array of the wrong element width, is an error naming the
 * kernel and the array instead of a write into the heap. The backend keeps 16-bit floats and
 * strided views away from the kernels. Then every kernel runs in a child process under glibc's
 * checking allocator (MALLOC_CHECK_=3), where a stray write aborts the process at the next free
 * or at exit.
 */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { assert, assertEquals, assertThrows, test } from "./harness.ts";
import * as t from "../mod.ts";
import { loadNative, type Native } from "../tensor/cpu/native.ts";
import { cpu } from "../tensor/cpu/backend.ts";
import { decode16 } from "../tensor/dtype.ts";
import { scriptCommand } from "../tensor/platform/process.ts";
import { readEnv } from "../tensor/platform/env.ts";

const status = loadNative();
const nat = status.native as Native;
const skip = (what: string) => console.log(`skip: ${what}: ${status.reason}`);

const H = { b1: 0.9, b2: 0.999, eps: 1e-8, c2: 0.5, scale: 0.01, decay: 0 };

test("native kernels: a count past an array's end is a RangeError naming the kernel and array", () => {
  if (!nat) return skip("native bounds");
  const f = (n: number) => new Float32Array(n), i = (n: number) => new Int32Array(n);
  assertThrows(() => nat.relu(f(10), f(9), 10, 1), "native relu: out holds 9", "reaches 10");
  assertThrows(() => nat.reluGrad(f(10), f(8), f(10), 10, 1), "native reluGrad: x holds 8");
  assertThrows(() => nat.sum(f(11), 3, 2, 2, f(6), 1), "native sum: x holds 11", "reaches 12");
  assertThrows(() => nat.sum(f(12), 3, 2, 2, f(5), 1), "native sum: out holds 5");
  assertThrows(() => nat.topk(f(20), 4, 5, 3, f(12), i(11), 1), "native topk: indices holds 11");
  assertThrows(() => nat.topk(f(19), 4, 5, 3, f(12), i(12), 1), "native topk: x holds 19");
  assertThrows(
    () => nat.spmm(i(4), i(4), f(4), 4, f(6), 3, 2, f(5), 3, 1),
    "native spmm: out holds 5",
    "reaches 6",
  );
  assertThrows(() => nat.spmm(i(3), i(4), f(4), 4, f(6), 3, 2, f(6), 3, 1), "spmm: dst holds 3");
  assertThrows(
    () => nat.sddmm(f(6), 3, f(4), 2, i(5), i(5), 5, 2, f(4), 1),
    "native sddmm: out holds 4",
  );
  assertThrows(
    () => nat.adam(f(8), f(8), f(8), null, f(8), f(7), f(8), 8, H, 1),
    "native adam: m2 holds 7",
  );
  assertThrows(() => nat.relu(f(4), f(4), -1, 1), "native relu: n = -1 is not a count");
  assertThrows(() => nat.relu(f(4), f(4), 2.5, 1), "native relu: n = 2.5 is not a count");
});

test("native kernels: an array of another element width is a TypeError, not twice the bytes", () => {
  if (!nat) return skip("native widths");
  const f = (n: number) => new Float32Array(n);
  // f16 storage is a Uint16Array: a float kernel writing n floats into it writes 2n bytes past.
  const u16 = new Uint16Array(10) as unknown as Float32Array;
  assertThrows(() => nat.reluGrad(f(10), f(10), u16, 10, 1), "reluGrad: out is a Uint16Array");
  assertThrows(
    () => nat.relu(f(10), new Float64Array(10), 10, 1),
    "native relu: out is a Float64Array, expected a Float32Array",
  );
  const fi = new Float32Array(4) as unknown as Int32Array;
  assertThrows(
    () => nat.spmm(fi, new Int32Array(4), f(4), 4, f(6), 3, 2, f(6), 3, 1),
    "native spmm: dst is a Float32Array, expected an Int32Array",
  );
});

test("cpu backend: the fused relu gradient of 16-bit floats and strided views is g·step(x)", () => {
  const reluGrad = cpu.fused!.reluGrad!;
  for (const dtype of ["f16", "bf16", "f32", "f64"] as const) {
    const g = t.cast(t.tensor([[1, -2, 3], [4, 5, -6]]), dtype);
    const x = t.cast(t.tensor([[-1, 2, 0], [3, -4, 5]]), dtype);
    const out = t.tensor([[0, -2, 0], [4, 0, -6]]);
    for (const [gv, xv] of [[g, x], [t.transpose(g), t.transpose(x)]]) {
      const r = reluGrad(gv.view(), xv.view()) as Float32Array | Float64Array | Uint16Array;
      assertEquals(
        r.constructor,
        (g.view().buf as object).constructor,
        `${dtype}: storage of its dtype`,
      );
      const got = r instanceof Uint16Array ? decode16(dtype as "f16" | "bf16", r) : r;
      const want = (gv === g ? out : t.transpose(out)).dataSync();
      assertEquals(Array.from(got), Array.from(want), `${dtype}`);
    }
  }
});

const DEBUG_MALLOC = "/usr/lib/x86_64-linux-gnu/libc_malloc_debug.so.0";

test("native kernels and their backend paths under glibc's checking allocator: no heap damage", () => {
  if (!nat) return skip("native kernels under MALLOC_CHECK_");
  const [cmd, ...args] = scriptCommand("tests/fixtures/native_heap_check.ts");
  const env: Record<string, string> = {};
  for (const k of ["PATH", "HOME", "XDG_CACHE_HOME", "SPARSECODER_CACHE_DIR", "SPARSECODER_CC"]) {
    const v = readEnv(k);
    if (v !== undefined) env[k] = v;
  }
  // glibc 2.34+ checks only with its debug allocator preloaded; older ones check by themselves.
  if (existsSync(DEBUG_MALLOC)) env.LD_PRELOAD = DEBUG_MALLOC;
  Object.assign(env, { MALLOC_CHECK_: "3", MALLOC_PERTURB_: "165", NO_COLOR: "1" });
  const r = spawnSync(cmd, args, { env, encoding: "utf8", timeout: 120_000 });
  const said = `${r.stdout}\n${r.stderr}`.trim();
  assert(
    r.status === 0 && /^ok \d+/m.test(r.stdout),
    `exit ${r.status} ${r.signal ?? ""}: ${said}`,
  );
  assert(!/corrupt|malloc\(\)|free\(\)/i.test(r.stderr), said);
});
