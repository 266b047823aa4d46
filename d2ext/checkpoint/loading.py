"""The one way d2ext loads weights into a built model: :func:`load_weights`, used by every tool,
the predictor and the model zoo. It goes through d2ext's :class:`Checkpointer`: mmdetection and
torchvision files converted on load, ``.pkl`` files read without running them, every other file
weights-only (d2ext/checkpoint/safe_resume.py)."""

import logging

from detectron2.utils.file_io import PathManager

from d2ext.errors import MissingWeightsError

from .checkpointer import Checkpointer

logger = logging.getLogger(__name__)


def local_weights(path: str, key: str = "MODEL.WEIGHTS") -> str:
    """A local copy of the weights file (downloaded, as Detectron2 does, when it is a URL)."""
    if "://" not in path:
        if not PathManager.isfile(path):
            raise MissingWeightsError(f"{key}={path!r}: no such file")
        return path
    try:
        return PathManager.get_local_path(path)
    except Exception as e:  # offline, proxy, 404 ...: say which file is needed
        raise MissingWeightsError(
            f"{key}: could not download {path} ({type(e).__name__}: {e}). Download it where you are "
            f"online and point {key} at the file"
        ) from None


def load_weights(
    model, weights: str, *, key: str = "MODEL.WEIGHTS", allow_random_init: bool = False
):
    """
    Loads ``weights`` (a file or URL) into ``model`` with d2ext's Checkpointer. Returns the model.

    Args:
        key: the config key the weights came from, for messages ("train.init_checkpoint" for
            lazy configs).
        allow_random_init: with empty ``weights``, keep the model's initialisation (warned)
            instead of raising MissingWeightsError: a prediction or export of a random model is
            rarely what was meant.
    """
    if not weights:
        if allow_random_init:
            logger.warning(f"{key} is empty: the model keeps its random initialisation")
            return model
        raise MissingWeightsError(
            f"{key} is empty: no weights to load. Set {key} to a checkpoint (a d2ext / Detectron2 "
            ".pth or .pkl, or an mmdetection .pth)"
        )
    Checkpointer(model).load(local_weights(weights, key))
    return model
