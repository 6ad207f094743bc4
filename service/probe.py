"""`python -m service.probe`: exit 0 when the local service is ready, 1 otherwise.

The container HEALTHCHECK: slim images have no curl, and this reads the same
PURIFIER_PORT the server does.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def probe(port: int, path: str = "/v2/health/ready", timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def main() -> int:
    return 0 if probe(int(os.environ.get("PURIFIER_PORT", "8080"))) else 1


if __name__ == "__main__":
    sys.exit(main())
