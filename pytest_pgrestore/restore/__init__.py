"""The restore: plan, fetch, WAL spool, recovery, verdict, and the attempt that runs them."""
