"""How much the fuzz suites (Hypothesis) generate: a small default, more with USINA_FUZZ=deep.

``tests/conftest.py`` loads the profile and multiplies the example count a test sets with
``@settings(max_examples=N)`` by ``DEEP_FACTOR``. A test that builds its Hypothesis settings
inside its body (``tests/server/test_schema.py``) is out of the hook's reach: it asks
``examples(N)`` instead.
"""

from __future__ import annotations

import os

PROFILE = os.environ.get("USINA_FUZZ", "default")
PROFILES = ("default", "deep")
DEEP_FACTOR = 10


def examples(n: int) -> int:
    """``n`` examples in the default profile, ``n * DEEP_FACTOR`` in the deep one."""
    return n * DEEP_FACTOR if PROFILE == "deep" else n
