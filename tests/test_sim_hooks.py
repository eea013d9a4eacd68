"""The simulator relies on two private pynvml hooks; fail loudly if a pynvml release drops them."""

from __future__ import annotations

import pynvml


def test_pynvml_private_hooks_still_exist() -> None:
    assert hasattr(pynvml, "nvmlLib"), "pynvml.nvmlLib is gone: the simulator cannot install"
    assert isinstance(pynvml._nvmlGetFunctionPointer_cache, dict)
    # pynvml fetches symbols with getattr(nvmlLib, name): the simulator's whole technique
    import inspect

    assert "getattr(nvmlLib, name)" in inspect.getsource(pynvml._nvmlGetFunctionPointer)
