"""Every command in README.md runs, so the README cannot rot.

Mechanism:

- Commands are the non-comment lines of the README's ```bash code blocks (a trailing
  ``\\`` joins lines; ``#`` starts a comment). Python examples are the ```python blocks.
- They run in order in a scratch folder that looks like a repository checkout
  after ``make demo``: ``data/`` and ``configs/`` are symlinks to the real ones, ``models/``
  is a *copy* (the retrain command overwrites the model there), and
  ``demo-output/mosaic/`` holds the demo's mosaic tiles. ``geoseg ...`` commands run
  in-process through ``geoseg.cli.main`` (the function the ``geoseg`` console script
  calls: same parsing, same code, without re-importing torch for every command); other
  commands (``mkdir``, ``cp``) run with bash. Parts joined by ``&&`` run one by one.
- Long commands run at tiny size, by rewriting them before running (``REWRITES``):
  ``geoseg train`` gets ``--set`` overrides for one short epoch; ``geoseg demo`` runs
  for real (about half a minute).
- ``make ...`` lines run as ``make -n ...`` (a dry run that checks the target and its
  recipe) in the real repository: ``make test`` is the command running this very test,
  and ``make demo`` is ``geoseg demo`` after installation, which runs below and in
  ``test_demo.py``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"

#: Appended to ``geoseg train`` so it takes seconds, not minutes.
TINY_TRAIN = (
    " --set training.max_epochs=1 --set data.train_samples=16 --set data.batch_size=8"
    " --set training.early_stopping_patience=null"
)


def blocks(language: str) -> list[str]:
    text = README.read_text()
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.S | re.M)


def shell_commands() -> list[str]:
    commands = []
    for block in blocks("bash"):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            commands.append(line)
    return commands


def rewrite(command: str) -> tuple[str, Path | None]:
    """The command actually run, and the folder to run it in (None: the scratch folder)."""
    if command.startswith("make "):
        target = command.split("#")[0].split()[1]
        return f"make -n {target}", ROOT
    if command.startswith("geoseg train"):
        head, sep, tail = command.partition(" && ")
        return head + TINY_TRAIN + sep + tail, None
    return command, None


def test_readme_lists_the_commands_we_promise():
    commands = shell_commands()
    first_words = {" ".join(c.split()[:2]) for c in commands}
    for expected in (
        "make demo",
        "make test",
        "geoseg train",
        "geoseg evaluate",
        "geoseg predict",
        "geoseg vectorize",
        "geoseg stats",
        "geoseg change",
        "geoseg export",
        "geoseg demo",
    ):
        assert expected in first_words, f"README has no {expected!r} example"
    text = README.read_text()
    from geoseg.demo import RETRAIN_COMMAND

    assert RETRAIN_COMMAND in commands  # the one the demo prints when the model is missing
    assert "docs/demo.png" in text and (ROOT / "docs" / "demo.png").is_file()
    assert "docs/map_screenshot.png" in text and (ROOT / "docs" / "map_screenshot.png").is_file()
    # placeholders only inside the performance section
    perf = re.search(r"<!-- BEGIN PERFORMANCE.*?<!-- END PERFORMANCE -->", text, re.S)
    assert perf is not None
    assert "TBD" not in text.replace(perf.group(0), "")
    # attribution of every bundled data folder
    for folder in sorted(p.name for p in (ROOT / "data").iterdir() if p.is_dir()):
        assert f"`{folder}/`" in text, f"README does not attribute data/{folder}"
    for licence in ("CC BY-SA 3.0", "CC BY 4.0", "CC BY-SA 4.0", "public domain"):
        assert licence in text


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    from geoseg.demo import make_nc_mosaic

    work = tmp_path_factory.mktemp("readme")
    for name in ("data", "configs"):
        (work / name).symlink_to(ROOT / name)
    shutil.copytree(ROOT / "models", work / "models")
    make_nc_mosaic(work / "demo-output" / "mosaic")
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["MPLBACKEND"] = "Agg"
    return work, env


def _run_part(part: str, cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    if part.startswith("geoseg "):
        import contextlib
        import io
        import shlex

        from geoseg.cli import main

        out = io.StringIO()
        old = Path.cwd()
        os.chdir(cwd)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                code = main(shlex.split(part)[1:])
        finally:
            os.chdir(old)
        return code, out.getvalue()
    proc = subprocess.run(
        ["bash", "-c", f"set -eo pipefail; {part}"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.slow
def test_every_readme_command_runs(checkout):
    work, env = checkout
    commands = shell_commands()
    assert len(commands) >= 10
    for command in commands:
        actual, cwd = rewrite(command)
        for part in actual.split(" && "):
            code, output = _run_part(part.strip(), cwd or work, env)
            assert code == 0, (
                f"README command failed: {command}\nran: {part}\noutput:\n{output[-4000:]}"
            )
    # the retrain command replaced the copied model with a freshly trained one
    from geoseg.models import read_metadata

    fresh = read_metadata(work / "models" / "nc_landcover.safetensors")
    assert "test" in fresh.metrics
    assert (work / "outputs" / "landcover.gpkg").is_file()
    assert (work / "outputs" / "class_areas.csv").is_file()
    assert (work / "demo-output" / "map.html").is_file()


@pytest.mark.slow
def test_every_readme_python_example_runs(checkout):
    work, env = checkout
    (work / "outputs").mkdir(exist_ok=True)
    for code in blocks("python"):
        proc = subprocess.run(
            [sys.executable, "-c", code],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert proc.returncode == 0, f"README example failed:\n{code}\n{proc.stderr[-3000:]}"
    assert (work / "outputs" / "api_map.html").stat().st_size > 10_000
