from __future__ import annotations

import sys

from ci_integration.cli import main

sys.exit(main())
