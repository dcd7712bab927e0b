"""``python -m hive_actors`` is ``hivectl``."""

import sys

from hive_actors._cli import main

sys.exit(main())
