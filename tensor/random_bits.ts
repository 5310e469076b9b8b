/**
 * Host-side core of JAX-style splittable random keys: Threefry-2x32 counter-based bits, key
 * splitting/folding, and uniform/normal floats.
 *
 * Every output must be bit-identical under V8 (Deno) and JavaScriptCore (Bun), so this file uses
 * only 32-bit integer ops and the IEEE basic operations (+ - * / and Math.sqrt), which are
 * correctly rounded everywhere. Math.log/exp/sin/cos are avoided: engines differ in their last
 * bits. The normal sampler is the inverse CDF (Wichura's AS 241) with our own `detLog`.
 *
 * Counter domains (second counter word), kept disjoint so a key's bit stream never reproduces a
 * key derived from it:
 *   randomBits  (i, 0)                       block i → words 2i, 2i+1
 *   splitKey    (i, 0x80000000)              child i
 *   foldIn      (lo(data), 0x40000000 + hi(data))
 */

/** A key: two uint32 words. */
export type KeyData = readonly [number, number];

const BITS_DOMAIN = 0;
const SPLIT_DOMAIN = 0x80000000 | 0;
const FOLD_DOMAIN = 0x40000000;
const KS_PARITY = 0x1bd11bda;
const TWO32 = 4294967296;
const TWO53 = 9007199254740992;

function isU32(v: unknown): v is number {
  return typeof v === "number" && v >>> 0 === v;
}

function checkKey(key: KeyData): void {
  if (!key || key.length !== 2 || !isU32(key[0]) || !isU32(key[1])) {
    throw new Error(`invalid random key ${String(key)}: expected two uint32 words`);
  }
}

function checkCount(n: number, what: string): void {
  if (!Number.isInteger(n) || n < 0 || n >= TWO32) {
    throw new Error(`${what}: count must be an integer in [0, 2^32), got ${n}`);
  }
}

function makeKey(a: number, b: number): KeyData {
  return Object.freeze([a >>> 0, b >>> 0]) as KeyData;
}

/**
 * Threefry-2x32-20 of counters (c0 + j, c1), j = 0, 1, …, writing `nWords` words (2 per block; an odd
 * count drops the last block's second word) into `out` from `off`. Fully unrolled and kept in int32
 * (|0) so V8/JSC stay on small-integer fast paths; the Uint32Array store reinterprets as uint32.
 */
function fillBits(
  k0: number,
  k1: number,
  c0: number,
  c1: number,
  out: Uint32Array,
  off: number,
  nWords: number,
): void {
  k0 |= 0;
  k1 |= 0;
  const ks2 = KS_PARITY ^ k0 ^ k1;
  // Key injections after each group of 4 rounds: (ks[s+1 mod 3], ks[s+2 mod 3] + s+1).
  const i1b = (ks2 + 1) | 0, i2b = (k0 + 2) | 0, i3b = (k1 + 3) | 0;
  const i4b = (ks2 + 4) | 0, i5b = (k0 + 5) | 0;
  const y1 = (c1 + k1) | 0;
  for (let w = 0; w < nWords; w += 2) {
    let x0 = (c0 + (w >>> 1) + k0) | 0;
    let x1 = y1;
    // rounds 1-4: rotations 13 15 26 6
    x0 = (x0 + x1) | 0;
    x1 = ((x1 << 13) | (x1 >>> 19)) ^ x0;
    x0 = (x0 + x1) | 0;
    x1 = ((x1 << 15) | (x1 >>> 17)) ^ x0;
    x0 = (x0 + x1) | 0;
    x1 = ((x1 << 26) | (x1 >>> 6)) ^ x0;
    x0 = (x0 + x1) | 0;
    x1 = ((x1 << 6) | (x1 >>> 26)) ^ x0;
    x0 = (x0 + k1) | 0;
    x1 = (x1 + i1b) | 0;
    // rounds 5-8: rotations 17 29 16 24
    x0 = (x0 + x1) | 0;
    x1 = ((x1 << 17) | (x1 >>> 15)) ^ x0;
    x0 = (x0 + x1) | 0;
    x1 = ((x1 << 29) | (x1 >>> 3)) ^ x0;
    x0 = (x0 + x1) | 0;
    x1 = ((x1 << 16) | (x1 >>> 16)) ^ x0;
    x0 = (x0 + x1) | 0;
    x1 = ((x1 << 24) | (x1 >>> 8)) ^ x0;
    x0 = (x0 + ks2) | 0;
    x1 = (x1 + i2b) | 0;
    // rounds 9-12
    x0 = (x0 + x1) | 0;
    x1 = ((x1 << 13) | (x1 >>> 19)) ^ x0;
    x0 = (x0 + x1) | 0;
    x1 = ((x1 << 15) | (x1 >>> 17)) ^ x0;
    x0 = (x0 + x1) | 0;
    x1 = ((x1 << 26) | (x1 >>> 6)) ^ x0;
    x0 = (x0 + x1) | 0;
    x1 = ((x1 << 6) | (x1 >>> 26)) ^ x0;
    x0 = (x0 + k0) | 0;
    x1 = (x1 + i3b) | 0;
    // rounds 13-16
    x0 = (x0 + x1) | 0;
    x1 = ((x1 << 17) | (x1 >>> 15)) ^ x0;
    x0 = (x0 + x1) | 0;
    x1 = ((x1 << 29) | (x1 >>> 3)) ^ x0;
    x0 = (x0 + x1) | 0;
    x1 = ((x1 << 16) | (x1 >>> 16)) ^ x0;
    x0 = (x0 + x1) | 0;
    x1 = ((x1 << 24) | (x1 >>> 8)) ^ x0;
    x0 = (x0 + k1) | 0;
    x1 = (x1 + i4b) | 0;
    // rounds 17-20
    x0 = (x0 + x1) | 0;
    x1 = ((x1 << 13) | (x1 >>> 19)) ^ x0;
    x0 = (x0 + x1) | 0;
    x1 = ((x1 << 15) | (x1 >>> 17)) ^ x0;
    x0 = (x0 + x1) | 0;
    x1 = ((x1 << 26) | (x1 >>> 6)) ^ x0;
    x0 = (x0 + x1) | 0;
    x1 = ((x1 << 6) | (x1 >>> 26)) ^ x0;
    x0 = (x0 + ks2) | 0;
    x1 = (x1 + i5b) | 0;
    out[off + w] = x0;
    if (w + 1 < nWords) out[off + w + 1] = x1;
  }
}

const pair = new Uint32Array(2);

/** Threefry-2x32 with 20 rounds (Salmon et al. 2011) of counter (x0, x1) under `key`. */
export function threefry2x32(key: KeyData, x0: number, x1: number): [number, number] {
  checkKey(key);
  if (!isU32(x0) || !isU32(x1)) throw new Error(`threefry2x32: counter (${x0}, ${x1}) not uint32`);
  fillBits(key[0], key[1], x0, x1, pair, 0, 2);
  return [pair[0], pair[1]];
}

/** Key from an integer seed in [0, 2^53]: hi word = floor(seed / 2^32), lo word = seed mod 2^32. */
export function keyFromSeed(seed: number): KeyData {
  if (!Number.isInteger(seed) || seed < 0 || seed > TWO53) {
    throw new Error(`keyFromSeed: seed must be an integer in [0, 2^53], got ${seed}`);
  }
  return makeKey(Math.floor(seed / TWO32), seed % TWO32);
}

/** `n` (default 2) independent child keys; child i = threefry(key, i, SPLIT_DOMAIN). */
export function splitKey(key: KeyData, n = 2): KeyData[] {
  checkKey(key);
  checkCount(n, "splitKey");
  const keys: KeyData[] = new Array(n);
  for (let i = 0; i < n; i++) {
    fillBits(key[0], key[1], i, SPLIT_DOMAIN, pair, 0, 2);
    keys[i] = makeKey(pair[0], pair[1]);
  }
  return keys;
}

/** Key derived from `key` and an integer `data` in [0, 2^53] (e.g. a step or layer index). */
export function foldIn(key: KeyData, data: number): KeyData {
  checkKey(key);
  if (!Number.isInteger(data) || data < 0 || data > TWO53) {
    throw new Error(`foldIn: data must be an integer in [0, 2^53], got ${data}`);
  }
  // hi(data) <= 2^21, so FOLD_DOMAIN + hi stays clear of the other two domains.
  fillBits(key[0], key[1], data % TWO32, FOLD_DOMAIN + Math.floor(data / TWO32), pair, 0, 2);
  return makeKey(pair[0], pair[1]);
}

/** `n` uint32 words; block i = threefry(key, i, 0) gives words 2i and 2i+1 (so prefixes agree). */
export function randomBits(key: KeyData, n: number): Uint32Array {
  checkKey(key);
  checkCount(n, "randomBits");
  const out = new Uint32Array(n);
  fillBits(key[0], key[1], 0, BITS_DOMAIN, out, 0, n);
  return out;
}

// Consumers stream bits through this scratch buffer in chunks (even length keeps blocks whole).
const CHUNK = 4096;
const scratch = new Uint32Array(CHUNK);

// ---- float bit helpers --------------------------------------------------------------------------

const f64Box = new Float64Array(1);
const f64Words = new Uint32Array(f64Box.buffer);
const LITTLE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
const HI = LITTLE ? 1 : 0;
const LO = 1 - HI;
const f32Box = new Float32Array(1);
const f32Word = new Uint32Array(f32Box.buffer);

/** Largest f64 strictly below finite x. */
function prevF64(x: number): number {
  if (x === 0) return -Number.MIN_VALUE;
  f64Box[0] = x;
  let hi = f64Words[HI], lo = f64Words[LO];
  if (x > 0) {
    if (lo === 0) hi = hi - 1;
    lo = (lo - 1) >>> 0;
  } else {
    lo = (lo + 1) >>> 0;
    if (lo === 0) hi = hi + 1;
  }
  f64Words[HI] = hi;
  f64Words[LO] = lo;
  return f64Box[0];
}

/** Largest f32 strictly below x (x already an f32 value, possibly ±Infinity). */
function prevF32(x: number): number {
  if (x === 0) return -1.401298464324817e-45;
  f32Box[0] = x;
  f32Word[0] = x > 0 ? f32Word[0] - 1 : f32Word[0] + 1;
  return f32Box[0];
}

function checkRange(lo: number, hi: number): void {
  if (!Number.isFinite(lo) || !Number.isFinite(hi) || !(lo < hi) || !Number.isFinite(hi - lo)) {
    throw new Error(`uniformFloats: need finite lo < hi with finite hi - lo, got [${lo}, ${hi})`);
  }
}

const TWO_M23 = 1.1920928955078125e-7; // 2^-23
const TWO_M32 = 2.3283064365386963e-10; // 2^-32
const TWO_M52 = 2.220446049250313e-16; // 2^-52

/**
 * `n` floats uniform in [lo, hi) (default [0, 1)). f32 uses the top 23 bits of one word; f64 uses
 * 52 bits from a block's two words. Results that round up onto `hi` are clamped just below it.
 */
export function uniformFloats(
  key: KeyData,
  n: number,
  dtype: "f32" | "f64",
  lo = 0,
  hi = 1,
): Float32Array | Float64Array {
  checkKey(key);
  checkCount(n, "uniformFloats");
  checkRange(lo, hi);
  const k0 = key[0], k1 = key[1];
  const span = hi - lo;
  const unit = lo === 0 && hi === 1; // no rounding can reach hi: skip the clamp
  if (dtype === "f32") {
    // Tightest f32 bounds inside [lo, hi).
    let loF = Math.fround(lo);
    if (loF < lo) loF = -prevF32(-loF);
    let hiF = Math.fround(hi);
    if (hiF >= hi) hiF = prevF32(hiF);
    if (!(loF <= hiF)) throw new Error(`uniformFloats: no f32 value in [${lo}, ${hi})`);
    const out = new Float32Array(n);
    for (let base = 0; base < n; base += CHUNK) {
      const m = Math.min(CHUNK, n - base);
      fillBits(k0, k1, base >>> 1, BITS_DOMAIN, scratch, 0, m);
      if (unit) {
        for (let j = 0; j < m; j++) out[base + j] = (scratch[j] >>> 9) * TWO_M23;
      } else {
        for (let j = 0; j < m; j++) {
          let r = Math.fround(lo + span * ((scratch[j] >>> 9) * TWO_M23));
          if (r > hiF) r = hiF;
          else if (r < loF) r = loF;
          out[base + j] = r;
        }
      }
    }
    return out;
  }
  if (dtype !== "f64") throw new Error(`uniformFloats: unsupported dtype ${dtype}`);
  const hiD = prevF64(hi);
  const out = new Float64Array(n);
  for (let base = 0; base < n; base += CHUNK >>> 1) {
    const m = Math.min(CHUNK >>> 1, n - base);
    fillBits(k0, k1, base, BITS_DOMAIN, scratch, 0, 2 * m);
    for (let j = 0; j < m; j++) {
      const u = ((scratch[2 * j] >>> 12) * TWO32 + scratch[2 * j + 1]) * TWO_M52;
      let r = unit ? u : lo + span * u;
      if (r > hiD) r = hiD;
      out[base + j] = r;
    }
  }
  return out;
}

// ---- deterministic log --------------------------------------------------------------------------

// ln2 split so k·LN2_HI is exact for |k| < 2^11 (LN2_HI has 32 trailing zero bits).
const LN2_HI = 6.93147180369123816490e-01; // 0x3FE62E42FEE00000
const LN2_LO = 1.90821492927058770002e-10; // ln2 - LN2_HI
// atanh series: log(1+f) = 2s + s·R(s²), s = f/(2+f), R(z) = Σ_{k≥1} 2z^k/(2k+1). |s| < 0.1716 so
// z < 0.0295 and ten terms leave a truncation below 0.2 ulp. Divisions are correctly rounded.
const R1 = 2 / 3, R2 = 2 / 5, R3 = 2 / 7, R4 = 2 / 9, R5 = 2 / 11;
const R6 = 2 / 13, R7 = 2 / 15, R8 = 2 / 17, R9 = 2 / 19, R10 = 2 / 21;

/**
 * Natural log from basic ops only, < 1 ulp typical error: x = m·2^k with m in ~[√½, √2), then
 * log(m) via the atanh series arranged as f − (f²/2 − s(f²/2 + R)) to keep the leading term exact.
 */
export function detLog(x: number): number {
  if (!(x > 0)) return x === 0 ? -Infinity : NaN; // also NaN → NaN, -0 → -Infinity
  if (x === Infinity) return x;
  let k = 0;
  if (x < 2.2250738585072014e-308) { // subnormal: scale by 2^54 into the normal range
    x *= 18014398509481984;
    k = -54;
  }
  f64Box[0] = x;
  const hx = f64Words[HI];
  k += (hx >>> 20) - 1023;
  // f = m - 1 rebuilt from the mantissa words: exact, and (unlike writing new exponent bits back
  // into the buffer and reloading) free of a store-forwarding stall that tripled the cost.
  let f = (hx & 0xfffff) * 9.5367431640625e-7 + f64Words[LO] * TWO_M52; // fraction of m in [1, 2)
  if (f >= 0x6a09e / 1048576) { // m ≥ ~√2 (= 1.6a09e6…p0): use m/2 so |f| stays small
    f = (f - 1) * 0.5;
    k += 1;
  }
  const s = f / (2 + f);
  const z = s * s;
  const R = z * (R1 + z * (R2 + z * (R3 + z * (R4 + z * (R5 + z * (R6 + z * (R7 + z * (R8 +
                                z * (R9 + z * R10)))))))));
  const hfsq = 0.5 * f * f;
  return k * LN2_HI - ((hfsq - (s * (hfsq + R) + k * LN2_LO)) - f);
}

// ---- normal quantile (Wichura 1988, AS 241 PPND16; ~1e-16 relative) ----------------------------

/** Φ⁻¹(p) for p in (0, 1) without checks; basic ops + detLog + sqrt only. */
function ppnd(p: number): number {
  const q = p - 0.5;
  if (q >= -0.425 && q <= 0.425) {
    const r = 0.180625 - q * q;
    return q * (((((((2.5090809287301226727e3 * r + 3.3430575583588128105e4) * r +
                          6.7265770927008700853e4) * r + 4.5921953931549871457e4) * r +
                  1.3731693765509461125e4) * r + 1.9715909503065514427e3) * r +
          1.3314166789178437745e2) * r + 3.3871328727963666080) /
      (((((((5.2264952788528545610e3 * r + 2.8729085735721942674e4) * r +
                            3.9307895800092710610e4) * r + 2.1213794301586595867e4) * r +
                    5.3941960214247511077e3) * r + 6.8718700749205790830e2) * r +
            4.2313330701600911252e1) * r + 1);
  }
  return ppndTail(p, q);
}

// Split out so the hot central branch of ppnd stays small enough to inline.
function ppndTail(p: number, q: number): number {
  let r = Math.sqrt(-detLog(q < 0 ? p : 1 - p));
  let v: number;
  if (r <= 5) {
    r -= 1.6;
    v = (((((((7.74545014278341407640e-4 * r + 2.27238449892691845833e-2) * r +
                          2.41780725177450611770e-1) * r + 1.27045825245236838258) * r +
                  3.64784832476320460504) * r + 5.76949722146069140550) * r +
          4.63033784615654529590) * r + 1.42343711074968357734) /
      (((((((1.05075007164441684324e-9 * r + 5.47593808499534494600e-4) * r +
                            1.51986665636164571966e-2) * r + 1.48103976427480074590e-1) * r +
                    6.89767334985100004550e-1) * r + 1.67638483018380384940) * r +
            2.05319162663775882187) * r + 1);
  } else {
    r -= 5;
    v = (((((((2.01033439929228813265e-7 * r + 2.71155556874348757815e-5) * r +
                          1.24266094738807843860e-3) * r + 2.65321895265761230930e-2) * r +
                  2.96560571828504891230e-1) * r + 1.78482653991729133580) * r +
          5.46378491116411436990) * r + 6.65790464350110377720) /
      (((((((2.04426310338993978564e-15 * r + 1.42151175831644588870e-7) * r +
                            1.84631831751005468180e-5) * r + 7.86869131145613259100e-4) * r +
                    1.48753612908506148525e-2) * r + 1.36929880922735805310e-1) * r +
            5.99832206555887937690e-1) * r + 1);
  }
  return q < 0 ? -v : v;
}

/** Standard normal quantile Φ⁻¹(p), deterministic across engines; 0 → -∞, 1 → +∞, else NaN outside. */
export function normalQuantile(p: number): number {
  if (p > 0 && p < 1) return ppnd(p);
  if (p === 0) return -Infinity;
  if (p === 1) return Infinity;
  return NaN;
}

/**
 * `n` standard normal floats by inversion: u = (bits + ½)·2^-b lies strictly inside (0, 1), so the
 * result is always finite (|z| ≤ 6.3 for f32 from one 32-bit word, ≤ 8.3 for f64 from 52 bits of a
 * block). Symmetric: u and 1-u give ±z exactly, since 1-u is exact.
 */
export function normalFloats(
  key: KeyData,
  n: number,
  dtype: "f32" | "f64",
): Float32Array | Float64Array {
  checkKey(key);
  checkCount(n, "normalFloats");
  const k0 = key[0], k1 = key[1];
  if (dtype === "f32") {
    const out = new Float32Array(n);
    for (let base = 0; base < n; base += CHUNK) {
      const m = Math.min(CHUNK, n - base);
      fillBits(k0, k1, base >>> 1, BITS_DOMAIN, scratch, 0, m);
      for (let j = 0; j < m; j++) out[base + j] = ppnd((scratch[j] + 0.5) * TWO_M32);
    }
    return out;
  }
  if (dtype !== "f64") throw new Error(`normalFloats: unsupported dtype ${dtype}`);
  const out = new Float64Array(n);
  for (let base = 0; base < n; base += CHUNK >>> 1) {
    const m = Math.min(CHUNK >>> 1, n - base);
    fillBits(k0, k1, base, BITS_DOMAIN, scratch, 0, 2 * m);
    for (let j = 0; j < m; j++) {
      out[base + j] = ppnd(((scratch[2 * j] >>> 12) * TWO32 + scratch[2 * j + 1] + 0.5) * TWO_M52);
    }
  }
  return out;
}
