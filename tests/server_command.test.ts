// `sae serve` in-process: it listens where its flags say (127.0.0.1 unless --host says otherwise),
// passes its limits and backend to the app, stops when told, and answers usage errors with exit
// code 2 and a message naming the flag.
import { rm } from "node:fs/promises";
import * as t from "../mod.ts";
import { ARCHITECTURES } from "../sae/arch/registry.ts";
import { resolveConfig } from "../sae/config.ts";
import { saveSae } from "../sae/io/saelens.ts";
import { assert, assertEquals, test } from "./harness.ts";
import { runCli } from "./cli_run.ts";
import { makeFixture, serveQuietly as serve } from "./server_fixture.ts";

/** Serve a fresh fixture folder with `flags`, run `check` on its URL, then stop and clean up. */
async function withServe(
  flags: Record<string, string>,
  check: (url: string) => Promise<void>,
): Promise<void> {
  const f = await makeFixture();
  try {
    const s = await serve(f.dir, flags);
    try {
      await check(s.url);
    } finally {
      await s.stop();
    }
  } finally {
    await f.cleanup();
  }
}

test("sae serve: listens on 127.0.0.1 by default and passes --max-rows and --timeout-ms to the app", () =>
  withServe({ port: "0", "max-rows": "2", "timeout-ms": "1234" }, async (url) => {
    assert(url.startsWith("http://127.0.0.1:"), `listens on loopback by default: ${url}`);
    const info = await (await fetch(`${url}/v1/info`)).json();
    assertEquals(
      [info.limits.max_rows, info.limits.request_timeout_ms],
      [2, 1234],
      "the flags reach the app",
    );
    assertEquals((await fetch(`${url}/`)).status, 200, "dashboard served");
  }));

// 127.0.0.2 is loopback on Linux but not the default address, so the two can be told apart.
test("sae serve: --host binds that address only; --backend cpu computes on the CPU", () =>
  withServe({ port: "0", host: "127.0.0.2", backend: "cpu" }, async (url) => {
    assert(url.startsWith("http://127.0.0.2:"), `listens on --host: ${url}`);
    const info = await (await fetch(`${url}/v1/info`)).json();
    assertEquals(info.backend, "cpu", "--backend reaches the dictionary");
    let refused = false;
    await fetch(url.replace("127.0.0.2", "127.0.0.1") + "/healthz").then(
      (r) => r.body?.cancel(),
      () => (refused = true),
    );
    assert(refused, "nothing listens on the default address");
  }));

test("sae serve: --help; usage errors exit with 2 and name the problem", async () => {
  const f = await makeFixture();
  try {
    const help = await runCli("serve", "--help");
    assertEquals(help.code, 0, "sae serve --help");
    assert(
      help.out.includes("--token-env") && help.out.includes("--backend"),
      "help lists the options",
    );
    // A decoupled crosscoder: one code per input, which the server's one code per row cannot carry.
    const cross = `${f.dir}-crosscoder`;
    const ccfg = resolveConfig({
      arch: "batchtopk-crosscoder",
      d_in: 4,
      d_sae: 8,
      k: 2,
      n_inputs: 2,
      code_norm: "decoupled",
    });
    await saveSae(cross, {
      params: ARCHITECTURES[ccfg.arch].init(t.random.key(1), ccfg),
      cfg: ccfg,
    });
    const cases: [string[], ...string[]][] = [
      [["serve"], "missing the dictionary folder"],
      [["serve", f.dir, "--port", "x"], "--port must be an integer"],
      [["serve", f.dir, "--bogus", "1"], "unknown option --bogus"],
      [["serve", `${f.dir}/missing`], "missing/cfg.json: readFileBytes: cannot read"],
      [
        ["serve", f.dir, "--backend", "nonesuch"],
        `sae serve --backend: unknown backend "nonesuch"; available: cpu`,
      ],
      [["serve", f.dir, "--backend"], "--backend needs a value"],
      [
        ["serve", cross],
        "a decoupled crosscoder has one code per input",
        "inspect it with sae features",
      ],
    ];
    for (const [argv, ...says] of cases) {
      const r = await runCli(...argv);
      assertEquals(r.code, 2, `exit code of sae ${argv.join(" ")} (stderr ${r.err})`);
      for (const s of says) {
        assert(r.err.includes(s), `sae ${argv.join(" ")} says ${JSON.stringify(s)}: ${r.err}`);
      }
    }
  } finally {
    await f.cleanup();
    await rm(`${f.dir}-crosscoder`, { recursive: true, force: true });
  }
});
