"""A command imports what it runs: ``geoseg predict`` does not load the vector stack."""

from __future__ import annotations

import subprocess
import sys

import pytest

from geoseg.cli import COMMANDS, build_parser

PROBE = """
import sys
from geoseg.cli import main
try:
    main({argv!r})
except SystemExit:
    pass
print(sorted(m for m in ("geopandas", "pandas", "scipy.ndimage", "torch") if m in sys.modules))
"""


def _loaded(argv: list[str]) -> str:
    run = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv)], capture_output=True,
                         text=True, timeout=120, check=True)  # fmt: skip
    return run.stdout.strip().splitlines()[-1]


def test_predict_loads_neither_the_vector_stack_nor_scipy() -> None:
    assert _loaded(["predict", "--help"]) == "[]"
    # help of everything still imports every command (and what they need)
    assert "geopandas" in _loaded(["--help"])


@pytest.mark.parametrize("command", ["predict", "stats"])
def test_one_command_parser_parses_as_the_full_one(command: str) -> None:
    argv = [command, "in.tif", "-o", "out.tif"] if command == "stats" else [
        command, "m.safetensors", "in.tif", "-o", "out.tif", "--tile-size", "256"]  # fmt: skip
    one, full = build_parser(command).parse_args(argv), build_parser().parse_args(argv)
    assert {k: v for k, v in vars(one).items() if k != "_run"} == {
        k: v for k, v in vars(full).items() if k != "_run"
    }
    assert one._run is full._run


def test_unknown_command_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    from geoseg.cli import main

    with pytest.raises(SystemExit):
        main(["predcit"])
    err = capsys.readouterr().err
    assert all(c in err for c in COMMANDS)
