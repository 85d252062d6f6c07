"""`python -m rlhf_lab.protocol`: the same as `rlhf-lab-compare`."""

from rlhf_lab.protocol import main

main()
