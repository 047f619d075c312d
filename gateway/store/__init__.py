"""Object stores: where chunk bytes live. :mod:`gateway.store.base` is the contract."""
