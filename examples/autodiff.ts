/** README: gradients of a function of a parameter record, and an optimizer step. */
import * as t from "../mod.ts";

type Params = { W: t.Tensor; b: t.Tensor };
const loss = (p: Params, x: t.Tensor, y: t.Tensor) =>
  t.mean(t.square(t.sub(t.add(t.matmul(x, p.W), p.b), y)));

let params: Params = { W: t.zeros([3, 1]), b: t.zeros([1]) };
const x = t.tensor([[1, 2, 3], [4, 5, 6]]), y = t.tensor([[1], [2]]);

const [value, grads] = t.valueAndGrad(loss)(params, x, y); // grads has the shape of params: { W, b }
const d2 = t.grad((a: t.Tensor) => t.sum(t.grad((b: t.Tensor) => t.sum(t.sin(b)))(a)))(x); // -sin x

const opt = t.adam({ lr: 1e-2 }); // optimizers are pure: (grads, state, params) -> [updates, state]
const [updates] = opt.update(grads, opt.init(params), params);
params = t.applyUpdates(params, updates);
console.log(await value.item(), await grads.W.toArray(), d2.shape, await params.b.toArray());
