/** The one module of fixed kernels (everything but the generated elementwise ones), compiled once per process. */
import { PRELUDE } from "./prelude.ts";
import { reduceSource } from "./reduce.ts";
import { selectSource } from "./select.ts";
import { indexSource } from "./index.ts";
import { sparseSource } from "./sparse.ts";
import { fusedSource } from "./fused.ts";

export function mainSource(): string {
  return PRELUDE + reduceSource() + selectSource() + indexSource() + sparseSource() + fusedSource();
}
