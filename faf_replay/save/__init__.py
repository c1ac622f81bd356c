"""A finished replay into the vault: metadata, the file written once and never
over another, retries and quarantine, the worker threads it runs in."""
