"""``san-weights``: what weight files the project needs, where they are and whether they are intact."""

from __future__ import annotations

import argparse
import sys

from .weights import WeightsError, load_manifest, resolve_weights, use_weights_dir, weights_dirs, weights_status

__all__ = ["weights_main"]


def weights_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="san-weights", description="Check or fetch the project's weight files.")
    folder = argparse.ArgumentParser(add_help=False)
    folder.add_argument("--weights-dir", metavar="DIR", default=argparse.SUPPRESS,
                        help="search DIR (with its manifest.json) before the repository's weights/ "
                        "(same as $SAN_WEIGHTS_DIR); the current directory is never searched otherwise")  # fmt: skip
    p.add_argument("--weights-dir", metavar="DIR", default=None, help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("check", parents=[folder], help="list every weight file, where it was found, whether it matches")
    f = sub.add_parser("fetch", parents=[folder], help="download weight files by name (SHA-256 checked)")
    f.add_argument("names", nargs="+", help="logical names from weights/manifest.json")
    args = p.parse_args(argv)
    if args.weights_dir is not None:
        try:
            use_weights_dir(args.weights_dir)
        except ValueError as e:
            p.error(str(e))
    if args.cmd == "check":
        specs = load_manifest()
        print(f"weights folders: {', '.join(str(d) for d in weights_dirs())}")
        bad = 0
        for row in weights_status():
            spec = specs[row["name"]]
            print(f"{row['status']:<28} {row['name']:<28} {spec.file}  {row['path'] or '(not found)'}")
            bad += not row["ok"]
        return 1 if bad else 0
    code = 0
    for name in args.names:
        try:
            print(f"{name}: {resolve_weights(name, download=True)}")
        except WeightsError as e:
            print(f"{name}: {e}", file=sys.stderr)
            code = 1
    return code


if __name__ == "__main__":
    raise SystemExit(weights_main())
