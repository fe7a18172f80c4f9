"""Demonstration data: generation (scripted policy, two passes), the LIBERO HDF5 layout,
validated reading, CLaD training windows, and the ``generate``, ``data-info`` and
``filmstrip`` commands.

* :mod:`clad_lite.demos.hdf5` - layout, writer, :class:`DemoFile` reader/validator.
* :mod:`clad_lite.demos.generate` - ``python -m clad_lite generate``.
* :mod:`clad_lite.demos.windows` - :class:`WindowDataset` (τ = 6 windows) and normalisation.
* :mod:`clad_lite.demos.info` - ``python -m clad_lite data-info PATH...``.
* :mod:`clad_lite.demos.filmstrip` - ``python -m clad_lite filmstrip``.
* :mod:`clad_lite.demos.fixtures` - small synthetic files (official-script layout and ours).

Importing this package does not import the simulator.
"""

from clad_lite.demos.hdf5 import DemoFile, DemoFormatError, validate_file

__all__ = ["DemoFile", "DemoFormatError", "validate_file"]
