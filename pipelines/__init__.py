"""Orchestration: typed configs, the `paser` CLI and the stages that compose selection and recovery."""
