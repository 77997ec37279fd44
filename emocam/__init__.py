"""EmoCam: live face emotion analysis published as a virtual webcam."""

__version__ = "0.1.0"
