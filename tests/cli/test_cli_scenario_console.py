"""A scenario that breaks something on purpose (a link cut mid-stream) makes the roles log tracebacks; they
go to the role log, never between the console's lines, and the report's header names the target."""

from __future__ import annotations

from pathlib import Path

from cli_support import xcwado


def test_tracebacks_of_expected_faults_stay_out_of_the_console(tmp_path: Path) -> None:
    log, html = tmp_path / "roles.log", tmp_path / "report.html"
    done = xcwado("scenario", "run", "--role-log", str(log), "--html", str(html), "NG-013", timeout=600)
    console = done.stdout + done.stderr
    assert done.returncode == 0, console[-4000:]
    assert "Traceback" not in console and "ERROR" not in console and "WARNING" not in console, console
    assert "PASS NG-013" in done.stdout
    assert log.stat().st_size > 0 and f"Logs of the roles (expected faults log tracebacks there): {log}" in (
        " ".join(done.stdout.split())
    )
    header = html.read_text().split("id='mcwg-dashboard'")[0]
    assert "federations started for the run: builtin:wan" in header and "1 passed" in header
