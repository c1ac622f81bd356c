"""What the tests share: clients, fakes, the private MariaDB, network namespaces,
the recordings, the fuzzing harness."""
