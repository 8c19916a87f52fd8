"""Search over orders and hyperparameters: sampling, Pareto fronts, the probe, the order DAG."""
