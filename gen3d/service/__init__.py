"""The service around the stages (still Ray-free): HTTP contract, jobs, drain, launcher, CLI, pre-flight."""
