"""Reports are strict JSON: NaN and infinity are written as null, never as bare NaN/Infinity."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from intermimic_policy import jsonio
from intermimic_policy.sim.evaluate import EvalReport, EvalSettings
from training.teacher import write_json


def strict_load(path: Path) -> object:
    """json.loads that refuses the NaN/Infinity extensions, as jq and browsers do."""
    def refuse(token: str) -> None:
        raise ValueError(f"not JSON: {token}")
    return json.loads(path.read_text(), parse_constant=refuse)


def test_non_finite_values_become_null_everywhere(tmp_path: Path) -> None:
    data = {"a": math.nan, "b": [1.0, math.inf, -math.inf], "c": np.float32("nan"), "d": np.array([1.5, np.nan]),
            "e": (np.int64(3), True, None, "x"), 4: {"nested": np.float64(2.5)}}
    path = jsonio.dump_json(tmp_path / "r.json", data)
    assert strict_load(path) == {"a": None, "b": [1.0, None, None], "c": None, "d": [1.5, None],
                                 "e": [3, True, None, "x"], "4": {"nested": 2.5}}
    assert path.read_text().endswith("\n")
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, nothing left behind


def test_unknown_objects_are_refused_not_stringified() -> None:
    with pytest.raises(TypeError):
        jsonio.dumps({"x": object()})
    assert jsonio.dumps({"x": Path("a")}, default=str, indent=None) == '{"x": "a"}'


def test_eval_report_with_nothing_evaluated_is_strict_json(tmp_path: Path) -> None:
    """An evaluation of zero clips has NaN means; the file used to hold bare NaN."""
    report = EvalReport(policy="p", settings=EvalSettings(), clips=[], model_hashes={}, obs_spec_digest="d")
    assert math.isnan(report.summary()["success_rate"])
    report.write_json(tmp_path / "eval.json")
    loaded = strict_load(tmp_path / "eval.json")
    assert loaded["success_rate"] is None and loaded["E_h_cm"] is None  # type: ignore[index]


def test_pipeline_and_teacher_json_is_strict(tmp_path: Path) -> None:
    write_json(tmp_path / "result.json", {"metrics": {"success_rate": math.nan, "E_h_cm": 1.25}, "path": tmp_path})
    assert strict_load(tmp_path / "result.json") == {"metrics": {"success_rate": None, "E_h_cm": 1.25},
                                                    "path": str(tmp_path)}
