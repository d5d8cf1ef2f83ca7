"""The README's opening commands are the project's contract with a new user and with CI: the
first runs the demo, the second the tests, and `.ci/run` must run exactly that set-up and test
command. These checks keep the three from drifting apart."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The CPU wheel on this project's machines; a bare `torch` pulls a 6 GB CUDA build (README).
TORCH_PIN = '"torch==2.13.0"'


def readme_opening_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block, "README.md has no ```bash block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_the_readme_opens_with_the_demo_command_then_the_test_command():
    demo, tests = readme_opening_commands()
    assert demo.endswith(".venv/bin/autouad_demo")
    assert tests.endswith(".venv/bin/python -m pytest -q")
    # the demo's command names a console script that setup.py installs
    assert "autouad_demo=autouad.cli.demo:main" in (ROOT / "setup.py").read_text(encoding="utf-8")


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    commands = [line for line in ci if line.strip() and not line.startswith(("#", "set ", "cd "))]
    assert commands == [readme_opening_commands()[1]]


def test_every_install_command_in_the_readme_pins_the_cpu_torch():
    installs = [line for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
                if re.search(r"\bpip install\b", line) and "-e" in line]
    assert installs, "README.md has no install command"
    unpinned = [line for line in installs if TORCH_PIN not in line]
    assert not unpinned, f"install commands without {TORCH_PIN}: {unpinned}"


def test_install_requires_keeps_a_torch_range_for_gpu_users():
    setup = (ROOT / "setup.py").read_text(encoding="utf-8")
    torch_requirements = re.findall(r'"torch([^"]*)"', setup)
    assert torch_requirements, "setup.py does not require torch"
    assert all("==" not in spec for spec in torch_requirements), torch_requirements
