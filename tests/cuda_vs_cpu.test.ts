/**
 * The cuda backend against the cpu reference, op by op and through gradients (device machines;
 * without CUDA every case is skipped with the reason). Run on a GPU with the op suite:
 * `bash bench/cuda_device.sh` (see the README's CUDA section).
 */
import { test } from "./harness.ts";
import * as t from "../mod.ts";
import { CASES, saeGrads, same } from "./cuda_cases.ts";
import { skip } from "./cuda_tools.ts";

const reason = t.cudaUnavailableReason();

test("cuda vs cpu: every primitive on random shapes, strided views and dtypes", async () => {
  if (reason !== null) return skip("cuda vs cpu ops", `no CUDA here: ${reason}`);
  for (const [name, make, rtol, atol] of CASES) await same(name, make, rtol, atol);
  console.log(`cuda vs cpu: ${CASES.length} op cases agree`);
});

test("cuda vs cpu: gradients of a TopK SAE loss and an Adam step", async () => {
  if (reason !== null) return skip("cuda vs cpu gradients", `no CUDA here: ${reason}`);
  await same("topk SAE loss, grads, adam", saeGrads, 1e-4, 1e-5);
});
