"""`python -m agentmeter`: the `agentmeter` command."""

import sys

from agentmeter.command.cli import main

if __name__ == "__main__":
    sys.exit(main())
