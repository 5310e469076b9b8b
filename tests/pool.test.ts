/**
 * The CPU backend's array pool: large arrays start on a cache line (the native kernels stream them
 * with vector loads), come back for reuse, a whole forward's worth of one shape at a time, and only
 * the pool's own arrays are taken back.
 */
import { assert, assertEquals, test } from "./harness.ts";
import { allocShared, giveArray, pooledBytes, takeArray } from "../tensor/cpu/pool.ts";
import { getFfi } from "../tensor/platform/ffi.ts";

// Lengths no other test pools.
const N = (1 << 17) + 48, MANY = (1 << 16) + 80;

test("pooled arrays start on a 64-byte boundary, and come back for reuse", () => {
  const ffi = getFfi();
  for (const dt of ["f32", "f64", "i32"] as const) {
    const a = takeArray(dt, N);
    assertEquals(a.length, N, `${dt} length`);
    assert(a.buffer instanceof SharedArrayBuffer, `${dt} in shared memory`);
    if (ffi) assertEquals(Number(ffi.addressOf(a) % 64n), 0, `${dt} address modulo 64`);
    const before = pooledBytes();
    giveArray(a);
    assertEquals(pooledBytes(), before + a.byteLength, `${dt} taken back`);
    assert(takeArray(dt, N) === a, `${dt} handed out again`);
  }
});

test("the pool takes back only its own arrays: not views into them, not other shared arrays", () => {
  const a = allocShared("f32", N), before = pooledBytes();
  giveArray(a.subarray(0, N - 4));
  giveArray(new Float32Array(new SharedArrayBuffer(1 << 19)));
  giveArray(new Float32Array(N));
  assertEquals(pooledBytes(), before, "nothing pooled");
  giveArray(a);
  assertEquals(pooledBytes(), before + a.byteLength, "its own array pooled");
  assert(takeArray("f32", N) === a, "and handed out again");
});

test("the pool keeps a 12-layer forward's activations of one shape (70 arrays), not only a few", () => {
  const arrays = Array.from({ length: 70 }, () => takeArray("f32", MANY));
  const before = pooledBytes();
  for (const a of arrays) giveArray(a);
  assertEquals(pooledBytes(), before + 70 * MANY * 4, "all 70 kept");
  const again = new Set(Array.from({ length: 70 }, () => takeArray("f32", MANY)));
  assertEquals(arrays.filter((a) => again.has(a)).length, 70, "and all 70 handed out again");
});
