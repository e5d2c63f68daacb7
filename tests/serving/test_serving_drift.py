"""``usina serve`` compares live traffic with the training reference stored with the model
version and exports the PSI per feature: a shifted feature crosses the alert threshold, the
others stay below it."""

from __future__ import annotations

import re

import numpy as np
from serving_support import get, post_json, row_request

from usina.monitoring.drift import PSI_ALERT


def _psi(text: str) -> dict[str, float]:
    found = {}
    for line in text.splitlines():
        m = re.match(r"usina_drift_psi\{(.*)\} ([0-9.eE+-]+|NaN)$", line)
        if m and 'model="fraud"' in m.group(1):
            feature = re.search(r'feature="([^"]+)"', m.group(1))
            assert feature is not None
            found[feature.group(1)] = float(m.group(2))
    return found


def test_a_shifted_feature_raises_its_psi_above_the_alert(server, registry):
    rng = np.random.default_rng(11)
    columns = registry.columns
    shifted = columns.index("v2")
    for _ in range(60):  # 600 rows: past the monitor's first update (500)
        batch = rng.normal(size=(10, len(columns)))
        batch[:, columns.index("hour")] = rng.integers(0, 24, size=10)
        batch[:, shifted] += 3.0
        for row in batch:
            status, _ = post_json(server.http, "/v2/models/fraud/infer", row_request(row, columns))
            assert status == 200
    status, body = get(server.http, "/metrics")
    assert status == 200
    psi = _psi(body.decode())
    assert psi["v2"] > PSI_ALERT, psi
    assert all(value < PSI_ALERT for name, value in psi.items() if name != "v2"), psi
