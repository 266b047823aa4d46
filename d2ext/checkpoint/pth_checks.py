"""Checks on a ``.pth`` file's container before torch reads it, for load_weights_only
(d2ext/checkpoint/weights_only.py). Each ends a file it refuses with a ``WeightsFileError``
(d2ext/errors.py) that says why.

- A zip checkpoint (torch.save's format) must be a plain zip: its end records close the file (no
  comment), its central directory lies where they say, no two records share a name (torch looks
  names up case-insensitively), every record is stored or deflated, not encrypted, and a stored
  record has one size. Then Python's zipfile, which these checks read, and torch's reader see the
  same records. A TorchScript archive (a ``constants.pkl`` record: torch.load would pass it to
  torch.jit.load) is refused. ``checked_zip_data_pkl`` returns the data.pkl torch will unpickle (for
  ``scan_pickle``'s dry run, d2ext/checkpoint/pickle_scan.py).
- Its records may expand to at most ``MAX_EXPANSION`` (4) times the file's size plus
  ``EXPANSION_SLACK`` (1 MiB) in all, by their recorded sizes and, for deflated ones, by what
  decompressing them actually yields (never more than that budget + 1 bytes from any one
  record). torch.save stores records uncompressed (at most the file's size); a 256 KB file with a
  deflated record would otherwise load a 256 MiB tensor.
- A legacy (pre-zip) file is five pickles in a row; ``scan_legacy`` runs ``scan_pickle``'s dry
  run over each (no object a global builds may be a dict key or set item), and the storages its
  data's persistent ids claim may add up to at most the same budget (numel x element size; 16
  bytes an element for a storage type torch does not name).
"""

import struct
import warnings
import zipfile
from typing import Set, Tuple

import torch

from d2ext.errors import WeightsFileError

from .pickle_scan import scan_pickle

# A checkpoint's records (tensor data) may expand to at most
# MAX_EXPANSION x its size + EXPANSION_SLACK.
MAX_EXPANSION = 4
EXPANSION_SLACK = 1 << 20

_EOCD = struct.Struct("<4s4H2LH")
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")
_CHUNK = 1 << 20


def is_zip(fp) -> bool:
    """Whether torch will read `fp` as a zip checkpoint (its test: the first record's signature)."""
    fp.seek(0)
    return fp.read(4) == b"PK\x03\x04"


def checked_zip_data_pkl(fp, size: int, name: str) -> bytes:
    """The zip checks of the module's docstring on `fp` (`size` bytes; `name` for messages);
    returns the data.pkl torch will unpickle."""
    entries = _check_zip_ends(fp, size)
    fp.seek(0)
    with zipfile.ZipFile(fp) as zf:
        infos = zf.infolist()
        _check_records(infos, entries)
        _check_expansion(zf, infos, size, name)
        # torch reads "<folder of the first record>/data.pkl".
        folder = infos[0].filename.split("/", 1)[0]
        if f"{folder}/constants.pkl" in {i.filename for i in infos}:
            # torch.load hands these to torch.jit.load: compiled code, not weights.
            raise WeightsFileError(
                "a TorchScript archive (torch.jit.save), not a checkpoint of weights"
            )
        return zf.read(folder + "/data.pkl")


def scan_legacy(fp, size: int, name: str) -> Set[Tuple[str, str]]:
    """A legacy file is five pickles in a row (magic number, protocol, system info, the data, the
    storage keys), then the storages' bytes, which torch allocates as the data's ids claim. Runs
    scan_pickle over the five and checks what they claim; returns the globals they name."""
    fp.seek(0)
    claimed, named = {}, set()
    for index in range(5):
        found = scan_pickle(fp)
        named |= found.globals
        for pid in found.persistent_ids if index == 3 else ():
            key = pid.items[2].value if pid.kind == "tuple" and len(pid.items) > 2 else None
            claimed.setdefault(
                key if isinstance(key, (str, int)) else len(claimed), _storage_bytes(pid)
            )
    if sum(claimed.values()) > _expansion_budget(size):
        raise WeightsFileError(
            _too_large(name, size, f"its storages claim {sum(claimed.values())} bytes")
        )
    return named


def _expansion_budget(size: int) -> int:
    return MAX_EXPANSION * size + EXPANSION_SLACK


def _too_large(name: str, size: int, what: str) -> str:
    return (
        f"{name}: {what}, more than {MAX_EXPANSION} x its size ({size} bytes) + "
        f"{EXPANSION_SLACK >> 20} MiB; "
        "torch.save stores tensor data uncompressed"
    )


# ---------------------------------------------------------------------------------------------
# Zip checkpoints.


def _check_zip_ends(fp, size: int) -> int:
    """The end records close the file and the central directory ends where they begin; returns
    the number of records they count. Python's zipfile shifts every offset by any gap there (data
    prepended to a zip), torch's reader does not: without a gap both read the same records."""
    if size < _EOCD.size:
        raise WeightsFileError("a zip file too short to hold its end record")
    fp.seek(size - _EOCD.size)
    signature, _, _, _, entries, cd_size, cd_offset, comment = _EOCD.unpack(fp.read(_EOCD.size))
    if signature != b"PK\x05\x06" or comment:
        raise WeightsFileError(
            "its zip end record does not close the file (a comment or data after it)"
        )
    end = size - _EOCD.size
    if end >= _ZIP64_LOCATOR.size + _ZIP64_EOCD.size:
        fp.seek(end - _ZIP64_LOCATOR.size)
        signature, _, record, _ = _ZIP64_LOCATOR.unpack(fp.read(_ZIP64_LOCATOR.size))
        # zip64 (torch.save writes it): its end record comes right before the locator.
        if signature == b"PK\x06\x07":
            end -= _ZIP64_LOCATOR.size + _ZIP64_EOCD.size
            fp.seek(end)
            fields = _ZIP64_EOCD.unpack(fp.read(_ZIP64_EOCD.size))
            if record != end or fields[0] != b"PK\x06\x06" or fields[1] != _ZIP64_EOCD.size - 12:
                raise WeightsFileError("its zip64 end record is not where its locator says")
            entries, cd_size, cd_offset = fields[7:10]
    if cd_offset + cd_size != end:
        raise WeightsFileError("its zip central directory does not end where its end record begins")
    return entries


def _check_records(infos, entries: int):
    """As many records as the end records count, none sharing a name (case-insensitively), each
    stored (with one size) or deflated, none encrypted."""
    names = {i.filename.lower() for i in infos}
    if not infos or len(infos) != entries or len(names) != len(infos):
        raise WeightsFileError("its zip records are none, miscounted, or two share a name")
    for info in infos:
        stored = info.compress_type == zipfile.ZIP_STORED
        if info.flag_bits & 0x1 or not (stored or info.compress_type == zipfile.ZIP_DEFLATED):
            raise WeightsFileError(
                f"its zip record {info.filename[:200]} is encrypted or compressed by a "
                "method torch cannot read"
            )
        if stored and info.file_size != info.compress_size:
            raise WeightsFileError(f"its zip record {info.filename[:200]} is stored with two sizes")


def _check_expansion(zf: zipfile.ZipFile, infos, size: int, name: str):
    """The records' recorded sizes add up to at most the expansion budget, and each deflated
    record decompresses to its recorded size."""
    budget = _expansion_budget(size)
    recorded = sum(info.file_size for info in infos)
    if recorded > budget:
        raise WeightsFileError(
            _too_large(name, size, f"its zip records expand to {recorded} bytes")
        )
    for info in infos:
        deflated = info.compress_type == zipfile.ZIP_DEFLATED
        if deflated and _deflated_size(zf, info, budget) != info.file_size:
            raise WeightsFileError(
                f"its zip record {info.filename[:200]} decompresses to other than its recorded size"
            )


def _deflated_size(zf: zipfile.ZipFile, info: zipfile.ZipInfo, left: int) -> int:
    """How many bytes a deflated record yields (zipfile stops at the recorded size and checks the
    CRC): never decompresses more than `left` + 1 bytes."""
    n = 0
    with zf.open(info) as record:
        while True:
            chunk = record.read(min(_CHUNK, left + 1 - n))
            if not chunk:
                return n
            n += len(chunk)
            if n > left:
                return n


# ---------------------------------------------------------------------------------------------
# Legacy (pre-zip) checkpoints.


def _storage_bytes(pid) -> int:
    """The bytes a legacy persistent id ('storage', type, key, location, numel, view) makes torch
    allocate (numel x element size; 16, the largest, for a type it does not name)."""
    items = pid.items if pid.kind == "tuple" else None
    if not items or len(items) < 5 or items[0].value not in ("storage", b"storage"):
        return 0
    numel = items[4].value if items[4].kind == "atom" and type(items[4].value) is int else 0
    if items[1].kind == "global":
        storage_type = vars(torch).get(str(items[1].value).rsplit(".", 1)[-1])
    else:
        storage_type = None
    with warnings.catch_warnings():  # the legacy storage classes are deprecated
        warnings.simplefilter("ignore")
        dtype = getattr(storage_type, "dtype", None)
    return max(numel, 0) * (dtype.itemsize if isinstance(dtype, torch.dtype) else 16)
