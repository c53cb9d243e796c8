"""Humanoid and robot models: the SMPL-X body table, MJCF generator, robot descriptions."""
