import { assertClose, test } from "./harness.ts";
import * as t from "../mod.ts";
test("smoke: add broadcasts", async () => {
  assertClose(await t.add(t.tensor([[1, 2], [3, 4]]), t.tensor([10, 20])).data(), [11, 22, 13, 24]);
});
