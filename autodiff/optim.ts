/**
 * Optimizers as pure functions over records (optax-style): `init(params) → state`,
 * `update(grads, state, params) → [updates, state]`, then `applyUpdates(params, updates)`.
 * Updates are the deltas to add (already scaled by -lr). Step counts are plain numbers.
 */
import { Tensor } from "../tensor/tensor.ts";
import { add, div, minimum, mul, sqrt, square, sub } from "../tensor/ops/elementwise.ts";
import { sum } from "../tensor/ops/reduce.ts";
import { zerosLike } from "../tensor/ops/create.ts";
import { treeFlatten, treeLeaves, treeMap, treeUnflatten } from "./tree.ts";
import type { AdamHyper } from "../tensor/backend.ts";
import { fusedAdam } from "../tensor/fused.ts";
import type { Schedule } from "./schedule.ts";

export interface GradientTransformation<S = unknown> {
  init(params: unknown): S;
  update<T>(grads: T, state: S, params?: T): [T, S];
}

export type LearningRate = number | Schedule;

const rate = (lr: LearningRate, step: number): number => (typeof lr === "number" ? lr : lr(step));

/** Map over tensor leaves only; other leaves (null for non-float params) pass through. */
function mapTensors<T>(fn: (...xs: Tensor[]) => Tensor, tree: T, ...rest: unknown[]): T {
  return treeMap(
    (x: unknown, ...ys: unknown[]) => (x instanceof Tensor ? fn(x, ...(ys as Tensor[])) : x),
    tree,
    ...rest,
  );
}

export function applyUpdates<T>(params: T, updates: T): T {
  return mapTensors((p, u) => add(p, u), params, updates);
}

/** sqrt(Σ‖leaf‖²) over every tensor in the record. */
export function globalNorm(tree: unknown): Tensor {
  const leaves = treeLeaves(tree).filter((x): x is Tensor => x instanceof Tensor);
  if (leaves.length === 0) throw new TypeError("globalNorm: the record has no tensors");
  return sqrt(leaves.map((x) => sum(square(x))).reduce((a, b) => add(a, b)));
}

export interface SgdState {
  count: number;
  momentum: unknown;
}

export function sgd(
  o: { lr: LearningRate; momentum?: number; nesterov?: boolean },
): GradientTransformation<SgdState> {
  const beta = o.momentum ?? 0;
  return {
    init: (params) => ({
      count: 0,
      momentum: beta ? mapTensors((p) => zerosLike(p), params) : null,
    }),
    update(grads, state) {
      const lr = rate(o.lr, state.count);
      if (!beta) {
        return [mapTensors((g) => mul(g, -lr), grads), { count: state.count + 1, momentum: null }];
      }
      const m = mapTensors((mi, g) => add(mul(mi, beta), g), state.momentum, grads);
      const dir = o.nesterov ? mapTensors((mi, g) => add(g, mul(mi, beta)), m, grads) : m;
      return [mapTensors((d) => mul(d, -lr), dir) as typeof grads, {
        count: state.count + 1,
        momentum: m,
      }];
    },
  };
}

export interface AdamState {
  count: number;
  mu: unknown;
  nu: unknown;
}

export interface AdamOptions {
  lr: LearningRate;
  b1?: number;
  b2?: number;
  eps?: number;
  /** Decoupled weight decay (AdamW): adds -lr·weightDecay·param to the update. */
  weightDecay?: number;
}

/** Adam with bias correction; with weightDecay it is AdamW. */
export function adam(o: AdamOptions): GradientTransformation<AdamState> {
  const b1 = o.b1 ?? 0.9, b2 = o.b2 ?? 0.999, eps = o.eps ?? 1e-8, wd = o.weightDecay ?? 0;
  return {
    init: (params) => ({
      count: 0,
      mu: mapTensors((p) => zerosLike(p), params),
      nu: mapTensors((p) => zerosLike(p), params),
    }),
    update(grads, state, params) {
      if (wd && params === undefined) {
        throw new TypeError("adam: weightDecay needs params passed to update");
      }
      const t = state.count + 1;
      const lr = rate(o.lr, state.count);
      const h: AdamHyper = {
        b1,
        b2,
        eps,
        c2: 1 - b2 ** t,
        scale: -lr / (1 - b1 ** t),
        decay: lr * wd,
      };
      const [gl, def] = treeFlatten(grads);
      const ml = treeLeaves(state.mu), vl = treeLeaves(state.nu), pl = wd ? treeLeaves(params) : [];
      if (ml.length !== gl.length || (wd && pl.length !== gl.length)) {
        throw new TypeError(
          `adam: gradients have ${gl.length} leaves, the optimizer state ${ml.length}${
            wd ? `, params ${pl.length}` : ""
          }`,
        );
      }
      const res = gl.map((g, i) =>
        g instanceof Tensor
          ? adamLeaf(g, ml[i] as Tensor, vl[i] as Tensor, wd ? pl[i] as Tensor : null, h)
          : [g, ml[i], vl[i]]
      );
      const part = (j: number) => treeUnflatten(def, res.map((r) => r[j]));
      return [part(0) as typeof grads, { count: t, mu: part(1), nu: part(2) }];
    },
  };
}

/** One leaf's Adam step: the backend's fused kernel when it has one and nothing is traced. */
function adamLeaf(
  g: Tensor,
  m: Tensor,
  v: Tensor,
  p: Tensor | null,
  h: AdamHyper,
): [Tensor, Tensor, Tensor] {
  const fused = fusedAdam(g, m, v, p, h);
  if (fused) return fused;
  const m2 = add(mul(m, h.b1), mul(g, 1 - h.b1));
  const v2 = add(mul(v, h.b2), mul(square(g), 1 - h.b2));
  const u = mul(div(m2, add(sqrt(div(v2, h.c2)), h.eps)), h.scale);
  return [p ? sub(u, mul(p, h.decay)) : u, m2, v2];
}

export const adamw = (o: AdamOptions): GradientTransformation<AdamState> =>
  adam({ ...o, weightDecay: o.weightDecay ?? 1e-2 });

/** Scale all gradients down together when their global norm exceeds `maxNorm` (no readback). */
export function clipByGlobalNorm(maxNorm: number): GradientTransformation<null> {
  return {
    init: () => null,
    update(grads) {
      const scale = minimum(div(maxNorm, globalNorm(grads)), 1);
      return [mapTensors((g) => mul(g, scale), grads), null];
    },
  };
}

/** Apply transformations in order, each seeing the previous one's updates. */
export function chain(...ts: GradientTransformation<any>[]): GradientTransformation<unknown[]> {
  return {
    init: (params) => ts.map((t) => t.init(params)),
    update(grads, state, params) {
      let u = grads;
      const next = ts.map((t, i) => {
        const [u2, s] = t.update(u, state[i], params);
        u = u2;
        return s;
      });
      return [u, next];
    },
  };
}
