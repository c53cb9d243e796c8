"""The one typed config loader: strict, one-line errors naming the file and the dotted key."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from intermimic_policy.config_io import ConfigError, from_dict, load, read_yaml
from intermimic_policy.ros.node_config import load_node_config
from training.config import PipelineConfig, load_pipeline_config


@dataclass(frozen=True)
class Inner:
    rate_hz: float = 30.0
    names: tuple[str, ...] = ()
    depth: str | int = "default"


@dataclass(frozen=True)
class Outer:
    inner: Inner = field(default_factory=Inner)
    count: int = 1
    label: str | None = None

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ConfigError(f"count must be >= 1, got {self.count}")


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_nested_values_are_typed(tmp_path: Path) -> None:
    cfg = load(_write(tmp_path, "ok.yaml", "inner:\n  rate_hz: 50\n  names: [a, b]\n  depth: 10\ncount: 2\n"), Outer)
    assert cfg == Outer(Inner(50.0, ("a", "b"), 10), 2)
    assert isinstance(cfg.inner.rate_hz, float)
    assert load(_write(tmp_path, "section.yaml", "inner:\ncount: 3\n"), Outer).inner == Inner()  # empty section


@pytest.mark.parametrize("text, message", [
    ("inner:\n  rate_hz: 50\n  rate: 3\n", "bad.yaml: inner.rate: unknown key(s); known: ['depth', 'names', 'rate_hz']"),
    ("cout: 2\n", "bad.yaml: cout: unknown key(s)"),
    ("count: two\n", "bad.yaml: count: must be an integer, got 'two'"),
    ("count: true\n", "bad.yaml: count: must be an integer, got True"),
    ("inner:\n  rate_hz: .inf\n", "bad.yaml: inner.rate_hz: must be a finite number, got inf"),
    ("inner:\n  names: abc\n", "bad.yaml: inner.names: expected a list, got 'abc'"),
    ("inner: [1, 2]\n", "bad.yaml: inner: expected a mapping of settings, got list"),
    ("count: 0\n", "bad.yaml: count must be >= 1, got 0"),
    ("", "bad.yaml: the file is empty"),
    ("- a\n- b\n", "bad.yaml: the top level must be a mapping, got list"),
    ("count: [unclosed\n", "bad.yaml: not valid YAML"),
])
def test_errors_are_one_line_naming_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, "bad.yaml", text)
    with pytest.raises(ConfigError) as err:
        load(path, Outer)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).startswith(str(path))


def test_unknown_sections_are_refused_when_the_sections_are_known(tmp_path: Path) -> None:
    path = _write(tmp_path, "s.yaml", "common: {}\npolicy_nod: {}\n")
    with pytest.raises(ConfigError, match=r"s.yaml: unknown section\(s\) \['policy_nod'\]"):
        read_yaml(path, sections=("common", "policy_node"))
    assert read_yaml(path) == {"common": {}, "policy_nod": {}}
    with pytest.raises(ConfigError, match="cannot read"):
        read_yaml(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match=r"where: \(top level\): expected a mapping"):
        from_dict(Outer, [1], "where")


def test_a_misspelled_node_section_is_refused(tmp_path: Path) -> None:
    """Issue 14: ``sim_brige:`` used to be ignored, its soft-start and slew settings silently defaulted."""
    path = _write(tmp_path, "sim_hoi.yaml", "common:\n  lockstep: true\npolicy_node:\n  threads: 1\n"
                                            "sim_brige:\n  physics_hz: 240.0\n")
    with pytest.raises(ConfigError, match=r"sim_hoi.yaml: unknown section\(s\) \['sim_brige'\]"):
        load_node_config(path)
    with pytest.raises(ConfigError, match="sim_hoi.yaml: the file is empty"):
        load_node_config(_write(tmp_path, "sim_hoi.yaml", "# only a comment\n"))


def test_an_empty_pipeline_config_does_not_start_the_default_training(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="run.yaml: the file is empty"):
        load_pipeline_config(_write(tmp_path, "run.yaml", "\n"))
    with pytest.raises(ConfigError, match=r"run.yaml: teacher.ppo.gama: unknown key"):
        load_pipeline_config(_write(tmp_path, "run.yaml", "teacher:\n  ppo:\n    gama: 0.9\n"))
    assert isinstance(load_pipeline_config(_write(tmp_path, "run.yaml", "clip_frames: 10\n")), PipelineConfig)
