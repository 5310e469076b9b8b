import { assert, assertEquals, assertThrows, test } from "./harness.ts";
import * as t from "../mod.ts";

test("treeFlatten/treeUnflatten round trip with sorted keys and arrays", () => {
  const tree = { b: [1, { c: 2, a: 3 }], a: 4, n: null };
  const [leaves, def] = t.treeFlatten(tree);
  assertEquals(leaves, [4, 1, 3, 2, null]);
  assertEquals(t.treeUnflatten(def, leaves), { a: 4, b: [1, { a: 3, c: 2 }], n: null });
  assertThrows(() => t.treeUnflatten(def, [1, 2]), "needs more than 2 leaves");
  assertThrows(() => t.treeUnflatten(def, [1, 2, 3, 4, 5, 6]), "got 6 leaves");
});

test("treeMap over several trees checks that structures match", () => {
  assertEquals(
    t.treeMap((x: number, y: number) => x + y, { a: [1, 2], b: 3 }, { a: [10, 20], b: 30 }),
    { a: [11, 22], b: 33 },
  );
  assertThrows(() => t.treeMap((x: number) => x, { a: 1 }, { b: 1 }), "keys");
  assertThrows(
    () => t.treeMap((x: number) => x, { a: [1, 2] }, { a: [1] }),
    "at .a",
    "2 vs 1 children",
  );
});

test("treeZip, treeLeaves and treePaths; class instances and tensors are leaves", () => {
  const k = t.random.key(1);
  const x = t.tensor([1]);
  assertEquals(t.treeZip({ a: 1, b: [2] }, { a: "x", b: ["y"] }), { a: [1, "x"], b: [[2, "y"]] });
  const leaves = t.treeLeaves({ key: k, layers: [{ w: x }] });
  assert(leaves[0] === k && leaves[1] === x, "keys and tensors stay whole");
  assertEquals(t.treePaths({ enc: { W: 1 }, layers: [{ b: 2 }] }).map(([p]) => p), [
    "enc.W",
    "layers[0].b",
  ]);
});
