"""Reports of runs and sweeps, read from what the runs left on disk.

runs.py      `rlhf-lab-report DIR`: every run's final metrics, seed intervals, the standard plots
rl.py        `python -m rlhf_lab.report.rl DIR`: RL configurations side by side, paired by seed
rm.py        reward-model rows: accuracy, calibration and the gold signature per configuration
fits.py      Gao et al. (2022)'s forms per configuration: fits.csv, fits.md, fits.png
frontier.py  final gold against KL per method (DPO and RL over β, best-of-n over n)
fitting.py   the maths of the fits, and the mean ± t-interval every table uses
stats.py     paired comparisons: intervals, p-values, Holm's correction, bootstrap, verdicts
rescore.py   `rlhf-lab-rescore PATH --score NAME`: runs' saved held-out samples under another scorer
"""

from rlhf_lab.report.runs import main, report

__all__ = ["main", "report"]
