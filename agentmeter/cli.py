"""`python -m agentmeter.cli`: the `agentmeter` command under its earlier module name, kept
so scripts and process supervisors written against it go on working."""

import sys

from agentmeter.command.cli import main

if __name__ == "__main__":
    sys.exit(main())
