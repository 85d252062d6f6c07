"""`python -m rlhf_lab.report DIR`: the same as `rlhf-lab-report DIR`."""

from rlhf_lab.report.runs import main

main()
