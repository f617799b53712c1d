"""bf16 where it pays (dreamer/precision.py): float32 on a CPU without native bf16, unless forced; bf16 elsewhere."""

import logging

import pytest
import torch

from dreamer import precision


@pytest.fixture
def no_native_bf16(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    monkeypatch.delenv(precision.FORCE_ENV, raising=False)
    monkeypatch.setattr(precision, "_warned", set())


def test_a_cpu_without_native_bf16_runs_float32_and_says_so_once_naming_the_key(no_native_bf16, caplog):
    with caplog.at_level(logging.WARNING, logger="dreamer.precision"):
        assert not precision.use_bf16(True, "cpu", "phase1.bf16")
        assert not precision.use_bf16(True, torch.device("cpu"), "phase1.bf16")
        with precision.autocast(True, "cpu", "phase1.bf16"):
            assert not torch.is_autocast_enabled("cpu")
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "phase1.bf16=true" in warnings[0].getMessage()
    assert "DREAMER_CPU_BF16=1" in warnings[0].getMessage()


def test_forced_or_native_or_off_the_cpu_bf16_autocast_is_on(no_native_bf16, monkeypatch):
    assert precision.use_bf16(True, "cuda", "phase3.bf16")  # a GPU: as asked
    assert not precision.use_bf16(False, "cuda", "phase3.bf16")
    monkeypatch.setenv(precision.FORCE_ENV, "1")
    with precision.autocast(True, "cpu", "phase1.bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    monkeypatch.delenv(precision.FORCE_ENV)
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert precision.use_bf16(True, "cpu", "tokenizer.bf16")


def test_the_phase_autocast_of_the_runtime_follows_the_rule(no_native_bf16, tmp_path):
    from dreamer.training.runtime import Runtime

    rt = Runtime(cfg=None, run_dir=tmp_path, device=torch.device("cpu"), phase="phase1")
    with rt.autocast(True):
        assert not torch.is_autocast_enabled("cpu")
    with rt.autocast(False):
        assert not torch.is_autocast_enabled("cpu")
