/**
 * `sae features --resume`: a run SIGKILLed after a checkpoint, resumed with the same command plus
 * --resume, writes exactly the statistics of an uninterrupted run (every tensor of both files);
 * resuming with other settings is an error that names the setting.
 */
import { cp } from "node:fs/promises";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { assert, assertEquals, test, withTempDir } from "./harness.ts";
import { runCli, spawnCli } from "./cli_run.ts";
import { fixtureModelAndCorpus, randomDictionary } from "./features_fixture.ts";
import { readFeatures } from "../sae/eval/features_file.ts";
import { checkpointPath } from "../sae/eval/features_checkpoint.ts";

test(
  "sae features: SIGKILLed after a checkpoint, --resume ends with the uninterrupted result",
  async () => {
    await withTempDir("features-resume-", async (dir) => {
      const { model, corpus } = await fixtureModelAndCorpus(dir, 40);
      const killed = join(dir, "killed"), whole = join(dir, "whole");
      await randomDictionary(killed, {
        arch: "topk",
        d_in: 128,
        d_sae: 32,
        k: 4,
        extra: { hook_name: "blocks.0.mlp.hook_post" },
      });
      await cp(killed, whole, { recursive: true });
      const args = (d: string) => [
        ...["features", d, "--model", model, "--data", corpus, "--context", "16"],
        ...["--tokens", "3000", "--batch", "1", "--checkpoint-every", "1", "--top", "3"],
        ...["--intervals", "4", "--samples", "2", "--bins", "8", "--domain-field", "domain"],
        ...["--show", "0", "--quiet"],
      ];
      const ckpt = checkpointPath(join(killed, "features"));
      // Killed a little after the first checkpoint, so the kill may land anywhere in the loop.
      let seen = 0;
      const child = await spawnCli(args(killed), () => {
        if (!existsSync(ckpt)) return false;
        seen ||= performance.now();
        return performance.now() - seen > 150;
      }, 60_000);
      assertEquals(child.signal, "SIGKILL", `killed mid-run: ${child.output}`);
      assert(!existsSync(join(killed, "features/features.json")), "killed before it finished");

      const other = await runCli(...args(killed), "--resume", "--top", "4");
      assertEquals(other.code, 2, other.out);
      assert(other.err.includes("the checkpoint was made with shape"), other.err);
      const resumed = await runCli(...args(killed), "--resume");
      assertEquals(resumed.code, 0, resumed.err);
      assert(/continuing at row [1-9]\d* \(\d+ tokens scanned\)/.test(resumed.out), resumed.out);
      assert(!existsSync(ckpt), "the checkpoint is removed at the end");
      const fresh = await runCli(...args(whole));
      assertEquals(fresh.code, 0, fresh.err);
      const [a, b] = [
        await readFeatures(join(killed, "features")),
        await readFeatures(join(whole, "features")),
      ];
      assertEquals(a.about.tokens_scanned, 3000);
      const { run: _a, ...aboutA } = a.about, { run: _b, ...aboutB } = b.about;
      assertEquals(
        JSON.stringify(aboutA).replaceAll(killed, ""),
        JSON.stringify(aboutB).replaceAll(whole, ""),
      );
      for (const part of ["contexts", "stats"] as const) {
        const [ta, tb] = [a[part]!, b[part]!];
        assertEquals(Object.keys(ta).sort(), Object.keys(tb).sort());
        for (const k of Object.keys(ta)) {
          assertEquals(ta[k].shape, tb[k].shape, `${part} ${k}`);
          const [x, y] = [ta[k].dataSync(), tb[k].dataSync()];
          for (let i = 0; i < x.length; i++) {
            if (!Object.is(x[i], y[i])) {
              throw new Error(`${part} ${k}[${i}]: resumed ${x[i]}, uninterrupted ${y[i]}`);
            }
          }
        }
      }
    });
  },
  240_000,
);
