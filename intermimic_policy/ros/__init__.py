"""ROS 2 messages, transports (rclpy | Cyclone DDS), nodes and the no-ROS launcher."""
