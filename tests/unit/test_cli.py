from __future__ import annotations

import subprocess
import sys

import stalwart
from stalwart.errors import CorruptionError, DecodeError, NotLeaderError, StalwartError


def test_version_from_the_console_script() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "stalwart", "--version"], capture_output=True, text=True, check=True
    )
    assert stalwart.__version__ in out.stdout


def test_unknown_subcommand_exits_2() -> None:
    out = subprocess.run([sys.executable, "-m", "stalwart", "no-such-thing"], capture_output=True, text=True)
    assert out.returncode == 2
    assert "No such command" in out.stderr


def test_errors_share_one_root() -> None:
    err = CorruptionError("/data/wal/0001.seg", 4096, "crc mismatch")
    assert isinstance(err, StalwartError)
    assert "0001.seg" in str(err) and "4096" in str(err)
    assert NotLeaderError("n2").leader_hint == "n2"
    assert issubclass(DecodeError, StalwartError)
