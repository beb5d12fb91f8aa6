"""Provider adapters, pricing, and the simulated provider used as the upstream in tests."""
