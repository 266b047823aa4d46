"""Checkpoints whose metadata holds objects torch's weights-only loading does not build (as every
checkpoint mmdetection 3 / mmengine saves while training: numpy scalars in `meta`, MessageHub
buffers) load their weights, without running or building anything the file names; crafted .pth
files (nested-tuple keys, keys sharing one hash, deflated records, ambiguous zips) end with a
WeightsFileError instead of a crash, a hang or a huge tensor (d2ext/checkpoint/weights_only.py)."""

import contextlib
import io
import logging
import os
import pickle
import subprocess
import sys
import time
import zipfile
from collections import OrderedDict

import numpy as np
import pytest
import torch

from d2ext.checkpoint import weights_only
from d2ext.checkpoint.weights_only import Unloaded, load_weights_only
from d2ext.errors import WeightsFileError


class HistoryBufferLike:
    """Stands for mmengine's HistoryBuffer: a class the loading process need not have, holding
    numpy arrays."""

    def __init__(self):
        self._log_history = np.array([1.5, 1.25])
        self.max_length = 1000000


class _CreatesFile:
    """Unpickling it (if it ran) creates `path`."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def save(tmp_path, checkpoint, name="ck.pth"):
    path = str(tmp_path / name)
    torch.save(checkpoint, path)
    return path


def mmengine_like(marker=None, in_weights=False):
    state = OrderedDict(w=torch.arange(4.0), b=torch.ones(2))
    checkpoint = {
        "meta": {
            "epoch": 12,
            "seed": np.int64(3),
            "mean": np.array([1.0, 2.0]),
            "classes": ("a", "b"),
        },
        "state_dict": state,
        "message_hub": {
            "log_scalars": OrderedDict(loss=HistoryBufferLike()),
            "runtime_info": {"iter": 10},
        },
    }
    if marker is not None:
        (state if in_weights else checkpoint["meta"])["evil"] = _CreatesFile(str(marker))
    return checkpoint


@pytest.fixture(autouse=True)
def d2ext_logs_reach_caplog(monkeypatch):
    """Detectron2's setup_logger (run by earlier tests in this process) stops "d2ext"
    propagating."""
    for name in ("d2ext", "d2ext.checkpoint"):
        monkeypatch.setattr(logging.getLogger(name), "propagate", True)


def test_torch_alone_refuses_such_a_file(tmp_path):
    with pytest.raises(pickle.UnpicklingError, match="Unsupported global"):
        torch.load(save(tmp_path, mmengine_like()), weights_only=True)


def test_weights_load_metadata_objects_are_placeholders(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="d2ext.checkpoint"):
        loaded = load_weights_only(save(tmp_path, mmengine_like()))
    torch.testing.assert_close(loaded["state_dict"]["w"], torch.arange(4.0))
    assert loaded["meta"]["epoch"] == 12 and loaded["meta"]["classes"] == ("a", "b")
    # numpy too: its real rebuilders would trust the file's dtype flags.
    assert (
        isinstance(loaded["meta"]["seed"], Unloaded)
        and "numpy" in loaded["meta"]["seed"].global_name
    )
    buffer = loaded["message_hub"]["log_scalars"]["loss"]
    assert isinstance(buffer, Unloaded) and buffer.global_name.endswith(
        "test_weights_only.HistoryBufferLike"
    )
    assert (
        "HistoryBufferLike" in caplog.text
        and "(metadata; weights-only loading does not build them)" in caplog.text
    )


def test_a_code_running_global_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    loaded = load_weights_only(save(tmp_path, mmengine_like(marker)))
    assert not marker.exists()
    evil = loaded["meta"]["evil"]
    assert (
        isinstance(evil, Unloaded)
        and evil.global_name == "io.open"
        and evil.args == (str(marker), "w")
    )


def test_a_placeholder_among_the_weights_is_an_error_naming_it(tmp_path):
    marker = tmp_path / "ran"
    with pytest.raises(
        pickle.UnpicklingError, match=r"its weights \(state_dict\) are not only tensors.*io.open"
    ):
        load_weights_only(save(tmp_path, mmengine_like(marker, in_weights=True)))
    assert not marker.exists()


def test_placeholder_classes_and_tensor_attributes_in_the_weights_are_errors(tmp_path):
    """Not only placeholder instances: a placeholder class never called, or one hung on a tensor."""
    checkpoint = mmengine_like()
    checkpoint["state_dict"]["cls"] = HistoryBufferLike
    with pytest.raises(
        pickle.UnpicklingError, match=r"not only tensors by name; .*HistoryBufferLike"
    ):
        load_weights_only(save(tmp_path, checkpoint))
    checkpoint = mmengine_like()
    checkpoint["state_dict"]["w"].note = HistoryBufferLike()
    with pytest.raises(pickle.UnpicklingError, match=r"not only tensors by name"):
        load_weights_only(save(tmp_path, checkpoint))


def test_a_detectron2_file_may_hold_no_placeholder_at_all(tmp_path):
    """Resuming reads its optimizer, scheduler and iteration as well as the model."""
    checkpoint = {"model": OrderedDict(w=torch.ones(2)), "scheduler": {"last_epoch": np.int64(5)}}
    with pytest.raises(pickle.UnpicklingError, match="its checkpoint holds objects of numpy"):
        load_weights_only(save(tmp_path, checkpoint))
    # Keys and sets too; a dummy state_dict beside "model" does not make it an mmdetection file.
    with pytest.raises(pickle.UnpicklingError, match="its checkpoint holds objects of numpy"):
        load_weights_only(save(tmp_path, {"model": {np.int64(1): torch.ones(1)}}))
    with pytest.raises(pickle.UnpicklingError, match="its checkpoint holds objects of numpy"):
        load_weights_only(save(tmp_path, {"model": {}, "state_dict": {}, "x": {np.int64(1)}}))


def test_shared_references_are_scanned_once(tmp_path):
    import time

    x = [np.int64(1)]
    for _ in range(40):  # 2**40 paths to one placeholder
        x = [x, x]
    start = time.time()
    with pytest.raises(pickle.UnpicklingError, match="its checkpoint holds objects of numpy"):
        load_weights_only(save(tmp_path, {"model": {}, "x": x}))
    assert time.time() - start < 10


def save_legacy(tmp_path, checkpoint, name="legacy.pth"):
    path = str(tmp_path / name)
    torch.save(checkpoint, path, _use_new_zipfile_serialization=False)
    return path


def test_legacy_files_get_placeholders_for_the_globals_torch_refuses(tmp_path):
    """A pre-zip file: globals found by the dry run, each looked up through torch alone."""
    loaded = load_weights_only(save_legacy(tmp_path, mmengine_like()))
    assert isinstance(loaded["meta"]["seed"], Unloaded)
    assert torch.equal(loaded["state_dict"]["w"], mmengine_like()["state_dict"]["w"])
    with torch.serialization.safe_globals([HistoryBufferLike]):
        loaded = load_weights_only(save_legacy(tmp_path, mmengine_like()))
    assert isinstance(loaded["message_hub"]["log_scalars"]["loss"], HistoryBufferLike)
    with pytest.raises(pickle.UnpicklingError, match="its checkpoint holds objects of"):
        load_weights_only(save_legacy(tmp_path, {"model": {}, "x": HistoryBufferLike()}))


def test_a_legacy_file_naming_too_many_globals_is_refused(tmp_path, monkeypatch):
    path = save_legacy(tmp_path, mmengine_like())
    monkeypatch.setattr(weights_only, "MAX_LEGACY_GLOBALS", 2)
    with pytest.raises(pickle.UnpicklingError, match="legacy .* naming \\d+ globals; at most 2"):
        load_weights_only(path)


def test_torch_is_asked_which_globals_it_builds():
    """The legacy files' question, answered by loading a file that names only the global."""
    allows = weights_only._torch_allows
    assert allows("torch._utils", "_rebuild_tensor_v2") and allows("collections", "OrderedDict")
    assert not allows("numpy.core.multiarray", "scalar") and not allows("posix", "system")
    assert not allows("collections", "OrderedDict\nos")  # names from STACK_GLOBAL
    assert not allows(__name__, "HistoryBufferLike")
    with torch.serialization.safe_globals([HistoryBufferLike]):
        assert allows(__name__, "HistoryBufferLike")


@pytest.mark.parametrize("legacy", [False, True])
def test_a_blocked_module_is_refused_without_the_unsafe_advice(tmp_path, legacy):
    """torch refuses globals of some modules (os / posix, ...) even when allowlisted."""
    main = b"\x80\x02}X\x01\x00\x00\x00xcposix\nsystem\ns."  # {"x": posix.system}
    if legacy:
        path = _legacy_file(tmp_path / "blocked.pth", main)
    else:
        path = rezip(save(tmp_path, {"x": 1}), tmp_path / "blocked.pth", {"data.pkl": main})
    with pytest.raises(WeightsFileError) as info:
        load_weights_only(path)
    message = str(info.value)
    assert "posix" in message and "blocked" in message, message
    assert "weights_only" not in message.replace("weights-only", ""), message


def test_a_torchscript_archive_is_refused_before_torch_reads_it(tmp_path):
    """torch.load would hand it to torch.jit.load (and its error advises weights_only=False)."""
    path = str(tmp_path / "scripted.pt")
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), path)
    with pytest.raises(WeightsFileError, match="a TorchScript archive") as info:
        load_weights_only(path)
    assert weights_only.refused_by_d2ext(info.value)


def test_torchs_failure_is_shown_without_its_advice_to_load_unsafely(tmp_path):
    """torch's error advises weights_only=False (running the file); d2ext shows the unpickler's
    own error, which torch chains to it."""
    path = save(tmp_path, {"model": {}, "x": HistoryBufferLike()})
    with pytest.raises(pickle.UnpicklingError) as torch_error:
        torch.load(path, weights_only=True)
    unsafe_advice = "`weights_only` set to `False`"
    assert unsafe_advice in str(torch_error.value)
    failure = weights_only._torch_failure(torch_error.value)
    assert "Unsupported global" in str(failure) and "HistoryBufferLike" in str(failure)
    assert unsafe_advice not in str(failure) and "weights_only=False" not in str(failure)
    assert failure.torch_failed


def test_the_users_allowlist_is_kept_and_used(tmp_path):
    path = save(tmp_path, mmengine_like())
    with torch.serialization.safe_globals([HistoryBufferLike]):
        loaded = load_weights_only(path)
        assert HistoryBufferLike in torch.serialization.get_safe_globals()
    assert isinstance(loaded["message_hub"]["log_scalars"]["loss"], HistoryBufferLike)


def test_checkpointer_loads_a_plain_file_and_names_a_bad_one(tmp_path):
    from d2ext.checkpoint import Checkpointer
    from d2ext.checkpoint.safe_resume import InvalidCheckpointError

    model = torch.nn.Linear(2, 2)
    state = OrderedDict((k, torch.full_like(v, 7.0)) for k, v in model.state_dict().items())
    Checkpointer(model).load(save(tmp_path, {"model": state, "iteration": 3}))
    assert torch.equal(model.weight, torch.full((2, 2), 7.0))
    bad = save(tmp_path, {"model": state, "extra": HistoryBufferLike()}, "bad.pth")
    with pytest.raises(
        InvalidCheckpointError, match=f"{bad} is not a valid checkpoint.*HistoryBufferLike"
    ):
        Checkpointer(model).load(bad)


def test_a_real_mmengine_message_hub(tmp_path):
    """mmengine's own MessageHub state (HistoryBuffers; numpy pickles that name
    builtins.getattr)."""
    logging_module = pytest.importorskip("mmengine.logging")
    hub = logging_module.MessageHub.get_instance("d2ext_test_weights_only")
    hub.update_scalar("train/loss", 1.5)
    hub.update_scalar("train/lr", np.float64(0.01))
    path = save(
        tmp_path,
        {
            "state_dict": OrderedDict(w=torch.ones(3)),
            "message_hub": hub.state_dict(),
            "meta": {"seed": np.int64(5)},
        },
    )
    loaded = load_weights_only(path)
    assert torch.equal(loaded["state_dict"]["w"], torch.ones(3))
    assert (
        loaded["message_hub"]["log_scalars"]["train/lr"].global_name
        == "mmengine.logging.history_buffer.HistoryBuffer"
    )


# --- Crafted .pth files from the security review: each ends with a WeightsFileError. ---------


class _Reduced:
    """Pickles as the given __reduce__ value."""

    def __init__(self, *reduced):
        self.reduced = reduced

    def __reduce__(self):
        return self.reduced


def rezip(src, dst, records=None, deflate=(), comment=b"", extra=()):
    """src's zip records (`records` replacing some by their name under the archive folder),
    written by Python's zipfile: stored, or deflated for the names in `deflate`."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            short = info.filename.split("/", 1)[1]
            data = (records or {}).get(short, None)
            data = zin.read(info) if data is None else data
            zout.writestr(
                info.filename,
                data,
                zipfile.ZIP_DEFLATED if short in deflate else zipfile.ZIP_STORED,
            )
        for name, data in extra:
            zout.writestr(name, data)
        zout.comment = comment
    return str(dst)


def _nested_tuple_key(depth):
    return b"\x80\x02}N" + b"\x85" * depth + b"Ns."


def _legacy_file(path, main_pickle, storage_keys=(), storages=b""):
    """A legacy (pre-zip) torch file: magic number, protocol, system info, data, storage keys."""
    from torch.serialization import MAGIC_NUMBER, PROTOCOL_VERSION

    head = b"".join(
        pickle.dumps(x, protocol=2)
        for x in (MAGIC_NUMBER, PROTOCOL_VERSION, {"little_endian": True})
    )
    path.write_bytes(head + main_pickle + pickle.dumps(list(storage_keys), protocol=2) + storages)
    return str(path)


def test_a_deeply_nested_tuple_key_is_refused_not_a_crash(tmp_path):
    """torch's weights-only unpickler hashes the key: 10**6 nested tuples killed the process
    (SIGSEGV), as data.pkl of a zip and as a legacy file. Run where a crash fails the assertion."""
    deep = _nested_tuple_key(10**6)
    zipped = rezip(save(tmp_path, {"w": torch.ones(2)}), tmp_path / "deep.pth", {"data.pkl": deep})
    legacy = _legacy_file(tmp_path / "legacy.pth", deep)
    code = (
        "import sys\n"
        "from d2ext.checkpoint.weights_only import load_weights_only, WeightsFileError\n"
        "for path in sys.argv[1:]:\n    try:\n        load_weights_only(path)\n"
        "    except WeightsFileError as e:\n        print('refused:', e)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, zipped, legacy], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    assert result.stdout.count("refused: tuples nested more than 32 deep") == 2, result.stdout


def test_keys_sharing_one_hash_are_refused_in_bounded_time(tmp_path):
    modulus = 2**61 - 1
    keys = b"".join(
        b"\x8a\x0a" + (k * modulus).to_bytes(10, "little", signed=True) + b"N"
        for k in range(1, 40000)
    )
    flood = b"\x80\x02}(" + keys + b"u."
    path = rezip(save(tmp_path, {"w": torch.ones(2)}), tmp_path / "flood.pth", {"data.pkl": flood})
    start = time.time()
    with pytest.raises(WeightsFileError, match="a dict key or set item that is an int of 61 bits"):
        load_weights_only(path)
    assert time.time() - start < 3


def test_optimizer_state_int_keys_and_numpy_keys_of_placeholders_load(tmp_path):
    """Small int keys (optimizer state) and placeholders (hashed by identity) are fine as keys."""
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    loaded = load_weights_only(
        save(tmp_path, {"model": model.state_dict(), "optimizer": optimizer.state_dict()})
    )
    assert sorted(loaded["optimizer"]["state"]) == [0, 1]
    checkpoint = mmengine_like()
    checkpoint["meta"]["by_seed"] = {np.int64(3): "x"}
    assert isinstance(
        next(iter(load_weights_only(save(tmp_path, checkpoint))["meta"]["by_seed"])), Unloaded
    )


def test_a_tuple_sharing_tuples_is_refused_before_torch_hashes_it(tmp_path):
    """t = (t, t) 31 times over, in 200 bytes: torch's _get_layout(t) hashes 2**31 tuples (24
    levels took 15 s)."""
    dag = (
        b"\x80\x02ctorch.serialization\n_get_layout\nN\x85q\x00"
        + b"h\x00h\x00\x86q\x00" * 31
        + b"h\x00\x85R."
    )
    path = rezip(save(tmp_path, {"w": torch.ones(2)}), tmp_path / "dag.pth", {"data.pkl": dag})
    start = time.time()
    with pytest.raises(
        WeightsFileError, match="a tuple whose hash would visit more than 1048576 items"
    ):
        load_weights_only(path)
    assert time.time() - start < 2


def test_storage_keys_whose_hashes_the_file_can_choose_are_refused(tmp_path):
    """torch keeps a file's storages in a dict by the keys of its persistent ids."""
    with pytest.raises(WeightsFileError, match="a persistent id other than key-safe atoms"):
        load_weights_only(
            _legacy_file(tmp_path / "keys.pth", _legacy_pickle(4, key=2**61 - 1), [2**61 - 1])
        )


def test_a_deflated_record_expanding_past_the_bound_is_refused(tmp_path):
    """A 256 KB file whose deflated record data/0 loads as a 256 MiB tensor with torch.load."""
    big = save(tmp_path, {"w": torch.zeros(2**26)}, "big.pth")
    bomb = rezip(big, tmp_path / "bomb.pth", deflate=("data/0",))
    assert os.path.getsize(bomb) < 300_000
    start = time.time()
    expected = f"{bomb}: its zip records expand to 268435\\d{{3}} bytes, more than 4 x"
    with pytest.raises(WeightsFileError, match=expected):
        load_weights_only(bomb)
    assert time.time() - start < 2
    # Deflated records within the bound load (torch reads them).
    small = rezip(
        save(tmp_path, {"w": torch.arange(1000.0)}),
        tmp_path / "small.pth",
        deflate=("data/0", "data.pkl"),
    )
    assert torch.equal(load_weights_only(small)["w"], torch.arange(1000.0))


def test_a_record_that_decompresses_to_more_than_its_recorded_size_is_refused(tmp_path):
    path = rezip(
        save(tmp_path, {"w": torch.zeros(1000)}), tmp_path / "lie.pth", deflate=("data/0",)
    )
    data = bytearray(open(path, "rb").read())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(next(n for n in zf.namelist() if n.endswith("data/0")))
    # The recorded uncompressed size: in the local header (offset 22), the central directory (24).
    name = info.filename.encode()
    central = next(
        i
        for i in range(len(data))
        if data[i : i + 4] == b"PK\x01\x02" and data[i + 46 : i + 46 + len(name)] == name
    )
    for offset in (info.header_offset + 22, central + 24):
        data[offset : offset + 4] = (100).to_bytes(4, "little")
    open(path, "wb").write(bytes(data))
    with pytest.raises(WeightsFileError, match="decompresses to other than its recorded size|CRC"):
        load_weights_only(path)


@pytest.mark.parametrize(
    "change", ["comment", "appended", "prepended", "prepended_zip64", "duplicate", "case"]
)
def test_zip_files_two_readers_could_read_differently_are_refused(tmp_path, change):
    """Python's zipfile (which the checks read) and torch's reader must see the same records."""
    base = save(tmp_path, {"w": torch.ones(2)})
    folder = zipfile.ZipFile(base).namelist()[0].split("/")[0]
    if change == "comment":
        path = rezip(base, tmp_path / "x.pth", comment=b"PK\x05\x06")
    elif change in ("duplicate", "case"):
        name = f"{folder}/data.pkl" if change == "duplicate" else f"{folder}/DATA.PKL"
        with pytest.warns(UserWarning) if change == "duplicate" else contextlib.nullcontext():
            path = rezip(base, tmp_path / "x.pth", extra=[(name, _nested_tuple_key(100))])
    else:  # Python's zipfile reads past bytes prepended to a zip (shifting all offsets), torch not
        data = open(
            base if change == "prepended_zip64" else rezip(base, tmp_path / "plain.pth"), "rb"
        ).read()
        path = str(tmp_path / "x.pth")
        open(path, "wb").write(
            data + b"\0" * 64 if change == "appended" else b"PK\x03\x04" + b"\0" * 60 + data
        )
        if change == "prepended":
            assert zipfile.ZipFile(path).read(f"{folder}/data.pkl")
    with pytest.raises(WeightsFileError, match="zip"):
        load_weights_only(path)


def _legacy_pickle(numel, key="0"):
    """A legacy file's data pickle: {"w": a float tensor of `numel` elements in storage `key`}."""

    class _Storage:
        pass

    class _Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return (
                ("storage", torch.FloatStorage, key, "cpu", numel, None)
                if isinstance(obj, _Storage)
                else None
            )

    buffer = io.BytesIO()
    tensor = _Reduced(
        torch._utils._rebuild_tensor_v2, (_Storage(), 0, (numel,), (1,), False, OrderedDict())
    )
    _Pickler(buffer, protocol=2).dump({"w": tensor})
    return buffer.getvalue()


def test_a_legacy_file_claiming_large_storages_is_refused(tmp_path):
    """torch allocates a legacy storage as its persistent id claims, before reading it."""
    storage = (4).to_bytes(8, "little") + torch.arange(4.0).numpy().tobytes()
    assert torch.equal(
        load_weights_only(_legacy_file(tmp_path / "ok.pth", _legacy_pickle(4), ["0"], storage))[
            "w"
        ],
        torch.arange(4.0),
    )
    path = _legacy_file(tmp_path / "claims.pth", _legacy_pickle(2**28), ["0"], storage)
    with pytest.raises(
        WeightsFileError, match=r"its storages claim 1073741824 bytes, more than 4 x its size"
    ):
        load_weights_only(path)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "flipped", "empty"])
def test_damaged_files_raise_weights_file_error(tmp_path, damage):
    data = open(save(tmp_path, {"w": torch.arange(10.0)}), "rb").read()
    damaged = {
        "garbage": b"\x80\x02garbage" * 20,
        "truncated": data[: len(data) // 2],
        "flipped": data[:200] + bytes([data[200] ^ 0xFF]) + data[201:],
        "empty": b"",
    }[damage]
    path = tmp_path / "damaged.pth"
    path.write_bytes(damaged)
    with pytest.raises(WeightsFileError):
        load_weights_only(str(path))


def test_a_missing_file_is_an_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_weights_only(str(tmp_path / "missing.pth"))
