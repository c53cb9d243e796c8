"""intermimic: InterMimic HOI imitation on MuJoCo, exported to ONNX and run on ROS 2.

This package (``intermimic_policy``) is everything deployment needs; training code lives in the
sibling package ``training``.
"""

__version__ = "0.1.0"
