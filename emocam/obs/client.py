"""Connections to obs-websocket through obsws-python, with that library's pitfalls handled in one place.

obsws-python logs the password in clear text at INFO and puts it in its clients' reprs, reads a config.toml of
its own when given no address, and reports failures with several unrelated exception types. Everything that
leaves this module is an ObsUnavailable whose message was built here and holds no secret.
"""

from __future__ import annotations

import logging
import traceback

from obsws_python import EventClient, ReqClient
from obsws_python.error import OBSSDKError, OBSSDKRequestError, OBSSDKTimeoutError
from websocket import WebSocketException

from emocam.errors import EmoCamError
from emocam.obs.config import PASSWORD_ENV, ObsConfig

# What a dead or unreachable OBS raises (ConnectionRefused, BrokenPipe and socket timeouts are OSErrors).
CONNECTION_ERRORS = (OSError, WebSocketException, OBSSDKTimeoutError)
PASSWORD_HINT = f"set [obs] password in config.toml or ${PASSWORD_ENV}"


class ObsUnavailable(EmoCamError):
    """OBS cannot be reached or the connection broke; the message is safe to log and show."""


class ObsAuthError(ObsUnavailable):
    """OBS answered but refused us: almost always a wrong or missing password."""


class _NoSecretRepr:
    """obsws-python's clients print the password in their repr, which tracebacks with variables would show."""

    def __repr__(self) -> str:
        base = getattr(self, "base_client", None)
        return f"{type(self).__name__}({getattr(base, 'host', '?')}:{getattr(base, 'port', '?')})"

    __str__ = __repr__


class RequestClient(_NoSecretRepr, ReqClient):
    pass


class EventsClient(_NoSecretRepr, EventClient):
    pass


def quiet_library() -> None:
    logging.getLogger("obsws_python").setLevel(logging.CRITICAL)


def redact(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


def describe(exc: BaseException, secret: str) -> str:
    text = str(exc).strip()
    return redact(f"{type(exc).__name__}: {text}" if text else type(exc).__name__, secret)


def unexpected(exc: BaseException, secret: str) -> str:
    """A traceback for a bug report: the standard one (no variable values), with the secret masked."""
    return redact("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip(), secret)


def _connect(cls, cfg: ObsConfig, **kwargs):
    quiet_library()
    try:
        # host, port and password always given: otherwise obsws-python reads a config.toml from the CWD or HOME.
        return cls(host=cfg.host, port=cfg.port, password=cfg.secret(), timeout=cfg.timeout_s, **kwargs)
    except OBSSDKTimeoutError as exc:
        raise ObsUnavailable(f"OBS at {cfg.address} did not answer: {describe(exc, cfg.secret())}") from None
    except OBSSDKError:
        # The server closes the socket during identification: the library cannot tell us more than that.
        why = "rejected the password" if cfg.secret() else "asks for a password and none is set"
        raise ObsAuthError(f"OBS at {cfg.address} {why}: {PASSWORD_HINT} to the one in OBS (Tools > "
                           "WebSocket Server Settings)") from None
    except (*CONNECTION_ERRORS, ValueError) as exc:
        raise ObsUnavailable(f"OBS not reachable at {cfg.address}: {describe(exc, cfg.secret())}") from None


def open_requests(cfg: ObsConfig) -> RequestClient:
    """A connected, identified request client whose every request times out after cfg.timeout_s."""
    return _connect(RequestClient, cfg)


def open_events(cfg: ObsConfig, subs: int, callbacks: list) -> EventsClient:
    """An event client calling `callbacks` (matched by their __name__, e.g. on_custom_event) on its own thread."""
    client = _connect(EventsClient, cfg, subs=subs)
    client.callback.register(callbacks)
    return client


def event_thread_alive(client: EventClient) -> bool:
    """obsws-python's event thread ends silently when the connection drops; this is how we notice."""
    return client.worker.is_alive() and bool(client.base_client.ws.connected)


def request(client: ReqClient, cfg: ObsConfig, name: str, data: dict | None = None) -> dict:
    """One request; its response data (maybe empty). OBSSDKRequestError when OBS refuses it, ObsUnavailable when
    the connection is gone."""
    try:
        return client.send(name, data, raw=True) or {}
    except OBSSDKRequestError:
        raise
    except (*CONNECTION_ERRORS, OBSSDKError, ValueError) as exc:
        raise ObsUnavailable(f"connection to OBS at {cfg.address} lost ({describe(exc, cfg.secret())})") from None


def close_quietly(client: ReqClient | EventClient | None) -> None:
    """Close without waiting on a dead peer; an event client's thread ends when its socket shuts down."""
    if client is None:
        return
    ws = client.base_client.ws
    for step in (lambda: ws.close(timeout=0), ws.shutdown):
        try:
            step()
        except Exception:  # already closed or never open: nothing left to release
            pass
    worker = getattr(client, "worker", None)
    if worker is not None:
        worker.join(2)
