"""How a folder of images to predict is read into cases: a trailing _dddd is a channel only when it
is one of the plan's channel indices; names that can be read two ways are all predicted, with a
note; a case needs only the channels its model reads."""
from pathlib import Path

import numpy as np

from autouad.inference.inputs import find_input_cases
from tests.conftest import shared_data, write_volume

ONE_CHANNEL = {"0": "X-ray"}
TWO_CHANNELS = {"0": "FLAIR", "1": "T1"}


def touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


def test_a_four_digit_ending_is_a_channel_only_when_the_plan_has_that_channel(tmp_path):
    touch(tmp_path, "person1608_virus_2786.jpeg", "IM-0001-0001.jpeg", "scan_0000.png", "scan2_0001.png")
    notes = {}
    cases, problems = find_input_cases(tmp_path, ONE_CHANNEL, notes=notes)
    assert {c.case_id for c in cases} == {"person1608_virus_2786", "IM-0001-0001", "scan", "scan2_0001"}
    assert not problems and not notes


def test_two_files_with_one_name_are_both_predicted_and_the_reading_is_noted(tmp_path):
    touch(tmp_path, "a.png", "a.jpg", "b_0000.png", "b.png")
    notes = {}
    cases, problems = find_input_cases(tmp_path, ONE_CHANNEL, notes=notes)
    ids = sorted(c.case_id for c in cases)
    assert len(ids) == 4 and len(set(ids)) == 4 and not problems
    assert len(notes) == 2 and all("read as case" in note for note in notes.values())
    assert {c.images[0].name for c in cases} == {"a.png", "a.jpg", "b_0000.png", "b.png"}


def test_a_case_needs_only_the_channels_its_model_reads(tmp_path):
    touch(tmp_path, "flair_only_0000.nii.gz", "both_0000.nii.gz", "both_0001.nii.gz", "t1_only_0001.nii.gz")
    cases, problems = find_input_cases(tmp_path, TWO_CHANNELS, required=[0])
    assert sorted(c.case_id for c in cases) == ["both", "flair_only"] and list(problems) == ["t1_only"]
    flair_only = next(c for c in cases if c.case_id == "flair_only")
    assert flair_only.channel_indices == [0] and len(flair_only.images) == 1
    cases, problems = find_input_cases(tmp_path, TWO_CHANNELS)  # a model reading both channels
    assert [c.case_id for c in cases] == ["both"] and set(problems) == {"flair_only", "t1_only"}


def test_every_kermany_test_image_is_a_case():
    """The 624 Kermany test X-rays, 65 of them named like person1608_virus_2786.jpeg, are 624 cases."""
    source = shared_data("chestxray_kermany") / "test"
    found = []
    for folder in ("NORMAL", "PNEUMONIA"):
        cases, problems = find_input_cases(source / folder, ONE_CHANNEL)
        assert not problems
        found += cases
    assert len(found) == 624 and sum(c.case_id.rsplit("_", 1)[-1].isdigit() and
                                     len(c.case_id.rsplit("_", 1)[-1]) == 4 for c in found) == 65


def test_a_case_lacking_a_channel_the_model_does_not_read_is_predicted(tmp_path):
    """A FLAIR-only case for a plan that reads FLAIR of a FLAIR + T1 dataset loads with a zero T1."""
    from autouad.inference.predictor import load_input_case

    volume = np.zeros((4, 8, 8), np.float32)
    volume[1:3, 2:6, 2:6] = np.arange(32).reshape(2, 4, 4)
    write_volume(volume, tmp_path / "in" / "case_0000.nii.gz")
    [case], problems = find_input_cases(tmp_path / "in", TWO_CHANNELS, required=[0])
    loaded = load_input_case(case, 2)
    assert loaded.data.shape[0] == 2 and not loaded.data[1].any() and loaded.data[0].any()
