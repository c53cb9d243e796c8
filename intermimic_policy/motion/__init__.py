"""HOI motion: the typed clip model, its loaders and writers."""
