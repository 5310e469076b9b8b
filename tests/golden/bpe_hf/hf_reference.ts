// Hugging Face tokenizers' own BPE trainer (the Rust library, through its Node binding, the npm
// package `tokenizers`) on a small mixed corpus; writes corpus.txt and merges.txt beside this file
// for tests/text_bpe_train.test.ts, which checks that our trainer makes the same merges in the same
// order. The corpus: the first 600 Brown sentences (brownLines of tests/text_fixtures.ts),
// German, Japanese and emoji lines written here, and hono's dist/context.js (code).
//
//   npm install --prefix /tmp/hf-tokenizers tokenizers@0.23.2
//   HF_TOKENIZERS=/tmp/hf-tokenizers/node_modules/tokenizers bun tests/golden/bpe_hf/hf_reference.ts
//
// The trainer is the binding's default: a BPE model with the ByteLevel pre-tokenizer
// (add_prefix_space false), BpeTrainer defaults (vocabulary 30000, min frequency 0, no special
// tokens; the alphabet is the characters seen). The corpus needs fewer merges than that, so training
// runs until no pair is left. Files are read line by line, each line with its "\n".
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { brownLines } from "../../text_fixtures.ts";

// The binding's path from HF_TOKENIZERS (it is no dependency of the project); loaded with require,
// as a native Node-API module.
const { BPE, Tokenizer, byteLevelPreTokenizer } = createRequire(import.meta.url)(
  process.env.HF_TOKENIZERS ?? "tokenizers",
);

const here = fileURLToPath(new URL(".", import.meta.url));
const modules = join(here, "../../../node_modules/");

const german = [
  "Über die Brücke gehen Mädchen und Jungen; äöüß ÄÖÜ.",
  "Der Straßenbahnfahrer grüßt die Fahrgäste höflich, während es draußen schüttet.",
  "Möchten Sie noch ein Stück Käsekuchen? Nein danke, ich bin schon satt.",
  "Die Bundesländer beschließen gemeinsam über die Änderungen im Schulgesetz.",
];
const japanese = [
  "吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。",
  "東京都は日本の首都です。人口は約千四百万人で、世界有数の大都市です。",
  "今日はいい天気ですね。明日も晴れるでしょうか。",
  "日本語のテキスト、中文文本，한국어 텍스트",
];
const emoji = ["😀 family: 👨‍👩‍👧‍👦, flag: 🏳️‍🌈, skin tone: 👍🏽", "tabs\tand  many   spaces  "];
const code = readFileSync(modules + "hono/dist/context.js", "utf8");
const corpus = [
  ...brownLines(600),
  ...german,
  ...german,
  ...japanese,
  ...japanese,
  ...emoji,
  code,
].join("\n") + "\n";
writeFileSync(join(here, "corpus.txt"), corpus);

const tok = new Tokenizer(BPE.empty());
tok.setPreTokenizer(byteLevelPreTokenizer(false, true));
tok.train([join(here, "corpus.txt")]);
const tmp = join(tmpdir(), `hf-bpe-${process.pid}.json`);
tok.save(tmp);
const merges = JSON.parse(readFileSync(tmp, "utf8")).model.merges;
rmSync(tmp);
writeFileSync(
  join(here, "merges.txt"),
  merges.map((m: string | string[]) => (Array.isArray(m) ? m.join(" ") : m)).join("\n") + "\n",
);
console.log(
  `corpus.txt: ${
    new TextEncoder().encode(corpus).length
  } bytes; merges.txt: ${merges.length} merges`,
);
