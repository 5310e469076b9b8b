/** The geometric median of a batch of points by Weiszfeld's iterations (b_dec initialisation). */
import type { Tensor } from "../../tensor/tensor.ts";
import { add, div, maximum, mul, sqrt, square, sub } from "../../tensor/ops/elementwise.ts";
import { mean, sum } from "../../tensor/ops/reduce.ts";
import { dispose, tidy } from "../../tensor/scope.ts";
import { reshape } from "../../tensor/ops/shape.ts";

/** argmin_y Σ‖x_i − y‖ for x [N, d]; stops after `maxIter` or when y moves less than tol·(1 + ‖y‖). */
export async function geometricMedian(x: Tensor, maxIter = 100, tol = 1e-5): Promise<Tensor> {
  let y = tidy(() => mean(x, 0));
  for (let i = 0; i < maxIter; i++) {
    const [next, moved, size] = tidy(() => {
      const dist = sqrt(sum(square(sub(x, y)), -1));
      const w = div(1, maximum(dist, 1e-8));
      const yn = div(sum(mul(x, reshape(w, [-1, 1])), 0), sum(w));
      return [yn, sqrt(sum(square(sub(yn, y)))), sqrt(sum(square(yn)))];
    });
    const [m, s] = [await moved.item(), await size.item()];
    dispose([y, moved, size]);
    y = next;
    if (m <= tol * (1 + s)) break;
  }
  const out = tidy(() => add(y, 0));
  y.dispose();
  return out;
}
