"""The `fastface` command line: `fastface demo`, `fastface eval`, `fastface metrics`."""

from __future__ import annotations

import argparse
import sys

from fastface_lite.errors import FastFaceError, user_error


def _demo(args) -> int:
    from fastface_lite.workbook.demo import run_demo

    run_demo(out_dir=args.out, prompt=args.prompt, face=args.face, seed=args.seed, adapter=args.adapter)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastface", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="run the six FastFace variants on the offline tiny pipeline")
    demo.add_argument("--out", default="runs/demo", help="folder for the image grid and the table")
    demo.add_argument("--prompt", default="a photo of a person reading in a park")
    demo.add_argument(
        "--face", default="astronaut", help="a shipped face (fastface_lite/data/faces) or a path to a photo"
    )
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--adapter", default="faceid-plusv2", choices=["faceid", "faceid-plusv2"])
    demo.set_defaults(run=_demo)

    from fastface_lite.evaluation.cli import register  # `eval` and `metrics` live with the evaluation runner

    register(commands)
    return parser


def main(argv=None) -> int:
    """Run a command; a user error (the package's own `FastFaceError`, or a path that does not
    exist) is one message on stderr and exit code 2. Anything else is a bug and keeps its traceback."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (FastFaceError, FileNotFoundError) as err:
        print(user_error(args.command, err), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
