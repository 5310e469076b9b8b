/** README: a language model with hook points, a dictionary spliced in, CE and KL recovered. */
import * as t from "../mod.ts";
import { lm } from "../data/mod.ts";
const { sae } = t;
const fixtures = "tests/golden/fixtures/"; // tiny random models and dictionaries the tests ship

// A Hugging Face folder (config.json + safetensors) or a repo id such as "gpt2" from the HF cache.
const model = await lm.loadModel(fixtures + "lm/gpt2");
const tokens = t.tensor([[5, 17, 2, 40, 9, 33], [8, 8, 21, 3, 60, 1]], { dtype: "i32" });
const { logits, cache } = lm.runWithCache(model, tokens, ["blocks.1.hook_resid_pre"]);

// Any hook may read or replace its activation; names are TransformerLens's.
const ablated = lm.runWithHooks(model, tokens, { "blocks.0.hook_mlp_out": (a) => t.mul(a, 0) });

// A saved SAE at its hook: CE and KL with the reconstruction spliced in, as SAELens reports them.
const dict = await sae.loadSae(fixtures + "lm_splice/relu");
const splice = sae.dictionarySplice(model, dict, "blocks.1.hook_resid_pre");
const scores = await sae.downstreamLoss(model, [tokens], splice);
console.log(logits!.shape, cache["blocks.1.hook_resid_pre"].shape, ablated.shape);
console.log(scores.ce_clean, scores.ce_spliced, scores.ce_loss_score, scores.kl_div_score);
