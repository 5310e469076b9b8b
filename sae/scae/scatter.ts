/**
 * The pruned pass's upstream term in scatter form. After top-k an upstream module's codes are k per
 * token, so instead of gathering C codes for every downstream feature ([N, F_down, C], mostly zeros)
 * each active upstream feature j pushes f_j·V[i, c, h] into every downstream feature i that lists
 * it (slot c): cost N·k·fan-out·H, memory the [H, N, F_down] output only. The connection table is
 * inverted once per pair (`fanOut`); the virtual weights are formed for the connected slots only, as
 * one sddmm (`slotEntries`), so no [F_down, C, d] gather of decoder rows either. One custom
 * differentiable op whose kernels are TypeScript loops over the host backend's arrays (V[i, c, h]
 * below is the row of slot (i, c) in the op's compact V):
 *   out[h, n, i] = Σ_t Σ_{(i,c) ∈ fanout(idx[n,t])} val[n, t]·V[i, c, h]
 *   ∂V[i, c, h]  = Σ_n Σ_t [(i,c) ∈ fanout(idx[n,t])] ∂out[h, n, i]·val[n, t]
 *   ∂val[n, t]   = Σ_{(i,c) ∈ fanout(idx[n,t])} Σ_h ∂out[h, n, i]·V[i, c, h]
 * The values' cotangent is what the gather form gives them through toDense: the dense codes'
 * cotangent read at the kept indices. Padded (−1) slots are in no fan-out, so their ∂V is 0.
 */
import type { Backend } from "../../tensor/backend.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import { customVjp } from "../../autodiff/grad.ts";
import { tensor } from "../../tensor/ops/create.ts";
import { contiguous } from "../../tensor/ops/shape.ts";
import type { ConnTable } from "./connections.ts";

/**
 * A table inverted. Its non-padded slots are numbered q = 0…nnz−1 in row-major order: slots[q] =
 * i·C + c and ids[q] = j; the virtual weights the scatter reads are one row per such slot, Vc [nnz,
 * H]. For upstream feature j, entries e in [start[j], start[j + 1]) name a downstream feature
 * down[e] and its slot number slot[e]. Ids ≥ start.length − 1 have no entries.
 */
export interface FanOut {
  start: Int32Array;
  down: Int32Array;
  slot: Int32Array;
  slots: Int32Array;
  ids: Int32Array;
  /** Downstream rows and slots per row of the table it came from. */
  rows: number;
  C: number;
}

/** Invert a table (counting sort by upstream id; −1 slots dropped, repeats kept). */
export function fanOut(t: ConnTable): FanOut {
  let top = -1, nnz = 0;
  for (const v of t.ids) if (v >= 0) nnz++, top = Math.max(top, v);
  const slots = new Int32Array(nnz), ids = new Int32Array(nnz);
  const start = new Int32Array(top + 2);
  for (let s = 0, q = 0; s < t.ids.length; s++) {
    if (t.ids[s] < 0) continue;
    slots[q] = s;
    ids[q++] = t.ids[s];
    start[t.ids[s] + 1]++;
  }
  for (let j = 0; j <= top; j++) start[j + 1] += start[j];
  const down = new Int32Array(nnz), slot = new Int32Array(nnz);
  const fill = start.slice(0, top + 1);
  for (let q = 0; q < nnz; q++) {
    const e = fill[ids[q]]++;
    down[e] = Math.floor(slots[q] / t.C);
    slot[e] = q;
  }
  return { start, down, slot, slots, ids, rows: t.rows, C: t.C };
}

/**
 * The COO entries that give each slot's virtual weights as one sddmm: entry q·H + h pairs row
 * i·H + h of the downstream directions [F_down·H, d] with row ids[q] of the upstream decoder.
 */
export function slotEntries(
  fan: FanOut,
  H: number,
  backend: Backend,
): { rows: Tensor; cols: Tensor } {
  const n = fan.slots.length;
  const rows = new Int32Array(n * H), cols = new Int32Array(n * H);
  for (let q = 0; q < n; q++) {
    const i = Math.floor(fan.slots[q] / fan.C);
    for (let h = 0; h < H; h++) {
      rows[q * H + h] = i * H + h;
      cols[q * H + h] = fan.ids[q];
    }
  }
  return {
    rows: tensor(rows, { dtype: "i32", backend }),
    cols: tensor(cols, { dtype: "i32", backend }),
  };
}

type Floats = Float32Array | Float64Array;

/** A tensor's elements on a host backend, without a copy when it is already contiguous. */
function host<T>(t: Tensor): T & { length: number } {
  const c = contiguous(t);
  const buf = c.view().buf as Floats | Int32Array;
  return buf.subarray(c.offset, c.offset + c.size) as unknown as T & { length: number };
}

/** Whether `scatterContribution` has kernels for these operands (host memory, f32/f64). */
export function scatterSupported(values: Tensor, V: Tensor): boolean {
  return values.backend.hostMemory && V.backend === values.backend &&
    (V.dtype === "f32" || V.dtype === "f64") && values.dtype === V.dtype;
}

function forwardLoop(
  val: Floats,
  idx: Int32Array,
  V: Floats,
  f: FanOut,
  out: Floats,
  N: number,
  k: number,
  H: number,
): void {
  const Fd = f.rows, plane = N * Fd, top = f.start.length - 1;
  for (let n = 0; n < N; n++) {
    const row = n * Fd;
    for (let t = n * k; t < n * k + k; t++) {
      const a = val[t], j = idx[t];
      if (a === 0 || j < 0 || j >= top) continue;
      for (let e = f.start[j]; e < f.start[j + 1]; e++) {
        const o = row + f.down[e], s = f.slot[e] * H;
        for (let h = 0; h < H; h++) out[h * plane + o] += a * V[s + h];
      }
    }
  }
}

function backwardLoop(
  val: Floats,
  idx: Int32Array,
  V: Floats,
  g: Floats,
  f: FanOut,
  dVal: Floats | null,
  dV: Floats | null,
  N: number,
  k: number,
  H: number,
): void {
  const Fd = f.rows, plane = N * Fd, top = f.start.length - 1;
  for (let n = 0; n < N; n++) {
    const row = n * Fd;
    for (let t = n * k; t < n * k + k; t++) {
      const a = val[t], j = idx[t];
      if (j < 0 || j >= top) continue;
      let acc = 0;
      for (let e = f.start[j]; e < f.start[j + 1]; e++) {
        const o = row + f.down[e], s = f.slot[e] * H;
        for (let h = 0; h < H; h++) {
          const gi = g[h * plane + o];
          acc += gi * V[s + h];
          if (dV) dV[s + h] += gi * a;
        }
      }
      if (dVal) dVal[t] = acc;
    }
  }
}

/**
 * values [N, k] (the codes, already divided by the LN scale), indices [N, k] i32, V [nnz, H] (one
 * row per non-padded slot, numbered as in FanOut) → [H, N, F_down]. Differentiable in values and V.
 * Host backends only (see scatterSupported).
 */
export function scatterContribution(
  values: Tensor,
  indices: Tensor,
  V: Tensor,
  fan: FanOut,
): Tensor {
  const [N, k] = values.shape;
  const H = V.shape[1];
  if (
    V.ndim !== 2 || V.shape[0] !== fan.slots.length || indices.shape[0] !== N ||
    indices.shape[1] !== k
  ) {
    throw new Error(
      `scatterContribution: values [${values.shape}], indices [${indices.shape}] and V [${V.shape}] ` +
        `do not fit a table with ${fan.slots.length} connections`,
    );
  }
  const dtype = V.dtype, backend = V.backend;
  const alloc = (n: number): Floats => dtype === "f64" ? new Float64Array(n) : new Float32Array(n);
  const idx = host<Int32Array>(indices);
  const op = customVjp(
    (vals: Tensor, Vt: Tensor) => {
      const val = host<Floats>(vals), Vh = host<Floats>(Vt);
      const out = alloc(H * N * fan.rows);
      forwardLoop(val, idx, Vh, fan, out, N, k, H);
      return [tensor(out, { dtype, shape: [H, N, fan.rows], backend }), { val, Vh }];
    },
    ({ val, Vh }, ct, needs) => {
      const dVal = needs[0] ? alloc(N * k) : null;
      const dV = needs[1] ? alloc(Vh.length) : null;
      if (dVal || dV) backwardLoop(val, idx, Vh, host<Floats>(ct), fan, dVal, dV, N, k, H);
      return [
        dVal && tensor(dVal, { dtype, shape: [N, k], backend }),
        dV && tensor(dV, { dtype, shape: V.shape, backend }),
      ];
    },
    "scatterContribution",
  );
  return op(values, V);
}
