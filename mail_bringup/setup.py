import os
from glob import glob

from setuptools import find_packages, setup

package_name = "mail_bringup"


def tree(folder: str) -> list[tuple[str, list[str]]]:
    """data_files entries that install `folder` with its subfolders under share/<package>/ (the
    profiles' YAML files, training configs, the shipped checkpoints: mail_bringup.graph.share_dir)."""
    return [(os.path.join("share", package_name, path), sorted(os.path.join(path, f) for f in files))
            for path, _, files in sorted(os.walk(folder)) if files]


setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test", "tests"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.launch.py")),
        *tree("config"),
        *tree("checkpoints"),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="MaIL ROS maintainers",
    maintainer_email="maintainers@mail-ros.invalid",
    description="Launch and parameter files for the MaIL ROS 2 stack",
    license="Apache-2.0",
)
