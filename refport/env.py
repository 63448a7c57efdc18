"""Harness for running the *reference port* of EfficientDet in a subprocess.

The reference is Ross Wightman's efficientdet-pytorch, released on PyPI as
``effdet==0.4.1``.  Its import name (``effdet``) clashes with our own package,
so it is never installed into our virtual environment.  Instead it is
installed with ``pip install --no-deps --target <cache dir>`` (together with
the pure-Python packages it needs at import time) and executed in a separate
Python process with ``PYTHONPATH=<cache dir>`` placed first, so that
``import effdet`` inside that process resolves to the reference.  The worker
script (``ref_worker.py`` next to this file) asserts this at start-up.

Public API (everything here runs in *our* interpreter / venv)::

    reference_dir() -> pathlib.Path | None
    skip_reason() -> str
    is_available() -> bool
    require_reference() -> pathlib.Path          # pytest.skip()s when unavailable
    run_reference(command, *, timeout=1800.0, **kwargs) -> dict
    worker_path() -> pathlib.Path

Environment variables:

``EFFDET_REFERENCE_DIR``
    Install / look for the reference here instead of
    ``~/.cache/effdet-test/reference-0.4.1``.  A directory that already holds
    ``effdet`` 0.4.1 (e.g. installed by hand) is used as is.
``EFFDET_SKIP_REFERENCE=1``
    Never install or use the reference (all reference tests skip).
``EFFDET_REQUIRE_REFERENCE=1``
    ``require_reference()`` fails instead of skipping when the reference is
    unavailable (use in CI where it must be present).

Large tensors travel through files: write them with ``torch.save`` and pass
their *absolute* paths (``pathlib.Path`` arguments are resolved to absolute
paths automatically; the worker runs with a temporary directory as cwd).
Read the worker's output files with ``torch.load(path, weights_only=True)``.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading
from typing import Any, Optional

__all__ = [
    "REFERENCE_VERSION",
    "REQUIREMENTS",
    "ReferenceUnavailable",
    "ReferenceWorkerError",
    "default_reference_dir",
    "reference_dir",
    "skip_reason",
    "is_available",
    "require_reference",
    "run_reference",
    "worker_path",
]

REFERENCE_VERSION = "0.4.1"

# Everything the reference needs at *import* time that our venv does not have.
# torch, torchvision, numpy, pycocotools, PIL, yaml come from our venv.
# --no-deps guarantees pip never pulls another torch.
#  * timm 0.9.16: effdet 0.4.1 requires timm>=0.9.2; 0.9.16 is the last 0.9.x,
#    verified to import and run with torch 2.14 (no huggingface_hub /
#    safetensors needed, both are optional imports in timm 0.9.x).
#  * omegaconf 2.3.0 + antlr4-python3-runtime 4.9.3: effdet's config system;
#    omegaconf 2.3 pins antlr 4.9.*.
REQUIREMENTS = (
    f"effdet=={REFERENCE_VERSION}",
    "timm==0.9.16",
    "omegaconf==2.3.0",
    "antlr4-python3-runtime==4.9.3",
)

_MARKER = ".effdet-refport.json"
_PIP_TIMEOUT_S = 900
_HERE = pathlib.Path(__file__).resolve().parent


class ReferenceUnavailable(RuntimeError):
    """The reference could not be installed or imported (see message)."""


class ReferenceWorkerError(RuntimeError):
    """A worker command failed; ``stderr`` holds the subprocess' stderr."""

    def __init__(self, message: str, returncode: int = -1, stderr: str = "") -> None:
        super().__init__(message)
        self.returncode = returncode
        self.stderr = stderr


def worker_path() -> pathlib.Path:
    """Path of the worker script executed in the subprocess."""
    return _HERE / "ref_worker.py"


def default_reference_dir() -> pathlib.Path:
    """The install directory: ``$EFFDET_REFERENCE_DIR`` or the default cache dir."""
    override = os.environ.get("EFFDET_REFERENCE_DIR")
    if override:
        return pathlib.Path(override).expanduser().resolve()
    return (pathlib.Path.home() / ".cache" / "effdet-test" / f"reference-{REFERENCE_VERSION}").resolve()


# ----------------------------------------------------------------------------------------------
# installation
# ----------------------------------------------------------------------------------------------

class _FileLock:
    """Advisory inter-process lock (fcntl on POSIX; no-op elsewhere)."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self._fh = None

    def __enter__(self) -> "_FileLock":
        self._fh = open(self.path, "a+")
        try:
            import fcntl
        except ImportError:  # pragma: no cover - non-POSIX
            return self
        fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            try:
                import fcntl
                fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            except ImportError:  # pragma: no cover
                pass
        finally:
            self._fh.close()
            self._fh = None


def _read_marker(target: pathlib.Path) -> Optional[dict]:
    try:
        return json.loads((target / _MARKER).read_text())
    except (OSError, ValueError):
        return None


def _is_complete(target: pathlib.Path, requirements: tuple[str, ...] = REQUIREMENTS) -> bool:
    marker = _read_marker(target)
    return marker is not None and list(marker.get("requirements", [])) == list(requirements)


def _looks_like_manual_install(target: pathlib.Path) -> bool:
    """A directory somebody filled by hand with effdet 0.4.1 (no marker of ours)."""
    return (target / "effdet" / "__init__.py").is_file() and any(
        target.glob(f"effdet-{REFERENCE_VERSION}.dist-info"))


def _tail(text: str, n: int = 4000) -> str:
    text = text or ""
    return text if len(text) <= n else "...\n" + text[-n:]


def _pip_install(target: pathlib.Path, requirements: tuple[str, ...] = REQUIREMENTS,
                 manual_install_ok: bool = True, dir_variable: str = "EFFDET_REFERENCE_DIR") -> Optional[str]:
    """``pip install --no-deps --target`` ``requirements`` into ``target`` atomically (temp dir, marker,
    rename).  Returns an error string or None.  ``manual_install_ok``: a hand-made reference install
    without our marker is used as is; ``dir_variable`` names the folder override in messages."""
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return f"cannot create {parent}: {e}"
    lock_path = parent / f".{target.name}.lock"
    with _FileLock(lock_path):
        # another process may have finished the install while we waited for the lock
        if _is_complete(target, requirements):
            return None
        if target.exists():
            if _read_marker(target) is not None:
                # our own install, but for other pins: move it aside and replace it
                old = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=parent))
                os.rename(target, old / "x")
                shutil.rmtree(old, ignore_errors=True)
            elif manual_install_ok and _looks_like_manual_install(target):
                return None
            else:
                try:
                    target.rmdir()  # only if empty; never delete foreign content
                except OSError:
                    return (f"{target} exists but is not an install made by this harness; "
                            f"remove it or point {dir_variable} elsewhere")
        tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=parent))
        try:
            cmd = [
                sys.executable, "-m", "pip", "install",
                "--no-deps", "--no-input", "--disable-pip-version-check",
                "--no-warn-script-location", "--timeout", "30", "--retries", "2",
                "--target", str(tmp), *requirements,
            ]
            env = os.environ.copy()
            for var in ("PIP_TARGET", "PIP_PREFIX", "PIP_USER", "PIP_REQUIRE_VIRTUALENV"):
                env.pop(var, None)
            try:
                proc = subprocess.run(
                    cmd, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S, env=env,
                    cwd=str(parent))
            except subprocess.TimeoutExpired:
                return f"pip install timed out after {_PIP_TIMEOUT_S}s: {' '.join(cmd)}"
            except OSError as e:
                return f"cannot run pip: {e}"
            if proc.returncode != 0:
                return (f"pip install failed (rc={proc.returncode}): "
                        f"{' '.join(requirements)}\n{_tail(proc.stdout + proc.stderr, 1500)}")
            marker = {
                "requirements": list(requirements),
                "python": sys.version.split()[0],
                "installed_with": sys.executable,
            }
            (tmp / _MARKER).write_text(json.dumps(marker, indent=1))
            os.chmod(tmp, 0o755)  # mkdtemp creates 0700
            os.rename(tmp, target)  # atomic on the same filesystem
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return None


# ----------------------------------------------------------------------------------------------
# per-process state
# ----------------------------------------------------------------------------------------------

_STATE_LOCK = threading.Lock()
_STATE: dict = {"checked": False, "dir": None, "reason": "", "versions": None}


def _subprocess_env(refdir: pathlib.Path) -> dict:
    env = os.environ.copy()
    old = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = os.pathsep.join([str(refdir)] + ([old] if old else []))
    env["EFFDET_REFPORT_DIR"] = str(refdir)
    env.setdefault("PYTHONHASHSEED", "0")
    return env


def _invoke(refdir: pathlib.Path, command: str, args: dict, timeout: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="effdet-ref-") as tmp:
        result_file = pathlib.Path(tmp) / "result.json"
        cmd = [
            sys.executable, str(worker_path()), command,
            "--json-args", json.dumps(args),
            "--result-file", str(result_file),
        ]
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout,
                env=_subprocess_env(refdir), cwd=tmp)
        except subprocess.TimeoutExpired as e:
            stderr = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
            raise ReferenceWorkerError(
                f"reference worker {command!r} timed out after {timeout}s\n{_tail(stderr)}",
                returncode=-1, stderr=stderr) from None
        if proc.returncode != 0 or not result_file.is_file():
            raise ReferenceWorkerError(
                f"reference worker {command!r} failed (rc={proc.returncode})\n"
                f"--- stderr ---\n{_tail(proc.stderr, 12000)}\n--- stdout ---\n{_tail(proc.stdout, 2000)}",
                returncode=proc.returncode, stderr=proc.stderr)
        return json.loads(result_file.read_text())


def reference_dir() -> Optional[pathlib.Path]:
    """Ensure the reference is installed and importable; return its directory or None.

    The first call in a process installs the reference if needed (pip, ~10 s
    with network) and runs the worker's ``ping`` command once to verify that
    ``import effdet`` in the subprocess yields effdet 0.4.1 from that
    directory.  The outcome (directory or failure reason) is cached for the
    rest of the process; see :func:`skip_reason`.
    """
    with _STATE_LOCK:
        if _STATE["checked"]:
            return _STATE["dir"]
        _STATE["checked"] = True
        if os.environ.get("EFFDET_SKIP_REFERENCE", "") not in ("", "0"):
            _STATE["reason"] = "reference port disabled by EFFDET_SKIP_REFERENCE"
            return None
        target = default_reference_dir()
        err = None
        if not (_is_complete(target) or _looks_like_manual_install(target)):
            err = _pip_install(target)
        if err is not None:
            _STATE["reason"] = f"reference port effdet=={REFERENCE_VERSION} unavailable: {err}"
            return None
        try:
            _STATE["versions"] = _invoke(target, "ping", {}, timeout=300)
        except ReferenceWorkerError as e:
            _STATE["reason"] = (f"reference port installed at {target} but does not import "
                                f"cleanly in the worker: {e}")
            return None
        _STATE["dir"] = target
        return target


def skip_reason() -> str:
    """Why the reference is unavailable ('' when it is available)."""
    reference_dir()
    return "" if _STATE["dir"] is not None else _STATE["reason"]


def is_available() -> bool:
    return reference_dir() is not None


def reference_versions() -> Optional[dict]:
    """The worker's ``ping`` result (effdet/timm/torch versions, paths) or None."""
    reference_dir()
    return _STATE["versions"]


def require_reference() -> pathlib.Path:
    """For tests/fixtures: return the reference dir or ``pytest.skip`` with the reason.

    With ``EFFDET_REQUIRE_REFERENCE=1`` the test fails instead of skipping.
    """
    import pytest

    d = reference_dir()
    if d is None:
        reason = skip_reason()
        if os.environ.get("EFFDET_REQUIRE_REFERENCE", "") not in ("", "0"):
            pytest.fail(f"EFFDET_REQUIRE_REFERENCE is set but {reason}", pytrace=False)
        pytest.skip(reason)
    return d


def _jsonable(value: Any) -> Any:
    if isinstance(value, pathlib.PurePath):
        return str(pathlib.Path(value).resolve())
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def run_reference(command: str, *, timeout: float = 1800.0, **kwargs: Any) -> dict:
    """Run ``ref_worker.py <command>`` with the reference on PYTHONPATH; return its JSON result.

    ``kwargs`` are the command's arguments (JSON-serialisable; ``pathlib.Path``
    values are converted to absolute path strings).  The subprocess runs with a
    fresh temporary directory as cwd.  Raises :class:`ReferenceUnavailable` if
    the reference cannot be installed, :class:`ReferenceWorkerError` (with the
    subprocess' stderr) if the command fails.
    """
    refdir = reference_dir()
    if refdir is None:
        raise ReferenceUnavailable(skip_reason())
    return _invoke(refdir, command, _jsonable(kwargs), timeout)
