"""The server as ``twistd`` runs it: options and FAF's Rust configuration, the
service tree and its shutdown order, HTTP (metrics, health, live games), signals."""
