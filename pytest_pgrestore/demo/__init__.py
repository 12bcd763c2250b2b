"""Demo helpers: real, throwaway servers and sample backups for examples and tests."""
