"""MediaPulse tooling: data generator, package installer and the dbt jobs CI runs."""

__version__ = "0.1.0"
