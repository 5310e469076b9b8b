/**
 * The NCCL binding without a GPU: a stand-in libnccl (compiled here with gcc, exporting NCCL's
 * entry points with their documented prototypes, ncclCommInitRank taking the 128-byte id by
 * value) is opened through SPARSECODER_NCCL and driven through the binding: the id reaches C
 * byte for byte with nranks and rank intact, all-reduce and broadcast pass their arguments in
 * order, a failing status throws naming the call with NCCL's strings. Against the real nccl.h
 * (when one is installed) the constants and each entry point's arity are compiled. Without
 * CUDA, data-parallel training says why it goes through host memory.
 */
import process from "node:process";
import { assert, assertEquals, assertThrows, test } from "./harness.ts";
import { getFfi } from "../tensor/platform/ffi.ts";
import {
  idPassing,
  initRankArgs,
  loadNccl,
  NCCL_DTYPE,
  NCCL_OP,
  ncclSigs,
  UNIQUE_ID_BYTES,
  versionText,
} from "../tensor/cuda/nccl.ts";
import { NCCL_STATUS } from "../tensor/cuda/errors.ts";
import { libraryCandidates } from "../tensor/cuda/libs.ts";
import { singleProcess } from "../tensor/distributed/communicator.ts";
import { deviceCollectivesInfo, ncclJob } from "../tensor/distributed/device.ts";
import { join, removeDir, run, skip, tempDir, which, writeText } from "./cuda_tools.ts";

const ffi = getFfi()!;
const texts = (xs: readonly unknown[]) => xs.map(String);

/** NCCL's entry points as nccl.h documents them, recording what they receive. */
const STAND_IN = `
#include <stddef.h>
#include <string.h>
typedef struct { char internal[128]; } ncclUniqueId;
typedef struct fake_comm *ncclComm_t;
typedef int ncclResult_t;
static unsigned char seen_id[128];
static long long seen[8];
ncclResult_t ncclGetVersion(int *v) { *v = 22105; return 0; }
ncclResult_t ncclGetUniqueId(ncclUniqueId *id) {
  for (int i = 0; i < 128; i++) id->internal[i] = (char)(i * 7 + 3);
  return 0;
}
ncclResult_t ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank) {
  memcpy(seen_id, id.internal, 128);
  seen[0] = nranks, seen[1] = rank;
  if (nranks < 1 || rank < 0 || rank >= nranks) return 4;
  *comm = (ncclComm_t)(size_t)0xC0FFEE;
  return 0;
}
ncclResult_t ncclAllReduce(const void *s, void *r, size_t count, int dtype, int op, ncclComm_t c,
                           void *stream) {
  seen[2] = (long long)count, seen[3] = dtype, seen[4] = op, seen[5] = (long long)(size_t)c;
  seen[6] = (long long)(size_t)stream;
  if (dtype != 7) return 5;
  for (size_t i = 0; i < count; i++) ((float *)r)[i] = ((const float *)s)[i] * 2;
  return 0;
}
ncclResult_t ncclBroadcast(const void *s, void *r, size_t count, int dtype, int root, ncclComm_t c,
                           void *stream) {
  seen[2] = (long long)count, seen[3] = dtype, seen[4] = root, seen[5] = (long long)(size_t)c;
  seen[6] = (long long)(size_t)stream;
  memcpy(r, s, count * (dtype == 8 ? 8 : 4));
  return 0;
}
ncclResult_t ncclGroupStart(void) { seen[7]++; return 0; }
ncclResult_t ncclGroupEnd(void) { seen[7]--; return 0; }
ncclResult_t ncclCommDestroy(ncclComm_t c) { return c == (ncclComm_t)(size_t)0xC0FFEE ? 0 : 4; }
const char *ncclGetErrorString(ncclResult_t r) { return r == 4 ? "invalid argument" : "other"; }
const char *ncclGetLastError(ncclComm_t c) { (void)c; return "rank out of range"; }
void fake_seen(unsigned char *id, long long *v) { memcpy(id, seen_id, 128); memcpy(v, seen, 64); }
`;

test("nccl: constants, version codes, the id's layout per architecture", () => {
  assertEquals(versionText(22105), "2.21.5");
  assertEquals(versionText(2708), "2.7.8");
  assertEquals(idPassing("x64"), "stack-words");
  assertEquals(idPassing("arm64"), "pointer");
  assertEquals(idPassing("riscv64"), null);
  const id = Uint8Array.from({ length: UNIQUE_ID_BYTES }, (_, i) => i);
  const out = new BigUint64Array(1);
  const x = initRankArgs("stack-words", out, 4, id, 3);
  assertEquals(x.length, 22);
  assert(x[0] === out, "the out-parameter first");
  assertEquals(texts(x.slice(1, 6)), ["4", "3", "0", "0", "0"]);
  // Little-endian words of the id, in order: word 1 holds bytes 8..15.
  assert(x[7] === 0x0f0e0d0c0b0a0908n, String(x[7]));
  assertEquals(ncclSigs("stack-words").ncclCommInitRank.args.length, 22);
  const p = initRankArgs("pointer", out, 4, id, 3);
  assertEquals([p[1], p[3]], [4, 3]);
  assertEquals([...(p[2] as Uint8Array)], [...id]);
  assertThrows(() => initRankArgs("pointer", out, 1, new Uint8Array(8), 0), "128 bytes, got 8");
  assertEquals(NCCL_STATUS[4], "ncclInvalidArgument");
  assert(
    libraryCandidates("nccl", () => undefined).some((c) =>
      c.endsWith("nvidia/nccl/lib/libnccl.so.2")
    ),
    "pip wheel folder",
  );
});

test("nccl: the binding drives a stand-in libnccl (id by value, arguments, errors)", () => {
  const gcc = which("gcc");
  if (!gcc) return skip("nccl stand-in", "gcc not on PATH");
  if (!idPassing()) return skip("nccl stand-in", `no id passing for ${process.arch}`);
  const dir = tempDir();
  try {
    const so = join(dir, "libnccl.so.2");
    writeText(join(dir, "nccl.c"), STAND_IN);
    const cc = run(gcc, ["-O2", "-shared", "-fPIC", "-o", so, join(dir, "nccl.c")]);
    assert(cc.code === 0, cc.stderr);
    const { nccl, reason } = loadNccl(ffi, (n) => (n === "SPARSECODER_NCCL" ? so : undefined));
    assert(nccl, reason);
    assertEquals([nccl.version, nccl.hasAvg, reason], ["2.21.5", true, `loaded ${so}`]);
    const probe = ffi.open(so, { fake_seen: { args: ["buf", "buf"], ret: "void" } }).fns;
    const seenId = new Uint8Array(new ArrayBuffer(128)), seen = new BigInt64Array(8);
    const look = () => probe.fake_seen!(seenId, seen);

    const id = nccl.uniqueId();
    assertEquals(id[5], 5 * 7 + 3);
    const c = nccl.initRank(3, id, 2);
    look();
    assertEquals([...seenId], [...id], "the id, byte for byte");
    assertEquals(texts([seen[0], seen[1]]), ["3", "2"], "nranks and rank around the by-value id");
    assert(c.handle === 0xC0FFEEn, String(c.handle));

    const send = Float32Array.of(1, 2, 3), recv = new Float32Array(3);
    nccl.groupStart();
    nccl.allReduce(c, ffi.addressOf(send), ffi.addressOf(recv), 3, "f32", "avg", 0x5eadn);
    look();
    assertEquals(String(seen[7]), "1", "inside a group");
    nccl.groupEnd();
    assertEquals([...recv], [2, 4, 6]);
    assertEquals(texts([...seen.slice(2, 7)]), texts([3n, 7n, 4n, 0xC0FFEEn, 0x5eadn]));
    const b = Float64Array.of(0.5), into = new Float64Array(1);
    nccl.broadcast(c, ffi.addressOf(b), ffi.addressOf(into), 1, "f64", 1, 9n);
    look();
    assertEquals(texts([into[0], seen[3], seen[4]]), ["0.5", "8", "1"]);
    assertThrows(
      () => nccl.allReduce(c, 0n, 0n, 1, "f64", "sum", 0n),
      "ncclAllReduce failed: other (5): rank out of range",
    );
    assertThrows(
      () => nccl.initRank(2, id, 5),
      "ncclCommInitRank failed: invalid argument (4): rank 5 of 2: rank out of range",
    );
    nccl.destroy(c);
  } finally {
    removeDir(dir);
  }
});

test("nccl: a missing library and a job without CUDA say why (host memory over MPI instead)", () => {
  const missing = loadNccl(
    ffi,
    (n) => (n === "SPARSECODER_NCCL" ? "/nonexistent/libnccl.so.2" : undefined),
  );
  assert(
    missing.nccl === null && missing.reason.includes("/nonexistent/libnccl.so.2") &&
      missing.reason.includes("SPARSECODER_NCCL"),
    missing.reason,
  );
  assertEquals(ncclJob(singleProcess("test")), null);
  const info = deviceCollectivesInfo() ?? "";
  assert(
    info.startsWith("cuda collectives through host memory over MPI (NCCL unavailable: "),
    info,
  );
});

/** nccl.h where one is installed: the toolkit, the system, PyTorch's NVIDIA wheel. */
const HEADERS = [
  "/usr/include/nccl.h",
  "/usr/local/cuda/include/nccl.h",
  "/opt/torch/.venv/lib/python3.12/site-packages/nvidia/nccl/include/nccl.h",
  "/usr/local/lib/python3.12/dist-packages/nvidia/nccl/include/nccl.h",
];

test("nccl: constants and entry points agree with nccl.h (gcc)", () => {
  const gcc = which("gcc");
  const header = HEADERS.find((h) => run("test", ["-f", h]).code === 0);
  if (!gcc || !header) {
    return skip("nccl.h check", !gcc ? "gcc not on PATH" : `no nccl.h (${HEADERS.join(", ")})`);
  }
  const inc = header.slice(0, header.lastIndexOf("/"));
  const lines = ["#include <stdio.h>", "#include <nccl.h>", "int main(void) {"];
  const pr = (label: string, expr: string) =>
    lines.push(`  printf("${label} %lld\\n", (long long)(${expr}));`);
  for (const [code, name] of Object.entries(NCCL_STATUS)) pr(`${name}=${code}`, name);
  const dt = { f16: "ncclFloat16", f32: "ncclFloat32", f64: "ncclFloat64", bf16: "ncclBfloat16" };
  for (const [k, v] of Object.entries(NCCL_DTYPE)) {
    pr(`${dt[k as keyof typeof dt]}=${v}`, dt[k as keyof typeof dt]);
  }
  for (const [k, v] of Object.entries(NCCL_OP)) {
    const name = `nccl${k[0].toUpperCase()}${k.slice(1)}`;
    pr(`${name}=${v}`, name);
  }
  pr(`NCCL_UNIQUE_ID_BYTES=${UNIQUE_ID_BYTES}`, "sizeof(ncclUniqueId)");
  // Each entry point called with its C arity must compile (the id by value for InitRank).
  lines.push("  ncclUniqueId id; ncclComm_t c = 0; int v = 0;");
  lines.push("  (void)sizeof(ncclCommInitRank(&c, 1, id, 0));");
  lines.push("  (void)sizeof(ncclAllReduce(0, 0, (size_t)1, ncclFloat32, ncclSum, c, 0));");
  lines.push("  (void)sizeof(ncclBroadcast(0, 0, (size_t)1, ncclFloat32, 0, c, 0));");
  lines.push("  (void)sizeof(ncclGetVersion(&v)); (void)sizeof(ncclGetUniqueId(&id));");
  lines.push("  (void)sizeof(ncclGroupStart()); (void)sizeof(ncclGroupEnd());");
  lines.push("  (void)sizeof(ncclCommDestroy(c)); (void)sizeof(ncclGetErrorString(ncclSuccess));");
  lines.push("  return 0;", "}");
  const dir = tempDir();
  try {
    writeText(join(dir, "c.c"), lines.join("\n"));
    const cc = run(gcc, [
      "-I",
      inc,
      "-I",
      "/usr/local/cuda/include",
      "-o",
      join(dir, "c"),
      join(dir, "c.c"),
    ]);
    assert(cc.code === 0, `gcc failed:\n${cc.stderr}`);
    for (const l of run(join(dir, "c"), []).stdout.trim().split("\n")) {
      const [label, actual] = l.split(" ");
      assertEquals(`${label.split("=")[0]}=${actual}`, label, "constant");
    }
  } finally {
    removeDir(dir);
  }
});
