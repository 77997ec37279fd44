"""OBS Studio control over obs-websocket v5: scenes select overlay presets, CustomEvents carry commands.

config: the [obs] section; commands: routing to the control state (no I/O); client: obsws-python connections;
supervisor: the connection thread of the daemon; integration: what run_daemon attaches; setup: `emocam obs setup`.
"""
