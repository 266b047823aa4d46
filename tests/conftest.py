import os
import sys

import pytest
import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO_ROOT, "configs")
TINY_CONFIG = os.path.join(CONFIGS, "Synthetic", "atss_R_18_FPN_tiny.yaml")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def pytest_configure(config):
    # Each test process uses at most the machine's 2 cores; keep torch from oversubscribing
    # when pytest runs subprocesses (train_net tests) beside it.
    torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def repo_root():
    return REPO_ROOT


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
