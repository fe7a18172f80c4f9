"""Small synthetic demonstration files, without the simulator (tests, notebooks, docs).

* :func:`write_official_style` writes a file exactly the way LIBERO's own
  ``scripts/create_dataset.py`` does: the same groups, keys, dtypes and attributes, no
  compression, no joint velocities, ``obs`` observed after each action.
* :func:`write_ours` writes one of our files (as ``generate`` does, with compressed images
  and ``obs/joint_vel``).

The numbers are synthetic but structured: ``actions[t, 0] = t / 100`` and
``joint_states[t, 0] = t`` make windows easy to check, and images are smooth gradients whose
top row differs from the bottom row, so flips are visible.
"""

from __future__ import annotations

import json

import numpy as np

from clad_lite.demos import hdf5 as H

INSTRUCTION = "put the synthetic block in the synthetic basket"


def synthetic_demo(T: int, image_size: int = 16, state_dim: int = 20, seed: int = 0,
                   joint_vel: bool = True) -> dict:
    rng = np.random.default_rng(seed)
    t = np.arange(T, dtype=np.float64)
    actions = np.clip(rng.uniform(-1, 1, size=(T, 7)), -1, 1)
    actions[:, 0] = t / 100
    actions[:, 6] = np.where(t < T // 2, -1.0, 1.0)
    joint_states = rng.normal(size=(T, 7))
    joint_states[:, 0] = t
    gripper = rng.uniform(0, 0.04, size=(T, 2))
    ee_pos = rng.normal(size=(T, 3))
    quat = rng.normal(size=(T, 4))
    quat /= np.linalg.norm(quat, axis=1, keepdims=True)
    ee_ori = H.quat_to_axis_angle(quat)
    image = np.zeros((T, image_size, image_size, 3), np.uint8)
    image[:] = (np.arange(image_size, dtype=np.uint8) * (200 // image_size))[None, :, None, None]
    image[..., 1] = (t.astype(np.uint8) % 250)[:, None, None]
    obs = {"joint_states": joint_states, "gripper_states": gripper, "ee_pos": ee_pos, "ee_ori": ee_ori,
           "ee_states": np.hstack([ee_pos, ee_ori]), "agentview_rgb": image,
           "eye_in_hand_rgb": image[:, ::-1].copy()}
    if joint_vel:
        obs[H.JOINT_VEL_KEY] = rng.normal(size=(T, 7))
    dones = np.zeros(T, np.uint8)
    dones[-1] = 1
    states = rng.normal(size=(T, state_dim))
    nq = synthetic_position_width(state_dim)
    if nq:  # laid out like MuJoCo's [time, qpos, qvel], the robot's joints first in both (as in LIBERO)
        states[:, 1:8], states[:, 8:10] = joint_states, gripper
        if joint_vel:
            states[:, 1 + nq:1 + nq + 7] = obs[H.JOINT_VEL_KEY]
    return {"actions": actions, "states": states, "rewards": dones.copy(),
            "dones": dones, "robot_states": np.hstack([gripper, ee_pos, quat]), "obs": obs}


def synthetic_position_width(state_dim: int) -> int | None:
    """nq of the synthetic ``states`` (T, state_dim) = [time, qpos (nq), qvel (state_dim - 1 - nq)]:
    positions one wider than velocities, as free joints' quaternions make them; None when too
    narrow to hold the robot's 9 positions and 7 velocities (then the states are plain noise)."""
    nq = (state_dim - 1) // 2 + 1
    return nq if nq >= 9 and state_dim - 1 - nq >= 7 else None


def write_official_style(path, lengths=(30, 24), image_size: int = 16, instruction: str = INSTRUCTION):
    """A file laid out as LIBERO's ``scripts/create_dataset.py`` writes it."""
    import h5py

    with h5py.File(path, "w") as f:
        grp = f.create_group("data")
        grp.attrs["env_name"] = "LIBERO_Tabletop_Manipulation"
        grp.attrs["problem_info"] = json.dumps({"problem_name": "libero_tabletop_manipulation",
                                                "domain_name": "robosuite", "language_instruction": instruction})
        grp.attrs["macros_image_convention"] = "opengl"
        grp.attrs["bddl_file_name"] = "/home/user/libero/bddl_files/libero_10/SYNTHETIC_SCENE.bddl"
        grp.attrs["env_args"] = json.dumps({"type": 1, "env_name": "LIBERO_Tabletop_Manipulation",
                                            "problem_name": "libero_tabletop_manipulation",
                                            "bddl_file": "SYNTHETIC_SCENE.bddl", "env_kwargs": {}})
        total = 0
        for i, T in enumerate(lengths):
            demo = synthetic_demo(T, image_size, seed=i, joint_vel=False)
            ep_data_grp = grp.create_group(f"demo_{i}")
            obs_grp = ep_data_grp.create_group("obs")
            for key in ("gripper_states", "joint_states", "ee_states", "ee_pos", "ee_ori",
                        "agentview_rgb", "eye_in_hand_rgb"):
                obs_grp.create_dataset(key, data=demo["obs"][key])
            for key in ("actions", "states", "robot_states", "rewards", "dones"):
                ep_data_grp.create_dataset(key, data=demo[key])
            ep_data_grp.attrs["num_samples"] = T
            ep_data_grp.attrs["model_file"] = "<mujoco model='synthetic'/>"
            ep_data_grp.attrs["init_state"] = demo["states"][0]
            total += T
        grp.attrs["num_demos"] = len(lengths)
        grp.attrs["total"] = total
    return path


def write_ours(path, lengths=(30, 24), image_size: int = 16, instruction: str = INSTRUCTION,
               images: bool = True, image_stride: int = 1, state_dim: int = 20):
    """A file laid out as ``generate`` writes it (``images=False``: as after pass 1 only;
    ``image_stride`` = s: images only at every s-th step, as ``generate --image-stride s``;
    ``state_dim``: width of the flattened sim ``states``)."""
    import h5py

    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        H.write_data_attrs(data, instruction=instruction, problem_name="SYNTHETIC_SCENE",
                           bddl_file="SYNTHETIC_SCENE.bddl", env_args={"type": 1},
                           extra={"clad_lite_format": H.FORMAT_VERSION, "obs_convention": H.OBS_BEFORE_ACTION,
                                  "images_rendered": images, "suite": "libero_10", "task_id": 0})
        for i, T in enumerate(lengths):
            demo = synthetic_demo(T, image_size, state_dim=state_dim, seed=i)
            strided = {}
            if not images or image_stride > 1:
                for key in H.IMAGE_KEYS:
                    strided[key] = demo["obs"].pop(key)[::image_stride]
            group = H.write_demo(data, f"demo_{i}", demo, attrs={"attempt": i, "success": True})
            if images and image_stride > 1:
                for key, frames in strided.items():
                    H.write_strided_images(group["obs"], key, frames, T, image_stride)
        data.attrs["num_demos"] = len(lengths)
        data.attrs["total"] = int(sum(lengths))
        if images:
            data.attrs["image_stride"] = image_stride
    return path
