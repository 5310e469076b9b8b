/**
 * The two 8-bit float formats safetensors stores (F8_E4M3 and F8_E5M2, as in PyTorch's
 * float8_e4m3fn / float8_e5m2), decoded exactly to f32 through 256-entry tables.
 *   E4M3FN: sign, 4 exponent bits (bias 7), 3 mantissa bits; no infinities, S.1111.111 is NaN.
 *   E5M2:   sign, 5 exponent bits (bias 15), 2 mantissa bits; IEEE-like infinities and NaNs.
 */

function table(
  expBits: number,
  manBits: number,
  bias: number,
  ieeeSpecials: boolean,
): Float32Array {
  const t = new Float32Array(256);
  const expMax = (1 << expBits) - 1, manMax = (1 << manBits) - 1;
  for (let b = 0; b < 256; b++) {
    const sign = b & 0x80 ? -1 : 1;
    const e = (b >> manBits) & expMax, m = b & manMax;
    let v: number;
    if (ieeeSpecials && e === expMax) v = m === 0 ? Infinity : NaN;
    else if (!ieeeSpecials && e === expMax && m === manMax) v = NaN;
    else if (e === 0) v = (m / (1 << manBits)) * 2 ** (1 - bias);
    else v = (1 + m / (1 << manBits)) * 2 ** (e - bias);
    t[b] = sign * v;
  }
  return t;
}

export const E4M3 = table(4, 3, 7, false);
export const E5M2 = table(5, 2, 15, true);

/** Bytes of F8_E4M3 or F8_E5M2 values as f32. */
export function decodeF8(bytes: Uint8Array, format: "F8_E4M3" | "F8_E5M2"): Float32Array {
  const t = format === "F8_E4M3" ? E4M3 : E5M2;
  const out = new Float32Array(bytes.length);
  for (let i = 0; i < bytes.length; i++) out[i] = t[bytes[i]];
  return out;
}
