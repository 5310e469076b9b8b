/**
 * Which JavaScript runtime this is, and the few things every runtime spells differently: its
 * version, the command-line arguments, Deno's permissions, timers that must not keep the process
 * alive. Every other module asks here instead of probing `globalThis` itself.
 */

export type RuntimeName = "deno" | "bun" | "node" | "unknown";

// The runtimes' own globals, typed only as far as we use them.
interface DenoGlobal {
  version: { deno: string };
  args: string[];
  build: { arch: string; os: string };
  pid: number;
  execPath(): string;
  mainModule: string;
  permissions: { querySync(desc: Record<string, string>): { state: string } };
  env: { get(name: string): string | undefined; set(name: string, value: string): void };
  unrefTimer(id: number): void;
  addSignalListener(signal: string, handler: () => void): void;
  removeSignalListener(signal: string, handler: () => void): void;
  // deno-lint-ignore no-explicit-any
  dlopen?: (path: string, symbols: Record<string, unknown>) => any;
  // deno-lint-ignore no-explicit-any
  UnsafePointer: any;
  // deno-lint-ignore no-explicit-any
  UnsafePointerView: any;
}

interface BunGlobal {
  version: string;
}

interface NodeProcess {
  versions?: { node?: string };
  argv: string[];
  arch: string;
  platform: string;
  pid: number;
  execPath: string;
  env: Record<string, string | undefined>;
  on(signal: string, handler: () => void): void;
  off(signal: string, handler: () => void): void;
}

const g = globalThis as unknown as { Deno?: DenoGlobal; Bun?: BunGlobal; process?: NodeProcess };

/** Deno's global, or undefined under another runtime. */
export const deno: DenoGlobal | undefined = g.Deno;
/** Node's `process` (Bun and Deno provide one too), or undefined. */
export const nodeProcess: NodeProcess | undefined = g.process;

/** The runtime this process runs under (Deno defines `process` too, so Deno is asked first). */
export const runtime: RuntimeName = g.Deno
  ? "deno"
  : g.Bun
  ? "bun"
  : g.process?.versions?.node
  ? "node"
  : "unknown";

/** The runtime and its version, e.g. "deno 2.1.4" or "bun 1.2.0". */
export function runtimeVersion(): string {
  if (g.Deno) return `deno ${g.Deno.version.deno}`;
  if (g.Bun) return `bun ${g.Bun.version}`;
  if (g.process?.versions?.node) return `node ${g.process.versions.node}`;
  return "unknown";
}

/** The script's command-line arguments (after the script's name). */
export function args(): string[] {
  return g.Deno ? g.Deno.args : g.process?.argv.slice(2) ?? [];
}

/** The CPU architecture as the runtime names it ("x64", "x86_64", …), or "?". */
export function arch(): string {
  return g.process?.arch ?? g.Deno?.build.arch ?? "?";
}

/** The runtime's executable. */
export function execPath(): string {
  return g.Deno ? g.Deno.execPath() : g.process?.execPath ?? "";
}

/** The path of the script this process runs (its main module), or "" when unknown. */
export function mainScript(): string {
  if (g.Deno) {
    const m = g.Deno.mainModule;
    return m.startsWith("file://") ? decodeURIComponent(new URL(m).pathname) : m;
  }
  return g.process?.argv[1] ?? "";
}

/** This process's id (0 when the runtime does not say). */
export function pid(): number {
  return g.Deno?.pid ?? g.process?.pid ?? 0;
}

/**
 * Whether Deno already holds a permission, e.g. `{ name: "ffi", path }`; always true under other
 * runtimes. Asked before each use because an ungranted one would prompt on an interactive terminal.
 */
export function granted(desc: Record<string, string>): boolean {
  if (!g.Deno) return true;
  try {
    return g.Deno.permissions.querySync(desc).state === "granted";
  } catch {
    return false;
  }
}

/** Let a timer run without keeping the process alive. */
export function unrefTimer(id: ReturnType<typeof setTimeout>): void {
  if (g.Deno) g.Deno.unrefTimer(id as unknown as number);
  else (id as { unref?: () => void }).unref?.();
}

/** Call `handler` on each of the signals (e.g. SIGINT, SIGTERM); returns the undo. */
export function onSignals(signals: string[], handler: (signal: string) => void): () => void {
  const handlers = signals.map((s) => () => handler(s));
  if (g.Deno) {
    const d = g.Deno;
    signals.forEach((s, i) => d.addSignalListener(s, handlers[i]));
    return () => signals.forEach((s, i) => d.removeSignalListener(s, handlers[i]));
  }
  const p = g.process;
  if (!p) return () => {};
  signals.forEach((s, i) => p.on(s, handlers[i]));
  return () => signals.forEach((s, i) => p.off(s, handlers[i]));
}
