"""One plan per task, derived from the task's BDDL goal predicates.

``plan_for(scene)`` reads ``parsed_problem["goal_state"]`` and turns every predicate into
primitives:

* ``(turnon stove)``            -> :func:`turn_on_knob` (skipped when already on);
* ``(in obj region)`` / ``(on obj region-or-object)`` -> :func:`pick` + a placement chosen by the
  target's kind (open container, region on a table or a stove, plate, drawer, microwave);
* ``(close articulated)``       -> :func:`close_drawer` / :func:`close_door`.

Order: switches first, then placements in goal order, then closing (a drawer or door is closed
over what was put inside). ``plan_for(scene, resume=True)`` plans from a mid-task scene instead
(what already holds is skipped, a held object is placed at once): the expert that takes over in
``recovery.RecoveryExpert``'s demonstrations. Before a top-down grasp, a tall object standing where the open hand
has to go is moved aside (:func:`clear_hand_footprint`); objects bound for a microwave are taken
by the handle (:func:`place_through_front`).

Per-object knowledge (grasp point, allowed grasp yaws, release height) lives in the small
``GRASPS`` table, per-fixture knowledge in the placement/closing functions, so a new LIBERO
suite mostly needs new table rows, not new plans.
"""

from __future__ import annotations

import re

import numpy as np

from .control import GRIPPER_CLOSED, GRIPPER_OPEN, gripper_down, min_jerk
from .primitives import (
    FAST,
    SLOW,
    Scene,
    clearance_yaw,
    hold,
    move,
    nearest_grasp_yaw,
    open_gripper,
    pause,
    pick,
    place,
    push,
)

PI = np.pi


def category(name: str) -> str:
    """'alphabet_soup_1' -> 'alphabet_soup'."""
    return re.sub(r"_\d+$", "", name)


# grasp specs per object category (measured from the objects' collision geoms):
#   yaws: candidate grasp yaws relative to the object's own yaw (None: world yaws, symmetric object)
#   world_yaws / world_offset: the same in the world frame (symmetric objects such as a bowl)
#   offset: grip point relative to the body origin, in the object's yaw frame
#   lift: lift height after closing; precise: servo the xy error out before the final descent
#   rim: pinch a cup wall (centre, radius, height in the object frame; handle direction)
#   handle: grip point and yaw on a handle (used where the hand cannot go above the target)
GRASPS = {
    "alphabet_soup": {"yaws": None, "offset": (0.0, 0.0, 0.005)},
    "tomato_sauce": {"yaws": None, "offset": (0.0, 0.0, 0.005)},
    "cream_cheese": {"yaws": (0.0, PI), "offset": (0.0, 0.0, 0.0)},
    "butter": {"yaws": (0.0, PI), "offset": (0.0, 0.0, 0.0)},
    # moka pot: fingers across the 6.8 cm body (object x), below the lid knob
    "moka_pot": {"yaws": (PI / 2, -PI / 2), "offset": (0.0, 0.0, 0.03), "precise": True},
    # bowl: pinch the rim wall with the fingers along world x (offset to the rim, world frame)
    "akita_black_bowl": {"world_yaws": (PI / 2,), "world_offset": (0.047, 0.0, 0.043)},
    # mugs are wider than the open gripper: pinch the cup wall, fingers radial, away from the
    # handle (cup centre / grip radius / grip height in the object frame; handle direction)
    "porcelain_mug": {"rim": {"center": (0.0125, 0.0), "radius": 0.041, "z": 0.08, "handle": PI}},
    "white_yellow_mug": {"rim": {"center": (-0.0185, 0.0), "radius": 0.044, "z": 0.076, "handle": 0.0},
                             # by the handle's outer bar (object +x), fingers across it (object y)
                             "handle": {"offset": (0.063, 0.0, 0.068), "yaw": 0.0}},
    "chocolate_pudding": {"yaws": (0.0, PI), "offset": (0.0, 0.0, 0.0)},
    # a standing book: pinch its top edge across the 2.8 cm thickness (object x)
    "black_book": {"yaws": (PI / 2, -PI / 2), "offset": (0.0, -0.012, 0.112), "lift": 0.10},
}
WORLD_YAWS = (0.0, PI / 4, -PI / 4, PI / 2)


def grasp_yaw(sc: Scene, obj: str, spec: dict) -> float:
    if "world_yaws" in spec:
        return clearance_yaw(sc, obj, spec["world_yaws"])
    if spec.get("yaws") is None:
        return clearance_yaw(sc, obj, WORLD_YAWS)
    base = sc.yaw(obj)
    cands = [np.arctan2(np.sin(base + y), np.cos(base + y)) for y in spec["yaws"]]
    # keep the wrist turn small: prefer yaws in [-pi/2, pi/2]
    cands = sorted(cands, key=abs)
    return clearance_yaw(sc, obj, cands)


def rim_grasp(sc: Scene, obj: str, rim: dict):
    """Pinch a cup wall: try grasp angles around the cup (not at the handle), keep the one
    whose hand (it spans ~10 cm along the finger axis) stays farthest from other objects."""
    yaw0 = sc.yaw(obj)
    c, s = np.cos(yaw0), np.sin(yaw0)
    Rz = np.array([[c, -s], [s, c]])
    center = sc.pos(obj)[:2] + Rz @ np.asarray(rim["center"])
    others = [sc.pos(o)[:2] for o in sc.movable_objects() if o != obj]
    best = None
    for k in range(8):
        phi_local = k * PI / 4
        if abs(np.arctan2(np.sin(phi_local - rim["handle"]), np.cos(phi_local - rim["handle"]))) < PI / 3:
            continue
        phi = yaw0 + phi_local
        radial = np.array([np.cos(phi), np.sin(phi)])
        grip = center + rim["radius"] * radial
        ends = [grip + 0.09 * radial, grip - 0.02 * radial]
        clear = min([np.linalg.norm(e - o) for e in ends for o in others] + [1.0])
        clear -= 0.02 * abs(np.sin(phi))  # mild preference for simple wrist angles
        if best is None or clear > best[0]:
            best = (clear, phi, grip)
    _, phi, grip = best
    local = Rz.T @ (grip - sc.pos(obj)[:2])
    yield from pick(sc, obj, yaw=phi + PI / 2, offset=(local[0], local[1], rim["z"]), lift=0.12)


def pick_object(sc: Scene, obj: str, by_handle: bool = False):
    spec = GRASPS[category(obj)]
    if by_handle:
        h = spec["handle"]
        yield from pick(sc, obj, yaw=sc.yaw(obj) + h["yaw"], offset=h["offset"], lift=0.10, jitter=0.002)
        return
    if "rim" in spec:
        yield from rim_grasp(sc, obj, spec["rim"])
        return
    yaw = grasp_yaw(sc, obj, spec)
    if "world_offset" in spec:  # rim grasp: take the side of the rim farthest from other objects
        o = np.array(spec["world_offset"], dtype=np.float64)
        sides = [o, o * [-1, -1, 1]]
        others = [sc.pos(x)[:2] for x in sc.movable_objects() if x != obj]
        if others:
            sides.sort(key=lambda v: -min(np.linalg.norm(sc.pos(obj)[:2] + v[:2] - q) for q in others))
        yield from pick(sc, obj, yaw=yaw, offset=sides[0], lift=spec.get("lift", 0.15), world_offset=True)
        return
    yield from clear_hand_footprint(sc, obj, yaw, sc.pos(obj)[2] + spec.get("offset", (0, 0, 0))[2])
    precise = spec.get("precise", False)
    yield from pick(sc, obj, yaw=yaw, offset=spec.get("offset", (0, 0, 0)), lift=spec.get("lift", 0.15),
                    precise=precise, jitter=0.0 if precise else 0.004)


def hand_blockers(sc: Scene, obj: str, yaw: float, grip_z: float, along: float = 0.105, across: float = 0.04):
    """Tall objects that the open hand would hit when grasping ``obj`` at this yaw: the Panda
    hand spans ~+-10 cm along the finger axis and starts ~2.3 cm above the grip site."""
    p = sc.pos(obj)[:2]
    axis = np.array([np.sin(yaw), -np.cos(yaw)])
    normal = np.array([np.cos(yaw), np.sin(yaw)])
    fixed = {_parent(sc, g[2]) or g[2] for g in _targets(sc.problem.parsed_problem["goal_state"]) if len(g) > 2}
    out = []
    for o in sc.movable_objects():
        if o == obj or o in fixed:  # containers and plates are targets, not clutter
            continue
        lo, hi = sc.extent(o)
        if hi[2] < grip_z + 0.02:
            continue
        corners = np.array([[x, y] for x in (lo[0], hi[0]) for y in (lo[1], hi[1])]) - p
        a, n = corners @ axis, corners @ normal
        if a.max() > -along and a.min() < along and n.max() > -across and n.min() < across:
            out.append((o, float(np.mean(a))))
    return out


def clear_hand_footprint(sc: Scene, obj: str, yaw: float, grip_z: float):
    """Move a tall object that stands where the hand has to go: grasp it high, shift it a few
    centimetres away along the finger axis, set it down (what a demonstrator does too)."""
    for blocker, along in hand_blockers(sc, obj, yaw, grip_z)[:1]:
        sc.tempo = min(sc.tempo * 1.2, 1.35)  # extra work: the demonstrator hurries a little
        lo, hi = sc.extent(blocker)
        r = 0.5 * max(hi[0] - lo[0], hi[1] - lo[1])
        axis = np.array([np.sin(yaw), -np.cos(yaw)]) * np.sign(along)
        shift = 0.105 + r - abs(along) + 0.02
        others = [sc.extent(o) for o in sc.problem.obj_body_id if o not in (blocker, obj) and o in sc.problem.objects_dict]
        goal_objects = placed_objects(sc.problem)
        best, best_score = None, -np.inf
        for turn in (0.0, 0.5, -0.5, 0.9, -0.9):
            c, s_ = np.cos(turn), np.sin(turn)
            direction = np.array([c * axis[0] - s_ * axis[1], s_ * axis[0] + c * axis[1]])
            dest = sc.pos(blocker)[:2] + direction * shift / max(c, 0.5)
            clear = min([np.linalg.norm(np.maximum(0, np.maximum(b[0][:2] - dest, dest - b[1][:2]))) for b in others] + [0.2])
            # and keep out of the way of the objects still to be grasped (their hands need ~12 cm)
            pending = min([np.linalg.norm(sc.pos(o)[:2] - dest) for o in goal_objects if o != obj] + [0.3])
            score = min(clear - r, 0.05) + min(pending - 0.16, 0.0) - 0.01 * abs(turn)
            if score > best_score:
                best, best_score = dest, score
        g_yaw = clearance_yaw(sc, blocker, WORLD_YAWS)
        grip = hi[2] - 0.04 - sc.pos(blocker)[2]
        yield from pick(sc, blocker, yaw=g_yaw, offset=(0.0, 0.0, grip), lift=0.015, world_offset=True, approach=0.06)
        target = np.array([best[0], best[1], sc.pos(blocker)[2] + 0.003])
        yield from place(sc, blocker, target, carry_z=sc.eef_pos[2], jitter=0.0, retreat=0.05)


# ====================================================================== placements
def place_in_container(sc: Scene, obj: str, region: str, slot: int, n_slots: int):
    """Drop into an open container (basket): above the rim, at a slot of its own."""
    c = sc.pos(region)
    half = sc.site_size(region)
    container = sc.problem.object_sites_dict[region].parent_name if hasattr(sc.problem.object_sites_dict[region], "parent_name") else None
    rim = sc.extent(container)[1][2] if container in sc.problem.obj_body_id else c[2] + half[2]
    lo, _ = sc.extent(obj)
    below = sc.pos(obj)[2] - lo[2]  # body origin above the object's lowest point
    # spread the objects along the container's longer side
    along = np.array([1.0, 0.0]) if half[0] >= half[1] else np.array([0.0, 1.0])
    spread = (slot - (n_slots - 1) / 2) * 0.07 if n_slots > 1 else 0.0
    target = c.copy()
    target[:2] += along * spread
    target[2] = rim + below + 0.015
    yield from place(sc, obj, target, carry_z=max(sc.eef_pos[2], target[2] + 0.06 + (sc.eef_pos[2] - sc.pos(obj)[2])), jitter=0.008)


# ====================================================================== plan
def _targets(goal):
    return [(p[0].lower(), *p[1:]) for p in goal]


def placed_objects(problem) -> list[str]:
    """The objects the task's goal puts somewhere (``in`` / ``on`` predicates), in goal order."""
    return [g[1] for g in _targets(problem.parsed_problem["goal_state"]) if g[0] in ("in", "on")]


def plan_for(sc: Scene, resume: bool = False):
    """The task's plan from the episode's start, or, with ``resume``, from the scene as it is now
    (mid-task: after a policy's steps or a fumbled grasp): goal predicates that already hold are
    skipped, an object already in the hand is placed without a new pick, and otherwise the hand
    first opens and rises clear (:func:`free_hand`). ``resume=False`` is the plan of the data sets."""
    goal = _targets(sc.problem.parsed_problem["goal_state"])
    placements = [(i, g) for i, g in enumerate(goal) if g[0] in ("in", "on")]
    holds = (lambda index: sc.env.goal_status()[index]) if resume else (lambda index: False)
    if resume:
        switches_left = any(g[0] == "turnon" and not holds(i) for i, g in enumerate(goal))
        first = next((g[1] for i, g in placements if not holds(i)), None)
        yield from free_hand(sc, keep=None if switches_left else first)
    for pred in goal:
        if pred[0] == "turnon":
            yield from turn_on_knob(sc, pred[1])
    for slot, (index, (kind, obj, target)) in enumerate(placements):
        if holds(index):
            continue
        if not (resume and held_object(sc) == obj):
            yield from pick_object(sc, obj, by_handle=_is_oven(sc, target))
        yield from place_object(sc, kind, obj, target, slot, len(placements))
        yield from pause(sc)
    for index, pred in enumerate(goal):
        if pred[0] == "close" and not holds(index):
            yield from close_articulated(sc, pred[1])
    yield from hold(sc, 3)


# ====================================================================== resuming mid-task
# the Panda's finger joints are +-0.04 m apart when open; below this the hand counts as (partly) closed
FINGERS_OPEN = 0.07
# a resumed plan first lifts a free hand to this height above the table (the approach height of a pick)
CLEAR_HEIGHT = 0.12


def held_object(sc: Scene) -> str | None:
    """The movable object that both finger pads touch now (robosuite's ``_check_grasp``), if any."""
    problem = sc.problem
    gripper = problem.robots[0].gripper
    for name in sc.movable_objects():
        if problem._check_grasp(gripper=gripper, object_geoms=problem.get_object(name)):
            return name
    return None


def free_hand(sc: Scene, keep: str | None = None):
    """Start of a resumed plan: if the hand holds ``keep``, keep holding it (the gripper command
    stays closed); otherwise open the hand if it is closed or holds something else, and rise
    clear of the objects, so that the next pick starts as it would in a fresh plan."""
    held = held_object(sc)
    if keep is not None and held == keep:
        sc.grip = GRIPPER_CLOSED
        return
    fingers = np.asarray(sc.obs["robot0_gripper_qpos"], dtype=np.float64)
    if held is not None or fingers[0] - fingers[1] < FINGERS_OPEN:
        yield from open_gripper(sc)
    clear = min(sc.extent(o)[0][2] for o in sc.movable_objects()) + CLEAR_HEIGHT
    if sc.eef_pos[2] < clear:
        yield from move(sc, [sc.eef_pos[0], sc.eef_pos[1], clear], sc.eef_R, grip=GRIPPER_OPEN, settle=0)


def place_on_region(sc: Scene, obj: str, region: str, slot: int, n_slots: int):
    """Set down on a flat region (a stove's cook region): body origin over the region centre,
    the object's bottom 1 cm above the surface; several objects share it along x."""
    c = sc.pos(region)
    lo, _ = sc.extent(obj)
    below = sc.pos(obj)[2] - lo[2]
    target = c.copy()
    if _parent(sc, region) is None:  # a table region: the free spot in it farthest from the others
        target[:2] = free_spot(sc, obj, c[:2], sc.site_size(region)[:2])
    else:
        target[0] += (slot - (n_slots - 1) / 2) * 0.08 if n_slots > 1 else 0.0
    surface = c[2] + sc.site_size(region)[2]
    parent = _parent(sc, region)
    if parent is None:  # a region of the table: the object's bottom where it stands now
        surface = _table_height(sc, obj)
    else:
        plo, phi = sc.extent(parent)
        inside = (plo[:2] < c[:2]).all() and (c[:2] < phi[:2]).all()
        surface = phi[2] if inside else surface
    target[2] = surface + below + 0.01
    yield from place(sc, obj, target, jitter=0.006)


def place_on_object(sc: Scene, obj: str, base: str):
    """Set down on another object (a plate): body origins aligned, 1 cm above its top."""
    target = sc.pos(base)
    lo, _ = sc.extent(obj)
    target[2] = sc.extent(base)[1][2] + (sc.pos(obj)[2] - lo[2]) + 0.01
    yield from place(sc, obj, target, jitter=0.004)


def place_in_slot(sc: Scene, obj: str, region: str):
    """Lower a held flat object (a book) upright into a narrow slot: turn it about z so that its
    thin side (object x) lies across the slot's narrow side, then lower it until its body
    origin is inside the slot region; release there (the walls keep it upright)."""
    c, half = sc.pos(region), sc.site_size(region)
    # narrow side of the slot along world x (as for the caddy) or y
    want = [0.0, PI] if half[0] <= half[1] else [PI / 2, -PI / 2]
    oy = sc.yaw(obj)
    turn = min((np.arctan2(np.sin(w - oy), np.cos(w - oy)) for w in want), key=abs)
    Rz = np.array([[np.cos(turn), -np.sin(turn), 0], [np.sin(turn), np.cos(turn), 0], [0, 0, 1]])
    spec = GRASPS[category(obj)]
    # body origin so that the object's centre (offset x, y of the grasp spec) is over the slot centre
    oyn = oy + turn
    off = np.array([spec["offset"][0], spec["offset"][1]])
    centre_off = np.array([np.cos(oyn) * off[0] - np.sin(oyn) * off[1], np.sin(oyn) * off[0] + np.cos(oyn) * off[1]])
    grasp = Rz @ (sc.eef_pos - sc.pos(obj))
    R = Rz @ sc.eef_R
    lo, _ = sc.extent(obj)
    below = sc.pos(obj)[2] - lo[2]
    origin = np.array([c[0] - centre_off[0], c[1] - centre_off[1], c[2] - half[2] + below + 0.05])
    origin[:2] += sc.jitter(0.003, 2)
    parent = _parent(sc, region)
    top = sc.extent(parent)[1][2] if parent else c[2] + half[2]
    above = origin + grasp
    above[2] = top + below + 0.04 + grasp[2]
    yield from move(sc, above, R, speed=FAST * 0.8)
    yield from hold(sc, 4 + int(sc.rng.integers(0, 3)))  # let the book stop swinging
    # servo on the object's measured pose (it may have pivoted in the grip) while descending
    for frac in (0.5, 1.0):
        err = origin[:2] - sc.pos(obj)[:2]
        goal = sc.eef_pos + np.array([err[0], err[1], 0.0])
        goal[2] = above[2] + (origin[2] + grasp[2] - above[2]) * frac
        yield from move(sc, goal, R, speed=SLOW, tol=0.006)
    yield from open_gripper(sc)
    yield from move(sc, sc.eef_pos + [0, 0, 0.08], R, speed=SLOW * 1.5, settle=0)


def place_in_drawer(sc: Scene, obj: str, region: str):
    """Lower into an open drawer, centred in it (it must clear the drawer's front wall)."""
    c = sc.pos(region)
    half = sc.site_size(region)
    lo, _ = sc.extent(obj)
    below = sc.pos(obj)[2] - lo[2]
    target = np.array([c[0], c[1] + 0.005, c[2] - half[2] + below + 0.03])
    yield from place(sc, obj, target, carry_z=target[2] + (sc.eef_pos[2] - sc.pos(obj)[2]) + 0.10, jitter=0.004)


def free_spot(sc: Scene, obj: str, center, half, frac: float = 0.6) -> np.ndarray:
    """The point of a region (grid over ``frac`` of its half-size) farthest from the footprints
    of the other objects, with a mild pull toward the centre."""
    boxes = [sc.extent(o) for o in sc.problem.obj_body_id if o != obj and o in sc.problem.objects_dict]
    best, best_score = np.asarray(center, dtype=np.float64), -np.inf
    for u in np.linspace(-frac, frac, 5):
        for v in np.linspace(-frac, frac, 5):
            p = np.asarray(center) + np.array([u, v]) * half
            d = min([np.linalg.norm(np.maximum(0, np.maximum(lo[:2] - p, p - hi[:2]))) for lo, hi in boxes] + [0.2])
            score = min(d, 0.08) - 0.1 * np.linalg.norm(np.array([u, v]) * half)
            if score > best_score:
                best, best_score = p, score
    return best


def _is_oven(sc: Scene, region: str) -> bool:
    """A region inside a fixture with a door (a microwave): reachable only from the front."""
    return "microwave" in (_parent(sc, region) or "")


def _door_joint(sc: Scene, fixture: str) -> str:
    names = [sc.sim.model.joint_id2name(j) for j in range(sc.sim.model.njnt)]
    return next(n for n in names if n and n.startswith(fixture) and n != fixture)


def place_through_front(sc: Scene, obj: str, region: str):
    """Into a box open at the front (-y) whose top the hand must never go under (a microwave):
    the mug is held by its handle; turn it so the handle points at the robot, slide it in
    horizontally just above the floor, release it in the opening, then poke it deeper with the
    closed fingers leaning forward (the hand stays in front of the opening's top edge)."""
    c, half = sc.pos(region), sc.site_size(region)
    front = c[1] - half[1]  # the opening's plane is about here
    floor = c[2] - half[2] + 0.01
    # wrist turn that points the handle (object +x) at -y
    oy = sc.yaw(obj)
    turn = np.arctan2(np.sin(-PI / 2 - oy), np.cos(-PI / 2 - oy))
    Rz = np.array([[np.cos(turn), -np.sin(turn), 0], [np.sin(turn), np.cos(turn), 0], [0, 0, 1]])
    grasp = Rz @ (sc.eef_pos - sc.pos(obj))
    R = Rz @ sc.eef_R
    lo, _ = sc.extent(obj)
    below = sc.pos(obj)[2] - lo[2]
    x = c[0] - 0.02 + sc.jitter(0.01, 1)[0]
    z = floor + below + 0.015
    stage = np.array([x, front - 0.13, z])
    inside = np.array([x, front - 0.02, z])
    yield from move(sc, stage + grasp, R)
    yield from move(sc, inside + grasp, R, speed=SLOW, tol=0.008)
    yield from move(sc, inside + grasp - [0, 0, 0.008], R, speed=SLOW, settle=3)
    yield from open_gripper(sc)
    yield from move(sc, sc.eef_pos + [0, -0.08, 0.0], R, speed=SLOW * 1.5, settle=0)
    # poke deeper: closed fingers leaning forward (+y), hand across the opening, at handle height;
    # the hand itself stays in front of the opening's top edge
    Rp = gripper_down(nearest_grasp_yaw(sc, PI / 2), tilt_x=0.6)
    mug = sc.pos(obj)
    handle_end = sc.extent(obj)[0][1]
    depth = max((c[1] + 0.005) - mug[1], (front + 0.012) - handle_end)
    depth = min(depth, front + 0.03 - handle_end)  # the fingertips reach ~3 cm past the edge
    p0 = np.array([mug[0], handle_end - 0.025, mug[2] + 0.05])
    yield from move(sc, p0 + [0, -0.03, 0.03], Rp, grip=GRIPPER_CLOSED, settle=3)
    yield from move(sc, p0, Rp, speed=SLOW, tol=0.008, settle=4)
    yield from move(sc, p0 + [0, 0.02 + depth, 0.0], Rp, speed=SLOW, settle=4)
    yield from move(sc, sc.eef_pos + [0, -0.06, 0.0], Rp, speed=SLOW * 2, settle=0)


def _table_height(sc: Scene, obj: str) -> float:
    """Height of the table top: the lowest bottom among the movable objects not held."""
    return float(min(sc.extent(o)[0][2] for o in sc.movable_objects() if o != obj))


def _parent(sc: Scene, site: str):
    p = getattr(sc.problem.object_sites_dict.get(site), "parent_name", None)
    return p if p in sc.problem.obj_body_id else None


def place_object(sc: Scene, kind: str, obj: str, target: str, slot: int, n_slots: int):
    parent = _parent(sc, target) or ""
    if "contain_region" in target and category(parent) == "basket":
        yield from place_in_container(sc, obj, target, slot, n_slots)
    elif _is_oven(sc, target):
        yield from place_through_front(sc, obj, target)
    elif "caddy" in parent and kind == "in":
        yield from place_in_slot(sc, obj, target)
    elif "cabinet" in parent and kind == "in":
        yield from place_in_drawer(sc, obj, target)
    elif kind == "on" and target in sc.problem.obj_body_id:
        yield from place_on_object(sc, obj, target)
    elif kind == "on" and target in sc.problem.object_sites_dict:
        yield from place_on_region(sc, obj, target, slot, n_slots)
    else:
        raise NotImplementedError(f"no placement for ({kind} {obj} {target})")


def turn_on_knob(sc: Scene, stove: str):
    """Turn a stove knob (hinge about z) on: fingers closed and lying along the knob ridge
    (world x), grip site beside the ridge's end, one fast sweep along +y."""
    joint = f"{stove}_button"
    if sc.joint(joint) >= 0.5:
        return
    knob = _body_pos(sc, joint)  # the knob body carries the joint's name
    R = gripper_down(nearest_grasp_yaw(sc, PI / 2))
    for x_off in (0.045, 0.035):  # a second sweep, nearer the axis, if the first slipped off the ridge
        start = knob + np.array([x_off, -0.04, 0.035]) + np.append(sc.jitter(0.003, 2), 0.0)
        end = start + np.array([0.0, 0.075, 0.0])
        yield from push(sc, start, end, R, approach_from=(0.0, 0.0, 0.06), speed=0.04,
                        until=lambda: sc.joint(joint) >= 0.6, max_extra=8)
        yield from move(sc, sc.eef_pos + [0, 0, 0.07], R, grip=GRIPPER_CLOSED, settle=0)
        if sc.joint(joint) >= 0.5:
            break
    yield from hold(sc, 4, GRIPPER_OPEN)


def _body_pos(sc: Scene, body: str) -> np.ndarray:
    return np.asarray(sc.sim.data.get_body_xpos(body)).copy()


def close_articulated(sc: Scene, name: str):
    if "cabinet" in name:
        yield from close_drawer(sc, name)
    elif "microwave" in name:
        yield from close_door(sc, name)
    else:
        raise NotImplementedError(f"no closing primitive for {name}")


def close_drawer(sc: Scene, region: str):
    """Push a drawer shut along +y: closed gripper pitched ~0.6 rad about x so the hand stays
    clear of the cabinet front, on the drawer's front face, until the slide joint is closed."""
    parent = _parent(sc, region)
    level = region.replace(parent + "_", "").replace("_region", "")
    joint = f"{parent}_{level}_level"
    body = sc.sim.model.body_id2name(sc.sim.model.jnt_bodyid[sc.sim.model.joint_name2id(joint)])
    # the handle is the drawer's front-most geom (LIBERO drawers open toward -y)
    lo, hi = min(sc.geom_boxes(body), key=lambda b: b[0][1])
    handle = (lo + hi) / 2
    R = gripper_down(nearest_grasp_yaw(sc, PI / 2), tilt_x=0.6)  # hand across the drawer, fingertips leaning forward
    start = np.array([handle[0] + sc.jitter(0.01, 1)[0], lo[1] - 0.012, handle[2] + 0.005])
    end = start + np.array([0.0, -sc.joint(joint) + 0.015, 0.0])
    yield from push(sc, start, end, R, approach_from=(0.0, -0.05, 0.08), speed=0.02,
                    until=lambda: sc.joint(joint) > 0.002, max_extra=25)
    yield from move(sc, sc.eef_pos + [0, -0.06, 0.06], R, grip=GRIPPER_CLOSED, settle=0)


def close_door(sc: Scene, fixture: str, radius: float = 0.13):
    """Swing a hinged door (vertical axis) shut: a closed, vertical gripper comes down beside
    the door's outer face at ``radius`` from the hinge and follows the door's arc."""
    joint = _door_joint(sc, fixture)
    if sc.eef_pos[2] < 1.15:  # rise first: never sweep through the open door
        yield from move(sc, [sc.eef_pos[0], sc.eef_pos[1], 1.2], sc.eef_R, grip=GRIPPER_CLOSED, settle=0)
    jid = sc.sim.model.joint_name2id(joint)
    hinge = np.asarray(sc.sim.data._data.xanchor[jid]).copy()
    q0 = sc.joint(joint)
    hi_q = sc.sim.model.jnt_range[jid][1]
    # door direction angle in the world at q: measured now from the door body's geoms
    body = sc.sim.model.body_id2name(sc.sim.model.jnt_bodyid[jid])
    boxes = sc.geom_boxes(body)
    far = max(boxes, key=lambda b: np.linalg.norm((b[0][:2] + b[1][:2]) / 2 - hinge[:2]))
    d = (far[0][:2] + far[1][:2]) / 2 - hinge[:2]
    ang0 = np.arctan2(d[1], d[0])
    # LIBERO's microwave: closed = the upper joint limit, and q grows with the door's world angle
    closing = hi_q - q0  # door angle still to go
    z = hinge[2] + sc.jitter(0.01, 1)[0]
    offset = 0.045  # from the door's centre line to the pushing finger, on the outer side

    def at(a):
        n = np.array([np.sin(a), -np.cos(a)])  # outer side normal (the side the door moves away from)
        return np.append(hinge[:2] + radius * np.array([np.cos(a), np.sin(a)]) + offset * n, z)

    yaw = lambda a: nearest_grasp_yaw(sc, a + PI / 2)
    start = at(ang0)
    R0 = gripper_down(yaw(ang0))
    yield from move(sc, [start[0], start[1], max(sc.eef_pos[2], 1.2)], R0, grip=GRIPPER_CLOSED, settle=4)
    yield from move(sc, start, R0, speed=SLOW * 1.5, tol=0.008)
    n = max(30, int(abs(closing) / 0.04 / sc.tempo))
    prev = ang0
    for k in range(1, n + 1):
        a = ang0 + (closing + 0.12) * min_jerk(k / n)
        yield sc.action(at(a), gripper_down(yaw(a)), GRIPPER_CLOSED)
        prev = a
    for _ in range(15):
        if sc.joint(joint) > hi_q - 0.004:
            break
        yield sc.action(at(prev), gripper_down(yaw(prev)), GRIPPER_CLOSED)
    yield from hold(sc, 3)
    yield from move(sc, sc.eef_pos + [0, -0.06, 0.05], sc.eef_R, speed=SLOW * 1.5, settle=0)
