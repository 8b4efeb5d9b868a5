"""The reliability suite (`make reliability`, quick form in `make test`): faults, hostile input,
load, and one summary table whose lost / duplicated / changed-by-replay counts must be zero."""
