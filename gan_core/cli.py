"""``san-weights``: what weight files the project needs, where they are and whether they are intact.

``san-weights check`` lists every manifest entry and exits 0 when every file present is intact and every
required file is present; a file whose SHA-256 or size does not match, or a missing required file (the
default model and the NIQE parameters, which ship with the repository), exits 1. Optional entries (the
manifest's ``optional`` field says what needs them: VGG-19 for the perceptual losses, AlexNet for LPIPS,
the FID Inception for FID) are third-party files too large to ship; missing, they are listed with what
needs them and where to get them (docs/datasets.md), and do not fail the check.
"""

from __future__ import annotations

import argparse
import sys

from .version import add_version_argument
from .weights import WeightsError, load_manifest, resolve_weights, use_weights_dir, weights_dirs, weights_status

__all__ = ["weights_main"]


def weights_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="san-weights", description="Check or fetch the project's weight files.")
    add_version_argument(p)
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
        return _check(load_manifest(), weights_status())
    code = 0
    for name in args.names:
        try:
            print(f"{name}: {resolve_weights(name, download=True)}")
        except WeightsError as e:
            print(f"{name}: {e}", file=sys.stderr)
            code = 1
    return code


def _check(specs: dict, rows: list[dict]) -> int:
    """Print the table and the verdict; 1 for a corrupt file or a missing required one, else 0."""
    print(f"weights folders: {', '.join(str(d) for d in weights_dirs())}")
    bad, optional_missing = [], []
    for row in rows:
        spec = specs[row["name"]]
        status = row["status"]
        if status == "missing":
            status = "missing (optional)" if spec.optional else "missing (required)"
            (optional_missing if spec.optional else bad).append(row["name"])
        elif not row["ok"]:
            bad.append(row["name"])
        print(f"{status:<28} {row['name']:<28} {spec.file}  {row['path'] or '(not found)'}")
    for name in optional_missing:
        print(f"note: {name} is optional, needed only for {specs[name].optional}: `san-weights fetch {name}` "
              f"or copy {specs[name].file} into weights/ (docs/datasets.md)")  # fmt: skip
    if bad:
        print(f"san-weights: {len(bad)} problem(s): {', '.join(bad)}", file=sys.stderr)
        return 1
    tail = ", only optional files are missing" if optional_missing else ""
    print(f"san-weights: every file present is intact{tail}")
    return 0


if __name__ == "__main__":
    raise SystemExit(weights_main())
