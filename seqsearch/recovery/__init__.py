"""Convergence curves per stage (`seqsearch bench recovery`): one sample of each single stage
trained for growing budgets on a few seeds, its validation drop against SGD steps, and the
knee where the recovery flattens, which is where a study's `stage_epochs` / `student_epochs`
belong.

`plan` says what runs (stages, samples, budgets, seeds), `curve` runs it resumably and writes
the files, `analysis` turns the points into curves and knees (pure data), `figure` draws them,
`cli_command` is the command line."""
