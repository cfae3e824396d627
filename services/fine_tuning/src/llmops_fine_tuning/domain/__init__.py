"""Pure decisions of the fine-tuning service: request resolution, validation, versions, manifests."""
