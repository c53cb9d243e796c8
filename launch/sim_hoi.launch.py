"""ROS 2 launch of the simulated HOI loop: motion streamer -> policy node -> simulation bridge.

    ros2 launch intermimic sim_hoi.launch.py [clip:=CLIP] [policy:=FILE.onnx] [lockstep:=true] [robot:=g1]
        [config:=FILE.yaml]

The three nodes read one parameter file (default: the package's ``config/sim_hoi.yaml``): its
``common`` section (domain, lockstep, clip, policy, topic names) and their own section. The file
is passed with ``--config`` rather than as a ROS parameter file, because its ``common`` section
is shared by all nodes, which ROS 2's per-node parameter files cannot express. The launch
arguments override it; left empty they keep the file's values. Without ROS 2,
``intermimic launch sim_hoi`` runs the same three nodes as processes over Cyclone DDS and
writes a report.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription

PACKAGE = "intermimic"


def _nodes(context):
    """The three nodes, with only the overrides that were given (resolved at launch time)."""
    config = LaunchConfiguration("config").perform(context)
    clip = LaunchConfiguration("clip").perform(context)
    policy = LaunchConfiguration("policy").perform(context)
    lockstep = LaunchConfiguration("lockstep").perform(context).strip().lower() in ("true", "1", "yes")
    robot = LaunchConfiguration("robot").perform(context).strip()
    common = ["--config", config] + (["--lockstep"] if lockstep else [])
    clip_args = ["--clip", os.path.abspath(clip)] if clip else []
    policy_args = ["--policy", os.path.abspath(policy)] if policy else []
    robot_args = ["--robot", robot] if robot else []  # the streamer knows a robot clip by its file
    return [
        Node(package=PACKAGE, executable="intermimic_motion_streamer", name="motion_streamer",
             output="screen", arguments=common + clip_args),
        Node(package=PACKAGE, executable="intermimic_policy_node", name="policy_node",
             output="screen", arguments=common + policy_args + robot_args),
        Node(package=PACKAGE, executable="intermimic_sim_bridge", name="sim_bridge",
             output="screen", arguments=common + clip_args + robot_args),
    ]


def generate_launch_description():
    share = get_package_share_directory(PACKAGE)
    return LaunchDescription([
        DeclareLaunchArgument("config", default_value=os.path.join(share, "config", "sim_hoi.yaml"),
                              description="node parameter file (common + one section per node)"),
        DeclareLaunchArgument("clip", default_value="",
                              description="reference clip (.pt InterMimic or .npz); empty: the config's"),
        DeclareLaunchArgument("policy", default_value="",
                              description="exported ONNX policy; empty: the config's common.policy"),
        DeclareLaunchArgument("lockstep", default_value="",
                              description="true: the simulation waits for each tick's targets; empty: the config's"),
        DeclareLaunchArgument("robot", default_value="",
                              description="a robot (e.g. g1: config/robots/g1.yaml); empty: the config's (SMPL-X humanoid)"),
        OpaqueFunction(function=_nodes),
    ])
