"""Shared test options (``--run-slow`` adds the tests marked ``slow``) and fixtures."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from effdet.runtime import signal_stack_kept

# Jobs started by the tests (in-process or as subprocesses) run on a fixed thread count, never on
# the one a busy machine would leave them: the busy-CPU note would otherwise come before the one
# line a failing job prints, and tests of that line would depend on the load of the machine.
# tests/test_runtime.py clears it where the note itself is tested.
os.environ.setdefault("OMP_NUM_THREADS", "2")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", default=False,
                     help="also run tests marked slow (long reference-parity and training tests)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow test: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seeded() -> None:
    """Every test starts from the same torch random state (seed 0), whatever ran before it."""
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _signal_state_restored():
    """Every test leaves this process's signal handling as it found it: the SIGCHLD handler that
    PyTorch's DataLoader installs (and never removes) and the main thread's alternate signal stack,
    which native runtimes may replace. CPython runs its handlers on that stack; one left unmapped
    turns the next exiting child process into a SIGSEGV of the whole suite, as OpenVINO did before
    ``effdet.runtime.native_runtime_guard`` (tests/test_runtime.py).
    """
    sigchld = signal.getsignal(signal.SIGCHLD)
    with signal_stack_kept():
        yield
    if signal.getsignal(signal.SIGCHLD) is not sigchld and sigchld is not None:
        signal.signal(signal.SIGCHLD, sigchld)


@pytest.fixture(scope="session")
def tiny_shapes(tmp_path_factory: pytest.TempPathFactory):
    """A 4-train / 2-val synthetic shapes set at 128 px (read-only: tests must not change it)."""
    from effdet.data import make_synthetic_coco

    return make_synthetic_coco(tmp_path_factory.mktemp("data") / "shapes", num_train=4, num_val=2,
                               image_size=(128, 128), seed=3)


@pytest.fixture
def one_thread():
    """One intra-op thread: fast and predictable on a small, shared CPU; restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
