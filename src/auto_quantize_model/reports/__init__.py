"""Reports: the run-root summary (view, sections, summary.csv), cross-run comparison, publishing, plots."""
