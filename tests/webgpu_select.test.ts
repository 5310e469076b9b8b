// Backend selection end to end: SPARSECODER_BACKEND=webgpu|auto and selectBackend("auto"), each in
// a fresh process (the device is acquired once per process, at import), run under the runtime
// running the test on tests/fixtures/backend_choice.ts. "No adapter" is real: under Deno the child
// gets DENO_WEBGPU_BACKEND=dx12, a backend wgpu does not have on Linux, so it enumerates none;
// under Bun it is what Dawn finds here. autoChoice is also checked on a hardware adapter, which CI lacks.
import { spawn } from "node:child_process";
import process from "node:process";
import * as t from "../mod.ts";
import { autoChoice, selectBackend } from "../tensor/webgpu/mod.ts";
import type { DeviceInfo } from "../tensor/webgpu/device.ts";
import { assert, assertEquals, runtime, test } from "./harness.ts";
import { adapterOrSkip } from "./webgpu_adapter.ts";
import { scriptCommand } from "../tensor/platform/process.ts";

const SCRIPT = "tests/fixtures/backend_choice.ts";
const cmd = scriptCommand(SCRIPT);

interface Report {
  op?: { backend: string; values: number[] };
  current?: string;
  auto?: string;
  backends?: Record<string, string>;
  error?: string;
}

/**
 * The script's report, run with `env` over this process's environment, less an inherited backend
 * choice (the wgpu backend, DENO_WEBGPU_BACKEND, stays: the child sees the adapters this process does).
 */
async function choose(env: Record<string, string>, ...args: string[]): Promise<Report> {
  const childEnv = { ...process.env } as Record<string, string>;
  delete childEnv.SPARSECODER_BACKEND;
  const child = spawn(cmd[0], [...cmd.slice(1), ...args], {
    env: { ...childEnv, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "", err = "";
  child.stdout!.on("data", (b: Uint8Array) => (out += new TextDecoder().decode(b)));
  child.stderr!.on("data", (b: Uint8Array) => (err += new TextDecoder().decode(b)));
  const code = await new Promise<number | null>((r) =>
    child.on("close", (c: number | null) => r(c))
  );
  const line = out.trim().split("\n").at(-1) ?? "";
  if (code !== 0 || !line.startsWith("{")) {
    throw new Error(
      `${SCRIPT} (${JSON.stringify(env)} ${args.join(" ")}) exited ${code}: ${out}\n${err}`,
    );
  }
  return JSON.parse(line);
}

const here = await adapterOrSkip("webgpu selection");
/** Environment that leaves the child without an adapter, or null where it cannot be hidden. */
const noAdapter: Record<string, string> | null = runtime === "deno"
  ? { DENO_WEBGPU_BACKEND: "dx12" }
  : here.ok
  ? null
  : {};
const fake = (fallback: boolean): DeviceInfo => ({
  device: null,
  description: "Test GPU 9000",
  fallback,
  f16: true,
  via: "deno",
});

test("autoChoice: webgpu on a hardware adapter; cpu on a software fallback or none, saying why", () => {
  assertEquals(autoChoice({ ok: true, backend: { device: fake(false) } }), {
    name: "webgpu",
    why: "auto chose webgpu: hardware adapter Test GPU 9000",
  });
  const soft = autoChoice({ ok: true, backend: { device: fake(true) } });
  assertEquals(soft.name, "cpu");
  assert(
    soft.why.includes("software fallback (Test GPU 9000)") &&
      soft.why.includes('selectBackend("webgpu")'),
    soft.why,
  );
  assertEquals(autoChoice({ ok: false, reason: "no driver" }), {
    name: "cpu",
    why: "auto chose cpu: no WebGPU adapter (no driver)",
  });
});

/** What auto must pick in a process that finds what this one found. */
const expectAuto = autoChoice(here);

test(`selectBackend("auto") in this process: ${expectAuto.name}; backendInfo().auto says why until the next choice`, async () => {
  try {
    assertEquals((await selectBackend("auto")).name, expectAuto.name);
    assertEquals(t.backendInfo().current, expectAuto.name);
    assertEquals(t.backendInfo().auto, expectAuto.why);
  } finally {
    t.useBackend("cpu");
  }
  assertEquals(t.backendInfo().auto, undefined, "an explicit choice clears auto's reason");
});

for (const how of ["SPARSECODER_BACKEND=auto", 'selectBackend("auto")'] as const) {
  const run = (env: Record<string, string>) =>
    how === "SPARSECODER_BACKEND=auto"
      ? choose({ ...env, SPARSECODER_BACKEND: "auto" })
      : choose(env, "select-auto");

  test(
    `${how} in a fresh process: ${expectAuto.name} here (${
      here.ok
        ? (here.backend.device.fallback ? "software fallback adapter" : "hardware adapter")
        : "no adapter"
    }), backendInfo says why`,
    async () => {
      const r = await run({});
      assertEquals(r.error, undefined);
      assertEquals([r.current, r.op?.backend], [expectAuto.name, expectAuto.name]);
      assertEquals(r.op?.values, [2, 3]);
      assertEquals(r.auto, expectAuto.why);
    },
    60_000,
  );

  // (Without an adapter here, the test above is already this case.)
  if (noAdapter && here.ok) {
    test(`${how} in a fresh process with no adapter: cpu, backendInfo says why`, async () => {
      const r = await run(noAdapter);
      assertEquals([r.current, r.op?.backend], ["cpu", "cpu"]);
      assert(r.auto?.startsWith("auto chose cpu: no WebGPU adapter ("), `auto: ${r.auto}`);
      assert(r.backends?.webgpu.startsWith("unavailable: "), `webgpu: ${r.backends?.webgpu}`);
    }, 60_000);
  }
}

if (here.ok) {
  test(
    "SPARSECODER_BACKEND=webgpu in a fresh process: the first op runs on webgpu (a fallback adapter too)",
    async () => {
      const r = await choose({ SPARSECODER_BACKEND: "webgpu" });
      assertEquals(r.error, undefined);
      assertEquals([r.current, r.op?.backend, r.auto], ["webgpu", "webgpu", undefined]);
      assertEquals(r.op?.values, [2, 3]);
      assert(
        r.backends?.webgpu.includes(here.backend.device.description),
        `webgpu: ${r.backends?.webgpu}`,
      );
    },
    60_000,
  );
}

if (noAdapter) {
  test(
    "SPARSECODER_BACKEND=webgpu in a fresh process with no adapter: the first op fails naming the reason",
    async () => {
      const r = await choose({ ...noAdapter, SPARSECODER_BACKEND: "webgpu" });
      assertEquals(r.op, undefined);
      const want = here.ok || runtime === "deno"
        ? "deno: no WebGPU adapter (install a Vulkan driver"
        : here.reason;
      assert(
        r.error?.startsWith("useBackend: the webgpu backend is unavailable here: ") &&
          r.error.includes(want),
        `error: ${r.error}`,
      );
    },
    60_000,
  );
} else {
  test("webgpu selection with no adapter: skipped", () =>
    console.log(
      `skipped under ${runtime}: Dawn's adapters cannot be hidden from a child process, so "no adapter" is not reachable here`,
    ));
}
