"""On PYTHONPATH, makes this interpreter a deployment install: torch, MuJoCo and the mesh and
plotting tools cannot be imported (``ModuleNotFoundError``, as if not installed)."""

import sys

BLOCKED = {"torch", "mujoco", "trimesh", "scipy", "coacd", "matplotlib", "rsl_rl", "smplx", "tensorboard"}


class _Blocker:
    def find_spec(self, name, path=None, target=None):  # noqa: ANN001, ANN201
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (deployment install)", name=name)
        return None


sys.meta_path.insert(0, _Blocker())
