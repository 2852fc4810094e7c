"""Sweeps of the `lstm_ae` experiments on Ray Tune: the registry, the trial, the runner, result files and reports.

    python -m sweeps list
    python -m sweeps run synthetic --preset quick        # embedded local Ray, results in results/<sweep>/
    python -m sweeps status results/<sweep>
    python -m sweeps resume results/<sweep>

It knows nothing of LSTM internals: an experiment is an entry in `experiments.py`, a trial is a loop over
`lstm_ae.train.fit` that reports and checkpoints.
"""
