"""The `patchbay` command line (also installed as the kubectl plugin `kubectl-patchbay`)."""

from __future__ import annotations

import argparse

from patchbay import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="patchbay",
        description="Manage and verify connections to external data systems on Kubernetes.",
    )
    parser.add_argument("--version", action="version", version=f"patchbay {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    build_parser().parse_args(argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
