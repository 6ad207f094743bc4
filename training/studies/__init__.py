"""Studies: one-off measurements beside the table (`python -m training.studies.NAME CONFIG`),
each writing its own results under results/."""
