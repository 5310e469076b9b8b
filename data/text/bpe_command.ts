/**
 * `sae lm tokenizer --data CORPUS --vocab 4096 --out DIR`: train a byte-level BPE tokenizer on a
 * corpus (read by openCorpus) and write DIR/tokenizer.json + tokenizer_config.json. data/lm/commands.ts
 * dispatches here; problems are BpeTrainError (bad arguments) or CorpusError (bad files).
 */
import process from "node:process";
import { join } from "node:path";
import { countProgress, type ProgressSink } from "../progress.ts";
import { type CorpusFormat, openCorpus } from "./corpus.ts";
import { BpeTrainError, trainBpe } from "./bpe_train.ts";
import { writeBpeTokenizer } from "./bpe_json.ts";
import { fromByteLevel } from "./byte_level.ts";

type Flags = Record<string, string | true>;

export const BPE_HELP =
  `  sae lm tokenizer --data CORPUS --vocab 4096 --out DIR [--field text] [--format F]
             [--separator S] [--min-frequency N] [--special "<|endoftext|>"] [--context N]
      trains a byte-level BPE tokenizer (GPT-2's split and byte alphabet; ties to the pair of
      smaller ids) on a corpus (a file or folder of .txt, .jsonl(.zst), .parquet) and writes
      DIR/tokenizer.json and tokenizer_config.json. --vocab counts every id: 256 bytes, the merges
      and the special tokens (comma-separated; the last ids; the first is BOS and EOS, as GPT-2's
      <|endoftext|>). --context sets model_max_length.`;

const FLAGS = [
  "data",
  "vocab",
  "out",
  "field",
  "format",
  "separator",
  "min-frequency",
  "special",
  "context",
];

function str(flags: Flags, name: string): string | undefined {
  const v = flags[name];
  if (v === true) throw new BpeTrainError(`--${name} needs a value`);
  return v;
}

function int(flags: Flags, name: string, least: number): number | undefined {
  const v = str(flags, name);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < least) {
    throw new BpeTrainError(`--${name} must be an integer ≥ ${least}, got ${v}`);
  }
  return n;
}

/** Run `sae lm tokenizer …`: the summary on `log`, progress lines on `sink`. */
export async function bpeCommand(
  positional: string[],
  flags: Flags,
  log: (line: string) => void = console.log,
  sink: ProgressSink = process.stderr,
): Promise<void> {
  for (const f of Object.keys(flags)) {
    if (!FLAGS.includes(f)) throw new BpeTrainError(`unknown option --${f} (see sae lm --help)`);
  }
  if (positional.length) throw new BpeTrainError(`unexpected argument ${positional[0]}`);
  const data = str(flags, "data"), out = str(flags, "out");
  const vocabSize = int(flags, "vocab", 1);
  if (data === undefined || out === undefined || vocabSize === undefined) {
    throw new BpeTrainError("give --data CORPUS, --vocab N and --out DIR");
  }
  const specialTokens = (str(flags, "special") ?? "<|endoftext|>").split(",");
  const minFrequency = int(flags, "min-frequency", 0);
  const context = int(flags, "context", 1);
  const format = str(flags, "format") as CorpusFormat | undefined;
  if (format !== undefined && !["text", "jsonl", "parquet"].includes(format)) {
    throw new BpeTrainError(`--format must be text, jsonl or parquet, got ${format}`);
  }
  const corpus = await openCorpus(data, {
    format,
    field: str(flags, "field"),
    separator: str(flags, "separator"),
  });
  if (corpus.format === "npy") {
    throw new BpeTrainError(`--data ${data}: holds token ids; training a tokenizer needs text`);
  }

  const t0 = performance.now();
  let next = 5000;
  async function* texts(): AsyncIterable<string> {
    for await (const doc of corpus.documents()) yield doc.text!;
  }
  let merging: ReturnType<typeof countProgress> | null = null, last = 0;
  const result = await trainBpe(texts(), {
    vocabSize,
    minFrequency,
    specialTokens,
    onDocument(c) {
      const ms = performance.now() - t0;
      if (ms < next) return;
      next = ms + 5000;
      sink.write(
        `reading: ${
          (c.chars / 1e6).toFixed(1)
        } M characters, ${c.documents} documents, ${c.counts.size} distinct words\n`,
      );
    },
    onMerge(done, most) {
      merging ??= countProgress("merges", most, { unit: "merges", sink });
      merging.advance(done - last);
      last = done;
    },
  });
  (merging as ReturnType<typeof countProgress> | null)?.done();
  const secs = (performance.now() - t0) / 1000;
  await writeBpeTokenizer(out, result, {
    bos: specialTokens[0],
    eos: specialTokens[0],
    modelMaxLength: context,
  });
  const merges = result.merges.length, special = result.specialTokens;
  log(
    `${corpus.describe()}: ${corpus.counts().documents} documents, ${
      (result.bytes / 1e6).toFixed(1)
    } MB, ${result.words} distinct words`,
  );
  log(
    `trained in ${secs.toFixed(1)} s (${
      (result.bytes / 1e6 / secs).toFixed(2)
    } MB/s): ${result.size} ids = 256 bytes + ${merges} merges + ${special.length} special (${
      special.map((s) => `${s.content} = ${s.id}`).join(", ")
    })${result.stopped === "size" ? "" : `; stopped early: ${result.stopped}`}`,
  );
  log(
    `training text: ${result.tokens} tokens, ${
      (result.bytes / result.tokens).toFixed(2)
    } bytes per token; ${pieceStats(result)}`,
  );
  log(`wrote ${join(out, "tokenizer.json")} and tokenizer_config.json`);
}

/** Mean and longest piece, in bytes (a byte-level piece has one character per byte). */
function pieceStats(result: { merges: [string, string][] }): string {
  if (result.merges.length === 0) return "no merges";
  let sum = 0, longest = "";
  for (const [a, b] of result.merges) {
    const p = a + b;
    sum += p.length;
    if (p.length > longest.length) longest = p;
  }
  return `merged pieces ${(sum / result.merges.length).toFixed(1)} bytes on average, longest ${
    JSON.stringify(fromByteLevel(longest))
  } (${longest.length})`;
}
