// The op suite (forward values, gradients, layout, sparse products, top-k encoders, optimizers)
// re-run with every kernel also executed on the webgpu backend and compared with the CPU
// (tests/webgpu_mirror.ts). Skipped, with the reason printed, where no adapter is found (a
// failure under Deno with REQUIRE_WEBGPU=1).
import * as t from "../mod.ts";
import { registerBackend } from "../tensor/registry.ts";
import { AssertionError, runtime, test, wrapTests } from "./harness.ts";
import { createMirror } from "./webgpu_mirror.ts";
import { adapterOrSkip } from "./webgpu_adapter.ts";

const FILES = [
  "./ops_forward.test.ts",
  "./ops_grad.test.ts",
  "./ops_layout.test.ts",
  "./sparse.test.ts",
  "./topk_encode.test.ts",
  "./optim.test.ts",
];

const r = await adapterOrSkip("webgpu op suite"); // without an adapter it registered the skip or failure
if (r.ok && runtime === "bun") {
  // Bun shares one module registry across test files, so the op files cannot be re-registered here.
  test("webgpu op suite: skipped under bun", () =>
    console.log(
      "skipped under bun: the op test modules are already loaded in this process; the mirror runs under deno",
    ));
} else if (r.ok) {
  const mirror = createMirror(r.backend);
  registerBackend(mirror);
  let kernels = 0;
  wrapTests((name, fn) => [`[webgpu] ${name}`, async () => {
    t.useBackend("webgpu-mirror");
    try {
      await fn();
    } finally {
      t.useBackend("cpu");
    }
    const bad = await mirror.settle();
    if (bad.length) {
      throw new AssertionError(
        `${bad.length} kernel(s) disagree with the cpu:\n${bad.slice(0, 8).join("\n")}`,
      );
    }
    kernels = mirror.compared;
  }]);
  for (const f of FILES) await import(f);
  wrapTests(null);
  test("webgpu op suite: the comparison catches a wrong kernel", async () => {
    // exp computed as sin on the GPU side only: the mirror must name the op and the element.
    const broken = {
      ...r.backend,
      unary: (op: string, x: unknown, d: string) =>
        (r.backend.unary as (...a: unknown[]) => unknown)(op === "exp" ? "sin" : op, x, d),
    };
    registerBackend(createMirror(broken as typeof r.backend, "webgpu-broken") as t.Backend);
    t.useBackend("webgpu-broken");
    try {
      t.exp(t.tensor([0.5, 1, 2]));
    } finally {
      t.useBackend("cpu");
    }
    const bad = await (t.findBackend("webgpu-broken") as ReturnType<typeof createMirror>).settle();
    if (!(bad.length === 1 && bad[0].includes("unary exp") && bad[0].includes("element 0"))) {
      throw new AssertionError(`expected one mismatch, got ${JSON.stringify(bad)}`);
    }
  });
  test("webgpu op suite: kernels were compared", () => {
    if (kernels < 1000) throw new AssertionError(`only ${kernels} kernels were compared`);
    console.log(`${kernels} webgpu kernel runs compared with the cpu`);
  });
}
