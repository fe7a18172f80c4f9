"""``python -m clad_lite info``: what this installation is and can do."""

from __future__ import annotations

import platform

from clad_lite.cli import UserError
from clad_lite.provenance import package_versions

def run(args) -> int:
    from clad_lite.config import ConfigError, get_profile

    try:
        profile = get_profile()
    except ConfigError as error:
        raise UserError(str(error)) from error

    import torch

    from clad_lite.sim import select_gl_backend, suite_tasks

    print(f"clad_lite on Python {platform.python_version()} ({platform.machine()})")
    for name, version in package_versions().items():
        if name == "python":
            continue
        print(f"  {name:<22} {version}")
    print(f"profile       {profile.name}  (set CLAD_PROFILE to ci, cpu or paper)")
    print(f"GL backend    {select_gl_backend()}")
    cuda = torch.cuda.is_available()
    print(f"CUDA          {'available: ' + torch.cuda.get_device_name(0) if cuda else 'not available (CPU)'}")
    print(f"torch threads {torch.get_num_threads()}")
    print(f"\n{args.suite} tasks:")
    for task in suite_tasks(args.suite):
        print(f"  {task.task_id}  {task.instruction}")
    return 0


def register(subparsers):
    parser = subparsers.add_parser("info", help="versions, active profile, GL backend, CUDA, the suite's tasks")
    parser.add_argument("--suite", default="libero_10")
    parser.set_defaults(func=run)
