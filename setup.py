"""setuptools shim: installs launch/, config/ and urdf/ into the ROS share directory.

ament_python packages are built with `setup.py`; `colcon build` and `pip install .` both
read the metadata from pyproject.toml and these data_files from here.
"""

from pathlib import Path

from setuptools import setup

PACKAGE = "intermimic"


def _share_files(folder: str) -> list[tuple[str, list[str]]]:
    out: dict[str, list[str]] = {}
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            dest = str(Path("share") / PACKAGE / path.parent)
            out.setdefault(dest, []).append(str(path))
    return list(out.items())


data_files = [
    ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
    ("share/" + PACKAGE, ["package.xml"]),
]
for folder in ("launch", "config", "urdf"):
    data_files += _share_files(folder)

setup(data_files=data_files)
