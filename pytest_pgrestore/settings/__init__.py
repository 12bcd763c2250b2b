"""Settings: every option with where it came from, the target grammar, source URLs (pure)."""
