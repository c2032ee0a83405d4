"""Run by test_train.py under torchrun: sr-train's command line on each rank, which writes rank<R>.pid before
and rank<R>.exit (its exit status) after."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from sr_app.cli import train_main

if __name__ == "__main__":
    out, rank = Path(sys.argv[1]), os.environ["RANK"]
    (out / f"rank{rank}.pid").write_text(str(os.getpid()))
    code = train_main(sys.argv[2:])
    (out / f"rank{rank}.exit").write_text(str(code))
    raise SystemExit(code)
