"""Protocol buffers of the agentmeter package."""
