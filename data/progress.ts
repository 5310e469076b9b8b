/**
 * A byte-count progress bar on stderr for long transfers (model downloads): redrawn in place at
 * most ten times a second on a terminal; elsewhere (logs, CI) one line when it starts and one when
 * it ends, so a log is not flooded.
 */
import process from "node:process";

export interface ByteProgress {
  /** `n` more bytes arrived. */
  advance(n: number): void;
  /** The transfer ended (the last redraw, then a newline). */
  done(): void;
}

/** Where the bar is drawn; a test passes its own. */
export interface ProgressSink {
  write(text: string): unknown;
  isTTY?: boolean;
}

const MB = 1024 * 1024;

function size(bytes: number): string {
  return bytes >= 1024 * MB
    ? `${(bytes / (1024 * MB)).toFixed(2)} GiB`
    : `${(bytes / MB).toFixed(1)} MiB`;
}

/** A bar for `total` bytes (0 or less: unknown size) labelled `label`. */
export function byteProgress(
  label: string,
  total: number,
  sink: ProgressSink = process.stderr,
): ByteProgress {
  const tty = Boolean(sink.isTTY);
  const start = performance.now();
  let seen = 0, last = 0;
  const line = (): string => {
    const secs = Math.max((performance.now() - start) / 1000, 1e-3);
    const rate = `${size(seen / secs)}/s`;
    if (total <= 0) return `${label} ${size(seen)} ${rate}`;
    const w = 24, filled = Math.min(w, Math.floor((w * seen) / total));
    const pct = Math.min(100, (100 * seen) / total).toFixed(0).padStart(3);
    return `${label} [${"#".repeat(filled)}${".".repeat(w - filled)}] ${pct}% ${size(seen)}/${
      size(total)
    } ${rate}`;
  };
  if (!tty) sink.write(`${label}: downloading ${total > 0 ? size(total) : "(size unknown)"}\n`);
  return {
    advance(n) {
      seen += n;
      const now = performance.now();
      if (tty && now - last >= 100) {
        last = now;
        sink.write(`\r${line()}`);
      }
    },
    done() {
      sink.write(tty ? `\r${line()}\n` : `${line()}\n`);
    },
  };
}
