/**
 * Progress bars on stderr, by bytes (model downloads) or by count (harvested tokens): redrawn in
 * place at most ten times a second on a terminal; elsewhere (logs, CI) a few lines only, so a log
 * is not flooded.
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

/** A count-based bar (tokens, rows): `advance` adds to the count, `note` sets a suffix. */
export interface CountProgress {
  /** `n` more items done. */
  advance(n: number): void;
  /** A short suffix shown after the rate (e.g. "shards 3"). */
  note(text: string): void;
  /** The work ended (the last redraw, then a newline). */
  done(): void;
}

function duration(secs: number): string {
  if (!Number.isFinite(secs)) return "?";
  const s = Math.round(secs), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  const two = (v: number) => String(v).padStart(2, "0");
  return h > 0 ? `${h}:${two(m)}:${two(s % 60)}` : `${m}:${two(s % 60)}`;
}

/**
 * A bar for `total` items of `unit` (a resumed job passes the items already done as `start`; the
 * rate and ETA count only this run's). On a terminal it is redrawn in place at most ten times a
 * second; elsewhere it writes a line at the start, at each quarter of the way, and at the end.
 */
export function countProgress(
  label: string,
  total: number,
  o: { unit?: string; start?: number; sink?: ProgressSink } = {},
): CountProgress {
  const sink = o.sink ?? process.stderr, unit = o.unit ?? "items", begin = o.start ?? 0;
  const tty = Boolean(sink.isTTY);
  const t0 = performance.now();
  let seen = begin, last = 0, quarter = Math.floor((4 * begin) / total), suffix = "";
  const line = (): string => {
    const secs = Math.max((performance.now() - t0) / 1000, 1e-3);
    const rate = (seen - begin) / secs;
    const w = 24, filled = Math.min(w, Math.floor((w * seen) / total));
    const pct = Math.min(100, (100 * seen) / total).toFixed(0).padStart(3);
    const eta = rate > 0 ? duration((total - seen) / rate) : "?";
    return `${label} [${"#".repeat(filled)}${".".repeat(w - filled)}] ${pct}% ${
      seen.toLocaleString("en-US")
    }/${total.toLocaleString("en-US")} ${unit} ${
      Math.round(rate).toLocaleString("en-US")
    } ${unit}/s ETA ${eta}${suffix ? " " + suffix : ""}`;
  };
  if (!tty) {
    sink.write(
      `${label}: ${total.toLocaleString("en-US")} ${unit}${
        begin > 0 ? `, resuming at ${begin.toLocaleString("en-US")}` : ""
      }\n`,
    );
  }
  return {
    advance(n) {
      seen += n;
      const now = performance.now();
      if (tty) {
        if (now - last >= 100) {
          last = now;
          sink.write(`\r${line()}`);
        }
      } else if (seen < total && Math.floor((4 * seen) / total) > quarter) {
        quarter = Math.floor((4 * seen) / total);
        sink.write(`${line()}\n`);
      }
    },
    note(text) {
      suffix = text;
    },
    done() {
      sink.write(tty ? `\r${line()}\n` : `${line()}\n`);
    },
  };
}
