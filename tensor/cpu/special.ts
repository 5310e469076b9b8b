/** Special functions JS lacks, accurate to ~1e-15 so f64 gradient checks of gelu(erf) hold. */

const TWO_OVER_SQRT_PI = 1.1283791670955126;

/** erf by the positive-term series exp(-x²)·Σ 2ⁿx^(2n+1)/(1·3·…·(2n+1)) (no cancellation) for
 * |x| < 3, and 1 − erfc by its continued fraction beyond. */
export function erf(x: number): number {
  if (x !== x) return x;
  const ax = Math.abs(x);
  if (ax < 3) {
    const x2 = ax * ax;
    let term = ax;
    let sum = ax;
    for (let n = 0; n < 200; n++) {
      term *= (2 * x2) / (2 * n + 3);
      sum += term;
      if (term < sum * 1e-17) break;
    }
    const r = TWO_OVER_SQRT_PI * Math.exp(-x2) * sum;
    return x < 0 ? -r : r;
  }
  if (ax > 6) return x < 0 ? -1 : 1;
  // erfc(x) = exp(-x²)/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + …))))) evaluated bottom-up.
  let f = ax;
  for (let n = 60; n >= 1; n--) f = ax + (n / 2) / f;
  const erfc = Math.exp(-ax * ax) / (1.7724538509055159 * f);
  return x < 0 ? erfc - 1 : 1 - erfc;
}
