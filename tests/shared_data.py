"""The one check for the shared recordings: tests that read ../shared/data skip without it
(a checkout used on its own), and say why."""

from __future__ import annotations

import pytest

from tools.corpus import DEFAULT_DATA

HAVE_SHARED_DATA = (DEFAULT_DATA / "manifest.csv").is_file()

needs_shared_data = pytest.mark.skipif(
    not HAVE_SHARED_DATA, reason=f"no shared data ({DEFAULT_DATA / 'manifest.csv'})"
)
