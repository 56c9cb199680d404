"""Entrypoint of the Orthanc image: write Orthanc's configuration from the environment, then run Orthanc.

The configuration is the one ``ncp.orthanc.OrthancConfig`` gives a managed Orthanc on the host (compression,
DICOM listener and authentication off, DICOMweb on), from these variables:

XCWADO_ORTHANC_PORT     HTTP port (8042)
XCWADO_ORTHANC_STORAGE  storage and index directory; the configuration is written there too
XCWADO_ORTHANC_HOST     host:port that DICOMweb answers name (default 127.0.0.1:<port>)
XCWADO_ORTHANC_REMOTE   "true": accept requests from other hosts (a bridge network); default loopback only
XCWADO_ORTHANC_NAME     the Orthanc's name (xcwado)

With host networking, LD_PRELOAD names the loopback bind() shim (``ncp.orthanc.build_loopback_shim``):
Orthanc 1.10 always binds 0.0.0.0.
"""

import json
import os
import sys
from pathlib import Path

port = int(os.environ.get("XCWADO_ORTHANC_PORT", "8042"))
storage = Path(os.environ.get("XCWADO_ORTHANC_STORAGE", "/var/lib/xcwado/orthanc"))
config = {
    "Name": os.environ.get("XCWADO_ORTHANC_NAME", "xcwado"),
    "StorageDirectory": str(storage / "storage"),
    "IndexDirectory": str(storage / "storage"),
    "HttpPort": port,
    "HttpCompressionEnabled": False,
    "DicomServerEnabled": False,
    "RemoteAccessAllowed": os.environ.get("XCWADO_ORTHANC_REMOTE", "false").lower() == "true",
    "AuthenticationEnabled": False,
    "Plugins": ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"],
    "StableAge": 1,
    "DicomWeb": {
        "Enable": True,
        "Root": "/dicom-web/",
        "EnableWado": False,
        "Host": os.environ.get("XCWADO_ORTHANC_HOST", f"127.0.0.1:{port}"),
        "Servers": {},
    },
}
shim = os.environ.get("LD_PRELOAD")
if shim and not Path(shim).is_file():
    sys.exit(f"xcwado-orthanc: LD_PRELOAD={shim} does not exist (the loopback shim is built on the host)")
storage.mkdir(parents=True, exist_ok=True)
config_file = storage / "orthanc.json"
config_file.write_text(json.dumps(config, indent=2))
os.execv("/usr/sbin/Orthanc", ["Orthanc", str(config_file)])
