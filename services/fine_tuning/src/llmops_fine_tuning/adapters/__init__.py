"""I/O of the fine-tuning service: artifact store, trainer, metrics, configuration files."""
