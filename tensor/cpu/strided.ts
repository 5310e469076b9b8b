/**
 * Strided loops for the CPU backend. Each elementwise kernel is generated once per expression
 * (new Function), so the hot loop is monomorphic and V8/JSC compile it to tight code; a
 * closure per element would be many times slower.
 */
import type { Shape } from "../shape.ts";
import { erf } from "./special.ts";
import { allShared, ranges, runJobs, threads } from "./threads.ts";

type Arr = Float32Array | Float64Array | Int32Array | Uint8Array | Uint16Array;

export interface StridedArg {
  arr: Arr;
  strides: readonly number[];
  offset: number;
}

/**
 * Merge adjacent axes that are contiguous for every operand and drop size-1 axes, so the common
 * cases (all contiguous; a row broadcast) become one or two loops.
 */
export function coalesce(
  shape: Shape,
  strides: (readonly number[])[],
): { shape: number[]; strides: number[][] } {
  const keep = shape.map((d, i) => [d, i] as const).filter(([d]) => d !== 1);
  const outShape: number[] = [];
  const outStrides: number[][] = strides.map(() => []);
  for (const [d, i] of keep) {
    const last = outShape.length - 1;
    if (last >= 0 && strides.every((s, k) => outStrides[k][last] === s[i] * d)) {
      outShape[last] *= d;
      strides.forEach((s, k) => (outStrides[k][last] = s[i]));
    } else {
      outShape.push(d);
      strides.forEach((s, k) => outStrides[k].push(s[i]));
    }
  }
  return { shape: outShape, strides: outStrides };
}

const NAMES = ["a", "b", "c"];

/** Helpers visible to generated kernels. */
const H = { erf };

type Kernel = (
  out: Arr,
  outStr: number[],
  outOff: number,
  shape: number[],
  args: StridedArg[],
  strs: number[][],
) => void;
const cache = new Map<string, Kernel>();

/**
 * With `acc` (an expression in `acc` and `a`), the kernel folds `a` into the output instead: a
 * reduction. Where the innermost axis is reduced (output stride 0) it folds into a local, since a
 * read-modify-write of the same slot each element serialises on memory.
 */
function build(key: string, expr: string, arity: number, acc?: string): Kernel {
  const names = NAMES.slice(0, arity);
  const lines: string[] = [];
  lines.push("const nd = shape.length;");
  if (!acc) {
    // Everything contiguous (the common case): one flat loop, with no stride bookkeeping for the
    // compiler to specialise and later deoptimise on (seen: a 6x slower ReLU inside training).
    const flat = names.map((_, k) => `strs[${k + 1}][0] === 1`).join(" && ");
    lines.push(`if (nd === 1 && outStr[0] === 1${flat ? " && " + flat : ""}) {`);
    names.forEach((_, k) =>
      lines.push(`  const F${k} = args[${k}].arr, f${k} = args[${k}].offset;`)
    );
    lines.push("  for (let i = 0, n = shape[0]; i < n; i++) {");
    names.forEach((n, k) => lines.push(`    const ${n} = F${k}[f${k} + i];`));
    lines.push(`    out[outOff + i] = ${expr};`);
    lines.push("  }");
    lines.push("  return;");
    lines.push("}");
  }
  names.forEach((_, k) =>
    lines.push(`const A${k} = args[${k}].arr; const S${k} = strs[${k + 1}];`)
  );
  // po names the output slot in the loop below; expressions may read it (reductions do), so the
  // scalar path (everything coalesced away) must define it too.
  lines.push("if (nd === 0) { const po = outOff;");
  names.forEach((n, k) => lines.push(`const ${n} = A${k}[args[${k}].offset];`));
  lines.push(`out[outOff] = ${expr}; return; }`);
  lines.push("const last = shape[nd - 1]; const so = outStr[nd - 1];");
  names.forEach((_, k) =>
    lines.push(`const s${k} = S${k}[nd - 1]; let o${k} = args[${k}].offset;`)
  );
  lines.push("let oo = outOff; const idx = new Int32Array(nd); let rows = 1;");
  lines.push("for (let d = 0; d < nd - 1; d++) rows *= shape[d];");
  lines.push("for (let r = 0; r < rows; r++) {");
  const ptrs = names.map((_, k) => `p${k} = o${k}`).join(", ");
  const steps = names.map((_, k) => `p${k} += s${k}`).join(", ");
  if (acc) {
    lines.push("  if (so === 0) {");
    lines.push(`    let acc = out[oo];`);
    lines.push(`    for (let j = 0, ${ptrs}; j < last; j++, ${steps}) {`);
    names.forEach((n, k) => lines.push(`      const ${n} = A${k}[p${k}];`));
    lines.push(`      acc = ${acc};`);
    lines.push("    }");
    lines.push("    out[oo] = acc;");
    lines.push("  } else");
  }
  lines.push(`  for (let j = 0, po = oo, ${ptrs}; j < last; j++, po += so, ${steps}) {`);
  names.forEach((n, k) => lines.push(`    const ${n} = A${k}[p${k}];`));
  lines.push(`    out[po] = ${expr};`);
  lines.push("  }");
  lines.push("  for (let d = nd - 2; d >= 0; d--) {");
  lines.push("    idx[d]++; oo += outStr[d];");
  names.forEach((_, k) => lines.push(`    o${k} += S${k}[d];`));
  lines.push("    if (idx[d] < shape[d]) break;");
  lines.push("    idx[d] = 0; oo -= outStr[d] * shape[d];");
  names.forEach((_, k) => lines.push(`    o${k} -= S${k}[d] * shape[d];`));
  lines.push("  }");
  lines.push("}");
  const body = lines.join("\n");
  // The key in a comment makes the source text unique: JavaScriptCore shares compiled code (and
  // its type profile) between functions of identical source, which would undo the per-type split.
  return new Function(
    "H",
    `return function kernel(out, outStr, outOff, shape, args, strs) {\n// ${key}\n${body}\n};`,
  )(H) as Kernel;
}

/**
 * One compiled kernel per combination of array types: a kernel fed Float32Array and Float64Array
 * alike turns polymorphic, and JavaScriptCore (Bun) then runs the f32 loop 4x slower for the rest
 * of the process (a training run slowed 10x after the op tests had run in the same process).
 */
function typesOf(out: Arr, args: StridedArg[]): string {
  let s = out.constructor.name;
  for (const a of args) s += "," + a.arr.constructor.name;
  return s;
}

/** The compiled kernel for `key` (built on first use; worker threads build their own copy). */
export function stridedKernel(key: string, expr: string, arity: number, acc?: string): Kernel {
  let k = cache.get(key);
  if (!k) cache.set(key, k = build(key, acc ? acc.replaceAll("acc", "out[po]") : expr, arity, acc));
  return k;
}

/**
 * out[view] = expr(a, b, c) over `shape`, with every operand (the output included) strided.
 * `expr` is a JS expression in the operands' values a, b, c and helpers H.
 */
export function mapStrided(
  expr: string,
  shape: Shape,
  out: Arr,
  outStrides: readonly number[],
  outOffset: number,
  args: StridedArg[],
): void {
  run(`${typesOf(out, args)}|${expr}`, expr, undefined, shape, out, outStrides, outOffset, args);
}

/**
 * Fold x into `out` (already holding the identity) along the axes where `outStrides` is 0:
 * out[slot] = acc(out[slot], a). `acc` is an expression in `acc` and `a`.
 */
export function reduceStrided(
  acc: string,
  shape: Shape,
  out: Arr,
  outStrides: readonly number[],
  x: StridedArg,
): void {
  run(`R|${typesOf(out, [x])}|${acc}`, acc, acc, shape, out, outStrides, 0, [x]);
}

/**
 * A small operand outside shared memory (a bias vector, an uploaded constant) copied into it, so
 * a broadcast against it can still be split across threads; large ones are left alone (null).
 */
function sharedCopy(a: Arr): Arr | null {
  if (a.length > 1 << 16) return null;
  const c = new (a.constructor as new (b: SharedArrayBuffer) => Arr)(
    new SharedArrayBuffer(a.byteLength),
  );
  c.set(a as never);
  return c;
}

/** Below this many elements a kernel runs on one thread: posting a job costs ~0.1 ms. */
const PARALLEL_MIN = 1 << 18;

function run(
  key: string,
  expr: string,
  acc: string | undefined,
  shape: Shape,
  out: Arr,
  outStrides: readonly number[],
  outOffset: number,
  args: StridedArg[],
): void {
  let n = 1;
  for (const d of shape) n *= d;
  if (n === 0) return;
  const k = stridedKernel(key, expr, args.length, acc);
  const c = coalesce(shape, [outStrides, ...args.map((a) => a.strides)]);
  const T = n >= PARALLEL_MIN ? threads() : 1;
  // Slices along an axis the output does not reduce over write disjoint slots, so they can run
  // at once; the outermost such axis long enough to share out keeps the slices contiguous.
  const axis = T > 1 && allShared(out)
    ? c.shape.findIndex((d, i) => c.strides[0][i] !== 0 && d >= T)
    : -1;
  if (axis >= 0) {
    args = args.map((
      a,
    ) => (a.arr.buffer instanceof SharedArrayBuffer
      ? a
      : { ...a, arr: sharedCopy(a.arr) ?? a.arr })
    );
  }
  if (axis < 0 || !allShared(...args.map((a) => a.arr))) {
    return k(out, c.strides[0], outOffset, c.shape, args, c.strides);
  }
  runJobs(
    ranges(c.shape[axis], T).map(([lo, hi]) => {
      const sub = c.shape.slice();
      sub[axis] = hi - lo;
      const subArgs = args.map((a, i) => ({
        arr: a.arr,
        strides: a.strides,
        offset: a.offset + lo * c.strides[i + 1][axis],
      }));
      return {
        fn: "strided",
        key,
        args: [
          expr,
          args.length,
          acc,
          out,
          c.strides[0],
          outOffset + lo * c.strides[0][axis],
          sub,
          subArgs,
          c.strides,
        ],
      };
    }),
  );
}
