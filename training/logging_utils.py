"""Training logs: TensorBoard scalars, an in-memory history, and a learning-curve PNG.

The history travels inside checkpoints, so a resumed run draws the complete curve; TensorBoard
is opened with ``purge_step`` just after the resumed iteration, so the events an interrupted
run wrote after its last checkpoint are dropped instead of doubled.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from intermimic_policy.atomic import atomic_output

# Panels of the learning-curve figure: (title, history keys drawn in it). Keys absent from the
# history are skipped, so the same figure serves teachers, students and tests.
# Behaviour-cloning warm-start rounds are logged at iterations <= 0, so they sit left of PPO.
CURVE_PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("mean reward per step", ("bc/reward_mean", "reward/mean")),
    ("episode length (steps)", ("bc/episode_length", "episode/length")),
    ("success rate", ("episode/success",)),
    ("tracking error (m)", ("metrics/E_h", "metrics/E_o")),
    ("losses", ("loss/surrogate", "loss/value", "loss/bounds")),
    ("throughput (samples/s)", ("perf/samples_per_s", "perf/env_samples_per_s")),
    ("BC warm start: action MSE to the expert", ("bc/dagger_mse", "bc/actor_mse")),
    ("BC warm start: critic MSE", ("bc/critic_mse",)),
)


class TrainingLogger:
    """Writes scalars to TensorBoard and keeps them for the learning-curve figure."""

    def __init__(self, log_dir: str | Path | None, start_iteration: int = 0,
                 history: Mapping[str, Sequence[Sequence[float]]] | None = None) -> None:
        self.history: dict[str, list[tuple[int, float]]] = {
            k: [(int(i), float(v)) for i, v in pts if int(i) <= start_iteration] for k, pts in (history or {}).items()
        }
        self._writer = None
        if log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            Path(log_dir).mkdir(parents=True, exist_ok=True)
            # steps are completed-iteration counts: everything after the resumed one is stale
            self._writer = SummaryWriter(str(log_dir), purge_step=start_iteration + 1 if start_iteration > 0 else None)

    def log(self, iteration: int, scalars: Mapping[str, float]) -> None:
        for key, value in scalars.items():
            value = float(value)
            if not math.isfinite(value):
                continue
            self.history.setdefault(key, []).append((iteration, value))
            if self._writer is not None:
                self._writer.add_scalar(key, value, iteration)

    def last(self, key: str, default: float = float("nan")) -> float:
        points = self.history.get(key)
        return points[-1][1] if points else default

    def state(self) -> dict[str, list[list[float]]]:
        """The history as plain lists (checkpoint-safe: no objects, loads with weights_only)."""
        return {k: [[float(i), v] for i, v in pts] for k, pts in self.history.items()}

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def save_learning_curves(history: Mapping[str, Sequence[Sequence[float]]], path: str | Path,
                         title: str = "") -> Path:
    """Draw the panels of ``CURVE_PANELS`` present in ``history`` into a PNG (written atomically)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    panels = [(t, [k for k in keys if history.get(k)]) for t, keys in CURVE_PANELS]
    panels = [(t, ks) for t, ks in panels if ks]
    extra = sorted(k for k in history if k.startswith("reward/") and k != "reward/mean" and history[k])
    if extra:
        panels.append(("reward terms (mean per step)", extra))
    n = max(1, len(panels))
    cols = 2 if n > 1 else 1
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(6.0 * cols, 3.2 * rows), dpi=90)
    for idx, (panel_title, keys) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, idx + 1)
        for key in keys:
            pts = history[key]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=key, linewidth=1.2)
        ax.set_title(panel_title, fontsize=10)
        ax.set_xlabel("iteration", fontsize=8)
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize=6, ncol=3 if len(keys) > 6 else 1)
    if not panels:
        fig.add_subplot(1, 1, 1).text(0.5, 0.5, "no data", ha="center")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as handle:
        handle.write(buf.getvalue())
    return path
