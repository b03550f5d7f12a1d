"""Property loops in two tiers: a few seeds in every run, all of them under the `slow` marker
(the README's full test command runs both; the fast tier skips `slow`)."""

from __future__ import annotations

import pytest

QUICK_SEEDS = 5


def property_seeds(full: int, quick: int = QUICK_SEEDS):
    """Parametrizes a test's `seeds` argument: range(quick) always, range(full) marked slow."""
    return pytest.mark.parametrize("seeds", [
        pytest.param(range(quick), id=f"{quick}-seeds"),
        pytest.param(range(full), id=f"{full}-seeds", marks=pytest.mark.slow),
    ])
