"""``fpisa train``: the experiment runs end to end and writes what it promises."""

import csv
import json

import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch==2.13.0)")
pytestmark = pytest.mark.torch

from fpisa.cli import main  # noqa: E402
from fpisa.torch.train import TrainConfig, build_model, load_dataset, run_training  # noqa: E402


def test_train_cli_writes_json_csv_and_plot(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--dataset", "synthetic", "--model", "cnn", "--workers", "2", "--mode", "float32",
                 "fpisa-a", "--epochs", "2", "--seed", "0", "1", "--batch-size", "256", "--quiet",
                 "--out", str(out)])
    assert code == 0
    report = json.loads((out / "results.json").read_text())
    assert [(r["mode"], r["seed"]) for r in report["runs"]] == [
        ("float32", 0), ("fpisa-a", 0), ("float32", 1), ("fpisa-a", 1)]
    for run in report["runs"]:
        assert [e["epoch"] for e in run["epochs"]] == [1, 2] and run["failed"] is None
        assert 0.0 <= run["final_test_accuracy"] <= 1.0
        assert run["aggregation"]["elements"] == run["parameters"] * run["epochs"][-1]["steps"]
    fpisa_a = [r for r in report["runs"] if r["mode"] == "fpisa-a"]
    assert all(r["aggregation"]["bit_exact_fraction"] < 1.0 for r in fpisa_a)
    assert report["command"].startswith("fpisa train --dataset synthetic --model cnn --workers 2")
    with open(out / "epochs.csv") as f:
        assert len(list(csv.DictReader(f))) == 4 * 2
    with open(out / "summary.csv") as f:
        assert [r["mode"] for r in csv.DictReader(f)] == ["float32", "fpisa-a"]
    assert (out / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| fpisa-a |" in (out / "summary.md").read_text()
    assert "| float32 |" in capsys.readouterr().out


def test_same_seed_same_start_and_reproducible_results():
    config = TrainConfig(dataset="synthetic", workers=4, modes=("fpisa",), seeds=(3,), epochs=1,
                         batch_size=512, synthetic_samples=1000)
    a, b = run_training(config, progress=False), run_training(config, progress=False)
    assert a["runs"][0]["epochs"][0]["test_loss"] == b["runs"][0]["epochs"][0]["test_loss"]
    m1, m2 = build_model("mlp", 3), build_model("mlp", 3)
    assert all(torch.equal(p, q) for p, q in zip(m1.parameters(), m2.parameters()))


def test_datasets_need_no_download_and_are_fixed():
    x, y, xt, yt = load_dataset("digits")
    assert x.shape[1] == 64 and len(x) + len(xt) == 1797 and set(y.tolist()) == set(range(10))
    s1, s2 = load_dataset("synthetic", synthetic_samples=500), load_dataset("synthetic", synthetic_samples=500)
    assert all(torch.equal(u, v) for u, v in zip(s1, s2))
    assert set(s1[1].tolist()) == set(range(10))


@pytest.mark.parametrize("argv", [
    ["train", "--workers", "0"],
    ["train", "--workers", "8", "--batch-size", "4"],
    ["train", "--epochs", "0"],
    ["train", "--mode", "fpisa", "fpisa"],
])
def test_bad_configuration_exits_2(argv, tmp_path, capsys):
    assert main(argv + ["--quiet", "--out", str(tmp_path)]) == 2
    assert "train:" in capsys.readouterr().err
