/** README: tensors, broadcasting, random keys and readback. Run: deno run -A examples/tensors.ts */
import * as t from "../mod.ts";

const x = t.tensor([[1, 2, 3], [4, 5, 6]]); // f32 by default; tensors are immutable values
const y = t.add(x, t.tensor([10, 20, 30])); // NumPy broadcasting
const z = t.sum(t.relu(t.sub(y, 15)), -1, { keepdims: true }); // shape [2, 1]
console.log(z.toString());
console.log(await z.data()); // readback is the only asynchronous step

const [kW, kX] = t.random.split(t.random.key(42)); // JAX-style keys: same numbers on Deno and Bun
const W = t.random.normal(kW, [3, 4], { std: 0.1 });
const h = t.matmul(t.random.uniform(kX, [2, 3]), W); // [2, 4]
console.log(h.shape, h.dtype);
