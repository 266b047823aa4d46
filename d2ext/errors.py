"""d2ext's errors, one vocabulary for the library and its tools.

Every error d2ext raises on a bad file, key or value is a :class:`D2extError` whose message names
the bad thing (the file, the config key, the value). The tools (d2ext/tools) print such an error
as one line and exit with status 1; ``--debug`` or ``D2EXT_DEBUG=1`` shows the traceback.
The classes also derive from the built-in type a caller would expect (ValueError, KeyError,
FileNotFoundError), so ``except ValueError`` keeps working.
"""

import pickle


class D2extError(Exception):
    """Base of every error d2ext raises about its input."""


# -- configs -------------------------------------------------------------------------------------
class ConfigError(D2extError, ValueError):
    """A config file, key or value d2ext cannot use."""


class UnsafeYamlError(ConfigError):
    """A yaml config needs yaml.unsafe_load (a python tag), which d2ext refuses by default."""


class OverrideKeyError(ConfigError, KeyError):
    """A command-line override names a config key that does not exist."""

    def __str__(self):  # KeyError quotes its message; keep it readable
        return str(self.args[0])


# -- checkpoints ---------------------------------------------------------------------------------
class CheckpointError(D2extError, ValueError):
    """A weights file d2ext will not load."""


class InvalidCheckpointError(CheckpointError):
    """A file that is not a readable checkpoint (corrupt, truncated, crafted, not weights)."""


class WeightsFileError(InvalidCheckpointError, pickle.UnpicklingError):
    """A weights file d2ext's own readers refuse or cannot read (why; callers name the file)."""


class UnsafeCheckpointPathError(CheckpointError):
    """last_checkpoint names a file outside the checkpointer's save_dir."""


class ConversionError(CheckpointError):
    """A foreign (mmdetection, torchvision) state dict that does not map onto the model."""


class MissingWeightsError(CheckpointError, FileNotFoundError):
    """No weights to load where a trained model is needed (e.g. MODEL.WEIGHTS is empty)."""


# -- data ----------------------------------------------------------------------------------------
class DataError(D2extError, ValueError):
    """A dataset, image or annotation d2ext cannot use."""


__all__ = [
    "CheckpointError",
    "ConfigError",
    "ConversionError",
    "D2extError",
    "DataError",
    "InvalidCheckpointError",
    "MissingWeightsError",
    "OverrideKeyError",
    "UnsafeCheckpointPathError",
    "UnsafeYamlError",
    "WeightsFileError",
]
