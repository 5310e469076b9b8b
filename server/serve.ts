/**
 * Start a fetch handler on a socket: Deno.serve under Deno, Bun.serve under Bun. `stop()` is the
 * graceful path: the listener closes, requests already in flight finish, then it resolves.
 */
import { onSignals } from "../tensor/platform/runtime.ts";

export interface ServeOptions {
  /** 0 picks a free port. */
  port: number;
  hostname: string;
  /** Largest body the runtime itself lets through (ours answers 413 first; Bun's own limit would not say why in JSON). */
  maxBodyBytes: number;
}

export interface RunningServer {
  port: number;
  hostname: string;
  url: string;
  /** Graceful: stop accepting, let in-flight requests finish. */
  stop(): Promise<void>;
  /** Resolves once the server has stopped. */
  finished: Promise<void>;
}

type Handler = (req: Request) => Response | Promise<Response>;

interface DenoLike {
  serve(
    o: { port: number; hostname: string; onListen?: () => void; handler: Handler },
  ): { addr: { port: number }; shutdown(): Promise<void>; finished: Promise<void> };
}

interface BunLike {
  serve(
    o: {
      port: number;
      hostname: string;
      fetch: Handler;
      maxRequestBodySize: number;
      idleTimeout: number;
    },
  ): { port: number; stop(force?: boolean): Promise<void> | void };
}

const g = globalThis as unknown as { Deno?: DenoLike; Bun?: BunLike };

const urlOf = (host: string, port: number) =>
  `http://${host.includes(":") ? `[${host}]` : host}:${port}`;

export function startServer(handler: Handler, o: ServeOptions): RunningServer {
  if (g.Deno) {
    const s = g.Deno.serve({ port: o.port, hostname: o.hostname, onListen: () => {}, handler });
    let stopping: Promise<void> | null = null;
    return {
      port: s.addr.port,
      hostname: o.hostname,
      url: urlOf(o.hostname, s.addr.port),
      stop: () => (stopping ??= s.shutdown()),
      finished: s.finished,
    };
  }
  if (g.Bun) {
    let done!: () => void;
    const finished = new Promise<void>((r) => (done = r));
    // idleTimeout is in seconds (at most 255); our own request timeout answers before it.
    const s = g.Bun.serve({
      port: o.port,
      hostname: o.hostname,
      fetch: handler,
      maxRequestBodySize: o.maxBodyBytes + (1 << 20),
      idleTimeout: 255,
    });
    let stopping: Promise<void> | null = null;
    return {
      port: s.port,
      hostname: o.hostname,
      url: urlOf(o.hostname, s.port),
      // stop(false) closes the listener and resolves once in-flight requests are answered.
      stop: () => (stopping ??= Promise.resolve(s.stop(false)).then(done)),
      finished,
    };
  }
  throw new Error("startServer: needs Deno or Bun (Deno.serve / Bun.serve)");
}

/** Call `onSignal` once on SIGINT or SIGTERM; returns a function that removes the listeners. */
export function onShutdownSignal(onSignal: (sig: string) => void): () => void {
  const sigs = ["SIGINT", "SIGTERM"];
  let fired = false;
  return onSignals(sigs, (sig) => {
    if (!fired) (fired = true), onSignal(sig);
  });
}
