/**
 * The `sae` command line, above every layer: the sae/ subcommands (train, eval, info, convert,
 * inspect) and the server's `serve`. Runs under Deno (`deno run -A cli.ts …`, the `sae` task) and
 * Bun (`bun cli.ts …`).
 */
import process from "node:process";
import { args } from "./tensor/platform/runtime.ts";
import { main as saeMain } from "./sae/cli.ts";

/** Run the command line with `argv` (without the program name); returns the exit code. */
export function main(argv: string[]): Promise<number> {
  return saeMain(argv, {
    serve: async (positional, flags) => {
      // Loaded on demand: the server's dependencies (Hono, apache-arrow) cost ~1 s of startup.
      const serve = await import("./server/command.ts");
      if (flags.help) console.log(serve.SERVE_HELP);
      else await serve.serveCommand(positional[0], flags);
    },
  });
}

if (import.meta.main) process.exitCode = await main(args());
