from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_data(name: str) -> Path:
    """A folder of ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data {path} is absent (it lives in ../shared/data beside the project)")
    return path


@pytest.fixture
def autouad_env(tmp_path, monkeypatch):
    """AUTOUAD_raw / _preprocessed / _results pointing into tmp_path."""
    folders = {}
    for kind in ("raw", "preprocessed", "results"):
        folders[kind] = tmp_path / kind
        folders[kind].mkdir()
        monkeypatch.setenv(f"AUTOUAD_{kind}", str(folders[kind]))
    return folders


def write_volume(array: np.ndarray, path: Path, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
                 direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
