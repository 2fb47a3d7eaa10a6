#!/usr/bin/env python
"""Manual entry point, e.g.::

OAUTH_TEST_SERVER_DIR=/tmp/x python tests/oauth_server/project/manage.py migrate --run-syncdb
"""

import os
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
