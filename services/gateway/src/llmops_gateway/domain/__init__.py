"""The gateway's decisions (authentication, validation, routing) as plain functions over values."""
