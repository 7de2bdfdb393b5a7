"""A private rembg model directory for tests, so they never touch ~/.rembg or the user's models."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def rembg_home_at(home: Path) -> Iterator[Path]:
    """Point rembg at ``home`` (``REMBG_HOME``; the legacy ``U2NET_HOME`` would win, so it is unset)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REMBG_HOME", str(home))
        patch.delenv("U2NET_HOME", raising=False)
        yield home
