"""Reports written after runs.

- :mod:`pl_pruning.reports.pruning_report`: one pruning run (the controller's path):
  ``pruning_report.json``, ``pruning_report.md``, ``pruning_path.png``, ``pruning_channels.png``;
- :mod:`pl_pruning.reports.sweep`: a sweep of many runs (``pl-prune-report MULTIRUN_DIR``):
  ``sweep_report.md``, ``sweep_report.csv``, ``sweep_jobs.csv``, ``sweep_report.png``.
"""
