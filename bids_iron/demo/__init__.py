"""``bids-iron-demo``: a small simulated cohort, its template home, and a full run.

`head` draws the labelled head, `templates` writes a TemplateFlow-layout home from it,
`dataset` simulates the BIDS cohort (T1w, FLAIR, multi-echo GRE, participants.tsv,
sessions.tsv) and `run` is the console script. Nothing is downloaded.
"""
