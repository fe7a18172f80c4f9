"""``python -m clad_lite data-info PATH...``: what is in demonstration files, validated.

For each file (directories are expanded to their ``*.hdf5``): the instruction, the number
of demos, their lengths, the image size and the keys. Every file is validated; a bad one is
reported with the file, the demo and the key at fault, and the command exits with status 2.
"""

from __future__ import annotations

from clad_lite.cli import UserError
from clad_lite.demos import hdf5 as H


def describe(summary: H.FileSummary) -> str:
    lengths = list(summary.lengths.values())
    source = ("clad_lite (obs[t] before actions[t])" if summary.ours
              else "official LIBERO layout (obs[t] after actions[t])")
    images = (f"{summary.image_size[0]}x{summary.image_size[1]} "
              f"({', '.join(k for k in summary.obs_keys if k in H.IMAGE_KEYS)}), upside down"
              if summary.image_size else "none (not rendered yet: run generate --render-only)")
    return "\n".join([
        f"{summary.path}",
        f"  instruction: {summary.instruction}",
        f"  source:      {source}",
        (f"  demos:       {len(lengths)}, {sum(lengths)} steps; length min {min(lengths)}, "
        f"mean {sum(lengths) / len(lengths):.1f}, max {max(lengths)}"),
        f"  images:      {images}",
        f"  demo keys:   {', '.join(summary.demo_keys)}",
        f"  obs keys:    {', '.join(summary.obs_keys)}",
    ])


def run(paths, deep: bool = False, out=print) -> int:
    errors = []
    try:
        files = H.find_demo_files(paths)
    except UserError as error:
        raise UserError(str(error)) from None
    for path in files:
        try:
            out(describe(H.validate_file(path, deep=deep)))
        except H.DemoFormatError as error:
            errors.append(str(error))
    if errors:
        raise UserError("\n".join(errors) if len(errors) == 1 else
                        f"{len(errors)} bad file(s):\n  " + "\n  ".join(errors))
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("data-info", help="describe and validate LIBERO demonstration files",
                                   description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", metavar="PATH", help="HDF5 files or directories")
    parser.add_argument("--deep", action="store_true", help="also read every byte (slow; finds damaged chunks)")
    parser.set_defaults(func=lambda args: run(args.paths, deep=args.deep))
