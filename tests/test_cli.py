"""The entry point: only the command a command line names is set up in full."""

import subprocess
import sys

from emocam.cli import COMMANDS, build_parser, command_in


def test_the_named_command_is_found_past_options_and_their_values():
    assert command_in(["--config", "status", "-v", "--set", "a=1", "train", "classifier"]) == "train"
    assert command_in(["-q", "status", "--json"]) == "status"
    assert command_in(["--help"]) is None and command_in(["nonsense"]) is None


def test_help_lists_every_command_without_importing_torch():
    code = ("import sys; from emocam.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.splitlines()[-1] == "False"
    assert all(name in out.stdout for name in COMMANDS)


def test_a_listed_command_still_parses_in_full_when_named():
    args = build_parser("train").parse_args(["train", "classifier", "--data", "faces", "--time-budget", "60"])
    assert args.time_budget == 60.0 and callable(args.func)
