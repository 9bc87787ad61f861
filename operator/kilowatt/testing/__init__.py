"""Real Kubernetes parts for tests and the demo: a kube-apiserver + etcd on loopback."""

from kilowatt.testing.controlplane import ControlPlane, ControlPlaneError, cache_bin_dir, find_binary

__all__ = ["ControlPlane", "ControlPlaneError", "cache_bin_dir", "find_binary"]
