"""LOOK: the plots and summaries of runs, groups, ensembles and studies."""
