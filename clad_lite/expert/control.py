"""Pose -> OSC_POSE delta conversion and smooth Cartesian motion (the MimicGen recipe).

LIBERO's OSC_POSE controller, delta mode: an action ``a`` moves the controller goal to
``pos + 0.05 * a[:3]`` and ``R(0.5 * a[3:6]) @ R`` (axis-angle, *world* frame). So a target
pose becomes an action by

    a[:3]  = clip((p_target - p) / 0.05, -1, 1)
    a[3:6] = clip(axis_angle(R_target @ R.T) / 0.5, -1, 1)

A motion to a far pose is made smooth by following a *carrot*: a pose that moves from the
start to the goal along a minimum-jerk profile; each step converts the carrot to a delta.
"""

from __future__ import annotations

import numpy as np

POS_SCALE = 0.05  # metres per unit action
ROT_SCALE = 0.5  # radians per unit action
GRIPPER_OPEN = -1.0
GRIPPER_CLOSED = 1.0

# the default gripper-down orientation of the Panda in LIBERO (fingers open along world y)
R_DOWN = np.diag([1.0, -1.0, -1.0])


def quat_xyzw_to_mat(q) -> np.ndarray:
    x, y, z, w = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def quat_wxyz_to_mat(q) -> np.ndarray:
    w, x, y, z = q
    return quat_xyzw_to_mat([x, y, z, w])


def axis_angle(R: np.ndarray) -> np.ndarray:
    """Rotation vector (axis * angle, angle in [0, pi]) of a rotation matrix."""
    cos = np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0)
    angle = np.arccos(cos)
    if angle < 1e-9:
        return np.zeros(3)
    if np.pi - angle < 1e-4:  # near pi: axis from the symmetric part
        M = (R + np.eye(3)) / 2.0
        axis = np.sqrt(np.clip(np.diag(M), 0.0, None))
        k = int(np.argmax(axis))
        axis = M[k] / max(axis[k], 1e-12)
        return axis / np.linalg.norm(axis) * angle
    axis = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]]) / (2.0 * np.sin(angle))
    return axis * angle


def rotvec_to_mat(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    angle = np.linalg.norm(v)
    if angle < 1e-12:
        return np.eye(3)
    k = v / angle
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * K @ K


def rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def gripper_down(yaw: float = 0.0, tilt_x: float = 0.0) -> np.ndarray:
    """Gripper pointing down, turned by ``yaw`` about world z (yaw 0: fingers open along y),
    optionally pitched by ``tilt_x`` about world x (applied last)."""
    return rot_x(tilt_x) @ rot_z(yaw) @ R_DOWN


def pose_to_delta(pos, R, target_pos, target_R) -> np.ndarray:
    """The 6-D OSC_POSE delta (in [-1, 1]) that moves the controller goal to the target pose."""
    dpos = (np.asarray(target_pos) - np.asarray(pos)) / POS_SCALE
    drot = axis_angle(np.asarray(target_R) @ np.asarray(R).T) / ROT_SCALE
    return np.clip(np.concatenate([dpos, drot]), -1.0, 1.0)


def min_jerk(s: float) -> float:
    """Minimum-jerk time scaling: 0 -> 1 with zero velocity and acceleration at both ends."""
    s = min(max(s, 0.0), 1.0)
    return s * s * s * (10 - 15 * s + 6 * s * s)


def interpolate_pose(p0, R0, p1, R1, s: float):
    """Pose at fraction ``s`` (0..1) of the straight line / geodesic from (p0, R0) to (p1, R1)."""
    p = np.asarray(p0) + (np.asarray(p1) - np.asarray(p0)) * s
    R = rotvec_to_mat(axis_angle(np.asarray(R1) @ np.asarray(R0).T) * s) @ np.asarray(R0)
    return p, R


def motion_steps(p0, R0, p1, R1, speed: float, rot_speed: float) -> int:
    """Number of control steps a min-jerk motion needs at peak speeds ``speed`` (m/step) and
    ``rot_speed`` (rad/step); min-jerk peaks at 1.875x the mean speed."""
    dist = float(np.linalg.norm(np.asarray(p1) - np.asarray(p0)))
    angle = float(np.linalg.norm(axis_angle(np.asarray(R1) @ np.asarray(R0).T)))
    return max(1, int(np.ceil(1.875 * max(dist / speed, angle / rot_speed))))
