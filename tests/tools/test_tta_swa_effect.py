"""tools/tta_swa_effect.py on a comparison folder holding one tiny run: the TTA evaluation gives the
plain AP and the TTA AP of the run's model, SWA continues a copy of the run and reads the averaged
model's AP; a result.json whose command carries a flag is refused."""

import json
import os
import runpy
import sys

import pytest
from conftest import REPO_ROOT, TINY_CONFIG
from engine.test_train_net import FAST, run

from d2ext.errors import DataError

NO_DATASETS = '{"coco": [], "voc": [], "modules": []}'  # as compare_methods writes it
TOOL = os.path.join(REPO_ROOT, "tools", "tta_swa_effect.py")
EVAL = ["DATASETS.TEST", "('d2ext_shapes_minival',)", "INPUT.MIN_SIZE_TEST", "96"]
EVAL += ["MODEL.ATSS.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "10"]


def tool():
    sys.path.insert(0, os.path.dirname(TOOL))
    try:
        return runpy.run_path(TOOL)
    finally:
        sys.path.pop(0)


def fake_comparison(out, command):
    folder = os.path.join(out, "runs", "atss_R_18_FPN_tiny", "seed42")
    os.makedirs(folder)
    result = {"name": "atss_R_18_FPN_tiny", "seed": 42, "final": {"AP": 1.5}, "command": command}
    with open(os.path.join(folder, "result.json"), "w") as f:
        json.dump(result, f)
    return folder


def test_a_command_with_a_flag_is_refused(tmp_path):
    check = tool()["check_command"]
    for command in (
        [NO_DATASETS, "--config-file", TINY_CONFIG, "--allow-unsafe-yaml"],
        ['{"coco": [], "voc": [], "modules": ["evil"]}', "--config-file", TINY_CONFIG],
        ["--config-file", TINY_CONFIG],
    ):
        with pytest.raises(DataError, match="not the datasets json"):
            check(command, "result.json")
    check([NO_DATASETS, "--config-file", TINY_CONFIG, "SEED", "1"], "result.json")
    fake_comparison(str(tmp_path), ["--config-file", TINY_CONFIG])
    with pytest.raises(DataError, match="not the datasets json"):
        tool()["finished_runs"](str(tmp_path))
    with pytest.raises(DataError, match="no finished run"):
        tool()["finished_runs"](str(tmp_path / "nothing"))


@pytest.mark.slow
def test_tta_and_swa_of_a_finished_run(tmp_path):
    out = str(tmp_path)
    opts = [*FAST, "SOLVER.MAX_ITER", "2", *EVAL[2:]]
    folder = fake_comparison(out, [NO_DATASETS, "--config-file", TINY_CONFIG, *opts, *EVAL[:2]])
    run("--config-file", TINY_CONFIG, *opts, "OUTPUT_DIR", folder)
    argv = ["--out", out, "--tta", "--min-sizes", "64", "96", "--swa", "atss_R_18_FPN_tiny"]
    argv += ["--cycles", "2", "--cycle-iters", "1"]
    main = tool()["main"]
    main(argv)
    tta_file = os.path.join(out, "tta", "atss_R_18_FPN_tiny", "seed42", "ap.json")
    written = os.path.getmtime(tta_file)
    main(argv)  # reuses what is done
    assert os.path.getmtime(tta_file) == written
    tta = json.load(open(tta_file))
    log = open(os.path.join(out, "tta", "atss_R_18_FPN_tiny", "seed42", "log.txt")).read()
    assert "Running inference with test-time augmentation" in log
    assert set(tta) == {"plain", "tta"}
    swa_dir = os.path.join(out, "swa", "atss_R_18_FPN_tiny", "seed42")
    swa = json.load(open(os.path.join(swa_dir, "ap.json")))
    assert swa["plain"] == 1.5  # the run's own AP
    assert set(swa) == {"plain", "swa", "last_cycle", "by_cycle"} and len(swa["by_cycle"]) == 2
    assert repr(swa["by_cycle"][-1]) == repr(swa["swa"])  # the final average (nan: 4 iterations)
    assert os.path.isfile(os.path.join(swa_dir, "model_swa.pth"))
    report = open(os.path.join(out, "tta_swa.md")).read()
    assert "| atss_R_18_FPN_tiny | 1 |" in report and "SWA: 2 cycles x 1 iterations" in report
    assert "| config | seeds | AP | after 1 | after 2 |" in report
    assert "| config | seeds | SWA average − same iterations, no average |" in report
