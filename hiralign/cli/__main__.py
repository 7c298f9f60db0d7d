"""``python -m hiralign.cli ...`` is ``hiralign ...``."""
from hiralign.cli import main

raise SystemExit(main())
