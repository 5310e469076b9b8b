// Windows rendered from bytes (data/text/token_spans.ts): the UTF-8 decoding equals TextDecoder's
// on random bytes, a character split across byte-level tokens shows whole and belongs to both,
// `sae features` printing brackets it whole, and the shipped model's tokenizer splits `プレイ`
// characters exactly so.
import { existsSync } from "node:fs";
import { BYTE_PIECES } from "../data/text/byte_level.ts";
import { decodeUtf8, tokenSpans } from "../data/text/token_spans.ts";
import { loadTokenizer, tokenizerFromJson } from "../data/text/tokenizer.ts";
import { featureStats } from "../sae/eval/feature_stats.ts";
import { formatFeatures } from "../sae/eval/features_print.ts";
import { assert, assertEquals, test } from "./harness.ts";
import { byteLevelJson } from "./text_fixtures.ts";

/** A byte-level tokenizer with no merges: every byte is one token (id = its piece's rank). */
const bytesTok = () =>
  tokenizerFromJson(
    byteLevelJson(Object.fromEntries(BYTE_PIECES.map((p, i) => [p, i])), [], [{
      id: 256,
      content: "<|endoftext|>",
      special: true,
    }]),
  );

function lcg(seed: number) {
  let s = seed >>> 0;
  return () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32;
}

test("decodeUtf8: the same text as TextDecoder on random bytes, byte ranges tiling the input", () => {
  const rnd = lcg(7);
  // Bytes drawn mostly from UTF-8's lead and continuation ranges, so both valid and broken
  // sequences of every length come up.
  const pool = [0x41, 0x20, 0x80, 0x9f, 0xa0, 0xbf, 0xc2, 0xdf, 0xe0, 0xe3, 0xed, 0xef, 0xf0];
  pool.push(0xf4, 0xf5, 0xc0, 0xff, 0x8f, 0x90);
  for (let trial = 0; trial < 2000; trial++) {
    const n = Math.floor(rnd() * 12);
    const bytes = Uint8Array.from({ length: n }, () => pool[Math.floor(rnd() * pool.length)]);
    let text = "", next = 0;
    decodeUtf8(bytes, (ch, from, to) => {
      assertEquals(from, next, `ranges tile: ${[...bytes]}`);
      assert(to > from, "each character takes bytes");
      next = to;
      text += ch;
    });
    assertEquals(next, n, "every byte decoded");
    assertEquals(text, new TextDecoder().decode(bytes), `bytes ${[...bytes]}`);
  }
});

test("tokenSpans: a character split across byte tokens shows whole and belongs to each", () => {
  const tok = bytesTok();
  const s = "aプレイ😀\n";
  const ids = tok.encode(s);
  assertEquals(ids.length, new TextEncoder().encode(s).length, "one token per byte");
  assertEquals(tok.decode(ids.subarray(1, 2)), "\ufffd", "a lone piece of プ decodes to �");
  const { text, spans } = tokenSpans(tok, ids);
  assertEquals(text, s);
  // プ is bytes 1..3: each of its three tokens spans the whole character.
  assertEquals(spans.slice(0, 5), [[0, 1], [1, 2], [1, 2], [1, 2], [2, 3]]);
  // The emoji (4 bytes, 2 UTF-16 units) likewise.
  assertEquals(spans.slice(10, 14), [[4, 6], [4, 6], [4, 6], [4, 6]]);
  // A window cut in the middle of a character: the stray bytes are one � each, as TextDecoder
  // has them; ids -1 (outside the row) are empty; a special token is its text.
  const cut = [-1, ids[2], ids[3], ids[4], ids[5], ids[6], 256];
  const w = tokenSpans(tok, cut);
  assertEquals(w.text, "\ufffd\ufffdレ<|endoftext|>");
  assertEquals(w.spans, [[0, 0], [0, 1], [1, 2], [2, 3], [2, 3], [2, 3], [3, 16]]);
  // Without a tokenizer: the ids, space-separated.
  assertEquals(tokenSpans(null, [-1, 5, 17]), { text: "5 17", spans: [[0, 0], [0, 1], [1, 4]] });
});

test("sae features printing brackets a split character whole", () => {
  const tok = bytesTok();
  const ids = tok.encode("プレイヤー");
  const T = ids.length, codes = new Float32Array(T);
  codes[4] = 2; // the middle byte of レ
  const c = featureStats({
    features: 1,
    slices: 1,
    top: 1,
    before: 3,
    after: 3,
    bins: 0,
    intervals: 0,
    samples: 0,
    seed: 0,
  });
  c.add({ ids, codes, rowIds: [0] });
  const out = formatFeatures(c.result(), [0], { tokenizer: tok }) + "\n";
  // Window bytes 1..7: the tail of プ (two stray bytes: two �), レ whole, the head of イ (a
  // truncated sequence: one �), as TextDecoder would show them.
  assert(out.includes("2.00  \ufffd\ufffd⟦レ⟧\ufffd\n"), out);
  assert(!out.includes("⟦\ufffd⟧"), `the maximum is not a lone byte: ${out}`);
});

const LM = "/work/main/models/lm-1l";
const shipped = existsSync(`${LM}/tokenizer.json`) ? LM : "models/lm-1l";
if (existsSync(`${shipped}/tokenizer.json`)) {
  test("tokenSpans on the shipped model's tokenizer: プレイ's split characters render whole", async () => {
    const tok = await loadTokenizer(shipped);
    const s = "プレイヤーはゲームをプレイする";
    const ids = tok.encode(s);
    const partial = Array.from(ids).filter((id) => tok.decode([id]).includes("\ufffd"));
    assert(partial.length > 0, "the tokenizer splits some of these characters");
    const { text, spans } = tokenSpans(tok, ids);
    assertEquals(text, s);
    for (const [a, b] of spans) {
      assert(b > a && !text.slice(a, b).includes("\ufffd"), `span ${a}..${b} whole`);
    }
  });
} else console.log(`token_spans: shipped-model test skipped: no ${shipped}/tokenizer.json`);
