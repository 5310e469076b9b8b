/**
 * Run as its own process by tests/tensor_layering.test.ts: loads the tensor layer and nothing
 * above it, runs ops (fused kernels included), and prints one JSON line of what it saw.
 */
import { add, mul, relu } from "../tensor/ops/elementwise.ts";
import { sum } from "../tensor/ops/reduce.ts";
import { matmul } from "../tensor/ops/linalg.ts";
import { tensor } from "../tensor/ops/create.ts";
import { fusedUnitRows } from "../tensor/fused.ts";
import { isWatched, observeBind } from "../tensor/prims.ts";

const x = tensor([[3, 4], [0, 2]]);
const y = sum(relu(add(matmul(x, x), mul(x, -1))));
const unit = fusedUnitRows(x);
console.log(JSON.stringify({
  value: Array.from(y.dataSync()),
  watched: isWatched(y),
  unitRows: unit ? Array.from(unit.dataSync()) : null,
  observer: observeBind(null) !== null,
}));
