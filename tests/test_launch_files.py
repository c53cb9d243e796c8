"""Static checks of the ROS 2 launch (it cannot run without ROS 2 here) and of the launcher's
configuration: every executable the launch file names is a console script of the package whose
target exists, every parameter file it names exists and has the nodes' sections, the package
installs its scripts where ``ros2 run`` / launch_ros look, and one resolved YAML gives the three
nodes the same clip, policy, lockstep and domain.
"""

from __future__ import annotations

import ast
import configparser
import importlib
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from intermimic_policy.cli import main as cli_main
from intermimic_policy.motion.example import make_example_motion
from intermimic_policy.motion.io import save_motion
from intermimic_policy.ros.launcher import (
    NODES,
    LaunchError,
    LaunchOptions,
    resolve_config,
    start_process,
    stop_processes,
)
from intermimic_policy.ros.motion_streamer import load_streamer_config
from intermimic_policy.ros.node_config import load_node_config
from intermimic_policy.ros.sim_bridge import load_bridge_config

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch" / "sim_hoi.launch.py"
CONFIG = REPO / "config" / "sim_hoi.yaml"


def _constants(tree: ast.AST) -> dict[str, Any]:
    """Module-level ``NAME = <literal>`` assignments."""
    out: dict[str, Any] = {}
    for node in getattr(tree, "body", []):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return out


def _value(node: ast.AST, constants: dict[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    return None


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and ((isinstance(n.func, ast.Name) and n.func.id == name)
                 or (isinstance(n.func, ast.Attribute) and n.func.attr == name))]


def _scripts() -> dict[str, str]:
    """``[project.scripts]`` of pyproject.toml (read by hand: tomllib needs Python 3.11)."""
    out: dict[str, str] = {}
    inside = False
    for line in (REPO / "pyproject.toml").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("["):
            inside = line == "[project.scripts]"
        elif inside and "=" in line:
            key, value = line.split("=", 1)
            out[key.strip()] = value.strip().strip('"')
    return out


def test_launch_file_starts_the_three_console_scripts_of_the_package() -> None:
    tree = ast.parse(LAUNCH.read_text(), str(LAUNCH))
    constants = _constants(tree)
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)
    nodes = []
    for call in _calls(tree, "Node"):
        kw = {k.arg: _value(k.value, constants) for k in call.keywords}
        nodes.append(kw)
    assert len(nodes) == 3
    assert {n["package"] for n in nodes} == {"intermimic"}
    assert {n["executable"] for n in nodes} == {spec.executable for spec in NODES}
    assert {n["name"] for n in nodes} == {spec.name for spec in NODES}
    scripts = _scripts()
    for spec in NODES:
        target = scripts.get(spec.executable)
        assert target is not None, f"{spec.executable} is not a console script in pyproject.toml"
        module, func = target.split(":")
        assert module == spec.module, (spec.executable, target)
        assert callable(getattr(importlib.import_module(module), func))
    declared = {_value(c.args[0], constants) for c in _calls(tree, "DeclareLaunchArgument")}
    assert {"clip", "policy", "lockstep", "config"} <= declared


def test_launch_file_parameter_file_exists_with_every_node_section() -> None:
    tree = ast.parse(LAUNCH.read_text(), str(LAUNCH))
    yamls = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
             and n.value.endswith(".yaml")}
    assert yamls == {CONFIG.name}
    joins = [c for c in _calls(tree, "join") if any(_value(a, {}) == CONFIG.name for a in c.args)]
    assert joins and [_value(a, {}) for a in joins[0].args[1:]] == ["config", CONFIG.name]  # share/config/
    doc = yaml.safe_load(CONFIG.read_text())
    assert {"common", *(spec.name for spec in NODES)} <= set(doc)
    for key in ("domain_id", "lockstep", "clip", "policy", "topics"):
        assert key in doc["common"], key
    # the package installs launch/ and config/ into share/intermimic (setup.py data_files)
    setup = ast.parse((REPO / "setup.py").read_text())
    folders = {e.value for t in ast.walk(setup) if isinstance(t, ast.Tuple)
               for e in t.elts if isinstance(e, ast.Constant)}
    assert {"launch", "config"} <= folders


def test_setup_cfg_puts_the_scripts_where_ros2_finds_them() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    assert cfg["develop"]["script_dir"] == "$base/lib/intermimic"
    assert cfg["install"]["install_scripts"] == "$base/lib/intermimic"
    package = (REPO / "package.xml").read_text()
    assert "<name>intermimic</name>" in package and "<build_type>ament_python</build_type>" in package


def test_every_node_reads_the_shared_config() -> None:
    policy = load_node_config(CONFIG)
    bridge = load_bridge_config(str(CONFIG))
    streamer = load_streamer_config(str(CONFIG))
    assert policy.lockstep == bridge.lockstep == streamer.lockstep
    assert policy.domain_id == bridge.domain_id == streamer.domain_id
    assert policy.topics.pd_targets == bridge.topics.pd_targets
    assert policy.topics.joint_states == bridge.topics.joint_states and policy.topics.odom == bridge.topics.odom
    assert policy.topics.object_pose == bridge.topics.object_pose and policy.topics.contacts == bridge.topics.contacts
    assert policy.topics.reference == streamer.topics.reference
    assert policy.topics.reference_window == streamer.topics.reference_window
    assert bridge.topics.clock == streamer.topics.clock
    assert len({policy.topics.status, bridge.topics.bridge_status, streamer.topics.streamer_status}) == 3
    assert streamer.lookahead_frames >= 17


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "example.npz"
    save_motion(make_example_motion().slice(0, 40), path)
    return path


def test_launcher_resolves_one_config_for_the_three_nodes(clip: Path, tmp_path: Path) -> None:
    policy = tmp_path / "policy.onnx"
    policy.write_bytes(b"only its existence is checked here")
    record = tmp_path / "out.npz"
    doc, path = resolve_config(LaunchOptions(clip=str(clip), policy=str(policy), lockstep=True, domain_id=7,
                                             duration_s=1.5, record=str(record), start_offset=3), tmp_path)
    assert path.parent == tmp_path and path.name == "sim_hoi.yaml"
    p, b, s = load_node_config(path), load_bridge_config(str(path)), load_streamer_config(str(path))
    assert p.lockstep and b.lockstep and s.lockstep
    assert p.domain_id == b.domain_id == s.domain_id == 7
    assert p.policy == str(policy.resolve())
    assert b.clip == s.clip == str(clip.resolve()) and not b.example and not s.example
    assert b.start_offset == s.start_offset == 3
    assert b.duration_s == 1.5 and b.record == str(record.resolve()) and not b.exit_when_done
    assert Path(b.summary).parent == tmp_path
    # the source file is untouched
    assert yaml.safe_load(CONFIG.read_text())["common"]["lockstep"] is False


def test_launch_refuses_missing_inputs_with_clear_errors(clip: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(LaunchError, match="policy .*missing.onnx not found"):
        resolve_config(LaunchOptions(clip=str(clip), policy=str(tmp_path / "missing.onnx")), tmp_path)
    no_policy = tmp_path / "no_policy.yaml"
    doc = yaml.safe_load(CONFIG.read_text())
    doc["common"]["policy"] = ""
    no_policy.write_text(yaml.safe_dump(doc))
    with pytest.raises(LaunchError, match="no policy: pass --policy"):
        resolve_config(LaunchOptions(config=str(no_policy), clip=str(clip)), tmp_path)
    policy = tmp_path / "p.onnx"
    policy.write_bytes(b"x")
    with pytest.raises(LaunchError, match="clip .*nope.pt not found"):
        resolve_config(LaunchOptions(clip=str(tmp_path / "nope.pt"), policy=str(policy)), tmp_path)
    # through the command line: one line, exit status 2
    code = cli_main(["launch", "sim_hoi", "--clip", str(clip), "--policy", str(tmp_path / "missing.onnx"),
                     "--log-dir", str(tmp_path / "logs"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("intermimic: error: launch: policy") and "missing.onnx" in err
    assert cli_main(["launch", "sim_hoi", "--clip", str(clip), "--policy", str(policy), "--duration", "-1"]) == 2


def test_stop_escalates_from_sigint_to_sigterm_to_sigkill(tmp_path: Path) -> None:
    ignore = "import signal, time; {}; print('ready', flush=True); time.sleep(60)"
    scripts = {
        "polite": ignore.format("pass"),
        "deaf_to_int": ignore.format("signal.signal(signal.SIGINT, signal.SIG_IGN)"),
        "deaf": ignore.format("signal.signal(signal.SIGINT, signal.SIG_IGN); "
                              "signal.signal(signal.SIGTERM, signal.SIG_IGN)"),
    }
    procs = [start_process(name, [sys.executable, "-c", code], tmp_path / f"{name}.log")
             for name, code in scripts.items()]
    try:
        deadline = time.monotonic() + 30
        while not all("ready" in p.log_path.read_text() for p in procs) and time.monotonic() < deadline:
            time.sleep(0.05)
        codes = stop_processes(procs, timeout_s=1.0)
    finally:
        for p in procs:
            if p.returncode is None:
                p.popen.kill()
    assert codes["polite"] == -signal.SIGINT or codes["polite"] == 1  # KeyboardInterrupt: status 1
    assert codes["deaf_to_int"] == -signal.SIGTERM
    assert codes["deaf"] == -signal.SIGKILL
    assert all(p.returncode is not None for p in procs)


def test_status_monitor_keeps_when_each_node_stamped_its_status() -> None:
    """The launcher takes as final a policy-node status stamped after the run ended (not one that
    merely arrived later): the monitor keeps each node's stamp beside its values."""
    from intermimic_policy.ros.launcher import StatusMonitor
    from intermimic_policy.ros.msgs import time_from_ns
    from intermimic_policy.ros.node_common import status_array

    monitor = StatusMonitor()
    on_status = monitor.callback("policy_node")
    stamp = 1_765_000_000_123_456_789
    on_status(status_array(name="n", hardware_id="h", level=0, message="running",
                           values={"published": "31"}, stamp=time_from_ns(stamp)))
    assert monitor.values["policy_node"]["published"] == "31" and monitor.stamped["policy_node"] == stamp
