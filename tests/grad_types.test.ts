/**
 * grad, valueAndGrad and vjp return typed results: the value has f's return type and each
 * gradient record its argument's type. `deno test` type-checks this file, so a regression to
 * `any` or to a wrong shape fails here before any assertion runs.
 */
import * as t from "../mod.ts";
import { assertClose, assertEquals, test } from "./harness.ts";

type Params = { w: t.Tensor; b: t.Tensor };

/** Compiles only when A and B are the same type. */
type Same<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true
  : false;
const same = <A, B>(_proof: Same<A, B>): void => {};

const params: Params = { w: t.tensor([1, 2]), b: t.tensor([0.5]) };
const x = t.tensor([3, -1]);
const loss = (p: Params, x: t.Tensor) => t.sum(t.add(t.mul(p.w, x), p.b));

test("types: valueAndGrad gives [return type, params type]", () => {
  const r = t.valueAndGrad(loss)(params, x);
  same<typeof r, [t.Tensor, Params]>(true);
  assertClose(r[1].w.dataSync(), [3, -1]);
  assertClose(r[1].b.dataSync(), [2]);
});

test("types: hasAux keeps the aux type; grad gives [grads, aux]", () => {
  const withAux = (p: Params, x: t.Tensor): [t.Tensor, { n: number }] => [loss(p, x), { n: 7 }];
  const [[v, aux], g] = t.valueAndGrad(withAux, { hasAux: true })(params, x);
  same<typeof aux, { n: number }>(true);
  same<typeof g, Params>(true);
  assertClose(v.dataSync(), [2]);
  const r = t.grad(withAux, { hasAux: true })(params, x);
  same<typeof r, [Params, { n: number }]>(true);
  assertEquals(r[1].n, 7);
});

test("types: argnums picks arguments; an array gives a tuple", () => {
  const gx = t.grad(loss, { argnums: 1 })(params, x);
  same<typeof gx, t.Tensor>(true);
  assertClose(gx.dataSync(), [1, 2]);
  const both = t.grad(loss, { argnums: [0, 1] })(params, x);
  same<typeof both, [Params, t.Tensor]>(true);
  assertClose(both[1].dataSync(), [1, 2]);
});

test("types: vjp's cotangents are typed like the primals", () => {
  const [y, back] = t.vjp((a: t.Tensor, p: Params) => t.mul(a, p.w), x, params);
  same<typeof y, t.Tensor>(true);
  const cts = back(t.onesLike(y));
  same<typeof cts, [t.Tensor, Params]>(true);
  assertClose(cts[0].dataSync(), [1, 2]);
  assertClose(cts[1].w.dataSync(), [3, -1]);
});
