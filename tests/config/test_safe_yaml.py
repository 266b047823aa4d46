"""d2ext's yaml loading (d2ext/config/safe_yaml.py): safe by default on d2ext's CfgNode, with
bounded work before anything is built."""

import time

import pytest
from conftest import TINY_CONFIG

from d2ext.config import get_cfg, load_config, merge_from_file
from d2ext.errors import ConfigError, UnsafeYamlError


def _nested_aliases(levels: int) -> str:
    """A "billion laughs" yaml: each level a list of 9 references to the previous (9**levels
    nodes once expanded, a few hundred bytes on disk)."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + f"\nMODEL:\n  DEVICE: cpu\nSEED: 1\n_unused: *a{levels}\n"


def test_detectron2_idiom_with_d2ext_cfg_is_safe(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.yaml"
    path.write_text(f'SEED: !!python/object/apply:os.system ["touch {marker}"]\n')
    cfg = get_cfg()
    with pytest.raises(UnsafeYamlError, match=str(path)):
        cfg.merge_from_file(str(path))  # Detectron2's CfgNode defaults to allow_unsafe=True
    assert not marker.exists()


def test_nested_aliases_are_refused_before_they_are_built(tmp_path):
    path = tmp_path / "laughs.yaml"
    path.write_text(_nested_aliases(9))  # 387 M nodes expanded
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="more than 100000 yaml nodes"):
        load_config(str(path))
    assert time.perf_counter() - start < 5


def test_few_aliases_still_load(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text(f'_BASE_: "{TINY_CONFIG}"\nsteps: &s [10, 20]\nSOLVER:\n  STEPS: *s\n')
    with pytest.raises(ConfigError, match="steps"):  # an unknown top-level key, not the alias
        load_config(str(path))
    path.write_text(
        f'_BASE_: "{TINY_CONFIG}"\nSOLVER:\n  STEPS: &s [10, 20]\nTEST:\n  AUG:\n    MIN_SIZES: *s\n'
    )
    cfg = load_config(str(path))
    assert list(cfg.SOLVER.STEPS) == [10, 20] and list(cfg.TEST.AUG.MIN_SIZES) == [10, 20]


def test_recursive_alias_is_refused(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text("a: &a [1, *a]\n")
    with pytest.raises(ConfigError, match="refers to itself"):
        load_config(str(path))


def test_base_cycle_and_fan_out_are_refused(tmp_path):
    (tmp_path / "a.yaml").write_text('_BASE_: "b.yaml"\n')
    (tmp_path / "b.yaml").write_text('_BASE_: "a.yaml"\n')
    with pytest.raises(ConfigError, match="its own _BASE_"):
        load_config(str(tmp_path / "a.yaml"))
    # Each file names the next one 8 times: 8**k loads without a budget.
    for i in range(6):
        (tmp_path / f"f{i}.yaml").write_text(
            f"_BASE_: [{', '.join([repr(f'f{i + 1}.yaml')] * 8)}]\n"
        )
    (tmp_path / "f6.yaml").write_text("SEED: 1\n")
    with pytest.raises(ConfigError, match="more than 64 _BASE_ files"):
        load_config(str(tmp_path / "f0.yaml"))


def test_merge_into_a_plain_detectron2_cfg_is_safe_and_merges(tmp_path):
    from detectron2.config import get_cfg as d2_get_cfg

    path = tmp_path / "x.yaml"
    path.write_text("SEED: 7\nMODEL:\n  DEVICE: cpu\n")
    cfg = merge_from_file(d2_get_cfg(), str(path))
    assert cfg.SEED == 7 and cfg.MODEL.DEVICE == "cpu"
    path.write_text("SEED: !!python/object/apply:os.getpid []\n")
    with pytest.raises(UnsafeYamlError):
        merge_from_file(d2_get_cfg(), str(path))


def test_missing_file_and_bad_override_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="nothing.yaml' does not exist"):
        load_config(str(tmp_path / "nothing.yaml"))
    with pytest.raises(ConfigError, match="SOLVER.NO_SUCH_KEY"):
        load_config(TINY_CONFIG, ["SOLVER.NO_SUCH_KEY", "1"])
