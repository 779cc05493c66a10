"""The checkpoint store on real files with real tiny Keras models: checksums,
bad files set aside (never deleted), a resume's fallback, identity by
(branch, step), refusal of weightless snapshots, a full disk."""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import uuid
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import crc32c
import numpy as np
import pytest

from tb_retune import CheckpointError
from tb_retune.trainer import checkpoint_format as fmt
from tb_retune.trainer.checkpoints import CheckpointInfo, CheckpointStore, collect_variables
from tests.conftest import tiny_data, tiny_model


def _trained(seed: int = 0, units: int = 8, epochs: int = 1) -> Any:
    import keras

    model = tiny_model(keras.optimizers.Adam(1e-2), seed=seed, units=units)
    x, y = tiny_data(64, seed=seed)
    model.fit(x, y, batch_size=16, epochs=epochs, verbose=0)
    return model


def _save(store: CheckpointStore, model: Any, step: int, kind: str = "epoch", branch: str = "main") -> CheckpointInfo:
    return store.save(model, model.optimizer, branch=branch, step=step, node=f"{branch}-1", kind=kind,
                      meta={"epoch": 1, "hyperparameters": {"learning_rate": 0.01}})


def _values(model: Any) -> dict[str, np.ndarray]:
    return {k: np.array(v.numpy()) for k, v in collect_variables(model, model.optimizer)}


def _assert_same_state(model: Any, expected: dict[str, np.ndarray]) -> None:
    """By position: Keras names a second model's variables dense_2, ... (the store matches by position too)."""
    got = list(_values(model).values())
    assert len(got) == len(expected)
    for value, (key, want) in zip(got, expected.items(), strict=True):
        np.testing.assert_array_equal(value, want, err_msg=key)


def _files(folder: str) -> list[str]:
    return sorted(os.path.relpath(os.path.join(r, n), folder) for r, _, names in os.walk(folder) for n in names)


def test_round_trip_is_bit_exact_and_the_file_carries_checksums(tmp_path: Any) -> None:
    model = _trained()
    store = CheckpointStore(str(tmp_path / "checkpoints"))
    info = _save(store, model, 4)
    before = _values(model)
    with open(info.path, "rb") as f:
        header = fmt.read_header(f, info.path)
    assert header.version == fmt.VERSION == 3 and header.entries
    assert all(e.checksum is not None and len(e.checksum) == 8 and e.checksum != "00000000"
               for e in header.entries if e.nbytes)
    # The checksums are CRC-32C (the crc32c package), as the format says.
    with open(info.path, "rb") as f:
        got = fmt.read_arrays(f, info.path, fmt.read_header(f, info.path))
    entry = max(header.entries, key=lambda e: e.nbytes)
    assert entry.checksum == f"{crc32c.crc32c(got[entry.key].tobytes()):08x}"
    assert os.path.getsize(info.path) == header.start + sum(fmt.aligned(e.nbytes) for e in header.entries)

    other = tiny_model(__import__("keras").optimizers.Adam(1e-2), seed=7)
    other.fit(*tiny_data(16, seed=3), batch_size=16, epochs=1, verbose=0)
    meta = store.load(other, other.optimizer, info)
    assert meta["step"] == 4 and meta["hyperparameters"] == {"learning_rate": 0.01}
    _assert_same_state(other, before)
    # The load may read through the spare snapshot buffer; the model must not keep a view of it:
    # a snapshot of another model (same layout) fills that buffer next.
    third = _trained(seed=9)
    store.write(store.snapshot(third, third.optimizer, branch="main", step=5, node="main-1", kind="epoch", meta={}))
    store.load(other, other.optimizer, info)
    store.snapshot(third, third.optimizer, branch="main", step=6, node="main-1", kind="epoch", meta={})
    _assert_same_state(other, before)


def test_a_snapshot_is_one_buffer_and_does_not_follow_later_training(tmp_path: Any) -> None:
    model = _trained()
    store = CheckpointStore(str(tmp_path / "checkpoints"))
    snap = store.snapshot(model, model.optimizer, branch="main", step=4, node="main-1", kind="epoch", meta={})
    assert snap.buffer is not None
    assert all(np.shares_memory(a, snap.buffer) for a in snap.arrays if a.size)
    state = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for _, v in collect_variables(model, model.optimizer))
    assert state <= snap.buffer.nbytes <= state + 64 * len(snap.arrays)
    taken = _values(model)
    model.fit(*tiny_data(64, seed=1), batch_size=16, epochs=1, verbose=0)  # changes every variable
    buffer = snap.buffer
    info = store.write(snap)
    _, saved = store.read_arrays(info)
    for key, value in taken.items():
        np.testing.assert_array_equal(saved[key], value, err_msg=key)
    assert any(not np.array_equal(saved[k], v) for k, v in _values(model).items())
    # The written snapshot's buffer serves the next one (no fresh pages to fault in), and is not reused twice.
    assert snap.arrays == [] and snap.buffer is None
    with pytest.raises(CheckpointError, match=r"was written already and its buffer reused; take a new snapshot"):
        store.write(snap)
    again = store.snapshot(model, model.optimizer, branch="main", step=8, node="main-1", kind="epoch", meta={})
    assert again.buffer is buffer
    third = store.snapshot(model, model.optimizer, branch="main", step=9, node="main-1", kind="epoch", meta={})
    assert third.buffer is not buffer  # the spare is in use: a second snapshot in flight gets its own
    store.write(again)
    store.free_buffers()
    assert store.snapshot(model, model.optimizer, branch="main", step=10, node="main-1", kind="epoch",
                          meta={}).buffer is not buffer


def _cut_in_half(path: str) -> None:
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def _cut_to_five_bytes(path: str) -> None:
    with open(path, "r+b") as f:
        f.truncate(5)


def _empty(path: str) -> None:
    open(path, "wb").close()


def _bad_magic(path: str) -> None:
    with open(path, "r+b") as f:
        f.write(b"PK\x03\x04")


def _header_digit(path: str) -> None:
    # Still valid JSON: a digit of a shape changes, which only the header's checksum can tell.
    with open(path, "r+b") as f:
        head = f.read(4096)
        i = head.index(b'"shape": [') + len(b'"shape": [')
        f.seek(i)
        f.write(b"9" if head[i:i + 1] != b"9" else b"8")


def _flip_one_bit(path: str) -> None:
    with open(path, "r+b") as f:
        header = fmt.read_header(f, path)
        biggest = max(header.entries, key=lambda e: e.nbytes)
        at = header.start + biggest.offset + biggest.nbytes // 2
        f.seek(at)
        byte = f.read(1)[0]
        f.seek(at)
        f.write(bytes([byte ^ 0x10]))


def _appended(path: str) -> None:
    with open(path, "ab") as f:
        f.write(b"\0" * 100)


DAMAGE: dict[str, tuple[Callable[[str], None], str]] = {
    "cut in half": (_cut_in_half, r"cut short"),
    "cut to five bytes": (_cut_to_five_bytes, r"the file is cut short in its first bytes \(5 bytes\)"),
    "empty": (_empty, r"the file is empty \(0 bytes\)"),
    "bad magic": (_bad_magic, r"not a tb-retune checkpoint"),
    "bad header": (_header_digit, r"its header is damaged \(crc32c [0-9a-f]{8}, written as"),
    "one bit flipped in the data": (_flip_one_bit, r"array '.+' is damaged \(crc32c [0-9a-f]{8}, written as [0-9a-f]{8}\)"),
    "bytes appended": (_appended, r"has bytes appended"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_checkpoint_raises_naming_the_file_and_is_set_aside(tmp_path: Any, damage: str) -> None:
    model = _trained()
    folder = str(tmp_path / "checkpoints")
    store = CheckpointStore(folder)
    good = _save(store, model, 2)
    bad = _save(store, model, 4)
    spoil, says = DAMAGE[damage]
    spoil(bad.path)
    with pytest.raises(CheckpointError, match=says) as caught:
        store.read_arrays(bad)
    message = str(caught.value)
    assert message.startswith(f"checkpoint {bad.path} is unreadable: ")
    assert message.endswith(f"set aside as {os.path.basename(bad.path)}.bad")
    # Out of the index, kept on disk; the good one untouched.
    assert store.steps() == {"main": [2]}
    assert os.path.exists(bad.path + ".bad") and not os.path.exists(bad.path)
    assert CheckpointStore(folder).steps() == {"main": [2]}  # a fresh scan does not list it either
    store.load(model, model.optimizer, good)


def test_latest_good_skips_bad_ones_with_a_warning_and_loses_nothing(tmp_path: Any, caplog: Any) -> None:
    model = _trained()
    folder = str(tmp_path / "checkpoints")
    store = CheckpointStore(folder, keep_last=None)
    first = _save(store, model, 8)
    model.fit(*tiny_data(32, seed=2), batch_size=16, epochs=1, verbose=0)
    expected = _values(model)
    good = _save(store, model, 16)
    truncated = _save(store, model, 24)
    flipped = _save(store, model, 32)
    _cut_in_half(truncated.path)
    _flip_one_bit(flipped.path)
    before = _files(folder)
    with caplog.at_level(logging.WARNING, logger="tb_retune"):
        found = store.latest_good("main")
    assert found == good
    assert [s.info.step for s in store.last_skipped] == [32, 24]
    assert "is damaged" in store.last_skipped[0].reason and "cut short" in store.last_skipped[1].reason
    assert [s.moved_to for s in store.last_skipped] == [flipped.path + ".bad", truncated.path + ".bad"]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("main@32" in w and flipped.path in w for w in warned), warned
    assert any("main@24" in w and truncated.path in w for w in warned), warned
    # Nothing deleted: the same files, two of them renamed.
    after = _files(folder)
    assert len(after) == len(before)
    assert {f.removesuffix(".bad") for f in after} == set(before)
    assert store.steps() == {"main": [8, 16]}
    # The one it returns loads.
    fresh = _trained(seed=5)
    store.load(fresh, fresh.optimizer, found)
    _assert_same_state(fresh, expected)
    # Asked again, nothing more is skipped; with no good one left it says None.
    assert store.latest_good("main") == good and store.last_skipped == []
    for info in (first, good):
        _empty(info.path)
    assert store.latest_good("main") is None
    assert [s.info.step for s in store.last_skipped] == [16, 8]
    assert store.latest_good("no-such-branch") is None


def _weightless_model() -> Any:
    import keras

    class Net(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x: Any) -> Any:
            return self.dense(x)

    model = Net()  # not built: no weights yet, as in the callback's on_train_begin
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    return model


def test_write_refuses_a_snapshot_with_no_model_weights(tmp_path: Any) -> None:
    model = _weightless_model()
    assert not model.weights
    folder = str(tmp_path / "checkpoints")
    store = CheckpointStore(folder)
    with pytest.raises(CheckpointError, match=r"branch 'main' at step 0: it holds 0 model weights; build the model"):
        store.save(model, model.optimizer, branch="main", step=0, node="main-1", kind="branch", meta={})
    assert store.steps() == {} and _files(folder) == []


def _write_v1(path: str, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """A checkpoint as the previous release wrote it (format 1: no checksums)."""
    entries, offset = [], 0
    for key, arr in arrays.items():
        entries.append({"key": key, "dtype": arr.dtype.str, "shape": list(arr.shape), "offset": offset})
        offset += fmt.aligned(arr.nbytes)
    header = json.dumps({"meta": meta, "arrays": entries}).encode()
    start = fmt.aligned(len(fmt.MAGIC_V1) + 8 + len(header))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(fmt.MAGIC_V1 + len(header).to_bytes(8, "little") + header)
        f.write(b"\0" * (start - len(fmt.MAGIC_V1) - 8 - len(header)))
        for arr in arrays.values():
            f.write(arr.tobytes() + b"\0" * (fmt.aligned(arr.nbytes) - arr.nbytes))


def _write_v2(path: str, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """A checkpoint as release 2 wrote it (format 2: CRC-32 from zlib, under "crc32")."""
    entries, offset = [], 0
    for key, arr in arrays.items():
        entries.append({"key": key, "dtype": arr.dtype.str, "shape": list(arr.shape), "offset": offset,
                        "nbytes": arr.nbytes, "crc32": f"{zlib.crc32(arr.tobytes()):08x}"})
        offset += fmt.aligned(arr.nbytes)
    header = json.dumps({"meta": meta, "arrays": entries, "data_bytes": offset}).encode()
    preamble = fmt.MAGIC_V2 + len(header).to_bytes(8, "little") + zlib.crc32(header).to_bytes(4, "little") + bytes(4)
    start = fmt.aligned(len(preamble) + len(header))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(preamble + header + b"\0" * (start - len(preamble) - len(header)))
        for arr in arrays.values():
            f.write(arr.tobytes() + b"\0" * (fmt.aligned(arr.nbytes) - arr.nbytes))


def test_format_2_files_are_still_read_and_checked_with_their_crc32(tmp_path: Any) -> None:
    model = _trained()
    folder = str(tmp_path / "checkpoints")
    values = _values(model)
    path = os.path.join(folder, "main", "step-0000000008--main-1--epoch.ckpt")
    _write_v2(path, {"step": 8, "branch": "main", "node": "main-1", "kind": "epoch", "epoch": 1}, values)
    store = CheckpointStore(folder)
    found = store.latest_good("main")
    assert found is not None and found.step == 8 and not store.last_skipped
    fresh = _trained(seed=3)
    store.load(fresh, fresh.optimizer, found)
    _assert_same_state(fresh, values)
    # One flipped bit in its data is caught by its CRC-32, and the file set aside.
    with open(path, "rb") as f:
        header = fmt.read_header(f, path)
    assert header.version == 2
    biggest = max(header.entries, key=lambda e: e.nbytes)
    with open(path, "r+b") as f:
        f.seek(header.start + biggest.offset + 3)
        byte = f.read(1)[0]
        f.seek(header.start + biggest.offset + 3)
        f.write(bytes([byte ^ 0x10]))
    with pytest.raises(CheckpointError, match=r"array '.+' is damaged \(crc32 [0-9a-f]{8}, written as [0-9a-f]{8}\)"):
        CheckpointStore(folder).read_arrays(found)


def test_old_format_files_still_load_and_a_weightless_one_is_never_trusted(tmp_path: Any) -> None:
    model = _trained()
    folder = str(tmp_path / "checkpoints")
    values = _values(model)
    _write_v1(os.path.join(folder, "main", "step-0000000008--main-1--epoch.ckpt"),
              {"step": 8, "branch": "main", "node": "main-1", "kind": "epoch", "epoch": 1}, values)
    # What issue 13's unbuilt model left behind: a step-0 checkpoint of 0 weights.
    _write_v1(os.path.join(folder, "main", "step-0000000016--main-1--epoch.ckpt"),
              {"step": 16, "branch": "main", "node": "main-1", "kind": "epoch", "epoch": 2},
              {"optimizer/sgd/iteration": np.array(16, "int64")})
    store = CheckpointStore(folder)
    found = store.latest_good("main")
    assert found is not None and found.step == 8
    assert "holds 0 model weights" in store.last_skipped[0].reason
    fresh = _trained(seed=3)
    store.load(fresh, fresh.optimizer, found)
    _assert_same_state(fresh, values)


def test_a_negative_or_inconsistent_step_is_a_bad_checkpoint(tmp_path: Any) -> None:
    model = _trained()
    folder = str(tmp_path / "checkpoints")
    store = CheckpointStore(folder)
    good = _save(store, model, 8)
    # A checkpoint whose iteration count is -1 (what made "resumed branch main at step -1").
    snap = store.snapshot(model, model.optimizer, branch="main", step=16, node="main-1", kind="epoch", meta={})
    iteration = [a for k, a in zip(snap.keys, snap.arrays, strict=True) if k.endswith("/iteration")]
    assert len(iteration) == 1
    iteration[0][...] = -1
    negative = store.write(snap)
    with pytest.raises(CheckpointError, match=r"optimizer/.*iteration is -1, a negative step"):
        store.read_arrays(negative)
    # A file renamed to another step: its metadata and its name disagree.
    moved = os.path.join(folder, "main", "step-0000000024--main-1--epoch.ckpt")
    os.link(good.path, moved)
    store = CheckpointStore(folder)
    assert store.latest_good("main") == good
    assert "its metadata says step 8, its name says step 24" in store.last_skipped[0].reason
    with pytest.raises(CheckpointError, match=r"step -1 is negative"):
        store.write(store.snapshot(model, model.optimizer, branch="main", step=-1, node="main-1", kind="epoch",
                                   meta={}))


def test_load_fork_and_promote_find_the_file_by_branch_and_step(tmp_path: Any) -> None:
    """Issue 13 bug 4: a promotion renames the file while a restore holds the old path."""
    model = _trained()
    store = CheckpointStore(str(tmp_path / "checkpoints"))
    held = _save(store, model, 8, kind="epoch")  # captured, as a restore request's lookup would
    expected = _values(model)
    store.promote("main", 8, "boundary")  # the writer thread's promotion renames it
    assert not os.path.exists(held.path)
    current = store.get("main", 8)
    assert current is not None and current.kind == "boundary" and os.path.exists(current.path)

    model.fit(*tiny_data(32, seed=4), batch_size=16, epochs=1, verbose=0)
    meta = store.load(model, model.optimizer, held)
    assert meta["step"] == 8
    _assert_same_state(model, expected)
    forked = store.fork(held, branch="main-s8", node="main-s8-1")
    assert store.get("main-s8", 8) == forked and os.path.samefile(forked.path, current.path)
    assert store.read_arrays(forked)[0]["step"] == 8
    store.promote("main", 8, "final")  # a kept kind stays as it is
    assert store.get("main", 8) == current
    store.promote(held.branch, held.step, "boundary")
    with pytest.raises(CheckpointError, match=r"branch 'main' has no checkpoint at step 9"):
        store.load(model, model.optimizer, CheckpointInfo("main", 9, "main-1", "epoch", held.path))


def test_a_checkpoint_whose_file_vanished_leaves_the_index(tmp_path: Any) -> None:
    model = _trained()
    store = CheckpointStore(str(tmp_path / "checkpoints"))
    info = _save(store, model, 8)
    os.remove(info.path)
    with pytest.raises(CheckpointError, match=rf"checkpoint {info.path} is unreadable: \[Errno 2\]"):
        store.load(model, model.optimizer, info)
    assert store.steps() == {}
    # A promotion of a checkpoint whose file is gone says so instead of an OSError.
    other = _save(store, model, 16)
    os.remove(other.path)
    with pytest.raises(CheckpointError, match=r"cannot keep checkpoint .* as 'boundary': the file is gone"):
        store.promote("main", 16, "boundary")
    assert store.steps() == {}


def _wide(width: int) -> Any:
    import keras

    model = keras.Sequential([keras.Input((width,)), keras.layers.Dense(width)])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    model.fit(np.zeros((8, width), "float32"), np.zeros((8, width), "float32"), verbose=0)
    return model


@pytest.fixture
def small_disk(tmp_path: Any) -> Iterator[str]:
    """A real 2 MiB filesystem (tmpfs), or a skip where mounting is not allowed."""
    where = str(tmp_path / f"disk-{uuid.uuid4().hex[:6]}")
    os.makedirs(where)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", where], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", where], check=False)


def test_a_full_disk_raises_enospc_leaves_no_temporary_file_and_recovers(small_disk: str) -> None:
    folder = os.path.join(small_disk, "checkpoints")
    store = CheckpointStore(folder)
    small = _trained()
    first = _save(store, small, 8)
    big = _wide(512)  # 3 MiB with Adam's slots: more than the disk holds
    snap = store.snapshot(big, big.optimizer, branch="big", step=16, node="big-1", kind="boundary", meta={})
    with pytest.raises(OSError) as caught:
        store.write(snap)
    assert caught.value.errno == errno.ENOSPC, caught.value
    assert not [f for f in _files(folder) if os.path.basename(f).startswith(".")]
    assert store.steps() == {"main": [8]}
    store.read_arrays(first)  # what was written before is intact
    # Space returns (the filesystem grows): the snapshot that failed is still whole and is written now.
    subprocess.run(["mount", "-o", "remount,size=16m", small_disk], check=True)
    again = store.write(snap)
    assert store.read_arrays(again)[0]["step"] == 16 and store.steps() == {"main": [8], "big": [16]}
    info = _save(store, big, 24, branch="big")
    assert store.read_arrays(info)[0]["step"] == 24


def test_a_large_checkpoint_preallocates_and_checksums_beside_the_fsync(tmp_path: Any, small_disk: str) -> None:
    """From 16 MiB the write preallocates the file and checksums while fdatasync runs."""
    model = _wide(1280)  # 1.6 M weights, 19 MiB with Adam's slots
    store = CheckpointStore(str(tmp_path / "checkpoints"))
    expected = _values(model)
    info = _save(store, model, 8)
    with open(info.path, "rb") as f:
        header = fmt.read_header(f, info.path)
    assert header.data_bytes >= 16 << 20 and os.path.getsize(info.path) == header.start + header.data_bytes
    assert header.start % fmt.DIRECT_ALIGN == 0  # written with O_DIRECT: the data region starts on a page
    fresh = _wide(1280)
    store.load(fresh, fresh.optimizer, info)
    _assert_same_state(fresh, expected)
    _flip_one_bit(info.path)
    with pytest.raises(CheckpointError, match=r"is damaged \(crc32"):
        store.verify(info)
    # On a full disk the preallocation fails first, before anything is written.
    full = CheckpointStore(os.path.join(small_disk, "checkpoints"))
    with pytest.raises(OSError) as caught:
        _save(full, model, 8)
    assert caught.value.errno == errno.ENOSPC
    assert _files(os.path.join(small_disk, "checkpoints")) == []


def _direct_calls(monkeypatch: Any) -> list[tuple[str, int]]:
    """Records each O_DIRECT transfer (writing or reading, bytes) that the format makes."""
    calls: list[tuple[str, int]] = []
    real = fmt._direct

    @__import__("contextlib").contextmanager
    def recording(fd: int) -> Iterator[bool]:
        with real(fd) as on:
            if on:
                calls.append(("on", fd))
            yield on

    monkeypatch.setattr(fmt, "_direct", recording)
    return calls


def test_o_direct_moves_the_data_region_and_every_check_still_holds(tmp_path: Any, monkeypatch: Any) -> None:
    """With the threshold at 0 a tiny model takes the O_DIRECT path (a tail shorter than a page goes
    through the page cache): the round trip is exact, and a flipped bit is caught by load and verify."""
    monkeypatch.setattr(fmt, "DIRECT_FROM", 0)
    calls = _direct_calls(monkeypatch)
    model = _wide(64)
    store = CheckpointStore(str(tmp_path / "checkpoints"))
    expected = _values(model)
    info = _save(store, model, 8)
    with open(info.path, "rb") as f:
        header = fmt.read_header(f, info.path)
    assert header.start % fmt.DIRECT_ALIGN == 0 and header.data_bytes % fmt.DIRECT_ALIGN != 0
    assert calls, "nothing was written with O_DIRECT on this file system"
    json.loads(open(info.path, "rb").read()[32:header.start])  # the padded header is plain JSON
    calls.clear()
    fresh = _wide(64)
    store.load(fresh, fresh.optimizer, info)
    _assert_same_state(fresh, expected)
    assert calls, "the load read nothing with O_DIRECT"
    store.verify(info)
    _flip_one_bit(info.path)
    with pytest.raises(CheckpointError, match=r"is damaged \(crc32"):
        store.load(fresh, fresh.optimizer, info)
    assert store.steps() == {}  # set aside


def test_without_o_direct_the_same_bytes_go_through_the_page_cache(tmp_path: Any, monkeypatch: Any) -> None:
    """A platform without O_DIRECT (or a file system that refuses it) writes and reads the same file."""
    monkeypatch.setattr(fmt, "DIRECT_FROM", 0)
    model = _wide(64)
    expected = _values(model)
    store = CheckpointStore(str(tmp_path / "direct"))
    direct = _save(store, model, 8)
    monkeypatch.delattr(os, "O_DIRECT", raising=False)
    calls = _direct_calls(monkeypatch)
    plain = _save(CheckpointStore(str(tmp_path / "plain")), model, 8)
    with open(direct.path, "rb") as a, open(plain.path, "rb") as b:
        assert a.read() == b.read()  # the same layout, padding included
    fresh = _wide(64)
    store.load(fresh, fresh.optimizer, direct)
    _assert_same_state(fresh, expected)
    assert calls == []


def test_a_file_whose_data_region_is_not_page_aligned_is_read_through_the_page_cache(
        tmp_path: Any, monkeypatch: Any) -> None:
    """Files written before O_DIRECT (data region at a 64-byte boundary) are read as before."""
    model = _wide(64)
    expected = _values(model)
    store = CheckpointStore(str(tmp_path / "checkpoints"))
    info = _save(store, model, 8)  # small: written through the page cache, header not padded
    with open(info.path, "rb") as f:
        assert fmt.read_header(f, info.path).start % fmt.DIRECT_ALIGN != 0
    monkeypatch.setattr(fmt, "DIRECT_FROM", 0)
    calls = _direct_calls(monkeypatch)
    fresh = _wide(64)
    store.load(fresh, fresh.optimizer, info)
    _assert_same_state(fresh, expected)
    store.verify(info)
    assert calls == []
