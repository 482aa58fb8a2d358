"""The skip rule of the tests that need root and network namespaces (marked ``netns``).

In CI (``CI=true``) they must run, so a missing prerequisite is a failure there; elsewhere it is a skip that says
what is missing.
"""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI") == "true"


def netns_missing() -> str | None:
    """Why network namespaces with TAP devices cannot be used here (None when they can)."""
    if os.geteuid() != 0:
        return "needs root"
    if not os.path.exists("/dev/net/tun"):
        return "needs /dev/net/tun"
    return None


def needs(what: str, missing: str | None) -> list[pytest.MarkDecorator]:
    """``pytestmark`` for a module that needs ``what``; ``missing`` says why it is unavailable (None: it is)."""
    return [
        pytest.mark.netns,
        pytest.mark.skipif(not IN_CI and missing is not None, reason=f"{what} unavailable: {missing}"),
    ]


NAMESPACES = needs("network namespaces", netns_missing())
