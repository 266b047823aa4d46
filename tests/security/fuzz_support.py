"""What the property and fuzz tests share: the reference they hold d2ext's readers to (pickle.load,
the C unpickler with real numpy, restricted to the globals weights files name), an exact comparison
of what two loads return, and a Hypothesis strategy for opcode streams."""

import io
import math
import pickle

import numpy as np
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st


def fuzz_settings(deadline_ms: int, max_examples: int):
    """The same examples in every run (fixed seed, no database), bounded time per example."""
    return settings(
        derandomize=True,
        database=None,
        deadline=deadline_ms,
        max_examples=max_examples,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


class RunsCode:
    """Unpickling it (if anything ran it) creates ``sentinel``: proof that a file ran code."""

    def __init__(self, sentinel):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return (open, (self.sentinel, "w"))


_WEIGHTS_GLOBALS = {
    *(
        (m, n)
        for m in ("numpy.core.multiarray", "numpy._core.multiarray")
        for n in ("_reconstruct", "scalar")
    ),
    *((m, "_frombuffer") for m in ("numpy.core.numeric", "numpy._core.numeric")),
    ("_codecs", "encode"),
    ("__builtin__", "bytes"),
    ("builtins", "bytes"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("collections", "OrderedDict"),
}


class _Reference(pickle.Unpickler):
    """pickle.load for files that hold only weights: any other global is an error here too (the
    tests never run a global d2ext refused; this keeps the reference from running one either)."""

    def find_class(self, module, name):
        if (module, name) not in _WEIGHTS_GLOBALS:
            raise pickle.UnpicklingError(f"the reference refuses {module}.{name}")
        return super().find_class(module, name)


def reference_load(data: bytes):
    return _Reference(io.BytesIO(data), encoding="latin1").load()


def _same_array(ours: np.ndarray, reference: np.ndarray) -> bool:
    """numpy's values and C / Fortran layout; d2ext gives native byte order (documented)."""
    native = reference.dtype.newbyteorder("=")
    if ours.dtype != native or ours.shape != reference.shape:
        return False
    layouts = [(a.flags.c_contiguous, a.flags.f_contiguous) for a in (ours, reference)]
    if layouts[0] != layouts[1]:
        return False
    if native.kind == "b":  # numpy keeps a nonzero byte as it is; d2ext stores 1: the same bool
        return np.array_equal(ours, reference)
    bits = np.dtype(f"u{native.itemsize}")  # bit for bit, NaN payloads included
    return np.array_equal(ours.view(bits), reference.astype(native).view(bits))


def same(ours, reference) -> bool:
    """Whether d2ext's result is exactly what the reference built: types, keys in order, values
    bit for bit (arrays as _same_array; tensors with their dtype, shape and strides)."""
    if type(ours) is not type(reference):
        return False
    if isinstance(ours, np.ndarray):
        return _same_array(ours, reference)
    if isinstance(ours, np.generic):
        return (
            ours.dtype == reference.dtype
            and np.array(ours).tobytes() == np.array(reference).tobytes()
        )
    if isinstance(ours, torch.Tensor):
        return (
            ours.dtype == reference.dtype
            and ours.shape == reference.shape
            and ours.stride() == reference.stride()
            and torch.equal(
                ours.reshape(-1).view(torch.uint8), reference.reshape(-1).view(torch.uint8)
            )
            if ours.dtype != torch.bool
            else torch.equal(ours, reference)
        )
    if isinstance(ours, float):
        return ours == reference or (math.isnan(ours) and math.isnan(reference))
    if isinstance(ours, dict):
        return list(ours) == list(reference) and all(same(ours[k], reference[k]) for k in ours)
    if isinstance(ours, (list, tuple)):
        return len(ours) == len(reference) and all(same(a, b) for a, b in zip(ours, reference))
    return ours == reference


def _arg(fmt, n):
    return st.integers(0, 2 ** (8 * n) - 1).map(lambda v: fmt + v.to_bytes(n, "little"))


_NAMES = [
    b"numpy.core.multiarray\n_reconstruct\n",
    b"numpy.core.multiarray\nscalar\n",
    b"numpy\nndarray\n",
    b"numpy\ndtype\n",
    b"collections\nOrderedDict\n",
    b"_codecs\nencode\n",
    b"builtins\nbytes\n",
    b"numpy.core.numeric\n_frombuffer\n",
    b"builtins\nset\n",
    b"io\nopen\n",
    b"os\nsystem\n",
    b"torch._utils\n_rebuild_tensor_v2\n",
    b"torch\nFloatStorage\n",
    b"torch\nSize\n",
    b"collections\nCounter\n",
]
OPCODES = st.one_of(
    st.sampled_from(
        [
            b"(",
            b"t",
            b"\x85",
            b"\x86",
            b"\x87",
            b")",
            b"]",
            b"}",
            b"l",
            b"d",
            b"a",
            b"e",
            b"s",
            b"u",
            b"N",
            b"\x88",
            b"\x89",
            b"0",
            b"1",
            b"2",
            b"R",
            b"b",
            b"\x81",
            b"\x93",
            b"\x94",
            b"\x8f",
            b"\x90",
            b"\x91",
            b"\x96\x00\x00\x00\x00\x00\x00\x00\x00",
            b"\x97",
            b"P0\n",
            b"Q",
            b"o",
        ]
    ),
    _arg(b"K", 1),
    _arg(b"M", 2),
    _arg(b"J", 4),
    _arg(b"h", 1),
    _arg(b"q", 1),
    _arg(b"j", 4),
    _arg(b"r", 4),
    _arg(b"\x82", 1),
    st.integers(-(2**80), 2**80).map(lambda v: b"L%dL\n" % v),
    _arg(b"\x8a\x09", 9),
    st.floats().map(lambda v: b"G" + np.array(v, ">f8").tobytes()),
    st.sampled_from(
        [b"<", b">", b"f4", b"i8", b"b1", b"F", b"C", b"latin1", b"b", b"storage", b"0", b"cpu"]
    ).flatmap(
        lambda s: st.sampled_from(
            [b"\x8c" + bytes([len(s)]) + s, b"X" + len(s).to_bytes(4, "little") + s]
        )
    ),
    st.binary(max_size=16).map(lambda s: b"C" + bytes([len(s)]) + s),
    st.sampled_from(_NAMES).map(lambda name: b"c" + name),
)


@st.composite
def opcode_streams(draw):
    return (
        b"\x80"
        + bytes([draw(st.sampled_from([2, 4, 5]))])
        + b"".join(draw(st.lists(OPCODES, max_size=40)))
        + b"."
    )
