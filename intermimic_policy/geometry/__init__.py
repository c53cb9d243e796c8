"""Rotation and geometry helpers (quaternion convention: xyzw)."""
