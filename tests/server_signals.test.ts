// `sae serve` as its own process, stopped by a real SIGTERM (and SIGINT) while a request is in
// flight: the request is answered, the server says it stopped, and the process exits. Runs the
// server under the runtime running the test (Deno or Bun).
import { spawn } from "node:child_process";
import { assert, assertEquals, test } from "./harness.ts";
import { makeFixture, postJson, row, topkRef, viaSocket } from "./server_fixture.ts";
import { scriptCommand } from "../tensor/platform/process.ts";

const runtimeCmd = scriptCommand("cli.ts");

for (const signal of ["SIGTERM", "SIGINT"] as const) {
  test(
    `sae serve: ${signal} lets the in-flight request finish, then the process exits`,
    async () => {
      const f = await makeFixture();
      // A long batching wait holds the request in flight when the signal arrives.
      const child = spawn(runtimeCmd[0], [
        ...runtimeCmd.slice(1),
        "serve",
        f.dir,
        "--port",
        "0",
        "--batch-wait-ms",
        "600",
      ], { stdio: ["ignore", "ignore", "pipe"] });
      const exited = new Promise<void>((r) => child.on("exit", () => r()));
      let err = "";
      try {
        const url = await new Promise<string>((resolve, reject) => {
          child.stderr!.on("data", (b: Uint8Array) => {
            err += new TextDecoder().decode(b);
            const m = /listening on (http:\/\/\S+)/.exec(err);
            if (m) resolve(m[1]);
          });
          exited.then(() => reject(new Error(`server exited before listening: ${err}`)));
        });
        const inflight = postJson(viaSocket(url), "/v1/encode", { inputs: [row(f, 1)] });
        await new Promise((r) => setTimeout(r, 200));
        child.kill(signal);
        const r = await inflight;
        assertEquals(r.status, 200, "the in-flight request is answered");
        assertEquals((await r.json()).features[0].indices, topkRef(f, row(f, 1)).indices);
        await Promise.race([
          exited,
          new Promise((_, reject) =>
            setTimeout(() => reject(new Error(`no exit after ${signal}: ${err}`)), 15_000)
          ),
        ]);
        assert(
          err.includes(`${signal}: finishing in-flight requests`) &&
            err.includes("sae serve: stopped"),
          `graceful stop reported: ${err}`,
        );
      } finally {
        if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
        await f.cleanup();
      }
    },
    60_000,
  );
}
