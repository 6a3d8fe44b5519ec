"""The command line: ``pl-prune`` (the Hydra app) and its pieces.

- :mod:`pl_pruning.cli.app`: the Hydra task (train or load, test, measure, prune, report);
- :mod:`pl_pruning.cli.objective`: the one number a sweeper maximises;
- :mod:`pl_pruning.cli.ddp_hydra`: DDP ranks started inside a Hydra job join that job.

The sweep report (``pl-prune-report``) is :mod:`pl_pruning.reports.sweep`.
"""
