"""Read a data file shipped inside a gpuwatch package (the catalog's TOML, the simulator's symbol lists).

A plain file beside the package's ``__init__`` where the package is a directory, which is every install
but a zip archive; ``importlib.resources`` only for that case, because importing it pulls in zipfile,
tempfile and shutil (~1 MiB resident in the NVML child, which reads the catalog).
"""

from __future__ import annotations

import os
import sys


def read_package_text(package: str, name: str) -> str:
    """The UTF-8 text of ``name`` (a ``/``-separated path) inside the already imported ``package``."""
    module_file = getattr(sys.modules[package], "__file__", None)
    if module_file:
        try:
            with open(os.path.join(os.path.dirname(module_file), *name.split("/")), encoding="utf-8") as f:
                return f.read()
        except (FileNotFoundError, NotADirectoryError):  # a zip import: no such file on disk
            pass
    from importlib import resources

    return resources.files(package).joinpath(name).read_text(encoding="utf-8")
