"""Loads d2ext's compiled ops (d2ext._C) once, and says loudly when they are missing.

Every op in :mod:`d2ext.layers` has a pure-PyTorch reference in :mod:`d2ext.layers.reference`;
without the compiled ops the public functions call those references, after one warning that names
the command that builds the ops. ``D2EXT_DISABLE_OPS=1`` forces that fallback (used by the tests).
"""

import logging
import os
import warnings

logger = logging.getLogger(__name__)

BUILD_COMMAND = "python setup.py build_ext --inplace  (or: make setup)"


def _load() -> bool:
    if os.environ.get("D2EXT_DISABLE_OPS", "0") == "1":
        return False
    try:
        from d2ext import _C  # noqa: F401  (registers torch.ops.d2ext.*)
    except ImportError as e:
        _load.error = str(e)
        return False
    # Decides the CPU variant now, so that a bad D2EXT_CPU_CAPABILITY fails here, naming itself.
    import torch

    torch.ops.d2ext.cpu_capability()
    from . import (
        _autocast,  # noqa: F401  (float32 under torch.autocast)
        _fake,  # noqa: F401  (fake kernels + autograd for the loaded ops)
    )

    return True


_load.error = "disabled by D2EXT_DISABLE_OPS=1"
_HAS_OPS = _load()
_warned = False


def has_ops() -> bool:
    """True when ``torch.ops.d2ext`` is backed by the compiled library."""
    return _HAS_OPS


def cpu_capability():
    """The CPU variant of the compiled launchers in use ("default", "avx2" or "avx512"; chosen
    from the CPU's features, or forced by D2EXT_CPU_CAPABILITY / ATEN_CPU_CAPABILITY), or None
    without the compiled ops."""
    if not _HAS_OPS:
        return None
    import torch

    return torch.ops.d2ext.cpu_capability()


def warn_fallback_once(op_name: str) -> None:
    """Warns (once per process) that ``op_name`` and every other op runs its Python reference."""
    global _warned
    if _warned:
        return
    _warned = True
    warnings.warn(
        f"d2ext's compiled ops are not available ({_load.error}); d2ext.layers.{op_name} and the "
        f"other d2ext ops fall back to their slower pure-PyTorch references. Build them with: "
        f"{BUILD_COMMAND}",
        RuntimeWarning,
        stacklevel=3,
    )
