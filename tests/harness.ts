/** One test API for both runtimes: Deno.test under Deno, bun:test under Bun. */
type Fn = () => void | Promise<void>;

import { runtime as here } from "../tensor/platform/runtime.ts";

const g = globalThis as unknown as { Deno?: { test(name: string, fn: Fn): void } };
// A computed specifier keeps Deno from resolving Bun's built-in module.
const bunTest: ((name: string, fn: Fn, timeoutMs?: number) => void) | undefined = g.Deno
  ? undefined
  : (await import("bun" + ":test")).test;

export const runtime: "deno" | "bun" = here === "deno" ? "deno" : "bun";

/** Set by a file that re-registers other files' tests (tests/webgpu_ops.test.ts): wraps each body. */
let wrapper: ((name: string, fn: Fn) => [string, Fn]) | null = null;
export function wrapTests(w: typeof wrapper): void {
  wrapper = w;
}

/** Register a test; `timeoutMs` applies under Bun (Deno has no per-test timeout). */
export function test(name: string, fn: Fn, timeoutMs = 120_000): void {
  if (wrapper) [name, fn] = wrapper(name, fn);
  if (g.Deno) g.Deno.test(name, fn);
  else bunTest!(name, fn, timeoutMs);
}

export class AssertionError extends Error {
  override name = "AssertionError";
}

export function assert(cond: unknown, msg = "assertion failed"): asserts cond {
  if (!cond) throw new AssertionError(msg);
}

export function assertEquals<T>(actual: T, expected: T, msg = ""): void {
  const a = JSON.stringify(actual), e = JSON.stringify(expected);
  if (a !== e) throw new AssertionError(`${msg ? msg + ": " : ""}expected ${e}, got ${a}`);
}

/** Elementwise |a - e| <= atol + rtol·|e|; NaN matches NaN, infinities must match exactly. */
export function assertClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  opts: { rtol?: number; atol?: number; msg?: string } = {},
): void {
  const rtol = opts.rtol ?? 1e-5, atol = opts.atol ?? 1e-6;
  const pre = opts.msg ? opts.msg + ": " : "";
  if (actual.length !== expected.length) {
    throw new AssertionError(`${pre}length ${actual.length} vs expected ${expected.length}`);
  }
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i], e = expected[i];
    if (Number.isNaN(e) && Number.isNaN(a)) continue;
    if (!Number.isFinite(e) && a === e) continue;
    if (!(Math.abs(a - e) <= atol + rtol * Math.abs(e))) {
      throw new AssertionError(
        `${pre}element ${i}: got ${a}, expected ${e} (rtol ${rtol}, atol ${atol})`,
      );
    }
  }
}

/** fn must throw; the message must contain every given fragment. */
export function assertThrows(fn: () => unknown, ...fragments: string[]): Error {
  try {
    fn();
  } catch (e) {
    const err = e as Error;
    for (const f of fragments) {
      if (!String(err.message).includes(f)) {
        throw new AssertionError(
          `error message ${JSON.stringify(err.message)} lacks ${JSON.stringify(f)}`,
        );
      }
    }
    return err;
  }
  throw new AssertionError(
    `expected an error mentioning ${fragments.map((f) => JSON.stringify(f)).join(", ")}`,
  );
}

/** Run `fn` in a fresh temporary folder (prefix `prefix`), removed afterwards whatever happens. */
export async function withTempDir(
  prefix: string,
  fn: (dir: string) => Promise<void>,
): Promise<void> {
  const { mkdtemp, rm } = await import("node:fs/promises");
  const { tmpdir } = await import("node:os");
  const { join } = await import("node:path");
  const dir = await mkdtemp(join(tmpdir(), prefix));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
