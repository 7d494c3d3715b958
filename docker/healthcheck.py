#!/usr/bin/env python3
"""The container's HEALTHCHECK: GET http://127.0.0.1:<port><path> of `plus-ultra serve`.

    python /usr/local/bin/plus-ultra-healthcheck /health

The entrypoint's ``serve`` writes the port it passed to the server into
``$PLUS_ULTRA_HEALTH_FILE`` (default ``/tmp/plus-ultra-serve.port``); without that file
the container runs a batch command (train, predict, ...) that has no server, and the
check passes. Exit 0 = healthy, 1 = unhealthy (Docker's convention), with one line that
says why. Standard library only, so the check costs no import of the package.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

DEFAULT_HEALTH_FILE = "/tmp/plus-ultra-serve.port"


def _port(text: str, source: str) -> int:
    """The TCP port in ``text``; a clear error naming ``source`` otherwise."""
    try:
        port = int(text.strip())
    except ValueError:
        raise ValueError(f"{source} holds {text.strip()!r}, not a port number") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"{source} holds port {port}, outside 1-65535")
    return port


def check(path: str, health_file: Path, timeout: float) -> tuple[bool, str]:
    """(healthy, reason): GET ``path`` on 127.0.0.1 at the port in ``health_file``."""
    if not path.startswith("/"):
        return False, f"the path to check must start with '/', got {path!r}"
    if not health_file.is_file():
        return True, f"no server in this container ({health_file} absent): nothing to check"
    try:
        port = _port(health_file.read_text(encoding="utf-8"), str(health_file))
    except (OSError, ValueError) as exc:
        return False, str(exc)
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        return False, f"{url} answered {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, f"{url} unreachable: {reason}"
    if status != 200:
        return False, f"{url} answered {status}"
    return True, f"{url} answered 200"


def main(argv: list[str]) -> int:
    path = argv[1] if len(argv) > 1 else "/health"
    health_file = Path(os.environ.get("PLUS_ULTRA_HEALTH_FILE") or DEFAULT_HEALTH_FILE)
    try:
        timeout = float(os.environ.get("PLUS_ULTRA_HEALTH_TIMEOUT") or 4.0)
    except ValueError:
        print("PLUS_ULTRA_HEALTH_TIMEOUT must be a number of seconds", file=sys.stderr)
        return 1
    healthy, reason = check(path, health_file, timeout)
    print(reason, file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
