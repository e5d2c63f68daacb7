"""The sampler's bookkeeping on fakes: the NVML path, merging the series, idle GPU time."""

from __future__ import annotations

import json
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest

from usina.engine.profiles import Profile, percentile, profile_key
from usina.runtime.profile import GpuReader, ProfileSettings, Reading, Sampler, open_gpus
from usina.testing import InMemoryArtifactStore


class FakeNvml:
    """A stand-in for ``pynvml``: two GPUs whose readings a test sets."""

    class NVMLError(Exception):
        pass

    def __init__(self, gpus: int = 2, *, broken: bool = False) -> None:
        self.count = gpus
        self.broken = broken
        self.util = [0.0] * gpus
        self.memory = [0.0] * gpus
        self.power_mw = [0.0] * gpus
        self.started = self.stopped = 0

    def nvmlInit(self) -> None:
        if self.broken:
            raise self.NVMLError("NVML Shared Library Not Found")
        self.started += 1

    def nvmlShutdown(self) -> None:
        self.stopped += 1

    def nvmlDeviceGetCount(self) -> int:
        return self.count

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> int:
        return int(uuid.removeprefix("GPU-fake-"))

    def nvmlDeviceGetIndex(self, h: int) -> int:
        return h

    def nvmlDeviceGetUUID(self, h: int) -> bytes:
        return f"GPU-fake-{h}".encode()

    def nvmlDeviceGetName(self, h: int) -> str:
        return "NVIDIA Fake 80GB"

    def nvmlDeviceGetUtilizationRates(self, h: int) -> Any:
        return SimpleNamespace(gpu=self.util[h], memory=0)

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Any:
        return SimpleNamespace(used=self.memory[h], total=80 * 2**30, free=0)

    def nvmlDeviceGetPowerUsage(self, h: int) -> float:
        if self.power_mw[h] < 0:
            raise self.NVMLError("Not Supported")
        return self.power_mw[h]


@dataclass
class FakeTree:
    """A process tree whose readings a test scripts: one per ``read()``."""

    readings: list[Reading]
    memory_source: str = "uss"

    pid: int = 4242

    def read(self) -> Reading:
        return self.readings.pop(0)


def reading(at: float, cpu: float, memory: float) -> Reading:
    return Reading(at, cpu, memory, memory + 10, memory + 5, 0.0, at * 1000)


def test_open_gpus_reads_utilisation_memory_and_power_of_the_visible_gpus():
    nvml = FakeNvml(4)
    reader = open_gpus(nvml, "2,GPU-fake-3,MIG-abc")
    assert reader is not None
    assert reader.describe() == [
        (2, "GPU-fake-2", "NVIDIA Fake 80GB"),
        (3, "GPU-fake-3", "NVIDIA Fake 80GB"),
    ]
    nvml.util[2], nvml.memory[2], nvml.power_mw[2] = 97.0, 30 * 2**30, 350_000
    nvml.power_mw[3] = -1  # this board does not report power
    assert reader.read() == [(97.0, 30 * 2**30, 350.0), (0.0, 0.0, 0.0)]
    reader.close()
    assert nvml.stopped == 1


def test_open_gpus_without_a_list_takes_every_gpu_nvml_sees():
    reader = open_gpus(FakeNvml(2), None)
    assert reader is not None
    assert [i for i, _, _ in reader.describe()] == [0, 1]


@pytest.mark.parametrize(
    ("nvml", "visible"), [(FakeNvml(broken=True), None), (FakeNvml(2), ""), (FakeNvml(2), "7")]
)
def test_open_gpus_is_none_without_a_driver_or_a_visible_gpu(nvml, visible):
    assert open_gpus(nvml, visible) is None


def test_an_idle_gpu_and_a_busy_one_are_told_apart():
    nvml = FakeNvml(2)
    reader = open_gpus(nvml, "0,1")
    assert isinstance(reader, GpuReader)
    tree = FakeTree([reading(100.0 + i, 0.5 * i, 2**30) for i in range(11)])
    store = InMemoryArtifactStore()
    sampler = Sampler(store, "a1", tree=tree, settings=ProfileSettings(interval=1.0), gpus=reader)  # type: ignore[arg-type]
    sampler.started_at = 100.0
    for _ in range(11):
        nvml.util = [95.0, 2.0]  # GPU 0 multiplies matrices, GPU 1 is held and idle
        nvml.memory = [40 * 2**30, 500 * 2**20]
        nvml.power_mw = [400_000, 60_000]
        sampler.sample()
    profile = sampler.write(final=True)
    s = profile.summary
    assert [g.util[-1] for g in profile.gpus] == [95.0, 2.0]
    assert s.gpus_seen == 2
    assert s.gpu_seconds == pytest.approx(20.0)  # 2 GPUs x 10 s
    assert s.gpu_idle_seconds == pytest.approx(10.0)  # GPU 1, the whole time
    assert s.gpu_util is not None
    assert s.gpu_util.mean == pytest.approx(48.5)
    assert s.gpu_memory is not None
    assert s.gpu_memory.peak == 40 * 2**30
    assert s.gpu_power is not None
    assert s.gpu_power.peak == pytest.approx(460.0)
    assert s.cpu is not None
    assert s.cpu.peak == pytest.approx(0.5)
    assert s.cpu_seconds == pytest.approx(5.0)
    stored = Profile.from_json(json.loads(store.read_record(profile_key("a1")) or b"{}"))
    assert stored == profile


def test_past_max_points_neighbours_merge_and_the_interval_doubles():
    # memory spikes at one sample only: the merged series keeps it (amounts merge by max)
    n = 17
    mem = [100.0] * n
    mem[5] = 900.0
    tree = FakeTree([reading(float(i), min(i, 8) + max(0, i - 8) * 0.25, mem[i]) for i in range(n)])
    sampler = Sampler(None, "a2", tree=tree, settings=ProfileSettings(interval=1.0, max_points=8))  # type: ignore[arg-type]
    sampler.started_at = 0.0
    for _ in range(n):
        sampler.sample()
    profile = sampler.profile()
    assert len(profile.t) == 5  # 8 -> 4 after samples 8, 12 and 16, then one more
    assert profile.interval == 8.0  # doubled at each merge
    assert max(profile.series["memory"]) == 900.0
    assert profile.summary.memory is not None
    assert profile.summary.memory.peak == 900.0
    assert profile.summary.cpu_seconds == pytest.approx(8 + 8 * 0.25)


def test_a_profile_is_written_while_memory_grows_so_a_killed_step_leaves_its_curve():
    tree = FakeTree([reading(float(i), 0.0, 2**20 * (1 + i)) for i in range(6)])
    store = InMemoryArtifactStore()
    now = [0.0]
    sampler = Sampler(
        store,
        "a3",
        tree=tree,
        settings=ProfileSettings(interval=1.0),
        clock=lambda: now[0],  # type: ignore[arg-type]
    )
    for i in range(6):
        now[0] = float(i)
        sampler.sample()
        sampler._maybe_flush()
    raw = store.read_record(profile_key("a3"))
    assert raw is not None
    written = Profile.from_json(json.loads(raw))
    assert not written.final
    assert written.series["memory"][-1] == 6 * 2**20
    # once the final record is written, a late flush from the thread writes nothing
    sampler._stop.set()
    sampler.write(final=True)
    sampler.write(final=False)
    assert Profile.from_json(json.loads(store.read_record(profile_key("a3")) or b"{}")).final


def test_settings_from_the_environment():
    assert ProfileSettings.from_env({}) == ProfileSettings()
    assert ProfileSettings.from_env({"USINA_PROFILE_INTERVAL": "0"}).enabled is False
    assert ProfileSettings.from_env({"USINA_PROFILE_INTERVAL": "x"}).interval == 1.0
    assert ProfileSettings.from_env({"USINA_PROFILE_MAX_POINTS": "50"}).max_points == 50


def test_percentile_interpolates_like_numpy():
    import numpy as np

    values = [3.0, 1.0, 7.0, 2.0, 9.0]
    for q in (0, 50, 90, 95, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    assert percentile([], 95) is None


def test_the_working_set_of_a_pod_is_its_cgroup_usage_less_inactive_files(tmp_path):
    from usina.runtime.profile import cgroup_working_set

    assert cgroup_working_set(str(tmp_path)) is None  # not in a container
    (tmp_path / "memory.current").write_text("1073741824\n")
    (tmp_path / "memory.stat").write_text("anon 700000000\ninactive_file 73741824\nactive_file 5\n")
    assert cgroup_working_set(str(tmp_path)) == 1_000_000_000
    v1 = tmp_path / "v1"
    (v1 / "memory").mkdir(parents=True)
    (v1 / "memory" / "memory.usage_in_bytes").write_text("500\n")
    (v1 / "memory" / "memory.stat").write_text("total_inactive_file 100\n")
    assert cgroup_working_set(str(v1)) == 400


def _task(**node: Any) -> Any:
    from usina.engine.ports import Task
    from usina.sdk.resources import Resources

    return Task(
        attempt_id="run-fit-1",
        run_id="run",
        pipeline="p",
        node={"id": "fit", "step": "fit", **node},
        number=1,
        resources=Resources(cpu="500m", memory="4Gi", gpus=2),
        inputs={},
        artifacts_url="",
        params={},
    )


def test_profiled_in_a_pod_rank_writes_its_own_record_with_its_gpus():
    from usina.engine.profiles import load_profile, rank_profile_key
    from usina.runtime.profile import profiled

    store = InMemoryArtifactStore()
    nvml = FakeNvml(4)
    nvml.util = [0.0, 0.0, 88.0, 0.0]
    env = {
        "RANK": "3",
        "LOCAL_WORLD_SIZE": "2",
        "CUDA_VISIBLE_DEVICES": "2",
        "KUBERNETES_SERVICE_HOST": "10.0.0.1",
    }
    task = _task(distributed={"nodes": 2, "procs_per_node": 2})
    with profiled(
        store, task, settings=ProfileSettings(interval=0.02), environ=env, nvml=nvml
    ) as s:
        assert s is not None
        assert s.tree.use_cgroup is False  # two ranks share the pod: each its own memory
    raw = store.read_record(rank_profile_key("run-fit-1", 3))
    assert raw is not None
    profile = Profile.from_json(json.loads(raw))
    assert profile.rank == 3
    assert profile.requests == {"cpu": 0.25, "memory": 2 * 2**30, "gpus": 2.0, "share_of": 2}
    assert [g.index for g in profile.gpus] == [2]
    assert profile.gpus[0].util[-1] == 88.0
    assert nvml.stopped == 1
    store.write_record("attempts/run-fit-1/task.json", json.dumps(task.to_json()).encode())
    assert [p.rank for p in load_profile(store, "run-fit-1").ranks] == [3]


def test_profiled_is_off_for_the_local_gang_launcher_and_when_disabled():
    from usina.runtime.profile import profiled

    store = InMemoryArtifactStore()
    gang = _task(distributed={"nodes": 1, "procs_per_node": 2})
    with profiled(store, gang, settings=ProfileSettings(), environ={}) as s:
        assert s is None
    with profiled(store, _task(), settings=ProfileSettings(interval=0), environ={}) as s:
        assert s is None
    assert store.read_record(profile_key("run-fit-1")) is None


def test_a_step_shorter_than_the_interval_gets_one_point_over_its_whole_life():
    tree = FakeTree([reading(0.2, 0.1, 50.0), reading(0.25, 0.15, 60.0)])
    sampler = Sampler(None, "short", tree=tree, settings=ProfileSettings(interval=1.0))  # type: ignore[arg-type]
    sampler.started_at = 0.0
    sampler._first = sampler._last = reading(0.0, 0.0, 0.0)  # what start() notes
    for _ in range(2):
        sampler.sample()
    profile = sampler.profile()
    assert profile.t == (0.2,)  # the second came 50 ms later: too close for a rate of its own
    assert profile.series["cpu"] == (pytest.approx(0.5),)  # 0.1 s of CPU in 0.2 s
    assert profile.summary.memory is not None
    assert profile.summary.memory.peak == 60.0  # its amounts still count
    assert profile.summary.cpu_seconds == pytest.approx(0.15)
    assert profile.summary.duration == pytest.approx(0.2)
