"""How qa-scale runs: the process group and its collectives, and child ``qa-scale`` processes."""
