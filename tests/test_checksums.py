"""Streaming checksums: equal to hashlib/blake3/google_crc32c and the command-line tools."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import subprocess
import tracemalloc

import blake3
import google_crc32c
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms import checksums

CHUNK = 64 * 1024
SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * 1024 * 1024 + 17]
TOOLS = {"blake3": "b3sum", "sha256": "sha256sum", "md5": "md5sum"}


def reference(algorithm: str, data: bytes) -> str:
    if algorithm == "blake3":
        return blake3.blake3(data).hexdigest()
    if algorithm == "crc32c":
        return google_crc32c.value(data).to_bytes(4, "big").hex()
    return hashlib.new(algorithm, data).hexdigest()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("checksums")
    paths = {}
    for size in SIZES:
        path = folder / f"f{size}.bin"
        path.write_bytes(os.urandom(size))
        paths[size] = path
    return paths


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("algorithm", checksums.ALGORITHMS)
def test_stream_digest_equals_library(files, algorithm, size):
    data = files[size].read_bytes()
    with open(files[size], "rb") as f:
        digest = checksums.stream_digest(f, algorithm, chunk_size=CHUNK)
    assert digest == f"{algorithm}:{reference(algorithm, data)}"


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("algorithm", sorted(TOOLS))
def test_stream_digest_equals_command_line_tool(files, algorithm, size):
    tool = shutil.which(TOOLS[algorithm])
    if tool is None:
        pytest.skip(f"{TOOLS[algorithm]} not installed")
    printed = subprocess.run([tool, str(files[size])], check=True, capture_output=True, text=True).stdout
    with open(files[size], "rb") as f:
        assert checksums.stream_digest(f, algorithm, chunk_size=CHUNK) == f"{algorithm}:{printed.split()[0]}"


def test_default_chunk_on_unbuffered_file(files):
    path = files[SIZES[-1]]
    with open(path, "rb", buffering=0) as f:
        assert checksums.stream_digest(f, "blake3") == "blake3:" + reference("blake3", path.read_bytes())


def test_file_without_readinto_is_read():
    class ReadOnly:
        def __init__(self, data: bytes):
            self._f = io.BytesIO(data)
            self.seek = self._f.seek
            self.read = self._f.read

    data = os.urandom(CHUNK * 2 + 5)
    assert checksums.stream_digest(ReadOnly(data), "sha256", chunk_size=CHUNK) == "sha256:" + reference("sha256", data)


def test_range_digest_and_short_file():
    data = os.urandom(10_000)
    f = io.BytesIO(data)
    assert checksums.stream_digest(f, "md5", start=100, stop=9_000, chunk_size=999) == "md5:" + reference(
        "md5", data[100:9_000]
    )
    with pytest.raises(EOFError):
        checksums.stream_digest(f, "md5", start=100, stop=20_000)


def test_unknown_algorithm():
    with pytest.raises(ValueError, match="unknown checksum"):
        checksums.new_hasher("sha1")


def test_crc32c_hex_and_object_store_base64():
    # RFC 3720 test vector: 32 zero bytes -> 0x8A9136AA.
    hasher = checksums.new_hasher("crc32c")
    hasher.update(bytes(32))
    assert hasher.hexdigest() == "8a9136aa"
    # GCS reports base64 of the same big-endian bytes.
    assert base64.b64encode(bytes.fromhex(hasher.hexdigest())).decode() == "ipE2qg=="
    assert google_crc32c.Checksum(bytes(32)).digest() == bytes.fromhex("8a9136aa")


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=5000), cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=6))
def test_crc32c_ranges_merge_to_whole(data, cuts):
    bounds = sorted({0, len(data), *(min(c, len(data)) for c in cuts)})
    f = io.BytesIO(data)
    parts = [
        (start, stop - start, checksums.crc32c_range(f, start, stop, chunk_size=7))
        for start, stop in zip(bounds, bounds[1:])
    ]
    expected = google_crc32c.value(data)
    assert checksums.merge_crc32c(reversed(parts), size=len(data)) == expected
    if parts:
        head_length, head_crc = parts[0][1:]
        rest = google_crc32c.value(data[head_length:])
        assert checksums.crc32c_combine(head_crc, rest, len(data) - head_length) == expected


@given(
    len_a=st.integers(min_value=0, max_value=1 << 40),
    len_b=st.integers(min_value=0, max_value=1 << 40),
    crc_a=st.integers(min_value=0, max_value=0xFFFFFFFF),
)
def test_crc32c_combine_with_empty_and_huge_lengths(len_a, len_b, crc_a):
    empty = google_crc32c.value(b"")
    assert checksums.crc32c_combine(crc_a, empty, 0) == crc_a
    assert checksums.crc32c_combine(empty, crc_a, len_b) == crc_a
    # Associativity: (A+B)+C == A+(B+C) for arbitrary lengths, including 50+ GB files.
    b, c = 0x12345678, 0x9ABCDEF0
    left = checksums.crc32c_combine(checksums.crc32c_combine(crc_a, b, len_a), c, len_b)
    right = checksums.crc32c_combine(crc_a, checksums.crc32c_combine(b, c, len_b), len_a + len_b)
    assert left == right


def test_merge_crc32c_rejects_gaps_overlaps_and_short_cover():
    data = os.urandom(300)
    crc = [google_crc32c.value(data[i : i + 100]) for i in (0, 100, 200)]
    with pytest.raises(ValueError, match="contiguous"):
        checksums.merge_crc32c([(0, 100, crc[0]), (200, 100, crc[2])])
    with pytest.raises(ValueError, match="contiguous"):
        checksums.merge_crc32c([(0, 100, crc[0]), (50, 100, crc[1])])
    with pytest.raises(ValueError, match="cover 200"):
        checksums.merge_crc32c([(0, 100, crc[0]), (100, 100, crc[1])], size=300)
    assert checksums.merge_crc32c([]) == google_crc32c.value(b"")


class RecordingFile(io.BytesIO):
    """Records the size of every buffer handed to ``readinto``."""

    def __init__(self, data: bytes):
        super().__init__(data)
        self.read_sizes: list[int] = []

    def readinto(self, buffer) -> int:
        self.read_sizes.append(len(buffer))
        return super().readinto(buffer)


def test_adaptive_chunk_size_and_before_read_are_honoured():
    data = os.urandom(1_000_000)
    sizes = iter([1000, 5000, 100, 300_000] + [400_000] * 10)
    asked: list[int] = []

    def chunk_size() -> int:
        asked.append(next(sizes))
        return asked[-1]

    hooks = []
    f = RecordingFile(data)
    digest = checksums.stream_digest(f, "blake3", chunk_size=chunk_size, before_read=lambda: hooks.append(f.tell()))
    assert digest == "blake3:" + reference("blake3", data)
    # One size and one hook per read, the hook before the read; the last read finds EOF.
    assert f.read_sizes[:5] == [1000, 5000, 100, 300_000, 400_000]
    assert len(asked) == len(hooks) == len(f.read_sizes)
    assert hooks[:4] == [0, 1000, 6000, 6100]


def test_reads_clip_to_the_range_stop():
    f = RecordingFile(os.urandom(10_000))
    checksums.crc32c_range(f, 1_000, 2_500, chunk_size=1_000)
    assert f.read_sizes == [1_000, 500]


def test_buffer_stays_bounded_and_shrinks():
    size = 8 * 1024 * 1024
    f = io.BytesIO(bytes(size))
    tracemalloc.start()
    try:
        checksums.stream_digest(f, "sha256", chunk_size=256 * 1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024  # one 256 KiB buffer, never the 8 MiB file

    # A shrinking chunk size reallocates a smaller buffer: views of successive chunks share
    # one buffer until the size falls under a quarter of it.
    sizes = iter([1 << 20, 1 << 20, 1 << 18, 1 << 17] + [1 << 17] * 100)
    owners = [
        chunk.obj
        for chunk in checksums.iter_chunks(io.BytesIO(bytes(3 << 20)), chunk_size=lambda: next(sizes))
    ]
    assert owners[0] is owners[1] and len(owners[0]) == 1 << 20
    assert owners[2] is not owners[1] and len(owners[2]) == 1 << 18
    assert owners[3] is owners[2]
    assert max(len(o) for o in owners) == 1 << 20


# --- one pass: the digest taken from the statistics' reads (DigestingReader) -------------------


def _reads(data: bytes, reads, algorithm: str, *, reuse: bool, background: bool = True) -> tuple[str, int]:
    """Digest ``data`` through a DigestingReader after ``reads`` (offset, length) with read_at,
    checking each read's bytes; ``reuse``: one buffer for every read (the caller's buffer is
    reused only after read_at waited for its hash). Returns (digest, bytes read)."""
    counted = [0]

    class Counting(io.BytesIO):
        def readinto(self, b):
            n = super().readinto(b)
            counted[0] += n
            return n

        def read(self, size=-1):
            out = super().read(size)
            counted[0] += len(out)
            return out

    raw = Counting(data)
    shared = bytearray(max((n for _, n in reads), default=0))
    with checksums.DigestingReader(raw, algorithm, len(data), chunk_size=1000, background=background) as f:
        for offset, n in reads:
            n = min(n, len(data) - offset)
            out = memoryview(shared)[:n] if reuse else memoryview(bytearray(n))
            f.read_at(offset, out)
            assert bytes(out) == data[offset:offset + n]
            f.seek(0)  # reads of the library pass through
            assert f.read(3) == data[:3]
        digest = f.hexdigest()
    return digest, counted[0]


@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(min_size=1, max_size=20_000),
    cuts=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 5000)), max_size=12),
    algorithm=st.sampled_from(["blake3", "sha256", "md5"]),
    reuse=st.booleans(),
    background=st.booleans(),
)
def test_digesting_reader_equals_library_whatever_the_reads(data, cuts, algorithm, reuse, background):
    reads = [(int(at * (len(data) - 1)), n) for at, n in cuts]
    digest, _ = _reads(data, reads, algorithm, reuse=reuse, background=background)
    assert digest == f"{algorithm}:{reference(algorithm, data)}"


def test_digesting_reader_reads_each_byte_once_when_reads_move_forward():
    data = os.urandom(100_000)
    forward = [(100, 5000), (5100, 20_000), (30_000, 10_000), (40_000, 60_000)]  # gaps: 0-100, 25100-30000
    digest, read = _reads(data, forward, "blake3", reuse=True)
    assert digest == f"blake3:{reference('blake3', data)}"
    assert read == len(data) + 3 * len(forward)  # + the library's reads (3 bytes each)
    backward = list(reversed(forward))
    digest, read = _reads(data, backward, "blake3", reuse=False)
    assert digest == f"blake3:{reference('blake3', data)}"
    assert read == len(data) + 35_000 + 12  # out of order: read again, still the file's digest


def test_digesting_reader_short_file_and_pending_bound():
    data = os.urandom(10_000)
    with checksums.DigestingReader(io.BytesIO(data), "blake3", 20_000) as f:
        f.read_at(0, memoryview(bytearray(5000)))
        with pytest.raises(EOFError):
            f.hexdigest()
    with checksums.DigestingReader(io.BytesIO(data), "sha256", len(data)) as f:
        buffers = [memoryview(bytearray(1000)) for _ in range(10)]
        for i, b in enumerate(buffers):
            f.read_at(i * 1000, b)
            assert len(f._pending) <= checksums.DigestingReader.MAX_PENDING
        assert f.hexdigest() == f"sha256:{hashlib.sha256(data).hexdigest()}"
