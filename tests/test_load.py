"""Sustained mixed load: a 20-second run of bench/load.py must see no error and no 5xx.

Both modes run at the same time (64 connections each: list, get, download links,
whole files, random ranges, and uploads in standalone mode), so that the file stays
under a minute; bench/load.py runs them in turn, 60 s each, for docs/benchmarks.md.
Every answer's status and every byte of every body are checked by the script.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DURATION = 20
RSS_GROWTH_MIB = 200  # generous: a body held in memory per request would exceed it fast


def test_mixed_load_in_both_modes_has_no_errors_and_no_5xx(tmp_path: Path) -> None:
    results_path, doc = tmp_path / "load.json", tmp_path / "benchmarks.md"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "load.py"), "--duration", str(DURATION),
         "--warmup", "2", "--together", "--no-pin", "--output", str(doc),
         "--json", str(results_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
        stdin=subprocess.DEVNULL)
    assert results_path.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(results_path.read_text())
    assert set(results) == {"standalone", "sidecar"}
    for mode, result in results.items():
        assert result["errors"] == 0, (mode, result["error_samples"])
        assert result["server_errors"] == 0, (mode, result["error_samples"])
        assert result["log_errors"] == 0, (mode, result["log_notes"])
        expected = {"list", "get", "download", "raw", "range"} | (
            {"create", "upload"} if mode == "standalone" else set())
        assert set(result["ops"]) == expected, mode
        assert all(op["requests"] > 0 for op in result["ops"].values()), mode
        rss = result["rss_mib"]
        assert rss["peak"] < rss["start"] + RSS_GROWTH_MIB, (mode, rss)
    assert done.returncode == 0, done.stderr[-3000:]
    text = doc.read_text()
    assert "<!-- load:begin -->" in text and "<!-- load:end -->" in text
    assert "| standalone: zero 5xx | 0 | **PASS** |" in text
    assert "| sidecar: zero errors | 0 | **PASS** |" in text
