"""Reports: documents rendered from measured results (results/README.md, the README's
table, a training run's learning curve); tests check that each is current."""
