"""Running promptlake: the terminal, deployments and their forms, the demo, the install."""
