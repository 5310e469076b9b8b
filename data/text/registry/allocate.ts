/**
 * The corpus's deterministic choices, as pure functions: splitting long documents into pieces,
 * per-source byte budgets (each domain's share of the total, divided among its sources by weight,
 * with what a small source cannot use passed on to the others), which units fill a budget (in
 * the order of a hash of their keys, so the choice is spread over a package, not its first
 * files alphabetically), and the held-out rule.
 */
import { createHash } from "node:crypto";

/** A unit's place in every deterministic order: sha256 of its key, as a fraction in [0, 1). */
export function unitHash(key: string): number {
  const h = createHash("sha256").update(key).digest();
  return h.readUInt32BE(0) / 2 ** 32;
}

export function utf8Bytes(s: string): number {
  return new TextEncoder().encode(s).byteLength;
}

/**
 * A text cut at paragraph boundaries (then line boundaries) into pieces of at most `max` UTF-8
 * bytes where possible; a single line longer than `max` stays whole.
 */
export function splitText(text: string, max: number): string[] {
  if (utf8Bytes(text) <= max) return [text];
  const pieces: string[] = [];
  let cur = "", curBytes = 0;
  const parts = text.split(/(?<=\n\n)/).flatMap((p) =>
    utf8Bytes(p) > max ? p.split(/(?<=\n)/) : [p]
  );
  for (const p of parts) {
    const b = utf8Bytes(p);
    if (curBytes > 0 && curBytes + b > max) pieces.push(cur.trimEnd()), cur = "", curBytes = 0;
    cur += p;
    curBytes += b;
  }
  if (cur.trim() !== "") pieces.push(cur.trimEnd());
  return pieces.filter((p) => p.trim() !== "");
}

/**
 * Budgets for items of given capacity and weight sharing `total`: proportional to weight, except
 * that an item never gets more than its capacity and the rest goes to the others (water-filling).
 */
export function waterFill(total: number, items: { capacity: number; weight: number }[]): number[] {
  const out = items.map(() => 0);
  let active = items.map((_, i) => i).filter((i) => items[i].weight > 0 && items[i].capacity > 0);
  let left = total;
  while (active.length && left > 0) {
    const w = active.reduce((s, i) => s + items[i].weight, 0);
    const full = active.filter((i) => items[i].capacity <= left * items[i].weight / w);
    if (full.length === 0) {
      for (const i of active) out[i] = Math.floor(left * items[i].weight / w);
      break;
    }
    for (const i of full) out[i] = items[i].capacity, left -= items[i].capacity;
    active = active.filter((i) => !full.includes(i));
  }
  return out;
}

export interface Piece {
  /** The unit's key, plus `@k` when the unit was cut into several pieces. */
  source: string;
  text: string;
  bytes: number;
}

export interface Unit {
  key: string;
  hash: number;
  pieces: Piece[];
}

/** Cut a unit's text into pieces and hash its key. */
export function toUnit(key: string, text: string, maxDocBytes: number): Unit {
  const parts = splitText(text, maxDocBytes);
  return {
    key,
    hash: unitHash(key),
    pieces: parts.map((t, k) => ({
      source: parts.length > 1 ? `${key}@${k + 1}` : key,
      text: t,
      bytes: utf8Bytes(t),
    })),
  };
}

/**
 * The units that fill `budget` bytes: in hash order, each piece taken while it fits (a piece
 * that does not fit is passed over and smaller later ones may still fill the gap). Units keep
 * only their taken pieces; units with none are dropped.
 */
export function fillBudget(units: Unit[], budget: number): Unit[] {
  const out: Unit[] = [];
  let used = 0;
  for (const u of [...units].sort((a, b) => a.hash - b.hash || cmp(a.key, b.key))) {
    const taken = u.pieces.filter((p) => used + p.bytes <= budget && (used += p.bytes, true));
    if (taken.length) out.push({ ...u, pieces: taken });
  }
  return out;
}

/**
 * The held-out units of one domain: those whose hash is below `rate`, in hash order, while their
 * bytes fit `maxBytes`; a domain that would have none gets its lowest-hash unit that fits (so
 * every domain is present).
 */
export function heldOut(units: Unit[], rate: number, maxBytes: number): Set<string> {
  const sorted = [...units].sort((a, b) => a.hash - b.hash || cmp(a.key, b.key));
  const size = (u: Unit) => u.pieces.reduce((s, p) => s + p.bytes, 0);
  const out = new Set<string>();
  let used = 0;
  for (const u of sorted) {
    if (u.hash >= rate) break;
    if (used + size(u) <= maxBytes) out.add(u.key), used += size(u);
  }
  if (out.size === 0) {
    const first = sorted.find((u) => size(u) <= maxBytes);
    if (first) out.add(first.key);
  }
  return out;
}

export function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
