"""The one entry point: `emocam <command>`. Each command lives in emocam/commands/<name>.py."""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from emocam import __version__
from emocam.errors import EmoCamError

# Order shown in --help. A command module defines register(subparsers) and run(args, cfg) -> int.
COMMANDS = ["run", "status", "devices", "bench", "service", "models", "analyze", "classify", "eval", "obs", "ctl",
            "dataset", "report", "explain", "train"]


def _common_options(suppress: bool) -> argparse.ArgumentParser:
    """Options accepted before and after the command. After it they must not reset what was given before it."""
    d = (lambda value: argparse.SUPPRESS) if suppress else (lambda value: value)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", default=d(None),
                        help="config file (default: $EMOCAM_CONFIG or ./config.toml)")
    common.add_argument("--set", metavar="KEY=VALUE", action="append", default=d([]), dest="overrides",
                        help="override a config key, e.g. --set runtime.device=cuda (repeatable)")
    common.add_argument("-v", "--verbose", action="count", default=d(0), help="debug logging")
    common.add_argument("-q", "--quiet", action="store_true", default=d(False), help="warnings and errors only")
    return common


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Every command's parser, or only `command`'s in full: a command module that declares HELP (train, whose
    trainers import torch: ~1.3 s) is then only listed, so that `emocam status` or `emocam ctl` do not wait."""
    parser = argparse.ArgumentParser(
        prog="emocam", parents=[_common_options(False)],
        description="EmoCam: faces, emotions and what the model looks at, live as a virtual webcam or offline.",
        epilog="`emocam COMMAND --help` tells more; the quick start is `make demo`.")
    parser.add_argument("--version", action="version", version=f"emocam {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"emocam.commands.{name}")
        if command is not None and name != command and hasattr(module, "HELP"):
            sub.add_parser(name, help=module.HELP)
        else:
            module.register(sub, [_common_options(True)])
    return parser


def command_in(argv: list[str]) -> str | None:
    """The command a command line names (the first word that is not an option or an option's value)."""
    takes_value = {"--config", "--set"}
    words = iter(argv)
    for word in words:
        if word in takes_value:
            next(words, None)
        elif not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(command_in(argv) or "")
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from emocam.config import load_config
    from emocam.log import setup_logging

    try:
        cfg = load_config(args.config, args.overrides)
        # only the daemon writes the log file: `emocam status` and the like running beside it would rotate it too
        log_file = cfg.resolve(cfg.logging.file) if cfg.logging.file and command_in(argv) == "run" else None
        setup_logging(cfg.logging, args.verbose, args.quiet, log_file)
        return int(args.func(args, cfg) or 0)
    except EmoCamError as exc:
        print(f"emocam: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("emocam: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a path given in the config or on the command line: name it, no traceback
        if isinstance(exc, BrokenPipeError):  # `emocam ... | head`
            return 0
        from loguru import logger

        logger.opt(exception=exc).debug("the error in full")  # shown with -v
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"emocam: error: {where}{exc.strerror or exc} (check the path, its permissions and the free space)",
              file=sys.stderr)
        return 2

