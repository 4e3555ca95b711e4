"""`python -m agentmeter`: the `agentmeter` command."""

import sys

from agentmeter.command.cli import main

sys.exit(main())
