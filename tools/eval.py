"""``python tools/eval.py ...`` = ``effdet val ...`` (kept for scripts written before the ``effdet`` command)."""

from __future__ import annotations

import sys

from effdet.cli.main import main as effdet_main


def main(argv: list[str] | None = None) -> int:
    return effdet_main(["val", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
