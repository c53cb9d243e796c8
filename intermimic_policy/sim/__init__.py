"""Scene assembly, simulator backends, the HOI environment and its terms."""
