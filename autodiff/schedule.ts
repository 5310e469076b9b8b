/** Learning-rate schedules: pure functions from the step count (0-based) to a value. */

export type Schedule = (step: number) => number;

export const constantSchedule = (value: number): Schedule => () => value;

/** Linear from `from` to `to` over `steps` steps starting at `start`, then held at `to`. */
export function linearSchedule(from: number, to: number, steps: number, start = 0): Schedule {
  return (t) => {
    if (t <= start) return from;
    if (t >= start + steps) return to;
    return from + ((to - from) * (t - start)) / steps;
  };
}

/** Cosine from `init` to `init·alpha` over `steps`, then held. */
export function cosineDecaySchedule(init: number, steps: number, alpha = 0): Schedule {
  return (t) => {
    const p = Math.min(Math.max(t, 0), steps) / steps;
    return init * (alpha + (1 - alpha) * 0.5 * (1 + Math.cos(Math.PI * p)));
  };
}

/**
 * Linear warmup from 0 to `peak` over `warmupSteps`, constant, then (if `decayStart` is given)
 * linear decay to 0 at `totalSteps`: dictionary_learning's get_lr_schedule shape.
 */
export function warmupDecaySchedule(
  o: { peak: number; warmupSteps: number; totalSteps: number; decayStart?: number },
): Schedule {
  const { peak, warmupSteps, totalSteps, decayStart } = o;
  if (decayStart !== undefined && !(decayStart >= warmupSteps && decayStart < totalSteps)) {
    throw new RangeError(
      `warmupDecaySchedule: need warmupSteps <= decayStart < totalSteps, got ${warmupSteps}, ${decayStart}, ${totalSteps}`,
    );
  }
  return (t) => {
    if (t < warmupSteps) return (peak * t) / warmupSteps;
    if (decayStart !== undefined && t >= decayStart) {
      return (peak * Math.max(totalSteps - t, 0)) / (totalSteps - decayStart);
    }
    return peak;
  };
}

/** Linear warmup to `peak`, then cosine decay to `end` at `totalSteps`. */
export function warmupCosineSchedule(
  o: { peak: number; warmupSteps: number; totalSteps: number; end?: number },
): Schedule {
  const cos = cosineDecaySchedule(o.peak, o.totalSteps - o.warmupSteps, (o.end ?? 0) / o.peak);
  return (t) => (t < o.warmupSteps ? (o.peak * t) / o.warmupSteps : cos(t - o.warmupSteps));
}
