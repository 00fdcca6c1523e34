"""bids_iron.group: cohort tables, statistics, figures and report of the group level.

Entry point: `bids_iron.group.run.run_group`. Pure statistics (DataFrames in, DataFrames out)
live in `summary`, `compare`, `agecorr`, `longitudinal`, `correlations`, `mixed` (linear
mixed models, group x time), `manova` (repeated-measures MANOVA across the nuclei),
`stepwise` (forward stepwise regression) and `harmonize` (ComBat site harmonisation); file
input in `collect`; output in `dictionary` (TSV + JSON), `plots` (PNG + SVG), `findings`
(results as sentences) and `report` (HTML). `synthetic` writes cohorts with known effects.
"""
