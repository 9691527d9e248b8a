"""The Hydra config tree, installed as `sidestep.conf` so any install finds it."""
