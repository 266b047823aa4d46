"""tools/compare_methods.py and d2ext.compare: planning, resuming, report and plots (fabricated
results), and one real 2-iteration plan end to end (the slow test)."""

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

from d2ext.compare import plan as plan_module
from d2ext.compare import run as run_module
from d2ext.compare import training as training_module
from d2ext.compare.eta import Eta
from d2ext.compare.files import write_json
from d2ext.compare.plan import load_config, make_plan
from d2ext.compare.plots import write_plots
from d2ext.compare.report import write_report
from d2ext.compare.time_log import TimeLog, read_entries, summary
from d2ext.config import get_num_classes
from d2ext.data.registration import register_datasets
from d2ext.errors import DataError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_plan_is_configs_times_seeds_with_their_output_folders(tmp_path):
    plan = make_plan(
        ["atss_R_18_FPN_tiny", "fcos_R_18_FPN_tiny.py"], seeds=2, out=str(tmp_path), max_iter=50
    )
    # Seed by seed: a comparison stopped midway has every config's first seed.
    assert [(r.name, r.seed) for r in plan.runs] == [
        ("atss_R_18_FPN_tiny", 42),
        ("fcos_R_18_FPN_tiny", 42),
        ("atss_R_18_FPN_tiny", 43),
        ("fcos_R_18_FPN_tiny", 43),
    ]
    assert plan.runs[2].output_dir == os.path.join(
        str(tmp_path), "runs", "atss_R_18_FPN_tiny", "seed43"
    )
    # Each run's seed and output folder reach the config train_net.py will load.
    yaml_cfg = load_config(plan.runs[2].config, plan.runs[2].opts)
    assert (yaml_cfg.SEED, yaml_cfg.OUTPUT_DIR) == (43, plan.runs[2].output_dir)
    lazy_cfg = load_config(plan.runs[3].config, plan.runs[3].opts)
    assert (lazy_cfg.train.seed, lazy_cfg.train.output_dir) == (43, plan.runs[3].output_dir)


def test_default_configs_are_every_tiny_config_atss_first(tmp_path):
    files = {
        "gfl_R_18_FPN_tiny.yaml": "",
        "gfl_R_18_FPN_tiny.py": "",  # the yaml twin is taken
        "fcos_R_18_FPN_tiny.py": "",  # lazy only
        "atss_R_18_FPN_tiny.yaml": "",
        "vfnet_R_18_FPN_tiny_swa.yaml": "",  # a variant, not a tiny config
        "retinanet_R_18_FPN_tiny.yaml": "# a baseline\n# compare_methods: not by default (why)\n",
        "notes.md": "",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert plan_module.default_configs(str(tmp_path)) == [
        "atss_R_18_FPN_tiny.yaml",
        "fcos_R_18_FPN_tiny.py",
        "gfl_R_18_FPN_tiny.yaml",
    ]
    shipped = plan_module.default_configs()
    assert shipped[0] == "atss_R_18_FPN_tiny.yaml" and "retinanet_R_18_FPN_tiny.yaml" not in shipped
    assert {"aploss_retinanet_R_18_FPN_tiny.yaml", "fcos_R_18_FPN_tiny.py"} <= set(shipped)


def test_each_run_has_at_most_its_cores_as_loader_workers(tmp_path):
    def workers(**kw):
        plan = make_plan(
            ["atss_R_18_FPN_tiny", "fcos_R_18_FPN_tiny"], seeds=1, out=str(tmp_path), **kw
        )
        yaml_opts, lazy_opts = (
            plan.config_opts["atss_R_18_FPN_tiny"],
            plan.config_opts["fcos_R_18_FPN_tiny"],
        )
        return (
            yaml_opts[yaml_opts.index("DATALOADER.NUM_WORKERS") + 1],
            next(o for o in lazy_opts if o.startswith("dataloader.train.num_workers=")),
        )

    assert workers(cores=2) == ("2", "dataloader.train.num_workers=2")
    assert workers(cores=2, jobs=2) == ("1", "dataloader.train.num_workers=1")


def test_schedule_is_shared_and_steps_scale(tmp_path):
    from detectron2.config import instantiate

    plan = make_plan(
        ["atss_R_18_FPN_tiny", "fcos_R_18_FPN_tiny"], seeds=1, out=str(tmp_path), max_iter=50
    )
    yaml_cfg, lazy_cfg = (load_config(r.config, r.opts) for r in plan.runs)
    # The tiny schedule: 500 iterations, x0.1 at 400 and 470, 100 warmup iterations -> x 50/500.
    assert (
        yaml_cfg.SOLVER.MAX_ITER,
        tuple(yaml_cfg.SOLVER.STEPS),
        yaml_cfg.SOLVER.WARMUP_ITERS,
    ) == (50, (40, 47), 10)
    assert yaml_cfg.TEST.EVAL_PERIOD == 10  # 5 evaluation points by default
    assert lazy_cfg.train.max_iter == 50 and list(lazy_cfg.lr_multiplier.scheduler.milestones) == [
        40,
        47,
    ]
    assert lazy_cfg.train.eval_period == 10
    # At 2 iterations the steps collapse: dropped, with the lazy schedule's decay values.
    plan = make_plan(["fcos_R_18_FPN_tiny"], seeds=1, out=str(tmp_path), max_iter=2, eval_points=0)
    lazy_cfg = load_config(plan.runs[0].config, plan.runs[0].opts)
    assert (
        list(lazy_cfg.lr_multiplier.scheduler.milestones) == [] and lazy_cfg.train.eval_period == 0
    )
    assert instantiate(lazy_cfg.lr_multiplier)(0.99) == 1.0


@pytest.fixture
def three_class_dataset(tmp_path):
    """A registered COCO-format dataset with 3 classes (one 8x8 image, one box)."""
    import cv2
    import numpy as np
    from detectron2.data import DatasetCatalog, MetadataCatalog

    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "height": 8, "width": 8}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 2,
                "bbox": [1, 1, 4, 4],
                "area": 16,
                "iscrowd": 0,
            }
        ],
        "categories": [{"id": i, "name": n} for i, n in enumerate(["a", "b", "c"], 1)],
    }
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    name = "test_compare_three_classes"
    register_datasets(coco=[(name, str(tmp_path / "ann.json"), str(tmp_path))])
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def test_dataset_and_class_count_go_through_the_method_key_helpers(
    tmp_path, three_class_dataset, monkeypatch
):
    calls = []
    real = plan_module.set_num_classes
    monkeypatch.setattr(
        plan_module, "set_num_classes", lambda cfg, n: calls.append(n) or real(cfg, n)
    )
    plan = make_plan(
        ["gfl_R_18_FPN_tiny", "faster_rcnn_R_18_FPN_tiny", "fcos_R_18_FPN_tiny"],
        seeds=1,
        out=str(tmp_path / "out"),
        train_dataset=three_class_dataset,
        test_dataset=three_class_dataset,
        score_thresh=0.3,
    )
    assert calls == [3, 3, 3]  # the class count of the train set's thing_classes
    gfl, rcnn, fcos = (load_config(r.config, r.opts) for r in plan.runs)
    assert (gfl.MODEL.GFL.NUM_CLASSES, gfl.MODEL.GFL.SCORE_THRESH_TEST) == (3, 0.3)
    assert gfl.DATASETS.TRAIN == (three_class_dataset,) and gfl.DATASETS.TEST == (
        three_class_dataset,
    )
    assert (rcnn.MODEL.ROI_HEADS.NUM_CLASSES, rcnn.MODEL.ROI_HEADS.SCORE_THRESH_TEST) == (3, 0.3)
    assert get_num_classes(fcos) == 3 and fcos.model.test_score_thresh == 0.3
    assert fcos.dataloader.train.dataset.names == three_class_dataset
    assert (
        fcos.dataloader.evaluator.dataset_name == three_class_dataset
    )  # interpolated from the test set


def test_unknown_configs_and_datasets_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope_config, other_missing.yaml"):
        make_plan(["atss_R_18_FPN_tiny", "nope_config", "other_missing.yaml"], out=str(tmp_path))
    with pytest.raises(DataError, match="no_such_train_set, no_such_test_set"):
        make_plan(
            ["atss_R_18_FPN_tiny"],
            out=str(tmp_path),
            train_dataset="no_such_train_set",
            test_dataset="no_such_test_set",
        )


FAKE_TRAIN = """
import json, os, sys
out = sys.argv[1]
open(os.path.join(out, "ran"), "a").write("x")
with open(os.path.join(out, "metrics.json"), "a") as f:
    f.write(json.dumps({"iteration": 0, "total_loss": 2.0}) + "\\n")
    f.write(json.dumps({"iteration": 1, "total_loss": 1.5, "bbox/AP": 12.5, "bbox/AP50": 30.0,
                        "bbox/AP75": 10.0, "bbox/APs": 1.0, "bbox/APm": 2.0, "bbox/APl": 3.0,
                        "bbox/AP-a": 11.0}) + "\\n")
"""


def test_resume_reuses_finished_runs_and_restarts_unfinished_ones(tmp_path, monkeypatch):
    plan = make_plan(["atss_R_18_FPN_tiny"], seeds=2, out=str(tmp_path), max_iter=2, eval_points=0)
    finished, unfinished = plan.runs
    os.makedirs(finished.output_dir)
    write_json(finished.result_file, {"s_per_iter": 1.0, "marker": "kept"})
    os.makedirs(unfinished.output_dir)
    with open(os.path.join(unfinished.output_dir, "metrics.json"), "w") as f:  # a crashed run's
        f.write(json.dumps({"iteration": 0, "bbox/AP": 99.0}) + "\n")
    monkeypatch.setattr(
        training_module,
        "train_command",
        lambda run, datasets: [sys.executable, "-c", FAKE_TRAIN, run.output_dir],
    )
    monkeypatch.setattr(
        run_module, "step_benchmark", lambda *a, **k: {"median_s": {finished.name: 1.0}}
    )
    monkeypatch.setattr(run_module, "memory_probes", lambda *a, **k: {})
    # --report-only: the finished run's result, nothing trained.
    results, _, _, failed = run_module.execute(
        plan, {"coco": [], "modules": []}, log=lambda *a: None, train=False
    )
    assert list(results) == [(finished.name, 42)] and failed == []
    assert not os.path.exists(os.path.join(unfinished.output_dir, "ran"))
    results, _, _, failed = run_module.execute(
        plan, {"coco": [], "modules": []}, log=lambda *a: None
    )
    assert failed == []
    assert not os.path.exists(os.path.join(finished.output_dir, "ran"))
    assert results[(finished.name, 42)]["marker"] == "kept"
    assert open(os.path.join(unfinished.output_dir, "ran")).read() == "x"
    # The stale metrics were cleared: the result is the new run's.
    new = json.load(open(unfinished.result_file))
    assert (
        new["final"]["AP"] == 12.5
        and new["ap_curve"] == [[2, 12.5]]
        and new["per_class"] == {"a": 11.0}
    )
    # Run again: both finished, nothing trains.
    os.remove(os.path.join(unfinished.output_dir, "ran"))
    run_module.execute(plan, {"coco": [], "modules": []}, log=lambda *a: None)
    assert not os.path.exists(os.path.join(unfinished.output_dir, "ran"))


def test_report_only_measures_nothing(tmp_path, monkeypatch):
    """--report-only reads the step times and memory measured before (even under other settings,
    e.g. on another machine), and without them reports none: it never benchmarks."""
    plan = make_plan(["atss_R_18_FPN_tiny"], seeds=1, out=str(tmp_path), max_iter=2, eval_points=0)
    monkeypatch.setattr(
        "d2ext.compare.benchmark.interleave", lambda *a, **k: pytest.fail("benchmarked")
    )
    monkeypatch.setattr(run_module.subprocess, "run", lambda *a, **k: pytest.fail("probed memory"))
    assert run_module.step_benchmark(plan, 6, 3, 8, log=lambda *a: None, measure=False) == {
        "median_s": {}
    }
    assert run_module.memory_probes(plan, 8, {}, log=lambda *a: None, measure=False) == {}
    stored = {"settings": {"cores": 16}, "median_s": {"atss_R_18_FPN_tiny": 0.5}}
    write_json(os.path.join(str(tmp_path), "benchmark.json"), stored)
    write_json(
        os.path.join(str(tmp_path), "memory", "atss_R_18_FPN_tiny.json"), {"peak_rss_mib": 9.0}
    )
    assert run_module.step_benchmark(plan, 6, 3, 8, log=lambda *a: None, measure=False) == stored
    assert run_module.memory_probes(plan, 8, {}, log=lambda *a: None, measure=False) == {
        "atss_R_18_FPN_tiny": {"peak_rss_mib": 9.0}
    }


def test_time_it_took_covers_the_invocations_including_a_killed_one(tmp_path, monkeypatch):
    clock = [100.0]
    monkeypatch.setattr("d2ext.compare.time_log.time.perf_counter", lambda: clock[0])
    first = TimeLog(str(tmp_path), "python tools/compare_methods.py", min_interval_s=60)
    clock[0] += 30
    first.update()  # within a minute of the last write: not written
    assert read_entries(str(tmp_path))[0]["wall_s"] == 0.0
    clock[0] += 3570
    first.update(runs_trained=4)  # then killed: its last update stands
    second = TimeLog(str(tmp_path), "python tools/compare_methods.py --seeds 3")
    clock[0] += 1800
    second.update(runs_trained=2, force=True)
    entries = read_entries(str(tmp_path))
    assert [(e["wall_s"], e["runs_trained"]) for e in entries] == [(3600.0, 4), (1800.0, 2)]
    assert entries[1]["command"].endswith("--seeds 3") and "cores" in entries[1]["machine"]
    # As if the second started after the first ended: one after another, the sum.
    entries[1]["started_unix"] = entries[0]["started_unix"] + 4000
    assert summary(entries).startswith(
        "Time it took: 1.50 h wall over 2 invocations of the command (one after another: 1.00 h, 0.50 h), on "
    )
    assert summary([]) == ""


def test_time_it_took_of_invocations_that_ran_at_once_is_their_union():
    from d2ext.compare.time_log import covered_seconds

    def e(start, wall):
        return {"started_unix": start, "wall_s": wall, "machine": "m"}

    # [0, 100] and [50, 120] overlap (120 s covered), [200, 210] after a gap.
    entries = [e(50, 70), e(0, 100), e(200, 10), e(10, 20)]
    assert covered_seconds(entries) == 130
    assert "(some ran at once: 0.06 h summed over processes)" in summary(entries)


def test_separation_and_pairs_within_the_seed_noise():
    from d2ext.compare.report import noise_lines, separation

    # Means 22 and 23, stds 2 and 1, 3 seeds each: se = sqrt(4/3 + 1/3) = 1.291 -> 0.77σ.
    assert abs(separation([20.0, 22.0, 24.0], [22.0, 23.0, 24.0]) + 1 / 1.2909944) < 1e-6
    assert separation([20.0], [22.0, 23.0]) is None and separation([1.0, 1.0], [1.0, 1.0]) is None
    groups = {
        n: [fabricated(n, 42 + i, ap, {}) for i, ap in enumerate(aps)]
        for n, aps in {
            "A": [20.0, 22.0, 24.0],
            "B": [22.0, 23.0, 24.0],
            "C": [40.0, 41.0, 42.0],
        }.items()
    }
    text = "\n".join(noise_lines(groups, ["A", "B", "C"]))
    assert "Pairs within 2σ (not told apart by these seeds): `A` − `B` -1.0 (0.8σ)." in text
    # Two runs but one AP (the other NaN): no spread to report for it, no error.
    groups["D"] = [fabricated("D", 42, float("nan"), {}), fabricated("D", 43, 5.0, {})]
    text = "\n".join(noise_lines(groups, ["A", "B", "C", "D"]))
    assert "`D`" not in text and "`C` 1.0." in text


def test_jobs_train_at_once_each_on_its_own_cores(tmp_path, monkeypatch):
    """--jobs 2 on 2 cores: two runs at a time, each subprocess bound to one core, every run
    trained once; more jobs than cores is an error naming --jobs."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 cores")
    plan = make_plan(
        ["atss_R_18_FPN_tiny"], seeds=4, out=str(tmp_path), max_iter=2, eval_points=0, cores=2
    )
    # The fake run records its cores and waits until both jobs are running (or 20 s).
    fake = (
        FAKE_TRAIN
        + """
import glob, time
open(os.path.join(out, "cpus"), "w").write(json.dumps(sorted(os.sched_getaffinity(0))))
open(os.path.join(out, "started"), "w").write("x")
deadline = time.time() + 20
while len(glob.glob(os.path.join(os.path.dirname(out), "*", "started"))) < 2 and time.time() < deadline:
    time.sleep(0.05)
open(os.path.join(out, "together"), "w").write(str(time.time() < deadline))
"""
    )
    monkeypatch.setattr(
        training_module,
        "train_command",
        lambda run, datasets: [sys.executable, "-c", fake, run.output_dir],
    )
    monkeypatch.setattr(run_module, "step_benchmark", lambda *a, **k: {"median_s": {}})
    monkeypatch.setattr(run_module, "memory_probes", lambda *a, **k: {})
    results, _, _, failed = run_module.execute(plan, {}, log=lambda *a: None, jobs=2)
    assert failed == [] and sorted(results) == [("atss_R_18_FPN_tiny", s) for s in (42, 43, 44, 45)]
    cpus = [json.load(open(os.path.join(r.output_dir, "cpus"))) for r in plan.runs]
    assert all(len(c) == 1 for c in cpus) and len({c[0] for c in cpus}) == 2
    assert open(os.path.join(plan.runs[0].output_dir, "together")).read() == "True"
    assert all(open(os.path.join(r.output_dir, "ran")).read() == "x" for r in plan.runs)
    with pytest.raises(ValueError, match="--jobs 3: needs 1 to --cores"):
        run_module.execute(plan, {}, log=lambda *a: None, jobs=3)


def test_eta_divides_by_the_runs_that_can_still_run_at_once():
    eta = Eta({"a": 1.0})
    assert eta.remaining({"a": 400}, jobs=4, runs_left=4) == "ETA >01:40"
    assert (
        eta.remaining({"a": 100}, jobs=4, runs_left=1) == "ETA >01:40"
    )  # the last run: one at a time


SLOW_FAKE = """
import os, sys, time
open(os.path.join(sys.argv[1], "pid"), "w").write(str(os.getpid()))
time.sleep(60)
"""


@pytest.mark.parametrize("jobs", [1, 2])
def test_an_error_or_interrupt_kills_the_running_runs_and_raises(tmp_path, monkeypatch, jobs):
    if len(os.sched_getaffinity(0)) < jobs:
        pytest.skip(f"needs {jobs} cores")
    plan = make_plan(
        ["atss_R_18_FPN_tiny"], seeds=3, out=str(tmp_path), max_iter=2, eval_points=0, cores=jobs
    )
    monkeypatch.setattr(
        training_module,
        "train_command",
        lambda run, datasets: [sys.executable, "-c", SLOW_FAKE, run.output_dir],
    )
    monkeypatch.setattr(run_module, "step_benchmark", lambda *a, **k: {"median_s": {}})
    monkeypatch.setattr(run_module, "memory_probes", lambda *a, **k: {})
    monkeypatch.setattr(
        training_module, "read_metrics", lambda path: [{"iteration": 0}]
    )  # progress: on_iter runs

    class Interrupting:  # Ctrl-C (KeyboardInterrupt) arriving in the progress update of a poll
        def update(self, runs_trained=None, force=False):
            if all(os.path.exists(os.path.join(r.output_dir, "pid")) for r in plan.runs[:jobs]):
                raise KeyboardInterrupt

    import time

    start = time.time()
    with pytest.raises(KeyboardInterrupt):
        run_module.execute(plan, {}, log=lambda *a: None, time_log=Interrupting(), jobs=jobs)
    assert time.time() - start < 30  # not the runs' 60 s
    for run in plan.runs[:jobs]:  # killed and reaped
        pid = int(open(os.path.join(run.output_dir, "pid")).read())
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not os.path.exists(plan.runs[jobs].output_dir)  # never started


def fabricated(name, seed, ap, per_class):
    return {
        "name": name,
        "seed": seed,
        "s_per_iter": 1.0,
        "final": {
            "AP": ap,
            "AP50": ap + 10,
            "AP75": ap - 5,
            "APs": float("nan"),
            "APm": 1.0,
            "APl": 2.0,
        },
        "per_class": per_class,
        "ap_curve": [[100, ap / 2], [200, ap]],
        "loss_curve": [[0, 2.0]],
    }


def test_report_and_plots_from_fabricated_results(tmp_path):
    results = {
        ("A", 42): fabricated("A", 42, 20.0, {"ring": 10.0}),
        ("A", 43): fabricated("A", 43, 22.0, {"ring": 12.0}),
        ("A", 44): fabricated("A", 44, 24.0, {"ring": 14.0}),
        ("B", 42): fabricated("B", 42, 30.0, {"ring": 5.0}),
        ("B", 43): fabricated("B", 43, 31.0, {"ring": 6.0}),
        ("C", 42): fabricated("C", 42, 15.0, {"ring": 1.0}),
    }
    bench = {
        "median_s": {"A": 1.0, "B": 1.5, "C": 0.5},
        "settings": {"rounds": 6, "steps": 3, "batch": 8},
    }
    memory = {
        "A": {"peak_rss_mib": 1000.0, "step_increase_mib": 200.0},
        "B": {"peak_rss_mib": 1200.0},
    }
    names = ["A", "B", "C"]
    plots = write_plots(str(tmp_path), names, results, bench["median_s"])
    text = write_report(
        str(tmp_path / "comparison.md"),
        names=names,
        results=results,
        bench=bench,
        memory=memory,
        settings={"seeds": [42, 43, 44], "max_iter": 500},
        command="python tools/compare_methods.py",
        wall_s=3600.0,
        failed=[],
        plots=plots,
        untrained=["B seed 44", "C seed 43"],
        time_it_took="Time it took: 9.99 h wall.",
    )
    assert "Time it took: 9.99 h wall." in text
    assert (
        "Not trained yet (--report-only; the table has the finished seeds): B seed 44, C seed 43"
        in text
    )
    rows = {}
    for line in text.splitlines():  # the main table's rows (the per-class table's come later)
        if line.startswith("| `"):
            rows.setdefault(
                line.split("|")[1].strip(" `"), [c.strip() for c in line.split("|")[2:-1]]
            )
    # A: 20, 22, 24 -> mean 22, sample std 2; AP50 +10; APs all NaN -> "–".
    assert rows["A"][:8] == [
        "3",
        "22.0 ± 2.0",
        "32.0 ± 2.0",
        "17.0 ± 2.0",
        "–",
        "1.0 ± 0.0",
        "2.0 ± 0.0",
        "–",
    ]
    # B: 30, 31 -> 30.5 ± 0.707; 8.5 AP above A, in standard errors of the difference:
    # 8.5 / sqrt(2²/3 + 0.707²/2) = 8.5 / 1.258 = 6.76.
    assert rows["B"][1] == "30.5 ± 0.7" and rows["B"][7] == "+8.5 (6.8σ)"
    assert rows["C"][7] == "-7.0"  # one seed: no σ
    assert "Seed spread (sample std of AP): `A` 2.0, `B` 0.7." in text
    assert "Pairs within 2σ (not told apart by these seeds): none." in text
    assert rows["B"][8:] == ["1.500", "1.50x", "1200", "1.20x"]
    assert rows["A"][10] == "1000 (+200)"
    # One seed: no ±; no memory probe: "–".
    assert rows["C"][1] == "15.0" and rows["C"][10:] == ["–", "–"]
    # Per-class table: A's ring 10, 12, 14.
    assert "| `A` | 12.0 ± 2.0 |" in text
    assert "python tools/compare_methods.py" in text and "max_iter `500`" in text
    for path in plots:
        with open(path, "rb") as f:
            assert f.read(8) == PNG_SIGNATURE, path
        assert os.path.getsize(path) > 5000  # something was drawn
        assert f"]({os.path.basename(path)})" in text


@pytest.mark.slow
def test_end_to_end_two_iterations_slow(tmp_path):
    """The slow one (~40 s): one tiny config x 1 seed, 2 iterations, evaluated on the 40-image
    minival split, through d2ext.tools.compare_methods and d2ext.tools.train_net, run from a folder
    outside the checkout (configs found through the model zoo, runs started as modules)."""
    out = tmp_path / "cmp"
    cmd = [
        sys.executable,
        "-m",
        "d2ext.tools.compare_methods",
        "--configs",
        "atss_R_18_FPN_tiny",
        "--seeds",
        "1",
        "--max-iter",
        "2",
        "--eval-points",
        "0",
        "--rounds",
        "1",
        "--steps",
        "1",
        "--cores",
        "1",
        "--test-dataset",
        "d2ext_shapes_minival",
        "--out",
        str(out),
    ]
    env = dict(
        os.environ, PYTHONPATH=REPO_ROOT, DETECTRON2_DATASETS=os.path.join(REPO_ROOT, "datasets")
    )
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    result = json.load(open(out / "runs" / "atss_R_18_FPN_tiny" / "seed42" / "result.json"))
    assert set(result["final"]) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    assert len(result["per_class"]) == 5 and result["ap_curve"] == [[2, result["final"]["AP"]]]
    metrics = [
        json.loads(line)
        for line in open(out / "runs" / "atss_R_18_FPN_tiny" / "seed42" / "metrics.json")
    ]
    # train_net.py trained exactly the 2 planned iterations (0 and 1).
    assert max(m["iteration"] for m in metrics if "total_loss" in m) == 1
    memory = json.load(open(out / "memory" / "atss_R_18_FPN_tiny.json"))
    assert memory["peak_rss_mib"] > memory["rss_before_step_mib"] > 100
    report = open(out / "comparison.md").read()
    assert "| `atss_R_18_FPN_tiny` | 1 |" in report and "--max-iter 2" in report
    assert "Time it took: " in report and "1 cores" in report
    assert len(os.listdir(out / "invocations")) == 1


def test_plot_styles_are_distinct_for_many_configs():
    from d2ext.compare.plots import config_styles

    names = [f"config{i}" for i in range(25)]
    styles = config_styles(names)
    assert len({(tuple(s["color"]), s["marker"]) for s in styles.values()}) == 25
