/** Fused kernels of the optional contract: one Adam pass, unit rows and gradient projection. */
import type { AdamHyper, View } from "../backend.ts";
import { sizeOf } from "../shape.ts";
import { ENTRY_ARGS, type GBuf, GROUP_ID, type Runtime, WG } from "./runtime.ts";
import { bindings, convert, ld } from "./wgsl.ts";

const f32bits = (x: number) => new Uint32Array(new Float32Array([x]).buffer)[0];

export function adam(
  rt: Runtime,
  g: View,
  mu: View,
  nu: View,
  param: View | null,
  h: AdamHyper,
): [GBuf, GBuf, GBuf] {
  const n = sizeOf(g.shape), dt = g.dtype;
  const U = rt.alloc(n, dt), M2 = rt.alloc(n, dt), V2 = rt.alloc(n, dt);
  const p = param ?? g; // bound either way; its term is multiplied by decay = 0 when absent
  const code = `${bindings([dt, dt, dt, dt], [dt, dt, dt])}
@compute @workgroup_size(${WG})
fn main(${ENTRY_ARGS}) {
  let i = ${GROUP_ID} * ${WG}u + lid.x;
  if (i >= prm[0]) { return; }
  let b1 = bitcast<f32>(prm[1]); let b2 = bitcast<f32>(prm[2]); let eps = bitcast<f32>(prm[3]);
  let c2 = bitcast<f32>(prm[4]); let scale = bitcast<f32>(prm[5]); let decay = bitcast<f32>(prm[6]);
  let gi = ${ld(dt, "in0[prm[7] + i]")};
  let m = b1 * ${ld(dt, "in1[prm[8] + i]")} + (1.0 - b1) * gi;
  let v = b2 * ${ld(dt, "in2[prm[9] + i]")} + (1.0 - b2) * gi * gi;
  var pd = 0.0;
  if (prm[11] != 0u) { pd = decay * ${ld(dt, "in3[prm[10] + i]")}; }
  out1[i] = ${convert("m", dt, dt)};
  out2[i] = ${convert("v", dt, dt)};
  out0[i] = ${convert("(scale * m) / (sqrt(v / c2) + eps) - pd", dt, dt)};
}`;
  const meta = [
    n,
    f32bits(h.b1),
    f32bits(h.b2),
    f32bits(h.eps),
    f32bits(h.c2),
    f32bits(h.scale),
    f32bits(h.decay),
    g.offset,
    mu.offset,
    nu.offset,
    p.offset,
    param ? 1 : 0,
  ];
  rt.dispatch(
    code,
    [g.buf as GBuf, mu.buf as GBuf, nu.buf as GBuf, p.buf as GBuf, U, M2, V2],
    meta,
    Math.ceil(n / WG),
  );
  return [U, M2, V2];
}

/** project false: w / ‖w‖ per row; true: g − ((g·w)/‖w‖²)·w per row. One invocation per row. */
function rows(rt: Runtime, g: View | null, w: View): GBuf {
  const [R, C] = w.shape, dt = w.dtype;
  const out = rt.alloc(R * C, dt);
  const src = g ?? w;
  const code = `${bindings([dt, dt], [dt])}
@compute @workgroup_size(64)
fn main(${ENTRY_ARGS}) {
  let r = ${GROUP_ID} * 64u + lid.x;
  if (r >= prm[0]) { return; }
  let C = prm[1];
  let ob = r * C; let wb = prm[2] + ob; let gb = prm[3] + ob;
  var ww = 0.0; var gw = 0.0;
  for (var c = 0u; c < C; c++) { let wv = ${ld(dt, "in0[wb + c]")}; ww = ww + wv * wv; gw = gw + ${
    ld(dt, "in1[gb + c]")
  } * wv; }
  ${g ? "let s = gw / ww;" : "let s = 1.0 / sqrt(ww);"}
  for (var c = 0u; c < C; c++) { out0[ob + c] = ${
    convert(
      g
        ? `${ld(dt, "in1[gb + c]")} - s * ${ld(dt, "in0[wb + c]")}`
        : `${ld(dt, "in0[wb + c]")} * s`,
      dt,
      dt,
    )
  }; }
}`;
  rt.dispatch(
    code,
    [w.buf as GBuf, src.buf as GBuf, out],
    [R, C, w.offset, src.offset],
    Math.ceil(R / 64),
  );
  return out;
}

export const unitRows = (rt: Runtime, w: View): GBuf => rows(rt, null, w);
export const projectOutRows = (rt: Runtime, g: View, w: View): GBuf => rows(rt, g, w);
