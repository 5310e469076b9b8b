/**
 * Optimizers as pure functions over records (optax-style): `init(params) → state`,
 * `update(grads, state, params) → [updates, state]`, then `applyUpdates(params, updates)`.
 * Updates are the deltas to add (already scaled by -lr). Step counts are plain numbers.
 */
import { Tensor } from "../tensor/tensor.ts";
import { add, div, minimum, mul, sqrt, square, sub } from "../tensor/ops/elementwise.ts";
import { sum } from "../tensor/ops/reduce.ts";
import { zerosLike } from "../tensor/ops/create.ts";
import { treeFlatten, treeLeaves, treeMap, treePaths, treeUnflatten } from "./tree.ts";
import type { AdamHyper } from "../tensor/backend.ts";
import { fusedAdam, fusedAdamApply, fusedSumSquares } from "../tensor/fused.ts";
import type { Schedule } from "./schedule.ts";

export interface GradientTransformation<S = unknown> {
  init(params: unknown): S;
  update<T>(grads: T, state: S, params?: T): [T, S];
  /**
   * The new params and state at once: applyUpdates(params, update(…)[0]) with the same state, in
   * one pass per leaf where the backend can (see StepOptions). Optional; `applyStep` falls back.
   */
  step?<T>(grads: T, state: S, params: T, o?: StepOptions): [T, S];
  /** Present on transformations that only multiply every gradient by one scalar: that scalar. */
  gradScale?(grads: unknown, state: S): [Tensor, S];
}

/** What a fused `step` folds into its pass besides the update. */
export interface StepOptions {
  /** Multiply every gradient by this scalar first (a clipping factor from `gradScale`). */
  gradScale?: Tensor;
  /** Params leaves (by identity) whose rows go back to unit norm after the update, by `rows`. */
  unitRows?: { leaves: ReadonlySet<Tensor>; rows: (w: Tensor) => Tensor };
}

/**
 * params after one step of `opt`: its fused `step` when it has one, else update, applyUpdates,
 * and o.unitRows.rows on the leaves it names.
 */
export function applyStep<T, S>(
  opt: GradientTransformation<S>,
  grads: T,
  state: S,
  params: T,
  o: StepOptions = {},
): [T, S] {
  if (opt.step) return opt.step(grads, state, params, o);
  const g = o.gradScale ? mapTensors((x) => mul(x, o.gradScale!), grads) : grads;
  const [updates, next] = opt.update(g, state, params);
  const unit = o.unitRows;
  const out = mapTensors(
    (p, u) => (unit?.leaves.has(p) ? unit.rows(add(p, u)) : add(p, u)),
    params,
    updates,
  );
  return [out, next];
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
  return sqrt(
    leaves.map((x) => fusedSumSquares(x) ?? sum(square(x))).reduce((a, b) => add(a, b)),
  );
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
  /**
   * Which params leaves weight decay applies to, by path (`blocks[0].wQkv`, as treePaths spells
   * it) and value; default all. nanoGPT decays matrices only: `(_, p) => p.ndim >= 2`.
   */
  decayMask?: (path: string, param: Tensor) => boolean;
}

/** Adam with bias correction; with weightDecay it is AdamW. */
export function adam(o: AdamOptions): GradientTransformation<AdamState> {
  const b1 = o.b1 ?? 0.9, b2 = o.b2 ?? 0.999, eps = o.eps ?? 1e-8, wd = o.weightDecay ?? 0;
  /** The hyperparameters of the step after `count` steps. */
  const hyper = (count: number): AdamHyper => {
    const t = count + 1, lr = rate(o.lr, count);
    return { b1, b2, eps, c2: 1 - b2 ** t, scale: -lr / (1 - b1 ** t), decay: lr * wd };
  };
  /** Per params leaf (flatten order): whether it decays. */
  const decays = (params: unknown): boolean[] =>
    treePaths(params).map(([path, p]) =>
      wd !== 0 && (!o.decayMask || !(p instanceof Tensor) || o.decayMask(path, p))
    );
  const self: GradientTransformation<AdamState> = {
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
      const h = hyper(state.count);
      const [gl, def] = treeFlatten(grads);
      const ml = treeLeaves(state.mu), vl = treeLeaves(state.nu), pl = wd ? treeLeaves(params) : [];
      const dl = wd ? decays(params) : [];
      if (ml.length !== gl.length || (wd && pl.length !== gl.length)) {
        throw new TypeError(
          `adam: gradients have ${gl.length} leaves, the optimizer state ${ml.length}${
            wd ? `, params ${pl.length}` : ""
          }`,
        );
      }
      const res = gl.map((g, i) =>
        g instanceof Tensor
          ? adamLeaf(g, ml[i] as Tensor, vl[i] as Tensor, dl[i] ? pl[i] as Tensor : null, h)
          : [g, ml[i], vl[i]]
      );
      const part = (j: number) => treeUnflatten(def, res.map((r) => r[j]));
      return [part(0) as typeof grads, { count: t, mu: part(1), nu: part(2) }];
    },
  };
  return {
    ...self,
    step(grads, state, params, so = {}) {
      const [gl, def] = treeFlatten(grads);
      const pl = treeLeaves(params), ml = treeLeaves(state.mu), vl = treeLeaves(state.nu);
      if (pl.length !== gl.length || ml.length !== gl.length) {
        throw new TypeError(
          `adam: gradients have ${gl.length} leaves, params ${pl.length}, the optimizer state ${ml.length}`,
        );
      }
      const h = hyper(state.count);
      const dl = decays(params);
      const unit = so.unitRows;
      const res = gl.map((g, i) => {
        const p = pl[i], m = ml[i], v = vl[i];
        if (!(g instanceof Tensor && p instanceof Tensor)) return [p, m, v];
        const isUnit = !!unit?.leaves.has(p);
        const fused = fusedAdamApply(p, g, m as Tensor, v as Tensor, so.gradScale ?? null, h, {
          decay: dl[i],
          unitRows: isUnit,
        });
        if (fused) return fused;
        const gs = so.gradScale ? mul(g, so.gradScale) : g;
        const [u, m2, v2] = adamLeaf(gs, m as Tensor, v as Tensor, dl[i] ? p : null, h);
        const p2 = add(p, u);
        return [isUnit ? unit!.rows(p2) : p2, m2, v2];
      });
      const part = (j: number) => treeUnflatten(def, res.map((r) => r[j]));
      return [part(0) as typeof params, { count: state.count + 1, mu: part(1), nu: part(2) }];
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
  const scaleOf = (grads: unknown) => minimum(div(maxNorm, globalNorm(grads)), 1);
  return {
    init: () => null,
    update(grads) {
      const scale = scaleOf(grads);
      return [mapTensors((g) => mul(g, scale), grads), null];
    },
    gradScale: (grads) => [scaleOf(grads), null],
  };
}

/** Apply transformations in order, each seeing the previous one's updates. */
export function chain(...ts: GradientTransformation<any>[]): GradientTransformation<unknown[]> {
  const last = ts[ts.length - 1];
  const scalesThenSteps = ts.length > 0 && !!last.step &&
    ts.slice(0, -1).every((t) => t.gradScale);
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
    // Scalings (clipping) then a stepping optimiser: the scale goes into the optimiser's pass.
    ...(scalesThenSteps
      ? {
        step<T>(grads: T, state: unknown[], params: T, o: StepOptions = {}): [T, unknown[]] {
          let scale = o.gradScale ?? null;
          const next: unknown[] = [];
          for (let i = 0; i < ts.length - 1; i++) {
            // Each scaling sees the gradients as the previous ones left them.
            const seen = scale ? mapTensors((g) => mul(g, scale!), grads) : grads;
            const [s, st] = ts[i].gradScale!(seen, state[i]);
            scale = scale ? mul(scale, s) : s;
            next.push(st);
          }
          const [p, st] = last.step!(grads, state[ts.length - 1], params, {
            ...o,
            ...(scale ? { gradScale: scale } : {}),
          });
          return [p, [...next, st]];
        },
      }
      : {}),
  };
}
