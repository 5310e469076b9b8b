/**
 * The tensor layer stands alone: it imports nothing above it, runs in a process that loads only
 * it, and autodiff records primitives through the tensor layer's bind observer and nothing else.
 */
import { spawnSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import * as t from "../mod.ts";
import { type BindObserver, isWatched, type Node, observeBind } from "../tensor/prims.ts";
import { fusedReluGrad } from "../tensor/fused.ts";
import { isTraced, untraced } from "../autodiff/trace.ts";
import { claimTensorSlot } from "../tensor/tensor.ts";
import { assert, assertClose, assertEquals, assertThrows, runtime, test } from "./harness.ts";

const root = fileURLToPath(new URL("../", import.meta.url));

function tsFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? tsFiles(join(dir, e.name)) : e.name.endsWith(".ts") ? [join(dir, e.name)] : []
  );
}

test("tensor/: no module imports from outside tensor/", () => {
  const tensorDir = join(root, "tensor");
  const wrong: string[] = [];
  for (const file of tsFiles(tensorDir)) {
    const src = readFileSync(file, "utf8");
    for (const m of src.matchAll(/(?:import|export)\s[^;]*?from\s+["'](\.[^"']+)["']/g)) {
      const target = resolve(dirname(file), m[1]);
      if (relative(tensorDir, target).startsWith("..")) {
        wrong.push(`${relative(root, file)} → ${m[1]}`);
      }
    }
  }
  assertEquals(wrong, [], "imports leaving tensor/");
});

test("tensor/: a process that loads only the tensor layer runs ops, with no observer", () => {
  const script = join(root, "tests", "tensor_only.ts");
  const args = runtime === "deno" ? ["run", "-A", "--v8-flags=--no-maglev", script] : [script];
  const r = spawnSync(process.execPath, args, { encoding: "utf8", cwd: root });
  assert(r.status === 0, `tensor_only.ts exited ${r.status}: ${r.stderr}`);
  const out = JSON.parse(r.stdout.trim().split("\n").pop()!);
  // x@x − x = [[9,20],[0,4]] − [[3,4],[0,2]] = [[6,16],[0,2]], all ≥ 0: the sum is 24.
  assertEquals(out.value, [24]);
  assertEquals(out.watched, false, "nothing is watched without autodiff");
  assertEquals(out.observer, false, "no observer installed");
  if (out.unitRows) assertClose(out.unitRows, [0.6, 0.8, 0, 1], { rtol: 1e-6 });
});

test("autodiff records through the bind observer, and only inside a trace", () => {
  const seen: string[] = [];
  const autodiff = observeBind(null)!;
  assert(autodiff !== null, "importing autodiff installs its observer");
  const counting: BindObserver = {
    bound: (node: Node) => {
      seen.push(node.prim);
      autodiff.bound(node);
    },
    watches: (x) => autodiff.watches(x),
  };
  try {
    observeBind(counting);
    const x = t.tensor([1, -2, 3]);
    const g = t.grad((v: t.Tensor) => t.sum(t.square(v)))(x);
    assertClose(g.dataSync(), [2, -4, 6]);
    assert(seen.includes("alias") && seen.includes("reduce"), `saw ${seen.join(", ")}`);

    // Outside a trace, ops are seen but nothing is made live.
    const y = t.mul(x, 2);
    assert(!isTraced(y) && !isWatched(y), "an op outside any trace is not traced");
    // Inside one, a value derived from the leaf is live (and no fused kernel may take it).
    t.grad((v: t.Tensor) => {
      const h = t.relu(v);
      assert(isTraced(h) && isWatched(h), "a traced value is watched");
      assertEquals(fusedReluGrad(h, v), null, "a fused kernel refuses a traced operand");
      return t.sum(h);
    })(x);
    // untraced hides the open traces: what it computes is not live.
    t.grad((v: t.Tensor) => {
      assert(!isTraced(untraced(() => t.mul(v, 2))), "untraced records nothing");
      return t.sum(v);
    })(x);

    // With no observer, nothing is recorded: the gradient is zero.
    observeBind(null);
    const none = t.grad((v: t.Tensor) => t.sum(t.square(v)))(x);
    assertClose(none.dataSync(), [0, 0, 0]);
  } finally {
    observeBind(autodiff);
  }
  // Restored: grad of grad works again.
  const d2 = t.grad((v: t.Tensor) =>
    t.sum(t.grad((w: t.Tensor) => t.sum(t.mul(t.square(w), w)))(v))
  )(
    t.tensor([1, 2]),
  );
  assertClose(d2.dataSync(), [6, 12]);
});

test("the tensor slot that holds autodiff's tape has one owner: nobody else can claim it", () => {
  assertThrows(() => claimTensorSlot("a test"), "a test cannot claim", "autodiff holds it");
});
