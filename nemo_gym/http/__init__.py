"""Every HTTP call we make: the peer client between our servers, the pools to model endpoints, replica choice."""
