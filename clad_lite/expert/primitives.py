"""Reusable motion primitives over privileged simulator state.

Each primitive is a Python generator: it ``yield``s one 7-D action at a time and reads the
newest observation from the shared :class:`Scene` (the expert updates ``scene.obs`` before
asking for the next action). Plans compose primitives with ``yield from``, so a plan reads
like the demonstrator's script: approach, grasp, lift, carry, place, push, turn.
"""

from __future__ import annotations

import mujoco
import numpy as np

from .control import (
    GRIPPER_CLOSED,
    GRIPPER_OPEN,
    axis_angle,
    gripper_down,
    interpolate_pose,
    min_jerk,
    motion_steps,
    pose_to_delta,
    quat_wxyz_to_mat,
    quat_xyzw_to_mat,
    rotvec_to_mat,
)

# nominal peak speeds (randomised per motion by the scene's speed factor)
FAST = 0.026  # m/step free-space motion (0.44 m/s at 20 Hz)
SLOW = 0.012  # m/step near contacts
ROT_SPEED = 0.08  # rad/step

# How the expert moves between two poses (``Scene.motion``):
#   "min_jerk": a carrot slides along a min-jerk path in time, at a tempo drawn per episode and per
#       motion, with short random pauses: smooth and varied, but the action at a state depends on
#       how long the current motion has run, which the state does not show (the policy cannot either);
#   "feedback": the carrot leads the hand by a fixed distance on the straight line to the goal and
#       stops at the goal, at the nominal speeds, without pauses: every arm action is a function of
#       the state and the goal alone (a Markovian demonstrator, as behaviour cloning assumes).
MOTIONS = ("min_jerk", "feedback")
LEAD_STEPS = 2.0  # feedback: the carrot leads the hand by this many steps of peak speed
ROT_TOL = 0.05  # rad: feedback motions end when the orientation is this close too


class Scene:
    """Privileged view of a LiberoEnv plus the expert's running state (goal pose, gripper)."""

    def __init__(self, env, rng: np.random.Generator, motion: str = "min_jerk"):
        if motion not in MOTIONS:
            raise ValueError(f"motion must be one of {MOTIONS}, got {motion!r}")
        self.motion = motion
        self.env = env
        self.problem = env.robosuite_env
        self.sim = env.sim
        self.rng = rng
        self.obs: dict | None = None
        self.grip = GRIPPER_OPEN
        self.goal_pos: np.ndarray | None = None
        self.goal_R: np.ndarray | None = None
        self.closing_on: str | None = None  # the object of the grasp now closing (``pick``)
        # one speed factor per episode plus a small per-motion jitter: diverse demonstrations
        self.tempo = float(rng.uniform(0.85, 1.15))
        if motion == "feedback":  # the speed must follow from the state: no hidden tempo
            self.tempo = 1.0

    # ------------------------------------------------------------------ robot state
    @property
    def eef_pos(self) -> np.ndarray:
        return np.asarray(self.obs["robot0_eef_pos"], dtype=np.float64)

    @property
    def eef_R(self) -> np.ndarray:
        return quat_xyzw_to_mat(self.obs["robot0_eef_quat"])

    # ------------------------------------------------------------------ world state
    def body_id(self, name: str) -> int:
        return self.problem.obj_body_id[name]

    def pos(self, name: str) -> np.ndarray:
        """Body origin of an object or fixture, or the position of a region site."""
        if name in self.problem.obj_body_id:
            return self.sim.data.body_xpos[self.body_id(name)].copy()
        return np.asarray(self.sim.data.get_site_xpos(name)).copy()

    def rot(self, name: str) -> np.ndarray:
        if name in self.problem.obj_body_id:
            return quat_wxyz_to_mat(self.sim.data.body_xquat[self.body_id(name)])
        return np.asarray(self.sim.data.get_site_xmat(name)).reshape(3, 3).copy()

    def yaw(self, name: str) -> float:
        R = self.rot(name)
        return float(np.arctan2(R[1, 0], R[0, 0]))

    def geom_boxes(self, name: str) -> list[tuple[np.ndarray, np.ndarray]]:
        """World AABBs (lo, hi) of the collision geoms of a body (an object's or any MuJoCo
        body's name) and its sub-bodies, now."""
        m, d = self.sim.model._model, self.sim.data._data
        if not hasattr(self, "_geoms"):
            self._geoms = {}
        if name not in self._geoms:
            root = self.problem.obj_body_id[name] if name in self.problem.obj_body_id else \
                mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, name)

            def under(b):
                while b > 0:
                    if b == root:
                        return True
                    b = m.body_parentid[b]
                return False

            self._geoms[name] = [g for g in range(m.ngeom) if under(m.geom_bodyid[g])
                                 and (m.geom_contype[g] or m.geom_conaffinity[g])]
        boxes = []
        for g in self._geoms[name]:
            c, R = d.geom_xpos[g], d.geom_xmat[g].reshape(3, 3)
            if m.geom_type[g] == mujoco.mjtGeom.mjGEOM_MESH:
                a, n = m.mesh_vertadr[m.geom_dataid[g]], m.mesh_vertnum[m.geom_dataid[g]]
                v = m.mesh_vert[a:a + n] @ R.T + c
                boxes.append((v.min(0), v.max(0)))
            else:
                ext = np.abs(R) @ m.geom_size[g] if m.geom_type[g] == mujoco.mjtGeom.mjGEOM_BOX else np.full(3, m.geom_rbound[g])
                boxes.append((c - ext, c + ext))
        return boxes

    def extent(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """World axis-aligned bounding box (lo, hi) of an object's collision geoms, now."""
        boxes = self.geom_boxes(name)
        return np.min([b[0] for b in boxes], axis=0), np.max([b[1] for b in boxes], axis=0)

    def site_size(self, name: str) -> np.ndarray:
        return np.asarray(self.problem.object_sites_dict[name].size, dtype=np.float64)

    def joint(self, name: str) -> float:
        return float(self.sim.data.get_joint_qpos(name))

    def movable_objects(self) -> list[str]:
        fixtures = set(getattr(self.problem, "fixtures_dict", {}))
        return [n for n in self.problem.objects_dict if n not in fixtures]

    def in_contact(self, a: str, b: str) -> bool:
        return bool(self.problem.check_contact(self.problem.get_object(a), self.problem.get_object(b)))

    def speed(self, base: float) -> float:
        if self.motion == "feedback":
            return base
        return base * self.tempo * float(self.rng.uniform(0.9, 1.1))

    def jitter(self, scale: float, dims: int = 3) -> np.ndarray:
        return self.rng.uniform(-scale, scale, size=dims)

    # ------------------------------------------------------------------ actions
    def action(self, pos, R, grip=None) -> np.ndarray:
        self.goal_pos, self.goal_R = np.asarray(pos, dtype=np.float64), np.asarray(R, dtype=np.float64)
        if grip is not None:
            self.grip = grip
        return np.concatenate([pose_to_delta(self.eef_pos, self.eef_R, pos, R), [self.grip]])


# ====================================================================== elementary motions
def move(sc: Scene, pos, R=None, *, grip=None, speed=FAST, rot_speed=ROT_SPEED, tol=0.01, settle=10):
    """Straight-line motion of the grip site to ``pos`` (orientation ``R``): min-jerk in time, or
    by state feedback (``Scene.motion``, see ``MOTIONS``)."""
    if sc.motion == "feedback":
        yield from _move_feedback(sc, pos, R, grip=grip, speed=speed, rot_speed=rot_speed, tol=tol, settle=settle)
        return
    p0, R0 = sc.eef_pos, sc.eef_R
    if sc.goal_pos is not None and np.linalg.norm(sc.goal_pos - p0) < 0.04:
        # continue from the last commanded pose: no jump in the command between segments
        p0, R0 = sc.goal_pos, sc.goal_R
    R = sc.eef_R if R is None else R
    pos = np.asarray(pos, dtype=np.float64)
    n = motion_steps(p0, R0, pos, R, sc.speed(speed), rot_speed * sc.tempo)
    for k in range(1, n + 1):
        pc, Rc = interpolate_pose(p0, R0, pos, R, min_jerk(k / n))
        yield sc.action(pc, Rc, grip)
    for _ in range(settle):  # let the arm catch up with the carrot (OSC lags ~2-4 steps)
        if np.linalg.norm(sc.eef_pos - pos) < tol:
            break
        yield sc.action(pos, R, grip)


def _move_feedback(sc: Scene, pos, R=None, *, grip=None, speed=FAST, rot_speed=ROT_SPEED, tol=0.01, settle=10):
    """The Markovian ``move``: each step, the carrot is the goal or, when farther, the point
    ``LEAD_STEPS * speed`` ahead of the hand towards it (likewise for the orientation), so the
    command depends on the hand's pose and the goal only. Ends within ``tol`` (and ``ROT_TOL``);
    a pass-through motion (``settle=0``) hands over once within one lead of its goal."""
    R = sc.eef_R if R is None else np.asarray(R, dtype=np.float64)
    pos = np.asarray(pos, dtype=np.float64)
    lead, rot_lead = LEAD_STEPS * sc.speed(speed), LEAD_STEPS * rot_speed
    if not settle:
        tol = max(tol, lead)
    limit = 3 * motion_steps(sc.eef_pos, sc.eef_R, pos, R, speed, rot_speed) + settle + 10  # never stall a plan
    for _ in range(limit):
        error = pos - sc.eef_pos
        rot_error = axis_angle(R @ sc.eef_R.T)
        dist, angle = float(np.linalg.norm(error)), float(np.linalg.norm(rot_error))
        if dist < tol and angle < ROT_TOL:
            break
        carrot = sc.eef_pos + error * min(1.0, lead / max(dist, 1e-9))
        carrot_R = rotvec_to_mat(rot_error * min(1.0, rot_lead / max(angle, 1e-9))) @ sc.eef_R
        yield sc.action(carrot, carrot_R, grip)
    sc.goal_pos, sc.goal_R = pos, R  # later holds keep the goal, not the last carrot


def hold(sc: Scene, steps: int, grip=None):
    """Keep the current goal pose (optionally actuating the gripper) for ``steps`` steps."""
    if sc.goal_pos is None:
        sc.goal_pos, sc.goal_R = sc.eef_pos, sc.eef_R
    for _ in range(steps):
        yield sc.action(sc.goal_pos, sc.goal_R, grip)


def close_gripper(sc: Scene, steps: int = 9):
    yield from hold(sc, steps, GRIPPER_CLOSED)


def open_gripper(sc: Scene, steps: int = 7):
    yield from hold(sc, steps, GRIPPER_OPEN)


def pause(sc: Scene, max_steps: int = 3):
    """A short, random hesitation (0..max_steps), like a human demonstrator's; none in feedback
    motion (its length would be hidden state)."""
    if sc.motion == "feedback":
        return
    yield from hold(sc, int(sc.rng.integers(0, max_steps + 1)))


# ====================================================================== grasping
def wrap(a: float) -> float:
    return float(np.arctan2(np.sin(a), np.cos(a)))


def eef_yaw(sc: Scene) -> float:
    """Yaw of the (down-pointing) gripper relative to the default gripper-down orientation."""
    R = sc.eef_R @ np.linalg.inv(gripper_down(0.0))
    return float(np.arctan2(R[1, 0], R[0, 0]))


def nearest_grasp_yaw(sc: Scene, yaw: float, limit: float = 2.0) -> float:
    """A parallel gripper grasps the same at yaw and yaw + pi: take the equivalent closest to the
    current wrist yaw, within +-limit of the default (keeps the wrist joint away from its limits)."""
    cands = [wrap(yaw), wrap(yaw + np.pi)]
    cands = [c for c in cands if abs(c) <= limit] or cands
    return min(cands, key=lambda c: abs(wrap(c - eef_yaw(sc))))


def clearance_yaw(sc: Scene, obj: str, candidates, reach: float = 0.06, avoid=()) -> float:
    """The grasp yaw (from ``candidates``) whose two fingertips keep farthest from other objects."""
    p = sc.pos(obj)[:2]
    others = [sc.pos(o)[:2] for o in sc.movable_objects() if o != obj] + [sc.pos(a)[:2] for a in avoid]
    if not others:
        return float(candidates[0])
    best, best_clear = candidates[0], -np.inf
    for yaw in candidates:
        finger_axis = np.array([np.sin(yaw), -np.cos(yaw)])  # world y at yaw 0 (R_DOWN maps hand y -> -y)
        tips = [p + reach * finger_axis, p - reach * finger_axis]
        clear = min(np.linalg.norm(t - o) for t in tips for o in others)
        if clear > best_clear + 1e-3:
            best, best_clear = yaw, clear
    return float(best)


def pick(sc: Scene, obj: str, *, yaw: float, offset=(0.0, 0.0, 0.0), approach: float = 0.08,
         lift: float = 0.15, tilt_x: float = 0.0, jitter: float = 0.004, world_offset: bool = False,
         precise: bool = False):
    """Top-down grasp of ``obj``: approach above, descend, close, lift.

    ``offset`` is the grip point relative to the body origin in the object's yaw frame
    (x forward along the object's own x axis), re-read just before descending.
    """
    yaw = nearest_grasp_yaw(sc, yaw)
    R = gripper_down(yaw, tilt_x)

    def grip_point():
        c, s = (1.0, 0.0) if world_offset else (np.cos(sc.yaw(obj)), np.sin(sc.yaw(obj)))
        o = np.asarray(offset, dtype=np.float64)
        p = sc.pos(obj) + np.array([c * o[0] - s * o[1], s * o[0] + c * o[1], o[2]])
        p[2] = max(p[2], sc.extent(obj)[0][2] + 0.012)  # fingertips ~1.3 cm below the site: clear the table
        return p

    noise = np.append(sc.jitter(jitter, 2), 0.0)
    above = grip_point() + noise + [0, 0, approach]
    if sc.eef_pos[2] > above[2] + 0.03 and np.linalg.norm(sc.eef_pos[:2] - above[:2]) > 0.08:
        # transit at the current height, then descend: never sweep low through clutter
        yield from move(sc, [above[0], above[1], sc.eef_pos[2]], R, grip=GRIPPER_OPEN, settle=0)
    yield from move(sc, above, R, grip=GRIPPER_OPEN)
    yield from pause(sc)
    target = grip_point() + noise
    if precise:  # tight fit between the fingers: servo the xy error out just above, then descend
        pre = target + [0, 0, 0.035]
        yield from move(sc, pre, R, speed=SLOW * 1.5, tol=0.004, settle=6)
        bias = np.zeros(3)
        for _ in range(8):
            err = pre - sc.eef_pos
            err[2] = 0.0
            if np.linalg.norm(err) < 0.002:
                break
            bias += 0.5 * err
            yield sc.action(pre + bias, R)
        target = target + bias
    yield from move(sc, target, R, speed=SLOW, tol=0.006, settle=12)
    sc.closing_on = obj  # what this close grasps (``recovery.RecoveryExpert`` fumbles it)
    yield from close_gripper(sc)
    sc.closing_on = None
    if sc.motion == "feedback":
        # the fingers are still closing when the hand starts to rise (on a thin bowl rim, or the
        # moka pot's body above where the open fingers stop); min-jerk's gentle start gives them
        # that time, the feedback carrot (a full lead above at once) does not: rise 2 cm slowly
        yield from move(sc, sc.eef_pos + [0, 0, 0.02], R, speed=SLOW * 0.25, tol=0.004, settle=4)
    up = sc.eef_pos + [0, 0, lift]
    yield from move(sc, up, R, speed=SLOW * 1.5)


def place(sc: Scene, obj: str, target, *, carry_z: float | None = None, release_dz: float = 0.0,
          R=None, jitter: float = 0.005, retreat: float = 0.08):
    """Carry the held ``obj`` so that its body origin reaches ``target`` (+release_dz), release.

    The eef target follows from the grasp offset measured now (eef - object), so the same
    primitive places any object the way it was grasped.
    """
    R = sc.eef_R if R is None else R
    grasp_offset = sc.eef_pos - sc.pos(obj)
    goal = np.asarray(target, dtype=np.float64) + grasp_offset + np.append(sc.jitter(jitter, 2), release_dz)
    z_carry = max(sc.eef_pos[2], goal[2] + 0.05) if carry_z is None else carry_z
    yield from move(sc, [goal[0], goal[1], z_carry], R)
    yield from pause(sc)
    yield from move(sc, goal, R, speed=SLOW * 1.5, tol=0.008)
    yield from open_gripper(sc)
    yield from move(sc, goal + [0, 0, retreat], R, speed=SLOW * 1.5, settle=8, tol=0.015)


def push(sc: Scene, start, end, R, *, grip=GRIPPER_CLOSED, approach_from=(0.0, 0.0, 0.08),
         speed=SLOW, until=None, max_extra: int = 20):
    """Go to ``start`` (via ``start + approach_from``) and push in a straight line to ``end``;
    then keep pushing along the same direction until ``until()`` holds (at most max_extra steps)."""
    start, end = np.asarray(start, dtype=np.float64), np.asarray(end, dtype=np.float64)
    yield from move(sc, start + np.asarray(approach_from), R)  # gripper as it is: clear of what it just released
    if grip != sc.grip:
        yield from hold(sc, 6, grip)
    yield from move(sc, start, R, grip=grip, speed=SLOW, tol=0.008)
    yield from move(sc, end, R, grip=grip, speed=speed, settle=4)
    if until is not None:
        direction = (end - start) / max(np.linalg.norm(end - start), 1e-9)
        for _ in range(max_extra):
            if until():
                break
            yield sc.action(sc.eef_pos + direction * 0.03, R, grip)


def arc(sc: Scene, center, radius: float, angle0: float, angle1: float, z: float, R, *, steps: int, grip=GRIPPER_CLOSED):
    """Move the grip site along a horizontal circular arc about ``center`` (e.g. a door hinge)."""
    center = np.asarray(center, dtype=np.float64)
    for k in range(1, steps + 1):
        a = angle0 + (angle1 - angle0) * min_jerk(k / steps)
        p = center + radius * np.array([np.cos(a), np.sin(a), 0.0])
        p[2] = z
        yield sc.action(p, R, grip)
