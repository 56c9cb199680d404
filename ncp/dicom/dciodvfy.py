"""Run the dicom3tools IOD verifier ``dciodvfy`` (Debian package ``dicom3tools``) on a DICOM object.

``dciodvfy`` prints one finding per line on stderr, ``Error - ...`` or ``Warning - ...`` (sometimes
after an attribute tag or the IOD name on the same line); it exits non-zero when it finds errors.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["DciodvfyResult", "dciodvfy_available", "is_mado_value_type_error", "parse_output", "run_dciodvfy"]

_BINARY = "dciodvfy"
_TIMEOUT_S = 60.0

# PS3.3 C.17.3 / Table C.17.6-2: a KOS SR tree admits CONTAINER, TEXT, CODE, UIDREF, PNAME and the
# references. MADO's TID 1600 content uses NUM, DATE and TIME, which the KOS IOD will only allow once
# DICOM CP-2595 is final; dciodvfy reports each such item as an unrecognised Value Type.
_MADO_VALUE_TYPE = re.compile(
    r"Error - Unrecognized enumerated value <(NUM|DATE|TIME)> .*attribute <Value Type>"
)


@dataclass
class DciodvfyResult:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def errors_beyond_cp2595(self) -> list[str]:
        """The errors that remain once MADO's expected Value Type errors are set aside."""
        return [e for e in self.errors if not is_mado_value_type_error(e)]


def dciodvfy_available() -> bool:
    return shutil.which(_BINARY) is not None


def run_dciodvfy(data: bytes) -> DciodvfyResult:
    """Verify ``data`` (a Part 10 object) against its IOD; raise RuntimeError if dciodvfy is missing."""
    binary = shutil.which(_BINARY)
    if binary is None:
        raise RuntimeError("dciodvfy not found on PATH: install the Debian package 'dicom3tools'")
    with tempfile.TemporaryDirectory(prefix="ncp-dciodvfy-") as tmp:
        path = Path(tmp) / "object.dcm"
        path.write_bytes(data)
        try:
            done = subprocess.run(
                [binary, str(path)], capture_output=True, text=True, errors="replace", timeout=_TIMEOUT_S
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"dciodvfy did not finish within {_TIMEOUT_S:.0f} s") from exc
    return parse_output(done.stdout + "\n" + done.stderr)


def parse_output(text: str) -> DciodvfyResult:
    """Split dciodvfy's report into its error and warning lines."""
    result = DciodvfyResult()
    for raw in text.splitlines():
        line = raw.strip()
        if "Error - " in line:
            result.errors.append(line)
        elif "Warning - " in line:
            result.warnings.append(line)
    return result


def is_mado_value_type_error(line: str) -> bool:
    """True for the NUM/DATE/TIME Value Type errors that MADO's TID 1600 triggers until CP-2595."""
    return _MADO_VALUE_TYPE.search(line) is not None
