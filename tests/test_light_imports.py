"""Every tool in tools/ answers ``--help`` without loading torch or numba.

torch and numba take seconds to import, so a tool imports only light modules at its top, parses
its arguments first and loads them (and the lib modules that import them: the models, datasets
and engine; the evaluator lib/eval/kitti_eval.py) afterwards, in ``main()`` or the functions that
need them (tools/infer.py). Each tool is imported and its ``main(["--help"])`` run in a fresh
interpreter (this one has torch loaded already); one interpreter serves all the tools until one of
them loads a heavy module, and the rest go to a new one, so each tool is judged alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOOLS = sorted(p.stem for p in (REPO / "tools").glob("*.py"))  # not tools/dev, tools/parity
HEAVY = ("torch", "numba")

# Imports each tool named in argv[4:] (modules of the folder argv[2]) and runs its main(["--help"]),
# in order, until one of them has loaded one of the modules named in argv[3] (comma-separated);
# prints what it saw of each tool as JSON.
CHILD = """
import contextlib, importlib, io, json, sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]  # the repository and the tools' folder, as `python tools/X.py` has
heavy = sys.argv[3].split(",")
loaded = lambda: [m for m in heavy if m in sys.modules]
seen = {}
for name in sys.argv[4:]:
    module = importlib.import_module(name)
    on_import = loaded()
    out, code = io.StringIO(), "returned"
    with contextlib.redirect_stdout(out):
        try:
            module.main(["--help"])
        except SystemExit as exit:
            code = exit.code
    seen[name] = {"on_import": on_import, "after_help": loaded(), "exit": code, "output": out.getvalue()}
    if loaded():
        break
print(json.dumps(seen))
"""


def run_help(tools: list[str], folder: Path = REPO / "tools") -> dict[str, dict]:
    """What each tool of ``folder`` did on import and on ``--help`` (see CHILD), each tool in an
    interpreter where no earlier tool has loaded a module of :data:`HEAVY`."""
    seen: dict[str, dict] = {}
    while todo := [t for t in tools if t not in seen]:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(REPO), str(folder), ",".join(HEAVY), *todo],
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
def test_help_answers_without_torch_or_numba(tool: str, help_runs: dict[str, dict]) -> None:
    run = help_runs[tool]
    assert not run["on_import"], f"tools/{tool}.py loads {run['on_import']} when imported"
    assert run["exit"] == 0, f"tools/{tool}.py --help exited with {run['exit']}"
    assert run["output"].startswith("usage: "), run["output"][:200]
    assert not run["after_help"], f"tools/{tool}.py --help loads {run['after_help']}"


def test_the_check_sees_heavy_modules_at_import_and_before_parsing(tmp_path: Path) -> None:
    """Made-up tools: torch at the top, numba before parse_args, torch after it (stand-in
    ``torch`` and ``numba`` modules of their folder: the check looks at the names in
    ``sys.modules``). Each is judged alone: a module loaded by one is not blamed on the next."""
    parse = "    argparse.ArgumentParser().parse_args(argv)\n"
    bodies = {
        "at_top": "import argparse\nimport torch\ndef main(argv):\n" + parse,
        "before_parsing": "import argparse\ndef main(argv):\n    import numba\n" + parse,
        "after_parsing": "import argparse\ndef main(argv):\n" + parse + "    import torch\n",
    }
    for name, body in {**bodies, "torch": "", "numba": ""}.items():
        (tmp_path / f"{name}.py").write_text(body)
    seen = run_help(list(bodies), tmp_path)
    assert [(s["on_import"], s["after_help"], s["exit"]) for s in seen.values()] == [
        (["torch"], ["torch"], 0),
        ([], ["numba"], 0),
        ([], [], 0),
    ]
    assert all(s["output"].startswith("usage: ") for s in seen.values())
