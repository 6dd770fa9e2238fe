"""Activation caching: capture at the hook layer, sharded storage, resumable jobs."""
