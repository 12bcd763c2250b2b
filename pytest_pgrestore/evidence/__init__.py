"""Evidence: the record of a run, its renderings (terminal, HTML, JUnit, summary, metrics), the
promotion gate and alerts."""
