/** Run the `sae` command in-process through main(argv), with console.log / console.error captured. */
import { spawn } from "node:child_process";
import process from "node:process";
import { main } from "../cli.ts";
import { scriptCommand } from "../tensor/platform/process.ts";

export async function runCli(
  ...argv: string[]
): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [], err: string[] = [];
  const [log, error] = [console.log, console.error];
  console.log = (...a: unknown[]) => void out.push(a.map(String).join(" "));
  console.error = (...a: unknown[]) => void err.push(a.map(String).join(" "));
  try {
    const code = await main(argv);
    return { code, out: out.join("\n"), err: err.join("\n") };
  } finally {
    console.log = log;
    console.error = error;
  }
}

/**
 * The `sae` command as a child process (`sae ARGS…`); `killWhen`, polled every 5 ms, SIGKILLs it
 * when it first says yes (a guard kills it after `guardMs`). Resolves when it exits, with its
 * exit code or signal and its stdout and stderr together.
 */
export function spawnCli(
  args: string[],
  killWhen?: () => boolean | Promise<boolean>,
  guardMs = 100_000,
): Promise<{ code: number | null; signal: string | null; output: string }> {
  const cmd = [...scriptCommand("cli.ts"), ...args];
  const child = spawn(cmd[0], cmd.slice(1), {
    env: { ...process.env, NO_COLOR: "1" } as Record<string, string>,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout!.on("data", (b: Uint8Array) => (output += new TextDecoder().decode(b)));
  child.stderr!.on("data", (b: Uint8Array) => (output += new TextDecoder().decode(b)));
  const guard = setTimeout(() => child.kill("SIGKILL"), guardMs);
  let polling = true;
  const poll = async () => {
    while (polling && killWhen) {
      if (await killWhen()) {
        child.kill("SIGKILL");
        return;
      }
      await new Promise((r) => setTimeout(r, 5));
    }
  };
  void poll();
  return new Promise((res) =>
    child.on("close", (code, signal) => {
      polling = false;
      clearTimeout(guard);
      res({ code, signal, output });
    })
  );
}
