"""bids_iron.group: cohort tables, statistics, figures and report of the group level.

Entry point: `bids_iron.group.run.run_group`. Pure statistics (DataFrames in, DataFrames out)
live in `summary`, `compare`, `agecorr`, `longitudinal` and `correlations`; file input in
`collect`; output in `dictionary` (TSV + JSON), `plots` (PNG + SVG) and `report` (HTML).
"""
