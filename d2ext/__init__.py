"""d2ext: dense-detector training recipes for Detectron2.

Importing d2ext registers its meta-architectures, heads and backbones with Detectron2's registries
and its synthetic dataset with DatasetCatalog.
"""

from .environment import setup_environment

setup_environment()  # before torch loads (d2ext/environment.py)

__version__ = "0.1.0"

import warnings  # noqa: E402

with warnings.catch_warnings():
    # Detectron2 and fvcore script functions with torch.jit.script at import, which torch 2.14
    # deprecates: one FutureWarning per module, about their code, not the user's.
    warnings.filterwarnings(
        "ignore", message=r"`torch.jit.script` is deprecated", category=FutureWarning
    )
    from . import data, modeling  # noqa: F401,E402  (registration side effects)
from .errors import D2extError  # noqa: E402,F401  (d2ext.D2extError)
