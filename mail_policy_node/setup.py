from setuptools import find_packages, setup

package_name = "mail_policy_node"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test", "tests"]),
    package_data={package_name: ["config/*.xml", "sim/assets/*.xml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="MaIL ROS maintainers",
    maintainer_email="maintainers@mail-ros.invalid",
    description="MaIL policies on ROS 2: ROS-free core and thin rclpy nodes",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "mail-il = mail_policy_node.cli:main",
            "camera_node = mail_policy_node.nodes.camera_node:main",
            "policy_node = mail_policy_node.nodes.policy_node:main",
            "franka_controller_node = mail_policy_node.nodes.franka_controller_node:main",
            "sim_world_node = mail_policy_node.nodes.sim_world_node:main",
            "bag_player_node = mail_policy_node.nodes.bag_player_node:main",
            "chunk_recorder_node = mail_policy_node.nodes.chunk_recorder_node:main",
        ],
    },
)
