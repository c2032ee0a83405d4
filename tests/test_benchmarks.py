"""The benchmark scripts run: ``gpu_report.py --smoke`` prints every section on the CPU (numbers not checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_report_smoke_runs_every_section(tmp_path):
    out = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_report.py"), "--smoke", "--device", "cpu",
                           "--json", str(out)], capture_output=True, text=True, timeout=600, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    for heading in ("1. SR critic update", "2. one SAN refresh", "3. SAN-SPADE critic", "4. sr-train stage gan",
                    "5. sr-infer folder"):  # fmt: skip
        assert heading in proc.stdout
    report = json.loads(out.read_text())
    variants = {r["variant"] for r in report["sr_critic"]}
    assert {"none", "none (circular)", "sn", "bssn", "san r=1", "san r=0.25", "wgan-gp"} == variants
    assert {r["precision"] for r in report["sr_critic"]} == {"bf16", "fp32"}
    assert report["san_refresh"]["ms"] > 0 and report["san_refresh"]["syncs"] is None  # CPU: no CUDA counters
    assert set(report["spade_critic"]) == {"none", "sn", "san r=0.25"}
    assert report["sr_train_it_s"]["san"] > 0 and report["sr_train_it_s"]["sn"] > 0
    assert report["sr_infer"]["app_mp_s"] > 0 and report["sr_infer"]["network_mp_s"] > 0
