"""The observation spec and the builder used by training, export and the ROS nodes."""
