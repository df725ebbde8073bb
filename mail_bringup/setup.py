from glob import glob

from setuptools import find_packages, setup

package_name = "mail_bringup"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test", "tests"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.launch.py")),
        ("share/" + package_name + "/config", glob("config/*.yaml") + glob("config/*.xml")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="MaIL ROS maintainers",
    maintainer_email="maintainers@mail-ros.invalid",
    description="Launch and parameter files for the MaIL ROS 2 stack",
    license="Apache-2.0",
)
