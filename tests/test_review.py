"""The review page (byorn.review): what it lists, that attacker-written text stays text, its size."""

from __future__ import annotations

from review_page import Page

from byorn.data import Sample
from byorn.review import GROUP_THUMBNAILS, MAX_GROUPS, MAX_THUMBNAILS, NEAR_CUT, Replacement, write_review
from byorn.worlds import shapes

HOSTILE = ['<script>alert(1)</script>', '"><img src=x onerror=alert(1)>', "</td></tr></table><marquee>x</marquee>"]
SIZE_BOUND = 8_000_000  # bytes, for 10,000 flagged rows (the module docstring states it)


def page_of(path) -> Page:
    return Page(path.read_text(encoding="utf-8"))


def test_the_page_lists_exactly_the_flagged_samples_most_suspicious_first(tmp_path):
    samples = shapes.downstream_samples(30, seed=2)
    scores = [float(i % 7) for i in range(30)]
    flagged = [s >= 5 for s in scores]
    page = page_of(write_review(tmp_path / "review.html", samples, scores, flagged, thresholds={"all": 4.5}))
    expected = sorted((s.id for s, hit in zip(samples, flagged) if hit),
                      key=lambda i: -scores[[s.id for s in samples].index(i)])
    assert page.flagged_ids == expected
    assert f"Flagged {sum(flagged)} of 30 samples" in "".join(page.text)
    # then the comparison rows: the ten unflagged samples with the highest scores, highest first
    compared = [a["data-id"] for tag, a in page.tags if tag == "tr" and "data-id" in a][len(expected):]
    unflagged = sorted((v for v, hit in zip(scores, flagged) if not hit), reverse=True)[:10]
    assert [scores[[s.id for s in samples].index(i)] for i in compared] == unflagged


def test_samples_that_share_an_answer_are_grouped(tmp_path):
    samples = shapes.downstream_samples(12, seed=4)
    for i in (1, 4, 7):
        samples[i] = samples[i].with_response("A man in a black shirt." if i != 7 else "a man in a black shirt")
    flagged = [i in (1, 4, 7, 9) for i in range(12)]
    text = write_review(tmp_path / "r.html", samples, [float(f) for f in flagged], flagged).read_text()
    assert "Flagged samples that share an answer (1 answer)" in text
    assert "<td class='num'>3</td>" in text


def test_a_flagged_sample_left_out_of_training_says_why_where_a_replacement_would_be(tmp_path):
    samples = shapes.downstream_samples(12, seed=4)
    for i in (1, 4):
        samples[i] = samples[i].with_response("Yes.")
    flagged = [i in (1, 4, 9) for i in range(12)]
    why = "the replacement uses words no kept answer uses (onember)"
    page = page_of(write_review(tmp_path / "r.html", samples, [float(f) for f in flagged], flagged,
                                replacements={samples[9].id: [Replacement(2, "A red square.", "warmed")]},
                                left_out={samples[1].id: why, samples[4].id: why}))
    text = "".join(page.text)
    # once in the group of the two "Yes.", once in each of their rows; the replaced sample shows its answer
    assert text.count(f"left out of training: {why}") == 3 and "step 2 (warmed): A red square." in text
    assert "2 flagged samples are left out of training instead of replaced" in text


def test_attacker_written_text_is_shown_as_text_and_never_becomes_markup(tmp_path):
    samples = shapes.downstream_samples(len(HOSTILE), seed=1)
    samples = [s.with_response(h) for s, h in zip(samples, HOSTILE)]
    samples[0] = Sample(HOSTILE[1], samples[0].image, HOSTILE[0], HOSTILE[2])  # hostile id and instruction too
    replacements = {samples[1].id: [Replacement(3, HOSTILE[0], "reference")]}
    path = write_review(tmp_path / "r.html", samples, [1.0] * len(samples), [True] * len(samples),
                        replacements=replacements, left_out={samples[2].id: HOSTILE[1]}, title=HOSTILE[0])
    page = page_of(path)
    assert not [t for t, _ in page.tags if t in ("script", "iframe", "object", "embed", "marquee")]
    assert all(set(a) <= {"class", "alt", "src"} and a["src"].startswith("data:image/jpeg;base64,")
               for t, a in page.tags if t == "img")
    assert not [a for _, a in page.tags if any(k.startswith("on") for k in a)]
    text = "".join(page.text)
    assert all(h in text for h in HOSTILE)  # shown, as text


def test_ten_thousand_flagged_rows_stay_under_the_size_bound(tmp_path):
    samples = shapes.downstream_samples(10_000, seed=0)
    path = write_review(tmp_path / "big.html", samples, [float(i) for i in range(10_000)], [True] * 10_000)
    assert path.stat().st_size < SIZE_BOUND
    page = page_of(path)
    assert len(page.flagged_ids) == 10_000
    assert sum(t == "img" for t, _ in page.tags) <= MAX_THUMBNAILS + NEAR_CUT + MAX_GROUPS * GROUP_THUMBNAILS
