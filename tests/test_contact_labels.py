"""Contact labels from geometry, against the labels InterMimic ships in ``OMOMO_new``.

The agreement figure (fraction of frame x body labels equal) is printed; the test asserts it
beats a label-free baseline by a clear margin, that +1 and -1 are recovered where the data has
them, and that hysteresis keeps labels from flickering at a threshold.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from intermimic_policy.embodiment.smplx_shape import skeleton_from_motion
from intermimic_policy.motion.contact_labels import (
    FOOT_BODIES,
    ContactLabelConfig,
    agreement,
    label_contacts,
    levels_with_hysteresis,
    object_surface_points,
)
from intermimic_policy.motion.io import load_motion

CLIPS = ("sub2_largetable_000.pt", "sub2_largetable_007.pt")


def test_agreement_with_omomo_new_labels(motions_root: Path) -> None:
    ours, theirs = [], []
    for name in CLIPS:
        m = load_motion(motions_root / "OMOMO_new" / name)
        sk = skeleton_from_motion(m)
        points = object_surface_points(m.object_name, ContactLabelConfig().num_points)
        ours.append(label_contacts(sk.geoms, m.body_pos, m.body_rot, points, m.object_pos, m.object_rot, m.fps))
        theirs.append(m.body_contact)
    a, b = np.concatenate(ours), np.concatenate(theirs)
    score = agreement(a, b)
    # a baseline that needs no geometry: every body "must not touch" except the feet (unknown)
    base = np.full_like(b, -1)
    base[:, list(FOOT_BODIES)] = 0
    baseline = agreement(base, b)["all"]
    print(f"contact-label agreement with OMOMO_new: {100 * score['all']:.1f} % "
          f"(+1: {100 * score['1']:.1f} %, -1: {100 * score['-1']:.1f} %, 0: {100 * score['0']:.1f} %; "
          f"baseline {100 * baseline:.1f} %)")
    assert score["all"] > 0.85 and score["all"] > baseline + 0.3
    assert score["1"] > 0.8 and score["-1"] > 0.95 and score["0"] > 0.6
    # the object flag (any +1) follows the data's flag
    flag = (a == 1).any(axis=1) == (b == 1).any(axis=1)
    assert flag.mean() > 0.9


def test_hysteresis_keeps_labels_from_flickering() -> None:
    c = ContactLabelConfig()
    t = np.arange(200)
    # a hand resting just around the touch threshold, then leaving past the far threshold
    near = c.touch_on_m - 0.001 + 0.005 * np.sin(t[:100])  # crosses touch_on every few frames
    far = np.linspace(c.touch_on_m, 0.3, 100) + 0.01 * np.sin(t[100:])
    dist = np.concatenate([near, far])[:, None]
    speed = np.zeros_like(dist)
    labels = levels_with_hysteresis(dist, speed, c)[:, 0]
    changes = np.flatnonzero(np.diff(labels))
    assert labels[0] == 1 and labels[99] == 1 and labels[-1] == -1
    assert len(changes) == 2, changes  # +1 -> 0 -> -1, once each
    # without hysteresis the same signal flickers
    plain = ContactLabelConfig(touch_on_m=c.touch_on_m, touch_off_m=c.touch_on_m, far_off_m=c.far_on_m,
                               far_on_m=c.far_on_m)
    assert len(np.flatnonzero(np.diff(levels_with_hysteresis(dist, speed, plain)[:, 0]))) > 10
    # sliding fast past the object is not a grasp
    assert levels_with_hysteresis(np.full((5, 1), 0.0), np.full((5, 1), 5.0), c)[:, 0].tolist() == [0] * 5
