from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true",
                     help="also run the tests marked slow (a minute or more each on 2 cores)")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a minute or more on 2 cores; run with --run-slow")


def pytest_collection_modifyitems(config, items):
    # the default suite must stay under 7 minutes on 2 cores; slow checks run on request
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow (a minute or more on 2 cores): run with pytest --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def load_benchmark(name: str):
    """benchmarks/<name>.py as a module (the benchmarks are scripts, not a package)."""
    import importlib.util

    repo = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", repo / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


@pytest.fixture(scope="session")
def demo_planned(tmp_path_factory):
    """A small demo dataset (2 normal subjects, 2 patients, 3 mm), planned and preprocessed for
    ASC-Net with the smoke schedule. Returns a function giving the environment to train in: each
    call gets a fresh results folder and sets AUTOUAD_* for the calling test."""
    from autouad.cli.plan_and_preprocess import main_plan_and_preprocess
    from dataset_conversion import demo

    root = tmp_path_factory.mktemp("demo_planned")
    env = {"AUTOUAD_raw": str(root / "raw"), "AUTOUAD_preprocessed": str(root / "preprocessed")}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        mp.setenv("AUTOUAD_results", str(root / "results_unused"))
        demo.convert(7, raw_folder=root / "raw", seed=0, num_normal=2, num_patients=2, num_test=1, spacing=3.0)
        assert main_plan_and_preprocess(["-d", "7", "-m", "ascnet", "--schedule", "smoke", "--np", "1"]) == 0
    return env


# ---- helpers the method tests share -----------------------------------------------------------------
def ready_to_train(trainer, checkpoint_every: int = 2):
    """A trainer built, with checkpoints every ``checkpoint_every`` iterations and its networks in
    training mode (as the base's loop puts them), for tests that call its steps one by one."""
    trainer.checkpoint_every = checkpoint_every
    trainer.initialize()
    for network in trainer.networks.values():
        network.train()
    return trainer


@contextmanager
def autouad_folders(root: Path):
    """raw / preprocessed / results folders under ``root``, with AUTOUAD_* pointing at them while
    the block runs (module-scoped fixtures cannot use monkeypatch); yields {kind: folder}."""
    folders = {kind: root / kind for kind in ("raw", "preprocessed", "results")}
    with pytest.MonkeyPatch.context() as env:
        for kind, folder in folders.items():
            folder.mkdir(exist_ok=True)
            env.setenv(f"AUTOUAD_{kind}", str(folder))
        yield folders


def assert_same_checkpoints(first: Path, second: Path) -> tuple[dict, dict]:
    """Two checkpoints hold the same networks, optimizer states and stream positions; returns both."""
    from autouad.training.checkpoint import load_checkpoint

    a, b = load_checkpoint(first), load_checkpoint(second)
    for name in a["networks"]:
        assert same(a["networks"][name], b["networks"][name]), name
    for name in a["optimizers"]:
        assert same(a["optimizers"][name]["state"][0], b["optimizers"][name]["state"][0]), name
    assert a["streams"] == b["streams"]
    return a, b


def state(module):
    """A detached copy of a module's weights and buffers."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def xray(rng, abnormal: bool) -> np.ndarray:
    """A 64x64 'chest': two dark lungs in a bright body; abnormal images get a bright blob in a lung."""
    yy, xx = np.mgrid[:64, :64]
    image = np.full((64, 64), 180.0)
    for cx in (20, 44):
        image[((yy - 32) / 22) ** 2 + ((xx - cx) / 9) ** 2 < 1] = 60
    if abnormal:
        image[(yy - rng.integers(22, 42)) ** 2 + (xx - rng.choice([20, 44])) ** 2 < 36] = 200
    return np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)


def write_xray_dataset(dataset_id: int, name: str, num_normal: int, unlabeled_abnormal: list[bool],
                       num_test: int = 6, seed: int = 0) -> None:
    """A raw 2D X-ray dataset of ``xray`` images in $AUTOUAD_raw: normal training images, unlabeled
    ones (abnormal where ``unlabeled_abnormal`` says so, labelled accordingly) and labelled test
    images alternating normal / abnormal."""
    from autouad.dataset.raw_dataset import RawDatasetWriter

    rng = np.random.default_rng(seed)
    with RawDatasetWriter(dataset_id, name, modality="X-ray", channel_names={"0": "X-ray"}, file_ending=".png",
                          image_label_names={"0": "normal", "1": "abnormal"}) as writer:
        for i in range(num_normal):
            writer.add_case(f"normal_{i:02d}", [xray(rng, False)], role="normal", label=0)
        for i, abnormal in enumerate(unlabeled_abnormal):
            writer.add_case(f"unlabeled_{i:02d}", [xray(rng, abnormal)], role="unlabeled", label=int(abnormal))
        for i in range(num_test):
            writer.add_case(f"test_{i:02d}", [xray(rng, i % 2 == 1)], split="test", label=i % 2)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``):
    tiny networks gain nothing from two, and on a shared 2-core machine two OpenMP threads waiting
    for each other cost far more than they save."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
