/**
 * Per-type copies of hand-written kernels. A JavaScriptCore (Bun) function that has run on
 * Float32Array and Float64Array alike stays in slower, polymorphic code for the rest of the
 * process (a 3-8x slower f32 training loop after the f64 gradient tests); V8 recovers better but
 * gains too. Each copy is compiled from the kernel's source text plus a comment naming its types,
 * since JavaScriptCore shares compiled code between functions of identical source.
 */

// deno-lint-ignore no-explicit-any
type Fn = (...args: any[]) => any;

const copies = new WeakMap<Fn, Map<string, Fn>>();

/** The kernel's name for a set of typed arrays: "Float32Array,Int32Array,…". */
export function typeKey(...arrays: ArrayLike<number>[]): string {
  let s = "";
  for (const a of arrays) s += (s ? "," : "") + (a as object).constructor.name;
  return s;
}

/**
 * `fn` compiled separately for `key`. `fn` may refer to nothing outside itself but the names in
 * `deps` (module-level helpers), which are passed in by name.
 */
export function perType<F extends Fn>(fn: F, key: string, deps: Record<string, unknown> = {}): F {
  let m = copies.get(fn);
  if (!m) copies.set(fn, m = new Map());
  let f = m.get(key);
  if (!f) {
    const names = Object.keys(deps);
    f = new Function(...names, `// ${fn.name} for ${key}\nreturn (${fn.toString()});`)(
      ...names.map((n) => deps[n]),
    ) as Fn;
    m.set(key, f);
  }
  return f as F;
}
