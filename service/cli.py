"""The `paella` command line."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="paella", description="Paella Serve")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the HTTP API and the GPU worker in one process")
    args = parser.parse_args(argv)
    if args.command == "serve":
        raise SystemExit("no model yet: the shipped paella-mini weights have not landed in weights/")
