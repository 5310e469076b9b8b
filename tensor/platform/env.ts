/**
 * Environment variables, read and set the same way under every runtime. Reading never prompts
 * and never throws: under Deno a variable is read only when --allow-env already grants it (an
 * ungranted read would ask on an interactive terminal), otherwise it counts as unset.
 */
import { deno, granted, nodeProcess, runtime } from "./runtime.ts";
import { cStringBuf, getFfi } from "./ffi.ts";

/** The variable's value ("" when set empty), or undefined when unset or not readable. */
export function readEnv(name: string): string | undefined {
  try {
    if (deno) return granted({ name: "env", variable: name }) ? deno.env.get(name) : undefined;
    return nodeProcess?.env[name];
  } catch {
    return undefined;
  }
}

/**
 * Set a variable in this process's environment; returns whether it was set (false without
 * Deno's env permission). Under Deno this is the C environment that native libraries read; Bun's
 * `process.env` does not reach it (see setNativeEnv).
 */
export function setEnv(name: string, value: string): boolean {
  try {
    if (deno) {
      if (!granted({ name: "env" })) return false;
      deno.env.set(name, value);
      return true;
    }
    if (!nodeProcess) return false;
    nodeProcess.env[name] = value;
    return true;
  } catch {
    return false;
  }
}

/**
 * Set a variable where native libraries opened afterwards read it (the C environment) as well as
 * in `process.env`; under Bun this goes through libc's setenv. Best effort: returns whether set.
 */
export function setNativeEnv(name: string, value: string): boolean {
  if (runtime !== "bun") return setEnv(name, value);
  try {
    const ffi = getFfi();
    if (!ffi) return false;
    const libc = ffi.open("libc.so.6", { setenv: { args: ["buf", "buf", "i32"], ret: "i32" } });
    if (libc.fns.setenv!(cStringBuf(name), cStringBuf(value), 0) !== 0) return false;
    return setEnv(name, value);
  } catch {
    return false;
  }
}
