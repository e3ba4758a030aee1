"""The command line on the tiny preset, the report, and resume after kill -9."""

import os
import subprocess
import sys

import pytest
from helpers import kill_once_rows_appear, stored_rows

from gradaudit.report import write_report
from gradaudit.store import Store

pytestmark = pytest.mark.slow


def gradaudit(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "gradaudit", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kwargs)


def test_tiny_audit_writes_a_report_and_resumes_after_kill_9(tmp_path):
    out = tmp_path / "run"
    args = ["audit", "--preset", "tiny", "--out", str(out), "--fractions", "0.05,0.1,0.2,0.3", "--repeats", "2"]
    first = gradaudit(*args)
    store = out / "results.sqlite"
    before = kill_once_rows_appear(first, store)
    cells = 3 * 4 * 2 * 4                              # methods x fractions x repeats x (2 seeds x 2 regimes)
    assert 0 < len(before) < cells
    second = gradaudit(*args)
    output, _ = second.communicate(timeout=600)
    assert second.returncode == 0, output
    after = stored_rows(store)
    assert after[:len(before)] == before              # nothing recomputed, nothing lost
    assert len(after) == len({k for k, _ in after}) == cells   # complete, no duplicates
    assert "Signal mass of Saliency" in output and "report:" in output
    page = (out / "report.html").read_text()
    assert "DiffROAR" in page and "data:image/png;base64," in page and "<script" not in page
    assert (out / "models" / "robust-1.pt").exists() and (out / "models" / "standard-top-0.pt").exists()


def test_report_escapes_user_strings_and_rebuilds_from_the_store(tmp_path):
    store = Store(tmp_path / "results.sqlite")
    store.put("signal_mass", {"model": "standard", "method": "<script>alert(1)</script>"},
              {"signal_mass": 0.6, "top_in_signal": 0.7})
    store.close()
    page = write_report(tmp_path).read_text()
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    result = subprocess.run([sys.executable, "-m", "gradaudit", "report", str(tmp_path)], capture_output=True,
                            text=True)
    assert result.returncode == 0 and "report.html" in result.stdout


def test_cli_errors_are_clear(tmp_path):
    result = subprocess.run([sys.executable, "-m", "gradaudit", "report", str(tmp_path / "none")],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "has no results.sqlite" in result.stderr
    result = subprocess.run([sys.executable, "-m", "gradaudit", "audit", "--preset", "huge"], capture_output=True,
                            text=True)
    assert result.returncode == 2 and "preset must be one of quick, paper, tiny, synthetic" in result.stderr
    result = subprocess.run([sys.executable, "-m", "gradaudit", "audit", "--preset", "synthetic", "--repeats", "3"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "preset 'synthetic' has no setting 'repeats'" in result.stderr
    result = subprocess.run([sys.executable, "-m", "gradaudit", "audit", "--preset", "tiny", "--fill", "grey"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "--fill must be a number, mean or road; got 'grey'" in result.stderr
    for setting in ("--seeds-per-model", "--repeats"):
        result = subprocess.run([sys.executable, "-m", "gradaudit", "audit", "--preset", "tiny", setting, "0"],
                                capture_output=True, text=True)
        assert result.returncode == 2 and f"{setting[2:]} must be an integer >= 1, got 0" in result.stderr
        assert result.stderr.count("\n") == 1
    result = subprocess.run([sys.executable, "-m", "gradaudit", "audit", "--preset", "tiny", "--methods", "magic"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "unknown method 'magic'" in result.stderr
    result = subprocess.run([sys.executable, "-m", "gradaudit", "audit", "--preset", "tiny", "--recipe", "speed=9"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "--recipe: unknown training setting 'speed'" in result.stderr


def test_only_bad_input_becomes_one_line_and_a_bug_keeps_its_traceback(monkeypatch, tmp_path, capsys):
    from gradaudit import cli
    from gradaudit.errors import UsageError

    def bug(settings, out):
        raise TypeError("unsupported operand type(s) for +: 'int' and 'NoneType'")

    monkeypatch.setattr("gradaudit.jobs.audit.run", bug)
    with pytest.raises(TypeError, match="unsupported operand"):
        cli.main(["audit", "--preset", "tiny", "--out", str(tmp_path / "r")])

    def bad_input(settings, out):
        raise UsageError("--data: the test split is empty")

    monkeypatch.setattr("gradaudit.jobs.audit.run", bad_input)
    assert cli.main(["audit", "--preset", "tiny", "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err == "gradaudit: error: --data: the test split is empty\n"


def test_recommend_ranks_methods_for_a_user_model(tmp_path):
    import torch

    from gradaudit import models

    module = tmp_path / "usermodel.py"
    module.write_text("from gradaudit import models\n\ndef build():\n    return models.mlp((1, 6, 6), 3, hidden=8)\n")
    torch.manual_seed(0)
    model = models.mlp((1, 6, 6), 3, hidden=8)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    torch.save(torch.rand(4, 1, 6, 6) + 0.2, tmp_path / "x.pt")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "gradaudit", "recommend", "--model", "usermodel:build",
                             "--weights", str(tmp_path / "w.pt"), "--data", str(tmp_path / "x.pt"),
                             "--neighbourhood", "gaussian:0.001,occlusion", "--examples", "4", "--samples", "64"],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    blocks = result.stdout.split("\nneighbourhood ")[1:]
    ranked = [[line for line in block.splitlines()[1:] if line.strip()[:2].rstrip(".").isdigit()] for block in blocks]
    scores = [{line.split()[1]: float(line.split()[2]) for line in lines} for lines in ranked]
    assert all(len(s) == 8 for s in scores)
    assert scores[0]["Gradient"] <= min(scores[0].values()) + 1e-9        # each neighbourhood's own method wins
    assert scores[1]["Occlusion"] <= min(scores[1].values()) + 1e-9       # (ties allowed)
    assert "95% interval over 4 examples" in blocks[0]
    best = [line.split()[1] for line in ranked[0] if line.endswith(("<- recommended", "<- tied for best"))]
    assert "Gradient" in best                        # 4 examples: a winner only where the paired interval says so
    assert ("<- recommended" in blocks[0]) == (len(best) == 1)
    bad = subprocess.run([sys.executable, "-m", "gradaudit", "recommend", "--model", "nomodule"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "package.module:factory" in bad.stderr


def test_audit_with_faithfulness_stores_and_reports_it(tmp_path):
    from gradaudit.jobs.audit import run
    from gradaudit.jobs.presets import COMMANDS

    run(COMMANDS["audit"].preset("tiny", faithfulness=True, fractions=(0.1,), methods=("saliency",)), tmp_path)
    store = Store(tmp_path / "results.sqlite")
    rows = store.rows("local_faithfulness")
    assert {r["model"] for r in rows} == {"standard/0", "standard/1", "robust/0", "robust/1"}
    assert len(rows) == 4 * 8 * 6
    assert "Local faithfulness" in (tmp_path / "report.html").read_text()


def test_explain_an_image_file(tmp_path):
    import numpy as np
    import torch
    from PIL import Image

    import gradaudit as ga
    from gradaudit import models
    from gradaudit.loading import load_image

    (tmp_path / "usercnn.py").write_text("from gradaudit import models\n\ndef build():\n"
                                         "    return models.small_cnn((1, 28, 28), 10, width=4)\n")
    torch.manual_seed(0)
    model = models.small_cnn((1, 28, 28), 10, width=4).eval()
    torch.save(model.state_dict(), tmp_path / "w.pt")
    pixels = (np.random.default_rng(0).random((56, 56)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "digit.png")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    command = [sys.executable, "-m", "gradaudit", "explain", "--model", "usercnn:build", "--weights",
               str(tmp_path / "w.pt"), "--input", str(tmp_path / "digit.png"), "--size", "28,28",
               "--method", "saliency,gradcam", "--layer", "conv2", "--target", "3",
               "--out", str(tmp_path / "map.png"), "--save-maps", str(tmp_path / "maps.pt")]
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "map.png").stat().st_size > 1000
    x = load_image(tmp_path / "digit.png", 1, (28, 28))
    assert x.shape == (1, 1, 28, 28) and 0 <= x.min() and x.max() <= 1
    saved = torch.load(tmp_path / "maps.pt", weights_only=True)
    assert torch.allclose(saved["saliency"], ga.heatmap(ga.Saliency()(model, x, 3)), atol=1e-6)
    assert torch.allclose(saved["gradcam"], ga.heatmap(ga.GradCAM("conv2")(model, x, 3)), atol=1e-6)
    auto = subprocess.run(command[:-10] + ["--method", "gradcam", "--target", "3", "--out", str(tmp_path / "auto.png"),
                                           "--save-maps", str(tmp_path / "auto.pt")], capture_output=True, text=True,
                          env=env)
    assert auto.returncode == 0, auto.stderr
    chosen = auto.stdout.split("gradcam: layer='auto' chose '")[1].split("'")[0]      # printed, one line
    assert chosen in dict(model.named_modules())
    with pytest.warns(UserWarning, match=f"layer='auto' chose '{chosen}'"):
        by_auto = ga.GradCAM("auto")(model, x, 3)
    assert torch.equal(by_auto, ga.GradCAM(chosen)(model, x, 3))
    assert torch.allclose(torch.load(tmp_path / "auto.pt", weights_only=True)["gradcam"], ga.heatmap(by_auto),
                          atol=1e-6)
