"""instance-nerfacto: 3D instance mapping and localization with neural fields (3DIML) for nerfstudio."""

import os

# ultralytics performs DNS look-ups and settings sync at import unless told it is offline; this project never needs
# the network, so default to offline before anything imports it (a user can still override the variable).
os.environ.setdefault("YOLO_OFFLINE", "1")

__version__ = "0.1.0"
