"""``plus-ultra bench profile`` and the profiling library under it, on CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from market_nn_plus_ultra.cli.main import app
from market_nn_plus_ultra.config import ModelConfig
from market_nn_plus_ultra.models import build_model, count_parameters, estimate_flops
from market_nn_plus_ultra.models.profiling import (
    measure_matmul_peak,
    profile_backbone,
    resolve_device,
    with_peak,
)

TINY = ["--d-model", "32", "--depth", "2", "--set", "model.n_heads=4", "--set", "model.dropout=0"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # tiny models: a second intra-op thread only adds contention on a shared 2-core box
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _run(*args: str) -> tuple[int, str]:
    """Exit code and the output with line wrapping undone."""
    result = CliRunner().invoke(app, ["bench", "profile", *args])
    return result.exit_code, " ".join(result.output.split())


def test_profile_prints_the_figures_and_writes_them(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    result = _run(
        "--architecture", "omni_mixture", "--seq-len", "24", "--batch-size", "3",
        "--features", "5", "--steps", "2", "--warmup", "1", "--device", "cpu",
        "--peak-tflops", "0.5", "--out", str(out), *TINY,
    )  # fmt: skip
    code, text = result
    assert code == 0, text
    for label in ("parameters", "GFLOPs / sample", "samples / s", "peak memory", "MFU"):
        assert label in text
    figures = json.loads(out.read_text())
    cfg = ModelConfig(architecture="omni_mixture", d_model=32, depth=2, n_heads=4, dropout=0)
    assert figures["parameters"] == count_parameters(build_model(cfg, 5))
    assert figures["flops_per_sample"] == estimate_flops(cfg, 5, 24)
    assert (figures["device"], figures["dtype"], figures["compiled"]) == ("cpu", "fp32", False)
    assert figures["samples_per_s"] == pytest.approx(3 / figures["seconds_per_step"])
    achieved = figures["flops_per_sample"] * figures["samples_per_s"] / 1e12
    assert figures["achieved_tflops"] == pytest.approx(achieved)
    assert figures["mfu"] == pytest.approx(achieved / 0.5)
    assert f"{figures['parameters']:,}" in text


def test_profile_unknown_architecture_names_the_fix() -> None:
    result = _run("--architecture", "omni_mixtur", "--steps", "1", *TINY)
    assert result[0] == 2 and "did you mean 'omni_mixture'" in result[1]


def test_profile_rejects_a_bad_dtype() -> None:
    result = _run("--dtype", "fp8", *TINY)
    assert result[0] == 2 and "--dtype 'fp8'" in result[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without a GPU")
def test_cuda_without_a_gpu_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no CUDA device"):
        resolve_device("cuda")
    result = _run("--device", "cuda", "--steps", "1", *TINY)
    assert result[0] == 2 and "--device cpu or auto" in result[1]


def test_matmul_peak_is_a_plausible_rate() -> None:
    tflops = measure_matmul_peak("cpu", "fp32", size=256)
    assert 1e-4 < tflops < 50.0  # from a slow shared core to a large server, fp32


def test_cpu_peak_memory_covers_weights_gradients_and_adam_state() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(architecture="state_space", d_model=256, depth=2, n_heads=4, dropout=0)
    r = profile_backbone(
        cfg, seq_len=8, batch_size=2, n_features=4, steps=1, warmup=0, device="cpu"
    )
    state_mb = 4 * r.parameters * 4 / 1024**2  # weights, grads, exp_avg, exp_avg_sq (fp32)
    assert r.peak_memory_mb >= 0.9 * state_mb
    assert r.mfu is None and r.peak_tflops is None
    assert with_peak(r, 2.0).mfu == pytest.approx(r.achieved_tflops / 2.0)


def test_a_failing_torch_compile_is_reported_and_timed_eager(monkeypatch) -> None:
    class _Broken(torch.nn.Module):
        def forward(self, *args: object) -> None:
            raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(torch, "compile", lambda model: _Broken())
    cfg = ModelConfig(architecture="state_space", d_model=16, depth=1, n_heads=2, dropout=0)
    r = profile_backbone(
        cfg, seq_len=8, batch_size=2, n_features=3, steps=1, warmup=0, device="cpu", compile=True
    )
    assert not r.compiled
    assert "torch.compile failed (RuntimeError: no C++ compiler found); ran eager" in r.note
    assert r.samples_per_s > 0


def test_checkpointing_flag_reaches_the_model(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    code, text = _run(
        "--architecture", "state_space", "--seq-len", "8", "--batch-size", "2",
        "--features", "3", "--steps", "1", "--warmup", "0", "--device", "cpu",
        "--checkpointing", "--no-measure-peak", "--out", str(out), *TINY,
    )  # fmt: skip
    assert code == 0, text
    figures = json.loads(out.read_text())
    assert figures["activation_checkpointing"] is True
    assert figures["mfu"] is None and "MFU │ -" in text.replace("  ", "")
