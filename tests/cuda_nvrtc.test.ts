/**
 * The NVRTC binding for real, without a GPU: every kernel (the fixed module and every elementwise
 * spec) compiled by libnvrtc through our FFI under this runtime, and a broken source failing with
 * an error that names the call and carries the compile log. NVRTC comes from the system, from
 * $SPARSECODER_NVRTC / $SPARSECODER_CUDA_LIBDIRS, or from .cache/nvrtc (scripts/fetch_nvrtc.sh).
 */
import { assert, assertThrows, test } from "./harness.ts";
import { readEnv } from "../tensor/platform/env.ts";
import { getFfi } from "../tensor/platform/ffi.ts";
import { loadNvrtc } from "../tensor/cuda/nvrtc.ts";
import { mainSource } from "../tensor/cuda/kernels/main.ts";
import { everySpec, ewKernels } from "../tensor/cuda/kernels/elementwise.ts";
import { skip } from "./cuda_tools.ts";

const LOCAL = new URL("../.cache/nvrtc/usr/lib/x86_64-linux-gnu", import.meta.url).pathname;
const env = (
  n: string,
) => (n === "SPARSECODER_CUDA_LIBDIRS"
  ? [readEnv(n), LOCAL].filter((d) => d).join(":")
  : readEnv(n));

test("cuda nvrtc: every kernel compiles through our NVRTC binding; errors carry the log", () => {
  const s = loadNvrtc(getFfi()!, env);
  if (!s.nvrtc) {
    return skip("NVRTC compile check", `${s.reason} — run scripts/fetch_nvrtc.sh to fetch one`);
  }
  const nv = s.nvrtc;
  const cc = nv.archs.includes(90) || nv.archs.length === 0 ? 90 : Math.max(...nv.archs);
  // Every expression in float (f32) and double (i32) compute, and every cast/where/not: the overloads
  // NVRTC resolves differ by compute type, not by storage (the nvcc test compiles all of them).
  const specs = everySpec().filter((sp) =>
    sp.inputs.length === 3 || sp.out !== sp.inputs[0] || ["f32", "i32"].includes(sp.inputs[0])
  );
  const source = mainSource() + specs.map((sp, i) => ewKernels(sp, `k${i}`)).join("");
  const t0 = performance.now();
  // PTX: the front end (our header-free sources under NVRTC) is what differs from nvcc; machine code
  // generation is the driver's, and a cubin of everything takes a minute on a small CI machine.
  const out = nv.compile(source, "all_kernels.cu", cc, { ptx: true });
  console.log(
    `NVRTC ${
      nv.version.join(".")
    } (${s.reason}): ${specs.length} elementwise specs and the fixed module → ${out.kind} for ${out.target}, ${out.image.length} bytes in ${
      ((performance.now() - t0) / 1000).toFixed(1)
    } s`,
  );
  const text = new TextDecoder("latin1").decode(out.image);
  assert(
    out.kind === "ptx" && text.includes(".target sm_") && out.image[out.image.length - 1] === 0,
    "NUL-terminated PTX",
  );
  // A cubin for one small kernel: the machine-code path of the binding.
  const cubin = nv.compile(
    ewKernels(specs[0], "one").replace(
      /^/,
      mainSource().slice(0, mainSource().indexOf("// op: 0 sum")),
    ),
    "one.cu",
    cc,
  );
  assert(
    cubin.kind === "cubin" &&
      new TextDecoder("latin1").decode(cubin.image.subarray(0, 4)) === "\x7fELF",
    "a cubin is an ELF image",
  );
  for (
    const name of [
      "topk_hist_f32",
      "reduce_warp_bf16",
      "spmm_f32",
      "adam_f64",
      `k${specs.length - 1}_strided64`,
    ]
  ) assert(text.includes(`.entry ${name}(`), `${name} in the PTX`);
  const err = assertThrows(
    () =>
      nv.compile(
        'extern "C" __global__ void k(float* x) { x[0] = no_such_function(1.0f); }',
        "broken.cu",
        cc,
      ),
    "nvrtcCompileProgram failed: NVRTC_ERROR_COMPILATION (6)",
    "broken.cu",
    "no_such_function",
  );
  assert(/error/.test(err.message), "the compile log is in the message");
});
