"""A method is added in one place plus its config: a toy meta-architecture registered from a
module of its own (here a temporary one), with its keys registered by register_config, is handled
by every generic tool — class-count and score-threshold keys, the config loader, the compare
plan — without an edit anywhere in d2ext."""

import importlib
import sys

import pytest
from conftest import TINY_CONFIG

TOY_MODULE = """
from detectron2.config import CfgNode as CN
from detectron2.modeling import META_ARCH_REGISTRY

from d2ext.config import register_config
from d2ext.modeling import ATSS


@META_ARCH_REGISTRY.register()
class ToyATSS(ATSS):
    config_node = "TOY"


@register_config
def add_toy_config(cfg):
    cfg.MODEL.TOY = cfg.MODEL.ATSS.clone()
    cfg.MODEL.TOY.NUM_CLASSES = 3
"""


@pytest.fixture
def toy(tmp_path, monkeypatch):
    (tmp_path / "toy_method.py").write_text(TOY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("toy_method")
    config = tmp_path / "toy.yaml"
    config.write_text(
        f'_BASE_: "{TINY_CONFIG}"\nMODEL:\n  META_ARCHITECTURE: ToyATSS\n  TOY:\n    NUM_CLASSES: 4\n'
    )
    yield str(config)
    from detectron2.modeling import META_ARCH_REGISTRY

    from d2ext.config.defaults import CONFIG_ADDERS

    META_ARCH_REGISTRY._obj_map.pop("ToyATSS")
    CONFIG_ADDERS.remove(module.add_toy_config)
    sys.modules.pop("toy_method")


def test_generic_tools_handle_a_new_method(toy, tmp_path):
    from d2ext.compare.plan import make_plan
    from d2ext.config import (
        get_num_classes,
        load_config,
        num_classes_key,
        score_thresh_key,
        set_num_classes,
    )

    cfg = load_config(toy)
    assert num_classes_key(cfg) == "MODEL.TOY.NUM_CLASSES" and get_num_classes(cfg) == 4
    assert score_thresh_key(cfg) == "MODEL.TOY.SCORE_THRESH_TEST"
    set_num_classes(cfg, 7)
    assert cfg.MODEL.TOY.NUM_CLASSES == 7 and cfg.MODEL.ATSS.NUM_CLASSES != 7
    plan = make_plan(
        [toy],
        seeds=1,
        out=str(tmp_path / "cmp"),
        max_iter=2,
        eval_points=0,
        test_dataset="d2ext_shapes_minival",
        score_thresh=0.1,
    )
    opts = plan.runs[0].opts
    assert opts[opts.index("MODEL.TOY.NUM_CLASSES") + 1] == "5"  # the synthetic shapes' 5 classes
    assert opts[opts.index("MODEL.TOY.SCORE_THRESH_TEST") + 1] == "0.1"


def test_an_mmdetection_head_is_registered_next_to_its_method():
    """A method's mmdetection head rules are registered from its own module; checkpoints holding
    its signature key are then recognised (before a head whose keys it includes, if asked)."""
    from d2ext.checkpoint import register_mmdet_head
    from d2ext.checkpoint.conversion import Rule
    from d2ext.checkpoint.mmdet import MMDET_HEADS, checkpoint_method

    head = register_mmdet_head(
        "Toy",
        ("bbox_head.toy_cls.weight", "head.cls_score.weight"),
        [Rule(r"toy_cls\.(weight|bias)", r"cls_score.\1")],
        before="ATSS",
    )
    try:
        state = {"bbox_head.toy_cls.weight": 0, "bbox_head.atss_centerness.weight": 0}
        assert checkpoint_method(state) == ("Toy", head.signature)
        assert checkpoint_method({"bbox_head.atss_centerness.weight": 0})[0] == "ATSS"
    finally:
        MMDET_HEADS.remove(head)


def test_unknown_architecture_is_named():
    from d2ext.config import load_config, num_classes_key

    cfg = load_config(TINY_CONFIG, ["MODEL.META_ARCHITECTURE", "NoSuchArch"])
    with pytest.raises(KeyError, match="NoSuchArch"):
        num_classes_key(cfg)
