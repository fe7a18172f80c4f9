"""The demonstration file layout: writing, reading, validation and ``data-info`` (no simulator)."""

import json

import h5py
import numpy as np
import pytest

from clad_lite.cli import UserError
from clad_lite.demos import hdf5 as H
from clad_lite.demos import info
from clad_lite.demos.fixtures import (
    INSTRUCTION,
    synthetic_demo,
    write_official_style,
    write_ours,
)


@pytest.fixture
def official(tmp_path):
    return write_official_style(tmp_path / "official_demo.hdf5", lengths=(30, 24))


@pytest.fixture
def ours(tmp_path):
    return write_ours(tmp_path / "ours_demo.hdf5", lengths=(30, 24))


def test_round_trip_ours(tmp_path):
    path = tmp_path / "rt.hdf5"
    demo = synthetic_demo(17, image_size=16, seed=3)
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        H.write_data_attrs(data, instruction="do it", problem_name="P", bddl_file="x.bddl",
                           env_args={"type": 1}, extra={"clad_lite_format": H.FORMAT_VERSION,
                                                        "obs_convention": H.OBS_BEFORE_ACTION})
        H.write_demo(data, "demo_0", demo, attrs={"attempt": 5})
    with H.DemoFile(path) as f:
        summary = f.validate(deep=True)
        assert summary.ours and summary.obs_convention == H.OBS_BEFORE_ACTION
        assert summary.lengths == {"demo_0": 17} and summary.image_size == (16, 16)
        assert f.instruction == "do it"
        keys = ["actions", "states", "rewards", "dones", "robot_states"] + [f"obs/{k}" for k in demo["obs"]]
        got = f.read("demo_0", keys)
        for key in keys:
            expected = demo["obs"][key[4:]] if key.startswith("obs/") else demo[key]
            np.testing.assert_array_equal(got[key], expected)
            assert got[key].dtype == np.asarray(expected).dtype
        image = f.dataset("demo_0", "obs/agentview_rgb")
        assert image.compression == "gzip" and image.chunks == (1, 16, 16, 3)
        assert f.group("demo_0").attrs["num_samples"] == 17
        # frame access with repeated, unsorted indices
        np.testing.assert_array_equal(f.read("demo_0", ["obs/agentview_rgb"], frames=[5, 0, 5])["obs/agentview_rgb"],
                                      demo["obs"]["agentview_rgb"][[5, 0, 5]])
        many = list(range(16, -1, -1)) + [3, 3]  # > 16 distinct frames: one contiguous read
        np.testing.assert_array_equal(f.read("demo_0", ["obs/ee_pos"], frames=many)["obs/ee_pos"],
                                      demo["obs"]["ee_pos"][many])
        with pytest.raises(H.DemoFormatError, match=r"demo_0/actions: cannot read data.*out of range"):
            f.read("demo_0", ["actions"], frames=[17])


def test_reads_official_layout(official):
    with H.DemoFile(official) as f:
        summary = f.validate(deep=True)
        assert not summary.ours and summary.obs_convention == H.OBS_AFTER_ACTION
        assert summary.instruction == INSTRUCTION
        assert summary.lengths == {"demo_0": 30, "demo_1": 24}
        assert summary.image_size == (16, 16)
        assert H.JOINT_VEL_KEY not in summary.obs_keys
        assert f.dataset("demo_0", "obs/agentview_rgb").compression is None
        assert f.env_args["type"] == 1 and f.bddl_file_name.endswith(".bddl")


def test_demo_order_is_numeric(tmp_path):
    path = write_ours(tmp_path / "many.hdf5", lengths=(3,) * 12, image_size=4)
    with H.DemoFile(path) as f:
        assert f.demos[:3] == ["demo_0", "demo_1", "demo_2"] and f.demos[-1] == "demo_11"


def test_pass1_file_without_images_is_valid_but_images_can_be_required(tmp_path):
    path = write_ours(tmp_path / "p1.hdf5", images=False)
    summary = H.validate_file(path)
    assert summary.image_size is None and not summary.images_rendered
    with pytest.raises(H.DemoFormatError, match=r"data/demo_0/obs/agentview_rgb: missing"):
        H.validate_file(path, require_images=True)


def _edit(path, fn):
    with h5py.File(path, "r+") as f:
        fn(f["data"])
    return path


@pytest.mark.parametrize("which", ["official", "ours"])
def test_missing_key_names_file_demo_and_key(which, request):
    path = _edit(request.getfixturevalue(which), lambda d: d["demo_1/obs"].__delitem__("joint_states"))
    with pytest.raises(H.DemoFormatError) as error:
        H.validate_file(path)
    assert str(path) in str(error.value) and "data/demo_1/obs/joint_states: missing" in str(error.value)
    assert error.value.demo == "demo_1" and error.value.key == "obs/joint_states"


def test_truncated_demo(ours):
    def truncate(data):
        images = data["demo_0/obs/agentview_rgb"][:25]
        del data["demo_0/obs/agentview_rgb"]
        data["demo_0/obs"].create_dataset("agentview_rgb", data=images)

    with pytest.raises(H.DemoFormatError, match=r"data/demo_0/obs/agentview_rgb: has 25 steps but actions has 30"):
        H.validate_file(_edit(ours, truncate))


def test_wrong_shape(official):
    def reshape(data):
        del data["demo_1/actions"]
        data["demo_1"].create_dataset("actions", data=np.zeros((24, 6)))

    with pytest.raises(H.DemoFormatError, match=r"data/demo_1/actions: shape \(24, 6\), expected \(\*, 7\)"):
        H.validate_file(_edit(official, reshape))


def test_wrong_image_dtype_and_size(ours, tmp_path):
    def to_float(data):
        images = data["demo_1/obs/eye_in_hand_rgb"][()].astype(np.float32)
        del data["demo_1/obs/eye_in_hand_rgb"]
        data["demo_1/obs"].create_dataset("eye_in_hand_rgb", data=images)

    with pytest.raises(H.DemoFormatError, match=r"demo_1/obs/eye_in_hand_rgb: dtype float32, expected uint8"):
        H.validate_file(_edit(ours, to_float))
    other = write_ours(tmp_path / "sizes.hdf5")

    def resize(data):
        del data["demo_1/obs/agentview_rgb"]
        data["demo_1/obs"].create_dataset("agentview_rgb", data=np.zeros((24, 8, 8, 3), np.uint8))

    with pytest.raises(H.DemoFormatError, match=r"demo_1/obs/agentview_rgb: image size \(8, 8\) differs"):
        H.validate_file(_edit(other, resize))


def test_bad_attributes_and_empty_files(official, tmp_path):
    _edit(official, lambda d: d.attrs.__delitem__("problem_info"))
    with pytest.raises(H.DemoFormatError, match=r"data: missing attribute 'problem_info'"):
        H.validate_file(official)
    _edit(official, lambda d: d.attrs.__setitem__("problem_info", "{not json"))
    with pytest.raises(H.DemoFormatError, match=r"'problem_info' is not valid JSON"):
        H.validate_file(official)
    empty = tmp_path / "empty.hdf5"
    with h5py.File(empty, "w") as f:
        data = f.create_group("data")
        H.write_data_attrs(data, instruction="x", problem_name="P", bddl_file="b", env_args={})
    with pytest.raises(H.DemoFormatError, match="no demo_<i> groups"):
        H.validate_file(empty)
    nodata = tmp_path / "nodata.hdf5"
    h5py.File(nodata, "w").close()
    with pytest.raises(H.DemoFormatError, match="missing group 'data'"):
        H.validate_file(nodata)


def test_truncated_and_garbage_files(ours, tmp_path):
    cut = tmp_path / "cut.hdf5"
    cut.write_bytes(ours.read_bytes()[: ours.stat().st_size // 2])
    with pytest.raises(H.DemoFormatError, match=r"cut.hdf5: not a readable HDF5 file"):
        H.validate_file(cut)
    junk = tmp_path / "junk.hdf5"
    junk.write_bytes(b"not hdf5 at all" * 10)
    with pytest.raises(H.DemoFormatError, match=r"junk.hdf5: not a readable HDF5 file"):
        H.validate_file(junk)
    with pytest.raises(H.DemoFormatError, match="no such file"):
        H.validate_file(tmp_path / "absent.hdf5")


def test_data_info_command(official, ours, tmp_path, capsys):
    from clad_lite.cli import main

    assert main(["data-info", str(official), str(ours)]) == 0
    out = capsys.readouterr().out
    assert out.count(INSTRUCTION) == 2 and "demos:       2, 54 steps; length min 24" in out
    assert "16x16" in out and "official LIBERO layout" in out and "clad_lite" in out and "joint_vel" in out
    assert main(["data-info", str(tmp_path)]) == 0  # a directory expands to its files
    _edit(ours, lambda d: d["demo_0"].__delitem__("dones"))
    assert main(["data-info", str(official), str(ours)]) == 2
    captured = capsys.readouterr()
    assert f"{ours}: data/demo_0/dones: missing" in captured.err and str(official) in captured.out


def test_info_run_collects_every_bad_file(official, ours):
    _edit(official, lambda d: d["demo_0"].__delitem__("states"))
    _edit(ours, lambda d: d["demo_1"].__delitem__("rewards"))
    with pytest.raises(UserError, match="2 bad file") as error:
        info.run([official, ours], out=lambda _: None)
    assert "demo_0/states" in str(error.value) and "demo_1/rewards" in str(error.value)


def quat2axisangle(quat):
    """robosuite.utils.transform_utils.quat2axisangle (1.4.0), copied: importing robosuite
    here would bind its GL backend before clad_lite.sim chooses one."""
    import math

    quat[3] = min(max(quat[3], -1.0), 1.0)
    den = np.sqrt(1.0 - quat[3] * quat[3])
    if math.isclose(den, 0.0):
        return np.zeros(3)
    return (quat[:3] * 2.0 * math.acos(quat[3])) / den


def test_quat_to_axis_angle_matches_robosuite():
    rng = np.random.default_rng(0)
    quats = rng.normal(size=(20, 4))
    quats /= np.linalg.norm(quats, axis=1, keepdims=True)
    quats[0] = [0, 0, 0, 1]
    expected = np.stack([quat2axisangle(q.copy()) for q in quats])
    np.testing.assert_allclose(H.quat_to_axis_angle(quats), expected, atol=1e-12)


def test_problem_info_list_instruction(official):
    _edit(official, lambda d: d.attrs.__setitem__(
        "problem_info", json.dumps({"language_instruction": ["open ", "the door"]})))
    assert H.validate_file(official).instruction == "open the door"
