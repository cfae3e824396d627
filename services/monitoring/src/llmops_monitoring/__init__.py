"""Monitoring: windowed drift and quality reports over live traffic that ask for retraining."""
