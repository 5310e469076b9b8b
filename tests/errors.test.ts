// Error messages name the op and the shapes; the memory API (tidy, keep, dispose, using).
import * as t from "../mod.ts";
import { assert, assertClose, assertEquals, assertThrows, test } from "./harness.ts";

const z = (shape: number[], d: t.DType = "f32") => t.zeros(shape, d);
const idx = (v: number[] | number[][]) => t.tensor(v, { dtype: "i32" });

test("errors: broadcasting names the op and both shapes", () => {
  assertThrows(() => t.add(z([2, 3]), z([4])), "add", "[2, 3]", "[4]");
  assertThrows(() => t.mul(z([2, 3]), z([3, 2])), "mul", "[2, 3]", "[3, 2]");
  assertThrows(() => t.sub(z([5]), z([2, 5, 4])), "sub", "[5]", "[2, 5, 4]");
  assertThrows(() => t.gt(z([2]), z([3])), "gt", "[2]", "[3]");
  assertThrows(() => t.where(z([2], "bool"), z([3]), 0), "where", "[2]", "[3]");
  assertThrows(() => t.broadcastTo(z([2, 3]), [3, 3]), "broadcastTo", "[2, 3]", "[3, 3]");
  assertThrows(() => t.broadcastTo(z([2, 3]), [3]), "broadcastTo", "[2, 3]", "[3]");
  const e = assertThrows(() => t.add(z([2, 3]), z([4])));
  assert(e instanceof t.ShapeError, `a ShapeError, got ${e.name}`);
});

test("errors: matmul misalignment and bad operands", () => {
  assertThrows(() => t.matmul(z([2, 3]), z([4, 5])), "matmul", "[2, 3]", "[4, 5]", "3 vs 4");
  assertThrows(() => t.matmul(z([3]), z([4])), "matmul", "[3]", "[4]");
  assertThrows(() => t.matmul(z([2, 2, 3]), z([3, 3, 4])), "matmul", "[2, 2, 3]", "[3, 3, 4]");
  assertThrows(() => t.matmul(z([]), z([2])), "matmul", "[]", "[2]");
});

test("errors: reshape size mismatch and bad holes", () => {
  assertThrows(() => t.reshape(z([2, 3]), [4]), "reshape", "[2, 3]", "[4]");
  assertThrows(() => t.reshape(z([2, 3]), [-1, 4]), "reshape", "[2, 3]", "[-1, 4]");
  assertThrows(() => t.reshape(z([2, 3]), [-1, -1]), "reshape", "-1");
  assertThrows(() => t.reshape(z([2, 3]), [2, 1.5, 2]), "reshape", "1.5");
});

test("errors: bad axes name the op, the axis and the shape", () => {
  assertThrows(() => t.sum(z([2, 3]), 2), "sum", "axis 2", "[2, 3]");
  assertThrows(() => t.max(z([2, 3]), -3), "max", "axis -3", "[2, 3]");
  assertThrows(() => t.mean(z([2, 3]), 5), "mean", "axis 5", "[2, 3]");
  assertThrows(() => t.variance(z([2, 3]), 2), "variance", "axis 2");
  assertThrows(() => t.norm(z([2, 3]), 2), "norm", "axis 2");
  assertThrows(() => t.logsumexp(z([2, 3]), 2), "logsumexp", "axis 2");
  assertThrows(() => t.softmax(z([2, 3]), -3), "softmax", "axis -3", "[2, 3]");
  assertThrows(() => t.logSoftmax(z([2, 3]), 2), "logSoftmax", "axis 2");
  assertThrows(() => t.argmax(z([2, 3]), 2), "argmax", "axis 2", "[2, 3]");
  assertThrows(() => t.cumsum(z([2, 3]), 2), "cumsum", "axis 2", "[2, 3]");
  assertThrows(() => t.expandDims(z([2, 3]), 4), "expandDims", "axis 4");
  assertThrows(() => t.squeeze(z([2, 3]), 0), "squeeze", "[2, 3]", "size 2");
  assertThrows(() => t.sum(z([2, 3]), [0, -2]), "sum", "repeated axis");
  assertThrows(() => t.transpose(z([2, 3]), [0, 0]), "transpose", "[2, 3]");
  assertThrows(() => t.transpose(z([2, 3]), [0]), "transpose", "[2, 3]");
  assertThrows(() => t.sliceAxis(z([2, 3]), 2, 0), "sliceAxis", "axis 2");
  assertThrows(() => t.take(z([2, 3]), idx([0]), 2), "take", "axis 2");
  assertThrows(() => t.concat([z([2, 3])], 2), "concat", "axis 2");
  assertThrows(() => t.stack([z([2, 3])], 3), "stack", "axis 3");
  // Empty axes cannot be reduced by max/min/argmax.
  assertThrows(() => t.max(z([0, 3]), 0), "max", "empty", "[0, 3]");
  assertThrows(() => t.argmin(z([0, 3]), 0), "argmin", "empty", "[0, 3]");
});

test("errors: concat and stack shape mismatches", () => {
  assertThrows(() => t.concat([z([2, 3]), z([3, 3])], 1), "concat", "[2, 3]", "[3, 3]");
  assertThrows(() => t.concat([z([2, 3]), z([3])], 0), "concat", "[2, 3]", "[3]");
  assertThrows(() => t.concat([]), "concat", "at least one");
  assertThrows(() => t.stack([z([2, 3]), z([3, 2])]), "stack", "[2, 3]", "[3, 2]");
});

test("errors: topk, gather/take/scatterAdd indices, oneHot, slice and pad arguments", () => {
  assertThrows(() => t.topk(z([2, 3]), 5), "topk", "k = 5", "[0, 3]", "[2, 3]");
  assertThrows(() => t.topk(z([2, 3]), -1), "topk", "k = -1");
  assertThrows(() => t.topk(z([]), 1), "topk", "scalar");
  // Out-of-range indices: the message says the index and the axis size.
  assertThrows(() => t.take(z([2, 3]), idx([5]), 1), "index 5", "size 3");
  assertThrows(() => t.takeAlongAxis(z([2, 3]), idx([[-1]]), 1), "index -1", "size 3");
  assertThrows(() => t.gather(z([2, 3]), idx([[0, 0, 2]]), 0), "index 2", "size 2");
  assertThrows(
    () => t.scatterAdd(z([2, 3]), idx([[3, 0, 0]]), t.ones([1, 3]), 0),
    "scatterAdd",
    "index 3",
    "size 2",
  );
  assertThrows(
    () => t.scatterAdd(z([2, 3]), idx([[0, 0]]), t.ones([1, 2]), 0),
    "scatterAdd",
    "[1, 2]",
    "[2, 3]",
  );
  assertThrows(() => t.gather(z([2, 3]), idx([0, 1]), 0), "takeAlongAxis", "[2]", "[2, 3]");
  assertThrows(() => t.take(z([2, 3]), t.tensor([0]), 1), "take", "i32", "f32");
  assertThrows(() => t.oneHot(t.tensor([1.5]), 3), "oneHot", "i32");
  assertThrows(() => t.slice(z([2, 3]), [0], [2], [0]), "slice", "step 0");
  assertThrows(() => t.slice(z([2, 3]), [0, 0, 0]), "slice", "[2, 3]");
  assertThrows(() => t.pad(z([2, 3]), [[-1, 0]]), "pad", "non-negative");
  assertThrows(() => t.pad(z([2]), [[0, 0], [1, 1]]), "pad", "[2]");
  assertThrows(() => t.norm(z([2]), undefined, { ord: 3 as 1 }), "norm", "ord", "3");
  assertThrows(() => t.arange(0, 5, 0), "arange", "step");
});

test("errors: tensor() construction: ragged arrays, bad elements, sizes, unknown dtypes", () => {
  assertThrows(() => t.tensor([[1, 2], [3]]), "tensor", "ragged", "[2, 2]");
  assertThrows(() => t.tensor([[1], [2, 3]]), "tensor", "ragged");
  assertThrows(() => t.tensor([1, [2]] as unknown as number[]), "tensor", "ragged");
  assertThrows(() => t.tensor(["a"] as unknown as number[]), "tensor", "numbers", "string");
  assertThrows(() => t.tensor(new Float32Array(5), { shape: [2, 3] }), "tensor", "[2, 3]", "5");
  assertThrows(() => t.tensor([1, 2, 3], { shape: [2, 2] }), "tensor", "[2, 2]", "3");
  assertThrows(() => t.tensor(new Uint16Array(2)), "tensor", "Uint16Array", "dtype");
  assertThrows(() => t.full([2, -1], 0), "full", "[2,-1]");
  for (const bad of ["f8", "int64", "float32"]) {
    assertThrows(
      () => t.tensor([1], { dtype: bad as t.DType }),
      "tensor",
      "unknown dtype",
      bad,
      "f32, f64, f16, bf16, i32, bool",
    );
    assertThrows(() => t.cast(z([1]), bad as t.DType), "cast", "unknown dtype", bad);
    assertThrows(() => t.zeros([2], bad as t.DType), "unknown dtype", bad);
  }
});

test("errors: using a disposed tensor", async () => {
  const x = t.tensor([1, 2]);
  x.dispose();
  assert(x.disposed, "disposed flag");
  assertThrows(() => t.add(x, 1), "used after dispose", "[2]");
  assertThrows(() => x.dataSync(), "used after dispose");
  let threw = false;
  await x.data().catch((e: Error) => (threw = e.message.includes("used after dispose")));
  assert(threw, "data() of a disposed tensor rejects");
  x.dispose(); // idempotent
  assert(String(x).includes("disposed"), "toString says disposed instead of throwing");
});

test("errors: grad of non-scalar, non-tensor and non-float functions; bad argnums and hasAux", async () => {
  assertThrows(
    () => t.grad((x: t.Tensor) => t.mul(x, 2))(t.tensor([1, 2])),
    "grad",
    "one-element",
    "[2]",
  );
  assertThrows(
    () => t.valueAndGrad((x: t.Tensor) => t.mul(x, 2))(t.tensor([1, 2])),
    "valueAndGrad",
    "one-element",
    "[2]",
  );
  assertThrows(
    () => t.grad((_x: t.Tensor) => 3 as unknown as t.Tensor)(t.tensor([1, 2])),
    "grad",
    "scalar Tensor",
    "hasAux",
  );
  assertThrows(
    () => t.grad((x: t.Tensor) => t.argmax(x))(t.tensor([1, 2])),
    "grad",
    "float",
    "i32",
  );
  assertThrows(
    () => t.grad((x: t.Tensor) => t.sum(x), { argnums: 2 })(t.tensor([1])),
    "grad",
    "argnums 2",
    "1 argument",
  );
  assertThrows(
    () => t.grad((x: t.Tensor) => t.sum(x), { hasAux: true })(t.tensor([1])),
    "grad",
    "hasAux",
    "[value, aux]",
  );
  assertThrows(
    () => t.grad((x: t.Tensor) => Promise.resolve(t.sum(x)))(t.tensor([1])),
    "grad",
    "synchronous",
  );
  assertThrows(
    // One cotangent for a two-tensor output: the types forbid it, the check must too.
    () => (t.vjp((x: t.Tensor) => [t.sum(x), x], t.tensor([1]))[1])(t.tensor([1]) as never),
    "vjp",
    "1 tensors",
    "2",
  );
  // The trace is closed on error: a later grad works normally.
  assertThrows(() =>
    t.grad((x: t.Tensor) => {
      t.exp(x);
      throw new Error("boom in f");
    })(t.tensor([1])), "boom in f");
  assertClose(t.grad((x: t.Tensor) => t.sum(t.mul(x, 3)))(t.tensor([1])).dataSync(), [3]);
  let msg = "";
  await t.tensor([1, 2]).item().catch((e: Error) => (msg = e.message));
  assert(msg.includes("item") && msg.includes("[2]"), `item error: ${msg}`);
});

test("errors: mixing backends names the op and both backends", () => {
  // A second backend object with another name stands in for a GPU; it is passed explicitly, not
  // registered, so no global state changes.
  const other: t.Backend = { ...t.getBackend(), name: "other" };
  const a = t.tensor([1, 2]), b = t.tensor([1, 2], { backend: other });
  assertEquals(b.backend.name, "other");
  assertThrows(() => t.add(a, b), "binary", "different backends", a.backend.name, "other");
  assertThrows(() => t.concat([a, b]), "different backends");
});

// ---------------------------------------------------------------- memory API

test("memory: tidy disposes intermediates and keeps the result (and views of intermediates)", () => {
  const x = t.tensor([1, 2, 3]);
  let mid: t.Tensor | undefined, mid2: t.Tensor | undefined;
  const y = t.tidy(() => {
    mid = t.mul(x, 2);
    mid2 = t.exp(mid);
    return t.add(mid, 1);
  });
  assert(mid!.disposed && mid2!.disposed, "intermediates disposed");
  assert(!y.disposed && !x.disposed, "result and outside input kept");
  assertClose(y.dataSync(), [3, 5, 7]);
  // A result that is a view of an intermediate keeps the shared storage alive.
  let base: t.Tensor | undefined;
  const v = t.tidy(() => t.transpose(base = t.reshape(t.add(x, 0), [3, 1])));
  assert(base!.disposed && !v.disposed, "base disposed, view kept");
  assertClose(v.dataSync(), [1, 2, 3]);
  // Records: every tensor reachable from the result survives.
  const rec = t.tidy(() => ({ a: t.neg(x), list: [t.square(x), "label"], n: 3 }));
  assert(!rec.a.disposed && !(rec.list[0] as t.Tensor).disposed, "record leaves kept");
  assertClose((rec.list[0] as t.Tensor).dataSync(), [1, 4, 9]);
});

test("memory: nested tidy hands kept tensors to the outer scope; errors still clean up", () => {
  let inner: t.Tensor | undefined, innerTmp: t.Tensor | undefined, outerTmp: t.Tensor | undefined;
  const out = t.tidy(() => {
    outerTmp = t.ones([2]);
    inner = t.tidy(() => {
      innerTmp = t.ones([2]);
      return t.add(innerTmp, 1);
    });
    assert(innerTmp!.disposed && !inner.disposed, "inner scope disposed its temporary only");
    return t.mul(inner, 2);
  });
  assert(
    inner!.disposed && outerTmp!.disposed && !out.disposed,
    "inner result disposed by the outer scope",
  );
  let tmp: t.Tensor | undefined;
  assertThrows(() =>
    t.tidy(() => {
      tmp = t.ones([2]);
      throw new Error("inside tidy");
    }), "inside tidy");
  assert(tmp!.disposed, "a throwing scope still disposes");
  assertThrows(() => t.tidy(() => Promise.resolve(1)), "tidy", "synchronous");
});

test("memory: keep exempts tensors from tidy; dispose frees a record", () => {
  let kept: t.Tensor | undefined, dropped: t.Tensor | undefined;
  t.tidy(() => {
    kept = t.keep(t.ones([2]));
    dropped = t.ones([2]);
    const rec = t.keep({ w: [t.zeros([1])] });
    assert(!rec.w[0].disposed, "keep returns its argument");
  });
  assert(!kept!.disposed && dropped!.disposed, "keep survives, the rest goes");
  const rec = { a: t.ones([1]), b: [t.ones([2]), { c: t.ones([3]) }], s: "x" };
  t.dispose(rec);
  assert(
    rec.a.disposed && (rec.b[0] as t.Tensor).disposed && (rec.b[1] as { c: t.Tensor }).c.disposed,
    "dispose walks the record",
  );
  // Disposing a base does not break a view that shares its storage.
  const base = t.tensor([[1, 2], [3, 4]]);
  const view = t.transpose(base);
  base.dispose();
  assertClose(view.dataSync(), [1, 3, 2, 4]);
  assertEquals(base.storage.refs, 1);
  view.dispose();
  assertEquals(base.storage.refs, 0);
  assert(base.storage.buf === null, "storage freed with its last view");
});

test("memory: `using` disposes at the end of the block", () => {
  let held: t.Tensor | undefined;
  {
    using x = t.ones([3]);
    held = x;
    assert(!x.disposed, "alive inside the block");
    assertClose(t.sum(x).dataSync(), [3]);
  }
  assert(held.disposed, "disposed on leaving the block");
  const y = t.ones([1]);
  y[Symbol.dispose]();
  assert(y.disposed, "Symbol.dispose called directly");
});
