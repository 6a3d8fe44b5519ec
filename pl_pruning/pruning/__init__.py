"""The pruning engine: the network graph (a stand-in until the engine's lands)."""
