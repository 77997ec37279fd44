"""`emocam ctl <command>`: send a command to the running daemon through OBS and print its acknowledgement."""

from __future__ import annotations

import argparse
import json
import queue
import uuid

from emocam.errors import EmoCamError

EXAMPLES = """examples:
  emocam ctl preset emotions          emocam ctl toggle bars         emocam ctl layer 3
  emocam ctl class happy              emocam ctl record start        emocam ctl export stop
  emocam ctl preset=boxes hide=labels
  emocam ctl '{"emocam": {"preset": "heatmap"}}'   (what a Stream Deck or Streamer.bot sends as a CustomEvent)"""


def register(subparsers, parents) -> None:
    parser = subparsers.add_parser(
        "ctl", parents=parents, help="send a command to the daemon through OBS (for scripts)",
        description="Broadcasts {\"emocam\": {...}} as an OBS CustomEvent and waits for the daemon's "
                    "acknowledgement. Exit status 0 when applied, 1 when rejected, 2 when nothing answered.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="+", metavar="COMMAND",
                        help="KEY VALUE pairs, KEY=VALUE pairs or one JSON object")
    parser.add_argument("--timeout", type=float, default=2.0, metavar="S", help="wait this long for the ack")
    parser.add_argument("--json", action="store_true", help="print the acknowledgement as JSON to stdout")
    parser.set_defaults(func=run)


def _value(text: str):
    try:
        return json.loads(text)  # 3 -> 3, null -> None
    except ValueError:
        return text  # a bare word: happy, start, emotions


def command_from_words(words: list[str]) -> dict:
    """`preset emotions`, `preset=emotions toggle=bars` or a JSON object (with or without the "emocam" wrapper)."""
    from emocam.obs.commands import COMMAND_KEY, CommandError, parse_command

    if len(words) == 1 and words[0].lstrip().startswith("{"):
        try:
            command = json.loads(words[0])
        except ValueError as exc:
            raise EmoCamError(f"not valid JSON: {exc}") from None
        if isinstance(command, dict) and set(command) == {COMMAND_KEY}:
            command = command[COMMAND_KEY]
    else:
        command, rest = {}, list(words)
        while rest:
            key, sep, value = rest.pop(0).partition("=")
            if not sep:
                if not rest:
                    raise EmoCamError(f"{key!r} needs a value, e.g. `emocam ctl {key} ...`")
                value = rest.pop(0)
            command[key] = _value(value)
    try:
        return parse_command(command)
    except CommandError as exc:
        raise EmoCamError(str(exc)) from None


def send_command(cfg, command: dict, timeout_s: float) -> dict | None:
    """Broadcast the command and wait for the first acknowledgement carrying its id; None if none came."""
    from obsws_python import Subs

    from emocam.obs.client import close_quietly, open_events, open_requests, request
    from emocam.obs.commands import ACK_KEY, COMMAND_KEY

    command = {**command, "id": command.get("id", uuid.uuid4().hex[:12])}
    acks: queue.Queue[dict] = queue.Queue()

    def on_custom_event(data) -> None:
        ack = getattr(data, ACK_KEY, None)
        if isinstance(ack, dict) and ack.get("id") == command["id"]:
            acks.put(ack)

    events = open_events(cfg, Subs.GENERAL, [on_custom_event])  # listening before sending: no ack can slip by
    req = None
    try:
        req = open_requests(cfg)
        request(req, cfg, "BroadcastCustomEvent", {"eventData": {COMMAND_KEY: command}})
        return acks.get(timeout=timeout_s)
    except queue.Empty:
        return None
    finally:
        close_quietly(req)
        close_quietly(events)


def run(args: argparse.Namespace, cfg) -> int:
    from emocam.cli import print_json

    command = command_from_words(args.command)
    ack = send_command(cfg.obs, command, args.timeout)
    if ack is None:
        raise EmoCamError(f"no acknowledgement within {args.timeout:g} s: is `emocam run` running with [obs] "
                          f"enabled = true and connected to OBS at {cfg.obs.address}?")
    if args.json:
        print_json(ack)
    elif ack.get("ok"):
        state = ack["state"]
        hidden = f", hidden {', '.join(state['hidden'])}" if state["hidden"] else ""
        selection = "".join(f", {k} {v}" for k, v in state["selection"].items())
        print(f"applied {json.dumps(ack['applied'])}: preset {state['preset']}{hidden}{selection}"
              f", recording {'on' if state['recording'] else 'off'}, export {'on' if state['exporting'] else 'off'}")
    else:
        print(f"rejected: {ack.get('error')}")
    return 0 if ack.get("ok") else 1
