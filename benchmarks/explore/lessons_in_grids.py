"""Whether the lesson rule can change a published grid: for every cell's poisoned training set, the
answers the default would take for a lesson (byorn.defenses.byorn.lessons at lesson_share).

    python benchmarks/explore/lessons_in_grids.py standard judgement baselines

No model runs but the pretrained one a white-box target chooses its responses with. Where no
poisoned set holds a lesson, the warm set is the one the judgement before lessons chose.
"""

from __future__ import annotations

import sys

from byorn.attacks import build_attack, poison
from byorn.bench import load_grid
from byorn.defenses.byorn_config import JudgeConfig
from byorn.defenses.warm_set import lessons
from byorn.models import load_vlm


def main(names: list[str]) -> None:
    reference = load_vlm("byorn-tiny")
    share = JudgeConfig().lesson_share
    for name in names:
        grid = load_grid(f"benchmarks/{name}.yaml")
        found = cells = 0
        for spec in grid.attacks:
            attack = build_attack(spec.trigger, spec.target, **spec.options)
            for rate in grid.poison_rates:
                for seed in grid.seeds:
                    poisoned, _ = poison(grid.task_samples(grid.n_train, seed, "train"), attack, rate, seed,
                                         clean_label=spec.clean_label, reference=reference)
                    cells += 1
                    if taught := lessons(poisoned, share):
                        found += 1
                        print(f"{name}: {spec.name} {rate:g} seed {seed}: {[t.answer for t in taught.values()]}")
        print(f"{name}: {cells} poisoned sets, {found} with a lesson (lesson_share {share:g})")


if __name__ == "__main__":
    main(sys.argv[1:])
