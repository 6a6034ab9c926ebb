"""Every tool in tools/ answers ``--help`` without loading torch.

torch takes seconds to import, so a tool imports only light modules at its top, parses its
arguments first and loads torch (and the lib modules that import it) afterwards, in ``main()``
or the functions that need it (tools/infer.py). Each tool is imported and its ``main(["--help"])``
run in a fresh interpreter (this one has torch loaded already); one interpreter serves all the
tools until one of them loads torch, and the rest go to a new one, so each tool is judged alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOOLS = sorted(p.stem for p in (REPO / "tools").glob("*.py"))  # not tools/dev, tools/parity

# Imports each tool named in argv[3:] (modules of the folder argv[2]) and runs its main(["--help"]),
# in order, until one of them has loaded torch; prints what it saw of each tool as JSON.
CHILD = """
import contextlib, importlib, io, json, sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]  # the repository and the tools' folder, as `python tools/X.py` has
seen = {}
for name in sys.argv[3:]:
    module = importlib.import_module(name)
    torch_on_import = "torch" in sys.modules
    out, code = io.StringIO(), "returned"
    with contextlib.redirect_stdout(out):
        try:
            module.main(["--help"])
        except SystemExit as exit:
            code = exit.code
    seen[name] = {"torch_on_import": torch_on_import, "torch_after_help": "torch" in sys.modules,
                  "exit": code, "output": out.getvalue()}
    if "torch" in sys.modules:
        break
print(json.dumps(seen))
"""


def run_help(tools: list[str], folder: Path = REPO / "tools") -> dict[str, dict]:
    """What each tool of ``folder`` did on import and on ``--help`` (see CHILD), each tool in an
    interpreter where no earlier tool has loaded torch."""
    seen: dict[str, dict] = {}
    while todo := [t for t in tools if t not in seen]:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(REPO), str(folder), *todo],
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        assert done.returncode == 0, done.stderr
        seen |= json.loads(done.stdout.splitlines()[-1])
    return seen


@pytest.fixture(scope="module")
def help_runs() -> dict[str, dict]:
    return run_help(TOOLS)


def test_the_tools_are_found() -> None:
    assert {"train_val", "infer", "export_onnx", "check_dataset", "demo", "inspect_model"} <= set(TOOLS)
    assert "parity" not in TOOLS and "dev" not in TOOLS


@pytest.mark.parametrize("tool", TOOLS)
def test_help_answers_without_torch(tool: str, help_runs: dict[str, dict]) -> None:
    run = help_runs[tool]
    assert not run["torch_on_import"], f"tools/{tool}.py loads torch when imported"
    assert run["exit"] == 0, f"tools/{tool}.py --help exited with {run['exit']}"
    assert run["output"].startswith("usage: "), run["output"][:200]
    assert not run["torch_after_help"], f"tools/{tool}.py --help loads torch before parsing its arguments"


def test_the_check_sees_torch_at_import_and_before_parsing(tmp_path: Path) -> None:
    """Three made-up tools: torch at the top, torch before parse_args, torch after it (a stand-in
    ``torch`` module of their folder: the check looks at the name in ``sys.modules``). Each is
    judged alone: torch loaded by one is not blamed on the next."""
    parse = "    argparse.ArgumentParser().parse_args(argv)\n"
    bodies = {
        "at_top": "import argparse\nimport torch\ndef main(argv):\n" + parse,
        "before_parsing": "import argparse\ndef main(argv):\n    import torch\n" + parse,
        "after_parsing": "import argparse\ndef main(argv):\n" + parse + "    import torch\n",
    }
    for name, body in bodies.items():
        (tmp_path / f"{name}.py").write_text(body)
    (tmp_path / "torch.py").write_text("")
    seen = run_help(list(bodies), tmp_path)
    assert [(s["torch_on_import"], s["torch_after_help"], s["exit"]) for s in seen.values()] == [
        (True, True, 0),
        (False, True, 0),
        (False, False, 0),
    ]
    assert all(s["output"].startswith("usage: ") for s in seen.values())
