"""FAF's database: the queries, the connection pool, and the outbox of work kept
on disk until the database takes it."""
