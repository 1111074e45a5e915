"""placeholder: replaced by the real check."""
