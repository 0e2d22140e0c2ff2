"""The paper's experiments: reproduce, results, plots, layer responses."""
