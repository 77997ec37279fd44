"""Errors a user can hit. The CLI prints their message as one line, never a traceback."""


class EmoCamError(Exception):
    """A problem the user can fix; the message says how."""


class ConfigError(EmoCamError):
    pass


class WeightsError(EmoCamError):
    pass
