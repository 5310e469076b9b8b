/**
 * MODEL_CARD.md for a trained model: where its data came from (the corpus manifest's summary when
 * one lies beside the training file), how much it saw, its shape and recipe, the time it took, and
 * its held-out loss beside unigram and bigram baselines, overall and per domain.
 */
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import type { Gpt2Config } from "../config.ts";
import type { NgramLosses } from "./baselines.ts";
import type { LmTrainOptions } from "./options.ts";

export interface DomainResult {
  domain: string;
  tokens: number;
  loss: number;
  baselines: NgramLosses;
}

export interface CardInfo {
  options: LmTrainOptions;
  cfg: Gpt2Config;
  nParams: number;
  tokensSeen: number;
  trainTokens: number;
  trainDocuments: number;
  heldoutTokens: number;
  elapsedMs: number;
  finalLoss: number;
  heldoutLoss: number;
  baselines: NgramLosses;
  domains: DomainResult[];
}

/** A short summary of `manifest.json` beside the training file, if there is one. */
export function manifestSummary(dataPath: string): string | null {
  const path = join(dirname(dataPath), "manifest.json");
  if (!existsSync(path)) return null;
  try {
    const m = JSON.parse(readFileSync(path, "utf8")) as Record<string, unknown>;
    const lines = Object.entries(m).map(([k, v]) =>
      `- ${k}: ${
        v !== null && typeof v === "object"
          ? Array.isArray(v) ? `${v.length} entries` : `{${Object.keys(v).slice(0, 8).join(", ")}}`
          : JSON.stringify(v)
      }`
    );
    return `From \`${path}\`:\n\n${lines.join("\n")}`;
  } catch (e) {
    return `\`${path}\` could not be read: ${(e as Error).message}`;
  }
}

const f3 = (x: number) => x.toFixed(3);

export function modelCard(c: CardInfo): string {
  const o = c.options, cfg = c.cfg;
  const manifest = manifestSummary(o.data);
  const minutes = c.elapsedMs / 60000;
  const b = c.baselines;
  const rows = [
    `| all | ${c.heldoutTokens.toLocaleString("en-US")} | ${f3(c.heldoutLoss)} | ${
      f3(b.unigram)
    } | ${f3(b.bigram)} |`,
    ...c.domains.map((d) =>
      `| ${d.domain || "(none)"} | ${d.tokens.toLocaleString("en-US")} | ${f3(d.loss)} | ${
        f3(d.baselines.unigram)
      } | ${f3(d.baselines.bigram)} |`
    ),
  ];
  return `# ${o.out.split("/").filter(Boolean).pop()}

A GPT-2-layout language model trained with this library's own autodiff (\`sae lm train\`).
It loads with \`loadModel\` or transformers' \`GPT2LMHeadModel.from_pretrained\`.

## Data
- training: \`${o.data}\`${o.domain ? ` (domain \`${o.domain}\` only)` : ""}, ${
    c.trainDocuments.toLocaleString("en-US")
  } documents, ${c.trainTokens.toLocaleString("en-US")} tokens
- held-out: \`${o.heldout}\`, ${c.heldoutTokens.toLocaleString("en-US")} tokens
- tokenizer: \`${o.tokenizer}\` (vocabulary ${cfg.vocabSize})
${o.initFrom ? `- continued from \`${o.initFrom}\`\n` : ""}${manifest ? `\n${manifest}\n` : ""}
## Model
${cfg.nLayer} layer${
    cfg.nLayer > 1 ? "s" : ""
  }, d_model ${cfg.dModel}, ${cfg.nHead} heads, MLP ${cfg.dMlp}, context ${cfg.nPositions}, exact GELU, tied head; ${
    c.nParams.toLocaleString("en-US")
  } parameters, stored as ${o.dtype}.

## Training
${o.steps} steps of ${o.batch} × ${o.context} tokens (${
    c.tokensSeen.toLocaleString("en-US")
  } tokens seen, ${
    (c.tokensSeen / c.trainTokens).toFixed(2)
  } epochs), AdamW (β 0.9/0.95, weight decay ${o.weightDecay} on matrices and embeddings), lr ${o.lr} with ${o.warmup} warmup steps then cosine to ${o.minLr}, gradient clip ${o.clip}, seed ${o.seed}; ${
    minutes.toFixed(1)
  } minutes of training (${
    Math.round(c.tokensSeen / (c.elapsedMs / 1000))
  } tokens/s). Final training loss ${f3(c.finalLoss)}.

## Held-out loss (nats per token)
Baselines are counted from the training tokens: unigram add-${b.unigramK}, bigram add-${b.bigramK} smoothing, scored on the same held-out positions.

| domain | tokens | model | unigram | bigram |
| --- | ---: | ---: | ---: | ---: |
${rows.join("\n")}

Curves: \`curves.jsonl\`; options: \`train.json\`.
`;
}
