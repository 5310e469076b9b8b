/** JAX-style transformations: vjp, grad, valueAndGrad, customVjp. */
import { isFloat } from "../tensor/dtype.ts";
import { fmt, shapesEqual } from "../tensor/shape.ts";
import { bind1, type Node } from "../tensor/prims.ts";
import { Tensor } from "../tensor/tensor.ts";
import { add, cast } from "../tensor/ops/elementwise.ts";
import { onesLike, zerosLike } from "../tensor/ops/create.ts";
import { closeTrace, markLeaf, openTrace, record, type Tape, untraced } from "./trace.ts";
import { vjpRule } from "./rules.ts";
import { treeFlatten, treeLeaves, treeUnflatten } from "./tree.ts";

const tensorLeaves = (tree: unknown): Tensor[] =>
  treeLeaves(tree).filter((x): x is Tensor => x instanceof Tensor);

/** Propagate output cotangents back through a tape; returns one cotangent (or null) per leaf. */
function backward(tape: Tape, outputs: Tensor[], cts: Tensor[], who: string): (Tensor | null)[] {
  const acc = new Map<Tensor, Tensor>();
  const put = (x: Tensor, g: Tensor, what: string) => {
    if (!shapesEqual(g.shape, x.shape)) {
      throw new Error(
        `${who}: ${what} returned a cotangent of shape ${fmt(g.shape)} for an input of shape ${
          fmt(x.shape)
        }`,
      );
    }
    const gc = g.dtype === x.dtype || !isFloat(x.dtype) ? g : cast(g, x.dtype);
    const prev = acc.get(x);
    acc.set(x, prev ? add(prev, gc) : gc);
  };
  outputs.forEach((o, i) => put(o, cts[i], "the seed"));
  const isLeaf = new Set(tape.leaves);
  for (let s = tape.steps.length - 1; s >= 0; s--) {
    const { node, live } = tape.steps[s];
    const outCts = node.outputs.map((o) => acc.get(o) ?? null);
    if (outCts.every((g) => g === null)) continue;
    for (const o of node.outputs) if (!isLeaf.has(o)) acc.delete(o);
    const inCts = vjpRule(node)(outCts, node, live);
    node.inputs.forEach((x, j) => {
      const g = inCts[j];
      if (live[j] && g) {
        put(
          x,
          g,
          `the VJP of ${node.prim === "custom" ? (node as Node<"custom">).params.name : node.prim}`,
        );
      }
    });
  }
  return tape.leaves.map((l) => acc.get(l) ?? null);
}

interface Traced {
  out: unknown;
  tape: Tape;
  /** For each argument: its flattened leaves, with traced aliases where differentiated. */
  args: { leaves: unknown[]; def: ReturnType<typeof treeFlatten>[1]; traced: boolean[] }[];
}

/** Run f with the float tensor leaves of the chosen arguments as fresh leaves of a new trace. */
function traceCall(
  who: string,
  f: (...args: unknown[]) => unknown,
  args: unknown[],
  argnums: number[],
  outOf: (r: unknown) => unknown,
): Traced {
  const trace = openTrace();
  const leaves: Tensor[] = [];
  const flat = args.map((a, i) => {
    const [ls, def] = treeFlatten(a);
    const diff = argnums.includes(i);
    const traced = ls.map((l) => diff && l instanceof Tensor && isFloat(l.dtype));
    const wrapped = ls.map((l, j) => {
      if (!traced[j]) return l;
      const alias = bind1("alias", [l as Tensor], {});
      markLeaf(trace, alias);
      leaves.push(alias);
      return alias;
    });
    return { leaves: wrapped, def, traced };
  });
  let out: unknown;
  try {
    out = f(...flat.map((a) => treeUnflatten(a.def, a.leaves)));
  } catch (e) {
    closeTrace(trace, leaves, []);
    throw e;
  }
  if (out instanceof Promise) {
    closeTrace(trace, leaves, []);
    throw new TypeError(
      `${who}: the function must be synchronous (readback with await belongs outside it)`,
    );
  }
  const tape = closeTrace(trace, leaves, tensorLeaves(outOf(out)), tensorLeaves(out));
  return { out, tape, args: flat };
}

/** Cotangent records shaped like each differentiated argument (null for non-float leaves). */
function gradsOf(t: Traced, argnums: number[], leafCts: (Tensor | null)[]): unknown[] {
  let k = 0;
  const perArg = t.args.map((a) =>
    treeUnflatten(
      a.def,
      a.leaves.map((l, j) => {
        if (!a.traced[j]) return null;
        const g = leafCts[k++];
        return g ?? zerosLike(l as Tensor);
      }),
    )
  );
  return argnums.map((i) => perArg[i]);
}

function normArgnums(
  who: string,
  argnums: number | readonly number[] | undefined,
  n: number,
): number[] {
  const list = argnums === undefined ? [0] : typeof argnums === "number" ? [argnums] : [...argnums];
  for (const a of list) {
    if (!Number.isInteger(a) || a < 0 || a >= n) {
      throw new RangeError(`${who}: argnums ${a} is out of range for ${n} argument(s)`);
    }
  }
  return list;
}

/**
 * vjp(f, ...primals) → [f(...primals), vjpFn]; vjpFn(cotangent shaped like the output) returns
 * one cotangent record per primal. vjpFn may be called more than once.
 */
export function vjp<A extends unknown[], R>(
  f: (...args: A) => R,
  ...primals: A
): [R, (ct: R) => A] {
  const argnums = primals.map((_, i) => i);
  const t = traceCall("vjp", f as (...a: unknown[]) => unknown, primals, argnums, (r) => r);
  const outs = tensorLeaves(t.out);
  const fn = (ct: unknown) => {
    const cts = tensorLeaves(ct);
    if (cts.length !== outs.length) {
      throw new TypeError(
        `vjp: the cotangent has ${cts.length} tensors, the output ${outs.length}`,
      );
    }
    return gradsOf(t, argnums, backward(t.tape, outs, cts, "vjp")) as A;
  };
  return [t.out as R, fn];
}

/** Which positional arguments to differentiate: one index, or several for a tuple of grads. */
export type Argnums = number | readonly number[];

export interface GradOptions<N extends Argnums = Argnums, Aux extends boolean = boolean> {
  /** f returns [value, aux]; aux is passed through undifferentiated. */
  hasAux?: Aux;
  /** Which positional arguments to differentiate (default 0); an array gives a tuple of grads. */
  argnums?: N;
}

/**
 * The gradients for arguments `N` of a function of `A`: a record typed like the argument (its
 * leaves that are not float tensors come back null), or a tuple of them for an array of argnums.
 */
export type Grads<A extends readonly unknown[], N extends Argnums> = N extends number ? A[N]
  : { -readonly [I in keyof N]: A[N[I] & number] };

/** The aux of a function that returns [value, aux]. */
export type AuxOf<R> = R extends readonly [unknown, infer X] ? X : never;

function scalarValue(who: string, v: unknown): Tensor {
  if (!(v instanceof Tensor)) {
    throw new TypeError(
      `${who}: the function must return a scalar Tensor${
        who.includes("Aux") ? "" : " (use hasAux to return [value, aux])"
      }, got ${typeof v}`,
    );
  }
  if (v.size !== 1 || !isFloat(v.dtype)) {
    throw new TypeError(
      `${who}: the function must return a one-element float tensor, got ${v.describe()}`,
    );
  }
  return v;
}

/**
 * valueAndGrad(f)(params, ...args) → [value, grads], value what f returns, grads shaped like
 * params. With hasAux, f returns [value, aux] and the result is [[value, aux], grads].
 */
export function valueAndGrad<A extends unknown[], R, const N extends Argnums = 0>(
  f: (...args: A) => R,
  opts: GradOptions<N> = {},
): (...args: A) => [R, Grads<A, N>] {
  return valueAndGradAs("valueAndGrad", f, opts);
}

/** valueAndGrad whose errors carry the public name the user called (grad or valueAndGrad). */
function valueAndGradAs<A extends unknown[], R, N extends Argnums>(
  who: string,
  f: (...args: A) => R,
  opts: GradOptions<N>,
): (...args: A) => [R, Grads<A, N>] {
  return (...args: A) => {
    const argnums = normArgnums(who, opts.argnums, args.length);
    const valueOf = (r: unknown) => (opts.hasAux ? (r as unknown[])[0] : r);
    if (opts.hasAux) {
      const probe = (r: unknown) => {
        if (!Array.isArray(r) || r.length !== 2) {
          throw new TypeError(`${who}: with hasAux the function must return [value, aux]`);
        }
        return r[0];
      };
      const t = traceCall(who, f as (...a: unknown[]) => unknown, args, argnums, probe);
      const v = scalarValue(`${who} (hasAux)`, valueOf(t.out));
      const grads = gradsOf(t, argnums, backward(t.tape, [v], [onesLike(v)], who));
      return [t.out as R, (typeof opts.argnums === "object" ? grads : grads[0]) as Grads<A, N>];
    }
    const t = traceCall(who, f as (...a: unknown[]) => unknown, args, argnums, (r) => r);
    const v = scalarValue(who, t.out);
    const grads = gradsOf(t, argnums, backward(t.tape, [v], [onesLike(v)], who));
    return [v as R, (typeof opts.argnums === "object" ? grads : grads[0]) as Grads<A, N>];
  };
}

/** grad(f)(params, ...args) → grads shaped like params ([grads, aux] with hasAux). */
export function grad<
  A extends unknown[],
  R,
  const N extends Argnums = 0,
  H extends boolean = false,
>(
  f: (...args: A) => R,
  opts: GradOptions<N, H> = {},
): (...args: A) => H extends true ? [Grads<A, N>, AuxOf<R>] : Grads<A, N> {
  const vg = valueAndGradAs("grad", f, opts);
  type Out = H extends true ? [Grads<A, N>, AuxOf<R>] : Grads<A, N>;
  return (...args: A) => {
    const [v, g] = vg(...args);
    return (opts.hasAux ? [g, (v as unknown[])[1]] : g) as Out;
  };
}

/**
 * A function with a hand-written backward rule. `forward` returns [output, residuals];
 * `backward(residuals, outputCotangent, needs)` returns one cotangent per input (null for none);
 * `needs[j]` says whether input j needs one at all, so costly unused cotangents can be skipped.
 * The forward pass is not traced, so only `backward` decides the gradient.
 */
export function customVjp<Args extends Tensor[], O extends Tensor | Tensor[], R>(
  forward: (...args: Args) => [O, R],
  backward: (residuals: R, ct: O, needs: boolean[]) => (Tensor | null)[],
  name = forward.name || "customVjp",
): (...args: Args) => O {
  return (...args: Args) => {
    const [out, res] = untraced(() => forward(...args));
    const outs = (Array.isArray(out) ? out : [out]) as Tensor[];
    const aliased = outs.map((o) => new Tensor(o.storage, o.shape, o.dtype, o.strides, o.offset));
    record({
      prim: "custom",
      inputs: args,
      outputs: aliased,
      params: {
        name,
        backward: (cts, live) => {
          const full = cts.map((g, i) => g ?? zerosLike(aliased[i]));
          const r = backward(res, (Array.isArray(out) ? full : full[0]) as O, live);
          if (r.length !== args.length) {
            throw new Error(
              `${name}: backward returned ${r.length} cotangents for ${args.length} inputs`,
            );
          }
          return r;
        },
      },
    });
    return (Array.isArray(out) ? aliased : aliased[0]) as O;
  };
}
