/** Loops of the CPU backend's fused kernels; self-contained so perType can compile per-type copies. */
type F = Float32Array | Float64Array;

export function unitRowsLoop(W: F, out: F, R: number, C: number): void {
  for (let r = 0, o = 0; r < R; r++, o += C) {
    let s = 0;
    for (let c = 0; c < C; c++) s += W[o + c] * W[o + c];
    const inv = 1 / Math.sqrt(s);
    for (let c = 0; c < C; c++) out[o + c] = W[o + c] * inv;
  }
}

/** out = g − ((g·w)/‖w‖²)·w per row, i.e. g minus its component along ŵ. */
export function projectOutRowsLoop(G: F, W: F, out: F, R: number, C: number): void {
  for (let r = 0, o = 0; r < R; r++, o += C) {
    let ww = 0, gw = 0;
    for (let c = 0; c < C; c++) {
      ww += W[o + c] * W[o + c];
      gw += G[o + c] * W[o + c];
    }
    const s = gw / ww;
    for (let c = 0; c < C; c++) out[o + c] = G[o + c] - s * W[o + c];
  }
}

export function adamLoop(
  G: F,
  M: F,
  V: F,
  P: F | null,
  U: F,
  M2: F,
  V2: F,
  b1: number,
  b2: number,
  eps: number,
  c2: number,
  scale: number,
  decay: number,
): void {
  for (let i = 0; i < G.length; i++) {
    const gi = G[i];
    const m = b1 * M[i] + (1 - b1) * gi;
    const v = b2 * V[i] + (1 - b2) * gi * gi;
    M2[i] = m;
    V2[i] = v;
    U[i] = (scale * m) / (Math.sqrt(v / c2) + eps) - (P ? decay * P[i] : 0);
  }
}
