"""Object assets moved to :mod:`intermimic_policy.motion.objects` (they are data: meshes, mass,
surface points, below ``sim`` and used by motion's geometric contact labels); re-exported here."""

from intermimic_policy.motion.objects import *  # noqa: F403
from intermimic_policy.motion.objects import ObjectAsset, ObjectError, load_object  # noqa: F401
