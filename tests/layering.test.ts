/** Imports run one way: tensor ← autodiff ← data ← sae ← server/testing (scripts/check_imports.ts). */
import { assert, assertEquals, test } from "./harness.ts";
import { describe, importViolations, violationsIn } from "../scripts/check_imports.ts";

const root = new URL("..", import.meta.url).pathname;

test("no library file imports a higher layer", () => {
  const found = importViolations(root);
  assert(found.length === 0, `imports that run the wrong way:\n${found.map(describe).join("\n")}`);
});

test("the check finds upward imports, static, multi-line, re-exported and dynamic", () => {
  const src = [
    'import { grad } from "../../autodiff/grad.ts";',
    "import {",
    "  a,",
    '} from "../../sae/io/save.ts";',
    'export * from "../../server/app.ts";',
    'const m = await import("../../data/npy.ts");',
    'import { ok } from "./shape.ts";',
    'import "../../testing/mod.ts";',
  ].join("\n");
  const v = violationsIn("tensor/ops/x.ts", src);
  assertEquals(v.map((x) => [x.line, x.to]), [[1, "autodiff"], [4, "sae"], [5, "server"], [
    6,
    "data",
  ], [
    8,
    "testing",
  ]]);
  // Downward and same-layer imports pass; files outside the layers are not checked.
  assertEquals(violationsIn("sae/arch/topk.ts", 'import { t } from "../../tensor/tensor.ts";'), []);
  assertEquals(violationsIn("server/app.ts", 'import { t } from "./validate.ts";'), []);
  assertEquals(violationsIn("bench/x.ts", 'import { t } from "../server/app.ts";'), []);
  // Sibling layers of one rank do not import each other.
  assertEquals(violationsIn("testing/a.ts", 'import { t } from "../server/app.ts";').length, 1);
});
