/**
 * Wraps every kernel of the current backend (and its fused kernels) with a timer, keyed by the
 * primitive and its operand shapes ("T" marks a transposed view), for the profile benches. CPU
 * kernels are synchronous, so the times are the kernels' own; on a GPU they are launch times.
 */
import * as t from "../mod.ts";

const SKIP = new Set(["alloc", "free", "info", "read", "readSync", "fromHost"]);
// deno-lint-ignore no-explicit-any
type Table = Record<string, any>;

export interface KernelTimes {
  /** Forget what was timed (after warm-up). */
  clear(): void;
  /** Each kernel key with its total ms and calls. */
  entries(): [key: string, [ms: number, calls: number]][];
  /** Print each kernel's time per `per` (steps or forwards) at or above `minMs`; returns the sum. */
  report(per: number, minMs: number): number;
}

/**
 * With `sync` (a GPU backend's synchronise), each call is timed from a synchronised start to a
 * synchronised end: the kernel's real time plus one synchronisation, not its launch time.
 */
export function timeKernels(o: { sync?: () => void } = {}): KernelTimes {
  const times = new Map<string, [ms: number, calls: number]>();
  const instrument = (obj: Table, prefix: string): void => {
    for (const name of Object.keys(obj)) {
      const f = obj[name];
      if (typeof f !== "function" || SKIP.has(name)) continue;
      obj[name] = function (this: unknown, ...args: unknown[]) {
        o.sync?.();
        const t0 = performance.now();
        const r = f.apply(this, args);
        o.sync?.();
        const dt = performance.now() - t0;
        const shapes = args
          .filter((a): a is t.View => !!a && typeof a === "object" && "shape" in a)
          .map((v) =>
            v.shape.join("x") +
            (v.strides.length && v.strides[v.strides.length - 1] !== 1 ? "T" : "")
          );
        // The arguments that change the work besides the shapes: reduced axes, k, spmm's side.
        const extra = name === "reduce"
          ? ` axes=[${args[2]}]`
          : name === "topk"
          ? ` k=${args[1]}`
          : name === "spmm"
          ? ` ${args[4] ? "T" : "N"} outRows=${args[5]}`
          : "";
        const key = `${prefix}${name}${typeof args[0] === "string" ? ":" + args[0] : ""}${extra} ${
          shapes.join(",")
        }`;
        const e = times.get(key) ?? [0, 0];
        e[0] += dt, e[1]++;
        times.set(key, e);
        return r;
      };
    }
  };
  const backend = t.getBackend() as unknown as Table;
  instrument(backend, "");
  if (backend.fused) instrument(backend.fused, "fused.");
  return {
    clear: () => times.clear(),
    entries: () => [...times],
    report(per, minMs) {
      let total = 0;
      for (const [key, [ms, n]] of [...times].sort((a, b) => b[1][0] - a[1][0])) {
        total += ms;
        if (ms / per >= minMs) {
          console.log(
            `${(ms / per).toFixed(1).padStart(8)} ms  x${String(n / per).padStart(3)}  ${key}`,
          );
        }
      }
      return total / per;
    },
  };
}
