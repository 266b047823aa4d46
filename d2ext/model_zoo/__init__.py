"""d2ext's model zoo: the configs under configs/, installed with the package."""
from .model_zoo import get, get_config, get_config_file

__all__ = ["get", "get_config", "get_config_file"]
