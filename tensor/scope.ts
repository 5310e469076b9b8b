/**
 * Deterministic release of tensors: `tidy(fn)` disposes every tensor created while `fn` runs,
 * except those reachable from its result (or passed to `keep`). On the CPU this only drops
 * references early; on a GPU it is what keeps a training loop's memory flat.
 */

interface Disposable {
  dispose(): void;
  readonly disposed: boolean;
}

const scopes: Set<Disposable>[] = [];
const kept = new WeakSet<Disposable>();

/** @internal called by the Tensor constructor. */
export function track(t: Disposable): void {
  scopes[scopes.length - 1]?.add(t);
}

/** Exempt tensors from the enclosing `tidy` scope's cleanup. */
export function keep<T>(tree: T): T {
  for (const t of disposables(tree)) kept.add(t);
  return tree;
}

/** Dispose every tensor in a record/array tree. */
export function dispose(tree: unknown): void {
  for (const t of disposables(tree)) t.dispose();
}

/**
 * Dispose the tensors of `old` that `current` no longer holds: the way to retire a previous
 * state when the new one reuses some of its tensors.
 */
export function disposeReplaced(old: unknown, current: unknown): void {
  const live = new Set(disposables(current));
  for (const t of disposables(old)) if (!live.has(t)) t.dispose();
}

export function tidy<T>(fn: () => T): T {
  const scope = new Set<Disposable>();
  scopes.push(scope);
  let result: T;
  try {
    result = fn();
  } catch (e) {
    scopes.pop();
    for (const t of scope) if (!kept.has(t)) t.dispose();
    throw e;
  }
  scopes.pop();
  if (result instanceof Promise) {
    throw new TypeError("tidy: the function must be synchronous; await outside tidy");
  }
  const live = new Set(disposables(result));
  const parent = scopes[scopes.length - 1];
  for (const t of scope) {
    if (live.has(t) || kept.has(t)) parent?.add(t);
    else t.dispose();
  }
  return result;
}

function isDisposable(x: unknown): x is Disposable {
  return typeof x === "object" && x !== null && typeof (x as Disposable).dispose === "function" &&
    "storage" in x;
}

function* disposables(tree: unknown): Generator<Disposable> {
  if (isDisposable(tree)) yield tree;
  else if (Array.isArray(tree)) { for (const x of tree) yield* disposables(x); }
  else if (
    tree !== null && typeof tree === "object" && Object.getPrototypeOf(tree) === Object.prototype
  ) {
    for (const x of Object.values(tree)) yield* disposables(x);
  }
}
