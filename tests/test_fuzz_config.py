"""Fuzzing configuration validation: a mutated pipeline or node YAML either loads or fails with
the project's error (one line naming the file), never another exception.

Starts from the shipped files and replaces values at random key paths, drops keys, adds keys,
or corrupts the text. ``TARGETS`` is the only place naming the loaders (re-point it when the
config code is refactored).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from intermimic_policy.errors import IntermimicError
from intermimic_policy.ros.motion_streamer import load_streamer_config
from intermimic_policy.ros.node_config import load_node_config
from intermimic_policy.ros.sim_bridge import load_bridge_config
from tests.fuzzing import Tally, fuzz_settings
from training.config import ConfigError, load_pipeline_config

ROOT = Path(__file__).resolve().parents[1]
# name -> (the valid file it starts from, loader, errors it may raise, cases)
TARGETS: dict[str, tuple[Path, Callable[[Path], Any], tuple[type[Exception], ...], int]] = {
    "pipeline": (ROOT / "config/pipeline/smoke.yaml", load_pipeline_config, (ConfigError,), 100),
    "policy_node": (ROOT / "config/sim_hoi.yaml", load_node_config, (IntermimicError,), 60),
    "sim_bridge": (ROOT / "config/sim_hoi.yaml", lambda p: load_bridge_config(str(p)), (IntermimicError,), 60),
    "motion_streamer": (ROOT / "config/sim_hoi.yaml", lambda p: load_streamer_config(str(p)), (IntermimicError,),
                        60),
}

values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**66, 2**66) | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=8)


def _paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def _set(doc: Any, path: tuple, value: Any, drop: bool) -> Any:
    if not path:
        return value
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if drop and isinstance(parent, dict):
        parent.pop(path[-1], None)
    else:
        parent[path[-1]] = value
    return doc


@st.composite
def mutated_yaml(draw: st.DrawFn, text: str) -> str:
    if draw(st.integers(0, 9)) == 0:  # corrupt the text itself
        cut = draw(st.integers(0, len(text)))
        return text[:cut] + draw(st.text(max_size=8)) + text[cut:]
    doc = yaml.safe_load(text)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths[1:] or paths))
        op = draw(st.sampled_from(["value", "drop", "add"]))
        if op == "add" and isinstance(doc, dict):
            section = draw(st.sampled_from([k for k in doc] + [None]))
            target = doc if section is None or not isinstance(doc[section], dict) else doc[section]
            target[draw(st.text(min_size=1, max_size=8))] = draw(values)
        else:
            doc = _set(doc, path, draw(values), drop=op == "drop")
    return yaml.safe_dump(doc, sort_keys=False)


@pytest.mark.parametrize("target", list(TARGETS))
def test_mutated_config_loads_or_fails_with_one_line(target: str) -> None:
    source, load, errors, cases = TARGETS[target]
    original = source.read_text()
    tally = Tally(f"config.{target}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / source.name
        path.write_text(original)
        load(path)  # the shipped file loads

        @fuzz_settings(cases)
        @given(text=mutated_yaml(original))
        def check(text: str) -> None:
            path.write_text(text)
            try:
                load(path)
            except errors as exc:
                message = str(exc)
                assert str(path) in message and "\n" not in message, message
                tally.add("refused")
                return
            tally.add("loaded")

        check()
    tally.report()


@pytest.mark.parametrize("text", ["!# a tag\nclips: []\n", "\x1fclips: []\n", "a: [1,\n"])
def test_invalid_pipeline_yaml_is_one_line(tmp_path: Path, text: str) -> None:
    """Found by the fuzzer: PyYAML's multi-line error text reached the user as is."""
    path = tmp_path / "pipeline.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_pipeline_config(path)
    assert str(info.value).startswith(f"{path}: not valid YAML: ") and "\n" not in str(info.value)
