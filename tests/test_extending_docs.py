"""docs/extending.md's worked example runs as written.

Its code blocks (each opening with a comment line naming its file, ``# autouad/methods/convae/...``)
become a package ``convae`` in a temporary folder, importable as ``autouad.methods.convae`` (the
folder is appended to ``autouad.methods.__path__``); the registry discovers it like any other
method package, the planner lists it, the command line offers it, and it keeps the method contract
(tests/test_method_contract.py's own test functions, called with this module's tiny dataset).

Everything is undone afterwards: the registry, ``autouad.methods.__path__`` and ``sys.modules``
are as they were, so no other test sees ``convae``.
"""
import contextlib
import importlib
import io
import re
import sys
from pathlib import Path

import pytest

import autouad.methods
import tests.test_method_contract as contract  # a module, so that pytest does not collect its tests here
from autouad import api
from autouad.methods import registry
from dataset_conversion import demo

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"
PACKAGE = "autouad/methods/convae/"
FILES = {"__init__.py", "trainer.py", "plans.json"}
# a fenced block whose first line is "# autouad/methods/convae/<file>"; the marker line is not part of the file
BLOCK = re.compile(r"^```[\w-]*\n# (autouad/methods/convae/[\w.]+)\n(.*?)^```", re.M | re.S)


def doc_files() -> dict[str, str]:
    """{file name: text} of the package docs/extending.md writes out."""
    files = {}
    for path, text in BLOCK.findall(DOC.read_text(encoding="utf-8")):
        name = path[len(PACKAGE):]
        assert name not in files, f"{DOC.name} gives {path} twice"
        files[name] = text
    return files


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def convae(tmp_path_factory):
    """The doc's package, registered for this module's tests only."""
    folder = tmp_path_factory.mktemp("doc_methods")
    (folder / "convae").mkdir()
    for name, text in doc_files().items():
        (folder / "convae" / name).write_text(text, encoding="utf-8")
    registry.method_names()  # the real packages registered first, so that restoring keeps them
    before = dict(registry._REGISTRY)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(autouad.methods, "__path__", [*autouad.methods.__path__, str(folder)])
            mp.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # restored as it was afterwards
            mp.setattr(registry, "_discovered", False)  # discover again: the new folder now counts
            importlib.invalidate_caches()
            yield registry.get_method("convae")
    finally:
        for module in [m for m in sys.modules if m == "autouad.methods.convae" or m.startswith("autouad.methods.convae.")]:
            del sys.modules[module]
        if hasattr(autouad.methods, "convae"):
            delattr(autouad.methods, "convae")
    assert registry._REGISTRY == before and "convae" not in registry.method_names()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, convae):
    """The contract's tiny demo dataset (tests/test_method_contract.py's ``tiny`` fixture)."""
    root = tmp_path_factory.mktemp("doc_contract")
    demo.convert(7, raw_folder=root / "raw", seed=0, num_normal=2, num_patients=2, num_test=1, spacing=4.0)
    api.plan_and_preprocess(7, steps=("fingerprint",), num_processes=1, raw_folder=root / "raw",
                            preprocessed_folder=root / "preprocessed")
    return root


def test_the_doc_gives_the_convae_package_whole():
    assert set(doc_files()) == FILES


def test_the_registry_discovers_convae(convae):
    assert "convae" in registry.method_names()
    assert convae.setting is None and convae.plans_path == Path(autouad.methods.convae.__file__).with_name("plans.json")


def test_the_planner_lists_convae_among_the_candidates(tiny):
    result = api.plan_and_preprocess(7, steps=("plan",), num_processes=1, raw_folder=tiny / "raw",
                                     preprocessed_folder=tiny / "preprocessed")
    listed = {c.method: c.reason for c in result.plans.candidates}
    assert listed["convae"].startswith("a baseline")
    assert result.plans.method != "convae"  # a baseline is never the first choice while others fit


def test_autouad_train_offers_convae(convae):
    from autouad.cli.train import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main(["--help"])
    assert "convae" in out.getvalue()


def test_convae_declaration_is_sound(convae):
    contract.test_the_declaration_is_sound("convae")


def test_convae_trains_saves_loads_and_predicts(tiny):
    contract.test_trains_saves_loads_and_predicts_a_map_of_the_inputs_shape(tiny, "convae")


def test_convae_resumes_exactly(tiny, tmp_path):
    contract.test_an_interrupted_run_resumes_exactly(tiny, tmp_path, "convae")
