"""Memory governor: pressure levels, adaptive sizes, bounded pauses, cgroup reading, Beam metrics."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys

import apache_beam as beam
import psutil
import pytest
from apache_beam.metrics.metric import MetricsFilter

from transforms import checksums, governor
from transforms.governor import MemoryGovernor, MemoryReading, Pressure
from transforms.metrics import BeamGovernorMetrics

MiB = 1024 * 1024
BUDGET = 100 * MiB
LEVEL_RSS = {  # RSS fractions of the budget that fall in each level (default thresholds)
    Pressure.NORMAL: 0.50,
    Pressure.ELEVATED: 0.75,
    Pressure.HIGH: 0.90,
    Pressure.CRITICAL: 0.97,
}


def reading(rss_fraction: float = 0.1, system_fraction: float = 0.1) -> MemoryReading:
    return MemoryReading(int(rss_fraction * BUDGET), BUDGET, int(system_fraction * 1000 * MiB), 1000 * MiB)


class FakeMemory:
    """A scripted reading function plus a fake clock that only fake sleeps advance."""

    def __init__(self, levels: list[Pressure]):
        self.levels = list(levels)
        self.now = 0.0
        self.sleeps: list[float] = []
        self.reads = 0

    def read(self, budget_bytes: int) -> MemoryReading:
        assert budget_bytes == BUDGET
        self.reads += 1
        level = self.levels.pop(0) if len(self.levels) > 1 else self.levels[0]
        return reading(LEVEL_RSS[level])

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


def make(fake: FakeMemory, **kwargs) -> MemoryGovernor:
    kwargs.setdefault("check_interval_s", 0)
    return MemoryGovernor(BUDGET, read=fake.read, sleep=fake.sleep, clock=fake.clock, **kwargs)


@pytest.mark.parametrize(
    "rss, system, expected",
    [
        (0.10, 0.10, Pressure.NORMAL),
        (0.69, 0.10, Pressure.NORMAL),
        (0.70, 0.10, Pressure.ELEVATED),
        (0.10, 0.86, Pressure.HIGH),
        (0.90, 0.96, Pressure.CRITICAL),
        (1.50, 0.10, Pressure.CRITICAL),
    ],
)
def test_classify_takes_the_worse_fraction(rss, system, expected):
    assert governor.classify(reading(rss, system)) == expected


def test_classify_with_custom_thresholds():
    assert governor.classify(reading(0.5), (0.3, 0.4, 0.6)) == Pressure.HIGH
    with pytest.raises(ValueError):
        MemoryGovernor(BUDGET, (0.9, 0.8, 0.95))


def test_normal_grows_chunks_and_batches_up_to_max():
    fake = FakeMemory([Pressure.NORMAL])
    gov = make(fake, start_chunk=2 * MiB, max_chunk=16 * MiB, start_batch=8, max_batch=32)
    sizes = []
    for _ in range(5):
        assert gov.check() == Pressure.NORMAL
        sizes.append((gov.chunk_bytes, gov.batch_size))
    assert sizes == [(4 * MiB, 16), (8 * MiB, 32), (16 * MiB, 32), (16 * MiB, 32), (16 * MiB, 32)]


def test_elevated_halves_high_quarters_critical_sets_minimum():
    fake = FakeMemory([Pressure.ELEVATED, Pressure.HIGH, Pressure.HIGH, Pressure.CRITICAL])
    gov = make(fake, min_chunk=256 * 1024, start_chunk=32 * MiB, max_chunk=64 * MiB, start_batch=64, max_batch=64)
    gov.check()
    assert (gov.level, gov.chunk_bytes, gov.batch_size) == (Pressure.ELEVATED, 16 * MiB, 32)
    gov.check()
    assert (gov.level, gov.chunk_bytes, gov.batch_size) == (Pressure.HIGH, 4 * MiB, 8)
    gov.check()
    assert (gov.chunk_bytes, gov.batch_size) == (1 * MiB, 2)
    gov.check()
    assert (gov.level, gov.chunk_bytes, gov.batch_size) == (Pressure.CRITICAL, 256 * 1024, 1)


def test_check_reads_memory_at_most_every_interval():
    fake = FakeMemory([Pressure.NORMAL])
    gov = make(fake, check_interval_s=1.0)
    for _ in range(10):
        gov.check()
    assert fake.reads == 1
    fake.now += 1.0
    gov.check()
    assert fake.reads == 2


def test_reads_pause_under_critical_and_resume(caplog):
    fake = FakeMemory([Pressure.CRITICAL, Pressure.CRITICAL, Pressure.CRITICAL, Pressure.HIGH, Pressure.NORMAL])
    gov = make(fake, pause_step_s=0.1)
    with caplog.at_level(logging.WARNING, logger=governor.__name__):
        gov.before_read()
    assert fake.sleeps == [0.1, 0.1, 0.1]  # CRITICAL twice more while paused, HIGH resumes
    assert gov.level == Pressure.HIGH
    pause_logs = [r for r in caplog.records if "pausing reads" in r.getMessage()]
    assert len(pause_logs) == 1
    stats = gov.stats()
    assert stats["pauses"] == 1 and stats["pauses_timed_out"] == 0
    assert stats["pause_seconds"] == pytest.approx(0.3)
    assert stats["max_level"] == "CRITICAL"
    gov.before_read()  # NORMAL: no pause
    assert len(fake.sleeps) == 3 and gov.stats()["pauses"] == 1


def test_pause_is_bounded_when_pressure_stays_critical(caplog):
    fake = FakeMemory([Pressure.CRITICAL])
    gov = make(fake, pause_step_s=0.5, max_pause_s=2.0)
    with caplog.at_level(logging.WARNING, logger=governor.__name__):
        gov.before_read()
    assert sum(fake.sleeps) == pytest.approx(2.0)
    assert max(fake.sleeps) <= 0.5
    assert gov.stats()["pauses_timed_out"] == 1
    assert any("resuming reads" in r.getMessage() for r in caplog.records)


def test_no_second_pause_until_pressure_falls():
    """Memory that waiting did not free (a large baseline) must not stall every later read."""
    fake = FakeMemory([Pressure.CRITICAL] * 20 + [Pressure.HIGH, Pressure.CRITICAL])
    gov = make(fake, pause_step_s=0.5, max_pause_s=2.0, check_interval_s=0)
    gov.before_read()  # pauses 2 s, times out
    slept = sum(fake.sleeps)
    for _ in range(10):
        gov.before_read()  # still CRITICAL: reads go on, at the smallest chunk
    assert sum(fake.sleeps) == slept and gov.stats()["pauses"] == 1
    assert gov.chunk_bytes == 256 * 1024
    for _ in range(10):
        gov.before_read()  # HIGH re-arms the pause; the next CRITICAL pauses again
    assert gov.stats()["pauses"] == 2


def test_every_level_then_recovery_and_stats():
    script = [Pressure.NORMAL, Pressure.ELEVATED, Pressure.HIGH, Pressure.CRITICAL, Pressure.NORMAL, Pressure.NORMAL]
    fake = FakeMemory(script)
    gov = make(fake, start_chunk=2 * MiB, start_batch=16)
    levels = []
    for _ in script:
        gov.before_read()
        levels.append(gov.level)
    # The pause under CRITICAL ends with a NORMAL re-read.
    assert levels == [Pressure.NORMAL, Pressure.ELEVATED, Pressure.HIGH] + [Pressure.NORMAL] * 3
    stats = gov.stats()
    # NORMAL->ELEVATED->HIGH->CRITICAL->NORMAL (the pause's re-read found NORMAL).
    assert stats["level_changes"] == 4
    assert stats["pauses"] == 1
    assert stats["max_level"] == "CRITICAL" and stats["level"] == "NORMAL"
    assert stats["chunk_bytes_min"] == 256 * 1024
    assert stats["chunk_bytes_max"] == 4 * MiB
    assert stats["chunk_bytes_last"] == gov.chunk_bytes == 2 * MiB  # min, then doubled three times
    assert stats["batch_size_min"] == 1 and stats["batch_size_last"] == gov.batch_size == 8
    assert stats["checks"] == fake.reads


def test_governor_drives_checksum_reads():
    """The checksum stream consults the governor's chunk size and pauses before reads."""
    fake = FakeMemory([Pressure.NORMAL, Pressure.HIGH, Pressure.CRITICAL, Pressure.ELEVATED] + [Pressure.NORMAL])
    gov = make(fake, min_chunk=1024, start_chunk=4096, max_chunk=16384)
    data = os.urandom(100_000)
    sizes = []

    def chunk_size() -> int:
        sizes.append(gov.chunk_bytes)
        return gov.chunk_bytes

    digest = checksums.stream_digest(io.BytesIO(data), "crc32c", chunk_size=chunk_size, before_read=gov.before_read)
    assert digest == checksums.stream_digest(io.BytesIO(data), "crc32c")
    assert sizes[:4] == [4096, 8192, 2048, 1024]  # start, grown, quartered, minimum after CRITICAL
    assert gov.stats()["pauses"] == 1


def write_cgroup(root, files: dict[str, str]):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


HOST = 64 * 1024 * MiB


def test_cgroup_v2_limit_minus_inactive_file(tmp_path):
    write_cgroup(
        tmp_path,
        {
            "cgroup.controllers": "cpu io memory pids\n",
            "memory.max": f"{1024 * MiB}\n",
            "memory.current": f"{600 * MiB}\n",
            "memory.stat": f"anon {100 * MiB}\nfile {500 * MiB}\ninactive_file {200 * MiB}\n",
            "proc_cgroup": "0::/\n",
        },
    )
    assert governor.cgroup_memory(str(tmp_path), str(tmp_path / "proc_cgroup"), HOST) == (400 * MiB, 1024 * MiB)


def test_cgroup_v2_max_means_no_limit(tmp_path):
    write_cgroup(
        tmp_path,
        {"cgroup.controllers": "memory\n", "memory.max": "max\n", "memory.current": "123\n", "proc_cgroup": "0::/\n"},
    )
    assert governor.cgroup_memory(str(tmp_path), str(tmp_path / "proc_cgroup"), HOST) is None


def test_cgroup_v2_limit_on_a_parent_of_our_cgroup(tmp_path):
    write_cgroup(
        tmp_path,
        {
            "cgroup.controllers": "memory\n",
            "job/memory.max": f"{2048 * MiB}\n",
            "job/memory.current": f"{1800 * MiB}\n",
            "job/worker/memory.max": "max\n",
            "job/worker/memory.current": f"{900 * MiB}\n",
            "proc_cgroup": "0::/job/worker\n",
        },
    )
    assert governor.cgroup_memory(str(tmp_path), str(tmp_path / "proc_cgroup"), HOST) == (1800 * MiB, 2048 * MiB)


def test_cgroup_v1_and_its_absurd_no_limit_value(tmp_path):
    write_cgroup(
        tmp_path,
        {
            "memory/memory.limit_in_bytes": f"{512 * MiB}\n",
            "memory/memory.usage_in_bytes": f"{300 * MiB}\n",
            "memory/memory.stat": f"cache {10 * MiB}\ntotal_inactive_file {50 * MiB}\n",
            "proc_cgroup": "4:memory:/\n3:cpuset:/\n",
        },
    )
    proc = str(tmp_path / "proc_cgroup")
    assert governor.cgroup_memory(str(tmp_path), proc, HOST) == (250 * MiB, 512 * MiB)
    (tmp_path / "memory/memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert governor.cgroup_memory(str(tmp_path), proc, HOST) is None


def test_no_cgroup_falls_back_to_machine_memory(tmp_path):
    assert governor.cgroup_memory(str(tmp_path / "missing"), str(tmp_path / "missing"), HOST) is None
    got = governor.read_memory(BUDGET, cgroup_root=str(tmp_path / "missing"))
    assert got.system_limit_bytes == psutil.virtual_memory().total


def test_read_memory_on_this_machine():
    got = governor.read_memory(500 * MiB)
    assert got.budget_bytes == 500 * MiB
    assert 1 * MiB < got.rss_bytes < psutil.virtual_memory().total
    assert 0 < got.system_used_bytes <= got.system_limit_bytes
    assert got.system_limit_bytes <= psutil.virtual_memory().total
    assert governor.classify(got) in set(Pressure)


def test_rss_counts_child_processes():
    code = "b = bytearray(64 * 1024 * 1024); print('ready', flush=True); input()"
    command = [sys.executable, "-c", code]
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as child:
        assert child.stdout.readline() == "ready\n"
        own = psutil.Process().memory_info().rss
        assert governor.process_tree_rss() >= own + 64 * MiB
        child.communicate("\n")


class GovernedRead(beam.DoFn):
    """A DoFn that drives a governor with scripted readings and reports Beam metrics."""

    def setup(self):
        self.fake = FakeMemory([Pressure.NORMAL, Pressure.ELEVATED, Pressure.CRITICAL, Pressure.NORMAL])
        self.gov = make(self.fake, metrics=BeamGovernorMetrics())

    def process(self, element):
        self.gov.before_read()
        yield self.gov.chunk_bytes


def test_beam_metrics_from_a_pipeline(pipeline):
    _ = pipeline | beam.Create([1, 2, 3]) | beam.ParDo(GovernedRead())
    result = pipeline.run()
    result.wait_until_finish()
    metrics = result.metrics().query(MetricsFilter().with_namespace("metaextract"))

    def committed(kind: str, name: str):
        (found,) = [m for m in metrics[kind] if m.key.metric.name == name]
        return found.committed

    assert committed("counters", "memory_level_changes") == 3  # NORMAL->ELEVATED->CRITICAL->NORMAL
    assert committed("counters", "memory_pauses") == 1
    assert committed("counters", "cumulativeThrottlingSeconds") == 1  # ceil(0.1 s)
    assert committed("gauges", "memory_pressure_level").value == Pressure.NORMAL
    assert committed("gauges", "chunk_bytes").value == 512 * 1024  # 2 MiB halved, minimum, doubled
    assert committed("gauges", "batch_size").value > 0
    chunks = committed("distributions", "chunk_bytes_used")
    assert chunks.count == 4 and chunks.min == 256 * 1024 and chunks.max == 4 * MiB
    assert committed("distributions", "memory_pause_ms").sum == 100


def test_governor_and_checksums_are_beam_free():
    code = "import sys, transforms.governor, transforms.checksums; print('apache_beam' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
