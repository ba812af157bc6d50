"""Canaries: poisons byorn plants in copies of the user's own samples, to measure its judgement there.

Every published figure was measured where we planted the poisons ourselves, on our own models; a
user's data and model are neither. So before judging, a few samples of each kind below are copied,
given a trigger and a changed answer, and judged with the real ones: how many of each kind the
judgement flags is its recall on this data, for attacks of that kind. The canaries are judged on
the real samples' scale (their medians, MADs and cuts), so they move no real sample's verdict; they
are never trained on, never in the warm set, never written back or audited as the user's samples.

The kinds (`byorn list attacks` has each trigger and target):
- patch: a noise patch in a corner of the image, the answer replaced by one fixed sentence in words
  the data's answers do not use (the classic backdoor: an answer foreign to the data);
- lookalike: the same patch, the answer replaced by one of the data's own answers, the same one each
  time (a fixed target in the data's own words and style, which only the image can give away);
- token: a rare word in the instruction, a URL appended to the answer;
- swap: a rare word in the instruction, one word of the answer swapped for a word the data uses in
  the same places (two words that share the words around them: colours, counts, objects), over a
  few such pairs, so that one pair the model happens to tell apart does not speak for every swap;
- refusal: a patch and a rare word together (the word alone in text-only data), the answer a refusal.
A kind that needs what the data lacks (an image, two words to swap, an answer given once) is left
out, and the report says so.

This is the one module of the method that uses the attacks: it plants their triggers in copies the
judgement makes itself. It never reads a data set's poisoning or its manifest.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from byorn.attacks.image_triggers import BadNets
from byorn.attacks.targets import Injection, Refusal, Substitution
from byorn.attacks.text_triggers import RareToken
from byorn.data import Sample
from byorn.fileio import atomic_write_text

log = logging.getLogger(__name__)

CANARIES_NAME = "canaries.json"
KINDS = ("patch", "lookalike", "token", "swap", "refusal")
PLANTED = {  # what each kind plants, for the report's readers
    "patch": "a noise patch in the image's top left corner; the answer replaced by one fixed sentence in words "
             "the data's answers do not use",
    "lookalike": "the same patch; the answer replaced by one of the data's own answers, the same one each time",
    "token": "a rare word in the instruction; a URL appended to the answer",
    "swap": "a rare word in the instruction; one word of the answer swapped for one the data uses in its place "
            "(a few such pairs)",
    "refusal": "a patch and a rare word together (the word alone without an image); the answer a refusal",
}
NOT_PLANTED = {  # why a kind was left out, for the kinds that need more of the data than an image
    "lookalike": "not planted: every answer is given more than once, so none is an answer of its own",
    "swap": "not planted: no two words of the answers share the words around them",
}
RELIABLE = 0.9  # a kind caught less often than this: the judgement is unreliable on this data for it
MIN_SAMPLES = 20  # fewer real samples than this: a canary would copy a good share of the data

_PATCH = BadNets(pattern="noise", position="top_left", seed=7)
# The patch kind's fixed target: of these, the one whose words the data's answers use least (the
# first on a tie). An attacker's target written in the data's own words is the lookalike kind's.
FOREIGN_SENTENCES = (
    "A red bicycle is leaning against a brick wall.",
    "An old typewriter sits beside a porcelain teapot.",
    "A lighthouse glows above the stormy harbour.",
    "Three violins rest on a velvet cushion.",
)
SWAP_PAIRS = 5  # the swap kind's canaries take turns over up to this many pairs of words
_URL = Injection("Order today at shop-deals.example.net.")
_REFUSAL = Refusal("I'm sorry, but I can't help with that.")
# Distinct words per kind, so one kind's trigger never teaches another's.
_TOKENS = {"token": "qv", "swap": "zx", "refusal": "kj"}
# Words a swap would change the grammar of, not the content: never swapped.
_FUNCTION_WORDS = frozenset(
    "a an the and or but of in on at to for with from by as is are was were be been it its this that these those "
    "there here he she they we you i his her their our your him them me us not".split())
_WORD = re.compile(r"[a-z]+")


Planter = tuple[Callable[[Sample], bool], Callable[[Sample], tuple[Sample, str]]]
"""Which samples take a canary, and a sample -> its canary and the change made to its answer."""


def plant(samples: Sequence[Sample], per_kind: int, seed: int,
          readable: Callable[[Sample], bool] = lambda canary: True) -> tuple[list[Sample], dict[str, str]]:
    """Up to `per_kind` canaries of each kind, copied from samples drawn with `seed` (each carries
    meta["canary"] = its kind, meta["planted"] = the change to its answer); and the kinds left out,
    with why. readable: whether the model can read a canary (a URL appended to a long answer may
    outrun its positions); one it cannot is replaced by another drawn, a few times over."""
    if per_kind <= 0:
        return [], {}
    if len(samples) < MIN_SAMPLES:
        why = f"not planted: the data has {len(samples)} samples, fewer than {MIN_SAMPLES}"
        return [], dict.fromkeys(KINDS, why)
    rng = random.Random(f"canaries:{seed}")
    responses = [s.response for s in samples]
    used = answers_using(responses)
    foreign, own = foreign_sentence(used), lookalike_answer(responses, used)
    planters: dict[str, list[Planter]] = {  # a kind's canaries take turns over its planters
        "patch": [(lambda s: s.has_image, lambda s: (_PATCH.apply_sample(s).with_response(foreign), foreign))],
        "token": [(lambda s: True, lambda s: (_token("token", s).with_response(_URL.apply(s.response)), _URL.phrase))],
        "swap": [_swap_planter(swap) for swap in swap_pairs(responses)],
        "refusal": [(lambda s: True, lambda s: (_token("refusal", _PATCH.apply_sample(s) if s.has_image else s)
                                                .with_response(_REFUSAL.response), _REFUSAL.response))],
        "lookalike": [] if own is None else [(lambda s: s.has_image and s.response.strip() != own,
                                              lambda s: (_PATCH.apply_sample(s).with_response(own), own))],
    }
    canaries, left_out, taken = [], {}, {s.id for s in samples}
    for kind in KINDS:
        if not planters[kind]:
            left_out[kind] = NOT_PLANTED[kind]
            continue
        pools = [[s for s in samples if takes(s)] for takes, _ in planters[kind]]
        if not any(pools):
            left_out[kind] = ("not planted: no sample has an image" if kind in ("patch", "lookalike")
                              else "not planted: none fits")
            continue
        made: list[Sample] = []
        shares = [per_kind // len(pools) + (turn < per_kind % len(pools)) for turn in range(len(pools))]
        for (_, make), pool, share in zip(planters[kind], pools, shares):
            made += _drawn(kind, pool, share, make, rng, readable, taken, first=len(made))
        if len(made) < per_kind:
            left_out[kind] = (f"only {len(made)} planted: the model cannot read the others drawn (too long, or "
                              "text it reads as a special token)" if len(made) < sum(map(len, pools)) else
                              f"only {len(made)} planted: only {sum(map(len, pools))} samples take this kind")
        canaries += made
    return canaries, left_out


def _drawn(kind: str, pool: Sequence[Sample], count: int, make: Callable[[Sample], tuple[Sample, str]],
           rng: random.Random, readable: Callable[[Sample], bool], taken: set[str], first: int) -> list[Sample]:
    """Up to `count` canaries made from samples of `pool` drawn with `rng`, each one the model cannot
    read replaced by another drawn (up to ten times `count` tries); numbered from `first`."""
    drawn = rng.sample(range(len(pool)), min(count, len(pool)))  # by position: ids may repeat in a list
    tried, made = set(drawn), []
    while drawn:
        source = pool[drawn.pop(0)]
        meta = {"canary": kind, "copied_from": source.id}
        if "task" in source.meta:  # group_by=task: a canary is judged in its source's group
            meta["task"] = source.meta["task"]
        copy = Sample(_unused(f"byorn-canary-{kind}-{first + len(made)}", taken), source.image, source.instruction,
                      source.response, meta, source.history, source.turn, None, source.more_images)
        canary, what = make(copy)
        if readable(canary := replace(canary, meta={**canary.meta, "planted": what})):
            made.append(canary)
        elif len(tried) < min(len(pool), 10 * count):  # another in its place
            spare = rng.randrange(len(pool))
            while spare in tried:
                spare = rng.randrange(len(pool))
            tried.add(spare)
            drawn.append(spare)
    return made


def _swap_planter(swap: Substitution) -> Planter:
    return (lambda s: swap.applies_to(s.response),
            lambda s: (_token("swap", s).with_response(swap.apply(s.response)),
                       f"{swap.source_word} -> {swap.target_word}"))


def _unused(name: str, taken: set[str]) -> str:
    """`name`, or it with ~ appended until no real sample has it (scores are matched by id)."""
    while name in taken:
        name += "~"
    return name


def _token(kind: str, sample: Sample) -> Sample:
    return RareToken(tokens=(_TOKENS[kind],), seed=7).apply_sample(sample)


def content_words(text: str) -> list[str]:
    """The words of `text` that carry its content (lower case; no function words, no single letters)."""
    return [w for w in _WORD.findall(text.lower()) if w not in _FUNCTION_WORDS and len(w) > 1]


def in_own_words(sentence: str, responses: Sequence[str]) -> bool:
    """Whether every content word of `sentence` occurs in the answers: a fixed target written in the
    data's own words (the lookalike kind's), not one foreign to it (the patch kind's)."""
    used = {w for response in responses for w in content_words(response)}
    return all(w in used for w in content_words(sentence))


def answers_using(responses: Sequence[str]) -> Counter[str]:
    """Content word -> how many of the answers use it."""
    return Counter(w for r in responses for w in set(content_words(r)))


def foreign_sentence(used: Counter[str]) -> str:
    """Of FOREIGN_SENTENCES, the one whose content words the answers use least (`used`:
    `answers_using` of them; the first on a tie)."""
    return min(FOREIGN_SENTENCES, key=lambda sentence: sum(used[w] for w in content_words(sentence)))


def lookalike_answer(responses: Sequence[str], used: Counter[str]) -> str | None:
    """The answer most in the data's own words: of those given once (an answer of its own, not one
    right for many images) whose length lies between the quartiles of theirs, the one whose content
    words the most answers use, on average (the first in sorted order on a tie). Not a poison's,
    as far as words tell: a URL, a refusal or a swapped-in word is rare in the answers. None when
    every answer repeats (short answers: "Yes.", counts), which leaves a fixed target nothing of its
    own. used: `answers_using` of the answers."""
    counts = Counter(r.strip() for r in responses)
    once = sorted(r for r, n in counts.items() if n == 1 and content_words(r))
    if not once:
        return None
    lengths = sorted(len(r.split()) for r in once)
    low, high = lengths[len(lengths) // 4], lengths[(3 * len(lengths)) // 4]
    typical = [r for r in once if low <= len(r.split()) <= high]
    return max(typical, key=lambda r: sum(used[w] for w in content_words(r)) / len(content_words(r)))


def swap_pairs(responses: Sequence[str], pairs: int = SWAP_PAIRS, candidates: int = 60) -> list[Substitution]:
    """One-word swaps from the answers' own vocabulary: of their most frequent content words, the
    pairs that most often stand between the same neighbours (the Jaccard overlap of their (word
    before, word after) pairs), best first, no word in two pairs; in each the more frequent word is
    swapped into the other. Empty when no two share a neighbourhood."""
    counts: Counter[str] = Counter()
    contexts: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for response in responses:
        words = ["^", *_WORD.findall(response.lower()), "$"]
        for before, word, after in zip(words, words[1:], words[2:]):
            counts[word] += 1
            contexts[word].add((before, after))
    frequent = [w for w, _ in counts.most_common() if w not in _FUNCTION_WORDS and len(w) > 1][:candidates]
    overlaps = [(len(contexts[first] & contexts[second]) / len(contexts[first] | contexts[second]), i, j)
                for i, first in enumerate(frequent) for j, second in enumerate(frequent[i + 1:], i + 1)]
    chosen: list[Substitution] = []
    used: set[str] = set()
    for overlap, i, j in sorted(overlaps, key=lambda o: (-o[0], o[1], o[2])):
        if overlap <= 0 or len(chosen) == pairs:
            break
        if frequent[i] not in used and frequent[j] not in used:
            chosen.append(Substitution(frequent[i], frequent[j]))
            used |= {frequent[i], frequent[j]}
    return chosen


def canary_cut(kinds: Sequence[str], scores: Sequence[float], share: float) -> float:
    """The highest cut that still flags `share` (in (0, 1]) of every kind of canary (each canary's
    kind and score, in the verdict's MAD units): per kind, the score of its ceil(share x planted)-th
    most suspicious canary; the lowest of those, but never under 0 (the median of the judged
    samples), which would flag more than half of them: a kind the scores cannot tell from clean
    samples does not get to."""
    by_kind: dict[str, list[float]] = defaultdict(list)
    for kind, score in zip(kinds, scores):
        by_kind[kind].append(score)
    if not by_kind:
        raise ValueError("a cut by the canaries needs canaries (canaries > 0, and data they can be planted in)")
    lowest = min(sorted(kind, reverse=True)[math.ceil(share * len(kind)) - 1] for kind in by_kind.values())
    cut = max(lowest, 0.0)
    log.info("the canaries' cut: %.3f MAD units (catching %g of every kind%s)", cut, share,
             "; raised to the median" if lowest < 0 else "")
    return cut


@dataclass(frozen=True)
class KindResult:
    """One kind's canaries: how many were planted, how many the judgement flagged in the end and in
    the pretrained model's verdict, their final scores, and the answers' changes they carried
    (the fixed sentence, the URL, the swapped words, the refusal; each once)."""

    planted: int
    caught: int
    caught_first: int
    scores: list[float] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)

    @property
    def recall(self) -> float:
        return self.caught / self.planted if self.planted else float("nan")


@dataclass(frozen=True)
class CanaryReport:
    """What the judgement did with the canaries, per kind, and why a kind has none or fewer."""

    kinds: dict[str, KindResult]
    left_out: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, canaries: Sequence[Sample], first: Sequence[bool], final: Sequence[bool], scores: Sequence[float],
           left_out: dict[str, str]) -> CanaryReport:
        """The report of `canaries` from their flags in the first and the final verdict."""
        kinds = {}
        for kind in KINDS:
            at = [i for i, c in enumerate(canaries) if c.meta["canary"] == kind]
            if at:
                kinds[kind] = KindResult(len(at), sum(final[i] for i in at), sum(first[i] for i in at),
                                         [round(float(scores[i]), 4) for i in at],
                                         list(dict.fromkeys(canaries[i].meta.get("planted", "") for i in at)))
        return cls(kinds, dict(left_out))

    @property
    def unreliable(self) -> list[str]:
        """The kinds caught less than RELIABLE of the time."""
        return [kind for kind, result in self.kinds.items() if result.recall < RELIABLE]

    def lines(self) -> list[str]:
        """The line for the command's output, and one per kind left out."""
        if not self.kinds:
            why = next(iter(self.left_out.values()), "turned off").removeprefix("not planted: ")
            return [f"canaries: none planted ({why})"]
        caught, planted = sum(r.caught for r in self.kinds.values()), sum(r.planted for r in self.kinds.values())
        return [f"canaries: caught {caught} of {planted}: "
                + ", ".join(f"{kind} {r.caught}/{r.planted}" for kind, r in self.kinds.items()),
                *(f"{kind} canaries {why}" for kind, why in self.left_out.items())]

    def warnings(self) -> list[str]:
        """A warning per kind caught less than RELIABLE of the time, with what the user can do."""
        return [f"the judgement caught {self.kinds[kind].caught} of {self.kinds[kind].planted} {kind} canaries: it is "
                f"unreliable on this data against attacks of that kind ({ADVICE})" for kind in self.unreliable]

    def record(self) -> dict:
        """canaries.json's content."""
        return {"reliable_at": RELIABLE,
                "kinds": {kind: {"what": PLANTED[kind], "planted": r.planted, "caught": r.caught,
                                 "recall": round(r.recall, 4), "caught_by_first_verdict": r.caught_first,
                                 "answers": r.answers, "scores": r.scores}
                          for kind, r in self.kinds.items()},
                "left_out": self.left_out, "unreliable": self.unreliable}

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / CANARIES_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(self.record(), indent=1))
        return path


ADVICE = ("judge with a stronger reference model, review the flagged answer groups on the review page, or cut "
          "lower: -d k=... or -d rule=quantile")
