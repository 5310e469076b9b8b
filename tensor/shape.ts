/** Shapes, strides, broadcasting and axis handling. Every error names the op and the shapes. */

export type Shape = readonly number[];

export class ShapeError extends Error {
  override name = "ShapeError";
}

export function fmt(s: Shape): string {
  return `[${s.join(", ")}]`;
}

export function sizeOf(s: Shape): number {
  let n = 1;
  for (const d of s) n *= d;
  return n;
}

export function contiguousStrides(s: Shape): number[] {
  const st = new Array<number>(s.length);
  let acc = 1;
  for (let i = s.length - 1; i >= 0; i--) {
    st[i] = acc;
    acc *= s[i];
  }
  return st;
}

export function shapesEqual(a: Shape, b: Shape): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

export function checkShape(op: string, s: readonly unknown[]): Shape {
  for (const d of s) {
    if (typeof d !== "number" || !Number.isInteger(d) || d < 0) {
      throw new ShapeError(
        `${op}: invalid shape ${JSON.stringify(s)}: dimensions must be non-negative integers`,
      );
    }
  }
  return s as Shape;
}

/** NumPy broadcasting of two shapes. */
export function broadcastShapes(op: string, a: Shape, b: Shape): number[] {
  const n = Math.max(a.length, b.length);
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    const da = a[a.length - n + i] ?? 1;
    const db = b[b.length - n + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) {
      throw new ShapeError(
        `${op}: shapes ${fmt(a)} and ${fmt(b)} cannot be broadcast together (axis ${
          i - n
        }: ${da} vs ${db})`,
      );
    }
    out[i] = da === 1 ? db : da;
  }
  return out;
}

export function normAxis(op: string, axis: number, rank: number, shape?: Shape): number {
  if (!Number.isInteger(axis) || axis < -rank || axis >= rank) {
    const what = shape ? `shape ${fmt(shape)}` : `rank ${rank}`;
    throw new ShapeError(`${op}: axis ${axis} is out of range for ${what}`);
  }
  return axis < 0 ? axis + rank : axis;
}

/** Normalised, sorted, unique axes; undefined means all axes. */
export function normAxes(
  op: string,
  axes: number | readonly number[] | undefined,
  shape: Shape,
): number[] {
  const rank = shape.length;
  if (axes === undefined) return [...Array(rank).keys()];
  const list = typeof axes === "number" ? [axes] : axes;
  const out = list.map((a) => normAxis(op, a, rank, shape));
  if (new Set(out).size !== out.length) {
    throw new ShapeError(`${op}: repeated axis in ${JSON.stringify(list)} for shape ${fmt(shape)}`);
  }
  return out.sort((x, y) => x - y);
}

/** Shape after reducing `axes`, keeping them as size 1 when keepdims. */
export function reducedShape(shape: Shape, axes: readonly number[], keepdims: boolean): number[] {
  const out: number[] = [];
  shape.forEach((d, i) => {
    if (!axes.includes(i)) out.push(d);
    else if (keepdims) out.push(1);
  });
  return out;
}
