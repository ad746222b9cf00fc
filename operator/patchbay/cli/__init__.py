"""The `patchbay` command line (also installed as the kubectl plugin `kubectl-patchbay`)."""
