"""What a finished run says, read from its folder through `paser.pipelines.layout.RunLayout`: `results`
(`load_run`, the run-folder reader and its tables), `report` (`paser report`), `uncertainty` and `stats` (intervals
and tests over seeds and items), `accounting` (compute per combination) and `purity` (clusters against labels).
Nothing here imports the run engine: an analysis needs a run folder, not the code that wrote it."""
