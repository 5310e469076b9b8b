/**
 * What `sae features` prints: a handful of features (chosen at random, seeded, or by the domain
 * rule), each with its density, its top contexts (the maximum's token in ⟦ ⟧), the tokens its
 * decoder raises and lowers, and — where they exist — its domain shares, layer distribution or
 * relative decoder norm; then one line of the domain rule's counts.
 */
import type { Tokenizer } from "../../data/text/tokenizer.ts";
import { tokenSpans } from "../../data/text/token_spans.ts";
import { slotsOf } from "./feature_contexts.ts";
import type { FeatureStats } from "./feature_stats.ts";
import { DOMAIN_RULE, type DomainSummary } from "./features_file.ts";
import type { LogitEffects } from "./logit_effects.ts";

/** `n` features with at least `top` firings (fewer if fewer have), seeded, in id order. */
export function pickFeatures(st: FeatureStats, n: number, seed: number): number[] {
  const pool: number[] = [];
  for (let f = 0; f < st.shape.features; f++) if (st.fires[f] >= st.shape.top) pool.push(f);
  // A small seeded shuffle (mulberry32): the choice must not depend on the runtime.
  let s = seed >>> 0;
  const next = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  for (let i = pool.length - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    [pool[i], pool[j]] = [pool[j], pool[i]];
  }
  return pool.slice(0, n).sort((a, b) => a - b);
}

export interface PrintExtras {
  tokenizer: Tokenizer | null;
  /** One per decoder; absent when not computed. */
  logits?: LogitEffects[];
  domains?: DomainSummary;
  /** Slice names (an MLSAE's layers), for the layer distribution. */
  sliceNames?: string[];
  /** Crosscoders: [F, L] decoder norms. */
  decoderNorms?: Float32Array;
  /** Contexts per feature (default 3). */
  perFeature?: number;
}

const pct = (x: number) => `${(100 * x).toPrecision(3)} %`;

export function formatFeatures(st: FeatureStats, features: number[], x: PrintExtras): string {
  const { top, before, after, slices: S } = st.shape, W = before + 1 + after;
  const visible = (s: string) => s.replace(/\n/g, "↵").replace(/\t/g, "→");
  const text = (ids: number[]) => {
    const real = ids.filter((i) => i >= 0);
    return visible(x.tokenizer ? x.tokenizer.decode(real) : real.join(" "));
  };
  // The window decoded from its bytes, so a character split across tokens prints whole.
  const windowText = (ids: number[]) => {
    const { text: s, spans } = tokenSpans(x.tokenizer, ids);
    const [a, b] = spans[before];
    return `${visible(s.slice(0, a))}⟦${visible(s.slice(a, b))}⟧${visible(s.slice(b))}`;
  };
  const D = st.labels.length;
  const lines: string[] = [];
  for (const f of features) {
    const ctx = slotsOf(st.top, W, f * top, top);
    const density = st.scanned ? st.fires[f] / (st.scanned * S) : 0;
    let head = `feature ${f}: fires on ${pct(density)} of tokens, max ${
      ctx[0]?.value.toPrecision(4) ?? "—"
    }`;
    if (x.domains && D > 0) {
      const shares = st.labels.map((l, i) => [l, x.domains!.share[f * D + i]] as const)
        .filter(([, v]) => v > 0).sort((a, b) => b[1] - a[1]);
      head += ` · top contexts ${
        shares.map(([l, v]) => `${l} ${Math.round(100 * v)} %`).join(", ")
      }`;
    }
    lines.push(head);
    if (x.sliceNames && S > 1) {
      const parts = x.sliceNames.map((n, s) =>
        `${n} ${st.fires[f] ? Math.round((100 * st.sliceFires[f * S + s]) / st.fires[f]) : 0} %`
      );
      lines.push(`  firings by slice: ${parts.join(", ")}`);
    }
    if (x.decoderNorms) {
      const L = x.decoderNorms.length / st.shape.features;
      const norms = Array.from(x.decoderNorms.subarray(f * L, (f + 1) * L), (v) => v.toFixed(3));
      lines.push(`  decoder norms per input: ${norms.join(", ")}`);
    }
    for (const c of ctx.slice(0, x.perFeature ?? 3)) {
      lines.push(`  ${c.value.toFixed(2).padStart(7)}  ${windowText(c.tokens)}`);
    }
    for (const [l, e] of (x.logits ?? []).entries()) {
      const k = Math.min(e.k, 5);
      const show = (ids: Int32Array, vals: Float32Array) =>
        Array.from(
          { length: k },
          (_, i) => `${JSON.stringify(text([ids[f * e.k + i]]))} ${vals[f * e.k + i].toFixed(2)}`,
        ).join(", ");
      const who = x.logits!.length > 1 ? ` (input ${l})` : "";
      lines.push(`  raises${who}: ${show(e.upIds, e.up)}`);
      lines.push(`  lowers${who}: ${show(e.downIds, e.down)}`);
    }
  }
  return lines.join("\n");
}

/** The domain rule's counts in one line. */
export function formatDomainRule(st: FeatureStats, d: DomainSummary): string {
  const by = Object.entries(d.byLabel).map(([l, n]) => `${l} ${n}`).join(", ");
  return `domains: ${d.meeting} of ${d.alive} alive features (${d.full} with ${st.shape.top} contexts) have ≥ ${
    100 * DOMAIN_RULE
  } % of their top contexts in one domain: ${by}`;
}

/** Up to `n` features meeting the domain rule for each label, strongest maximum first. */
export function domainFeatures(st: FeatureStats, d: DomainSummary, n: number): number[] {
  const out: number[] = [];
  st.labels.forEach((_, l) => {
    const mine: number[] = [];
    for (let f = 0; f < st.shape.features; f++) if (d.owner[f] === l) mine.push(f);
    mine.sort((a, b) => st.top.values[b * st.shape.top] - st.top.values[a * st.shape.top] || a - b);
    out.push(...mine.slice(0, n));
  });
  return out;
}
