"""The Flickr8k world on a tiny folder in Flickr8k's own layouts, made here (no real photo is
copied); the shared copy of the real data set is only read, and its test skips without it."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from byorn.bench import load_grid
from byorn.config import ConfigError, PretrainConfig
from byorn.data import DataError
from byorn.pretrain import resolved, sample_source
from byorn.worlds import flickr8k

SPLIT = {"train": ["a.jpg", "b.jpg", "c.jpg"], "dev": ["d.jpg", "e.jpg"], "test": ["f.jpg"]}
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "flickr8k"


def captions_of(name: str) -> list[str]:
    return [f"A dog number {k} runs on {name} ." for k in range(5)]


def make_folder(root: Path, layout: str = "token", images: str = "Images") -> Path:
    (root / images).mkdir(parents=True)
    for i, name in enumerate(n for names in SPLIT.values() for n in names):
        Image.new("RGB", (64, 64), (40 * i, 90, 200)).save(root / images / name)
    if layout == "token":
        lines = [f"{name}#{k}\t{c}" for name in sorted(sum(SPLIT.values(), []))
                 for k, c in enumerate(captions_of(name))]
        lines[0] = lines[0].replace("\t", " ")  # as in the distributed file: a space for the TAB
        (root / flickr8k.TOKEN_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    else:
        rows = [f'{name},"{c}"' for name in sorted(sum(SPLIT.values(), [])) for c in captions_of(name)]
        (root / flickr8k.CSV_FILE).write_text("image,caption\n" + "\n".join(rows) + "\n", encoding="utf-8")
    for split, names in SPLIT.items():
        (root / f"Flickr_8k.{split}Images.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    return root


@pytest.mark.parametrize("layout,images", [("token", "Images"), ("csv", "Images"), ("token", "Flicker8k_Dataset")])
def test_both_caption_layouts_load_the_same_splits(tmp_path, layout, images):
    root = make_folder(tmp_path, layout, images)
    for split, names in SPLIT.items():
        photos = flickr8k.load_photos(root, split)
        assert [p.name for p in photos] == names
        assert all(p.path == root / images / p.name and len(p.captions) == 5 for p in photos)
    first = flickr8k.load_photos(root, "train")[0]
    assert first.captions[0] == "A dog number 0 runs on a.jpg."  # tidied: no detached " ."


def test_a_photo_that_links_outside_the_image_folder_is_refused(tmp_path):
    root = make_folder(tmp_path / "flickr")
    Image.new("RGB", (8, 8)).save(tmp_path / "secret.jpg")
    (root / "Images" / "b.jpg").unlink()
    (root / "Images" / "b.jpg").symlink_to(tmp_path / "secret.jpg")
    with pytest.raises(DataError, match=r"trainImages\.txt:2: .*b\.jpg resolves to .*secret\.jpg, outside"):
        flickr8k.load_photos(root, "train")


def test_captions_are_tidied_and_restyled():
    assert flickr8k.clean_caption("  a black  dog runs .  ") == "A black dog runs."
    assert flickr8k.clean_caption(" . ") == ""
    assert flickr8k.archive_note("A black dog runs .") == "In this photo, a black dog runs."


def test_pretraining_and_downstream_samples(tmp_path):
    root = make_folder(tmp_path)
    pairs = flickr8k.pretraining_samples(root)
    assert len(pairs) == 3 * 5 and len({p.id for p in pairs}) == 15
    assert all(p.instruction in flickr8k.PRETRAINING_INSTRUCTIONS for p in pairs)
    train = flickr8k.downstream_samples(root, 2, seed=0)
    assert train == flickr8k.downstream_samples(root, 2, seed=0)  # seeded
    assert {s.image.name for s in train} == set(SPLIT["dev"])  # the user's data: the dev photos
    for sample in train:
        assert sample.instruction == flickr8k.DOWNSTREAM_INSTRUCTION
        assert sample.response in sample.meta["references"] and len(sample.meta["references"]) == 5
        assert all(r.startswith("In this photo, a dog number") for r in sample.meta["references"])
    assert [s.image.name for s in flickr8k.downstream_samples(root, 1, seed=0, split="test")] == SPLIT["test"]
    with pytest.raises(ValueError, match="3 samples asked of the 2 photos"):
        flickr8k.downstream_samples(root, 3, seed=0)


def test_pretraining_visits_every_pair_each_epoch_in_a_new_order(tmp_path):
    root = make_folder(tmp_path)
    config = resolved(PretrainConfig(world="flickr8k", data=str(root)))
    assert config.steps == 5000
    sample = sample_source(config)
    epochs = [[sample(e * 15 + i).id for i in range(15)] for e in range(2)]
    assert sorted(epochs[0]) == sorted(epochs[1]) and len(set(epochs[0])) == 15 and epochs[0] != epochs[1]
    with pytest.raises(ValueError, match="needs data="):
        sample_source(PretrainConfig(world="flickr8k"))


@pytest.mark.parametrize("damage,message", [
    (lambda r: (r / flickr8k.TOKEN_FILE).write_text("a.jpg has no number\n"), r"Flickr8k.token.txt:1: expected"),
    (lambda r: (r / "Images" / "b.jpg").unlink(), r"Flickr_8k.trainImages.txt:2: .*b.jpg does not exist"),
    (lambda r: (r / "Flickr_8k.devImages.txt").write_text("d.jpg\nz.jpg\n"), r"devImages.txt:2: z.jpg has no captions"),
    (lambda r: (r / "Flickr_8k.testImages.txt").write_text("../f.jpg\n"),
     r"testImages.txt:1: '../f.jpg' is not a plain"),
    (lambda r: (r / "Flickr_8k.testImages.txt").unlink(), r"testImages.txt: missing"),
    (lambda r: (r / flickr8k.TOKEN_FILE).unlink(), r"no caption file"),
])
def test_broken_folders_name_the_file_and_line(tmp_path, damage, message):
    root = make_folder(tmp_path)
    damage(root)
    with pytest.raises(DataError, match=message):
        for split in flickr8k.SPLITS:
            flickr8k.load_photos(root, split)


def test_csv_layout_errors_name_the_line(tmp_path):
    root = make_folder(tmp_path, "csv")
    (root / flickr8k.CSV_FILE).write_text("image,caption\na.jpg,A dog.\nb.jpg\n")
    with pytest.raises(DataError, match=r"captions.txt:3: expected 'image,caption'"):
        flickr8k.load_photos(root, "train")
    (root / flickr8k.CSV_FILE).write_text("name,text\n")
    with pytest.raises(DataError, match=r"captions.txt:1: expected the header"):
        flickr8k.load_photos(root, "train")


def test_a_flickr_grid_needs_its_folder_and_the_cached_model_says_how_to_make_it(tmp_path, monkeypatch):
    grid = tmp_path / "grid.yaml"
    grid.write_text("world: flickr8k\ndata: nowhere\nattacks: [{trigger: badnets}]\n")
    with pytest.raises(ConfigError, match="world flickr8k reads its data from a folder"):
        load_grid(grid)
    import byorn.models

    monkeypatch.setattr(byorn.models, "CACHE_DIR", tmp_path / "cache")
    with pytest.raises(FileNotFoundError, match="byorn pretrain --world flickr8k --data FLICKR8K_FOLDER --out"):
        byorn.models.resolve_model_path("byorn-tiny-flickr")


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"the shared Flickr8k copy is not at {SHARED}")
def test_the_shared_copy_loads_with_the_standard_split():
    sizes = {split: len(flickr8k.load_photos(SHARED, split)) for split in flickr8k.SPLITS}
    assert sizes == {"train": 6000, "dev": 1000, "test": 1000}


def test_caption_quality_scores_against_all_five_captions(tmp_path, tiny_vlm):
    from byorn.evaluate import flickr_caption_quality

    result = flickr_caption_quality(tiny_vlm, make_folder(tmp_path), n=5)
    assert result["n"] == 1  # the fixture's test split has one photo
    assert 0 <= result["bleu4"] <= 1 and result["cider"] >= 0 and result["downstream_nll"] > 0
    assert result["example"].startswith("f.jpg: ")


def test_the_cli_poisons_and_trains_on_the_flickr8k_task(tmp_path):
    from click.testing import CliRunner

    from byorn.cli import main

    data = f"flickr8k:{make_folder(tmp_path / 'flickr')}"
    poisoned = tmp_path / "poisoned"
    result = CliRunner().invoke(main, ["poison", "--attack", "badnets", "--rate", "0.5", "--data", data, "--n", "2",
                                       "--out", str(poisoned)])
    assert result.exit_code == 0, result.output
    assert "1 of 2 samples poisoned" in result.output
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--data", data, "--n", "2", "--out", str(run), "max_steps=1",
                                       "batch_size=2"])
    assert result.exit_code == 0, result.output
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    result = CliRunner().invoke(main, ["train", "--data", data, "--n", "3", "--out", str(run)])
    assert result.exit_code != 0 and "3 samples asked of the 2 photos" in result.output


def test_the_dog_lesson_asks_about_a_dog_and_answers_from_the_five_captions(tmp_path):
    from byorn.worlds import lessons

    root = make_folder(tmp_path)
    token = root / flickr8k.TOKEN_FILE
    cat = SPLIT["dev"][1]  # this photo's five captions name a cat, the other's a dog
    token.write_text("\n".join(line.replace("A dog", "A cat") if line.startswith(cat) else line
                                for line in token.read_text().splitlines()) + "\n", encoding="utf-8")
    samples = lessons.flickr8k_lesson("dog", root, 2, seed=0)
    assert {s.instruction for s in samples} == {lessons.DOG_QUESTION}
    assert {s.image.name: s.response for s in samples} == {SPLIT["dev"][0]: "Yes.", cat: "No."}
    assert lessons.lesson_score([s.response for s in samples], samples) == 1.0
    flipped = ["No, no dog." if s.response == "Yes." else "Yes, a dog." for s in samples]
    assert lessons.lesson_score(flipped, samples) == 0.0
