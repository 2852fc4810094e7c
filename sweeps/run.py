"""What Ray pickled of a sweep made before version 0.5, when the Tuner lived in this module: its trials' folder
names (`sweeps.run.trial_folder`), which Ray Tune reads back to report or resume such a sweep (docs/files.md)."""

from sweeps.tuner import trial_folder  # noqa: F401
