"""training/train.py, tumortrace.evaluate and tumortrace.predict as a user runs them."""
import csv
import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

from conftest import PY, ROOT, TINY_TRAIN, run_cli

pytestmark = pytest.mark.slow


def test_train_writes_every_artifact(trained_model):
    names = {p.name for p in trained_model.iterdir()}
    assert {"config.json", "model.safetensors", "evaluation.json", "history.json", "split.json", "README.md",
            "roc.png", "confusion_matrix.png", "curves.png", "resume_state.pt"} <= names
    cfg = json.loads((trained_model / "config.json").read_text())
    assert cfg["modality"] == "synthetic" and cfg["classes"] == ["benign", "malignant"]
    ev = json.loads((trained_model / "evaluation.json").read_text())
    assert ev["positive_class"] == "malignant"
    assert ev["thresholds"]["validated"]["threshold"] == pytest.approx(cfg["threshold"])
    # the synthetic lesions are easy: a working pipeline separates them
    assert ev["thresholds"]["default_0.5"]["metrics"]["roc_auc"] >= 0.9
    assert ev["cam_peak_in_mask"]["malignant"]["n"] > 0
    assert sum(b["n"] for b in ev["calibration"]["bins"]) == ev["n_images"]
    card = (trained_model / "README.md").read_text()
    assert "not for diagnosis" in card and "synthetic" in card and "malignant" in card
    assert f"Brier score **{ev['calibration']['brier']:.3f}**" in card
    history = json.loads((trained_model / "history.json").read_text())
    assert history["epochs"] and history["summary"]["best_epoch"] >= 1
    assert history["summary"]["shipped_weights_max_prob_diff_vs_fp32"] <= 1e-3
    assert history["summary"]["validation_at_threshold"]["threshold"] == pytest.approx(cfg["threshold"])


def test_evaluate_cli_reproduces_test_metrics(trained_model, manifest_data):
    proc = run_cli("-m", "tumortrace.evaluate", "--model", str(trained_model), "--data", str(manifest_data),
                   "--bootstrap", "50", check=True)
    got = json.loads(proc.stdout)
    shipped = json.loads((trained_model / "evaluation.json").read_text())
    assert got["evaluated_on"].startswith("test split")
    for which in ("default_0.5", "validated"):
        for k in ("roc_auc", "recall", "specificity", "accuracy"):
            assert got["thresholds"][which]["metrics"][k] == pytest.approx(shipped["thresholds"][which]["metrics"][k])
        assert got["thresholds"][which]["metrics"]["confusion_matrix"] == \
            shipped["thresholds"][which]["metrics"]["confusion_matrix"]


def test_predict_cli_rows_and_bad_file(trained_model, manifest_data, tmp_path):
    good = sorted((manifest_data / "malignant" / "images").glob("*.png"))[:2]
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    proc = run_cli("-m", "tumortrace.predict", "--model", str(trained_model), *map(str, good), str(bad))
    assert proc.returncode == 1
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert [r["file"] for r in rows] == [*map(str, good), str(bad)]
    for r in rows[:2]:
        assert float(r["p_benign"]) + float(r["p_malignant"]) == pytest.approx(1, abs=1e-5)
        assert r["decision"] in ("benign", "malignant") and not r["error"]
    assert "not a recognised image" in rows[2]["error"] and "bad.png" in proc.stderr


def test_predict_cli_scores_the_frames_asked_for(trained_model, manifest_data, tmp_path):
    from hostile import write_case
    from tumortrace.checkpoint import load_model
    from tumortrace.images import load_image
    from tumortrace.inference import predict_image

    series = write_case(tmp_path, "multiframe.dcm")  # 3 frames that differ
    png = sorted((manifest_data / "benign" / "images").glob("*.png"))[0]
    every = run_cli("-m", "tumortrace.predict", "--model", str(trained_model), "--frame", "all", str(series), str(png))
    assert every.returncode == 0, every.stderr
    rows = list(csv.DictReader(io.StringIO(every.stdout)))
    assert [(r["file"], r["frame"]) for r in rows] == [(str(series), "1"), (str(series), "2"), (str(series), "3"),
                                                        (str(png), "1")]
    model = load_model(trained_model)
    for r in rows[:3]:
        expected = predict_image(model, load_image(series, frame=int(r["frame"]))).p_malignant
        assert float(r["p_malignant"]) == pytest.approx(expected, abs=1e-4)
    by_frame = {r["frame"]: r["p_malignant"] for r in rows[:3]}
    assert len(set(by_frame.values())) == 3
    second = run_cli("-m", "tumortrace.predict", "--model", str(trained_model), "--frame", "2", str(series), str(png))
    rows = list(csv.DictReader(io.StringIO(second.stdout)))
    assert second.returncode == 1 and rows[0]["p_malignant"] == by_frame["2"]
    assert rows[1]["error"] == "frame 2 was asked for, but the file has 1 frame"
    bad = run_cli("-m", "tumortrace.predict", "--model", str(trained_model), "--frame", "0", str(png))
    assert bad.returncode == 2 and "must be a frame number from 1, or all" in bad.stderr



@pytest.mark.parametrize("problem, message", [
    ("one_class", "no malignant images"),
    ("missing", "does not exist"),
    ("no_pretrained_file", "does not exist"),
    ("gpu_augment_without_gpu", "--augment-on gpu needs training on a CUDA GPU"),
    ("bad_fold", "--fold must be in 0..2"),
])
def test_train_bad_input_is_a_message_not_a_traceback(tmp_path, problem, message):
    from synthetic import write_class_folders
    data = tmp_path / "data"
    extra = []
    if problem == "one_class":
        write_class_folders(data, 4, class_names=("benign",))
    elif problem == "no_pretrained_file":
        write_class_folders(data, 4)
        extra = ["--pretrained-weights", str(tmp_path / "none.pth"), "--arch", "resnet18"]
    elif problem == "gpu_augment_without_gpu":
        write_class_folders(data, 4)
        extra = ["--augment-on", "gpu", "--device", "cpu"]
    elif problem == "bad_fold":
        write_class_folders(data, 4)
        extra = ["--folds", "3", "--fold", "3"]
    proc = run_cli("training/train.py", "--data", str(data), "--out", str(tmp_path / "o"), *extra)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_a_run_that_diverges_at_once_says_so_and_writes_no_model(manifest_data, tmp_path):
    """A learning rate of 1e8 makes the weights NaN in the first epoch: a message and exit 1, not sklearn's
    "Input contains NaN" traceback from the validation metrics, and no model from NaN weights."""
    out = tmp_path / "o"
    proc = run_cli("training/train.py", "--data", str(manifest_data), "--out", str(out), *TINY_TRAIN,
                   "--opt", "sgd", "--lr", "1e8")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "epoch 1: training diverged" in proc.stderr and "try a lower --lr (this run: 1e+08)" in proc.stderr
    assert "Traceback" not in proc.stderr and not (out / "model.safetensors").exists()


def test_a_run_that_diverges_later_keeps_its_best_epoch_and_says_so(manifest_data, tmp_path):
    """Epoch 2's training loss made NaN (the weights with it): the run stops there at once, ships epoch 1 as
    early stopping would, and the history and the card say why it stopped."""
    out = tmp_path / "o"
    code = f"""
import math, runpy, sys
import torch
import tumortrace.engine as engine
real = engine.train_one_epoch
def diverging(model, *args, **kwargs):
    stats = real(model, *args, **kwargs)
    if args[4] == 2:  # the epoch
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(math.nan)
        stats["train_loss"] = math.nan
    return stats
engine.train_one_epoch = diverging
sys.argv = ["training/train.py", "--data", {str(manifest_data)!r}, "--out", {str(out)!r}, *{TINY_TRAIN!r}]
runpy.run_path("training/train.py", run_name="__main__")
"""
    proc = run_cli("-c", code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ("epoch 2: training diverged (training loss nan); stopping with the best epoch so far (1)"
            in proc.stderr), proc.stderr[-3000:]
    assert "epoch 3" not in proc.stderr
    summary = json.loads((out / "history.json").read_text())["summary"]
    assert summary["diverged"] == {"epoch": 2, "reason": "training loss nan"} and summary["best_epoch"] == 1
    assert summary["epochs_run"] == 1
    assert "training diverged at epoch 2 (training loss nan)" in (out / "README.md").read_text()
    weights = _weights(out)
    assert all(bool(w.float().isfinite().all()) for w in weights.values())


def _weights(folder):
    return load_file(str(folder / "model.safetensors"))


def test_sigkill_mid_run_then_resume_equals_uninterrupted(manifest_data, tmp_path):
    args = ("--data", str(manifest_data), *TINY_TRAIN, "--epochs", "3", "--patience", "10", "--seed", "1")
    run_cli("training/train.py", *args, "--out", str(tmp_path / "straight"), check=True)
    killed = tmp_path / "killed"
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="2")
    proc = subprocess.Popen([PY, "training/train.py", *args, "--out", str(killed)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:  # kill as soon as the first epoch's state is on disk: mid-run, mid-epoch 2
        if "epoch 1:" in line:
            time.sleep(0.5)
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert (killed / "resume_state.pt").exists() and not (killed / "model.safetensors").exists()
    resumed = run_cli("training/train.py", *args, "--out", str(killed), "--resume", check=True)
    assert "resumed from" in resumed.stderr
    a, b = _weights(tmp_path / "straight"), _weights(killed)
    assert a.keys() == b.keys()
    assert all((a[k].float() - b[k].float()).abs().max() == 0 for k in a)


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_cpu_processes(manifest_data, tmp_path):
    out = tmp_path / "ddp"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           f"--master_port={_free_port()}", "--master_addr=127.0.0.1",
                           "training/train.py", "--data", str(manifest_data), "--out", str(out), *TINY_TRAIN,
                           "--epochs", "2", "--device", "cpu", "--threads", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "model.safetensors").exists() and (out / "evaluation.json").exists()
    assert proc.stderr.count("epoch 1:") == 1  # only rank 0 logs/writes
    # both ranks trained one model: rank 0 wrote it, and its evaluation ran once
    assert proc.stderr.count("test (positive = malignant)") == 1 and proc.stderr.count("; Brier score ") == 1


def test_skip_test_leaves_test_split_untouched_until_evaluate_write(manifest_data, tmp_path):
    out = tmp_path / "selection"
    run_cli("training/train.py", "--data", str(manifest_data), "--out", str(out), *TINY_TRAIN, "--epochs", "2",
            "--skip-test", "--folds", "3", "--fold", "1", check=True)
    assert json.loads((out / "split.json").read_text())["fold"] == 1
    assert (out / "model.safetensors").exists() and (out / "split.json").exists()
    assert not (out / "evaluation.json").exists() and not (out / "README.md").exists()
    summary = json.loads((out / "history.json").read_text())["summary"]
    assert 0 <= summary["validation_auc"] <= 1 and "recall" in summary["validation_at_threshold"]

    refused = run_cli("-m", "tumortrace.evaluate", "--model", str(out), "--data", str(manifest_data),
                      "--split", "all", "--write", "--bootstrap", "20")
    assert refused.returncode == 2 and "needs the model's test split" in refused.stderr
    assert not (out / "evaluation.json").exists()

    val = run_cli("-m", "tumortrace.evaluate", "--model", str(out), "--data", str(manifest_data), "--split", "val",
                  "--bootstrap", "20", "--per-image", check=True)
    val_keys = [row["image"] for row in json.loads((out / "split.json").read_text())["val"]]
    assert sorted(r["image"] for r in json.loads(val.stdout)["per_image"]) == sorted(val_keys)
    assert not (out / "evaluation.json").exists()

    run_cli("-m", "tumortrace.evaluate", "--model", str(out), "--data", str(manifest_data), "--write",
            "--bootstrap", "20", check=True)
    ev = json.loads((out / "evaluation.json").read_text())
    test_keys = [row["image"] for row in json.loads((out / "split.json").read_text())["test"]]
    assert sorted(r["image"] for r in ev["per_image"]) == sorted(test_keys)
    assert {"roc.png", "confusion_matrix.png", "README.md"} <= {p.name for p in out.iterdir()}
    assert "not for diagnosis" in (out / "README.md").read_text()


def test_pack_dataset_gives_training_bit_identical_images_and_split(manifest_data, tmp_path):
    from tumortrace.data import decode_all, discover
    from tumortrace.split import assign_splits

    packed = tmp_path / "packed"
    run_cli("training/pack_dataset.py", "--data", str(manifest_data), "--image-size", "48", "--out", str(packed),
            check=True)
    original, samples = decode_all(discover(manifest_data), 48)
    copy, copied = decode_all(discover(packed), 48)
    assert [s.key(manifest_data) for s in samples] == [s.key(packed) for s in copied]
    assert [s.label for s in samples] == [s.label for s in copied]
    assert [s.group for s in samples] == [s.group for s in copied]
    assert (original == copy).all()
    assert sum(s.mask is not None for s in copied) == sum(s.mask is not None for s in samples) > 0
    assert assign_splits(samples, (0.6, 0.2, 0.2), 3) == assign_splits(copied, (0.6, 0.2, 0.2), 3)


def test_torchrun_with_skip_test_ends_on_every_rank(manifest_data, tmp_path):
    out = tmp_path / "ddp_select"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           f"--master_port={_free_port()}", "--master_addr=127.0.0.1",
                           "training/train.py", "--data", str(manifest_data), "--out", str(out), *TINY_TRAIN,
                           "--epochs", "1", "--device", "cpu", "--threads", "1", "--skip-test"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]  # rank 0 waits at the final barrier with the others
    assert (out / "model.safetensors").exists() and not (out / "evaluation.json").exists()
    assert proc.stderr.count("--skip-test: validation") == 1


def test_caliper_check_compares_as_is_and_painted_on_the_validation_split(trained_model, manifest_data, tmp_path):
    out = tmp_path / "calipers.json"
    proc = run_cli("training/caliper_check.py", "--model", str(trained_model), "--data", str(manifest_data),
                   "--out", str(out), check=True)
    n_val = len(json.loads((trained_model / "split.json").read_text())["val"])
    assert f"val split from split.json ({n_val} of {n_val} images)" in proc.stdout
    assert "| ROC-AUC |" in proc.stdout and "CAM peak in lesion" in proc.stdout
    result = json.loads(out.read_text())
    assert result["summary"]["n"] == len(result["per_image"]) == n_val
    for row in result["per_image"]:
        if row["mark_pixels"] == 0:  # nothing painted: the model must see the identical slice
            assert row["p_as_is"] == row["p_painted"]
        assert "peak_in_lesion_as_is" in row  # every synthetic slice has a lesion mask


def test_train_throughput_benchmark_prints_its_table():
    out = run_cli("benchmarks/train_throughput.py", "--device", "cpu", "--archs", "resnet18", "--image-size", "32",
                  "--batch-sizes", "4", "--images", "16", check=True).stdout
    host = [line for line in out.splitlines() if line.startswith("GPU augmentation, CPU work per batch")]
    assert len(host) == 1 and float(host[0].split("batch 4: ")[1].split(" ms")[0]) > 0, out
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| resnet18 |")]
    assert [r[1].strip() for r in rows] == ["0", "2"], out  # loader workers
    for _, _, images_per_s, wait in rows:
        assert float(images_per_s) > 0 and 0 <= float(wait.strip().rstrip("%")) <= 100, out


def test_side_stream_ab_runs_training_and_refuses_another_mode(manifest_data, tmp_path):
    # The A/B itself needs a CUDA GPU (benchmarks/HISTORY.md); here: the mode is taken off and the rest reaches
    # training/train.py intact, so the script still runs when someone reruns the figures.
    out = run_cli("benchmarks/side_stream_ab.py", "side", "--data", str(manifest_data), "--out", str(tmp_path / "ab"),
                  "--arch", "resnet18", "--no-pretrained", "--image-size", "32", "--batch-size", "8",
                  "--epochs", "1", "--skip-test", "--no-progress", "--augment-on", "cpu", check=True)
    assert "epoch 1: train loss" in out.stderr and (tmp_path / "ab" / "model.safetensors").exists(), out.stderr[-2000:]
    refused = run_cli("benchmarks/side_stream_ab.py", "fast", "--data", str(manifest_data))
    assert refused.returncode != 0 and "plain" in refused.stderr and "side" in refused.stderr
