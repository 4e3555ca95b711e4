"""AgentMeter's wire contract: .proto sources and the Python generated from them."""
