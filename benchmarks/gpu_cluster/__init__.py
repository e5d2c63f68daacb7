"""A simulated 1,000-node GPU cluster (Kueue-like quotas, an autoscaler, failures) behind the
Kubernetes API emulator, driven by the real usina engine and Kubernetes backend
(``benchmarks/cluster_sim.py``)."""
