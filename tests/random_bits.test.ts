import { test as t } from "./harness.ts";

import {
  detLog,
  foldIn,
  type KeyData,
  keyFromSeed,
  normalFloats,
  normalQuantile,
  randomBits,
  splitKey,
  threefry2x32,
  uniformFloats,
} from "../tensor/random_bits.ts";
import { buildGolden } from "../scripts/random-golden.ts";

function assert(cond: unknown, msg: string): asserts cond {
  if (!cond) throw new Error(msg);
}

function throwsMatching(fn: () => unknown, needle: string): void {
  try {
    fn();
  } catch (e) {
    assert(String((e as Error).message).includes(needle), `error "${e}" should mention ${needle}`);
    return;
  }
  throw new Error(`expected a throw mentioning ${needle}`);
}

const hex = (w: readonly number[]) =>
  w.map((v) => "0x" + v.toString(16).padStart(8, "0")).join(",");

t("threefry2x32 matches the Random123 known-answer vectors", () => {
  const kat: [KeyData, number, number, number, number][] = [
    [[0, 0], 0, 0, 0x6b200159, 0x99ba4efe],
    [[0xffffffff, 0xffffffff], 0xffffffff, 0xffffffff, 0x1cb996fc, 0xbb002be7],
    [[0x13198a2e, 0x03707344], 0x243f6a88, 0x85a308d3, 0xc4923a9c, 0x483df7a0],
  ];
  for (const [key, c0, c1, e0, e1] of kat) {
    const got = threefry2x32(key, c0, c1);
    assert(
      got[0] === e0 && got[1] === e1,
      `key ${hex(key)}: got ${hex(got)}, want ${hex([e0, e1])}`,
    );
  }
});

t("randomBits: block i = threefry(key, i, 0), prefix-stable, odd lengths", () => {
  const key = keyFromSeed(123);
  const bits = randomBits(key, 9);
  for (let i = 0; i < 4; i++) {
    const [a, b] = threefry2x32(key, i, 0);
    assert(bits[2 * i] === a && bits[2 * i + 1] === b, `block ${i}`);
  }
  assert(bits[8] === threefry2x32(key, 4, 0)[0], "odd tail word");
  const long = randomBits(key, 10001); // spans several internal chunks
  for (let i = 0; i < 9; i++) assert(long[i] === bits[i], `prefix ${i}`);
  assert(randomBits(key, 0).length === 0, "empty");
});

t("keyFromSeed: hi/lo words and validation", () => {
  assert(hex(keyFromSeed(0)) === hex([0, 0]), "seed 0");
  assert(hex(keyFromSeed(42)) === hex([0, 42]), "seed 42");
  assert(hex(keyFromSeed(2 ** 32 + 5)) === hex([1, 5]), "seed 2^32+5");
  assert(hex(keyFromSeed(2 ** 53)) === hex([2 ** 21, 0]), "seed 2^53");
  throwsMatching(() => keyFromSeed(-1), "-1");
  throwsMatching(() => keyFromSeed(1.5), "1.5");
  throwsMatching(() => keyFromSeed(NaN), "NaN");
  throwsMatching(() => keyFromSeed(2 ** 53 + 2), "9007199254740994");
  assert(Object.isFrozen(keyFromSeed(3)), "keys are frozen");
});

t("splitKey / foldIn: deterministic, distinct, independent of the bit stream", () => {
  const key = keyFromSeed(0);
  const a = splitKey(key), b = splitKey(key);
  assert(a.length === 2 && hex(a[0]) === hex(b[0]) && hex(a[1]) === hex(b[1]), "deterministic");
  const many = splitKey(key, 1000);
  const seen = new Set([hex(key)]);
  for (const k of many) seen.add(hex(k));
  for (let i = 0; i < 100; i++) seen.add(hex(foldIn(key, i)));
  seen.add(hex(foldIn(key, 2 ** 53)));
  for (const k of splitKey(many[0], 50)) seen.add(hex(k));
  assert(seen.size === 1 + 1000 + 101 + 50, `collision among derived keys (${seen.size})`);
  // No derived key appears as a block of the parent's bit stream.
  const bits = randomBits(key, 20000);
  const blocks = new Set<string>();
  for (let i = 0; i < bits.length; i += 2) blocks.add(hex([bits[i], bits[i + 1]]));
  for (const k of many) assert(!blocks.has(hex(k)), "split key found in bit stream");
  assert(hex(foldIn(key, 5)) === hex(foldIn(key, 5)), "foldIn deterministic");
  assert(hex(foldIn(keyFromSeed(1), 5)) !== hex(foldIn(key, 5)), "foldIn depends on key");
  assert(splitKey(key, 0).length === 0, "split 0");
  throwsMatching(() => foldIn(key, -3), "-3");
  throwsMatching(() => splitKey([1, 2.5] as unknown as KeyData), "invalid random key");
});

// ---- detLog ---------------------------------------------------------------------------------------

const box = new Float64Array(1);
const ord = new BigInt64Array(box.buffer);
/** Position of x on the ordered line of doubles, so |pos(a) - pos(b)| is the ulp distance. */
function pos(x: number): bigint {
  box[0] = x;
  const b = ord[0];
  return b < 0n ? -(b & 0x7fffffffffffffffn) : b;
}
function ulps(a: number, b: number): number {
  const d = pos(a) - pos(b);
  return Number(d < 0n ? -d : d);
}

t("detLog within 4 ulp of Math.log: subnormals, powers of 2, near 1, every binade", () => {
  const xs: number[] = [
    Number.MIN_VALUE,
    2 * Number.MIN_VALUE,
    3e-320,
    1e-310,
    2.225073858507201e-308,
  ];
  xs.push(2.2250738585072014e-308, Number.MAX_VALUE, Math.SQRT2, Math.SQRT1_2, Math.E, 10, 0.1);
  for (let e = -1074; e <= 1023; e++) xs.push(2 ** e);
  for (let k = 1; k <= 2000; k++) {
    xs.push(1 + k * 2 ** -52, 1 - k * 2 ** -53, 1 + k * 1e-9, 1 - k * 1e-9);
  }
  // Both sides of the √2 mantissa split used for range reduction.
  for (let k = -50; k <= 50; k++) {
    xs.push(Math.SQRT2 + k * 2 ** -52, (Math.SQRT2 + k * 2 ** -52) * 2 ** 40);
  }
  // Random doubles over all binades, from raw bits, plus random values in (0, 4).
  const bits = randomBits(keyFromSeed(99), 4e5);
  const f = new Float64Array(1), w = new Uint32Array(f.buffer);
  for (let i = 0; i < 2e5; i += 2) {
    w[0] = bits[2 * i];
    w[1] = bits[2 * i + 1] & 0x7fefffff;
    xs.push(f[0]);
  }
  for (const u of uniformFloats(keyFromSeed(98), 1e5, "f64", 0, 4)) if (u > 0) xs.push(u);
  let worst = 0, worstX = 0;
  for (const x of xs) {
    const d = ulps(detLog(x), Math.log(x));
    if (d > worst) (worst = d), (worstX = x);
  }
  assert(worst <= 4, `detLog off by ${worst} ulp at x=${worstX}`);
  assert(
    detLog(1) === 0 && Object.is(detLog(0), -Infinity) && Object.is(detLog(-0), -Infinity),
    "0/1",
  );
  assert(
    detLog(Infinity) === Infinity && Number.isNaN(detLog(-1)) && Number.isNaN(detLog(NaN)),
    "specials",
  );
});

// ---- distributions -------------------------------------------------------------------------------

function moments(a: ArrayLike<number>): { mean: number; variance: number } {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i];
  const mean = s / a.length;
  let v = 0;
  for (let i = 0; i < a.length; i++) v += (a[i] - mean) ** 2;
  return { mean, variance: v / (a.length - 1) };
}

/** Φ(x) to ~1e-15 relative: positive-term series Φ = ½ + φ(x)·Σ x^(2n+1)/(2n+1)!! for |x| < 1.5,
 * and the Mills-ratio continued fraction (converged to 1 ulp by 300 terms there) for the tails. Math.exp is fine here: the test needs accuracy, not bits. */
function normalCdf(x: number): number {
  const ax = Math.abs(x);
  const phi = Math.exp(-0.5 * ax * ax) / Math.sqrt(2 * Math.PI);
  let tail: number;
  if (ax < 1.5) {
    let term = ax, sum = ax;
    for (let n = 1; term > sum * 1e-17; n++) sum += term *= (ax * ax) / (2 * n + 1);
    tail = 0.5 - phi * sum;
  } else {
    let cf = ax;
    for (let n = 300; n >= 1; n--) cf = ax + n / cf;
    tail = phi / cf;
  }
  return x < 0 ? tail : 1 - tail;
}

/** Kolmogorov–Smirnov D of a sample against cdf. */
function ksStatistic(a: ArrayLike<number>, cdf: (x: number) => number): number {
  const s = Float64Array.from(a).sort();
  const n = s.length;
  let d = 0;
  for (let i = 0; i < n; i++) {
    const F = cdf(s[i]);
    d = Math.max(d, (i + 1) / n - F, F - i / n);
  }
  return d;
}

const N = 1e5;
// Asymptotic KS critical value at α = 1e-3: sqrt(-ln(α/2)/2)/sqrt(n) ≈ 1.9495/sqrt(n).
const KS_CRIT = Math.sqrt(-Math.log(1e-3 / 2) / 2) / Math.sqrt(N);

t("uniformFloats: range, mean 1/2, variance 1/12, KS", () => {
  for (const dtype of ["f32", "f64"] as const) {
    const u = uniformFloats(keyFromSeed(1), N, dtype);
    assert(u instanceof (dtype === "f32" ? Float32Array : Float64Array), "array type");
    for (const v of u) assert(v >= 0 && v < 1, `${dtype} out of range: ${v}`);
    const { mean, variance } = moments(u);
    // Standard errors: sd/sqrt(n) for the mean, sqrt((1/80 - 1/144)/n) for the variance.
    assert(Math.abs(mean - 0.5) < 6 * Math.sqrt(1 / 12 / N), `${dtype} mean ${mean}`);
    assert(
      Math.abs(variance - 1 / 12) < 6 * Math.sqrt((1 / 80 - 1 / 144) / N),
      `${dtype} var ${variance}`,
    );
    const d = ksStatistic(u, (x) => Math.min(1, Math.max(0, x)));
    assert(d < KS_CRIT, `${dtype} KS ${d} >= ${KS_CRIT}`);
  }
  // A shifted range keeps the same underlying draws.
  const a = uniformFloats(keyFromSeed(1), 100, "f64"),
    b = uniformFloats(keyFromSeed(1), 100, "f64", 2, 4);
  for (let i = 0; i < 100; i++) assert(b[i] === 2 + 2 * a[i], "affine map of the unit draws");
});

t("uniformFloats never returns hi, even where lo + span·u rounds up to it", () => {
  // ulp(1e15) = 0.125, so most u > 15/16 would round onto hi without the clamp.
  const lo = 1e15, hi = 1e15 + 1;
  let top = 0;
  for (const v of uniformFloats(keyFromSeed(2), 1e4, "f64", lo, hi)) {
    assert(v >= lo && v < hi, `f64 ${v} outside [${lo}, ${hi})`);
    if (v === hi - 0.125) top++;
  }
  assert(top > 0, "clamp target reached");
  for (const [l, h] of [[1, 1 + 2 ** -20], [0, 0.1], [-1e-3, 1e-3], [16777216, 16777220]]) {
    for (const v of uniformFloats(keyFromSeed(3), 1e4, "f32", l, h)) {
      assert(v >= l && v < h, `f32 ${v} outside [${l}, ${h})`);
    }
  }
  throwsMatching(() => uniformFloats(keyFromSeed(0), 1, "f64", 1, 1), "[1, 1)");
  throwsMatching(() => uniformFloats(keyFromSeed(0), 1, "f64", 0, Infinity), "Infinity");
  throwsMatching(() => uniformFloats(keyFromSeed(0), 1, "f32", 1 + 1e-12, 1 + 2e-12), "no f32");
  assert(
    uniformFloats(keyFromSeed(0), 3, "f32", 1, 1 + 1e-12).every((v) => v === 1),
    "only f32 in range",
  );
});

t("normalQuantile (AS 241) inverts Φ to ~1e-14, exactly antisymmetric", () => {
  const ps: number[] = [1e-300, 1e-100, 1e-20, 1e-12, 1.3e-11, 1e-6, 0.02, 0.074, 0.075, 0.076];
  for (let i = 1; i < 1000; i++) ps.push(i / 2000);
  for (const p of ps) {
    const z = normalQuantile(p);
    const back = normalCdf(z);
    // An error δ in z moves Φ(z) by a relative ≈ |z|·δ, so allow for the z² growth in the far tail.
    assert(Math.abs(back - p) <= 1e-14 * p * Math.max(1, z * z), `Φ(Q(${p})) = ${back}`);
  }
  // Exact antisymmetry where 1 - p is exact (multiples of 2^-53, as the sampler's u always is).
  for (let k = 1; k <= 53; k++) {
    for (const p of [2 ** -k, 3 * 2 ** -(k + 1), (2 ** 20 - 7) * 2 ** -(20 + k)]) {
      if (1 - (1 - p) !== p) continue; // 1 - p rounded
      assert(normalQuantile(1 - p) === -normalQuantile(p), `symmetry at ${p}`);
    }
  }
  assert(normalQuantile(0.5) === 0, "median");
  assert(normalQuantile(0) === -Infinity && normalQuantile(1) === Infinity, "ends");
  assert(Number.isNaN(normalQuantile(-0.1)) && Number.isNaN(normalQuantile(NaN)), "outside");
});

t("normalFloats: finite, mean 0, variance 1, KS below the 1e-3 critical value", () => {
  for (const dtype of ["f32", "f64"] as const) {
    const z = normalFloats(keyFromSeed(5), N, dtype);
    assert(z instanceof (dtype === "f32" ? Float32Array : Float64Array), "array type");
    for (const v of z) assert(Number.isFinite(v), `${dtype} non-finite ${v}`);
    const { mean, variance } = moments(z);
    assert(Math.abs(mean) < 6 / Math.sqrt(N), `${dtype} mean ${mean}`);
    assert(Math.abs(variance - 1) < 6 * Math.sqrt(2 / N), `${dtype} var ${variance}`);
    const d = ksStatistic(z, normalCdf);
    assert(d < KS_CRIT, `${dtype} KS ${d} >= ${KS_CRIT}`);
  }
  // Extreme bits stay finite: u = (bits + ½)·2^-b never reaches 0 or 1.
  assert(
    Number.isFinite(normalQuantile(0.5 * 2 ** -32)) &&
      Number.isFinite(normalQuantile(0.5 * 2 ** -52)),
    "ends",
  );
});

t("golden values: identical under Deno and Bun", async () => {
  const { readFile } = await import("node:fs/promises");
  const text = await readFile(new URL("./fixtures/random-golden.json", import.meta.url), "utf8");
  const want = JSON.parse(text);
  const got = JSON.parse(JSON.stringify(buildGolden()));
  const mismatch = firstMismatch(want, got, "");
  assert(mismatch === null, `golden mismatch at ${mismatch}`);
});

function firstMismatch(a: unknown, b: unknown, path: string): string | null {
  if (typeof a === "number" || typeof b === "number") {
    return Object.is(a, b) ? null : `${path}: want ${a}, got ${b}`;
  }
  if (a === null || b === null || typeof a !== "object" || typeof b !== "object") {
    return a === b ? null : `${path}: want ${JSON.stringify(a)}, got ${JSON.stringify(b)}`;
  }
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  for (const k of keys) {
    const m = firstMismatch((a as any)[k], (b as any)[k], `${path}.${k}`);
    if (m) return m;
  }
  return null;
}
