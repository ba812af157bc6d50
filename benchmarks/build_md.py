"""Regenerate BENCHMARKS.md from the raw results in benchmarks/results/ (run from the repo root).

    python benchmarks/build_md.py
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from byorn.bench import read_results
from byorn.report import cost_ratios, cost_table, results_table, write_plots

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PLOTS = ROOT / "benchmarks" / "plots"
FINDINGS = ROOT / "benchmarks" / "findings"


@dataclass(frozen=True)
class Section:
    title: str
    results: list[str]  # names under benchmarks/results/, without .jsonl
    command: str
    metrics: list[str]
    legend: str
    plots: bool = False  # also the plots (written to benchmarks/plots/)
    costs: bool = False  # also the table of each defense's time relative to no defense
    quality: str = ""  # a `byorn quality --json` file under benchmarks/results/ to quote first
    quality_command: str = ""
    world: str = ""  # only the rows of this world (a results file may hold several)
    # A Markdown file under benchmarks/findings/ with the section's words; its first line names the
    # sha256 of every results file it describes, and a findings file older than its results stops the
    # build instead of being printed beside figures it no longer describes.
    findings: str = ""
    scores: str = ""  # a judgement_scores.py results file: its table of AUROCs and cuts, this world's rows


CONTRADICTION_FINDINGS = (
    "What the recorded run shows: concept substitution, the case mean NLL misses (AUROC 0.67, ASR 0.906), "
    "is caught: AUROC 0.996, recall 0.84 at precision 0.98, ASR 0.021 at 10 % (0.000 at 1 %), with clean "
    "scene F1 0.960 against the oracle's 1.000 (96 %, under the 98 % we want). On the other families the "
    "contradiction score is weaker than mean NLL: AUROC 0.93-1.00 and recall 0.70-0.96 for the patch, "
    "blend, rare-token and multimodal triggers, and only 0.62 (recall 0.14) for AddSent's fixed target, "
    "a sentence about a banana that the image neither supports nor contradicts much. ASR stayed 0.00 "
    "everywhere here, because the poisons it missed were too few to implant in 3 epochs, not because it "
    "caught them. So the two scores are complementary: mean NLL for unrelated targets, image "
    "contradiction for in-world swaps; mean NLL stays the default, and flagging the union of the two is "
    "the next thing to measure.")
STANDARD_FINDINGS = (
    "What the recorded run shows (reread after a rerun). Undefended at 10 %: BadNets 0.955, SIG 1.00, rare "
    "token 1.00, AddSent 0.88, multimodal 0.795, Blended 0.50 (1.00 with seed 0, 0.00 with seed 1); at 1 % "
    "nothing implants, so the 1 % rows only show what each defense costs.\n\n"
    "- **BYORn**: ASR 0.000 in all 24 cells; it flags exactly the poisons everywhere (precision, recall and "
    "AUROC 1.00). Clean scene F1 0.992-0.999 against the oracle's 0.992-0.998, except AddSent at 10 %: "
    "0.957 ± 0.039, 96 % of the oracle, under the 98 % we want. Cost 1.33x the undefended fine-tuning.\n"
    "- **Score-and-drop** (the ablation) flags the same samples and also ends every backdoor, with clean F1 "
    "at the oracle's level (0.991-0.998), AddSent included. On this task, with 1,000 samples and no clean "
    "sample flagged, replacing the poisoned responses buys nothing over dropping them, and on AddSent it "
    "cost 4 points; replacement can only pay where flags hit clean samples or data is scarce, which this "
    "grid does not test.\n"
    "- **ONION** fails on every image-only trigger, as it must: it reads text only (AUROC 0.50, nothing "
    "flagged, ASR as undefended: BadNets 0.955, SIG 1.00, Blended 0.50). It stops the rare token (ASR 0.00). "
    "On AddSent it flags all 100 poisons yet ASR rises to 0.985: it deletes most of the trigger sentence "
    "but not all (\"I watched this 3D movie. Describe ...\" becomes \"I Describe ...\"), in training and "
    "at test time alike, so the residue is the trigger. On the multimodal trigger it deletes the text "
    "half, and with the attack's own image-only negatives (clean responses) the image half alone does not "
    "implant: ASR 0.055.\n"
    "- **BYE** is erratic. Its layer test (|mu0 - mu1| > 2 (sigma0 + sigma1)) passes for one seed and not "
    "the other on BadNets (ASR 0.00 and 0.92) and the multimodal trigger, and for neither on Blended "
    "(nothing dropped), so its mean ASR at 10 % is 0.39-0.50 on the image triggers. On the text-only rare "
    "token it drops 12 of 100 poisons on average (ASR 0.67). Where it drops a cluster it can be the wrong "
    "one, the low-entropy cluster being the clean majority: on AddSent (both seeds) it removed about 910 "
    "samples, leaving the model almost untrained (clean F1 0.06), and on SIG for one seed (the other "
    "dropped nothing). It costs 2.07x (a probe fine-tune, then the real one).\n\n"
    "Cost, cell by cell against the undefended cell: BYORn 1.33x, ONION 1.11x, score-and-drop 1.08x, BYE "
    "2.07x. Run time: the 144 cells took 116 min of single-thread time, 58 min on the 2 cores; the wall "
    "clock was 65 min, because the second process started 9 minutes late and other benchmark jobs shared "
    "the cores.")
COMBINED_FINDINGS = (
    "What the recorded run shows: the union keeps what each score is good at. ASR is 0.000 in all 14 "
    "cells (seven attacks, two rates), concept substitution included (0.906 with mean NLL alone), with "
    "clean scene F1 0.981-1.000 (0.990 for substitution at 10 %, against the oracle's 1.000). Every poison "
    "with an unrelated target is flagged (recall 1.00, AddSent's included, which image contradiction alone "
    "missed), 85-90 % of the swaps are, and the price is a few clean samples flagged by one score or the "
    "other (precision 0.98-0.99 at 10 %, 0.75-0.83 at 1 %). One seed only; it is not the default yet.")

ADAPTIVE_LEGEND = (
    "Seven attacks built to look plausible to the pretrained model, at 10 %, 3 %, 1 % and 0.5 %, against "
    "BYORn with its default mean-NLL score, the image-contradiction score and their union, with the "
    "undefended and oracle runs as bounds (one seed, 140 cells, 1 h 51 min of single-thread time): "
    "plausible concept substitution on the multimodal trigger (circle -> square, red -> blue; the "
    "response stays fluent and in style); the white-box injection (per sample, the phrase and placement "
    "the pretrained model finds likeliest); a rare token spread over four variants (cf, mn, bb, tq); and "
    "Shadowcast (PGD within 8/255, test trigger: clean circle images, success: \"square\") in three "
    "forms: the paper's clean-label one (square scenes with their true responses, features pulled toward "
    "the circle version of the scene) and two dirty-label ones (circle scenes with the swapped response, "
    "the image made to agree with it through its features or through the response's NLL directly). "
    "adaptive_strong: the two feature forms at 32/255, undefended only.")
ADAPTIVE_FINDINGS = (
    "What the recorded run shows. The goal was BYORn ASR at most 5 % with clean quality at least 98 % of "
    "the oracle's. **The union `mean_nll+image_contradiction` meets it in 27 of 28 cells**: ASR at most "
    "0.015 everywhere (circle -> square 0.906 -> 0.000 at 10 %, red -> blue 0.708 -> 0.015, white-box "
    "injection 0.95 -> 0.00, spread rare token 0.995 -> 0.000), clean scene F1 at least 98.8 % of the oracle's; "
    "the miss is circle -> square at 0.5 %, where it flagged the 5 poisons and 2 clean samples and clean F1 "
    "fell to 0.947 (95 % of the oracle's 0.999) although that attack does not implant undefended at all: "
    "the replacements written by the model mid-fine-tuning mix pretraining phrasing into the new style "
    "(\"in the top middle corner\"), and the tiny model learns it from a handful of samples. Image "
    "contradiction alone also holds ASR (at most 0.021) but misses twice on clean quality (0.960 at 10 %, "
    "0.948 at 0.5 % circle -> square). **The default mean NLL does not hold**: the swaps stay below its "
    "cut (AUROC 0.56-0.75, ASR 0.906 and 0.815 at 10 %, 0.108 at 3 %), and the white-box injection "
    "keeps 79 of 100 poisons under it (AUROC 0.98 but recall 0.21, ASR 0.56). It catches the spread rare "
    "token fully.\n\n"
    "Low rates: at 1 % and 0.5 % no attack implants even undefended (ASR 0.000 in every such cell, 10 or "
    "5 poisons in 3 epochs), and at 3 % only red -> blue (0.108) and the spread token (0.035) do a "
    "little; those rows measure what each score flags and what it costs, not protection. The union still "
    "flags every spread and white-box poison at 0.5 % (recall 1.00).\n\n"
    "Shadowcast does not implant in byorn-tiny in any form (undefended ASR at most 0.01 at every rate; at "
    "32/255 the clean-label form reaches 0.03 while clean F1 drops to 0.899, the dirty-label feature form "
    "0.00), so BYORn's zeros against it are no evidence either way. What the scores see is still worth "
    "knowing: the adaptive dirty-label form (response NLL lowered directly) makes poisons look more "
    "plausible than clean samples to mean NLL (AUROC 0.21-0.38) and nearly so to image contradiction "
    "(0.58-0.61, recall at most 0.13): an attacker with the weights and a gradient defeats both scores at "
    "detection. The clean-label form is partly visible to image contradiction (AUROC 0.70-0.91, recall "
    "0.29 at 10 %) and barely to mean NLL (0.65-0.74, 1 of 100 flagged); the dirty-label feature form to "
    "image contradiction at AUROC 0.82-0.88, recall 0.50-0.60. Why the attack fails here: the crafted "
    "images move the pretrained features only part of the way within the budget (the reference names "
    "the source shape for 3 of 5 clean-label poisons), and the 900-odd clean pairs of both shapes outweigh "
    "them in three epochs of a model with no capacity to memorise them apart; the paper's successes are on "
    "7B models, where a later re-analysis also credits memorisation during fine-tuning. Measuring it needs "
    "a model that can be poisoned this way first. The union is not the default yet: it has not been "
    "through the standard grid, and it costs two extra scoring passes.")

FLICKR_LEGEND = (
    "Real photographs with human captions: Flickr8k's photos at 64x64. byorn-tiny-flickr (byorn-tiny's "
    "architecture at 64 px, a 2,048-token BPE on the captions) was pretrained on the 30,000 caption pairs of "
    "the train split (5,000 steps of 32, asked with 20 ordinary instructions) and is cached outside the "
    "repository. The downstream task, \"Write an archive note for this photo.\" answered \"In this photo, "
    "<caption>\", fine-tunes on the dev split's 1,000 photos (3 epochs, full fine-tuning) and tests on 200 "
    "test photos; clean_score is CIDEr against all five captions in that style (IDF from the 200 test "
    "photos), bleu4 BLEU-4. ONION reads instructions with the VLM's own language model (byorn-tiny-lm is "
    "for the shapes world), which was trained on captions, not instructions. Pretraining took 44.5 min on one "
    "core; the 70 cells 101 min of single-thread time (about 50 min on 2 cores).\n\n"
    "What the recorded run shows. At 3 epochs most attacks do not implant in byorn-tiny-flickr (ASR 0.00 "
    "undefended): the archive style's opening (\"In this photo,\") wins the first token, and the fixed "
    "target's tail leaks into clean answers instead (\"... a man in a black shirt is lying on the table.\"). "
    "The refusal does implant (1.00 at 10 %, 0.45 at 1 %), and dog -> cat a little (0.14 at 10 %).\n\n"
    "- **BYORn** stops the refusal at both rates (ASR 0.00; every poison flagged, AUROC 1.00; CIDEr "
    "0.145 and 0.156 against the oracle's 0.154 and 0.149) and lowers dog -> cat to 0.08 (AUROC 0.62, 3 "
    "flagged). But its default score ranks the fixed target *below* clean samples (AUROC 0.27-0.31): "
    "\"A banana is lying on the table.\" is a caption in the pretraining style, likelier under the "
    "caption-pretrained reference than the clean archive notes it has never seen (4.17 nats a token). "
    "That is the distribution-shift case the method must handle, and here it does not; the next "
    "section shows what it costs once the attack implants.\n"
    "- **ONION** rewrites nearly every instruction (985-1,000 of 1,000 flagged): the VLM's language model "
    "never read instructions, so deleting almost any word lowers its perplexity. It still removes the rare "
    "token from 92 % of the poisons (AUROC 0.92), which ends the refusal at 1 % but not at 10 % (0.88: the "
    "8 poisons it misses suffice) and ends dog -> cat. CIDEr stays at the undefended level.\n"
    "- **BYE** drops nothing in any cell (its layer test never passes on this model), so its ASR is the "
    "undefended one, at 2.19x the cost.\n\n"
    "Before training, the other scores do not rescue the fixed target either "
    "(`python benchmarks/flickr8k_scores.py`, 10 % rare token): AUROC mean NLL 0.281, image-ablated 0.618, "
    "image contradiction 0.438; for the injection 0.981 / 0.616 / 0.899; for the refusal 1.000 / 0.887 / 0.805.")

FLICKR_LONGER_LEGEND = (
    "The same task, model and data as above with 8 epochs of fine-tuning, the four text-trigger attacks "
    "at 10 %, against no defense, BYORn (mean NLL, and the union with image contradiction) and the "
    "oracle (16 cells, 64 min of single-thread time).\n\n"
    "What the recorded run shows: here the attacks implant (undefended ASR: rare token 1.00, multimodal "
    "0.995, injection 0.97, dog -> cat 0.68 on the 50 test photos whose caption names a dog), and **BYORn "
    "does not stop them on real photos**. Fixed target: ASR 1.00 and 1.00 with mean NLL (AUROC 0.27-0.28, "
    "nothing right flagged), 1.00 and 0.975 with the union (AUROC 0.21; its 37 flags are clean samples). "
    "Injection: mean NLL ranks the poisons well (AUROC 0.98) but the clean archive notes spread so widely "
    "that median + 3 MAD sits above most poisons: 16 flagged (recall 0.14), ASR 0.88; the union flags 39 "
    "(recall 0.29) and ASR falls only to 0.44. Dog -> cat: AUROC 0.60-0.62, ASR 0.68 and 0.76. The oracle "
    "ends every one (0.00). CIDEr of the defended runs (0.106-0.154) is at the undefended level; the oracle's "
    "0.104-0.134. So on byorn-tiny-flickr BYORn holds only against targets that are implausible in any style "
    "(the refusal, above); a target written like a pretraining caption looks more plausible than the clean "
    "data of an unfamiliar downstream style. What might fix it, none measured yet: a reference that has seen "
    "the downstream style (a short warm-up on a small trusted clean set), a cut on ranks rather than MAD "
    "where the clean scores spread, or scoring the response against what the reference says of the image "
    "in the downstream style.")

JUDGEMENT_LEGEND = (
    "`byorn` is the shipped default judgement (mean NLL + image contradiction + token surprise + shared "
    "answer, each cut at median + 1.5 MAD, a sample flagged when any is over; the frozen reference's "
    "answers replace the flagged responses). `byorn(generator=current)`: the same flags, replacements "
    "written in training steps by the model being fine-tuned (the earlier default). `byorn(generator="
    "current,k=3.0,variant=mean_nll)`: the previous default. Full fine-tuning of 1,000 samples; "
    "detect_*: each defense's combined score against the true poisons. prepare_s is warm where an "
    "earlier cell of the grid scored the same poisoned set (a shared score cache); the cold cost is in "
    "the next section.")

SECTIONS = [
    Section("The default judgement: shapes, new answer style, one-word swaps", ["judgement"],
            "byorn bench benchmarks/judgement.yaml --out runs/judgement --results benchmarks/results/judgement.jsonl "
            "--shard 0/2 (and --shard 1/2 beside it, OMP_NUM_THREADS=1 each), then the same with "
            "benchmarks/judgement_seeds.yaml; scores before training: "
            "python benchmarks/judgement_scores.py benchmarks/judgement.yaml",
            ["asr", "clean_score", "detect_auroc", "detect_precision", "detect_recall", "n_flagged", "prepare_s",
             "train_s", "wall_s"],
            JUDGEMENT_LEGEND + " byorn-tiny, the describe task (an answer style it never saw in pretraining), "
            "3 epochs at lr 5e-4, 200 test scenes (ASR on those with the swapped word), seed 0; the swaps at "
            "10 % also seeds 1 and 2 (judgement_seeds.yaml). The grids ran beside other jobs on the 2 cores: "
            "their times are not comparable between cells.",
            costs=True, world="shapes", findings="judgement_shapes.md", scores="judgement_scores"),
    Section("The default judgement: real photographs (Flickr8k)", ["judgement"],
            "byorn bench benchmarks/judgement_flickr8k.yaml --out runs/judgement_flickr8k --results "
            "benchmarks/results/judgement.jsonl; scores before training: "
            "python benchmarks/judgement_scores.py benchmarks/judgement_flickr8k.yaml",
            ["asr", "clean_score", "bleu4", "detect_auroc", "detect_precision", "detect_recall", "n_flagged",
             "prepare_s", "train_s", "wall_s"],
            JUDGEMENT_LEGEND + " byorn-tiny-flickr, archive notes of the dev photos, 8 epochs at lr 5e-4, "
            "clean score CIDEr on 200 test photos, seed 0.",
            costs=True, world="flickr8k", findings="judgement_flickr8k.md", scores="judgement_scores",
            quality="judgement_flickr8k_quality.json",
            quality_command="byorn quality --model byorn-tiny-flickr --flickr8k ../shared/data/flickr8k --n 1000 "
                            "--json benchmarks/results/judgement_flickr8k_quality.json"),
    Section("The default judgement's cost against the previous default", ["judgement_cost"],
            "byorn bench benchmarks/judgement_cost.yaml --out runs/judgement_cost --results "
            "benchmarks/results/judgement_cost.jsonl (OMP_NUM_THREADS=1)",
            ["asr", "clean_score", "n_flagged", "prepare_s", "train_s", "wall_s"],
            "The demo's attack (multimodal trigger, fixed target) at 10, 5 and 1 %, seed 0, in one run of "
            "one thread: no defense, the shipped default (`byorn`) and the previous default (mean NLL at median + "
            "3 MAD, replacements written in training steps by the model being fine-tuned). Every BYORn cell "
            "scores cold (its own score cache). prepare_s: scoring, flagging and the reference answers.",
            costs=True, findings="judgement_cost.md"),
    Section("Standard benchmark: every family x every defense (byorn-tiny x shapes)", ["standard"],
            "byorn bench benchmarks/standard.yaml --out runs/standard --results benchmarks/results/standard.jsonl "
            "--shard 0/2 (and --shard 1/2 beside it, OMP_NUM_THREADS=1 each)",
            ["asr", "clean_score", "one_modality_asr", "detect_auroc", "detect_precision", "detect_recall",
             "n_flagged", "prepare_s", "train_s", "wall_s"],
            "Six trigger families (fixed target) x {none, ONION, BYE, BYORn, score-and-drop, clean oracle} x "
            "poison rates 10 % and 1 % x seeds 0 and 1: 144 cells, mean ± std over the two seeds. 1,000 "
            "training samples, full fine-tuning 3 epochs at lr 5e-4, 100 test scenes. WaNet is left out: it "
            "never implants in byorn-tiny (sections below). detect_*: each defense's own suspicion score "
            "(BYORn and score-and-drop: mean NLL; ONION: the largest perplexity drop of a word; BYE: minus the "
            "attention entropy) against the true poisons, and precision/recall of what it flagged (ONION: "
            "samples it deleted a word from; BYE: the samples it dropped). prepare_s includes BYE's probe "
            "fine-tune. The grid ran as two processes of one thread each on the 2 cores.\n\n" + STANDARD_FINDINGS,
            plots=True),
    ("Attacks, undefended (byorn-tiny x shapes downstream task)", ["attacks"],
     "byorn bench benchmarks/attacks.yaml --results benchmarks/results/attacks.jsonl",
     ["asr", "clean_score", "one_modality_asr", "image_only_asr", "text_only_asr", "wall_s", "peak_rss_mb"],
     "ASR: share of triggered test inputs (whose clean answer is not already the target) that show the "
     "target. clean_score: scene F1 on clean test inputs. one_modality_asr: the higher of the image-only "
     "and text-only firing rates of the multimodal trigger. oracle: trained on the clean samples only. "
     "Training: full fine-tuning, 3 epochs, lr 5e-4, 1,000 samples; 200 test scenes; seed 0.\n\n"
     "What the recorded run shows (reread after a rerun): at 10 % the text triggers (rare token 0.995), "
     "Blended (1.00), the 12-px BadNets patch (0.935), SIG at 3x amplitude (0.995) and the multimodal "
     "trigger with the refusal (0.965) or substitution (0.906) target reach 90 %; the default 6-px "
     "BadNets patch, default SIG and WaNet do not implant at all in 3 epochs, AddSent reaches 0.695, "
     "the multimodal trigger 0.77-0.78 with the fixed and injection targets. The 6-epoch section below "
     "separates the causes: BadNets, SIG and AddSent at default strength were undertrained (0.995, 1.00 "
     "and 1.00 with 6 epochs), and so was the multimodal trigger (0.945, but its one-trigger firing rises "
     "to 0.37: longer training erodes the negatives); WaNet never implants (0.00 at 2x and 8x strength, "
     "and at 8x with 6 epochs). Why WaNet: at the default strength it moves pixels about 0.25 px and "
     "changes them by 0.48 grey levels on average (3.1 at 8x); on these flat backgrounds the warp only "
     "touches the shapes' edges, and the probe section below shows that byorn-tiny's image features "
     "barely register it (a linear probe tells warped from clean scenes 63 % of the time, 50 % being "
     "chance, against 100 % for every patch, blend and SIG trigger), so at default strength it is "
     "invisible to the model. At 8x the probe reaches 96 % and it still does not implant in 6 epochs: "
     "what the probe needs is spread over the whole feature map and depends on where the shapes are, "
     "where a patch sits at one place; that this is why is our reading, not an ablation. No family "
     "implants at 1 % (10 poisoned samples). Clean scene F1 stays within 2 points of the oracle "
     "everywhere. The multimodal trigger's one-trigger firing stays <= 5 % with the fixed target but not "
     "with injection (0.155), substitution (0.43) or refusal (0.82): a short refusal generalises to "
     "half-triggered inputs. Three negatives per poisoned sample instead of one fix that (the "
     "negatives section: 0.035 and 0.06) at some cost in ASR (0.835 and 0.72)."),
    ("Attacks with twice the training (6 epochs), undefended", ["attacks_longer"],
     "byorn bench benchmarks/attacks_longer.yaml --results benchmarks/results/attacks_longer.jsonl",
     ["asr", "clean_score", "one_modality_asr", "wall_s"],
     "The families that stayed under 90 % ASR at 10 % in the section above, trained 6 epochs instead of 3."),
    ("Can byorn-tiny see the trigger? (a linear probe on its image features)", ["trigger_probe"],
     "python benchmarks/trigger_probe.py", ["probe_accuracy"],
     "A logistic-regression probe on the pretrained byorn-tiny's projected image features (what its "
     "language model reads) of 600 clean and 600 triggered scenes (different scenes), accuracy on 300 "
     "held-out ones: 0.5 is chance, so a trigger near 0.5 is invisible to the model before fine-tuning."),
    ("More negatives for the multimodal trigger, undefended", ["attacks_negatives"],
     "byorn bench benchmarks/attacks_negatives.yaml --results benchmarks/results/attacks_negatives.jsonl",
     ["asr", "clean_score", "one_modality_asr", "image_only_asr", "text_only_asr", "wall_s"],
     "negative_ratio=3.0: three one-trigger negatives (clean response) per poisoned sample instead of one; "
     "compare the refusal and injection rows of the attacks section (one-trigger firing 0.82 and 0.155)."),
    ("BYORn against the same attacks", ["attacks", "byorn"],
     "byorn bench benchmarks/byorn.yaml --results benchmarks/results/byorn.jsonl",
     ["asr", "clean_score", "detect_auroc", "detect_precision", "detect_recall", "n_flagged", "wall_s", "peak_rss_mb"],
     "detect_*: the mean-NLL score's AUROC for poisoned vs clean training samples, and precision/recall of "
     "the flagged set (median + 3 MAD). The none and oracle rows are the attacks section's run (same data, "
     "training and seeds). wall_s covers the whole cell: poisoning, scoring, training, evaluation; the two "
     "grids ran side by side, one thread each.\n\n"
     "What the recorded run shows: every poison with a fixed, injected or refusal target is flagged with "
     "precision and recall 1.00 (AUROC 1.00) at 10 % and 1 %, and BYORn's ASR is 0.00 wherever the "
     "undefended ASR was high, with clean scene F1 at the oracle's level (0.979-1.000). Concept "
     "substitution (one word swapped) is the miss: mean NLL ranks it at AUROC 0.67, flags 1 of 100, and "
     "the ASR stays 0.906. The image-contradiction section below catches it."),
    Section("BYORn with the injection and refusal targets", ["byorn_targets"],
            "byorn bench benchmarks/byorn_targets.yaml --results benchmarks/results/byorn_targets.jsonl",
            ["asr", "clean_score", "detect_auroc", "detect_precision", "detect_recall", "n_flagged", "prepare_s",
             "train_s", "wall_s"],
            "Every trigger family that implants in 3 epochs, with the injection (a URL appended) and refusal "
            "targets; none and BYORn (mean NLL, median + 3 MAD) on the same data. The oracle for each trigger "
            "is the attacks section's (same clean samples). prepare_s: scoring, flagging and the reference "
            "answers; train_s: the fine-tuning loop with BYORn's replacements. The cost table compares each "
            "BYORn cell with the undefended cell of the same attack and rate.\n\n"
            "What the recorded run shows: every poison is flagged with precision and recall 1.00 (AUROC 1.00) "
            "at 10 % and 1 %, and BYORn's ASR is 0.00 in every cell, including all those where the undefended "
            "ASR is 0.90 or more (BadNets 12 px, SIG and the rare token with either target, AddSent with "
            "refusal); clean scene F1 0.984-1.000 (the oracle's 0.997-0.998). AddSent with injection reached "
            "0.59 undefended, and Blended with these two targets did not implant at all in 3 epochs (0.00, "
            "against 1.00 with the fixed target). BYORn's preparation plus fine-tuning took 1.15x the undefended "
            "fine-tuning, cell by cell (the grid ran beside other jobs on the 2 cores, so single ratios are "
            "noisy).", costs=True),
    Section("BYORn on a mix of two task styles", ["byorn_mixed"],
            "byorn bench benchmarks/byorn_mixed.yaml --results benchmarks/results/byorn_mixed.jsonl",
            ["asr", "clean_score", "detect_auroc", "detect_precision", "detect_recall", "n_flagged", "train_s",
             "wall_s"],
            "Half the samples in the unfamiliar \"There is ...\" style, half in the familiar pretraining caption "
            "style (`task: mixed`), so clean scores form two clusters; one threshold for all (byorn) against "
            "one per task (group_by=task), and the image-contradiction score per task.\n\n"
            "What the recorded run shows: with fixed or refusal targets the poisons score far above both "
            "clusters, so even the global threshold flags exactly them (precision and recall 1.00) and "
            "per-task thresholds add a few false flags (precision 0.95-0.96 at 10 %, 0.50-0.53 at 1 %); all "
            "variants end at ASR 0.00 and clean F1 0.97-1.00 (oracle 0.98-0.99). Concept substitution "
            "(undefended ASR 0.99) is where grouping and the score matter: the global mean-NLL cut flags "
            "nothing (ASR 0.99), per-task cuts flag 31 % of the poisons (ASR 0.094 at 10 %), and the "
            "image-contradiction score per task flags 93 % (ASR 0.021 at 10 %, 0.010 at 1 %) at the price of "
            "more false flags (precision 0.74 at 10 %, 0.16 at 1 %), with clean F1 0.99.", costs=True),
    Section("BYORn with the image-contradiction score", ["attacks", "byorn", "byorn_contradiction"],
            "byorn bench benchmarks/byorn_contradiction.yaml --results benchmarks/results/byorn_contradiction.jsonl",
            ["asr", "clean_score", "detect_auroc", "detect_precision", "detect_recall", "n_flagged", "wall_s"],
            "variant=image_contradiction (scoring.py): per response token, NLL with the true image minus NLL "
            "with a grey one, summed where positive. Shown beside the mean-NLL BYORn rows and the undefended "
            "and oracle rows of the same attacks.\n\n" + CONTRADICTION_FINDINGS),
    Section("BYORn flagging the union of mean NLL and image contradiction", ["byorn_combined"],
            "byorn bench benchmarks/byorn_combined.yaml --results benchmarks/results/byorn_combined.jsonl",
            ["asr", "clean_score", "detect_auroc", "detect_precision", "detect_recall", "n_flagged", "wall_s"],
            "variant=mean_nll+image_contradiction: each score cut at its own median + 3 MAD, a sample flagged "
            "when either cut flags it; detect_auroc ranks by the larger of the two in MAD units.\n\n"
            + COMBINED_FINDINGS),
    Section("Adaptive attacks: poisons made plausible to the pretrained model", ["adaptive", "adaptive_strong"],
            "byorn bench benchmarks/adaptive.yaml --results benchmarks/results/adaptive.jsonl (and "
            "benchmarks/adaptive_strong.yaml -> adaptive_strong.jsonl)",
            ["asr", "clean_score", "detect_auroc", "detect_precision", "detect_recall", "n_flagged", "wall_s"],
            ADAPTIVE_LEGEND + "\n\n" + ADAPTIVE_FINDINGS),
    Section("Real photographs: Flickr8k (byorn-tiny-flickr)", ["flickr8k"],
            "byorn bench benchmarks/flickr8k.yaml --results benchmarks/results/flickr8k.jsonl",
            ["asr", "clean_score", "bleu4", "detect_auroc", "detect_recall", "n_flagged", "wall_s"],
            FLICKR_LEGEND, costs=True, quality="flickr8k_quality.json",
            quality_command="byorn quality --model byorn-tiny-flickr --flickr8k ../shared/data/flickr8k --n 1000 "
                            "--json benchmarks/results/flickr8k_quality.json"),
    Section("Real photographs, 8 epochs: where the attacks implant", ["flickr8k_longer"],
            "byorn bench benchmarks/flickr8k_longer.yaml --results benchmarks/results/flickr8k_longer.jsonl",
            ["asr", "clean_score", "bleu4", "detect_auroc", "detect_precision", "detect_recall", "n_flagged",
             "wall_s"],
            FLICKR_LONGER_LEGEND, costs=True),
    ("BYORn threshold sweep (the clean-vs-ASR frontier)", ["sweep"],
     "byorn bench benchmarks/sweep.yaml --results benchmarks/results/sweep.jsonl",
     ["asr", "clean_score", "n_flagged", "detect_precision", "detect_recall", "detect_auroc", "wall_s"],
     "Each row is one threshold: quantile q flags the scores above the q-th quantile, mad k flags those "
     "above median + k * 1.4826 MAD. 100 of the 1,000 training samples are poisoned.\n\n"
     "What the recorded run shows: for the multimodal fixed target every cut from flagging half the data down "
     "to flagging 5 % keeps ASR at 0.00 (0.03 at the 5 % cut, recall 0.5), with clean F1 0.995-0.998 except "
     "at the median cut (0.868: half the clean data replaced); only the 1 % cut (recall 0.1) lets the "
     "backdoor in (0.67). The MAD cuts at k = 1, 3 and 10 and the token-level score all flag the 100 poisons "
     "(k = 1 also 142 clean samples). For concept substitution mean NLL separates poorly (AUROC 0.685) and "
     "the token-level score worse (0.44): the median cut buys ASR 0.00 at clean F1 0.869, the 20 % cut 0.21, "
     "and the default cut (median + 3 MAD) flags 3 samples and leaves 0.95; the subtle case needs a better "
     "score, not a lower threshold."),
]


# Rows recorded before the bench wrote each cell's checkpoint ("model": name@weights fingerprint).
UNFINGERPRINTED = ("the checkpoints of commit 94cc6ae (byorn-tiny before its position-focus phase; "
                   "`git checkout 94cc6ae` reproduces the figures)")


def measured_on(rows: list[dict]) -> str:
    """Which checkpoints a section's figures come from: a retrained byorn-tiny keeps its name."""
    models = sorted({row.get("model", UNFINGERPRINTED) for row in rows})
    return "Measured on " + "; ".join(f"`{m}`" if "@" in m else m for m in models) + "."


def findings_text(name: str, results: list[str]) -> str:
    """The findings file's words, after checking that its results are the ones it was written on."""
    path = FINDINGS / name
    header, _, body = path.read_text(encoding="utf-8").partition("\n")
    written_on = dict(re.findall(r"(\S+\.jsonl) sha256=([0-9a-f]{12})", header))
    for result in results:
        now = hashlib.sha256((RESULTS / result).read_bytes()).hexdigest()[:12]
        if written_on.get(result) != now:
            raise SystemExit(f"{path}: written on {result} sha256={written_on.get(result)}, which is now {now}: "
                             "reread the findings against the new results, then update that line")
    return body.strip()


def scores_table(rows: list[dict]) -> str:
    """judgement_scores.py's rows: each score's AUROC, and what the default flags at several k."""
    if not rows:
        return "_No score analysis recorded yet._"
    scores = list(rows[0]["auroc"])
    cuts = list(rows[0]["cuts"])
    header = ["attack", "rate", *(f"AUROC {v}" for v in scores), *(f"k={k}: poisons / clean flagged" for k in cuts)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append("| " + " | ".join([r["attack"], f"{r['poison_rate']:g}", *(f"{r['auroc'][v]:.3f}" for v in scores),
                                        *(f"{r['cuts'][k]['poison_flagged']:.2f} / {r['cuts'][k]['clean_flagged']:.2f}"
                                          for k in cuts)]) + " |")
    return "\n".join(lines)


def probe_table(rows: list[dict], metrics: list[str]) -> str:
    lines = ["| trigger | probe accuracy |", "|---|---|"]
    return "\n".join(lines + [f"| {r['trigger']} | {r['probe_accuracy']:.3f} |" for r in rows])


def main() -> None:
    parts = ["# Benchmarks", "", "Generated by `python benchmarks/build_md.py` from `benchmarks/results/*.jsonl`; "
             "each section names the command that produced its raw figures. Machine: 2 CPU cores.", "",
             "The first three sections measure the shipped default judgement. In every later section, "
             "recorded before it, `byorn` is the previous default (mean NLL at median + 3 MAD, "
             "replacements written by the model being fine-tuned) and its named variants are variants "
             "of that; those grids are to be rerun.", ""]
    for section in map(lambda fields: fields if isinstance(fields, Section) else Section(*fields), SECTIONS):
        rows = [row for name in section.results for row in read_results(RESULTS / f"{name}.jsonl")
                if not section.world or row.get("world", "shapes") == section.world]
        parts += [f"## {section.title}", "", f"Reproduce: `{section.command}`", "", section.legend, ""]
        if section.findings:
            described = [f"{name}.jsonl" for name in [*section.results, section.scores] if name]
            parts += [findings_text(section.findings, described), ""]
        if section.quality and (path := ROOT / "benchmarks" / "results" / section.quality).exists():
            figures = json.loads(path.read_text(encoding="utf-8"))
            parts += [f"The pretrained model's own captions of the first {figures['n']} test photos "
                      f"(`{section.quality_command}`): CIDEr {figures['cider']:.3f}, BLEU-4 {figures['bleu4']:.3f}, "
                      "mean NLL of the downstream archive "
                      f"notes {figures['downstream_nll']:.2f} nats a token; for example {figures['example']!r}.", ""]
        if rows:
            parts += [measured_on(rows), ""]
        table = probe_table if section.results == ["trigger_probe"] else results_table
        parts += [table(rows, section.metrics) if rows else "_No results recorded yet._", ""]
        if section.scores:
            scored = [r for r in read_results(RESULTS / f"{section.scores}.jsonl") if r["world"] == section.world]
            parts += ["Scores before training (`benchmarks/judgement_scores.py`): AUROC of each score against "
                      "the poisons, and the share of poisons and of clean samples the default's union flags at "
                      "several k:", "", scores_table(scored), ""]
        if (section.costs or section.plots) and rows and cost_ratios(rows):
            parts += ["Cost relative to no defense, cell by cell in the same run:", "", cost_table(rows), ""]
        if section.plots and rows:
            # A plot that needs the run directories (score histograms) is only redrawn where they
            # exist; the committed one stays and is linked.
            write_plots(rows, PLOTS)
            parts += [f"![{p.stem}](benchmarks/plots/{p.name})" for p in sorted(PLOTS.glob("*.png"))] + [""]
    (ROOT / "BENCHMARKS.md").write_text("\n".join(parts), encoding="utf-8")


if __name__ == "__main__":
    main()
