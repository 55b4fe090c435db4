"""Importing ONNX Runtime with its telemetry switched off.

ONNX Runtime's official Linux/macOS wheels start Microsoft's 1DS telemetry when the module is
imported: the import writes a device id and an event database under
``~/.cache/Microsoft/DeveloperTools/.onnxruntime/`` and, some seconds later, a background thread
looks up the collector host (``mobile.events.data.microsoft.com``). ``disable_telemetry_events()``
only drops non-essential events; the lookup still happens (seen with ``strace -f -e trace=network``
on onnxruntime 1.32). The switch that stops all of it is the environment variable
``ORT_DISABLE_TELEMETRY=1``, read once, when the native module initialises: it must be set before
the first ``import onnxruntime`` in the process, so every import in headstart goes through here.
"""

from __future__ import annotations

import os
import sys
from types import ModuleType

from ..errors import MissingDependencyError

TELEMETRY_SWITCH = "ORT_DISABLE_TELEMETRY"


def import_onnxruntime(feature: str = "ONNX Runtime") -> ModuleType:
    """``onnxruntime``, imported with telemetry off unless the user set ``ORT_DISABLE_TELEMETRY`` themselves."""
    if "onnxruntime" not in sys.modules:  # after the first import the switch is no longer read
        os.environ.setdefault(TELEMETRY_SWITCH, "1")
    try:
        import onnxruntime
    except ImportError:
        raise MissingDependencyError("onnxruntime", feature) from None
    return onnxruntime
