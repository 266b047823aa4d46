"""d2ext's model zoo: the configs under configs/, installed with the package, and the published
checkpoints of MODEL_ZOO.md."""

from .model_zoo import get, get_checkpoint_url, get_config, get_config_file

__all__ = ["get", "get_checkpoint_url", "get_config", "get_config_file"]
