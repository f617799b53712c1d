"""The report itself, the compact periodic run, and checks easiest to test on their own."""

from __future__ import annotations

import math

import pytest
import torch
from diag_fixtures import make_batch, make_dynamics, phase1_setup

from diagnostics import FAIL, OK, WARN, Check, Report, diagnose_periodic, diagnose_phase
from diagnostics.data_checks import check_tokenizer
from diagnostics.modules import check_devices
from diagnostics.phase3 import latent_drift


def test_report_table_scalars_and_crashing_checks():
    r = Report(1, "cpu")
    r.add(Check("a/ok", OK, 1.5, "> 1"), Check("a/warn", WARN, "x", "y", "look here"))
    r.run("a/crash", lambda: 1 / 0)
    assert r.failed and r.failed_names() == ["a/crash"] and r.warned_names() == ["a/warn"]
    assert "ZeroDivisionError" in r.get("a/crash").hint
    table = r.table()
    assert table.splitlines()[0] == "diagnose_phase(1) on cpu: 1 ok, 1 warn, 1 fail"
    assert "FAIL    a/crash" in table and "-> look here" in table
    assert r.scalars() == {"count/ok": 1.0, "count/warn": 1.0, "count/fail": 1.0, "a/ok": 1.5}
    with pytest.raises(ValueError, match="status"):
        Check("bad", "error", 0, "")
    with pytest.raises(KeyError, match="a/ok"):
        r.get("missing")


def test_unknown_phase_input_is_refused():
    models, _ = phase1_setup()
    with pytest.raises(TypeError, match="advantages"):
        diagnose_phase(1, models, make_batch(), "cpu", advantages=torch.zeros(2, 2))
    with pytest.raises(TypeError, match="advantagez"):
        diagnose_phase(3, models, make_batch(), "cpu", advantagez=torch.zeros(2, 2))


def test_missing_model_and_batch_key_fail_clearly():
    models, _ = phase1_setup()
    batch = make_batch()
    del batch["continues"]
    report = diagnose_phase(2, models, batch, "cpu")
    assert "lacks ['agent']" in report.get("model_dict/required").hint
    assert "lacks ['continues']" in report.get("batch/keys").hint
    assert not any(c.name.startswith("grad_audit/loss") for c in report.checks)  # nothing to audit


def test_module_on_the_wrong_device():
    dyn = make_dynamics()
    dyn.latent_out.to("meta")
    checks = {c.name: c for c in check_devices({"dynamics": dyn}, make_batch(), torch.device("cpu"))}
    assert checks["device/dynamics"].status == FAIL
    assert "dynamics.latent_out.weight" in checks["device/dynamics"].value
    assert ".to('cpu')" in checks["device/dynamics"].hint
    assert checks["device/batch"].status == OK


def test_tokenizer_with_the_diffusers_latent_count_fails():
    class FloorTokenizer:  # what AutoencoderKLCosmos alone returns: 1 + floor(T/S) latents
        S, num_tokens, channels = 8, 16, 16

        def encode(self, frames):
            return torch.randn(frames.shape[0], 1 + frames.shape[1] // self.S, self.num_tokens, self.channels)

    checks = {c.name: c for c in check_tokenizer(FloorTokenizer(), make_batch())}
    assert checks["tokenizer/output_shape"].status == FAIL
    assert "1 + ceil((T-1)/S)" in checks["tokenizer/output_shape"].hint
    assert checks["tokenizer/matches_batch"].status == OK


def test_latent_drift_measures_scale_and_shift():
    data = torch.randn(8, 6, 16, 4)
    assert float(latent_drift(data[:, :3], data).max()) < 0.3
    scaled = latent_drift(torch.randn(8, 3, 16, 4) * torch.tensor([1.0, 3.0, 10.0]).view(1, 3, 1, 1), data)
    assert scaled[2] > scaled[1] > scaled[0] and math.isclose(float(scaled[2]), math.log(10), rel_tol=0.2)
    assert math.isclose(float(latent_drift(data[:, :3] + 2.0, data).min()), 2.0, rel_tol=0.2)


class FakeRuntime:
    device = torch.device("cpu")

    def __init__(self):
        self.logged = []

    def scalars(self, step, values, prefix=""):
        self.logged.append((step, {prefix + k: v for k, v in values.items()}))


def test_periodic_compact_run_goes_to_tensorboard():
    models, opt = phase1_setup()
    rt = FakeRuntime()
    report = diagnose_periodic(rt, 250, 1, models, make_batch(), optimizer=opt)
    assert not report.failed, report.table()
    step, values = rt.logged[0]
    assert step == 250 and values["train/phase1/diagnostics/count/fail"] == 0.0  # train/<phase>/diagnostics/
    assert "train/phase1/diagnostics/phase1/grad_norm" in values and "train/phase1/diagnostics/grad_audit/loss" in values
    assert not any(c.name.startswith("tokenizer/output") for c in report.checks)  # compact: no encode


def test_time_alignment_warns_of_latents_that_lag_their_frames():
    """S = 1: every frame alone passes; a causal window of 2 frames (latent k answering mostly to frame k-1) warns
    and says which key fixes it."""
    from dreamer.tokenizer import CosmosTokenizerWrapper, TokenizerConfig

    for m, status in ((0, OK), (1, WARN)):
        torch.manual_seed(0)
        tok = CosmosTokenizerWrapper(cfg=TokenizerConfig(preset="tiny", resolution=64, pool=2, temporal_compression=1,
                                                         window_latents=m))
        check = {c.name: c for c in check_tokenizer(tok, make_batch())}["tokenizer/time_alignment"]
        assert check.status == status, check
    assert "tokenizer.window_latents=0" in check.hint
