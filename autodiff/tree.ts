/**
 * Records ("pytrees"): nested plain objects and arrays whose leaves are tensors (or any other
 * value: numbers, strings, keys, class instances are leaves too). Object keys are visited in
 * sorted order, so two records with the same keys always flatten alike.
 */

export type Tree<L = unknown> = L | readonly Tree<L>[] | { readonly [k: string]: Tree<L> };

/** A record's structure without its leaves, for unflattening. */
export type TreeDef =
  | { kind: "leaf" }
  | { kind: "array"; children: TreeDef[] }
  | { kind: "object"; keys: string[]; children: TreeDef[] };

function isPlainObject(x: unknown): x is Record<string, unknown> {
  if (x === null || typeof x !== "object") return false;
  const p = Object.getPrototypeOf(x);
  return p === Object.prototype || p === null;
}

export function treeFlatten(tree: unknown): [leaves: unknown[], def: TreeDef] {
  const leaves: unknown[] = [];
  const go = (t: unknown): TreeDef => {
    if (Array.isArray(t)) return { kind: "array", children: t.map(go) };
    if (isPlainObject(t)) {
      const keys = Object.keys(t).sort();
      return { kind: "object", keys, children: keys.map((k) => go(t[k])) };
    }
    leaves.push(t);
    return { kind: "leaf" };
  };
  return [leaves, go(tree)];
}

export function treeUnflatten<T = unknown>(def: TreeDef, leaves: readonly unknown[]): T {
  let i = 0;
  const go = (d: TreeDef): unknown => {
    if (d.kind === "leaf") {
      if (i >= leaves.length) {
        throw new RangeError(
          `treeUnflatten: the structure needs more than ${leaves.length} leaves`,
        );
      }
      return leaves[i++];
    }
    if (d.kind === "array") return d.children.map(go);
    return Object.fromEntries(d.keys.map((k, j) => [k, go(d.children[j])]));
  };
  const out = go(def);
  if (i !== leaves.length) {
    throw new RangeError(`treeUnflatten: got ${leaves.length} leaves for a structure of ${i}`);
  }
  return out as T;
}

export function treeLeaves(tree: unknown): unknown[] {
  return treeFlatten(tree)[0];
}

function sameDef(a: TreeDef, b: TreeDef, path: string): void {
  const fail = (why: string) => {
    throw new TypeError(`tree structures differ at ${path || "the root"}: ${why}`);
  };
  if (a.kind !== b.kind) fail(`${a.kind} vs ${b.kind}`);
  if (a.kind === "object" && b.kind === "object" && a.keys.join() !== b.keys.join()) {
    fail(`keys {${a.keys}} vs {${b.keys}}`);
  }
  if (a.kind !== "leaf" && b.kind !== "leaf") {
    if (a.children.length !== b.children.length) {
      fail(`${a.children.length} vs ${b.children.length} children`);
    }
    a.children.forEach((c, i) =>
      sameDef(c, b.children[i], `${path}${a.kind === "object" ? "." + a.keys[i] : `[${i}]`}`)
    );
  }
}

/** Apply `fn` to the leaves of one or more records of the same structure. */
export function treeMap<T>(fn: (...leaves: any[]) => unknown, tree: T, ...rest: unknown[]): T {
  const [leaves, def] = treeFlatten(tree);
  const others = rest.map((r) => {
    const [l, d] = treeFlatten(r);
    sameDef(def, d, "");
    return l;
  });
  return treeUnflatten(def, leaves.map((x, i) => fn(x, ...others.map((o) => o[i]))));
}

/** Pair up the leaves of records of the same structure: treeZip(a, b) has [a_leaf, b_leaf] leaves. */
export function treeZip(...trees: unknown[]): unknown {
  if (trees.length === 0) return [];
  return treeMap((...xs: unknown[]) => xs, trees[0], ...trees.slice(1));
}

/** Leaves paired with their paths ("enc.W", "layers[0].b"), for messages and serialisation. */
export function treePaths(tree: unknown): [path: string, leaf: unknown][] {
  const out: [string, unknown][] = [];
  const go = (t: unknown, p: string) => {
    if (Array.isArray(t)) t.forEach((x, i) => go(x, `${p}[${i}]`));
    else if (isPlainObject(t)) {
      for (const k of Object.keys(t).sort()) go(t[k], p ? `${p}.${k}` : k);
    } else out.push([p, t]);
  };
  go(tree, "");
  return out;
}
