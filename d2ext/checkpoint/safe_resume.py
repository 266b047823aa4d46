"""Detectron2's checkpointer with two guards on what it loads.

- Resuming follows ``save_dir/last_checkpoint``. Detectron2 joins whatever that file names to
  save_dir, so an absolute path or ``..`` makes it unpickle a file outside the run's folder; here
  the named checkpoint must lie inside save_dir.
- ``.pkl`` weights (Detectron2 / Caffe2 model zoo) load through a pickle reader that builds only
  numeric numpy arrays and plain data (d2ext/checkpoint/safe_pickle.py), not ``pickle.load``.
- Files load weights-only (d2ext/checkpoint/weights_only.py: metadata objects torch does not
  build, such as mmengine's, are left as inert placeholders). A file that cannot be loaded so
  raises an error that names the file and says it is not a valid checkpoint. torch's own message
  names neither and advises ``weights_only=False``, which would let the file run code.
"""

import logging
import os

from detectron2.checkpoint import DetectionCheckpointer

from d2ext.errors import InvalidCheckpointError, UnsafeCheckpointPathError

from .safe_pickle import load_pickle_weights, unsafe_pickle_allowed
from .weights_only import load_weights_only, refused_by_d2ext

logger = logging.getLogger(__name__)


class SafeResumeCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer that resumes only from checkpoints inside save_dir and names the
    file when one cannot be read."""

    def get_checkpoint_file(self) -> str:
        """The file save_dir/last_checkpoint names, resolved as it will be opened (symlinks
        followed): refused unless it lies inside save_dir and is a plain local path."""
        path = super().get_checkpoint_file()
        if not path:
            return path
        save_file = os.path.join(self.save_dir, "last_checkpoint")
        with self.path_manager.open(save_file, "r") as f:
            named = f.read().strip()
        root = os.path.realpath(self.save_dir)
        resolved = os.path.realpath(os.path.join(self.save_dir, named))
        # Detectron2's load() cuts a URL query ("?...") off the name and iopath treats "://" as
        # a URL: either would open another file than the one checked here.
        plain = (
            not any(c in named for c in "?#") and "://" not in named and not os.path.isabs(named)
        )
        if not plain or os.path.commonpath([root, resolved]) != root:
            raise UnsafeCheckpointPathError(
                f"{save_file} names {named[:200]!r}, which resolves to {resolved[:200]}, outside "
                f"the output folder {root} (or is not a plain relative file name); --resume only "
                f"loads checkpoints inside it. Fix or delete last_checkpoint, or pass the file as "
                f"MODEL.WEIGHTS (train.init_checkpoint) without --resume."
            )
        return resolved

    def _load_file(self, filename):
        if not filename.endswith(".pkl") or unsafe_pickle_allowed():
            return super()._load_file(filename)
        # Detectron2's .pkl branch with a loader that runs nothing
        # (d2ext/checkpoint/safe_pickle.py).
        try:
            with self.path_manager.open(filename, "rb") as f:
                data = load_pickle_weights(f)
            if not isinstance(data, dict):
                raise TypeError("it holds no dict of weights by name")
            detectron2 = "model" in data and "__author__" in data
            weights = data["model"] if detectron2 else data.get("blobs", data)
            if not isinstance(weights, dict) or not all(isinstance(k, str) for k in weights):
                raise TypeError("it holds no dict of weights by name")
        except OSError:
            raise
        except Exception as e:
            raise InvalidCheckpointError(
                f"{filename} is not a valid weights file: {type(e).__name__}: {e}"
            ) from None
        if detectron2:  # Detectron2 model-zoo format
            self.logger.info("Reading a file from '{}'".format(str(data["__author__"])[:200]))
            return data
        # Caffe2 / Detectron1 model zoo (detection models keep the weights in "blobs").
        weights = {k: v for k, v in weights.items() if not k.endswith("_momentum")}
        return {"model": weights, "__author__": "Caffe2", "matching_heuristics": True}

    def _torch_load(self, f):
        try:
            return load_weights_only(f)
        except OSError:  # unreadable, not invalid: torch's message names the file
            raise
        except Exception as e:  # torch.load's errors on bad bytes vary (UnpicklingError, ...)
            # Most bad files are refused by d2ext's checks before torch reads them.
            failed = "d2ext refused it" if refused_by_d2ext(e) else "torch.load failed"
            # from None: torch's own error suggests weights_only=False, i.e. running the file.
            raise InvalidCheckpointError(
                f"{f} is not a valid checkpoint: {failed} ({type(e).__name__}: {e}). "
                f"The file may be corrupt or truncated, or not a PyTorch checkpoint."
            ) from None
