import os
import sys

import pytest  # noqa: E402
import torch  # noqa: E402

import d2ext  # noqa: F401,E402  first: sets the process environment before torch loads (d2ext/environment.py)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO_ROOT, "configs")
TINY_CONFIG = os.path.join(CONFIGS, "Synthetic", "atss_R_18_FPN_tiny.yaml")

HAS_CUDA = torch.cuda.is_available()
# "cuda" is always collected, marked `cuda`: skipped without CUDA (and in `make test`), run by
# `make gpu-test` (dev/gpu_test.sh); `pytest --collect-only -m cuda` lists them.
CUDA = pytest.param("cuda", marks=pytest.mark.cuda)
DEVICES = ["cpu", CUDA]


def pytest_configure(config):
    # Each test process uses at most the machine's 2 cores; keep torch from oversubscribing
    # when pytest runs subprocesses (train_net tests) beside it.
    torch.set_num_threads(min(2, torch.get_num_threads()))


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs CUDA: run `make gpu-test` on a machine with a GPU")
    for item in items:
        if item.get_closest_marker("cuda"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def repo_root():
    return REPO_ROOT


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def tiny_cfg(config_path, *opts):
    """A d2ext config from a yaml file, with `opts` (key, value, ...) merged in."""
    from d2ext.config import get_cfg, merge_from_file

    cfg = merge_from_file(get_cfg(), config_path)
    cfg.merge_from_list(list(opts))
    return cfg


def build_tiny_model(config_path, *opts, seed=0):
    """The model of a (tiny) yaml config with `opts`, initialised under a fixed seed."""
    from detectron2.modeling import build_model

    torch.manual_seed(seed)
    return build_model(tiny_cfg(config_path, *opts))


def make_inputs(boxes_per_image, size=(96, 128), seed=0):
    """Detectron2 training inputs: random uint8 images of `size` with these GT boxes, classes
    0, 1, 2, ... (mod 5)."""
    from detectron2.structures import Boxes, Instances

    g = torch.Generator().manual_seed(seed)
    batch = []
    for boxes in boxes_per_image:
        image = (torch.rand(3, *size, generator=g) * 255).to(torch.uint8)
        instances = Instances(size)
        instances.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        instances.gt_classes = torch.arange(len(boxes), dtype=torch.int64) % 5
        batch.append({"image": image, "instances": instances, "height": size[0], "width": size[1]})
    return batch


@pytest.fixture(autouse=True)
def _restore_loggers():
    """Tools run in-process set up loggers (Detectron2's setup_logger) whose handlers write to
    the test's captured streams; restored after each test, later tests do not log into closed
    files."""
    import logging

    from detectron2.utils.logger import setup_logger

    names = ("d2ext", "detectron2", "d2", "fvcore")
    saved = {n: list(logging.getLogger(n).handlers) for n in names}
    yield
    for name, handlers in saved.items():
        logging.getLogger(name).handlers = handlers
    setup_logger.cache_clear()
