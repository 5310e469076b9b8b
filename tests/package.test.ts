// The package as a user gets it: `npm pack` (its prepack builds dist/ with tsc), the tarball
// installed into a fresh folder from the npm cache, and one script there run under Bun, Deno and
// Node (Node has no FFI and no Web Workers: the TypeScript kernels on one thread). And the root
// entry's promise: importing mod.ts loads no npm package.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { loadedModules } from "../scripts/import_cost.ts";
import { assert, assertEquals, test } from "./harness.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const BIN = join(ROOT, "node_modules", ".bin");

/** Run a command to completion; its stdout, or an error carrying its output. */
function run(cmd: string, args: string[], cwd: string, env: Record<string, string> = {}): string {
  const r = spawnSync(cmd, args, {
    cwd,
    encoding: "utf8",
    env: { ...process.env, NO_COLOR: "1", ...env },
    timeout: 120_000,
  });
  if (r.status !== 0) {
    throw new Error(
      `${cmd} ${args.join(" ")} (in ${cwd}) exited ${
        r.status ?? r.signal
      }:\n${r.stdout}\n${r.stderr}`,
    );
  }
  return r.stdout;
}

/** What a user writes: a tensor op, a gradient, a tiny SAE encode, and every subpath entry. */
const SCRIPT = (typed: boolean) => `
import * as t from "sparsecoder";
import * as sae from "sparsecoder/sae";

const threads = await t.cpuThreadsReady();
const x = t.tensor([[1, 2], [3, 4]]);
const prod = await t.matmul(x, x).toArray();
const grad = await t.grad((p${typed ? ": t.Tensor" : ""}) => t.sum(t.square(p)))(x).toArray();
const big = t.random.normal(t.random.key(2), [256, 256]);
const bigSum = await t.sum(t.matmul(big, t.eye(256))).item();
const cfg = sae.resolveConfig({ arch: "topk", d_in: 4, d_sae: 8, k: 2 });
const arch = sae.architecture("topk");
const params = arch.init(t.random.key(0), cfg);
const l0 = await sae.l0PerRow(arch.encode(params, t.random.normal(t.random.key(1), [3, 4]), cfg))
  .toArray();
const [data, testing, server] = await Promise.all([
  import("sparsecoder/data"),
  import("sparsecoder/testing"),
  import("sparsecoder/server"),
]);
const assets = Object.keys(await server.loadAssets()).length;
const entries = [typeof data.openActivations, typeof testing.tensorArb, typeof server.createApp];
const sameSum = Math.abs(bigSum - (await t.sum(big).item())) < 1e-2;
console.log(JSON.stringify({ threads, prod, grad, sameSum, l0, assets, entries }));
`;

const expected = (threads: number) => ({
  threads,
  prod: [[7, 10], [15, 22]],
  grad: [[2, 4], [6, 8]],
  sameSum: true,
  l0: [2, 2, 2],
  assets: 5,
  entries: ["function", "function", "function"],
});

test(
  "package: the packed tarball installs into a fresh folder and runs under Bun, Deno and Node",
  async () => {
    const tsc = join(BIN, "tsc");
    const onPath = (process.env.PATH ?? "").split(delimiter).some((d) =>
      existsSync(join(d, "tsc"))
    );
    assert(
      existsSync(tsc) || onPath,
      "tsc not found: run npm install (typescript is a devDependency)",
    );
    const dir = await mkdtemp(join(tmpdir(), "sparsecoder-package-"));
    try {
      const [pack] = JSON.parse(
        run("npm", ["pack", "--json", "--pack-destination", dir], ROOT),
      ) as {
        filename: string;
        files: { path: string }[];
      }[];
      const files = pack.files.map((f) => f.path);
      for (
        const want of [
          "dist/mod.js",
          "dist/mod.d.ts",
          "dist/sae/mod.js",
          "dist/tensor/cpu/worker.js",
          "dist/csrc/cpu_kernels.c",
          "dist/server/dashboard/index.html",
        ]
      ) assert(files.includes(want), `tarball lacks ${want}`);
      const stray = files.filter((f) =>
        f !== "package.json" && f !== "README.md" && f !== "LICENSE" && !f.startsWith("dist/")
      );
      assertEquals(stray, [], "files outside dist/");
      assertEquals(files.filter((f) => f.endsWith(".ts") && !f.endsWith(".d.ts")), [], "sources");

      const app = join(dir, "app");
      await mkdir(app);
      await writeFile(join(app, "package.json"), '{ "name": "app", "private": true }\n');
      await writeFile(join(app, "deno.json"), '{ "nodeModulesDir": "manual" }\n');
      // The dependencies come from the npm cache that the repo's own npm install filled.
      run("npm", [
        "install",
        "--prefer-offline",
        "--no-audit",
        "--no-fund",
        join(dir, pack.filename),
      ], app);
      await writeFile(join(app, "main.ts"), SCRIPT(true));
      await writeFile(join(app, "main.mjs"), SCRIPT(false));

      const env = { SPARSECODER_THREADS: "2" };
      const out = (s: string) => JSON.parse(s.trim().split("\n").at(-1)!);
      assertEquals(out(run(join(BIN, "bun"), ["main.ts"], app, env)), expected(2), "bun");
      assertEquals(
        out(run(join(BIN, "deno"), ["run", "-A", "main.ts"], app, env)),
        expected(2),
        "deno",
      );
      run(join(BIN, "deno"), ["check", "main.ts"], app); // the .d.ts files type the user's script
      assertEquals(out(run("node", ["main.mjs"], app, env)), expected(1), "node");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  },
  180_000,
);

test("package: importing the root mod.ts loads no npm package", () => {
  const loaded = loadedModules(join(BIN, "deno"), "mod.ts", ROOT);
  const npm = loaded.filter((s) => s.includes("/node_modules/") || s.startsWith("npm:"));
  assertEquals(npm, [], "npm modules mod.ts loads");
  assert(loaded.length > 50, `the walk reached only ${loaded.length} modules`);
});

test("a Deno script in its own folder imports the repository's mod.ts and sae/mod.ts by path", async () => {
  const dir = await mkdtemp(join(tmpdir(), "sparsecoder-by-path-"));
  try {
    const root = new URL("..", import.meta.url).href;
    await writeFile(
      join(dir, "main.ts"),
      `import * as t from "${root}mod.ts";
import * as sae from "${root}sae/mod.ts";
const g = t.grad((a: t.Tensor) => t.sum(t.square(a)))(t.tensor([1, 2, 3]));
console.log(JSON.stringify({ g: Array.from(await g.data()), arch: sae.resolveConfig({ arch: "topk", d_in: 4, d_sae: 8, k: 2 }).arch }));
`,
    );
    const out = run(join(BIN, "deno"), ["run", "-A", "main.ts"], dir);
    assertEquals(JSON.parse(out.trim().split("\n").at(-1)!), { g: [2, 4, 6], arch: "topk" });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
