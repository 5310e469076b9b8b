/**
 * The inference threshold θ of the BatchTopK family: one number, or one per input for crosscoders
 * with the "decoupled" code norm (each input keeps its own batch top-k, so each has its own θ, as
 * crosscoder_learning's BatchTopKCrossCoder does). −1 means "not yet set" (dictionary_learning).
 */
export type Threshold = number | number[];

/**
 * The starting θ: `start` (−1 or 0), once or, for `inputs` inputs (arch/registry.ts's
 * thresholdInputs), per input.
 */
export function initialThreshold(inputs: number | null, start: number): Threshold {
  return inputs !== null ? Array.from({ length: inputs }, () => start) : start;
}

/** A θ every part of which has been set (≥ 0): the one inference may use. */
export function isSet(θ: Threshold | undefined): θ is Threshold {
  if (θ === undefined) return false;
  return typeof θ === "number" ? θ >= 0 : θ.length > 0 && θ.every((v) => v >= 0);
}

/** θ with `f` applied to each part. */
export function mapThreshold(θ: Threshold, f: (v: number, i: number) => number): Threshold {
  return typeof θ === "number" ? f(θ, 0) : θ.map(f);
}

/** θ as one value per input (a single θ repeated), for kernels that take one per input. */
export function perInput(θ: Threshold, inputs: number): number[] {
  return typeof θ === "number" ? Array.from({ length: inputs }, () => θ) : θ;
}

/**
 * One EMA step of θ towards this batch's smallest kept positive values `ms` (one per part of θ).
 * A part whose value is not finite (nothing positive was kept) is left as it is.
 */
export function updateThreshold(
  θ: Threshold,
  ms: ArrayLike<number>,
  rule: (old: number, m: number) => number,
): Threshold {
  return mapThreshold(θ, (old, i) => (Number.isFinite(ms[i]) ? rule(old, ms[i]) : old));
}

/**
 * A θ read from a file: a finite number, or (for `inputs` inputs, see initialThreshold) an array
 * of one finite number per input. Anything else is an error naming `where`.
 */
export function parseThreshold(v: unknown, inputs: number | null, where: string): Threshold {
  const finite = (x: unknown) => typeof x === "number" && Number.isFinite(x);
  if (inputs !== null) {
    const L = inputs;
    if (Array.isArray(v) && v.length === L && v.every(finite)) return v as number[];
    if (finite(v)) return perInput(v as number, L);
    throw new RangeError(
      `${where}: threshold must be ${L} finite numbers (one per input of a decoupled crosscoder), got ${
        JSON.stringify(v)
      }`,
    );
  }
  if (finite(v)) return v as number;
  throw new RangeError(`${where}: threshold must be a finite number, got ${JSON.stringify(v)}`);
}

/** The single θ of an architecture that has one; a per-input θ there is an error naming `op`. */
export function single(θ: Threshold, op: string): number {
  if (typeof θ === "number") return θ;
  throw new TypeError(
    `${op}: expected one threshold, got one per input (${
      JSON.stringify(θ)
    }); per-input thresholds belong to decoupled crosscoders`,
  );
}
