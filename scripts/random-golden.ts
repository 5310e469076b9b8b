/**
 * Golden values for tensor/random_bits.ts. The fixture tests/fixtures/random-golden.json is this
 * script's output under Deno; tests/random_bits.test.ts recomputes it under each runtime and demands
 * exact equality, which proves V8 and JavaScriptCore produce identical bits and floats.
 *
 *   deno run scripts/random-golden.ts > tests/fixtures/random-golden.json
 */
import {
  detLog,
  foldIn,
  type KeyData,
  keyFromSeed,
  normalFloats,
  normalQuantile,
  randomBits,
  splitKey,
  uniformFloats,
} from "../tensor/random_bits.ts";

/** FNV-1a over the little-endian bytes of a typed array: pins whole streams in one short string. */
function digest(a: Float32Array | Float64Array | Uint32Array): string {
  const v = new DataView(a.buffer, a.byteOffset, a.byteLength);
  let h = 0x811c9dc5;
  for (let i = 0; i < a.byteLength; i++) h = Math.imul(h ^ v.getUint8(i), 0x01000193);
  return (h >>> 0).toString(16).padStart(8, "0");
}

const first8 = (a: ArrayLike<number>) => Array.from(a).slice(0, 8);

function streams(key: KeyData) {
  return {
    key: [...key],
    randomBits: first8(randomBits(key, 8)),
    uniformF32: first8(uniformFloats(key, 8, "f32")),
    uniformF64: first8(uniformFloats(key, 8, "f64")),
    uniformF32Range: first8(uniformFloats(key, 8, "f32", -2.5, 7)),
    uniformF64Range: first8(uniformFloats(key, 8, "f64", -2.5, 7)),
    normalF32: first8(normalFloats(key, 8, "f32")),
    normalF64: first8(normalFloats(key, 8, "f64")),
  };
}

export function buildGolden(): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const seed of [0, 42]) {
    const key = keyFromSeed(seed);
    const children = splitKey(key);
    out[`seed${seed}`] = {
      ...streams(key),
      split: children.map((k) => [...k]),
      split3: splitKey(key, 3).map((k) => [...k]),
      foldIn7: [...foldIn(key, 7)],
      child0: streams(children[0]),
      child1: streams(children[1]),
      // Whole-stream digests reach the tail branch of the sampler (detLog + sqrt) many times.
      digests: {
        randomBits1e5: digest(randomBits(key, 1e5)),
        uniformF32Range1e5: digest(uniformFloats(key, 1e5, "f32", -1, 3) as Float32Array),
        uniformF64Range1e5: digest(uniformFloats(key, 1e5, "f64", -1, 3) as Float64Array),
        normalF32_1e5: digest(normalFloats(key, 1e5, "f32")),
        normalF64_1e5: digest(normalFloats(key, 1e5, "f64")),
      },
    };
  }
  // detLog / normalQuantile on inputs spread over every binade, from raw bits.
  const bits = randomBits(keyFromSeed(7), 2e4);
  const xs = new Float64Array(1e4);
  const words = new Uint32Array(xs.buffer);
  for (let i = 0; i < 1e4; i++) {
    words[2 * i] = bits[2 * i];
    words[2 * i + 1] = bits[2 * i + 1] & 0x7fefffff; // positive and finite
  }
  const logs = xs.map(detLog);
  const quantiles = uniformFloats(keyFromSeed(8), 1e4, "f64").map((p) => normalQuantile(p));
  out.detLog = {
    samples: [0.5, 2, 10, 1e-300, 5e-324, 1.7976931348623157e308].map(detLog),
    digest1e4: digest(logs),
  };
  out.normalQuantile = {
    samples: [1e-300, 1e-10, 0.01, 0.3, 0.5, 0.9, 0.999].map(normalQuantile),
    digest1e4: digest(quantiles),
  };
  return out;
}

if (import.meta.main) console.log(JSON.stringify(buildGolden(), null, 2));
