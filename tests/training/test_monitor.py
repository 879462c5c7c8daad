"""Tests for qa_scale.monitor: exact file contents, TensorBoard read-back, the plot, FLOP maths."""

from __future__ import annotations

import logging
import math
import sys

import matplotlib.image
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from qa_scale.common.progress import progress
from qa_scale.training import flops, monitor
from qa_scale.training.flops import Throughput, encoder_flops_per_token, mfu, peak_flops
from qa_scale.training.monitor import Monitor, format_metrics, plot_loss_curve


def _log_run(mon: Monitor) -> None:
    """A short run: a NaN loss, a dev row, and a key (grad_norm) that first appears late."""
    mon.log(1, {"loss": 2.5, "lr": 1e-4})
    mon.log(2, {"loss": float("nan"), "lr": 1e-4})
    mon.log(2, {"em": 50.0, "f1": 62.5}, prefix="dev")
    mon.log(3, {"loss": torch.tensor(1.25), "lr": 5e-5, "grad_norm": 0.5})


def test_jsonl_and_csv_contents_exact(tmp_path):
    with Monitor(tmp_path, tensorboard=False) as mon:
        _log_run(mon)
    assert (tmp_path / "metrics.jsonl").read_text().splitlines() == [
        '{"step": 1, "split": "train", "loss": 2.5, "lr": 0.0001}',
        '{"step": 2, "split": "train", "loss": null, "lr": 0.0001}',
        '{"step": 2, "split": "dev", "em": 50.0, "f1": 62.5}',
        '{"step": 3, "split": "train", "loss": 1.25, "lr": 5e-05, "grad_norm": 0.5}',
    ]
    assert (tmp_path / "metrics.csv").read_bytes().decode() == (
        "step,split,loss,lr,em,f1,grad_norm\n"
        "1,train,2.5,0.0001,,,\n"
        "2,train,,0.0001,,,\n"
        "2,dev,,,50.0,62.5,\n"
        "3,train,1.25,5e-05,,,0.5\n"
    )
    assert not (tmp_path / "tensorboard").exists()


def test_resumed_monitor_appends_and_repairs_a_torn_line(tmp_path):
    with Monitor(tmp_path, tensorboard=False) as mon:
        mon.log(1, {"loss": 2.0})
    with open(tmp_path / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 2, "spl')  # killed mid-write
    with Monitor(tmp_path, tensorboard=False) as mon:
        mon.log(2, {"loss": 1.5})
        mon.log(3, {"loss": 1.0, "acc": 0.75})
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert lines[0] == '{"step": 1, "split": "train", "loss": 2.0}'
    assert lines[2:] == [
        '{"step": 2, "split": "train", "loss": 1.5}',
        '{"step": 3, "split": "train", "loss": 1.0, "acc": 0.75}',
    ]
    assert (tmp_path / "metrics.csv").read_bytes().decode() == (
        "step,split,loss,acc\n1,train,2.0,\n2,train,1.5,\n3,train,1.0,0.75\n"
    )


def test_bad_metrics_are_rejected(tmp_path):
    mon = Monitor(tmp_path, tensorboard=False)
    with pytest.raises(ValueError, match="reserved"):
        mon.log(1, {"step": 3})
    with pytest.raises(TypeError, match="'name'"):
        mon.log(1, {"name": "bert"})


def test_disabled_monitor_writes_nothing(tmp_path):
    with Monitor(tmp_path / "run", enabled=False) as mon:
        _log_run(mon)
        assert mon.console(3, {"loss": 1.0}) == "step 3 | loss 1"
    mon.close()
    assert list(tmp_path.iterdir()) == []


def test_loss_curve_png_is_valid(tmp_path):
    with Monitor(tmp_path, tensorboard=False) as mon:
        for step in range(1, 201):
            mon.log(step, {"loss": 3.0 / math.sqrt(step) + 0.2 * math.sin(step)})
            if step % 50 == 0:
                mon.log(step, {"loss": 1.0, "em": 40 + step / 10, "f1": 55 + step / 10}, prefix="dev")
    png = tmp_path / "loss_curve.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = matplotlib.image.imread(png)
    assert pixels.shape == (840, 960, 4)  # 8 x 7 inches at 120 dpi: two stacked panels
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loss_curve.png", "metrics.csv", "metrics.jsonl"]
    with Image.open(png) as img:  # Pillow: a dependency of matplotlib
        img.verify()


def test_plot_loss_curve_alone(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"step": 1, "split": "train", "loss": 1.0}\n')
    assert plot_loss_curve(tmp_path / "m.jsonl", tmp_path / "out" / "c.png") == tmp_path / "out" / "c.png"
    assert (tmp_path / "out" / "c.png").read_bytes()[:4] == b"\x89PNG"
    (tmp_path / "empty.jsonl").write_text('{"step": 1, "split": "train", "loss": null}\n')
    assert plot_loss_curve(tmp_path / "empty.jsonl", tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_tensorboard_scalars_read_back(tmp_path):
    with Monitor(tmp_path) as mon:
        _log_run(mon)
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert set(acc.Tags()["scalars"]) == {"train/loss", "train/lr", "train/grad_norm", "dev/em", "dev/f1"}

    def scalars(tag):
        return [(e.step, e.value) for e in acc.Scalars(tag)]

    assert scalars("train/loss") == [(1, 2.5), (3, 1.25)]  # the NaN at step 2 is skipped
    assert scalars("dev/f1") == [(2, 62.5)]
    assert scalars("train/lr") == [(1, pytest.approx(1e-4)), (2, pytest.approx(1e-4)), (3, pytest.approx(5e-5))]


def test_missing_tensorboard_warns_once_and_continues(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # makes the import fail
    monkeypatch.setattr(monitor, "_warned_no_tensorboard", False)
    with caplog.at_level(logging.WARNING, logger="qa_scale.training.monitor"):
        for run in ("a", "b"):
            with Monitor(tmp_path / run) as mon:
                mon.log(1, {"loss": 1.0})
                mon.log(2, {"loss": 0.5})
    assert [r.message.startswith("TensorBoard logging off") for r in caplog.records] == [True]
    assert len((tmp_path / "b" / "metrics.jsonl").read_text().splitlines()) == 2
    assert not (tmp_path / "a" / "tensorboard").exists()


def test_console_line():
    line = format_metrics(1234, {
        "loss": 1.23456, "acc": 0.51, "lr": 2e-5, "tokens_per_s": 1234.4,
        "samples_per_s": 9.876, "mfu": 0.4123, "grad_norm": float("nan"), "em": None, "skipped": 3,
    })
    assert line == ("step 1,234 | loss 1.235 | acc 0.51 | lr 2.0e-05 | 1,234 tok/s | 9.876 samples/s"
                    " | mfu 41.2% | grad_norm nan | em n/a | skipped 3")
    assert format_metrics(0, {"lr": 0.0, "tiny": 3e-7, "big": 123456.7}) == "step 0 | lr 0.0e+00 | tiny 3.0e-07 | big 123,457"


def test_encoder_flops_hand_example():
    # N = 1000, 2 layers, width 8, 16 tokens: 2·1000 + 4·2·16·8 = 2000 + 1024 per token forward.
    assert encoder_flops_per_token(1000, 2, 8, 16, training=False) == 3024.0
    assert encoder_flops_per_token(1000, 2, 8, 16) == 9072.0
    # BERT-large-like (Chinese RoBERTa-wwm-ext-large): matches PaLM's 6N + 12·L·H·Q·T.
    n, layers, hidden, seq = 302_000_000, 24, 1024, 512
    assert encoder_flops_per_token(n, layers, hidden, seq) == 6 * n + 12 * layers * hidden * seq


@pytest.mark.parametrize("name, dtype, expected", [
    ("NVIDIA H100 80GB HBM3", "bf16", 989e12),
    ("NVIDIA H100 PCIe", "fp16", 756e12),
    ("NVIDIA H100 NVL", "bf16", None),
    ("NVIDIA H200", "bfloat16", 989e12),
    ("NVIDIA GH200 480GB", "bf16", 989e12),
    ("NVIDIA A100-SXM4-80GB", torch.bfloat16, 312e12),
    ("NVIDIA A100 80GB PCIe", "fp16", 312e12),
    ("NVIDIA A800-SXM4-80GB", "bf16", 312e12),
    ("NVIDIA L40S", "bf16", 362e12),
    ("NVIDIA L4", "bf16", 121e12),
    ("NVIDIA A10", "fp16", 125e12),
    ("NVIDIA A10G", "fp16", None),
    ("NVIDIA GeForce RTX 4090", "float16", 165e12),
    ("NVIDIA GeForce RTX 4090 D", "bf16", None),
    ("Tesla V100-SXM2-32GB", "fp16", 125e12),
    ("Tesla V100-PCIE-16GB", "fp16", 112e12),
    ("Tesla V100-SXM2-32GB", "bf16", None),
    ("NVIDIA H100 80GB HBM3", "fp32", None),
    ("NVIDIA GeForce GTX 1080", "fp16", None),
    ("", "bf16", None),
])
def test_peak_flops(name, dtype, expected):
    assert peak_flops(name, dtype) == expected


def test_mfu():
    assert mfu(2000.0, 3e9, 1e13) == pytest.approx(0.6)
    assert mfu(2000.0, 3e9, None) is None


def test_throughput_with_fake_clock():
    now = [100.0]
    meter = Throughput(clock=lambda: now[0])
    meter.update(samples=8, tokens=4096)
    meter.update(samples=8, tokens=4096)
    now[0] = 102.0
    assert meter.rates() == {"samples_per_s": 8.0, "tokens_per_s": 4096.0}
    meter.update(samples=4, tokens=100)
    now[0] = 102.5
    assert meter.rates() == {"samples_per_s": 8.0, "tokens_per_s": 200.0}  # counted from the last call
    assert meter.rates() == {"samples_per_s": 0.0, "tokens_per_s": 0.0}  # no time passed


def test_throughput_default_clock_is_patchable(monkeypatch):
    ticks = iter([10.0, 14.0])
    monkeypatch.setattr(flops.time, "perf_counter", lambda: next(ticks))
    meter = Throughput()
    meter.update(2, 40)
    assert meter.rates() == {"samples_per_s": 0.5, "tokens_per_s": 10.0}


def test_progress_disabled_is_silent(capsys):
    bar = progress(10, enabled=False, desc="train")
    bar.update(3)
    bar.set_postfix_str("loss 1.0")
    bar.close()
    assert capsys.readouterr() == ("", "")
    bar = progress(2, enabled=True, desc="train")
    bar.update(2)
    bar.close()
    assert "train" in capsys.readouterr().err
