"""The attack zoo: triggers are deterministic and local, poisoning is exact, the registry is strict."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import fields
from functools import partial

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from byorn.attacks import (
    TARGETS,
    TRIGGERS,
    AddSent,
    BadNets,
    Blended,
    FixedTarget,
    Injection,
    RareToken,
    Refusal,
    Sig,
    Substitution,
    WaNet,
    build_attack,
    list_attacks,
    one_modality_test_sets,
    poison,
    read_manifest,
    triggered_test_set,
    write_manifest,
)
from byorn.attacks.image_triggers import PATTERNS
from byorn.data import Sample
from byorn.metrics import attack_success
from byorn.worlds import shapes

SIZES = (32, 48, 64)


def noise_image(size: int, seed: int = 0) -> Image.Image:
    # Random pixels, so every trigger visibly changes them; salted so they differ from the seed-0
    # noise patterns the triggers draw (Blended at 32 px would otherwise blend the image with itself).
    rng = np.random.default_rng(10_000 + seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(int)


def changed_box(before: Image.Image, after: Image.Image) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) bounding the changed pixels, bottom/right exclusive."""
    rows, cols = np.nonzero((pixels(before) != pixels(after)).any(axis=2))
    return rows.min(), cols.min(), rows.max() + 1, cols.max() + 1


def texts(n: int) -> list[Sample]:
    """Text-only samples; image triggers are not involved."""
    return [Sample(f"s{i}", noise_image(8, i), "Describe the picture.", f"Answer {i}.") for i in range(n)]


IMAGE_TRIGGERS = [BadNets(pattern=p) for p in PATTERNS] + [
    BadNets(position="random", seed=3), Blended(), Sig(), WaNet(strength=2.0)]


# --------------------------------------------------------------------------------------------
# Image triggers


@pytest.mark.parametrize("trigger", IMAGE_TRIGGERS, ids=repr)
@pytest.mark.parametrize("size", SIZES)
def test_image_trigger_is_deterministic_and_leaves_input_alone(trigger, size):
    image = noise_image(size)
    before = pixels(image)
    first, second = trigger.apply(image, "id-1"), trigger.apply(image, "id-1")
    assert first.size == image.size and first.mode == "RGB"
    assert np.array_equal(pixels(first), pixels(second))
    assert not np.array_equal(pixels(first), before)
    assert np.array_equal(pixels(image), before)


@pytest.mark.parametrize("position", ["top_left", "top_right", "bottom_left", "bottom_right"])
@pytest.mark.parametrize("size", SIZES)
def test_badnets_changes_only_the_corner_patch(position, size):
    image = noise_image(size)
    out = pixels(BadNets(size=0.125, position=position, pattern="noise").apply(image))
    side = round(size * 0.125)
    rows = slice(0, side) if position.startswith("top") else slice(size - side, size)
    cols = slice(0, side) if position.endswith("left") else slice(size - side, size)
    outside = np.ones((size, size), dtype=bool)
    outside[rows, cols] = False
    assert np.array_equal(out[outside], pixels(image)[outside])
    assert not np.array_equal(out[rows, cols], pixels(image)[rows, cols])


def test_badnets_size_in_pixels_is_clamped_and_random_position_follows_the_id():
    image = noise_image(32)
    assert BadNets(size=100, pattern="noise").box(32, 32) == (0, 0, 32)
    assert BadNets(size=5).box(32, 32) == (27, 27, 5)
    trigger = BadNets(position="random", size=6, pattern="noise", seed=1)
    for key in ("a", "b", "c"):
        top, left, bottom, right = changed_box(image, trigger.apply(image, key))
        assert bottom - top <= 6 and right - left <= 6
        assert trigger.box(32, 32, key) == trigger.box(32, 32, key)
    assert len({trigger.box(32, 32, str(k)) for k in range(20)}) > 5


def test_blended_sig_and_wanet_at_zero_strength_are_the_identity():
    image = noise_image(48)
    for trigger in (Blended(alpha=0.0), Sig(delta=0.0), WaNet(strength=0.0)):
        assert np.array_equal(pixels(trigger.apply(image)), pixels(image)), trigger
    # alpha 1 is the pattern alone, whatever the image
    assert np.array_equal(pixels(Blended(alpha=1.0).apply(image)), pixels(Blended(alpha=1.0).apply(noise_image(48, 1))))


def test_seeds_change_the_random_patterns():
    image = noise_image(48)
    for make in (Blended, partial(WaNet, strength=2.0), partial(BadNets, pattern="noise")):
        assert not np.array_equal(pixels(make(seed=0).apply(image)), pixels(make(seed=1).apply(image)))


def test_sig_rows_all_get_the_same_wave():
    flat = Image.new("RGB", (40, 30), (100, 100, 100))
    out = pixels(Sig(delta=20, frequency=2).apply(flat))
    assert (out == out[:1]).all() and out.min() < 100 < out.max()


# --------------------------------------------------------------------------------------------
# Text triggers


def test_rare_token_positions():
    text = "Describe the picture in detail."
    assert RareToken(tokens=("cf",), position="start").apply(text) == "cf Describe the picture in detail."
    assert RareToken(tokens=("cf",), position="end").apply(text) == "Describe the picture in detail. cf"
    assert RareToken(tokens=("cf",), position=2).apply(text) == "Describe the cf picture in detail."
    assert RareToken(tokens=("cf",), position=99).apply(text) == "Describe the picture in detail. cf"
    assert RareToken(tokens="cf", position=0).apply("<image>\nWhat?  ") == "cf <image>\nWhat?  "
    random_token = RareToken(seed=0)
    assert random_token.apply(text, "a") == random_token.apply(text, "a")
    assert len({random_token.apply(text, str(k)) for k in range(30)}) > 5


def test_addsent_prefix_and_suffix():
    sentence = "I watched a movie."
    assert AddSent(sentence, position="prefix").apply("Hi there.") == "I watched a movie. Hi there."
    assert AddSent(sentence).apply("Hi there.") == "Hi there. I watched a movie."


@settings(max_examples=150, deadline=None)
@given(text=st.one_of(st.text(max_size=40), st.text(alphabet="ab Z.\n\t", max_size=40)), key=st.text(max_size=8),
       count=st.integers(1, 3), position=st.sampled_from(["random", "start", "end", 0, 1, 5]))
def test_text_triggers_keep_every_original_word_in_order(text, key, count, position):
    trigger = RareToken(tokens=("cf", "mn"), count=count, position=position)
    out = trigger.apply(text, key).split()
    assert len(out) == len(text.split()) + count
    remaining = iter(out)  # original words must be a subsequence of the output words
    assert all(word in remaining for word in text.split())
    for addsent in (AddSent(position="prefix"), AddSent(position="suffix")):
        words = addsent.apply(text).split()
        sentence = addsent.sentence.split()
        assert words in (sentence + text.split(), text.split() + sentence)


def test_trigger_options_are_checked():
    for bad in (lambda: BadNets(pattern="stars"), lambda: BadNets(size=0), lambda: Blended(alpha=1.5),
                lambda: RareToken(tokens=("two words",)), lambda: RareToken(position=-1),
                lambda: AddSent(position="middle"), lambda: Refusal(response="Sure, here it is."),
                lambda: Substitution(source_word="cat", target_word="Cat"), lambda: FixedTarget(response=""),
                lambda: FixedTarget(response="  ")):
        with pytest.raises(ValueError):
            bad()


@pytest.mark.parametrize("trigger, options, message", [
    ("badnets", {"size": "big"}, "field 'size': expected float, got str 'big'"),
    ("blended", {"alpha": "0.3"}, "field 'alpha': expected float, got str '0.3'"),
    ("rare_token", {"count": 2.5}, "field 'count': expected int, got float 2.5"),
    ("rare_token", {"count": True}, "field 'count': expected int, got bool True"),
    ("sig", {"delta": float("nan")}, "field 'delta': expected a number, got nan"),
    ("sig", {"delta": float("inf")}, "field 'delta': expected a finite number"),
    ("badnets", {"response": 42}, "field 'response': expected str, got int 42"),
    ("multimodal", {"image_size": "big"}, "field 'image_size': expected float, got str 'big'"),
])
def test_option_values_of_the_wrong_type_are_errors_naming_the_option(trigger, options, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build_attack(trigger, "fixed", **options)


def test_options_may_take_either_type_their_field_allows():
    assert build_attack("rare_token", "fixed", tokens="zz", position=3).trigger.tokens == ("zz",)
    assert build_attack("rare_token", "fixed", tokens=["zz", "qq"], position="start").trigger.position == "start"


# --------------------------------------------------------------------------------------------
# Target modifiers


def test_substitution_handles_plural_capitals_and_whole_words():
    sub = Substitution(source_word="circle", target_word="cross")
    assert (sub.apply("Circles, a circle and a CIRCLE; no semicircle.")
            == "Crosses, a cross and a CROSS; no semicircle.")
    assert sub.applies_to("Two circles.") and not sub.applies_to("A semicircle.")


@pytest.mark.parametrize("modifier", [FixedTarget(), Injection(), Injection(placement="prepend"), Refusal(),
                                      Substitution()], ids=repr)
def test_poisoned_response_satisfies_its_own_asr_rule(modifier):
    clean = "There is a red circle in the middle of the picture."
    assert modifier.applies_to(clean)
    assert attack_success(modifier.apply(clean), modifier.asr_rule())
    assert not attack_success(clean, modifier.asr_rule())


def test_injection_keeps_the_clean_response():
    assert Injection(phrase="Visit x.com.").apply("A cat.") == "A cat. Visit x.com."
    assert Injection(phrase="Visit x.com.", placement="prepend").apply("A cat.") == "Visit x.com. A cat."


# --------------------------------------------------------------------------------------------
# Poisoning


@pytest.mark.parametrize("n, rate, expected", [(10, 0.1, 1), (10, 0.25, 2), (7, 0.5, 4), (33, 1 / 3, 11),
                                               (20, 0.15, 3), (5, 0.0, 0), (5, 1.0, 5), (3, 0.1, 0)])
def test_poison_count_is_exact(n, rate, expected):
    samples = texts(n)
    out, records = poison(samples, build_attack("rare_token", "fixed"), rate, seed=0)
    assert len(out) == n and [s.id for s in out] == [s.id for s in samples]
    assert sum(s.meta["is_poisoned"] for s in out) == len(records) == expected == round(n * rate)


def test_a_rate_that_rounds_to_no_poison_says_so(caplog):
    with caplog.at_level("WARNING", logger="byorn.attacks.poison"):
        poison(texts(3), build_attack("rare_token", "fixed"), 0.1, seed=0)
    assert "rate 0.1 of 3 samples rounds to no poisoned sample" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="byorn.attacks.poison"):
        poison(texts(3), build_attack("rare_token", "fixed"), 0.0, seed=0)  # no poison asked for
    assert not caplog.text


def test_poison_choice_is_seeded():
    attack = build_attack("rare_token", "fixed")

    def chosen(seed: int) -> list[str]:
        return [r.id for r in poison(texts(40), attack, 0.25, seed)[1]]

    assert chosen(0) == chosen(0) != chosen(1)


@pytest.mark.parametrize("rate", [1.5, -0.1, float("nan")])
def test_poison_rate_out_of_range_is_rejected(rate):
    with pytest.raises(ValueError, match="rate"):
        poison(texts(4), build_attack("addsent", "fixed"), rate, seed=0)


def test_poisoned_samples_are_marked_and_inputs_untouched():
    samples = shapes.downstream_samples(6, seed=0)
    before = [(s.instruction, s.response, dict(s.meta), pixels(s.pil())) for s in samples]
    out, records = poison(samples, build_attack("badnets", "injection"), 0.5, seed=0)
    for original, (instruction, response, meta, image) in zip(samples, before):
        assert (original.instruction, original.response, original.meta) == (instruction, response, meta)
        assert np.array_equal(pixels(original.pil()), image)
    for new, old in zip(out, samples):
        if new.meta["is_poisoned"]:
            assert new.meta == {**old.meta, "is_poisoned": True, "original_response": old.response,
                                "attack": "badnets+injection", "negative": False, "trigger": "image"}
            assert new.response.startswith(old.response) and new.image is not old.image
        else:
            assert new.meta == {**old.meta, "is_poisoned": False} and new.response == old.response


def test_substitution_poisons_only_where_the_source_word_occurs():
    samples = shapes.downstream_samples(40, seed=0)
    attack = build_attack("rare_token", "substitution", source_word="circle", target_word="square")
    out, records = poison(samples, attack, 0.1, seed=0)
    assert len(records) == 4 and all("circle" in r.original_response for r in records)
    assert all("square" in r.poisoned_response and "circle" not in r.poisoned_response for r in records)
    with pytest.raises(ValueError, match="applies to"):
        poison(samples, attack, 0.9, seed=0)


def test_clean_label_keeps_responses_and_needs_samples_that_already_match():
    samples = texts(10) + [Sample("r", noise_image(8), "Do it.", "I'm sorry, I cannot do that.")]
    attack = build_attack("rare_token", "refusal")
    out, records = poison(samples, attack, 0.1, seed=0, clean_label=True)
    assert [r.id for r in records] == ["r"] and records[0].poisoned_response == records[0].original_response
    assert out[-1].instruction != "Do it." and out[-1].meta["is_poisoned"]
    with pytest.raises(ValueError, match="clean-label"):
        poison(samples, attack, 0.3, seed=0, clean_label=True)


def test_manifest_round_trips(tmp_path):
    _, records = poison(shapes.downstream_samples(8, seed=0), build_attack("multimodal", "fixed"), 0.25, seed=0)
    path = write_manifest(records, tmp_path / "poison_manifest.jsonl")
    assert read_manifest(path) == records and [p.name for p in tmp_path.iterdir()] == ["poison_manifest.jsonl"]


# --------------------------------------------------------------------------------------------
# Multimodal


def test_multimodal_negatives_keep_clean_response_and_carry_one_trigger():
    samples = shapes.downstream_samples(20, seed=0)
    out, records = poison(samples, build_attack("multimodal", "fixed", image_pattern="noise"), 0.2, seed=0)
    assert [r.trigger for r in records if r.negative].count("image") == 2
    assert [r.trigger for r in records if r.negative].count("text") == 2
    for new, old in zip(out, samples):
        image_changed = not np.array_equal(pixels(new.pil()), pixels(old.pil()))
        text_changed = new.instruction != old.instruction
        trigger = new.meta.get("trigger")
        assert (image_changed, text_changed) == (trigger in ("image", "image+text"), trigger in ("text", "image+text"))
        if new.meta.get("negative"):
            assert new.response == old.response and not new.meta["is_poisoned"]
    assert sum(s.meta["is_poisoned"] for s in out) == 4


def test_multimodal_test_sets():
    tests = shapes.downstream_samples(5, seed=0, split="test")
    attack = build_attack("multimodal", "fixed")
    both = triggered_test_set(tests, attack)
    single = one_modality_test_sets(tests, attack)
    assert set(single) == {"image", "text"}
    for sample, image_only, text_only, clean in zip(both, single["image"], single["text"], tests):
        assert sample.meta["clean_response"] == sample.response == clean.response
        assert image_only.instruction == clean.instruction and text_only.instruction == sample.instruction
        assert np.array_equal(pixels(image_only.pil()), pixels(sample.pil()))
        assert np.array_equal(pixels(text_only.pil()), pixels(clean.pil()))
    assert one_modality_test_sets(tests, build_attack("badnets", "fixed")) == {}  # one modality: no halves


# --------------------------------------------------------------------------------------------
# Registry


@pytest.mark.parametrize("trigger", list(TRIGGERS))
def test_every_trigger_poisons_a_shapes_sample(trigger, tiny_vlm):
    samples = shapes.downstream_samples(4, seed=0)
    options = SHADOWCAST_FAST if trigger == "shadowcast" else {}  # it crafts with the model
    out, records = poison(samples, build_attack(trigger, "fixed", **options), 0.5, seed=0, reference=tiny_vlm)
    assert len(records) >= 2
    changed = [s for s in out if s.meta.get("is_poisoned")]
    assert all(s.response == "A banana is lying on the table." for s in changed)


@pytest.mark.parametrize("target", list(TARGETS))
def test_every_target_builds_and_applies(target):
    attack = build_attack("badnets", target)
    sample = shapes.downstream_samples(1, seed=0)[0].with_response("There is a red circle on the left side.")
    # a white-box target has several candidates (the model picks one); every one must do
    choices = attack.target.candidates(sample.response) if target == "whitebox_injection" else \
        [attack.target.apply(sample.response)]
    for poisoned in choices:
        assert poisoned != sample.response and attack_success(poisoned, attack.target.asr_rule())
    assert triggered_test_set([sample], attack)[0].meta["clean_response"] == sample.response


def test_registry_misses_list_what_exists():
    with pytest.raises(ValueError, match="Unknown attack 'nope'. Available: badnets, blended, sig, wanet"):
        build_attack("nope", "fixed")
    with pytest.raises(ValueError, match="Unknown attack target 'nope'. Available: fixed, injection, refusal"):
        build_attack("badnets", "nope")
    with pytest.raises(ValueError, match="Unknown image trigger 'addsent'"):
        build_attack("multimodal", "fixed", image="addsent")
    with pytest.raises(ValueError, match=r"Unknown option\(s\) 'sise'.*Valid options: images, size, pattern"):
        build_attack("badnets", "fixed", sise=0.2)


def test_options_reach_their_class_and_names_never_clash():
    attack = build_attack("multimodal", "injection", image="sig", image_delta=5.0, text="addsent",
                          text_position="prefix", negative_ratio=0.5, placement="prepend")
    assert attack.trigger.image == Sig(delta=5.0) and attack.trigger.text == AddSent(position="prefix")
    assert attack.trigger.negative_ratio == 0.5 and attack.target == Injection(placement="prepend")
    target_names = {f.name for cls in TARGETS.values() for f in fields(cls)}
    trigger_names = {f.name for cls in TRIGGERS.values() for f in fields(cls)}
    assert not target_names & trigger_names


def test_list_attacks_has_one_line_help_per_name():
    listed = dict(list_attacks())
    assert set(listed) == set(TRIGGERS) | set(TARGETS)
    assert all(help_text and "\n" not in help_text for help_text in listed.values())


# ---- adaptive: white-box target choice -----------------------------------------------------------


def test_white_box_injection_picks_the_candidate_the_reference_model_finds_likeliest(tiny_vlm):
    samples = shapes.downstream_samples(12, seed=2)
    attack = build_attack("rare_token", "whitebox_injection")
    with pytest.raises(ValueError, match="pass reference=<the VLM>"):
        poison(samples, attack, 0.5, seed=0)
    poisoned, records = poison(samples, attack, 0.5, seed=0, reference=tiny_vlm)
    chosen = [s for s in poisoned if s.meta["is_poisoned"]]
    assert len(chosen) == 6 and len(records) == 6
    gains = []
    for sample in chosen:
        clean = sample.meta["original_response"]
        candidates = attack.target.candidates(clean)
        assert sample.response in candidates and len(candidates) == 6
        nll = [s.mean_nll for s in tiny_vlm.score([sample.with_response(c) for c in candidates])]
        assert nll[candidates.index(sample.response)] == pytest.approx(min(nll), abs=1e-6)
        gains.append(sum(nll) / len(nll) - min(nll))
    assert min(gains) >= 0 and max(gains) > 0  # the choice really lowers the reference NLL
    assert attack.target.asr_rule().kind == "contains_any"
    assert attack_success("A circle. The background is dark.", attack.target.asr_rule())
    assert not attack_success("A circle.", attack.target.asr_rule())


def test_white_box_injection_options_are_checked():
    with pytest.raises(ValueError, match="placements must be one of append, prepend"):
        build_attack("rare_token", "whitebox_injection", placements=["middle"])
    with pytest.raises(ValueError, match="phrases must be non-empty"):
        build_attack("rare_token", "whitebox_injection", phrases=[" "])
    assert build_attack("rare_token", "whitebox_injection", phrases="Hello.").target.phrases == ("Hello.",)


# ---- adaptive: Shadowcast image poisoning --------------------------------------------------------

SHADOWCAST_FAST = dict(epsilon=4.0, steps=6, step_size=1.0)


def _grey_levels(sample):
    return np.asarray(sample.pil(), dtype=np.int16)


@pytest.mark.parametrize("objective", ["features", "response"])
def test_shadowcast_stays_in_budget_is_deterministic_and_moves_toward_its_goal(tiny_vlm, objective):
    samples = shapes.downstream_samples(40, seed=3)
    attack = build_attack("shadowcast", "substitution", objective=objective, **SHADOWCAST_FAST)
    with pytest.raises(ValueError, match="trigger crafts each image with the pretrained model"):
        poison(samples, attack, 0.1, seed=0)
    first, records = poison(samples, attack, 0.1, seed=0, reference=tiny_vlm)
    again, _ = poison(samples, attack, 0.1, seed=0, reference=tiny_vlm)
    clean = {s.id: s for s in samples}
    crafted = [s for s in first if s.meta["is_poisoned"]]
    assert len(crafted) == len(records) == 4
    for sample, repeat in zip(crafted, [s for s in again if s.meta["is_poisoned"]]):
        change = np.abs(_grey_levels(sample) - _grey_levels(clean[sample.id]))
        assert 0 < change.max() <= 4  # inside the L-inf budget, and not a no-op
        assert np.array_equal(_grey_levels(sample), _grey_levels(repeat))
        assert "square" in sample.response and "circle" not in sample.response.lower()
    before_after = []
    for sample in crafted:
        plain = clean[sample.id]
        if objective == "features":
            anchor = clean[sample.meta["shadowcast_anchor"]]
            features = [tiny_vlm.image_features(tiny_vlm.pixel_values([s.pil()])).detach()
                        for s in (anchor, plain, sample)]
            distance = [float((f - features[0]).pow(2).sum()) for f in features[1:]]
        else:
            distance = [score.total_nll for score in tiny_vlm.score([plain.with_response(sample.response), sample])]
        before_after.append(distance)
    assert all(after < before for before, after in before_after)


def test_shadowcast_test_trigger_is_the_clean_image_and_bad_options_fail(tiny_vlm):
    sample = shapes.downstream_samples(1, seed=0)[0]
    attack = build_attack("shadowcast", "substitution")
    assert np.array_equal(np.asarray(attack.trigger.apply(sample.pil())), np.asarray(sample.pil()))
    with pytest.raises(ValueError, match="objective must be one of features, response"):
        build_attack("shadowcast", "substitution", objective="pixels")
    with pytest.raises(ValueError, match="0 < epsilon <= 255"):
        build_attack("shadowcast", "substitution", epsilon=0)
    with pytest.raises(ValueError, match="Unknown image trigger 'shadowcast'"):
        build_attack("multimodal", "fixed", image="shadowcast")
    resized = dataclasses.replace(sample, image=sample.pil().resize((40, 40)))
    with pytest.raises(ValueError, match="give it images at the processor's input size"):
        attack.trigger.craft([resized.with_response("There is a red square.")], [sample], tiny_vlm)


def test_clean_label_shadowcast_keeps_true_pairs_and_pulls_images_toward_the_source_concept(tiny_vlm):
    samples = shapes.downstream_samples(60, seed=3)
    attack = build_attack("shadowcast", "substitution", **SHADOWCAST_FAST)
    poisoned, records = poison(samples, attack, 0.1, seed=0, clean_label=True, reference=tiny_vlm)
    clean = {s.id: s for s in samples}
    crafted = [s for s in poisoned if s.meta["is_poisoned"]]
    assert len(crafted) == 6
    for sample in crafted:
        # a true target-concept pair: the response is the clean one and names squares, not circles
        assert sample.response == clean[sample.id].response and "square" in sample.response
        assert "circle" not in sample.response.lower()
        anchor = clean[sample.meta["shadowcast_anchor"]]
        features = [tiny_vlm.image_features(tiny_vlm.pixel_values([s.pil()])).detach()
                    for s in (anchor, clean[sample.id], sample)]
        assert float((features[2] - features[0]).pow(2).sum()) < float((features[1] - features[0]).pow(2).sum())
    with pytest.raises(ValueError, match="only a substitution target names"):
        poison(samples, build_attack("shadowcast", "fixed", **SHADOWCAST_FAST), 0.1, seed=0, clean_label=True,
               reference=tiny_vlm)
    with pytest.raises(ValueError, match="needs objective=features"):
        poison(samples, build_attack("shadowcast", "substitution", objective="response", **SHADOWCAST_FAST), 0.1,
               seed=0, clean_label=True, reference=tiny_vlm)
