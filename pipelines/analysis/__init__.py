"""What a finished run says, read from its folder through `paser.pipelines.layout.RunLayout`: `reader` (`load_run`,
the run-folder reader), the analyses that take it, one module per idea: `metrics` (results table, summary, versus
random), `selections` (cluster budgets, overlap, picks, CDS against gain), `accounting` (compute per combination),
`purity` (clusters against labels); `report` (`paser report`), `uncertainty` and `stats` (intervals and tests over
seeds and items). Nothing here imports the run engine: an analysis needs a run folder, not the code that wrote it."""
