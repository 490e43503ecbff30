"""Running the service on one machine: emulated AWS resources for tests and the local stack."""
