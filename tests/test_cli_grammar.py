"""One grammar on every command: the same names for data, counts, model, output and KEY=VALUE
options; the old spellings still work, hidden, for one release."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from byorn.cli import main

# What each kind of option is called wherever a command has one.
GRAMMAR = {
    "data": {"--data"},  # a data set: 'shapes', 'flickr8k:FOLDER' or a file
    "count": {"--n"},
    "model": {"--model"},
    "output": {"--out"},
    "defense options": {"-d", "--defense-option"},
    "attack options": {"-a", "--attack-option"},
}
OLD_SPELLINGS = {"--in", "--n-train", "--n-test", "--reference", "--json", "-o", "--option"}
# A command may keep a second output of another kind: the demo writes a run folder (--out) and a
# results file (--json).
EXCEPTIONS = {("demo", "--json")}


def commands() -> list[tuple[str, click.Command]]:
    found = []
    for name, command in main.commands.items():
        if isinstance(command, click.Group):
            found += [(f"{name} {sub}", c) for sub, c in command.commands.items()]
        else:
            found.append((name, command))
    return found


@pytest.mark.parametrize("name, command", commands(), ids=[n for n, _ in commands()])
def test_every_commands_options_follow_the_one_grammar(name, command):
    visible = [p for p in command.params if isinstance(p, click.Option) and not p.hidden]
    spellings = {opt for p in visible for opt in p.opts + p.secondary_opts}
    assert not {s for s in spellings & OLD_SPELLINGS if (name, s) not in EXCEPTIONS}, "an old spelling is shown"
    for option in visible:
        if any((name, opt) in EXCEPTIONS for opt in option.opts):
            continue
        kind = _kind(option)
        if kind is not None:
            assert set(option.opts) <= GRAMMAR[kind], f"{name}: {option.opts} should be spelled {GRAMMAR[kind]}"


def _kind(option: click.Option) -> str | None:
    """The kind of an option, from what it takes, not from what it is called."""
    name, text = option.name or "", (option.help or "").lower()
    if name in ("data",) or "'shapes' for the built-in" in text:
        return "data"
    if name in ("n", "n_train", "n_test", "n_samples"):
        return "count"
    if name in ("model", "reference"):
        return "model"
    if name in ("out_dir", "out_path", "json_path"):
        return "output"
    if option.multiple and option.metavar == "KEY=VALUE":
        return "attack options" if "attack" in text else "defense options"
    return None


def test_the_old_spellings_still_work(tmp_path):
    result = CliRunner().invoke(main, ["poison", "--attack", "badnets", "-o", "size=0.2", "--in", "shapes", "--n", "10",
                                       "--out", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    data = tmp_path / "p" / "data.json"
    scanned = CliRunner().invoke(main, ["scan", str(data), "--out", str(tmp_path / "s"), "-o", "k=2"])
    assert scanned.exit_code == 0, scanned.output
    twice = CliRunner().invoke(main, ["scan", str(data), "--data", str(data), "--out", str(tmp_path / "s")])
    assert twice.exit_code == 2 and "data given twice" in twice.output


def test_version():
    result = CliRunner().invoke(main, ["--version"], prog_name="byorn")
    assert result.exit_code == 0 and result.output.startswith("byorn ")


# A command line that is wrong is answered before torch and the model load: the check runs in a
# fresh process, which reports whether torch was imported by the time the command stopped.
STOPPED = """
import sys
from byorn.cli import main
try:
    main(sys.argv[1:], prog_name="byorn")
except SystemExit as stop:
    print("exit", stop.code, "torch" in sys.modules)
"""


def stopped(args: list[str], tmp_path) -> tuple[str, str]:
    """A command's stderr and its 'exit CODE TORCH_LOADED' line, run in a fresh interpreter."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", STOPPED, *args], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    return done.stderr, done.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("args, message", [
    (["train", "--out", "run"], "error: --data is required: a data file or data set folder, or a built-in task"),
    (["train", "--data", "missing.json", "--out", "run"], "error: --data missing.json: no such file or folder"),
    (["scan", "--data", "missing.jsonl", "--out", "s"], "error: --data missing.jsonl: no such file or folder"),
    (["eval", "--data", "missing.json"], "error: --data missing.json: no such file or folder"),
    (["poison", "--attack", "badnets", "--data", "gone", "--out", "p"], "error: --data gone: no such file or folder"),
    (["train", "--data", "shapes", "--out", "run", "num_train_epochs=1"],
     "num_train_epochs is Hugging Face's name; byorn's is epochs"),
    (["train", "--data", "shapes", "--out", "run", "per_device_train_batch_size=4"],
     "byorn's is batch_size (samples per optimizer step, over all devices"),
    (["train", "--data", "shapes", "--out", "run", "output_dir=x"],
     "output_dir is Hugging Face's name; byorn's is --out"),
    (["train", "--data", "shapes", "--out", "run", "--model", "a", "model=b"], "the model given twice"),
])
def test_a_wrong_command_line_is_one_line_answered_before_torch_loads(tmp_path, args, message):
    stderr, line = stopped(args, tmp_path)
    assert line == "exit 2 False", stderr  # non-zero, and torch never imported
    assert message in stderr and len(stderr.strip().splitlines()) == 1 and "--on-bad-sample" not in stderr


def test_train_takes_the_model_as_every_command_does(tmp_path):
    result = CliRunner().invoke(main, ["train", "--model", "byorn-tiny", "--data", "shapes", "--n", "8",
                                       "--out", str(tmp_path / "run"), "max_steps=1", "batch_size=4"])
    assert result.exit_code == 0, result.output
    assert "model: byorn-tiny" in (tmp_path / "run" / "config.yaml").read_text()


def test_a_bad_file_has_no_hint_to_skip_records_and_a_bad_record_has(tmp_path):
    (tmp_path / "broken.json").write_text("[{")
    result = CliRunner().invoke(main, ["scan", "--data", str(tmp_path / "broken.json"), "--out", str(tmp_path / "s")])
    assert result.exit_code == 2 and "invalid JSON" in result.output and "--on-bad-sample" not in result.output
    (tmp_path / "bad.jsonl").write_text('{"id": "a"}\n')
    result = CliRunner().invoke(main, ["scan", "--data", str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "s")])
    assert result.exit_code == 2 and "field 'instruction'" in result.output and "--on-bad-sample skip" in result.output


def test_scan_and_clean_check_their_judgement_options_before_torch_loads(tmp_path):
    import subprocess
    import sys

    code = ("import sys\nfrom click.testing import CliRunner\nfrom byorn.cli import main\n"
            "for command in ('scan', 'clean'):\n"
            "    for option in ('rul=mad', 'vouch=nowhere.yaml'):\n"
            "        asked = [command, '--data', 'shapes', '--out', sys.argv[1], '-d', option]\n"
            "        result = CliRunner().invoke(main, asked)\n"
            "        assert result.exit_code == 2, result.output\n"
            "assert 'torch' not in sys.modules\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "out")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_wrong_defense_option_fails_before_torch_loads(tmp_path):
    """A typo in -d costs no model load: the command stops before torch is imported."""
    import subprocess
    import sys

    args = ["train", "--data", "shapes", "--out", str(tmp_path), "--defense", "byorn", "-d", "rul=mad"]
    code = (f"import sys; from byorn.cli import main\ntry:\n    main({args!r})\n"
            "except SystemExit as exc:\n    print('torch' in sys.modules, exc.code)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["False", "2"], done.stdout + done.stderr
    assert "rul" in done.stderr
