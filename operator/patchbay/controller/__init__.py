"""kopf handlers: thin translations of watch events into Reconciler calls."""
