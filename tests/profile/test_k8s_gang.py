"""A gang on the Kubernetes backend (the API emulator runs each pod's rendered ``torchrun``
command and the real runtime per rank): every rank of every pod writes its own profile."""

from __future__ import annotations

from tests.k8s.test_gang_on_kubernetes import _run_gang
from usina.engine.profiles import load_profile
from usina.engine.records import RunState


def test_each_rank_of_a_gang_in_pods_has_its_own_series(tmp_path):
    final, metadata, artifacts, *_ = _run_gang(tmp_path, "gang-profile", {}, {})
    assert final.state is RunState.SUCCEEDED
    [attempt] = metadata.get_attempts(final.id)
    found = load_profile(artifacts, attempt.id)
    assert found.whole is None
    assert [p.rank for p in found.ranks] == [0, 1, 2, 3]  # 2 pods x 2 ranks
    assert len({p.pid for p in found.ranks}) == 4
    for p in found.ranks:
        assert p.final
        assert p.series["memory"]
        assert p.requests["share_of"] == 2  # each rank is half of its pod's request
        assert p.requests["memory"] == 2**30 / 2
