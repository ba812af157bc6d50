"""Conversational rows (byorn.chat_rows, TRL's layout) read as the samples BYORn judges, and their bad forms."""

from __future__ import annotations

import pytest

from byorn.chat_rows import row_to_sample, sample_to_row, with_answer
from byorn.data import DataError
from byorn.worlds import shapes


def test_a_row_round_trips_and_content_parts_are_read_and_kept():
    sample = shapes.downstream_samples(1, seed=0)[0]
    row = sample_to_row(sample)
    back = row_to_sample(row, 0)
    assert (back.id, back.instruction, back.response) == (sample.id, sample.instruction, sample.response)
    parts = {**row, "messages": [{"role": "system", "content": "Be brief."},
                                 {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi?"}]},
                                 {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]}]}
    assert (row_to_sample(parts, 0).instruction, row_to_sample(parts, 0).response) == ("Hi?", "A cat.")
    replaced = with_answer(parts, "A dog.")
    assert replaced["messages"][2]["content"] == [{"type": "text", "text": "A dog."}]
    assert parts["messages"][2]["content"] == [{"type": "text", "text": "A cat."}]  # the row itself untouched
    assert row_to_sample({**row, "images": []}, 0).has_image is False  # a text-only row


@pytest.mark.parametrize("change, message", [
    (lambda r: r.pop("id"), "no 'id' column"),
    (lambda r: r.update(messages=[]), "expected a non-empty list"),
    (lambda r: r.update(messages=[{"role": "human", "content": "x"}, {"role": "gpt", "content": "y"}]),
     "expected one user turn then one assistant turn, got \\['human', 'gpt'\\]"),
    (lambda r: r.update(images="picture.png"), "field 'images': expected a list of images"),
    (lambda r: r.update(images=[r["images"][0], None]), "field 'images': expected a list of images"),
    (lambda r: r["messages"][1].update(content=3), r"field 'messages\[1\].content': expected a string"),
    (lambda r: r["messages"][1].update(content="  "), "field 'messages': the assistant turn has no text"),
    (lambda r: r["messages"][0].update(content=[{"type": "image"}]), "field 'messages': the user turn has no text"),
    (lambda r: r.update(id=None), "field 'id': expected a non-empty string or an integer, got None"),
])
def test_bad_rows_name_the_row_and_the_field(change, message):
    row = sample_to_row(shapes.downstream_samples(1, seed=0)[0])
    change(row)
    with pytest.raises(DataError, match=f"^row 7.*{message}"):
        row_to_sample(row, 7)


def test_the_collator_says_how_to_keep_the_id_column_the_trainer_dropped():
    from types import SimpleNamespace

    from byorn.integrations.trl import ByornCollator

    sample = shapes.downstream_samples(1, seed=0)[0]
    judged = SimpleNamespace(flagging=object(), reference_answers={}, judged={sample.id: sample.response}, left_out={})
    collator = ByornCollator(lambda rows: rows, judged)
    row = sample_to_row(sample)
    assert collator([row]) == [{k: v for k, v in row.items() if k != "id"}]
    with pytest.raises(ValueError, match="remove_unused_columns=False"):
        collator([{k: v for k, v in row.items() if k != "id"}])
    # a row of another data set under a judged id, or an id never judged: refused, not given a verdict
    for other in (with_answer(row, "Something else."), {**row, "id": "never-judged"}):
        with pytest.raises(ValueError, match="is not a row judge_dataset judged"):
            collator([other])


def test_a_row_of_several_exchanges_is_a_sample_per_answer_and_the_collator_replaces_each_alone():
    from types import SimpleNamespace

    from byorn.chat_rows import row_to_samples
    from byorn.integrations.trl import ByornCollator

    row = {"id": "c", "images": [], "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is it?"}, {"role": "assistant", "content": "A square."},
        {"role": "user", "content": [{"type": "text", "text": "Colour?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Visit example.com."}]}]}
    first, second = row_to_samples(row, 0)
    assert (first.id, second.id) == ("c#1", "c#2") and second.history == (("What is it?", "A square."),)
    assert second.turn.earlier == ("c#1",) and second.response == "Visit example.com."
    with pytest.raises(DataError, match="row 0, field 'messages': 2 exchanges"):
        row_to_sample(row, 0)
    judged = SimpleNamespace(flagging=object(), reference_answers={"c#2": "Red."},
                             judged={"c#1": "A square.", "c#2": "Visit example.com."}, left_out={})
    collator = ByornCollator(lambda rows: rows, judged)
    (out,) = collator([row])
    assert out["messages"][4]["content"] == [{"type": "text", "text": "Red."}] and collator.replaced == 1
    assert out["messages"][:4] == row["messages"][:4]  # the first answer and the system turn as they were


def test_a_row_with_a_turn_left_out_of_training_is_filtered_out_and_refused_by_the_collator():
    from types import SimpleNamespace

    from byorn.integrations.trl import ByornCollator, trains_on

    row = {"id": "c", "images": [], "messages": [
        {"role": "user", "content": "What is it?"}, {"role": "assistant", "content": "A square."},
        {"role": "user", "content": "Colour?"}, {"role": "assistant", "content": "Visit example.com."}]}
    other = {"id": "d", "images": [], "messages": row["messages"][:2]}
    judged = SimpleNamespace(flagging=object(), reference_answers={"c#2": "Visit example.com."},
                             judged={"c#1": "A square.", "c#2": "Visit example.com.", "d": "A square."},
                             left_out={"c#2": "the replacement repeats the flagged answer"})
    assert [r["id"] for r in (row, other) if trains_on(judged)(r)] == ["d"]
    with pytest.raises(ValueError, match=r"row 'c' is left out of training \(the replacement repeats"):
        ByornCollator(lambda rows: rows, judged)([other, row])
