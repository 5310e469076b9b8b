// `sae tokenize` through the CLI: a table and JSON from --text and --data, usage and file errors.
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { assert, assertEquals, test, withTempDir } from "./harness.ts";
import { runCli } from "./cli_run.ts";
import { writeGpt2Tokenizer } from "./text_fixtures.ts";

const withTemp = (fn: (dir: string) => Promise<void>) => withTempDir("text-cli-", fn);

test("sae tokenize: a table and JSON, from --text and --data", async () => {
  await withTemp(async (dir) => {
    const gpt2Dir = join(dir, "gpt2");
    await writeGpt2Tokenizer(gpt2Dir);
    const json = await runCli("tokenize", "--model", gpt2Dir, "--text", "Hello world", "--json");
    assertEquals(json.code, 0, json.err);
    assertEquals(JSON.parse(json.out), { ids: [15496, 995], pieces: ["Hello", "Ġworld"] });
    const file = join(dir, "t.txt");
    await writeFile(file, "Hello world<|endoftext|>\n");
    const table = await runCli("tokenize", "--model", gpt2Dir, "--data", file);
    assertEquals(table.code, 0, table.err);
    const lines = table.out.split("\n");
    assert(/^\s*id\s+piece\s+text$/.test(lines[0]), lines[0]);
    assert(/^\s*995\s+Ġworld\s+" world"$/.test(lines[2]), lines[2]);
    assert(/^50256\s+<\|endoftext\|>.*\(special\)$/.test(lines[3]), lines[3]);
    assert(/^\s*198\s+Ċ\s+"\\n"$/.test(lines[4]), lines[4]);
    assert(lines[5].startsWith("4 tokens; vocabulary 50257; BOS 50256"), lines[5]);
    const usage = await runCli("tokenize", "--model", gpt2Dir);
    assertEquals(usage.code, 2);
    assert(usage.err.includes("give --text TEXT or --data FILE"), usage.err);
    const missing = await runCli("tokenize", "--model", dir, "--text", "x");
    assertEquals(missing.code, 1);
    assert(missing.err.includes("no tokenizer.json"), missing.err);
    await writeFile(file, new Uint8Array([0x61, 0xff, 0x62]));
    const bad = await runCli("tokenize", "--model", gpt2Dir, "--data", file);
    assertEquals(bad.code, 2);
    assert(bad.err.includes("not valid UTF-8"), bad.err);
  });
});
