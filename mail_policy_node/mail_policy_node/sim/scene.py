"""MJCF composition: the FR3 + hand shipped with `franky_sim`, a table, cameras and task objects.

The robot model and its meshes are read from the installed ``franky_sim`` package at run time (never
copied into this repository, nothing downloaded). The scene is composed as an ``xml.etree`` tree so the
very same elements (table, lights, cameras, task objects) can be added either to our own scene
(`build_scene_xml`) or to the scene a franky-sim ``MujocoSimulator`` builds (`add_to_franky_scene`).

Frames: the robot base is the world origin, the table top is the plane z = 0, x points away from the
robot. The tool centre point site ``tcp`` sits between the finger pads.
"""

from __future__ import annotations

import copy
import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TABLE_HALF = (0.55, 0.7, 0.025)  # half sizes [m]; top at z = 0
TABLE_CENTER = (0.35, 0.0, -0.025)
TCP_OFFSET = 0.1034  # hand frame origin -> between the finger pads, along the hand z axis [m]
ARM_KP = (4500.0, 4500.0, 3500.0, 3500.0, 2000.0, 2000.0, 2000.0)  # franky_sim's fr3.xml gains
ARM_KV = (450.0, 450.0, 350.0, 350.0, 200.0, 200.0, 200.0)
GRIPPER_KP = 2000.0  # [N/m] on the finger-split tendon (half the width)
GRIPPER_KV = 60.0
GRIPPER_MAX_FORCE = 100.0  # [N] on the tendon


@dataclass(frozen=True)
class CameraDef:
    name: str
    fovy: float  # vertical field of view [deg]
    body: str  # "world" or a robot body name (without franky-sim's prefix)
    pos: tuple[float, float, float]
    lookat: tuple[float, float, float] | None = None  # world cameras: point looked at
    xyaxes: tuple[float, ...] | None = None  # body cameras: camera x and y axes in the body frame


# The paper's two views: a fixed agent view facing the robot, and a camera on the hand looking along
# the fingers (the wrist camera sits beside the fingers and is tilted 20 deg towards them).
_TILT = math.radians(25.0)
CAMERAS: tuple[CameraDef, ...] = (
    CameraDef("agentview", 55.0, "world", (1.0, 0.0, 0.9), lookat=(0.42, 0.0, 0.15)),
    CameraDef(
        "wrist",
        75.0,
        "hand",
        (0.085, 0.0, 0.02),
        xyaxes=(0.0, 1.0, 0.0, math.cos(_TILT), 0.0, math.sin(_TILT)),
    ),
)
CAMERA_NAMES = tuple(c.name for c in CAMERAS)


def franky_sim_assets() -> Path:
    """Folder of the FR3 model (fr3.xml and meshes/): the installed franky_sim's, or the folder named by
    ``MAIL_FR3_ASSETS`` (a copy of it, for machines where franky_sim and its pinocchio dependency are
    not installed, e.g. the GPU image that records demonstrations and evaluates there)."""
    override = os.environ.get("MAIL_FR3_ASSETS")
    if override:
        path = Path(override)
    else:
        try:
            import franky_sim
        except ImportError as e:  # pragma: no cover - depends on the install
            raise RuntimeError("franky_sim is not installed (or set MAIL_FR3_ASSETS); the simulated robot "
                               "needs its FR3 model") from e
        path = Path(franky_sim.__file__).resolve().parent / "assets"
    if not (path / "fr3.xml").is_file() or not (path / "meshes").is_dir():
        raise RuntimeError(f"{path} holds no fr3.xml + meshes/ (the FR3 model franky_sim ships)")
    return path


def _fmt(values) -> str:
    return " ".join(f"{float(v):.6g}" for v in values)


def _world_xyaxes(pos, lookat) -> tuple[float, ...]:
    forward = np.asarray(lookat, float) - np.asarray(pos, float)
    forward /= np.linalg.norm(forward)
    x = np.cross(forward, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(x, forward)
    return (*x, *y)


def camera_element(cam: CameraDef) -> ET.Element:
    axes = cam.xyaxes if cam.xyaxes is not None else _world_xyaxes(cam.pos, cam.lookat)
    return ET.Element("camera", name=cam.name, pos=_fmt(cam.pos), xyaxes=_fmt(axes), fovy=f"{cam.fovy:g}")


def environment_elements() -> list[ET.Element]:
    """Table and lights (no shadows: rendering at 128 px must stay cheap)."""
    table = ET.Element(
        "geom",
        name="table",
        type="box",
        pos=_fmt(TABLE_CENTER),
        size=_fmt(TABLE_HALF),
        rgba="0.62 0.52 0.40 1",
        friction="0.8 0.005 0.0001",
    )
    key = ET.Element(
        "light", name="key", pos="0.6 -0.6 2.0", dir="-0.1 0.25 -1", directional="true",
        diffuse="0.65 0.65 0.62", specular="0.1 0.1 0.1", castshadow="false",
    )
    fill = ET.Element(
        "light", name="fill", pos="1.5 0.8 1.5", dir="-1 -0.4 -0.8", directional="true",
        diffuse="0.35 0.35 0.38", specular="0 0 0", castshadow="false",
    )
    return [table, key, fill]


# The look every scene shares (ours and franky-sim's): the policy must see the same images in the
# synchronous tasks it is trained in and behind the camera nodes of the `sim` profile.
HEADLIGHT = dict(ambient="0.25 0.25 0.25", diffuse="0.35 0.35 0.35", specular="0 0 0")
SKY = dict(name="sky", type="skybox", builtin="flat", rgb1="0.55 0.6 0.65", rgb2="0.55 0.6 0.65", width="8", height="8")
FLOOR = dict(type="plane", pos="0 0 -0.75", size="3 3 0.1", rgba="0.35 0.37 0.4 1")


def _find_body(root: ET.Element, name: str) -> ET.Element:
    for body in root.iter("body"):
        if body.get("name") == name:
            return body
    raise KeyError(f"body {name!r} not in the MJCF tree")


def _add_tcp_and_wrist(hand: ET.Element, site_name: str = "tcp") -> None:
    ET.SubElement(hand, "site", name=site_name, pos=f"0 0 {TCP_OFFSET}", size="0.005", group="4")
    for cam in CAMERAS:
        if cam.body == "hand":
            hand.append(camera_element(cam))


def build_scene_xml(task_elements: list[ET.Element], timestep: float = 0.002) -> str:
    """Our own scene: franky_sim's FR3 with gravity compensation, position actuators on the arm
    joints, a width-controlled gripper, the table, the cameras and ``task_elements`` (bodies added to
    the worldbody). Returns MJCF text with absolute mesh paths."""
    assets = franky_sim_assets()
    fr3 = ET.parse(assets / "fr3.xml").getroot()
    root = ET.Element("mujoco", model="mail_fr3_scene")
    ET.SubElement(root, "compiler", angle="radian", meshdir=str(assets / "meshes"), autolimits="true")
    ET.SubElement(root, "option", timestep=f"{timestep:g}", integrator="implicitfast")
    visual = ET.SubElement(root, "visual")
    ET.SubElement(visual, "quality", shadowsize="0", offsamples="0")
    ET.SubElement(visual, "headlight", **HEADLIGHT)
    ET.SubElement(visual, "global", offwidth="640", offheight="480")
    root.append(copy.deepcopy(fr3.find("default")))
    asset = copy.deepcopy(fr3.find("asset"))
    ET.SubElement(asset, "texture", **SKY)
    root.append(asset)

    world = ET.SubElement(root, "worldbody")
    ET.SubElement(world, "geom", name="floor", **FLOOR)
    world.extend(environment_elements())
    robot = copy.deepcopy(fr3.find("worldbody")[0])
    for body in robot.iter("body"):
        if body.get("name") != "base":
            body.set("gravcomp", "1")  # the real FR3 controller compensates gravity
    _add_tcp_and_wrist(_find_body(robot, "hand"))
    world.append(robot)
    for cam in CAMERAS:
        if cam.body == "world":
            world.append(camera_element(cam))
    world.extend(task_elements)

    act = ET.SubElement(root, "actuator")
    for i in range(7):
        ET.SubElement(act, "position", **{"class": "fr3"}, name=f"fr3_joint{i + 1}", joint=f"fr3_joint{i + 1}",
                      kp=f"{ARM_KP[i]:g}", kv=f"{ARM_KV[i]:g}")
    # force on the tendon (= half the width) = kp * (width_cmd / 2 - L) - kv * dL
    ET.SubElement(act, "general", name="gripper", tendon="split", ctrlrange="0 0.08",
                  forcerange=f"{-GRIPPER_MAX_FORCE:g} {GRIPPER_MAX_FORCE:g}",
                  gaintype="fixed", biastype="affine", gainprm=f"{GRIPPER_KP / 2:g}",
                  biasprm=f"0 {-GRIPPER_KP:g} {-GRIPPER_KV:g}")
    for tag in ("tendon", "equality", "contact"):
        root.append(copy.deepcopy(fr3.find(tag)))
    return ET.tostring(root, encoding="unicode")


def add_to_franky_scene(sim, task_elements: list[ET.Element], robot_prefix: str = "robot0_") -> None:
    """Add the table, lights, cameras, tcp site and ``task_elements`` to a franky-sim
    ``MujocoSimulator`` scene after ``add_robot`` and before the server starts, and give it our own
    scene's look: franky-sim's lights, checker ground and headlight are replaced by ours (with them the
    rendered frames differed by 50/255 on average from the ones the demonstrations were recorded with)."""
    for geom in sim.worldbody.iter("geom"):
        if geom.get("name") == "ground":
            geom.attrib.pop("material", None)
            geom.attrib.update(FLOOR)
    for light in list(sim.worldbody.findall("light")):
        sim.worldbody.remove(light)
    visual = sim.scene.find("visual")
    if visual is None:
        visual = ET.SubElement(sim.scene, "visual")
    for tag, attrs in (("quality", dict(shadowsize="0", offsamples="0")), ("headlight", HEADLIGHT)):
        element = visual.find(tag)
        if element is None:
            element = ET.SubElement(visual, tag)
        element.attrib.clear()
        element.attrib.update(attrs)
    asset = sim.scene.find("asset")
    if asset is not None and asset.find("texture[@type='skybox']") is None:
        ET.SubElement(asset, "texture", **SKY)
    sim.worldbody.extend(environment_elements())
    _add_tcp_and_wrist(_find_body(sim.worldbody, robot_prefix + "hand"))
    for cam in CAMERAS:
        if cam.body == "world":
            sim.worldbody.append(camera_element(cam))
    sim.worldbody.extend(copy.deepcopy(e) for e in task_elements)


RENDER_CELL = 0.006  # [m] vertex-clustering grid for the robot's visual meshes (see simplify_visual_meshes)


def simplify_visual_meshes(model, cell: float = RENDER_CELL) -> tuple[int, int]:
    """Coarsen, in place, the meshes that only non-colliding geoms use (the FR3's visual meshes: 240k
    triangles, which the CPU rasteriser took 35 ms a frame to draw at 128x128): vertices snap to the
    centroid of their ``cell``-sized grid cell and triangles that collapse are dropped. Meant for a
    model used for rendering only (or whose visual meshes do not take part in physics: collision
    geometry and inertias are untouched). Every renderer of the simulated scenes goes through
    ``scene_renderer``, so demonstrations and the camera nodes see the same images.
    Returns (triangles before, after)."""
    import mujoco

    mesh_geoms = [g for g in range(model.ngeom) if model.geom_type[g] == mujoco.mjtGeom.mjGEOM_MESH]
    colliding = {int(model.geom_dataid[g]) for g in mesh_geoms if model.geom_contype[g] or model.geom_conaffinity[g]}
    visual = sorted({int(model.geom_dataid[g]) for g in mesh_geoms} - colliding)
    before = after = 0
    for mid in visual:
        v0, nv = model.mesh_vertadr[mid], model.mesh_vertnum[mid]
        f0, nf = model.mesh_faceadr[mid], model.mesh_facenum[mid]
        verts = model.mesh_vert[v0:v0 + nv]
        _, cluster, counts = np.unique(np.floor(verts / cell).astype(np.int64), axis=0, return_inverse=True,
                                       return_counts=True)
        cluster = cluster.ravel()
        centroids = np.zeros((len(counts), 3))
        np.add.at(centroids, cluster, verts)
        centroids /= counts[:, None]
        faces = model.mesh_face[f0:f0 + nf]
        c = cluster[faces]
        keep = (c[:, 0] != c[:, 1]) & (c[:, 1] != c[:, 2]) & (c[:, 0] != c[:, 2])
        _, first = np.unique(np.sort(c[keep], axis=1), axis=0, return_index=True)  # one of each duplicate
        rows = np.flatnonzero(keep)[np.sort(first)]
        # faces keep their own vertex indices: moving every vertex onto its centroid merges them
        model.mesh_vert[v0:v0 + nv] = centroids[cluster]
        for table in (model.mesh_face, model.mesh_facenormal, model.mesh_facetexcoord):
            if len(table) == len(model.mesh_face):
                table[f0:f0 + len(rows)] = table[f0 + rows].copy()
        model.mesh_facenum[mid] = len(rows)
        before, after = before + int(nf), after + len(rows)
    return before, after


def scene_renderer(model, height: int, width: int):
    """The one way the simulated scenes are rendered (demonstrations, evaluation, camera nodes):
    simplified visual meshes, no shadows, reflections or skybox. Modifies ``model``'s visual meshes."""
    import mujoco

    simplify_visual_meshes(model)
    renderer = mujoco.Renderer(model, height, width)
    for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION, mujoco.mjtRndFlag.mjRND_SKYBOX):
        renderer.scene.flags[flag] = False
    return renderer
