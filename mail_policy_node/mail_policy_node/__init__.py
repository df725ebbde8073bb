"""MaIL on ROS 2: Mamba imitation-learning policies for a Franka arm.

The sub-packages ``model``, ``engine``, ``control``, ``data``, ``sim``, ``training`` and ``replay`` are
plain Python and never import rclpy; ``nodes`` holds the thin rclpy adapters over them.
"""

__version__ = "0.1.0"
