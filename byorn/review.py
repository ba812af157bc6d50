"""An HTML page for a person to review what a defense flagged, before trusting the model.

One self-contained static file: thumbnails are embedded as data URIs, there is no script and
nothing is fetched, so it opens from disk anywhere. Instructions and responses come from whoever
made the data (an attacker, possibly), so every text is HTML-escaped and the page has no script
to run it. The parts: the score histogram per group with its cut, the flagged samples most
suspicious first (with their replacements, where the defense replaced them), the flagged samples
that share one answer (a poison campaign repeats its target across many images), and the
unflagged samples just under the cut, for comparison.

Size: a thumbnail is about 1-2 kB (JPEG), so only the first `MAX_THUMBNAILS` flagged rows and the
groups' and comparison rows carry one; rows after that are text. tests/test_review.py checks that
10,000 flagged rows make a page under 8 MB.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from byorn.data import DataError, Sample, answer_key
from byorn.defenses.base import Defense
from byorn.defenses.byorn import ByornDefense
from byorn.defenses.byorn_records import AUDIT_NAME, Judgement
from byorn.defenses.canaries import PLANTED, CanaryReport
from byorn.fileio import atomic_write_text
from byorn.text import inert

REVIEW_NAME = "review.html"
THUMBNAIL_PX = 64
MAX_THUMBNAILS = 1000
PAGE_ROWS = 200  # flagged rows per collapsible page: a long list opens page by page
NEAR_CUT = 10  # unflagged samples shown just under the cut
GROUP_THUMBNAILS = 12
MAX_GROUPS = 50  # the largest shared-answer groups shown; a campaign is among the largest
HISTOGRAM_BINS = 40


@dataclass(frozen=True)
class Replacement:
    """A response the defense trained on instead of the flagged one."""

    step: int
    response: str
    source: str  # which model wrote it ("reference", "current", ...)


@dataclass(frozen=True)
class Instead:
    """What the flagged samples trained on instead: sample id -> its replacements, or why it was left
    out of training (its replacement unfit: byorn/defenses/replacements.py)."""

    replacements: dict[str, list[Replacement]] = field(default_factory=dict)
    left_out: dict[str, str] = field(default_factory=dict)

    def first(self, sample_id: str) -> str:
        """The first replacement as HTML, or why there is none."""
        found = self.replacements.get(sample_id)
        return _text(found[0].response) if found else self._left(sample_id)

    def every(self, sample_id: str) -> str:
        """Every replacement as HTML, with its step and writer, or why there is none."""
        lines = [f"<span class='num'>step {r.step} ({_text(r.source)}):</span> {_text(r.response)}"
                 for r in self.replacements.get(sample_id, [])]
        return "<br>".join(lines) or self._left(sample_id)

    def _left(self, sample_id: str) -> str:
        why = self.left_out.get(sample_id)
        return f"<i>left out of training: {_text(why)}</i>" if why else ""


@dataclass(frozen=True)
class Judged:
    """One judged sample as the page shows it."""

    sample: Sample
    score: float
    flagged: bool
    group: str
    threshold: float | None


def write_review(path: str | Path, samples: Sequence[Sample], scores: Sequence[float], flagged: Sequence[bool], *,
                 groups: Sequence[str] | None = None, thresholds: dict[str, float] | None = None,
                 replacements: dict[str, list[Replacement]] | None = None, title: str = "byorn review",
                 judgement: Judgement | None = None, left_out: dict[str, str] | None = None) -> Path:
    """Write the review page of a judged data set to `path` (atomically) and return the path.

    groups: each sample's threshold group (default: one group); thresholds: group -> cut, where
    the defense has one; replacements: sample id -> the responses it was trained on instead;
    left_out: flagged sample id -> why it was left out of training instead;
    judgement: BYORn's, for what each of its steps did (lessons, cleared, copies, vouched)."""
    if not len(samples) == len(scores) == len(flagged):
        raise ValueError(f"{len(samples)} samples, {len(scores)} scores and {len(flagged)} verdicts: they must align")
    groups = list(groups) if groups is not None else ["all"] * len(samples)
    thresholds = thresholds or {}
    judged = [Judged(s, float(v), bool(f), g, thresholds.get(g))
              for s, v, f, g in zip(samples, scores, flagged, groups)]
    page = _page(title, judged, Instead(replacements or {}, left_out or {}), judgement)
    path = Path(path)
    atomic_write_text(path, page)
    return path


def write_run_review(run_dir: str | Path, samples: Sequence[Sample], defense: Defense) -> Path | None:
    """review.html in a training run's folder, for a defense that judged its samples (None, and no
    page, for one that does not): BYORn's cuts per group and, from its audit log, what each
    flagged sample was trained on instead."""
    if defense.suspicion is None or defense.flagged is None:
        return None
    run_dir = Path(run_dir)
    groups = thresholds = None
    replacements: dict[str, list[Replacement]] = {}
    judgement = None
    if isinstance(defense, ByornDefense) and defense.flagging is not None:
        groups, thresholds, judgement = defense.flagging.groups, defense.flagging.thresholds, defense.judgement
        if (audit := run_dir / AUDIT_NAME).exists():
            lines = audit.read_text(encoding="utf-8").splitlines()
            replacements = replacements_from_audit([json.loads(line) for line in lines if line.strip()])
    return write_review(run_dir / REVIEW_NAME, samples, defense.suspicion, defense.flagged, groups=groups,
                        thresholds=thresholds, replacements=replacements,
                        left_out=defense.left_out if isinstance(defense, ByornDefense) else {},
                        title=f"byorn train --defense {defense.name}: {run_dir.name}", judgement=judgement)


def replacements_from_audit(records: Sequence[dict]) -> dict[str, list[Replacement]]:
    """BYORn's audit log (audit.jsonl records) -> sample id -> its replacements, in step order."""
    found: dict[str, list[Replacement]] = defaultdict(list)
    for record in records:
        if record.get("event") == "replaced":
            found[record["id"]].append(Replacement(record["step"], record["response"], record["source"]))
    return dict(found)


# ---- the page -------------------------------------------------------------------------------------

STYLE = """
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222;max-width:1200px}
table{border-collapse:collapse;width:100%;margin:.5em 0}
td,th{border-bottom:1px solid #ddd;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#f3f3f3}
td.text{white-space:pre-wrap;word-break:break-word;max-width:26em}
img.thumb{width:64px;height:64px;object-fit:cover;image-rendering:pixelated;border:1px solid #ccc}
.num{font-variant-numeric:tabular-nums;white-space:nowrap}
.flag,.missed{color:#b3261e;font-weight:600}
summary{cursor:pointer;font-weight:600;margin:.4em 0}
.strip img{margin:1px}
.turn{color:#777}
"""


def _page(title: str, judged: list[Judged], instead: Instead, judgement: Judgement | None) -> str:
    flagged = sorted((j for j in judged if j.flagged), key=lambda j: -j.score)
    near = sorted((j for j in judged if not j.flagged), key=lambda j: -j.score)[:NEAR_CUT]
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_text(title)}</title>",
             "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; img-src data:; "
             "style-src 'unsafe-inline'\">",
             f"<style>{STYLE}</style></head><body>",
             f"<h1>{_text(title)}</h1>",
             f"<p><b>Flagged {len(flagged)} of {len(judged)} samples</b> ({_share(len(flagged), len(judged))}).</p>"]
    if judgement is not None and judgement.canaries is not None:
        parts += _canaries(judgement.canaries)
    if judgement is not None:
        parts += _steps(judgement, judged)
    if instead.left_out:
        parts.append(f"<p>{len(instead.left_out)} flagged samples are left out of training instead of replaced: their "
                     "replacement was empty, repeated the flagged answer, used words none of the kept answers uses, "
                     "or would overwrite a lesson's answer (each row below says which).</p>")
    parts += _histograms(judged)
    parts += _groups(flagged, instead)
    parts += [f"<h2>Flagged samples, most suspicious first ({len(flagged)})</h2>"]
    parts += _paged_rows(flagged, instead)
    parts += [f"<h2>Not flagged, closest to the cut ({len(near)})</h2>", _table(near, Instead(), thumbnails=True)]
    parts.append("</body></html>")
    return "\n".join(parts)


def _histograms(judged: list[Judged]) -> list[str]:
    by_group: dict[str, list[Judged]] = defaultdict(list)
    for j in judged:
        by_group[j.group].append(j)
    parts = ["<h2>Scores and the cut</h2>"]
    for group, members in sorted(by_group.items()):
        threshold = members[0].threshold
        cut = f"cut {threshold:.3f}" if threshold is not None and math.isfinite(threshold) else "no cut"
        n = sum(m.flagged for m in members)
        parts.append(f"<h3>group {_text(group)}: flagged {n} of {len(members)}, {cut}</h3>")
        parts.append(_histogram_svg([m.score for m in members], threshold))
    return parts


def _histogram_svg(scores: list[float], threshold: float | None, width: int = 600, height: int = 140) -> str:
    finite = [s for s in scores if math.isfinite(s)]
    if not finite:
        return "<p>No finite scores.</p>"
    low, high = min(finite), max(finite)
    if threshold is not None and math.isfinite(threshold):
        low, high = min(low, threshold), max(high, threshold)
    span = (high - low) or 1.0
    counts = [0] * HISTOGRAM_BINS
    for s in finite:
        counts[min(HISTOGRAM_BINS - 1, int((s - low) / span * HISTOGRAM_BINS))] += 1
    top, bar = max(counts), width / HISTOGRAM_BINS
    shapes = [f"<rect x='{i * bar:.1f}' y='{height - 20 - c / top * (height - 30):.1f}' width='{bar - 1:.1f}' "
              f"height='{c / top * (height - 30):.1f}' fill='#4477aa'/>" for i, c in enumerate(counts) if c]
    if threshold is not None and math.isfinite(threshold):
        x = (threshold - low) / span * width
        shapes.append(f"<line x1='{x:.1f}' x2='{x:.1f}' y1='12' y2='{height - 20}' stroke='#cc3311' "
                      "stroke-dasharray='4 3' stroke-width='2'/>")
        anchor = "end" if x > width / 2 else "start"  # the label stays inside the picture
        shapes.append(f"<text x='{x:.1f}' y='10' font-size='11' fill='#cc3311' text-anchor='{anchor}'>"
                      f"cut {threshold:.3g}</text>")
    shapes.append(f"<text x='0' y='{height - 4}' font-size='11'>{low:.3g}</text>")
    shapes.append(f"<text x='{width / 2:.0f}' y='{height - 4}' font-size='11' text-anchor='middle'>score (higher: "
                  f"more implausible); tallest bar {top} samples</text>")
    shapes.append(f"<text x='{width}' y='{height - 4}' font-size='11' text-anchor='end'>{high:.3g}</text>")
    return (f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' role='img' "
            f"aria-label='score histogram'>{''.join(shapes)}</svg>")


def _canaries(report: CanaryReport) -> list[str]:
    """The canaries' table: how much of each kind of attack the judgement caught on this data."""
    parts = ["<h2>Canaries: what the judgement catches on this data</h2>",
             "<p>Before judging, byorn planted a few poisons of each kind in copies of samples of this data and "
             "judged them with the rest (never trained on, and not among the samples below). The share of each "
             "kind it flagged estimates how much of such an attack it would catch here. The estimate may run "
             "high: a real poison the first verdict misses may be learnt by the warm-up, a canary never is.</p>"]
    if not report.kinds:
        return parts + [f"<p>{_text(line)}</p>" for line in report.lines()]
    rows = ["<table><tr><th>kind</th><th>what was planted</th><th>caught</th><th>by the first verdict</th></tr>"]
    for kind, result in report.kinds.items():
        css = " class='missed'" if kind in report.unreliable else ""
        answers = "; ".join(answer if kind == "swap" else f"“{answer}”" for answer in result.answers)
        what = f"{PLANTED[kind]}: {answers}" if answers else PLANTED[kind]
        rows.append(f"<tr><td{css}>{kind}</td><td class='text'>{_text(what)}</td><td class='num'>"
                    f"{result.caught} of {result.planted}</td><td class='num'>{result.caught_first}</td></tr>")
    rows += [f"<tr><td>{kind}</td><td class='text'>{_text(why)}</td><td></td><td></td></tr>"
             for kind, why in report.left_out.items()]
    parts += rows + ["</table>"]
    parts += [f"<p class='missed'>{_text(line)}</p>" for line in report.warnings()]
    return parts


def _steps(judgement: Judgement, judged: list[Judged]) -> list[str]:
    """What each step of BYORn's judgement did beyond the cut, and how a person overrules it."""
    samples = [j.sample for j in judged]
    lines = judgement.summary(samples) or ["Every flag is the cut's: no lesson, no copy, nothing cleared or vouched "
                                           "for."]
    parts = ["<h2>What the judgement did</h2>", "<ul>" + "".join(f"<li>{_text(line)}</li>" for line in lines) + "</ul>"]
    if judgement.lessons:
        parts.append("<p>Answers so many samples give that they are taken for a lesson the data teaches, not a "
                     "backdoor: the warmed reference was fine-tuned on the least suspicious half of each before it "
                     "judged the rest.</p><table><tr><th>samples</th><th>answer</th></tr>")
        parts += [f"<tr><td class='num'>{n}</td><td class='text'>{_text(answer)}</td></tr>"
                  for answer, n in judgement.lessons.items()]
        parts.append("</table>")
    if judgement.cleared:
        cleared = [judged[i] for i in judgement.cleared]
        parts += [f"<details><summary>Cleared by the warmed reference ({len(cleared)}): the pretrained model flagged "
                  "them</summary>", _table(cleared[:PAGE_ROWS], Instead(), thumbnails=True), "</details>"]
    parts.append("<p>A flagged answer or sample that is right (a lesson the pretrained model lacks) trains as given "
                 "when a person vouches for it: list it in a YAML file and run the command again with "
                 "<code>-d vouch=FILE</code> (answers match whatever their case, spacing and end punctuation):</p>"
                 "<pre>ids: [an id from the tables]\nanswers: [\"an answer from the tables, as the data gives it\"]"
                 "</pre>")
    return parts


def _groups(flagged: list[Judged], instead: Instead) -> list[str]:
    """Flagged samples that give the same answer, largest group first, with what trains instead."""
    by_answer: dict[str, list[Judged]] = defaultdict(list)
    for j in flagged:
        by_answer[answer_key(j.sample.response)].append(j)
    shared = sorted((members for members in by_answer.values() if len(members) > 1), key=len, reverse=True)
    parts = [f"<h2>Flagged samples that share an answer ({len(shared)} answer{'' if len(shared) == 1 else 's'})</h2>"]
    if not shared:
        return parts + ["<p>No two flagged samples give the same answer.</p>"]
    if len(shared) > MAX_GROUPS:
        parts.append(f"<p>The {MAX_GROUPS} largest groups; {len(shared) - MAX_GROUPS} smaller ones are in the list "
                     "below.</p>")
    rows = ["<table><tr><th>samples</th><th>answer</th><th>trained on instead (the first)</th><th>images</th></tr>"]
    for members in shared[:MAX_GROUPS]:
        strip = "".join(_thumbnail(m.sample) for m in members[:GROUP_THUMBNAILS])
        more = f" +{len(members) - GROUP_THUMBNAILS}" if len(members) > GROUP_THUMBNAILS else ""
        # a member's replacement, if any has one; else why they were left out
        first = next((instead.first(m.sample.id) for m in members if m.sample.id in instead.replacements), None) \
            or next((text for m in members if (text := instead.first(m.sample.id))), "")
        rows.append(f"<tr><td class='num'>{len(members)}</td><td class='text'>{_text(members[0].sample.response)}"
                    f"</td><td class='text'>{first}</td><td class='strip'>{strip}{more}</td></tr>")
    return parts + rows + ["</table>"]


def _paged_rows(flagged: list[Judged], instead: Instead) -> list[str]:
    if not flagged:
        return ["<p>Nothing was flagged.</p>"]
    parts = []
    for start in range(0, len(flagged), PAGE_ROWS):
        chunk = flagged[start:start + PAGE_ROWS]
        opened = " open" if start == 0 else ""
        parts.append(f"<details{opened}><summary>rows {start + 1}-{start + len(chunk)}</summary>")
        parts.append(_table(chunk, instead, thumbnails=start < MAX_THUMBNAILS))
        parts.append("</details>")
    return parts


def _table(rows: list[Judged], instead: Instead, thumbnails: bool) -> str:
    lines = ["<table><tr><th>image</th><th>id</th><th>score</th><th>cut</th><th>instruction</th>"
             "<th>response</th><th>trained on instead</th></tr>"]
    for j in rows:
        cut = f"{j.threshold:.3f}" if j.threshold is not None and math.isfinite(j.threshold) else ""
        css = " class='flag'" if j.flagged else ""
        lines.append(f"<tr data-id='{_text(j.sample.id)}'><td>{_thumbnail(j.sample) if thumbnails else ''}</td>"
                     f"<td{css}>{_text(j.sample.id)}</td><td class='num'>{j.score:.3f}</td><td class='num'>{cut}</td>"
                     f"<td class='text'>{_asked(j.sample)}</td>"
                     f"<td class='text'>{_text(j.sample.response)}</td>"
                     f"<td class='text'>{instead.every(j.sample.id)}</td></tr>")
    return "\n".join(lines + ["</table>"])


def _asked(sample: Sample) -> str:
    """The instruction, after the earlier turns of its conversation (greyed): a later turn is
    judged with them, and a reviewer needs them to judge it too."""
    earlier = "".join(f"<span class='turn'>{_text(asked)}\n→ {_text(answered)}</span>\n"
                      for asked, answered in sample.history)
    return earlier + _text(sample.instruction)


def _thumbnail(sample: Sample) -> str:
    try:
        image = sample.pil()
    except DataError as exc:  # a sample whose image cannot be read now is still listed, with why
        return f"<span title='{_text(str(exc))}'>(no image)</span>"
    image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"<img class='thumb' alt='' src='data:image/jpeg;base64,{data}'>"


def _text(value: str) -> str:
    """Text from the data as page text: escaped, and its control characters and bidirectional
    overrides shown as escapes (byorn.text), so the page shows what is stored, in its order; line
    breaks and tabs stay (the text cells keep them)."""
    return html.escape(inert(value, keep="\n\t"), quote=True)


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "0 %"
