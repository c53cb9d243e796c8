"""Subprocess scripts and shared sample builders for the ROS transport tests."""
